//! The worker stage, and the one place where a batch is written: pause gate → fetch (if the
//! batch carries only `_id`s) → throttle → sink → dead letters → counters.
//!
//! In: [`Batch`](super::queue::Batch)es from the queue, whichever feed queued them (a
//! collection scan, a journal, a sync's changes), and the job's live controls. Out: documents
//! acknowledged by the sink, counted per worker and per namespace task, and the batch reported
//! done. A worker stops when the queue is closed and drained, when the job is cancelled or its
//! slot is no longer wanted (after finishing its current batch), or at its first error, which
//! it returns. While the job is paused it takes no batch; before each write it waits for the
//! job's rate limits. Documents the sink refuses go to the [`Ledger`] as dead letters before
//! the batch counts as done.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::RawDocumentBuf;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::control::throttle::Throttle;
use super::ledger::Ledger;
use super::queue::{Batch, Payload, QueueReceiver};
use super::settle::Settle;
use super::sink::seam::{Refused, Sink, Write};
use super::source::seam::{current, Source};
use super::stats::{JobStats, WorkerCounters, WorkerState};
use crate::engine::error::CopyError;
use crate::mongo::bson_order::IdKey;

pub struct Worker {
    /// The worker's slot: it retires when fewer workers are wanted than `slot + 1`.
    pub slot: usize,
    pub source: Arc<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub queue: QueueReceiver,
    pub counters: Arc<WorkerCounters>,
    pub job: Arc<JobStats>,
    pub cancel: CancellationToken,
    pub paused: watch::Receiver<bool>,
    pub wanted: watch::Receiver<usize>,
    pub throttle: Throttle,
    pub ledger: Arc<Ledger>,
    /// Largest part of an `_id` batch fetched at once, in bytes (the budget's batch bytes).
    pub batch_bytes: usize,
    /// What the job does with documents once stored (a move deletes them from the source).
    pub settle: Option<Arc<dyn Settle>>,
}

/// Why a worker stopped without error.
enum Next {
    Batch(Batch),
    Stop,
}

impl Worker {
    pub async fn run(mut self) -> Result<(), CopyError> {
        let outcome = self.work().await;
        self.counters.set_state(WorkerState::Stopped);
        outcome
    }

    async fn work(&mut self) -> Result<(), CopyError> {
        loop {
            let Next::Batch(mut batch) = self.next_batch().await else {
                return Ok(());
            };
            self.counters.set_state(WorkerState::Busy);
            let mut failed = 0;
            match std::mem::replace(&mut batch.payload, Payload::Ids(vec![])) {
                written @ (Payload::Docs(_) | Payload::Writes(_)) => {
                    match self.write(&batch, written, Duration::ZERO).await? {
                        Some(refused) => failed += refused,
                        None => return Ok(()),
                    }
                }
                // Fetched in parts of at most the budget's batch bytes, so large documents stay
                // bounded.
                Payload::Ids(ids) => {
                    let mut pending = &ids[..];
                    let max_bytes = self.batch_bytes;
                    while !pending.is_empty() {
                        let started = Instant::now();
                        let ns = &batch.task.source;
                        let fetched = self.source.fetch(ns, pending, max_bytes).await?;
                        // At least one `_id` each time, so a source that answered for none
                        // cannot hold the worker forever.
                        pending = &pending[fetched.covered.max(1).min(pending.len())..];
                        let docs = Payload::Docs(fetched.docs);
                        match self.write(&batch, docs, started.elapsed()).await? {
                            Some(refused) => failed += refused,
                            None => return Ok(()),
                        }
                    }
                }
                // Read whole (a part of a sync's chunk: its writes go together).
                Payload::Current(ids) => {
                    let started = Instant::now();
                    let ns = &batch.task.source;
                    let writes = current(self.source.as_ref(), ns, ids, self.batch_bytes).await?;
                    match self
                        .write(&batch, Payload::Writes(writes), started.elapsed())
                        .await?
                    {
                        Some(refused) => failed += refused,
                        None => return Ok(()),
                    }
                }
            }
            batch.done(failed);
        }
    }

