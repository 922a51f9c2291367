//! The copy engine: one feed, a bounded queue, a pool of workers, and beside them the
//! checkpointer and (in adaptive mode) the controller.
//!
//! ```text
//!                ┌─────────────── Engine::run: every task owned and joined ───────────────┐
//!  feed.rs: scan.rs (a Source's tasks)  ──Batch──▶ [queue.rs: bounded] ──▶ worker.rs × N ──▶ sink/
//!   or a sync's change stream (run/sync.rs,        │                 (fetch, throttle,      (journaling,
//!   changes.rs: chunks and barriers)               ▼                  write, settle.rs)     mongo, null)
//!                          stats.rs ◀──── counters, once per batch ─── ledger.rs: dead letters,
//!                                                                      watermarks ──▶ state store
//!  control/: pause gate, worker count, throttle (job, adaptive cap, global), adaptive controller
//! ```
//!
//! In: an [`Engine`] — a [`Source`], a [`Sink`], the namespace tasks, the batch size, the job's
//! [`Control`], its [`JobStats`] and [`Ledger`]; a [`Feed`] other than the tasks' scan, and a
//! [`Settle`] step, when the driver gives them. Out: `Ok(())` once every batch the feed queued
//! is acknowledged by the sink and the last checkpoint is saved, or the first error of any stage.
//! Every task is owned by one `JoinSet` (or joined handle) and joined; the first failure closes
//! the queue and cancels the others, so a broken worker fails the job instead of hanging it.
//!
//! The engine's vocabulary lives in leaf files ([`error`], [`task`], [`watermark`], [`feed`],
//! [`settle`], `sink/seam.rs`, `source/seam.rs`): stages import those, never this file.

pub mod budget;
pub mod changes;
pub mod control;
pub mod error;
pub mod feed;
pub mod ledger;
pub mod partition;
pub mod queue;
pub mod scan;
pub mod settle;
pub mod sink;
pub mod source;
pub mod stats;
pub mod task;
pub mod transform;
pub mod watermark;
pub mod worker;

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use control::adaptive::Adaptive;
pub use control::Control;
pub use error::CopyError;
pub use feed::Feed;
pub use ledger::Ledger;
use scan::Scan;
pub use settle::Settle;
pub use sink::{MongoSink, Sink};
pub use source::{MongoSource, Source, Strategy};
use stats::JobStats;
pub use task::NsTask;

pub use control::DEFAULT_WORKERS;
pub use queue::DEFAULT_BATCH_SIZE;

/// What each task of the engine is, so the coordinator knows who finished.
enum Role {
    Feed,
    Worker(usize),
}

/// One run of the engine, built once and run once.
pub struct Engine {
    source: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
    stats: Arc<JobStats>,
    tasks: Vec<Arc<NsTask>>,
    batch_size: usize,
    control: Arc<Control>,
    ledger: Arc<Ledger>,
    adaptive: Option<Arc<Adaptive>>,
    /// The memory budget in bytes ([`budget`]).
    memory_limit: usize,
    /// Namespaces read at once.
    readers: usize,
    /// What fills the queue: the tasks' collection scan unless another feed is given.
    feed: Option<Arc<dyn Feed>>,
    /// What the job does with stored documents (a move).
    settle: Option<Arc<dyn Settle>>,
}

impl Engine {
    /// Copies every namespace of `stats` from `source` to `sink` from the start, with the
    /// defaults: [`DEFAULT_WORKERS`], [`DEFAULT_BATCH_SIZE`], no limits, nothing kept on disk.
    pub fn new(source: Arc<dyn Source>, sink: Arc<dyn Sink>, stats: Arc<JobStats>) -> Self {
        Engine {
            source,
            sink,
            tasks: NsTask::for_stats(&stats),
            stats,
            batch_size: DEFAULT_BATCH_SIZE,
            control: Arc::new(Control::new(DEFAULT_WORKERS)),
            ledger: Arc::new(Ledger::in_memory()),
            adaptive: None,
            memory_limit: budget::DEFAULT_MEMORY_LIMIT,
            readers: 1,
            feed: None,
            settle: None,
        }
    }

    /// Hands every batch of documents the sink stored to `settle` before it counts as done.
    pub fn with_settle(mut self, settle: Option<Arc<dyn Settle>>) -> Self {
        self.settle = settle;
        self
    }

