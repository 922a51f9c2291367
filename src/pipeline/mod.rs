//! The copy engine: one producer, a bounded queue, a pool of workers.
//!
//! ```text
//!  source ──ids or docs──▶ producer ──Batch──▶ [bounded queue] ──▶ worker × N ──docs──▶ sink
//!                                                                     │ (ids: fetch $in)
//!                                                                     ▼
//!                                                                   stats
//! ```
//!
//! In: a [`Source`], a [`Sink`], the namespace tasks and [`EngineOptions`]. Out: `Ok(())` once every
//! document is acknowledged by the sink, or the first error of any stage. Every task is owned by
//! one `JoinSet` and joined; the first failure closes the queue and cancels the others, so a
//! broken worker fails the job instead of hanging it.

pub mod queue;
pub mod sink;
pub mod source;
pub mod synthetic;
pub mod worker;

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Strategy;
use crate::mongo::MongoError;
use crate::stats::JobStats;
pub use queue::NsTask;
use queue::QueueClosed;
pub use sink::{MongoSink, Sink};
pub use source::{MongoSource, Source};

/// Errors of the copy engine.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Mongo(#[from] MongoError),
    /// The job was stopped before it finished (not a failure of its own).
    #[error("stopped before completion")]
    Stopped,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<QueueClosed> for CopyError {
    fn from(_: QueueClosed) -> Self {
        CopyError::Stopped
    }
}

/// How the engine runs.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub workers: usize,
    pub batch_size: usize,
    pub strategy: Strategy,
}

impl EngineOptions {
    /// Two batches per worker keep every worker busy while bounding memory.
    fn queue_capacity(&self) -> usize {
        self.workers * 2
    }
}

/// Runs the copy of `tasks` to completion (or first error). `cancel` stops it early; a stopped
/// run returns [`CopyError::Stopped`].
pub async fn run<S: Source, K: Sink>(
    source: Arc<S>,
    sink: Arc<K>,
    tasks: Vec<Arc<NsTask>>,
    options: EngineOptions,
    stats: Arc<JobStats>,
    cancel: CancellationToken,
) -> Result<(), CopyError> {
    assert_eq!(
        stats.workers.len(),
        options.workers,
        "one counter per worker"
    );
    let cancel = cancel.child_token();
    let (sender, receiver) = queue::bounded(options.queue_capacity(), stats.clone());
    let mut set = JoinSet::new();

    // Expected counts only feed the progress display: a failure there is not fatal.
    {
        let (source, tasks) = (source.clone(), tasks.clone());
        set.spawn(async move {
            for task in tasks {
                match source.count(&task.source).await {
                    Ok(n) => task.counters.set_expected(n),
                    Err(e) => tracing::debug!("cannot count {}: {e}", task.source),
                }
            }
            Ok(())
        });
    }

    {
        let (source, sink, cancel) = (source.clone(), sink.clone(), cancel.clone());
        set.spawn(async move {
            // Owning the only sender: when this task ends the queue closes and workers drain it.
            let sender = sender;
            for task in tasks {
                if cancel.is_cancelled() {
                    return Err(CopyError::Stopped);
                }
                sink.prepare(&task.destination).await?;
                source
                    .produce(&task, options.strategy, options.batch_size, &sender)
                    .await?;
                task.mark_produced();
            }
            Ok(())
        });
    }

    for counters in &stats.workers {
        let worker = worker::Worker {
            source: source.clone(),
            sink: sink.clone(),
            queue: receiver.clone(),
            counters: counters.clone(),
            cancel: cancel.clone(),
        };
        set.spawn(worker.run());
    }

    let mut first_error: Option<CopyError> = None;
    while let Some(joined) = set.join_next().await {
        let outcome =
            joined.unwrap_or_else(|e| Err(CopyError::Internal(format!("task failed: {e}"))));
        if let Err(e) = outcome {
            // A stop caused by another task's failure is not news; keep the root cause.
            let is_root = !matches!(e, CopyError::Stopped);
            if first_error.is_none() || (is_root && matches!(first_error, Some(CopyError::Stopped)))
            {
                first_error = Some(e);
            }
            cancel.cancel();
            receiver.close();
        }
    }
    match first_error {
        Some(e) => Err(e),
        None if cancel.is_cancelled() => Err(CopyError::Stopped),
        None => Ok(()),
    }
}
