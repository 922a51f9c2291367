//! The bounded queue between the producer and the workers, and the namespace tasks they share.
//!
//! In: [`Batch`]es from the producer, each sorted by `_id` and tagged with its namespace task.
//! Out: the same batches, to whichever worker is free. The queue holds at most a few batches per
//! worker, so memory stays flat however large the collection; closing it (dropping the producer's
//! sender) is the end-of-work signal. Each batch is numbered as it is queued and reports back
//! when it is done, which moves its task's [`Watermark`] (the contract is in [`super::ledger`]).

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use mongodb::bson::{RawBson, RawDocumentBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::budget::Budget;
use super::error::QueueClosed;
use super::sink::seam::Write;
use super::stats::JobStats;
use super::task::NsTask;

/// Documents per batch unless a job says otherwise (BENCHMARKS.md).
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// What a batch carries: ids for workers to fetch, or documents already read.
#[derive(Debug)]
pub enum Payload {
    Ids(Vec<RawBson>),
    Docs(Vec<RawDocumentBuf>),
    /// Changes to distinct `_id`s (a sync's changes, or its journal replayed in order): not
    /// sorted, so their batches do not move a watermark a checkpoint would trust; their order
    /// is kept by [barriers](QueueSender::barrier).
    Writes(Vec<Write>),
    /// Distinct `_id`s whose documents must become what the source holds now (the job's filter
    /// applied): workers read them, write those found and delete the others. A sync's changes
    /// whose events do not say what the document is now, or all of them under a filter.
    Current(Vec<RawBson>),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Ids(ids) | Payload::Current(ids) => ids.len(),
            Payload::Docs(docs) => docs.len(),
            Payload::Writes(writes) => writes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the documents carried (`_id` payloads are not counted: they are small, and
    /// their documents are fetched by the worker in parts of at most the batch bytes).
    pub fn doc_bytes(&self) -> usize {
        match self {
            Payload::Ids(_) | Payload::Current(_) => 0,
            Payload::Docs(docs) => docs.iter().map(|d| d.as_bytes().len()).sum(),
            Payload::Writes(writes) => writes.iter().map(Write::bytes).sum(),
        }
    }

    /// The last (largest) `_id` of a sorted payload (of changes: the last one's).
    pub fn last_id(&self) -> Option<RawBson> {
        match self {
            Payload::Ids(ids) | Payload::Current(ids) => ids.last().cloned(),
            Payload::Docs(docs) => docs.last()?.get("_id").ok()?.map(|id| id.to_raw_bson()),
            Payload::Writes(writes) => match writes.last()? {
                Write::Insert(doc) | Write::Replace(doc) => {
                    doc.get("_id").ok()?.map(|id| id.to_raw_bson())
                }
                Write::Delete(id) => Some(id.clone()),
            },
        }
    }
}

#[derive(Debug)]
pub struct Batch {
    pub task: Arc<NsTask>,
    pub payload: Payload,
    /// Position of the batch in its namespace's `_id` order.
    seq: u64,
    last_id: RawBson,
    /// Documents the batch stands for (fetched ids may have vanished since).
    len: u64,
    /// Its share of the budget's bytes read and not yet written, given back when the batch
    /// is dropped (written, or abandoned by a stopping job).
    _bytes: Option<OwnedSemaphorePermit>,
}

impl Batch {
    /// Marks the batch as durably written, its `failed` refused documents kept as dead
    /// letters: the namespace's watermark may move and the namespace may now be finished.
    pub fn done(self, failed: u64) {
        self.task
            .batch_written(self.seq, self.last_id, self.len, failed);
    }
}

/// The producer's end of the queue.
#[derive(Clone)]
pub struct QueueSender {
    tx: async_channel::Sender<Batch>,
    stats: Arc<JobStats>,
    budget: Budget,
    /// Permits of 1 KiB: the documents queued or being written.
    bytes: Arc<Semaphore>,
    /// Becomes true with the first batch queued; closed when the producer drops its sender.
    first_batch: Arc<watch::Sender<bool>>,
}

/// The workers' end of the queue.
#[derive(Clone)]
pub struct QueueReceiver {
    rx: async_channel::Receiver<Batch>,
    stats: Arc<JobStats>,
    bytes: Arc<Semaphore>,
}

/// Budget permits are counted in KiB, so that any budget fits the semaphore's `u32` requests.
const PERMIT_BYTES: usize = 1024;

/// A queue of at most `capacity` batches whose documents, from queueing until written, take at
/// most `budget.pipeline_bytes` (a larger batch is let through alone).
pub fn bounded(
    capacity: usize,
    budget: Budget,
    stats: Arc<JobStats>,
) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = async_channel::bounded(capacity.max(1));
    let bytes = Arc::new(Semaphore::new(permits(budget.pipeline_bytes)));
    (
        QueueSender {
            tx,
            stats: stats.clone(),
            budget,
            bytes: bytes.clone(),
            first_batch: Arc::new(watch::Sender::new(false)),
        },
        QueueReceiver { rx, stats, bytes },
    )
}

fn permits(bytes: usize) -> usize {
    bytes.div_ceil(PERMIT_BYTES).max(1)
}

impl QueueSender {
    /// True once the job is stopping: nothing sent will be written.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Watches for the first batch: true once one is queued, closed once the producer is gone
    /// (whether it queued anything or not).
    pub fn first_batch(&self) -> watch::Receiver<bool> {
        self.first_batch.subscribe()
    }

    /// The budget the queue was sized from (the producer sizes its reads and batches from it).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Waits for room in the queue, and for the budget's bytes; fails once the job is stopping.
    pub async fn send(&self, task: &Arc<NsTask>, payload: Payload) -> Result<(), QueueClosed> {
        let Some(last_id) = payload.last_id() else {
            return Ok(());
        };
        let len = payload.len() as u64;
        self.send_through(task, payload, last_id, len).await
    }

    /// Queues `payload` (perhaps empty) as the batch that covers the task's `_id`s up to
    /// `through`, standing for `stands_for` documents: once it is written, the watermark may
    /// move to `through`. A reconcile's batch holds only what differs in the stretch of `_id`s
    /// it compared, so its watermark is where the comparison reached, not its last write.
    pub async fn send_through(
        &self,
        task: &Arc<NsTask>,
        payload: Payload,
        through: RawBson,
        stands_for: u64,
    ) -> Result<(), QueueClosed> {
        let last_id = through;
        let bytes = payload.doc_bytes();
        let permit = if bytes == 0 {
            None
        } else {
            // A batch larger than the whole share waits until it has the share to itself.
            let wanted = permits(bytes).min(permits(self.budget.pipeline_bytes));
            let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
            match self.bytes.clone().acquire_many_owned(wanted).await {
                Ok(permit) => Some(permit),
                Err(_) => return Err(QueueClosed),
            }
        };
        let seq = task.queued();
        let batch = Batch {
            task: task.clone(),
            len: stands_for,
            seq,
            last_id,
            payload,
            _bytes: permit,
        };
        match self.tx.send(batch).await {
            Ok(()) => {
                self.stats.batches_queued.fetch_add(1, SeqCst);
                if !*self.first_batch.borrow() {
                    self.first_batch.send_replace(true);
                }
                Ok(())
            }
            Err(_) => {
                task.unqueued();
                Err(QueueClosed)
            }
        }
    }
}

/// How often a producer waiting at a barrier looks whether the job is stopping.
const STOPPING_CHECK: std::time::Duration = std::time::Duration::from_millis(20);

impl QueueSender {
    /// Waits until every batch queued for `task` is written, so that nothing queued after can
    /// overtake it (a later change of the same `_id`). Fails once the job is stopping: a batch
    /// dropped unwritten never counts as written.
    pub async fn barrier(&self, task: &NsTask) -> Result<(), QueueClosed> {
        loop {
            tokio::select! {
                _ = task.all_written() => return Ok(()),
                _ = tokio::time::sleep(STOPPING_CHECK) => {
                    if self.is_closed() {
                        return Err(QueueClosed);
                    }
                }
            }
        }
    }
}

impl QueueReceiver {
    /// The next batch, or `None` when the producer is done and the queue is drained.
    pub async fn recv(&self) -> Option<Batch> {
        let batch = self.rx.recv().await.ok()?;
        self.stats.batches_taken.fetch_add(1, SeqCst);
        Some(batch)
    }

    /// Stops the producer: its next send fails instead of waiting for room.
    pub fn close(&self) {
        self.rx.close();
        self.bytes.close();
    }

    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stats::NsCounters;
    use crate::mongo::Namespace;
    use crate::state::NsCheckpoint;

    /// A task of namespace `a.b` and a queue of 10 batches.
    fn one_task() -> (Arc<NsTask>, QueueSender, QueueReceiver) {
        let counters = Arc::new(NsCounters::new(
            Namespace::new("a", "b"),
            Namespace::new("a", "b"),
        ));
        let stats = Arc::new(JobStats::new([], 1));
        let (tx, rx) = bounded(10, Budget::default(), stats);
        (Arc::new(NsTask::new(counters)), tx, rx)
    }

    #[tokio::test]
    async fn watermark_waits_for_the_oldest_batch() {
        let (task, tx, rx) = one_task();
        for ids in [vec![1, 2], vec![3, 4], vec![5]] {
            let ids = ids.into_iter().map(RawBson::Int32).collect();
            tx.send(&task, Payload::Ids(ids)).await.unwrap();
        }
        task.mark_produced();
        let (first, second, third) = (
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        );
        second.done(0);
        third.done(1);
        assert_eq!(task.checkpoint(), NsCheckpoint::new(None, 0, false));
        first.done(0);
        assert_eq!(
            task.checkpoint(),
            NsCheckpoint {
                failed: 1,
                ..NsCheckpoint::new(Some(&RawBson::Int32(5)), 5, true)
            }
        );
    }

    #[tokio::test]
    async fn a_barrier_waits_for_every_batch_of_its_task_and_fails_once_the_job_stops() {
        let (task, tx, rx) = one_task();
        let write = |id| Payload::Writes(vec![Write::Delete(RawBson::Int32(id))]);
        tx.send(&task, write(1)).await.unwrap();
        tx.send(&task, write(2)).await.unwrap();
        let barrier = tx.barrier(&task);
        tokio::pin!(barrier);
        let (first, second) = (rx.recv().await.unwrap(), rx.recv().await.unwrap());
        first.done(0);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(100), &mut barrier);
        assert!(waited.await.is_err(), "one batch is still being written");
        second.done(0);
        tokio::time::timeout(std::time::Duration::from_secs(5), barrier)
            .await
            .expect("both written")
            .unwrap();
        // A batch dropped unwritten by a stopping job never counts as written.
        tx.send(&task, write(3)).await.unwrap();
        drop(rx.recv().await.unwrap());
        rx.close();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), tx.barrier(&task));
        assert!(stopped.await.expect("the barrier gives up").is_err());
    }
}
