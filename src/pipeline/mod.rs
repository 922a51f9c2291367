//! The copy engine: one producer, a bounded queue, a pool of workers.
//!
//! ```text
//!  source ──ids or docs──▶ producer ──Batch──▶ [bounded queue] ──▶ worker × N ──docs──▶ sink
//!                                                                     │ (ids: fetch $in)
//!                                                                     ▼
//!                                                   stats, ledger (dead letters, watermarks)
//! ```
//!
//! In: a [`Source`], a [`Sink`], the namespace tasks and [`EngineOptions`]. Out: `Ok(())` once every
//! document is acknowledged by the sink, or the first error of any stage. Every task is owned by
//! one `JoinSet` and joined; the first failure closes the queue and cancels the others, so a
//! broken worker fails the job instead of hanging it.

pub mod control;
pub mod ledger;
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
pub use control::Control;
pub use ledger::Ledger;
pub use queue::NsTask;
use queue::QueueClosed;
pub use sink::{MongoSink, Sink};
pub use source::{MongoSource, Source};

/// Errors of the copy engine.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
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

/// How the engine runs. The worker count lives in the job's [`Control`], where it can change.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub batch_size: usize,
    pub strategy: Strategy,
}

/// What each task of the engine is, so the coordinator knows who finished.
enum Role {
    Counter,
    Producer,
    Worker(usize),
}

