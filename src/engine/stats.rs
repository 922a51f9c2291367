//! Counters of a running copy and serialisable snapshots of them.
//!
//! In: the pipeline stages bump atomics once per batch (never per document). Out: [`JobSnapshot`],
//! a consistent-enough view for progress bars, summaries and (later) the API.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::mongo::retry::RetryCounters;
use crate::mongo::Namespace;
use crate::state::DeadLetter;

const UNKNOWN: u64 = u64::MAX;

/// Progress of one namespace pair.
#[derive(Debug)]
pub struct NsCounters {
    pub source: Namespace,
    pub destination: Namespace,
    expected: AtomicU64,
    docs: AtomicU64,
    bytes: AtomicU64,
    /// Documents an earlier run already wrote (below the checkpoint), not read again.
    skipped: AtomicU64,
    /// Documents the destination refused (kept as dead letters).
    failed: AtomicU64,
    /// A reconcile: documents found equal at the destination (nothing written for them).
    equal: AtomicU64,
    /// Deletes among the documents written (a sync's, a reconcile's extras).
    deleted: AtomicU64,
    finished: AtomicBool,
    /// The namespace's partitions, when it is read in `_id` ranges (empty: read whole).
    parts: Mutex<Vec<Arc<PartProgress>>>,
}

/// Where one partition of a namespace stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartState {
    /// Not read yet.
    Waiting,
    /// Being read and written.
    Reading,
    /// Every document of its range is written.
    Complete,
}

/// Progress of one partition (an `_id` range) of a namespace.
#[derive(Debug)]
pub struct PartProgress {
    index: u32,
    /// Documents written below its watermark, earlier runs included.
    done: AtomicU64,
    state: Mutex<PartState>,
}

impl PartProgress {
    pub fn new(index: u32) -> Self {
        PartProgress {
            index,
            done: AtomicU64::new(0),
            state: Mutex::new(PartState::Waiting),
        }
    }

    pub fn set_done(&self, done: u64) {
        self.done.store(done, Relaxed);
    }

    pub fn mark_reading(&self) {
        let mut state = self.state.lock();
        if *state == PartState::Waiting {
            *state = PartState::Reading;
        }
    }

    pub fn mark_complete(&self) {
        *self.state.lock() = PartState::Complete;
    }

    fn snapshot(&self) -> PartSnapshot {
        PartSnapshot {
            index: self.index,
            done: self.done.load(Relaxed),
            state: *self.state.lock(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PartSnapshot {
    pub index: u32,
    /// Documents written in the partition's range, earlier runs included.
    pub done: u64,
    pub state: PartState,
}

impl NsCounters {
    pub fn new(source: Namespace, destination: Namespace) -> Self {
        NsCounters {
            source,
            destination,
            expected: AtomicU64::new(UNKNOWN),
            docs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            equal: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            parts: Mutex::default(),
        }
    }

    /// Reads the namespace in partitions, this one among them.
    pub fn add_part(&self, part: Arc<PartProgress>) {
        self.parts.lock().push(part);
    }

    /// A task of this namespace is written: the whole namespace, or one of its partitions
    /// (marked complete before), finishing the namespace once all are.
    pub fn part_finished(&self) {
        let parts = self.parts.lock();
        if parts.iter().all(|p| *p.state.lock() == PartState::Complete) {
            self.mark_finished();
        }
    }

    pub fn set_expected(&self, n: u64) {
        self.expected.store(n, Relaxed);
    }

    /// The documents to copy are counted already (a partitioned namespace is counted to be
    /// split).
    pub fn is_counted(&self) -> bool {
        self.expected.load(Relaxed) != UNKNOWN
    }

    pub fn add_written(&self, docs: u64, bytes: u64) {
        self.docs.fetch_add(docs, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    pub fn add_skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Relaxed);
    }

    pub fn add_failed(&self, docs: u64) {
        self.failed.fetch_add(docs, Relaxed);
    }

    /// A reconcile found these documents equal at the destination: done, with nothing written.
    pub fn add_equal(&self, docs: u64) {
        self.equal.fetch_add(docs, Relaxed);
    }

    /// Of the documents written, these were deletes.
    pub fn add_deleted(&self, docs: u64) {
        self.deleted.fetch_add(docs, Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Relaxed)
    }

    pub fn mark_finished(&self) {
        self.finished.store(true, Relaxed);
    }

    /// For another pass over the namespace (a move): not finished, nothing expected yet, and
    /// no document refused: the pass reads again what is left, refused documents included, and
    /// counts those refused again.
    pub fn reopen(&self) {
        self.failed.store(0, Relaxed);
        self.parts.lock().clear();
        self.finished.store(false, Relaxed);
        self.expected.store(UNKNOWN, Relaxed);
    }

    pub fn snapshot(&self, elapsed: Duration) -> NsSnapshot {
        let expected = self.expected.load(Relaxed);
        let docs = self.docs.load(Relaxed);
        let skipped = self.skipped.load(Relaxed);
        let failed = self.failed.load(Relaxed);
        let equal = self.equal.load(Relaxed);
        let done = docs + skipped + failed + equal;
        let finished = self.finished.load(Relaxed);
        NsSnapshot {
            source: self.source.clone(),
            destination: self.destination.clone(),
            // A count taken at the start is an estimate; never show more done than expected.
            expected: (expected != UNKNOWN)
                .then(|| if finished { done } else { expected.max(done) }),
            docs,
            skipped,
            failed,
            equal,
            deleted: self.deleted.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            finished,
            docs_per_sec: rate(docs, elapsed),
            partitions: self.parts.lock().iter().map(|p| p.snapshot()).collect(),
        }
    }
}

/// What a worker is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Waiting for a batch.
    Idle,
    /// Fetching or writing a batch.
    Busy,
    /// Held by the job's pause gate.
    Paused,
    /// Finished, retired or not started.
    Stopped,
}

impl WorkerState {
    const ALL: [WorkerState; 4] = [
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Paused,
        WorkerState::Stopped,
    ];
}

/// Per-worker counters, for telling a slow worker from a slow server.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    state: AtomicU8,
    docs: AtomicU64,
    batches: AtomicU64,
    fetch_micros: AtomicU64,
    write_micros: AtomicU64,
}

impl WorkerCounters {
    pub fn record_batch(&self, docs: u64, fetch: Duration, write: Duration) {
        self.docs.fetch_add(docs, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.fetch_micros
            .fetch_add(fetch.as_micros() as u64, Relaxed);
        self.write_micros
            .fetch_add(write.as_micros() as u64, Relaxed);
    }

    pub fn set_state(&self, state: WorkerState) {
        self.state.store(state as u8, Relaxed);
    }

    pub fn state(&self) -> WorkerState {
        WorkerState::ALL[self.state.load(Relaxed) as usize]
    }

    fn snapshot(&self, id: usize) -> WorkerSnapshot {
        let batches = self.batches.load(Relaxed);
        let mean_ms = |micros: &AtomicU64| {
            if batches == 0 {
                0.0
            } else {
                micros.load(Relaxed) as f64 / batches as f64 / 1000.0
            }
        };
        WorkerSnapshot {
            id,
            state: self.state(),
            docs: self.docs.load(Relaxed),
            batches,
            mean_fetch_ms: mean_ms(&self.fetch_micros),
            mean_write_ms: mean_ms(&self.write_micros),
        }
    }
}

/// Upper bounds (seconds) of the batch latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets, updated once per batch.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// Cumulative counts per bucket (as Prometheus wants them), total count, sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Relaxed);
                total
            })
            .collect();
        (
            cumulative,
            self.count.load(Relaxed),
            self.sum_micros.load(Relaxed) as f64 / 1e6,
        )
    }
}

