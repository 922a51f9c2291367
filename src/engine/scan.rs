//! The collection scan: the feed that reads each namespace task of a job in `_id` order.
//!
//! In: the job's namespace tasks, a [`Source`] (a cluster, a journal being replayed, generated
//! documents) and the [`Sink`] (so that each namespace exists at the destination before its
//! first batch, even an empty one). Out: every task's batches on the queue, up to `readers`
//! namespaces at once, skipping the tasks an earlier run finished and the partitions of a shared
//! job that another process holds ([`Ledger::acquire`]). Beside the reading, each namespace's
//! expected count, for the progress display.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::{BoxFuture, Either};
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::error::CopyError;
use super::feed::Feed;
use super::ledger::Ledger;
use super::queue::QueueSender;
use super::sink::seam::Sink;
use super::source::seam::Source;
use super::task::NsTask;

/// Reads the tasks' namespaces onto the queue.
pub struct Scan {
    pub source: Arc<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub ledger: Arc<Ledger>,
    pub tasks: Vec<Arc<NsTask>>,
    pub batch_size: usize,
    /// Namespaces read at once.
    pub readers: usize,
}

impl Feed for Scan {
    fn run(
        self: Arc<Self>,
        queue: QueueSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CopyError>> {
        async move {
            let first_batch = queue.first_batch();
            // Reading owns the queue's sender: the queue closes as soon as reading ends, while
            // counting may go on; a failed read ends the counting too.
            let reading = Box::pin(self.read(queue, &cancel));
            let counting = Box::pin(self.count(first_batch, &cancel));
            match futures::future::select(reading, counting).await {
                Either::Left((read, counting)) => {
                    if read.is_ok() {
                        counting.await;
                    }
                    read
                }
                Either::Right(((), reading)) => reading.await,
            }
        }
        .boxed()
    }
}

impl Scan {
    /// Namespaces in their order, up to `readers` at once.
    async fn read(&self, queue: QueueSender, cancel: &CancellationToken) -> Result<(), CopyError> {
        // Boxed, so that the stream's future is `Send` for any lifetime (rustc#102211).
        let reads: Vec<BoxFuture<'_, Result<(), CopyError>>> = self
            .tasks
            .iter()
            .filter(|task| !task.is_finished())
            .map(|task| self.read_one(task, &queue, cancel).boxed())
            .collect();
        futures::stream::iter(reads)
            .buffer_unordered(self.readers.max(1))
            .try_collect::<()>()
            .await
    }

    async fn read_one(
        &self,
        task: &Arc<NsTask>,
        queue: &QueueSender,
        cancel: &CancellationToken,
    ) -> Result<(), CopyError> {
        if cancel.is_cancelled() {
            return Err(CopyError::Stopped);
        }
        // A shared job's partition another process holds is left to it.
        if !self.ledger.acquire(task).await? {
            return Ok(());
        }
        self.sink.prepare(&task.destination).await?;
        task.mark_reading();
        self.source.produce(task, self.batch_size, queue).await?;
        task.mark_produced();
        Ok(())
    }

    /// Expected counts only feed the progress display: a failure there is not fatal. Counting
    /// starts once the first batch is queued (or reading is done): on some servers a count is
    /// a scan of its own that would delay the first write (SecantusDB), while on mongod the first
    /// batch comes within milliseconds, so the totals show as early as ever.
    async fn count(
        &self,
        mut first_batch: tokio::sync::watch::Receiver<bool>,
        cancel: &CancellationToken,
    ) {
        tokio::select! {
            _ = first_batch.wait_for(|queued| *queued) => {}
            _ = cancel.cancelled() => return,
        }
        // Partitions of one namespace share its count.
        let mut counted = HashSet::new();
        for task in &self.tasks {
            if !counted.insert(task.key_of_namespace()) || task.counters.is_counted() {
                continue;
            }
            if cancel.is_cancelled() {
                return;
            }
            match self.source.count(&task.source).await {
                Ok(n) => task.counters.set_expected(n),
                Err(e) => tracing::debug!("cannot count {}: {e}", task.source),
            }
        }
    }
}