/// Runs the copy of `tasks` to completion (or first error). `control` pauses, resumes and resizes
/// it live; `cancel` stops it early, and a stopped run returns [`CopyError::Stopped`].
// Each argument is a separately shared part of a job; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: Source, K: Sink>(
    source: Arc<S>,
    sink: Arc<K>,
    tasks: Vec<Arc<NsTask>>,
    options: EngineOptions,
    control: Arc<Control>,
    stats: Arc<JobStats>,
    ledger: Arc<Ledger>,
    cancel: CancellationToken,
) -> Result<(), CopyError> {
    let cancel = cancel.child_token();
    // Two batches per worker keep every worker busy while bounding memory.
    let (sender, receiver) = queue::bounded(control.workers() * 2, stats.clone());
    let mut set: JoinSet<(Role, Result<(), CopyError>)> = JoinSet::new();

    // Expected counts only feed the progress display: a failure there is not fatal. Counting
    // starts once the first batch is queued (or the producer is done): on some servers a count is
    // a scan of its own that would delay the first write (SecantusDB), while on mongod the first
    // batch comes within milliseconds, so the totals show as early as ever.
    {
        let (source, tasks) = (source.clone(), tasks.clone());
        let mut first_batch = sender.first_batch();
        let cancel = cancel.clone();
        set.spawn(async move {
            tokio::select! {
                _ = first_batch.wait_for(|queued| *queued) => {}
                _ = cancel.cancelled() => return (Role::Counter, Ok(())),
            }
            for task in tasks {
                match source.count(&task.source).await {
                    Ok(n) => task.counters.set_expected(n),
                    Err(e) => tracing::debug!("cannot count {}: {e}", task.source),
                }
            }
            (Role::Counter, Ok(()))
        });
    }

    {
        let (source, sink, cancel) = (source.clone(), sink.clone(), cancel.clone());
        set.spawn(async move {
            // Owning the only sender: when this task ends the queue closes and workers drain it.
            let sender = sender;
            let produce = async {
                for task in tasks {
                    if cancel.is_cancelled() {
                        return Err(CopyError::Stopped);
                    }
                    // Finished by an earlier run (its checkpoint says so).
                    if task.counters.is_finished() {
                        continue;
                    }
                    sink.prepare(&task.destination).await?;
                    source
                        .produce(&task, options.strategy, options.batch_size, &sender)
                        .await?;
                    task.mark_produced();
                }
                Ok(())
            };
            (Role::Producer, produce.await)
        });
    }

    let mut running: Vec<bool> = Vec::new();
    let start_workers = |set: &mut JoinSet<_>, running: &mut Vec<bool>, wanted: usize| {
        for slot in 0..wanted {
            if running.get(slot).copied().unwrap_or(false) {
                continue;
            }
            if running.len() <= slot {
                running.resize(slot + 1, false);
            }
            running[slot] = true;
            let worker = worker::Worker {
                slot,
                source: source.clone(),
                sink: sink.clone(),
                queue: receiver.clone(),
                counters: stats.worker(slot),
                job: stats.clone(),
                cancel: cancel.clone(),
                paused: control.watch_paused(),
                wanted: control.watch_workers(),
                throttle: control.throttle().clone(),
                ledger: ledger.clone(),
            };
            set.spawn(async move { (Role::Worker(slot), worker.run().await) });
        }
    };
    let mut wanted = control.watch_workers();
    start_workers(&mut set, &mut running, *wanted.borrow_and_update());

    let mut first_error: Option<CopyError> = None;
    loop {
        let joined = tokio::select! {
            joined = set.join_next() => match joined {
                Some(joined) => joined,
                None => break,
            },
            Ok(()) = wanted.changed() => {
                // Workers above the new count retire by themselves; new slots start here.
                let n = *wanted.borrow_and_update();
                if first_error.is_none() && !cancel.is_cancelled() {
                    start_workers(&mut set, &mut running, n);
                }
                continue;
            }
            // However the workers stop, a producer waiting for room in the queue must wake up.
            _ = cancel.cancelled(), if !receiver.is_closed() => {
                receiver.close();
                continue;
            }
        };
        let outcome = match joined {
            Ok((Role::Worker(slot), outcome)) => {
                running[slot] = false;
                outcome
            }
            Ok((Role::Counter | Role::Producer, outcome)) => outcome,
            Err(e) => Err(CopyError::Internal(format!("task failed: {e}"))),
        };
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

        async fn write(
            &self,
            ns: &Namespace,
            _docs: Vec<RawDocumentBuf>,
        ) -> Result<Vec<sink::Refused>, CopyError> {
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
            Ok(vec![])
        }
    }

    fn options(strategy: Strategy) -> EngineOptions {
        EngineOptions {
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
                NsTask::for_stats(&stats),
                options(strategy),
                Arc::new(Control::new(3)),
                stats.clone(),
                Arc::new(Ledger::in_memory()),
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
                NsTask::for_stats(&stats),
                options(Strategy::Stream),
                Arc::new(Control::new(3)),
                stats.clone(),
                Arc::new(Ledger::in_memory()),
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
        let (_, _, cancel, job) = slow_job(10_000_000, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), job)
            .await
            .expect("cancel ends the job")
            .unwrap();
        assert!(matches!(outcome, Err(CopyError::Stopped)));
    }

    #[tokio::test]
    async fn cancel_ends_a_job_whose_workers_wait_for_the_rate_limit() {
        let stats = stats(1, 2);
        let limits = crate::throttle::Limits {
            rate: Some(1.0),
            rate_bytes: None,
        };
        let control = Control::with_throttle(2, crate::throttle::Throttle::new(limits));
        let cancel = CancellationToken::new();
        let job = tokio::spawn(run(
            Arc::new(SyntheticSource {
                docs: 1_000_000,
                doc_size: 64,
            }),
            Arc::new(NullSink),
            NsTask::for_stats(&stats),
            options(Strategy::Stream),
            Arc::new(control),
            stats.clone(),
            Arc::new(Ledger::in_memory()),
            cancel.clone(),
        ));
        // Both workers wait for tokens, the producer for room in the full queue.
        wait_until("queue full", || stats.snapshot().queue_depth >= 4).await;
        cancel.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(5), job)
            .await
            .expect("cancel ends the job although no worker takes another batch")
            .unwrap();
        assert!(matches!(outcome, Err(CopyError::Stopped)));
    }

    type SlowJob = (
        Arc<Control>,
        Arc<JobStats>,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), CopyError>>,
    );

    /// A job that writes slowly enough to be watched: ~1 ms per batch of 10.
    fn slow_job(docs: u64, workers: usize) -> SlowJob {
        let stats = stats(1, workers);
        let control = Arc::new(Control::new(workers));
        let cancel = CancellationToken::new();
        let job = tokio::spawn(run(
            Arc::new(SyntheticSource { docs, doc_size: 64 }),
            Arc::new(FailingSink {
                writes: AtomicU64::new(0),
                fail_at: u64::MAX,
            }),
            NsTask::for_stats(&stats),
            EngineOptions {
                batch_size: 10,
                strategy: Strategy::Stream,
            },
            control.clone(),
            stats.clone(),
            Arc::new(Ledger::in_memory()),
            cancel.clone(),
        ));
        (control, stats, cancel, job)
    }

    async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn pause_holds_the_count_still_and_resume_finishes() {
        let (control, stats, _, job) = slow_job(50_000, 3);
        wait_until("progress", || stats.snapshot().docs > 100).await;
        control.pause();
        let states = || {
            stats
                .snapshot()
                .workers
                .iter()
                .map(|w| w.state)
                .collect::<Vec<_>>()
        };
        wait_until("all workers paused", || {
            states()
                .iter()
                .all(|s| *s == crate::stats::WorkerState::Paused)
        })
        .await;
        let held = stats.snapshot().docs;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(stats.snapshot().docs, held, "no progress while paused");
        assert!(!job.is_finished());
        control.resume();
        tokio::time::timeout(Duration::from_secs(30), job)
            .await
            .expect("finishes after resume")
            .unwrap()
            .unwrap();
        assert_eq!(stats.snapshot().docs, 50_000);
    }

    #[tokio::test]
    async fn worker_count_changes_while_the_job_runs() {
        let (control, stats, _, job) = slow_job(100_000, 1);
        wait_until("progress", || stats.snapshot().docs > 50).await;
        control.set_workers(4);
        wait_until("four workers busy", || {
            let w = stats.snapshot().workers;
            w.len() == 4 && w.iter().all(|w| w.batches > 0)
        })
        .await;
        control.set_workers(2);
        wait_until("two retired", || {
            let w = stats.snapshot().workers;
            w[2..]
                .iter()
                .all(|w| w.state == crate::stats::WorkerState::Stopped)
        })
        .await;
        let retired: Vec<u64> = stats.snapshot().workers[2..]
            .iter()
            .map(|w| w.batches)
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snap = stats.snapshot();
        assert!(snap.docs < 100_000, "still running");
        let later: Vec<u64> = snap.workers[2..].iter().map(|w| w.batches).collect();
        assert_eq!(retired, later, "retired workers take no batch");
        tokio::time::timeout(Duration::from_secs(30), job)
            .await
            .expect("finishes")
            .unwrap()
            .unwrap();
        assert_eq!(stats.snapshot().docs, 100_000);
    }

    /// A synthetic source whose `count` notes how many batches were queued before it ran.
    struct CountWatchingSource {
        inner: SyntheticSource,
        stats: Arc<JobStats>,
        queued_at_count: Arc<std::sync::Mutex<Vec<u64>>>,
    }

    impl Source for CountWatchingSource {
        async fn count(&self, ns: &Namespace) -> Result<u64, CopyError> {
            let queued = self.stats.batches_queued.load(Ordering::SeqCst);
            self.queued_at_count.lock().unwrap().push(queued);
            self.inner.count(ns).await
        }

        async fn produce(
            &self,
            task: &Arc<NsTask>,
            strategy: Strategy,
            batch_size: usize,
            queue: &queue::QueueSender,
        ) -> Result<(), CopyError> {
            self.inner.produce(task, strategy, batch_size, queue).await
        }

        async fn fetch(
            &self,
            ns: &Namespace,
            ids: &[mongodb::bson::RawBson],
        ) -> Result<Vec<RawDocumentBuf>, CopyError> {
            self.inner.fetch(ns, ids).await
        }
    }

    #[tokio::test]
    async fn counting_waits_for_the_first_batch_and_still_happens_for_empty_sources() {
        for docs in [1_000, 0] {
            let stats = stats(2, 2);
            let queued_at_count = Arc::new(std::sync::Mutex::new(Vec::new()));
            let source = CountWatchingSource {
                inner: SyntheticSource { docs, doc_size: 64 },
                stats: stats.clone(),
                queued_at_count: queued_at_count.clone(),
            };
            tokio::time::timeout(
                Duration::from_secs(10),
                run(
                    Arc::new(source),
                    Arc::new(NullSink),
                    NsTask::for_stats(&stats),
                    options(Strategy::Stream),
                    Arc::new(Control::new(2)),
                    stats.clone(),
                    Arc::new(Ledger::in_memory()),
                    CancellationToken::new(),
                ),
            )
            .await
            .expect("the job ends")
            .unwrap();
            let seen = queued_at_count.lock().unwrap().clone();
            assert_eq!(seen.len(), 2, "both namespaces counted ({docs} docs)");
            assert!(
                seen.iter().all(|&queued| (queued > 0) == (docs > 0)),
                "{seen:?}"
            );
            let snap = stats.snapshot();
            assert!(snap.namespaces.iter().all(|n| n.expected == Some(docs)));
        }
    }
}