/// Everything counted about one copy.
#[derive(Debug)]
pub struct JobStats {
    started: Instant,
    pub namespaces: Vec<Arc<NsCounters>>,
    /// One entry per worker slot ever used; grows when the worker count is raised.
    workers: RwLock<Vec<Arc<WorkerCounters>>>,
    /// Batches put on the queue and taken off it; their difference is the queue depth.
    pub batches_queued: AtomicU64,
    pub batches_taken: AtomicU64,
    /// Time to fetch a batch by `_id` (the `ids` strategy) and to write a batch.
    pub fetch_latency: Histogram,
    pub write_latency: Histogram,
    /// Transient errors retried, by every stage.
    pub retry: Arc<RetryCounters>,
    pub dead_letters: DeadLetterLog,
    /// Documents written over the last seconds, for the recent rate.
    pub recent: RecentRate,
    /// What the job did to the destination's schema, and does now.
    pub schema: SchemaLog,
    /// Following the source's changes (a sync job), once it does.
    pub sync: SyncStats,
    /// Deleting from the source what was copied (a move job).
    pub moves: Arc<MoveStats>,
    /// Writing only what differs (a reconcile job, or a sync's after lost history).
    pub reconcile: ReconcileStats,
}

/// The schema work of a job (collections created or dropped, index builds, views), for the
/// views and the summary.
#[derive(Debug, Default)]
pub struct SchemaLog(Mutex<SchemaProgress>);

/// What the schema step did so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SchemaProgress {
    /// What the job does to the schema now ("building indexes of shop.orders"), if anything.
    pub step: Option<String>,
    /// Destination namespaces dropped first (`--drop`).
    pub dropped: Vec<String>,
    /// Destination collections created with the source's options.
    pub created: Vec<String>,
    /// Indexes to build, and built so far.
    pub indexes_total: u64,
    pub indexes_built: u64,
    /// Indexes the destination refused, with its reason; the others are built anyway.
    pub index_errors: Vec<IndexError>,
    /// Views created after the collections.
    pub views: Vec<String>,
}

/// An index the destination would not build.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct IndexError {
    pub namespace: String,
    pub index: String,
    pub reason: String,
}

impl SchemaProgress {
    /// "the destination refused N indexes: …", when it refused any.
    pub fn refused_indexes(&self) -> Option<String> {
        (!self.index_errors.is_empty()).then(|| {
            let each: Vec<String> = self
                .index_errors
                .iter()
                .map(|e| format!("{} of {} ({})", e.index, e.namespace, e.reason))
                .collect();
            format!(
                "the destination refused {} indexes: {}",
                each.len(),
                each.join("; ")
            )
        })
    }
}

impl SchemaLog {
    pub fn update(&self, change: impl FnOnce(&mut SchemaProgress)) {
        change(&mut self.0.lock());
    }

    pub fn snapshot(&self) -> SchemaProgress {
        self.0.lock().clone()
    }
}

/// Where a sync job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    /// Copying what the source holds (its changes meanwhile wait in its history).
    InitialCopy,
    /// Applying the changes made since the sync started, not yet level with the source.
    CatchingUp,
    /// The saved position was gone from the source's history: the destination is being made
    /// equal to the source (a reconcile), after which the changes follow from a new position.
    Reconciling,
    /// Level with the source (at least once): every change applied as it comes.
    Live,
    /// Applying the last changes up to the commit's point in time.
    Committing,
    /// Every change up to the commit is applied; the job ends.
    Committed,
}

