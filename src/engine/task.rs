//! A namespace task: one namespace pair being copied, or one partition of it, shared by the
//! producer, the workers and the checkpointer.
//!
//! In: the namespace's counters, and where an earlier run's checkpoint left off. Out: where the
//! producer starts reading, the task's low [`Watermark`] as batches are acknowledged, and its
//! checkpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use mongodb::bson::RawBson;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::partition::Partition;
use super::stats::{JobStats, NsCounters, PartProgress};
use super::watermark::Watermark;
use crate::mongo::Namespace;
use crate::state::NsCheckpoint;

/// One namespace pair being copied, or one partition of it (an `_id` range), shared by the
/// producer and the workers.
#[derive(Debug)]
pub struct NsTask {
    pub source: Namespace,
    pub destination: Namespace,
    pub counters: Arc<NsCounters>,
    /// The `_id` range read, when the namespace is partitioned.
    pub part: Option<Partition>,
    /// Batches produced but not yet written.
    outstanding: AtomicU64,
    /// Set when the producer has queued the namespace's last batch.
    produced: AtomicBool,
    /// Set once every batch is written: counted once in the namespace's counters.
    finished: AtomicBool,
    /// Where an earlier run's checkpoint left off (or the partition starts): the producer reads
    /// only what sorts after.
    resume_after: Mutex<Option<RawBson>>,
    watermark: Mutex<Watermark>,
    /// The partition's progress, as the dashboard shows it.
    progress: Option<Arc<PartProgress>>,
    /// Woken whenever a batch of the task is written (or given back unqueued).
    written: Notify,
}

impl NsTask {
    pub fn new(counters: Arc<NsCounters>) -> Self {
        NsTask {
            source: counters.source.clone(),
            destination: counters.destination.clone(),
            counters,
            part: None,
            outstanding: AtomicU64::new(0),
            produced: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            resume_after: Mutex::default(),
            watermark: Mutex::default(),
            progress: None,
            written: Notify::new(),
        }
    }

    /// A task that continues from an earlier run's checkpoint (`None`: from the start). A
    /// checkpoint of a partition gives the task its range.
    pub fn resuming(
        counters: Arc<NsCounters>,
        from: Option<&NsCheckpoint>,
    ) -> Result<Self, String> {
        let mut task = NsTask::new(counters);
        let Some(checkpoint) = from else {
            return Ok(task);
        };
        if let Some(part) = &checkpoint.part {
            task = task.within(Partition::from_checkpoint(part)?);
        }
        task.continue_from(checkpoint)?;
        Ok(task)
    }

    /// Continues from `checkpoint`, newer than what the task started from (another process
    /// moved it): the task must not have queued anything yet. What it adds to the written and
    /// refused documents counts as done before this run.
    pub fn continue_from(&self, checkpoint: &NsCheckpoint) -> Result<(), String> {
        let after = match checkpoint.after_id()? {
            Some(after) => Some(after),
            None => self.part.as_ref().and_then(|p| p.lower.clone()),
        };
        {
            let mut watermark = self.watermark.lock();
            let (done, failed) = watermark.carried();
            let kept_failed = checkpoint.failed.min(checkpoint.done);
            self.counters.add_skipped(
                (checkpoint.done - kept_failed).saturating_sub(done.saturating_sub(failed)),
            );
            self.counters.add_failed(kept_failed.saturating_sub(failed));
            *watermark = Watermark::default();
            watermark.resume_at(after.clone());
            watermark.carry(checkpoint.done, kept_failed);
        }
        if let Some(progress) = &self.progress {
            progress.set_done(checkpoint.done);
        }
        *self.resume_after.lock() = after;
        if checkpoint.complete {
            self.mark_produced();
        }
        Ok(())
    }

    /// Where the producer starts: after this `_id` (`None`: from the start).
    pub fn resume_after(&self) -> Option<RawBson> {
        self.resume_after.lock().clone()
    }

    /// The task of one partition of the namespace: it reads after `part.lower` up to
    /// `part.upper`.
    pub fn within(mut self, part: Partition) -> Self {
        *self.resume_after.get_mut() = part.lower.clone();
        self.watermark.get_mut().resume_at(part.lower.clone());
        let progress = Arc::new(PartProgress::new(part.index));
        self.counters.add_part(progress.clone());
        self.progress = Some(progress);
        self.part = Some(part);
        self
    }

    /// Where the task's range ends (`None`: at the end of the namespace).
    pub fn upper(&self) -> Option<&RawBson> {
        self.part.as_ref().and_then(|p| p.upper.as_ref())
    }

    /// Every batch of the task is written.
    pub fn is_finished(&self) -> bool {
        self.finished.load(SeqCst)
    }

    /// The producer starts reading the task.
    pub fn mark_reading(&self) {
        if let Some(progress) = &self.progress {
            progress.mark_reading();
        }
    }

    /// The durable position of this namespace (or partition) right now.
    pub fn checkpoint(&self) -> NsCheckpoint {
        NsCheckpoint {
            part: self.part.as_ref().map(Partition::checkpoint),
            ..self.watermark.lock().checkpoint(self.is_finished())
        }
    }

    /// The checkpoint key of the whole namespace: `"src.coll -> dst.coll"`.
    pub fn key_of_namespace(&self) -> String {
        format!("{} -> {}", self.source, self.destination)
    }

    /// The checkpoint's key: the namespace's, and a partition's number after it.
    pub fn key(&self) -> String {
        let key = self.key_of_namespace();
        match &self.part {
            None => key,
            Some(part) => part.key(&key),
        }
    }

    /// One task per namespace counted in `stats`, in order.
    pub fn for_stats(stats: &JobStats) -> Vec<Arc<NsTask>> {
        stats
            .namespaces
            .iter()
            .map(|c| Arc::new(NsTask::new(c.clone())))
            .collect()
    }

    /// Called by the producer after the namespace's last batch is queued.
    pub fn mark_produced(&self) {
        self.produced.store(true, SeqCst);
        self.finish_if_done();
    }

    /// Batches of this namespace queued or being written right now.
    pub fn outstanding_batches(&self) -> u64 {
        self.outstanding.load(SeqCst)
    }

    /// A batch of the task is being queued: its number in the task's `_id` order.
    pub(super) fn queued(&self) -> u64 {
        self.outstanding.fetch_add(1, SeqCst);
        self.watermark.lock().number_next()
    }

    /// A batch numbered by [`queued`](Self::queued) never reached the queue.
    pub(super) fn unqueued(&self) {
        self.outstanding.fetch_sub(1, SeqCst);
        self.written.notify_waiters();
    }

    /// Returns once no batch of the task is queued or being written.
    pub async fn all_written(&self) {
        loop {
            let notified = self.written.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.outstanding.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn batch_written(&self, seq: u64, last_id: RawBson, docs: u64, failed: u64) {
        // The watermark moves before the task can count as finished.
        let done = {
            let mut watermark = self.watermark.lock();
            watermark.acknowledge(seq, last_id, docs, failed);
            watermark.done()
        };
        if let Some(progress) = &self.progress {
            progress.set_done(done);
        }
        self.outstanding.fetch_sub(1, SeqCst);
        self.written.notify_waiters();
        self.finish_if_done();
    }

    fn finish_if_done(&self) {
        if self.produced.load(SeqCst)
            && self.outstanding.load(SeqCst) == 0
            && !self.finished.swap(true, SeqCst)
        {
            if let Some(progress) = &self.progress {
                progress.mark_complete();
            }
            self.counters.part_finished();
        }
    }
}