    /// Writes documents of `batch` once the rate limits allow, keeps the refused ones as dead
    /// letters and counts the rest. Returns how many were refused, or `None` when the job was
    /// cancelled while waiting: the batch is left unwritten (and so never counts as done; a
    /// rerun writes it).
    async fn write(
        &mut self,
        batch: &Batch,
        written: Payload,
        fetch_time: Duration,
    ) -> Result<Option<u64>, CopyError> {
        if written.is_empty() {
            return Ok(Some(0));
        }
        let count = written.len() as u64;
        let bytes = written.doc_bytes() as u64;
        tokio::select! {
            _ = self.throttle.acquire(count, bytes) => {}
            _ = self.cancel.cancelled() => {
                self.queue.close();
                return Ok(None);
            }
        }
        let write_started = Instant::now();
        let ns = &batch.task.destination;
        let refused = match written {
            Payload::Docs(docs) => match &self.settle {
                None => self.sink.write(ns, docs).await?,
                Some(settle) => {
                    let sent = docs.clone();
                    let refused = self.sink.write(ns, docs).await?;
                    settle.settle(&batch.task, stored(sent, &refused)).await?;
                    refused
                }
            },
            Payload::Writes(writes) => {
                let deletes = writes
                    .iter()
                    .filter(|w| matches!(w, Write::Delete(_)))
                    .count();
                let refused = self.sink.apply(ns, writes).await?;
                batch.task.counters.add_deleted(deletes as u64);
                refused
            }
            Payload::Ids(_) | Payload::Current(_) => {
                return Err(CopyError::Internal(
                    "a batch of _ids reached the sink".into(),
                ))
            }
        };
        let write_time = write_started.elapsed();
        let failed = refused.len() as u64;
        let failed_bytes: u64 = refused.iter().map(|r| r.doc.as_bytes().len() as u64).sum();
        if !refused.is_empty() {
            let ns = &batch.task.destination;
            self.ledger
                .keep(ns, refused, &self.job.dead_letters)
                .await?;
            batch.task.counters.add_failed(failed);
        }
        self.counters
            .record_batch(count - failed, fetch_time, write_time);
        self.job.recent.record(count - failed);
        if !fetch_time.is_zero() {
            self.job.fetch_latency.observe(fetch_time);
        }
        self.job.write_latency.observe(write_time);
        batch
            .task
            .counters
            .add_written(count - failed, bytes - failed_bytes);
        Ok(Some(failed))
    }

    /// Waits for a batch while the job runs, this slot is wanted and the gate is open.
    async fn next_batch(&mut self) -> Next {
        loop {
            if *self.wanted.borrow_and_update() <= self.slot {
                return Next::Stop;
            }
            let paused = *self.paused.borrow_and_update();
            self.counters.set_state(if paused {
                WorkerState::Paused
            } else {
                WorkerState::Idle
            });
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    // Unblocks a producer waiting for room in a queue nobody drains any more.
                    self.queue.close();
                    return Next::Stop;
                }
                _ = self.wanted.changed() => continue,
                _ = self.paused.changed() => continue,
                batch = self.queue.recv(), if !paused => {
                    return match batch {
                        Some(batch) => Next::Batch(batch),
                        None => Next::Stop,
                    };
                }
            }
        }
    }
}

/// The documents of `sent` that the sink stored: all but those it refused (matched by their
/// exact `_id`).
fn stored(sent: Vec<RawDocumentBuf>, refused: &[Refused]) -> Vec<RawDocumentBuf> {
    if refused.is_empty() {
        return sent;
    }
    let key = |doc: &RawDocumentBuf| {
        let id = doc.get("_id").ok().flatten()?;
        Some(IdKey::of(&id.to_raw_bson()))
    };
    let refused: HashSet<IdKey> = refused.iter().filter_map(|r| key(&r.doc)).collect();
    sent.into_iter()
        .filter(|doc| key(doc).is_none_or(|id| !refused.contains(&id)))
        .collect()
}