impl SyncPhase {
    const ALL: [SyncPhase; 6] = [
        SyncPhase::InitialCopy,
        SyncPhase::CatchingUp,
        SyncPhase::Reconciling,
        SyncPhase::Live,
        SyncPhase::Committing,
        SyncPhase::Committed,
    ];

    /// The phase's name as the views spell it (`initial_copy`, `live`…).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncPhase::InitialCopy => "initial_copy",
            SyncPhase::CatchingUp => "catching_up",
            SyncPhase::Reconciling => "reconciling",
            SyncPhase::Live => "live",
            SyncPhase::Committing => "committing",
            SyncPhase::Committed => "committed",
        }
    }
}

/// Changes applied, by kind of event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EventCounts {
    pub insert: u64,
    pub update: u64,
    pub replace: u64,
    pub delete: u64,
    /// Schema changes: create, drop, rename, dropDatabase, createIndexes, dropIndexes, modify.
    pub ddl: u64,
}

impl EventCounts {
    pub fn total(&self) -> u64 {
        self.insert + self.update + self.replace + self.delete + self.ddl
    }

    pub fn add(&mut self, other: &EventCounts) {
        self.insert += other.insert;
        self.update += other.update;
        self.replace += other.replace;
        self.delete += other.delete;
        self.ddl += other.ddl;
    }
}

/// Counters of the change-following part of a sync job.
#[derive(Debug)]
pub struct SyncStats {
    /// 0 until the job turns out to be a sync; then 1 + the phase's index.
    phase: AtomicU8,
    applied: Mutex<EventCounts>,
    /// For each step read from the source and not applied yet, in order: when its first change
    /// was made (milliseconds since the Unix epoch). The lag is the age of the first.
    waiting: Mutex<std::collections::VecDeque<u64>>,
    /// The source had nothing more to say after the last change read.
    quiet: AtomicBool,
    /// Events applied per second, recently.
    recent: RecentRate,
    /// The continuous verification, as its verifier last published it.
    verification: Mutex<Option<VerificationProgress>>,
    /// `can_commit` holds while the lag is at most this (seconds).
    commit_max_lag_secs: Mutex<f64>,
    writes_after_commit: Mutex<Option<WritesAfterCommit>>,
    history_lost: Mutex<Option<HistoryLost>>,
    /// Why the commit waits (the load guard's flag file), if it does.
    commit_postponed: Mutex<Option<String>>,
}

/// A sync whose saved position was gone from the source's history, and its recovery.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HistoryLost {
    /// When it was found (Unix seconds).
    pub at: f64,
    /// What the source said.
    pub reason: String,
    /// The reconcile that recovered from it is done (its counts are `progress.reconcile`).
    pub recovered: bool,
}

/// The recheck list longer than this holds `can_commit` back: the commit would compare that
/// many documents.
pub const RECHECK_COMMIT_LIMIT: u64 = 10_000;

/// How far a sync's continuous verification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationPhase {
    /// Comparing every document once, in `_id` order, while changes are applied.
    Initial,
    /// Everything was compared once: comparing again what changes.
    Continuous,
    /// The commit compared what changed since the last proof.
    Committed,
}

/// How a document differed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// At the source, not at the destination.
    Missing,
    /// At the destination, not at the source.
    Extra,
    /// On both sides, not byte for byte the same.
    Different,
}

/// A document found different, and still different once the changes in flight were applied.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Mismatch {
    /// The namespace pair, `"src.coll -> dst.coll"`.
    pub ns: String,
    /// The `_id`, canonical Extended JSON.
    pub id: serde_json::Value,
    pub kind: MismatchKind,
    /// Written again from the source.
    pub repaired: bool,
}

/// Where a sync's continuous verification stands, for the views.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VerificationProgress {
    pub phase: VerificationPhase,
    /// Mismatches are repaired from the source (else only reported).
    pub repairs: bool,
    /// Documents compared by the scan, every run of the job together.
    pub verified_docs: u64,
    /// Of those, compared by this run (a run that resumed compares only what was left).
    pub compared_this_run: u64,
    /// Namespace pairs the scan finished, of all.
    pub namespaces_verified: usize,
    pub namespaces: usize,
    pub mismatches: u64,
    pub repaired: u64,
    /// Mismatches neither repaired nor gone since (`report` only reports).
    pub unrepaired: u64,
    /// `_id`s to compare again: changed since they were compared, or found different.
    pub recheck_pending: u64,
    /// Source time (Unix seconds) up to which everything is proven equal.
    pub through: Option<f64>,
    /// The latest mismatches (at most ten), newest last.
    pub recent: Vec<Mismatch>,
    /// Set by the commit: the source time it proved equality at, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_through: Option<f64>,
    /// Set by the commit: the `_id`s it compared (those changed since the last proof).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rechecked_at_commit: Option<u64>,
    /// Set by a commit that did not prove equality: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unproven: Option<String>,
}

/// Writes the source took in the job's namespaces after the commit point: the application was
/// not fully stopped, and the destination does not have them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct WritesAfterCommit {
    pub count: u64,
    /// Source namespaces written.
    pub namespaces: Vec<String>,
    /// The first `_id`s written (canonical Extended JSON), at most [`WritesAfterCommit::IDS`].
    pub ids: Vec<serde_json::Value>,
}

impl WritesAfterCommit {
    pub const IDS: usize = 20;
}

/// Whether a sync is ready for its cutover, and if not why.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CanCommit {
    pub ok: bool,
    pub reasons: Vec<String>,
}