    /// Fills the queue from `feed` (a sync's changes) instead of scanning the tasks: they are
    /// still the ones the checkpointer saves.
    pub fn with_feed(mut self, feed: Arc<dyn Feed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Reads up to `readers` namespaces at once, into the one queue (the cursor replies share
    /// the memory budget's reply bytes).
    pub fn with_readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The memory budget the buffers are sized from ([`budget`]).
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// The namespace tasks to run, e.g. continuing from a checkpoint.
    pub fn with_tasks(mut self, tasks: Vec<Arc<NsTask>>) -> Self {
        self.tasks = tasks;
        self
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// The live controls: pause, worker count, rate limits.
    pub fn with_control(mut self, control: Arc<Control>) -> Self {
        self.control = control;
        self
    }

    /// Where dead letters and checkpoints go.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// Adaptive mode, steering the control while the engine runs.
    pub fn with_adaptive(mut self, adaptive: Option<Arc<Adaptive>>) -> Self {
        self.adaptive = adaptive;
        self
    }

    pub fn stats(&self) -> &Arc<JobStats> {
        &self.stats
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    pub fn tasks(&self) -> &[Arc<NsTask>] {
        &self.tasks
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn adaptive(&self) -> Option<&Arc<Adaptive>> {
        self.adaptive.as_ref()
    }

    /// Runs the copy to completion (or first error), with the checkpointer and the adaptive
    /// controller beside it. `control` pauses, resumes and resizes it live; `cancel` stops it
    /// early, and a stopped run returns [`CopyError::Stopped`]. The engine's error is the root
    /// cause; a checkpoint that could not be saved comes next.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), CopyError> {
        let steering = CancellationToken::new();
        let controller = self.adaptive.clone().map(|adaptive| {
            tokio::spawn(adaptive.run(self.control.clone(), self.stats.clone(), steering.clone()))
        });
        let checkpointing = CancellationToken::new();
        let checkpointer = tokio::spawn(self.ledger.clone().run(
            self.tasks.clone(),
            self.sink.clone(),
            checkpointing.clone(),
        ));
        let outcome = self.pump(cancel).await;
        steering.cancel();
        if let Some(controller) = controller {
            let _ = controller.await;
        }
        // The checkpointer saves once more now that everything has stopped.
        checkpointing.cancel();
        let saved = match checkpointer.await {
            Ok(saved) => saved,
            Err(e) => Err(CopyError::Internal(format!("checkpointer failed: {e}"))),
        };
        outcome?;
        saved
    }

    /// The producer, the counter and the workers, until all is written or the first error.
    async fn pump(&self, cancel: CancellationToken) -> Result<(), CopyError> {
        let Engine {
            source,
            sink,
            stats,
            tasks,
            batch_size,
            control,
            ledger,
            adaptive: _,
            memory_limit,
            readers,
            feed,
            settle,
        } = self;
        let (tasks, batch_size) = (tasks.clone(), *batch_size);
        let cancel = cancel.child_token();
        // Two batches per worker keep every worker busy; the budget bounds their bytes.
        let budget = budget::Budget::new(*memory_limit, control.workers()).shared_by(*readers);
        let (sender, receiver) = queue::bounded(control.workers() * 2, budget, stats.clone());
        let mut set: JoinSet<(Role, Result<(), CopyError>)> = JoinSet::new();

        {
            let feed = feed.clone().unwrap_or_else(|| {
                Arc::new(Scan {
                    source: source.clone(),
                    sink: sink.clone(),
                    ledger: ledger.clone(),
                    tasks: tasks.clone(),
                    batch_size,
                    readers: *readers,
                })
            });
            // The feed owns the only sender: when it ends the queue closes and workers drain it.
            let feed = feed.run(sender, cancel.clone());
            set.spawn(async move { (Role::Feed, feed.await) });
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
                    batch_bytes: budget.batch_bytes,
                    settle: settle.clone(),
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
                Ok((Role::Feed, outcome)) => outcome,
                Err(e) => Err(CopyError::Internal(format!("task failed: {e}"))),
            };
            if let Err(e) = outcome {
                // A stop caused by another task's failure is not news; keep the root cause.
                let is_root = !matches!(e, CopyError::Stopped);
                if first_error.is_none()
                    || (is_root && matches!(first_error, Some(CopyError::Stopped)))
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use futures::future::BoxFuture;
    use futures::FutureExt;
    use mongodb::bson::RawDocumentBuf;

    use super::sink::NullSink;
    use super::source::synthetic::SyntheticSource;
    use super::*;
    use crate::mongo::{MongoError, Namespace, Side};

    fn synthetic(docs: u64, doc_size: usize) -> SyntheticSource {
        SyntheticSource {
            docs,
            doc_size,
            strategy: Strategy::Stream,
        }
    }

    /// An engine over `source` and `sink` with batches of 100 and `workers` workers.
    fn engine(
        source: impl Source + 'static,
        sink: impl Sink + 'static,
        stats: &Arc<JobStats>,
        workers: usize,
    ) -> Engine {
        Engine::new(Arc::new(source), Arc::new(sink), stats.clone())
            .with_batch_size(100)
            .with_control(Arc::new(Control::new(workers)))
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
        fn prepare<'a>(&'a self, _ns: &'a Namespace) -> BoxFuture<'a, Result<(), CopyError>> {
            async { Ok(()) }.boxed()
        }

        fn write<'a>(
            &'a self,
            ns: &'a Namespace,
            _docs: Vec<RawDocumentBuf>,
        ) -> BoxFuture<'a, Result<Vec<sink::Refused>, CopyError>> {
            async move {
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
            .boxed()
        }
    }

    #[tokio::test]
    async fn copies_every_document_of_every_namespace() {
        for strategy in [Strategy::Stream, Strategy::Ids] {
            let stats = stats(3, 3);
            let source = SyntheticSource {
                docs: 1_234,
                doc_size: 256,
                strategy,
            };
            engine(source, NullSink, &stats, 3)
                .run(CancellationToken::new())
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
            engine(synthetic(1_000_000, 64), sink, &stats, 3).run(CancellationToken::new()),
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
        let limits = crate::engine::control::throttle::Limits {
            rate: Some(1.0),
            rate_bytes: None,
        };
        let control =
            Control::with_throttle(2, crate::engine::control::throttle::Throttle::new(limits));
        let cancel = CancellationToken::new();
        let job = tokio::spawn(
            engine(synthetic(1_000_000, 64), NullSink, &stats, 2)
                .with_control(Arc::new(control))
                .run(cancel.clone()),
        );
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
        let sink = FailingSink {
            writes: AtomicU64::new(0),
            fail_at: u64::MAX,
        };
        let job = tokio::spawn(
            engine(synthetic(docs, 64), sink, &stats, workers)
                .with_batch_size(10)
                .with_control(control.clone())
                .run(cancel.clone()),
        );
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
                .all(|s| *s == crate::engine::stats::WorkerState::Paused)
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
                .all(|w| w.state == crate::engine::stats::WorkerState::Stopped)
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
        fn count<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<u64, CopyError>> {
            let queued = self.stats.batches_queued.load(Ordering::SeqCst);
            self.queued_at_count.lock().unwrap().push(queued);
            self.inner.count(ns)
        }

        fn produce<'a>(
            &'a self,
            task: &'a Arc<NsTask>,
            batch_size: usize,
            queue: &'a queue::QueueSender,
        ) -> BoxFuture<'a, Result<(), CopyError>> {
            self.inner.produce(task, batch_size, queue)
        }

        fn fetch<'a>(
            &'a self,
            ns: &'a Namespace,
            ids: &'a [mongodb::bson::RawBson],
            max_bytes: usize,
        ) -> BoxFuture<'a, Result<source::Fetched, CopyError>> {
            self.inner.fetch(ns, ids, max_bytes)
        }
    }

    #[tokio::test]
    async fn counting_waits_for_the_first_batch_and_still_happens_for_empty_sources() {
        for docs in [1_000, 0] {
            let stats = stats(2, 2);
            let queued_at_count = Arc::new(std::sync::Mutex::new(Vec::new()));
            let source = CountWatchingSource {
                inner: synthetic(docs, 64),
                stats: stats.clone(),
                queued_at_count: queued_at_count.clone(),
            };
            tokio::time::timeout(
                Duration::from_secs(10),
                engine(source, NullSink, &stats, 2).run(CancellationToken::new()),
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
