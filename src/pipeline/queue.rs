//! The bounded queue between the producer and the workers.
//!
//! In: [`Batch`]es from the producer, each sorted by `_id` and tagged with its namespace task.
//! Out: the same batches, to whichever worker is free. The queue holds at most a few batches per
//! worker, so memory stays flat however large the collection; closing it (dropping the producer's
//! sender) is the end-of-work signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use mongodb::bson::{RawBson, RawDocumentBuf};

use crate::mongo::Namespace;
use crate::stats::{JobStats, NsCounters};

/// One namespace pair being copied, shared by the producer and the workers.
#[derive(Debug)]
pub struct NsTask {
    pub source: Namespace,
    pub destination: Namespace,
    pub counters: Arc<NsCounters>,
    /// Batches produced but not yet written.
    outstanding: AtomicU64,
    /// Set when the producer has queued the namespace's last batch.
    produced: AtomicBool,
}

impl NsTask {
    pub fn new(counters: Arc<NsCounters>) -> Self {
        NsTask {
            source: counters.source.clone(),
            destination: counters.destination.clone(),
            counters,
            outstanding: AtomicU64::new(0),
            produced: AtomicBool::new(false),
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

    fn batch_written(&self) {
        self.outstanding.fetch_sub(1, SeqCst);
        self.finish_if_done();
    }

    fn finish_if_done(&self) {
        if self.produced.load(SeqCst) && self.outstanding.load(SeqCst) == 0 {
            self.counters.mark_finished();
        }
    }
}

/// What a batch carries: ids for workers to fetch, or documents already read.
#[derive(Debug)]
pub enum Payload {
    Ids(Vec<RawBson>),
    Docs(Vec<RawDocumentBuf>),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Ids(ids) => ids.len(),
            Payload::Docs(docs) => docs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub struct Batch {
    pub task: Arc<NsTask>,
    pub payload: Payload,
}

impl Batch {
    /// Marks the batch as durably written (its namespace may now be finished).
    pub fn done(self) {
        self.task.batch_written();
    }
}

/// The queue was closed because the job is stopping.
#[derive(Debug, thiserror::Error)]
#[error("the work queue is closed")]
pub struct QueueClosed;

/// The producer's end of the queue.
#[derive(Clone)]
pub struct QueueSender {
    tx: async_channel::Sender<Batch>,
    stats: Arc<JobStats>,
}

/// The workers' end of the queue.
#[derive(Clone)]
pub struct QueueReceiver {
    rx: async_channel::Receiver<Batch>,
    stats: Arc<JobStats>,
}

pub fn bounded(capacity: usize, stats: Arc<JobStats>) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = async_channel::bounded(capacity.max(1));
    (
        QueueSender {
            tx,
            stats: stats.clone(),
        },
        QueueReceiver { rx, stats },
    )
}

impl QueueSender {
    /// True once the job is stopping: nothing sent will be written.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits for room in the queue; fails once the job is stopping.
    pub async fn send(&self, task: &Arc<NsTask>, payload: Payload) -> Result<(), QueueClosed> {
        if payload.is_empty() {
            return Ok(());
        }
        task.outstanding.fetch_add(1, SeqCst);
        let batch = Batch {
            task: task.clone(),
            payload,
        };
        match self.tx.send(batch).await {
            Ok(()) => {
                self.stats.batches_queued.fetch_add(1, SeqCst);
                Ok(())
            }
            Err(_) => {
                task.outstanding.fetch_sub(1, SeqCst);
                Err(QueueClosed)
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
    }
}