/// Where a sync job stands, for the views.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    /// How long ago the source made the oldest change read and not yet applied (its wall time,
    /// else the second of its cluster time); 0 when nothing waits.
    pub lag_secs: f64,
    /// Level with the source right now.
    pub caught_up: bool,
    /// Change events applied (by this run), and by kind.
    pub events: u64,
    pub applied: EventCounts,
    pub events_per_sec: f64,
    /// The continuous verification (`null`: off).
    #[serde(default)]
    pub verification: Option<VerificationProgress>,
    pub can_commit: CanCommit,
    /// After the commit: writes the source took in the job's namespaces past the commit point
    /// (watched for `commit_watch_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_after_commit: Option<WritesAfterCommit>,
    /// The saved position was gone from the source's history (`--on-history-lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_lost: Option<HistoryLost>,
}

impl SyncStats {
    fn new(started: Instant) -> Self {
        SyncStats {
            phase: AtomicU8::new(0),
            applied: Mutex::default(),
            waiting: Mutex::default(),
            quiet: AtomicBool::new(false),
            recent: RecentRate::new(started),
            verification: Mutex::default(),
            commit_max_lag_secs: Mutex::new(5.0),
            writes_after_commit: Mutex::default(),
            history_lost: Mutex::default(),
            commit_postponed: Mutex::default(),
        }
    }

    /// The saved position was gone from the source's history (`recovered`: and the reconcile
    /// that followed is done).
    pub fn set_history_lost(&self, lost: HistoryLost) {
        *self.history_lost.lock() = Some(lost);
    }

    /// The reconcile after lost history is done.
    pub fn recovered(&self) {
        if let Some(lost) = self.history_lost.lock().as_mut() {
            lost.recovered = true;
        }
    }

    /// Counts writes the source took after the commit point.
    pub fn wrote_after_commit(&self, update: impl FnOnce(&mut WritesAfterCommit)) {
        update(
            self.writes_after_commit
                .lock()
                .get_or_insert_with(Default::default),
        );
    }

    /// The verifier's latest figures.
    pub fn set_verification(&self, progress: VerificationProgress) {
        *self.verification.lock() = Some(progress);
    }

    /// The commit waits while `why` is `Some` (`postpone_commit_flag_file`).
    pub fn set_commit_postponed(&self, why: Option<String>) {
        *self.commit_postponed.lock() = why;
    }

    pub fn set_commit_max_lag(&self, secs: f64) {
        *self.commit_max_lag_secs.lock() = secs;
    }

    pub fn set_phase(&self, phase: SyncPhase) {
        let index = SyncPhase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase.store(index as u8 + 1, Relaxed);
    }

    pub fn phase(&self) -> Option<SyncPhase> {
        match self.phase.load(Relaxed) {
            0 => None,
            n => SyncPhase::ALL.get(usize::from(n) - 1).copied(),
        }
    }

    /// A step of changes was read from the source, its first change made at `made_ms`.
    pub fn read(&self, made_ms: u64) {
        self.quiet.store(false, Relaxed);
        self.waiting.lock().push_back(made_ms);
    }

    /// The oldest step read is applied.
    pub fn applied_step(&self) {
        self.waiting.lock().pop_front();
    }

    /// Counts changes applied, by kind.
    pub fn record(&self, events: &EventCounts) {
        self.applied.lock().add(events);
        self.recent.record(events.total());
    }

    /// The source had nothing more to say: level with it once what was read is applied.
    pub fn set_quiet(&self) {
        self.quiet.store(true, Relaxed);
    }

    pub fn snapshot(&self) -> Option<SyncProgress> {
        let phase = self.phase()?;
        let oldest = self.waiting.lock().front().copied();
        let caught_up = oldest.is_none() && self.quiet.load(Relaxed);
        let lag_secs = match (phase, oldest) {
            (SyncPhase::Committed, _) | (_, None) | (_, Some(0)) => 0.0,
            (_, Some(made_ms)) => (crate::state::unix_now() - made_ms as f64 / 1000.0).max(0.0),
        };
        let applied = *self.applied.lock();
        let verification = self.verification.lock().clone();
        let max_lag = *self.commit_max_lag_secs.lock();
        let mut reasons = commit_reasons(phase, lag_secs, max_lag, verification.as_ref());
        reasons.extend(self.commit_postponed.lock().clone());
        Some(SyncProgress {
            phase,
            lag_secs,
            caught_up,
            events: applied.total(),
            applied,
            events_per_sec: self.recent.per_sec(),
            verification,
            can_commit: CanCommit {
                ok: reasons.is_empty(),
                reasons,
            },
            writes_after_commit: self.writes_after_commit.lock().clone(),
            history_lost: self.history_lost.lock().clone(),
        })
    }
}

/// Why a sync in `phase`, `lag_secs` behind the source, is not ready to commit (none: it is).
fn commit_reasons(
    phase: SyncPhase,
    lag_secs: f64,
    max_lag: f64,
    verification: Option<&VerificationProgress>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    match phase {
        SyncPhase::InitialCopy => reasons.push("the initial copy is not finished".into()),
        SyncPhase::CatchingUp => reasons.push("not yet level with the source".into()),
        SyncPhase::Reconciling => {
            reasons.push("history was lost: the destination is being reconciled".into())
        }
        SyncPhase::Live => {}
        SyncPhase::Committing => reasons.push("the commit is under way".into()),
        SyncPhase::Committed => reasons.push("the job is committed".into()),
    }
    if lag_secs > max_lag {
        reasons.push(format!(
            "the lag is {lag_secs:.1} s, over the limit of {max_lag} s (commit_max_lag_secs)"
        ));
    }
    let Some(v) = verification else {
        return reasons;
    };
    if v.phase == VerificationPhase::Initial && phase != SyncPhase::InitialCopy {
        reasons.push(format!(
            "the initial verification is not finished ({} documents compared, {} of {} \
             namespaces)",
            v.verified_docs, v.namespaces_verified, v.namespaces
        ));
    }
    if v.unrepaired > 0 {
        reasons.push(format!("{} mismatches are unrepaired", v.unrepaired));
    }
    if v.recheck_pending > RECHECK_COMMIT_LIMIT {
        reasons.push(format!(
            "the recheck list is long: {} `_id`s to compare again (at most {RECHECK_COMMIT_LIMIT})",
            v.recheck_pending
        ));
    }
    reasons
}

