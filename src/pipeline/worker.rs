//! The worker stage: takes batches off the queue, fetches their documents if they carry only
//! `_id`s, and writes them to the sink.
//!
//! In: [`Batch`](super::queue::Batch)es from the queue. Out: documents acknowledged by the sink,
//! counted per worker and per namespace. A worker stops when the queue is closed and drained, when
//! the job is cancelled (after finishing its current batch), or at its first error, which it
//! returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::queue::{Payload, QueueReceiver};
use super::sink::Sink;
use super::source::Source;
use super::CopyError;
use crate::stats::WorkerCounters;

pub struct Worker<S, K> {
    pub source: Arc<S>,
    pub sink: Arc<K>,
    pub queue: QueueReceiver,
    pub counters: Arc<WorkerCounters>,
    pub cancel: CancellationToken,
}

impl<S: Source, K: Sink> Worker<S, K> {
    pub async fn run(self) -> Result<(), CopyError> {
        loop {
            let mut batch = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    // Unblocks a producer waiting for room in a queue nobody drains any more.
                    self.queue.close();
                    return Ok(());
                }
                batch = self.queue.recv() => match batch {
                    Some(batch) => batch,
                    None => return Ok(()),
                },
            };
            let started = Instant::now();
            let (docs, fetch_time) =
                match std::mem::replace(&mut batch.payload, Payload::Ids(vec![])) {
                    Payload::Docs(docs) => (docs, Duration::ZERO),
                    Payload::Ids(ids) => {
                        let docs = self.source.fetch(&batch.task.source, ids).await?;
                        (docs, started.elapsed())
                    }
                };
            let count = docs.len() as u64;
            let bytes = docs.iter().map(|d| d.as_bytes().len() as u64).sum();
            let write_started = Instant::now();
            if !docs.is_empty() {
                self.sink.write(&batch.task.destination, docs).await?;
            }
            self.counters
                .record_batch(count, fetch_time, write_started.elapsed());
            batch.task.counters.add_written(count, bytes);
            batch.done();
        }
    }
}
