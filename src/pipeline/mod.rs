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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use mongodb::bson::RawDocumentBuf;

    use super::synthetic::{NullSink, SyntheticSource};
    use super::*;
    use crate::mongo::{Namespace, Side};

    fn tasks(stats: &JobStats) -> Vec<Arc<NsTask>> {
        stats
            .namespaces
            .iter()
            .map(|c| Arc::new(NsTask::new(c.clone())))
            .collect()
    }

    fn stats(namespaces: usize, workers: usize) -> Arc<JobStats> {
        Arc::new(JobStats::new(
            (0..namespaces).map(|i| {
                let ns = Namespace::new("db", format!("c{i}"));
                (ns.clone(), ns)
            }),
            workers,
        ))
    }

    /// Fails on its `fail_at`-th write, counts the others.
    struct FailingSink {
        writes: AtomicU64,
        fail_at: u64,
    }

    impl Sink for FailingSink {
        async fn prepare(&self, _ns: &Namespace) -> Result<(), CopyError> {
            Ok(())
        }

        async fn write(&self, ns: &Namespace, _docs: Vec<RawDocumentBuf>) -> Result<(), CopyError> {
            if self.writes.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
                return Err(MongoError::Command {
                    side: Side::Destination,
                    ns: ns.clone(),
                    op: "insert",
                    reason: "injected".into(),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        }
    }

    fn options(strategy: Strategy) -> EngineOptions {
        EngineOptions {
            workers: 3,
            batch_size: 100,
            strategy,
        }
    }

    #[tokio::test]
    async fn copies_every_document_of_every_namespace() {
        for strategy in [Strategy::Stream, Strategy::Ids] {
            let stats = stats(3, 3);
            let source = SyntheticSource {
                docs: 1_234,
                doc_size: 256,
            };
            run(
                Arc::new(source),
                Arc::new(NullSink),
                tasks(&stats),
                options(strategy),
                stats.clone(),
                CancellationToken::new(),
            )
            .await
            .unwrap();
            let snap = stats.snapshot();
            assert_eq!(snap.docs, 3 * 1_234);
            assert!(snap
                .namespaces
                .iter()
                .all(|n| n.finished && n.docs == 1_234));
            assert_eq!(snap.queue_depth, 0);
            assert_eq!(snap.workers.iter().map(|w| w.docs).sum::<u64>(), 3 * 1_234);
        }
    }

    #[tokio::test]
    async fn a_failing_worker_fails_the_job_instead_of_hanging() {
        let stats = stats(1, 3);
        let sink = FailingSink {
            writes: AtomicU64::new(0),
            fail_at: 5,
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            run(
                Arc::new(SyntheticSource {
                    docs: 1_000_000,
                    doc_size: 64,
                }),
                Arc::new(sink),
                tasks(&stats),
                options(Strategy::Stream),
                stats.clone(),
                CancellationToken::new(),
            ),
        )
        .await
        .expect("the job ends");
        let err = outcome.unwrap_err();
        assert!(
            err.to_string().contains("injected"),
            "root cause kept: {err}"
        );
        assert!(stats.snapshot().docs < 1_000_000);
    }

    #[tokio::test]
    async fn cancel_stops_a_producer_blocked_on_a_full_queue() {
        let stats = stats(1, 1);
        let cancel = CancellationToken::new();
        let job = tokio::spawn(run(
            Arc::new(SyntheticSource {
                docs: 10_000_000,
                doc_size: 64,
            }),
            Arc::new(FailingSink {
                writes: AtomicU64::new(0),
                fail_at: u64::MAX,
            }),
            tasks(&stats),
            EngineOptions {
                workers: 1,
                batch_size: 10,
                strategy: Strategy::Stream,
            },
            stats.clone(),
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), job)
            .await
            .expect("cancel ends the job")
            .unwrap();
        assert!(matches!(outcome, Err(CopyError::Stopped)));
    }
}