/// Counters of a move job: what it verified at the destination and deleted from the source.
#[derive(Debug)]
pub struct MoveStats {
    enabled: AtomicBool,
    /// Passes over the source started (a pass copies what is left of the selection).
    pass: AtomicU64,
    verified: AtomicU64,
    deleted: AtomicU64,
    /// Verified at the destination but changed at the source since the copy: kept there.
    changed: AtomicU64,
    /// Deleted from the source by someone else meanwhile.
    gone: AtomicU64,
    /// Delete transactions retried after a write conflict.
    conflicts: AtomicU64,
    /// Documents left at the source after the last pass (changed again and again, or refused).
    left: AtomicU64,
    /// A rehearsal (`keep_source`): nothing is deleted, everything verified stays.
    rehearsal: AtomicBool,
    recent: RecentRate,
}

/// What a move job did, for the views.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MoveProgress {
    pub pass: u64,
    /// Documents found at the destination exactly as written.
    pub verified: u64,
    /// Documents deleted from the source: moved.
    pub deleted: u64,
    /// Documents kept at the source because they changed after their copy (copied again by
    /// a later pass).
    pub changed: u64,
    /// Documents deleted from the source by another client during the move.
    pub gone: u64,
    pub conflicts: u64,
    /// Documents of the selection still at the source after the last pass.
    pub left: u64,
    pub deletes_per_sec: f64,
    /// A rehearsal (`keep_source`): the source keeps every document, `verified` among them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehearsal: bool,
}

impl MoveStats {
    fn new(started: Instant) -> Self {
        MoveStats {
            enabled: AtomicBool::new(false),
            pass: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            changed: AtomicU64::new(0),
            gone: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            left: AtomicU64::new(0),
            rehearsal: AtomicBool::new(false),
            recent: RecentRate::new(started),
        }
    }

    /// Starts a pass (the first one makes the job a move in the views).
    pub fn start_pass(&self) {
        self.enabled.store(true, Relaxed);
        self.pass.fetch_add(1, Relaxed);
    }

    pub fn add_verified(&self, n: u64) {
        self.verified.fetch_add(n, Relaxed);
    }

    pub fn add_deleted(&self, deleted: u64, changed: u64) {
        self.deleted.fetch_add(deleted, Relaxed);
        self.changed.fetch_add(changed, Relaxed);
        self.recent.record(deleted);
    }

    pub fn add_gone(&self, n: u64) {
        self.gone.fetch_add(n, Relaxed);
    }

    pub fn add_conflict(&self) {
        self.conflicts.fetch_add(1, Relaxed);
    }

    /// Marks the move a rehearsal, which deletes nothing.
    pub fn set_rehearsal(&self) {
        self.rehearsal.store(true, Relaxed);
    }

    pub fn set_left(&self, n: u64) {
        self.left.store(n, Relaxed);
    }

    pub fn snapshot(&self) -> Option<MoveProgress> {
        self.enabled.load(Relaxed).then(|| MoveProgress {
            pass: self.pass.load(Relaxed),
            verified: self.verified.load(Relaxed),
            deleted: self.deleted.load(Relaxed),
            changed: self.changed.load(Relaxed),
            gone: self.gone.load(Relaxed),
            conflicts: self.conflicts.load(Relaxed),
            left: self.left.load(Relaxed),
            deletes_per_sec: self.recent.per_sec(),
            rehearsal: self.rehearsal.load(Relaxed),
        })
    }
}

/// Counters of a reconcile (a job of its own, or a sync's after lost history): what it found
/// different. What it wrote and deleted is counted by the workers, in the namespaces' counters
/// ([`ReconcileStats::begin`] notes where they stood).
#[derive(Debug, Default)]
pub struct ReconcileStats {
    enabled: AtomicBool,
    delete_extra: AtomicBool,
    missing: AtomicU64,
    different: AtomicU64,
    extra: AtomicU64,
    digested: AtomicU64,
    /// Deletes written to change an `_id`'s number type (part of a write, not of the extras).
    retyped: AtomicU64,
    /// The namespaces' (written, deleted) when the reconcile began, and at its end once it
    /// ended (a sync goes on writing after).
    began: Mutex<(u64, u64)>,
    ended: Mutex<Option<(u64, u64)>>,
    /// The first extra `_id`s kept at the destination (canonical Extended JSON, with the
    /// namespace), at most [`ReconcileProgress::SHOWN`].
    first_extra: Mutex<Vec<serde_json::Value>>,
}

/// What a reconcile did, for the views and the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ReconcileProgress {
    /// `_id`s compared (on either side), equal ones among them.
    pub compared: u64,
    pub equal: u64,
    /// Documents written (missing or different at the destination) and extras deleted, as
    /// acknowledged by the destination.
    pub written: u64,
    pub deleted: u64,
    /// What the comparison found: missing at the destination, different there, only there.
    pub missing: u64,
    pub different: u64,
    pub extra: u64,
    /// Of `equal`, the documents a digest of their range proved equal (not read).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub digested: u64,
    /// Extras are deleted (`--delete-extra`); otherwise kept and reported.
    pub delete_extra: bool,
    /// The first extras kept: `{"ns": …, "id": …}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_extra: Vec<serde_json::Value>,
}

impl ReconcileProgress {
    pub const SHOWN: usize = 10;

    /// Extras found and left at the destination.
    pub fn kept_extra(&self) -> u64 {
        if self.delete_extra {
            0
        } else {
            self.extra
        }
    }
}

impl ReconcileStats {
    /// A reconcile starts, the namespaces having written `written` documents so far, `deleted`
    /// of them deletes.
    pub fn begin(&self, delete_extra: bool, (written, deleted): (u64, u64)) {
        self.delete_extra.store(delete_extra, Relaxed);
        for counter in [
            &self.missing,
            &self.different,
            &self.extra,
            &self.digested,
            &self.retyped,
        ] {
            counter.store(0, Relaxed);
        }
        self.first_extra.lock().clear();
        *self.began.lock() = (written, deleted);
        *self.ended.lock() = None;
        self.enabled.store(true, Relaxed);
    }

    /// The reconcile is done; the namespaces' counters stood at `now` (written, deleted).
    pub fn end(&self, now: (u64, u64)) {
        *self.ended.lock() = Some(now);
    }

    /// A delete is written so that a document can come back with its `_id`'s type changed.
    pub fn add_retyped(&self) {
        self.retyped.fetch_add(1, Relaxed);
    }

    /// Documents a digest of their range proved equal.
    pub fn add_digested(&self, docs: u64) {
        self.digested.fetch_add(docs, Relaxed);
    }

    pub fn add_found(&self, missing: u64, different: u64) {
        self.missing.fetch_add(missing, Relaxed);
        self.different.fetch_add(different, Relaxed);
    }

    /// An extra document at the destination: counted, and listed when kept.
    pub fn add_extra(&self, ns: &Namespace, id: &mongodb::bson::RawBson) {
        self.extra.fetch_add(1, Relaxed);
        if self.delete_extra.load(Relaxed) {
            return;
        }
        let mut first = self.first_extra.lock();
        if first.len() < ReconcileProgress::SHOWN {
            if let Some(id) = crate::state::id_to_json(id) {
                first.push(serde_json::json!({ "ns": ns.to_string(), "id": id }));
            }
        }
    }

    /// The progress, from the namespaces' counters summed now (written, deleted, equal).
    fn snapshot(&self, (written, deleted, equal): (u64, u64, u64)) -> Option<ReconcileProgress> {
        if !self.enabled.load(Relaxed) {
            return None;
        }
        let (began_written, began_deleted) = *self.began.lock();
        let (written, deleted) = self.ended.lock().unwrap_or((written, deleted));
        let deleted = deleted.saturating_sub(began_deleted);
        let written = written
            .saturating_sub(began_written)
            .saturating_sub(deleted);
        let deleted = deleted.saturating_sub(self.retyped.load(Relaxed));
        let (missing, different, extra) = (
            self.missing.load(Relaxed),
            self.different.load(Relaxed),
            self.extra.load(Relaxed),
        );
        Some(ReconcileProgress {
            compared: equal + missing + different + extra,
            equal,
            written,
            deleted,
            missing,
            different,
            extra,
            digested: self.digested.load(Relaxed),
            delete_extra: self.delete_extra.load(Relaxed),
            first_extra: self.first_extra.lock().clone(),
        })
    }
}

/// Seconds the recent rate looks back over.
pub const RECENT_SECS: u64 = 5;

/// Documents written per second over the last [`RECENT_SECS`], kept as one-second buckets that
/// the workers fill (once per batch), so that reading the rate changes nothing.
#[derive(Debug)]
pub struct RecentRate {
    started: Instant,
    /// (second since `started`, documents written in it), indexed by the second modulo the length.
    buckets: Mutex<[(u64, u64); RECENT_SECS as usize + 1]>,
}

impl RecentRate {
    fn new(started: Instant) -> Self {
        RecentRate {
            started,
            buckets: Mutex::new([(0, 0); RECENT_SECS as usize + 1]),
        }
    }

    /// Counts `docs` written now.
    pub fn record(&self, docs: u64) {
        self.record_at(self.started.elapsed(), docs);
    }

    fn record_at(&self, at: Duration, docs: u64) {
        let second = at.as_secs();
        let mut buckets = self.buckets.lock();
        let slot = &mut buckets[(second % (RECENT_SECS + 1)) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += docs;
    }

    /// Documents per second over the last [`RECENT_SECS`] (since the start, if sooner).
    pub fn per_sec(&self) -> f64 {
        self.per_sec_at(self.started.elapsed())
    }

    fn per_sec_at(&self, now: Duration) -> f64 {
        let second = now.as_secs();
        let oldest = second.saturating_sub(RECENT_SECS);
        let docs: u64 = self
            .buckets
            .lock()
            .iter()
            .filter(|(s, _)| (oldest..=second).contains(s))
            .map(|(_, n)| n)
            .sum();
        rate(docs, now.saturating_sub(Duration::from_secs(oldest)))
    }
}

/// How many documents were refused, and the latest few, for the views.
#[derive(Debug, Default)]
pub struct DeadLetterLog {
    count: AtomicU64,
    recent: Mutex<VecDeque<DeadLetterView>>,
}

/// Recent dead letters kept for the views.
const RECENT_DEAD_LETTERS: usize = 20;

impl DeadLetterLog {
    pub fn record(&self, letters: &[DeadLetter]) {
        self.count.fetch_add(letters.len() as u64, Relaxed);
        let mut recent = self.recent.lock();
        for letter in letters {
            if recent.len() == RECENT_DEAD_LETTERS {
                recent.pop_front();
            }
            recent.push_back(DeadLetterView {
                ns: letter.ns.clone(),
                id: letter.id.clone(),
                reason: letter.reason.clone(),
            });
        }
    }

    pub fn snapshot(&self) -> DeadLetterSummary {
        DeadLetterSummary {
            count: self.count.load(Relaxed),
            recent: self.recent.lock().iter().cloned().collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DeadLetterView {
    pub ns: String,
    /// The `_id`, canonical Extended JSON.
    pub id: serde_json::Value,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct DeadLetterSummary {
    pub count: u64,
    pub recent: Vec<DeadLetterView>,
}

impl JobStats {
    pub fn new(pairs: impl IntoIterator<Item = (Namespace, Namespace)>, workers: usize) -> Self {
        let started = Instant::now();
        JobStats {
            started,
            namespaces: pairs
                .into_iter()
                .map(|(s, d)| Arc::new(NsCounters::new(s, d)))
                .collect(),
            workers: RwLock::new(
                (0..workers)
                    .map(|_| {
                        let w = WorkerCounters::default();
                        w.set_state(WorkerState::Stopped);
                        Arc::new(w)
                    })
                    .collect(),
            ),
            batches_queued: AtomicU64::new(0),
            batches_taken: AtomicU64::new(0),
            fetch_latency: Histogram::default(),
            write_latency: Histogram::default(),
            retry: Arc::default(),
            dead_letters: DeadLetterLog::default(),
            recent: RecentRate::new(started),
            schema: SchemaLog::default(),
            sync: SyncStats::new(started),
            moves: Arc::new(MoveStats::new(started)),
            reconcile: ReconcileStats::default(),
        }
    }

    /// The counters of a worker slot, created when the slot is first used.
    pub fn worker(&self, slot: usize) -> Arc<WorkerCounters> {
        if let Some(w) = self.workers.read().get(slot) {
            return w.clone();
        }
        let mut workers = self.workers.write();
        while workers.len() <= slot {
            let w = WorkerCounters::default();
            w.set_state(WorkerState::Stopped);
            workers.push(Arc::new(w));
        }
        workers[slot].clone()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Documents the namespaces wrote (deletes included), deleted, and found equal, so far.
    pub fn written_deleted_equal(&self) -> (u64, u64, u64) {
        self.namespaces.iter().fold((0, 0, 0), |(w, d, e), n| {
            (
                w + n.docs.load(Relaxed),
                d + n.deleted.load(Relaxed),
                e + n.equal.load(Relaxed),
            )
        })
    }

    pub fn snapshot(&self) -> JobSnapshot {
        let elapsed = self.elapsed();
        let namespaces: Vec<NsSnapshot> = self
            .namespaces
            .iter()
            .map(|n| n.snapshot(elapsed))
            .collect();
        let docs = namespaces.iter().map(|n| n.docs).sum();
        let expected = namespaces.iter().map(|n| n.expected).sum::<Option<u64>>();
        let snapshot = JobSnapshot {
            docs,
            skipped: namespaces.iter().map(|n| n.skipped).sum(),
            failed: namespaces.iter().map(|n| n.failed).sum(),
            retries: self.retry.retries(),
            last_retry: self.retry.last_error(),
            dead_letters: self.dead_letters.snapshot(),
            bytes: namespaces.iter().map(|n| n.bytes).sum(),
            expected,
            seconds: elapsed.as_secs_f64(),
            docs_per_sec: 0.0,
            eta_secs: None,
            queue_depth: self
                .batches_queued
                .load(Relaxed)
                .saturating_sub(self.batches_taken.load(Relaxed)),
            workers: self
                .workers
                .read()
                .iter()
                .enumerate()
                .map(|(i, w)| w.snapshot(i))
                .collect(),
            namespaces,
            schema: self.schema.snapshot(),
            sync: self.sync.snapshot(),
            moves: self.moves.snapshot(),
            reconcile: self.reconcile.snapshot(self.written_deleted_equal()),
        };
        snapshot.at_rate(self.recent.per_sec())
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NsSnapshot {
    pub source: Namespace,
    pub destination: Namespace,
    pub expected: Option<u64>,
    /// Written by this run.
    pub docs: u64,
    /// Written by earlier runs (below the checkpoint the run resumed from).
    pub skipped: u64,
    /// Refused by the destination, kept as dead letters.
    pub failed: u64,
    /// A reconcile: found equal at the destination, so not written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub equal: u64,
    /// Of `docs`, the deletes (a sync's, a reconcile's extras).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deleted: u64,
    pub bytes: u64,
    pub finished: bool,
    pub docs_per_sec: f64,
    /// The namespace's `_id` ranges, when it is read in partitions (empty: read whole).
    pub partitions: Vec<PartSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WorkerSnapshot {
    pub id: usize,
    pub state: WorkerState,
    pub docs: u64,
    pub batches: u64,
    pub mean_fetch_ms: f64,
    pub mean_write_ms: f64,
}

/// What a job did so far: the one view of it that the command line's progress, the API's job
/// view (`progress`) and the summaries are made from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct JobSnapshot {
    /// Written by this run.
    pub docs: u64,
    pub bytes: u64,
    /// Written by earlier runs (below the checkpoints the run resumed from).
    pub skipped: u64,
    /// Refused by the destination, kept as dead letters.
    pub failed: u64,
    /// Transient errors retried so far, and the latest.
    pub retries: u64,
    pub last_retry: Option<String>,
    pub expected: Option<u64>,
    /// Documents per second over the last few seconds.
    pub docs_per_sec: f64,
    /// Time left at that rate, when the total is known.
    pub eta_secs: Option<f64>,
    /// Seconds since the run started.
    #[serde(default)]
    pub seconds: f64,
    pub queue_depth: u64,
    pub namespaces: Vec<NsSnapshot>,
    pub workers: Vec<WorkerSnapshot>,
    /// Collections dropped and created, index builds (done, to do, refused), views.
    pub schema: SchemaProgress,
    /// A sync job's phase, lag and changes applied (`null` for a copy).
    pub sync: Option<SyncProgress>,
    /// A move job's documents verified, deleted from the source, kept there (`null` for a copy).
    pub moves: Option<MoveProgress>,
    /// A reconcile's documents compared, equal, written, deleted (`null` for a copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileProgress>,
    /// The dead letters so far (the job view shows them beside the progress).
    #[serde(skip)]
    pub dead_letters: DeadLetterSummary,
}

impl JobSnapshot {
    /// A finished job of which only the final counts are known (restored from a history).
    pub fn final_counts(docs: u64, bytes: u64, skipped: u64, failed: u64) -> Self {
        JobSnapshot {
            docs,
            bytes,
            skipped,
            failed,
            expected: Some(docs + skipped + failed),
            ..JobSnapshot::default()
        }
    }

    /// The snapshot at another current rate (a job several service nodes share: their rates
    /// together), its ETA with it.
    pub fn at_rate(mut self, docs_per_sec: f64) -> Self {
        self.docs_per_sec = docs_per_sec;
        let equal: u64 = self.namespaces.iter().map(|n| n.equal).sum();
        self.eta_secs = self.expected.filter(|_| docs_per_sec > 0.0).map(|n| {
            n.saturating_sub(self.docs + self.skipped + self.failed + equal) as f64 / docs_per_sec
        });
        self
    }

    /// Documents per second over the whole run.
    pub fn average_docs_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.docs as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// `bytes` for a person: `512 B`, `52.7 KiB`, `1.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_lags_by_the_age_of_the_oldest_change_waiting() {
        let stats = JobStats::new([], 1);
        let sync = &stats.sync;
        assert!(sync.snapshot().is_none(), "not a sync until it has a phase");
        sync.set_phase(SyncPhase::Live);
        let ms_ago = |ms: f64| ((crate::state::unix_now() * 1000.0) - ms) as u64;
        assert_eq!(sync.snapshot().unwrap().lag_secs, 0.0);
        assert!(!sync.snapshot().unwrap().caught_up, "nothing said yet");
        sync.set_quiet();
        assert!(sync.snapshot().unwrap().caught_up);
        // Two steps read, made 3 s and 1 s ago: caught up no more, 3 s behind.
        sync.read(ms_ago(3000.0));
        sync.read(ms_ago(1000.0));
        let read = sync.snapshot().unwrap();
        assert!(!read.caught_up);
        assert!((2.9..3.5).contains(&read.lag_secs), "{}", read.lag_secs);
        sync.applied_step();
        assert!((0.9..1.5).contains(&sync.snapshot().unwrap().lag_secs));
        // A quiet moment said while a step still waits is not level yet.
        sync.set_quiet();
        assert!(!sync.snapshot().unwrap().caught_up);
        sync.applied_step();
        let level = sync.snapshot().unwrap();
        assert!(level.caught_up);
        assert_eq!(level.lag_secs, 0.0);
    }

    #[test]
    fn snapshot_sums_namespaces_and_queue_depth() {
        let stats = JobStats::new(
            [
                (Namespace::new("a", "x"), Namespace::new("a", "x")),
                (Namespace::new("a", "y"), Namespace::new("b", "y")),
            ],
            2,
        );
        stats.namespaces[0].set_expected(10);
        stats.namespaces[0].add_written(4, 400);
        stats.namespaces[1].set_expected(5);
        stats.namespaces[1].add_written(5, 50);
        stats.batches_queued.store(7, Relaxed);
        stats.batches_taken.store(5, Relaxed);
        stats
            .worker(1)
            .record_batch(9, Duration::from_millis(2), Duration::from_millis(4));
        let snap = stats.snapshot();
        assert_eq!((snap.docs, snap.bytes, snap.expected), (9, 450, Some(15)));
        assert_eq!(snap.queue_depth, 2);
        assert_eq!(snap.workers[1].batches, 1);
        assert_eq!(snap.workers[1].mean_write_ms, 4.0);
    }

    #[test]
    fn the_recent_rate_covers_the_last_seconds_and_reading_it_changes_nothing() {
        let rate = RecentRate::new(Instant::now());
        // 100 documents in each of the first 10 seconds.
        for second in 0..10 {
            rate.record_at(Duration::from_millis(second * 1000 + 500), 100);
        }
        // At 10.0 s: seconds 5 to 9 (500 documents) over the 5 s from 5.0 s.
        let now = Duration::from_secs(10);
        assert_eq!(rate.per_sec_at(now), 100.0);
        assert_eq!(rate.per_sec_at(now), 100.0, "a read is a read");
        // Nothing for a while: the rate falls to zero.
        assert_eq!(rate.per_sec_at(Duration::from_secs(30)), 0.0);
        // Early in a job: over the time since the start.
        let early = RecentRate::new(Instant::now());
        early.record_at(Duration::from_millis(500), 50);
        assert_eq!(early.per_sec_at(Duration::from_secs(1)), 50.0);
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let (buckets, count, sum) = h.snapshot();
        assert_eq!((buckets[0], buckets[4], buckets[11]), (1, 2, 2));
        assert_eq!(count, 3);
        assert!((sum - 60.0305).abs() < 1e-6);
    }

    #[test]
    fn expected_never_below_done() {
        let ns = NsCounters::new(Namespace::new("a", "x"), Namespace::new("a", "x"));
        ns.set_expected(3);
        ns.add_written(5, 5);
        assert_eq!(ns.snapshot(Duration::from_secs(1)).expected, Some(5));
    }
}
