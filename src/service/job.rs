//! Jobs of the service: their spec, their typed states, and the record kept of each.
//!
//! In: a [`JobSpec`] as posted to the API. Out: a [`Job`] that runs the same copy engine as the
//! command line and reports a [`JobView`] (state, progress, per-namespace and per-worker stats)
//! at any time. The [manager](super::manager) runs them; the [history
//! file](crate::state::history) keeps their records.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::series::{Reading, Sampler, Series};
use crate::engine::control::adaptive::{Adaptive, AdaptiveView};
use crate::engine::control::guard::GuardView;
use crate::engine::control::throttle::{Limits, Throttle};
use crate::engine::stats::{
    CanCommit, DeadLetterSummary, JobSnapshot, JobStats, VerificationProgress, WritesAfterCommit,
};
use crate::engine::Control;
use crate::service::notify::Notifier;
use crate::spec::{JobSpec, Mode};
use crate::state::unix_now;

/// A job's identity, unique for the lifetime of a state store.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life. It changes only through [`JobState::after`] (by [`Job::apply`]).
///
/// ```text
///            Started              Paused / Resumed
/// pending ────────────▶ running ◀────────────────▶ paused
///    │ ▲ Paused / Resumed  │                          │
///    │ └──▶ paused         │ Ended(outcome)           │
///    └─────────────────────┴──────────────────────────┴──▶ completed | failed | cancelled
///                                                           | interrupted
/// interrupted ── Abandoned ──▶ cancelled      interrupted ── Ended(Failed) ──▶ failed
/// ```
///
/// `interrupted`: the service stopped before the job finished; a restarted service continues it
/// from its checkpoint (as the same job, a new [`Job`]) when it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled | JobState::Interrupted
        )
    }
}

/// What happens to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Connected, namespaces resolved: the copy runs.
    Started,
    /// The operator paused it.
    Paused,
    /// The operator resumed it; `started`: it had started before (else it waits for its start).
    Resumed { started: bool },
    /// Its run ended; the message says more to the operator.
    Ended(Ending, Option<String>),
    /// The operator cancelled an interrupted job, so that it is not continued.
    Abandoned,
}

/// How a run ended: [`crate::run::outcome`] judges it.
pub use crate::run::outcome::Ending;

impl JobState {
    /// The state after `event`, or `Err(self)` when the event does not apply (a command that
    /// raced the job's end never revives it). Pure: the whole state machine.
    pub fn after(self, event: &Event) -> Result<JobState, JobState> {
        use JobState::*;
        let active = matches!(self, Pending | Running | Paused);
        match (self, event) {
            (Pending, Event::Started) => Ok(Running),
            // A start does not undo a pause that came first.
            (Paused, Event::Started) => Ok(Paused),
            (Pending | Running | Paused, Event::Paused) => Ok(Paused),
            (Paused, Event::Resumed { started: true }) => Ok(Running),
            (Paused, Event::Resumed { started: false }) => Ok(Pending),
            (Pending | Running, Event::Resumed { .. }) => Ok(self),
            (_, Event::Ended(outcome, _)) if active => Ok(match outcome {
                Ending::Completed => Completed,
                Ending::Failed => Failed,
                Ending::Cancelled => Cancelled,
                Ending::Interrupted => Interrupted,
            }),
            // An interrupted job that cannot be continued (its spec is refused now).
            (Interrupted, Event::Ended(Ending::Failed, _)) => Ok(Failed),
            (Interrupted, Event::Abandoned) => Ok(Cancelled),
            (state, _) => Err(state),
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is kept of a job in the history, and restored after a restart of the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    /// Redacted ([`JobSpec::redacted`]): no credentials.
    pub spec: JobSpec,
    pub state: JobState,
    pub workers: usize,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    pub error: Option<String>,
    pub docs: u64,
    pub bytes: u64,
    /// Documents earlier runs had written, and documents refused.
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub failed: u64,
    /// A sync job's cutover was asked for: every node working on the job commits.
    #[serde(default)]
    pub commit: bool,
    /// The operator's pause is in force (kept through an interruption, so that the job continues
    /// paused, here after a restart or on another node).
    #[serde(default)]
    pub paused: bool,
    /// The job's rate limits as last set (`null`: those of its spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// The credentials of the spec's URIs, sealed with the service's key
    /// ([`super::credentials`]): a service with that key can continue the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Each state the job entered and each phase it went through, with their times (at most
    /// [`TIMELINE_CAP`] entries: the first and the latest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// The job's progress as it ended (kept at its final state, so that the job restored after
    /// a restart shows it whole, not only its counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobSnapshot>,
    /// The dead letters as the job ended: how many, and the latest with their reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<DeadLetterSummary>,
    /// What each service node did for the job, as it ended (several nodes on one state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeShare>,
}

/// At most this many entries in a job's timeline: beyond, the oldest but the first go.
pub const TIMELINE_CAP: usize = 500;

/// One moment of a job's life: a state it entered, or a phase it began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// Unix seconds.
    pub at: f64,
    pub kind: TimelineKind,
    /// The state (`running`, `completed`…) or the phase (`initial_copy`, `live`…).
    pub name: String,
}

/// What a timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimelineKind {
    State,
    Phase,
}

impl JobRecord {
    /// Appends an entry to the timeline, dropping the oldest but the first beyond the cap.
    fn note(&mut self, kind: TimelineKind, name: &str) {
        if self.timeline.len() >= TIMELINE_CAP {
            self.timeline.remove(1.min(self.timeline.len() - 1));
        }
        self.timeline.push(TimelineEntry {
            at: unix_now(),
            kind,
            name: name.to_string(),
        });
    }

    /// Appends a phase entry unless `phase` is the last phase noted.
    fn note_phase(&mut self, phase: &str) {
        let last = self
            .timeline
            .iter()
            .rev()
            .find(|e| e.kind == TimelineKind::Phase);
        if last.is_none_or(|e| e.name != phase) {
            self.note(TimelineKind::Phase, phase);
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub state: JobState,
    /// Redacted: no credentials.
    pub spec: JobSpec,
    pub workers: usize,
    /// The job's rate limits now (`null`: unlimited).
    pub limits: Limits,
    /// Adaptive mode's config and recent decisions, when the job uses it.
    pub adaptive: Option<AdaptiveView>,
    /// The load guard: held or not and why, the signals' last values, the changes of its
    /// decision with their times, and what it watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_guard: Option<GuardView>,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    pub error: Option<String>,
    pub progress: Option<JobSnapshot>,
    /// A sync: whether it is ready for its cutover, and if not why (`progress.sync`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_commit: Option<CanCommit>,
    /// A sync's continuous verification (`progress.sync`'s; `null`: off, or not yet started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationProgress>,
    /// A committed sync: writes the source took past the commit point (`progress.sync`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_after_commit: Option<WritesAfterCommit>,
    /// Documents the destination refused: how many, and the latest with their reasons.
    pub dead_letters: Option<crate::engine::stats::DeadLetterSummary>,
    /// Service nodes sharing one MongoDB state: what each does for this job (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeShare>,
    pub links: Links,
}

/// What one service node does for a job, when several nodes share one MongoDB state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeShare {
    /// `host:pid:tag`.
    pub node: String,
    pub role: NodeRole,
    /// Its own run's state.
    pub state: JobState,
    /// Documents and bytes this node wrote.
    pub docs: u64,
    pub bytes: u64,
    pub docs_per_sec: f64,
    pub workers: usize,
}

/// A node's part in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// It runs the job: the job's state is its run's, and commands go to it.
    Runs,
    /// It copies partitions of the job (a copy or a sync's initial copy with partitions).
    Helps,
}

/// The job's resources.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    pub pause: String,
    pub resume: String,
    pub cancel: String,
    /// A sync job's cutover (`POST`); absent for a copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Links {
    fn new(id: JobId, mode: Mode) -> Self {
        let base = format!("/api/jobs/{id}");
        Links {
            commit: (mode == Mode::Sync).then(|| format!("{base}/commit")),
            events: format!("{base}/events"),
            pause: format!("{base}/pause"),
            resume: format!("{base}/resume"),
            cancel: format!("{base}/cancel"),
            this: base,
        }
    }
}

/// A state change of a job, as it is announced (`serve --notify-url`, [`super::notify`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub job: JobId,
    pub mode: Mode,
    pub state: JobState,
    /// `null`: the job was just submitted.
    pub previous_state: Option<JobState>,
    /// Documents and bytes written by this run, documents earlier runs had written, documents
    /// refused (dead letters).
    pub docs: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Over the last few seconds (`null` before the run started).
    pub docs_per_sec: Option<f64>,
    /// Since the run started (`null` before it started).
    pub seconds: Option<f64>,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    /// Why it failed, or what the operator should know.
    pub error: Option<String>,
}

/// A job known to this service: running now, or restored from the history.
pub struct Job {
    pub id: JobId,
    /// The spec as posted (with credentials: never shown, never stored).
    pub spec: Option<JobSpec>,
    pub control: Arc<Control>,
    pub cancel: CancellationToken,
    /// Asks a sync job for its cutover ([`Command::Commit`](super::manager::Command::Commit)).
    pub commit: CancellationToken,
    state: watch::Sender<JobState>,
    inner: Mutex<JobInner>,
    /// The charts' points of this node's run, and what the next rates are taken from.
    series: Mutex<(Series, Sampler)>,
    /// Where its state changes are announced (`serve --notify-url`): set by the manager on the
    /// jobs this node runs only.
    notifier: std::sync::OnceLock<Arc<Notifier>>,
}

struct JobInner {
    record: JobRecord,
    stats: Option<Arc<JobStats>>,
    adaptive: Option<Arc<Adaptive>>,
    /// Another service node runs the job: its node and the view it published.
    elsewhere: Option<(String, Option<JobView>)>,
    /// What each service node does for the job (several nodes on one MongoDB state).
    shares: Vec<NodeShare>,
}

impl Job {
    pub fn new(id: JobId, spec: JobSpec, control: Control) -> Self {
        let record = JobRecord {
            id,
            spec: spec.redacted(),
            state: JobState::Pending,
            workers: control.workers(),
            created_at: unix_now(),
            finished_at: None,
            error: None,
            docs: 0,
            bytes: 0,
            skipped: 0,
            failed: 0,
            commit: false,
            paused: false,
            limits: None,
            sealed: None,
            timeline: vec![],
            progress: None,
            dead_letters: None,
            nodes: vec![],
        };
        let mut record = record;
        record.note(TimelineKind::State, JobState::Pending.as_str());
        Job::with_record(record, spec, control)
    }

    /// A job of an earlier run of the service that continues (same id and creation time).
    pub fn continued(mut record: JobRecord, spec: JobSpec, control: Control) -> Self {
        record.state = JobState::Pending;
        record.finished_at = None;
        record.error = None;
        record.progress = None;
        record.dead_letters = None;
        record.nodes = vec![];
        record.note(TimelineKind::State, JobState::Pending.as_str());
        Job::with_record(record, spec, control)
    }

    fn with_record(record: JobRecord, spec: JobSpec, control: Control) -> Self {
        let id = record.id;
        let commit = CancellationToken::new();
        // Asked for before this run (by another node, or before the service stopped).
        if record.commit {
            commit.cancel();
        }
        Job {
            id,
            spec: Some(spec),
            control: Arc::new(control),
            cancel: CancellationToken::new(),
            commit,
            state: watch::channel(JobState::Pending).0,
            inner: Mutex::new(JobInner {
                record,
                stats: None,
                adaptive: None,
                elsewhere: None,
                shares: vec![],
            }),
            series: Mutex::default(),
            notifier: std::sync::OnceLock::new(),
        }
    }

    /// A job of an earlier run of the service, for the history.
    pub fn restored(record: JobRecord) -> Self {
        let cancel = CancellationToken::new();
        cancel.cancel();
        Job {
            id: record.id,
            spec: None,
            control: Arc::new(Control::with_throttle(
                record.workers,
                Throttle::new(record.limits.unwrap_or(Limits {
                    rate: record.spec.rate,
                    rate_bytes: record.spec.rate_bytes,
                })),
            )),
            cancel,
            commit: CancellationToken::new(),
            state: watch::channel(record.state).0,
            inner: Mutex::new(JobInner {
                record,
                stats: None,
                adaptive: None,
                elsewhere: None,
                shares: vec![],
            }),
            series: Mutex::default(),
            notifier: std::sync::OnceLock::new(),
        }
    }

    /// A job another service node runs, as it published it.
    pub fn elsewhere(record: JobRecord, node: String, view: Option<JobView>) -> Self {
        let job = Job::restored(record);
        job.inner.lock().elsewhere = Some((node, view));
        job
    }

    /// Takes in what the node running the job published last (watchers see a changed state).
    pub fn mirror(&self, record: JobRecord, node: String, view: Option<JobView>) {
        let mut inner = self.inner.lock();
        let state = record.state;
        inner.record = record;
        inner.elsewhere = Some((node, view));
        if *self.state.borrow() != state {
            self.state.send_replace(state);
        }
    }

    /// The view the node running the job published last, when it is not this one.
    pub fn published(&self) -> Option<JobView> {
        self.inner
            .lock()
            .elsewhere
            .as_ref()
            .and_then(|(_, view)| view.clone())
    }

    /// The node that runs the job, when it is not this one.
    pub fn runs_elsewhere(&self) -> Option<String> {
        self.inner
            .lock()
            .elsewhere
            .as_ref()
            .map(|(node, _)| node.clone())
    }

    /// What each service node does for the job, as last heard.
    pub fn set_shares(&self, shares: Vec<NodeShare>) {
        self.inner.lock().shares = shares;
    }

    /// What this node's run does for the job.
    pub fn share(&self, node: &str, role: NodeRole) -> NodeShare {
        let stats = self.stats();
        let snap = stats.as_ref().map(|s| s.snapshot());
        NodeShare {
            node: node.to_string(),
            role,
            state: self.state(),
            docs: snap.as_ref().map_or(0, |s| s.docs),
            bytes: snap.as_ref().map_or(0, |s| s.bytes),
            docs_per_sec: stats.as_ref().map_or(0.0, |s| s.recent.per_sec()),
            workers: self.control.workers(),
        }
    }

    pub fn state(&self) -> JobState {
        *self.state.borrow()
    }

    /// Follows state changes (for the event stream).
    pub fn watch_state(&self) -> watch::Receiver<JobState> {
        self.state.subscribe()
    }

    /// Applies `event` to the job's state ([`JobState::after`]), atomically: the new state, or
    /// `Err` with the current one when the event does not apply. Watchers see the changes in the
    /// order they happened.
    pub fn apply(&self, event: Event) -> Result<JobState, JobState> {
        let mut inner = self.inner.lock();
        let previous = inner.record.state;
        let state = previous.after(&event)?;
        match event {
            Event::Ended(_, message) => inner.record.error = message,
            Event::Paused => inner.record.paused = true,
            Event::Resumed { .. } => inner.record.paused = false,
            Event::Started | Event::Abandoned => {}
        }
        let changed = inner.record.state != state;
        inner.record.state = state;
        if changed {
            inner.record.note(TimelineKind::State, state.as_str());
        }
        if state.is_final() {
            inner.record.finished_at = Some(unix_now());
            if let Some(stats) = inner.stats.clone() {
                let snap = stats.snapshot();
                if let Some(sync) = &snap.sync {
                    inner.record.note_phase(sync.phase.as_str());
                }
                inner.record.docs = snap.docs;
                inner.record.bytes = snap.bytes;
                inner.record.skipped = snap.skipped;
                inner.record.failed = snap.failed;
                inner.record.dead_letters = Some(stats.dead_letters.snapshot());
                inner.record.progress = Some(match inner.shares.is_empty() {
                    true => snap,
                    false => snap.at_rate(inner.shares.iter().map(|s| s.docs_per_sec).sum()),
                });
            }
            if !inner.shares.is_empty() {
                inner.record.nodes = inner.shares.clone();
            }
        }
        // Announced under the lock, so watchers see the changes in the order they happened.
        self.state.send_replace(state);
        if state != previous {
            if let Some(notifier) = self.notifier.get() {
                notifier.announce(&self.change(&inner, Some(previous)));
            }
        }
        Ok(state)
    }

    /// Announces the job's state changes to `notifier` from now on (the jobs this node runs).
    pub fn notify_to(&self, notifier: Arc<Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// Announces the state the job is in, as a change from `previous`: a job just submitted
    /// (`None`) or continued (the state it was in). Nothing without a notifier.
    pub fn announce(&self, previous: Option<JobState>) {
        if let Some(notifier) = self.notifier.get() {
            let inner = self.inner.lock();
            notifier.announce(&self.change(&inner, previous));
        }
    }

    /// The job's state and figures now, as a change from `previous`.
    fn change(&self, inner: &JobInner, previous: Option<JobState>) -> Change {
        let record = &inner.record;
        let snap = inner.stats.as_ref().map(|s| s.snapshot());
        // A final state's counts are in the record (taken from the stats as it ended).
        let counts = match (&snap, record.state.is_final()) {
            (Some(s), false) => (s.docs, s.bytes, s.skipped, s.failed),
            _ => (record.docs, record.bytes, record.skipped, record.failed),
        };
        Change {
            job: self.id,
            mode: record.spec.mode.unwrap_or_default(),
            state: record.state,
            previous_state: previous,
            docs: counts.0,
            bytes: counts.1,
            skipped: counts.2,
            failed: counts.3,
            docs_per_sec: snap.as_ref().map(|s| s.docs_per_sec),
            seconds: snap.as_ref().map(|s| s.seconds),
            created_at: record.created_at,
            finished_at: record.finished_at,
            error: record.error.clone(),
        }
    }

    /// Notes the phase the job is in (a sync's `initial_copy`, `live`…) in its timeline, unless
    /// it is the phase noted last: cheap to call often.
    pub fn note_phase(&self, phase: &str) {
        self.inner.lock().record.note_phase(phase);
    }

    /// Keeps the job's credentials, sealed, in its record.
    pub fn set_sealed(&self, sealed: Option<String>) {
        self.inner.lock().record.sealed = sealed;
    }

    /// A sync job's cutover: its run commits, and so do the other nodes' runs of it.
    pub fn ask_commit(&self) {
        self.inner.lock().record.commit = true;
        self.commit.cancel();
    }

    /// Replaces the message shown with the job (its state stays as it is).
    pub fn explain(&self, message: String) {
        self.inner.lock().record.error = Some(message);
    }

    /// Connects the view to the running copy's counters and adaptive state.
    pub fn attach(&self, stats: Arc<JobStats>, adaptive: Option<Arc<Adaptive>>) {
        let mut inner = self.inner.lock();
        inner.stats = Some(stats);
        inner.adaptive = adaptive;
    }

    /// Adds the point of now to the job's series (see [`super::series`]).
    pub fn sample(&self) {
        let Some(stats) = self.stats() else { return };
        let progress = Job::progress_of(&self.inner.lock());
        let reading = Reading {
            progress: progress.as_ref(),
            workers: self.control.workers(),
            rate_limit: self.control.throttle().job.limits().rate,
            held: self.control.guard().throttled(),
        };
        if let Some(sync) = progress.as_ref().and_then(|p| p.sync.as_ref()) {
            self.note_phase(sync.phase.as_str());
        }
        let now = unix_now();
        let mut series = self.series.lock();
        let (series, sampler) = &mut *series;
        series.push(now, sampler.sample(now, &reading, &stats.write_latency));
    }

    /// The series of this node's run (empty before it started, and for a job of the history).
    pub fn series(&self) -> Series {
        self.series.lock().0.clone()
    }

    /// Continues the series saved by an earlier run of the job (a restart, a take-over), unless
    /// this run has points already.
    pub fn continue_series(&self, saved: Series) {
        let mut series = self.series.lock();
        if series.0.is_empty() {
            series.0 = saved;
        }
    }

    /// The live counters, once the job has started.
    pub fn stats(&self) -> Option<Arc<JobStats>> {
        self.inner.lock().stats.clone()
    }

    pub fn record(&self) -> JobRecord {
        let mut inner = self.inner.lock();
        // A run of this service's: its settings now. Another node's job, or one of the history,
        // has them in its record as written.
        if self.spec.is_some() && inner.elsewhere.is_none() {
            inner.record.workers = self.control.workers();
            inner.record.limits = Some(self.control.throttle().job.limits());
        }
        inner.record.clone()
    }

    /// The job's progress: as it ended, for a final job (kept in its record; only the final
    /// counts in a history written before it was kept), else the live counters', at the rate of
    /// every node on the job together.
    fn progress_of(inner: &JobInner) -> Option<JobSnapshot> {
        let record = &inner.record;
        match (&record.progress, record.state.is_final(), &inner.stats) {
            // Not the live counters': their clock goes on.
            (Some(kept), true, _) => Some(kept.clone()),
            (_, _, Some(stats)) => {
                let snap = stats.snapshot();
                Some(match inner.shares.is_empty() {
                    true => snap,
                    false => snap.at_rate(inner.shares.iter().map(|s| s.docs_per_sec).sum()),
                })
            }
            (None, true, None) => Some(JobSnapshot::final_counts(
                record.docs,
                record.bytes,
                record.skipped,
                record.failed,
            )),
            (_, false, None) => None,
        }
    }

    /// The job as the API shows it (a read: nothing changes).
    pub fn view(&self) -> JobView {
        let inner = self.inner.lock();
        if let Some((_, Some(published))) = &inner.elsewhere {
            let mut view = published.clone();
            // What the record says now (a command may have moved it) and who does what now.
            view.state = inner.record.state;
            view.error = inner.record.error.clone();
            view.finished_at = inner.record.finished_at;
            view.nodes = inner.shares.clone();
            return view;
        }
        let progress = Job::progress_of(&inner);
        let record = &inner.record;
        let sync = progress.as_ref().and_then(|p| p.sync.as_ref());
        JobView {
            can_commit: sync.map(|s| s.can_commit.clone()),
            verification: sync.and_then(|s| s.verification.clone()),
            writes_after_commit: sync.and_then(|s| s.writes_after_commit.clone()),
            id: self.id,
            state: record.state,
            spec: record.spec.clone(),
            workers: self.control.workers(),
            limits: self.control.throttle().job.limits(),
            adaptive: inner.adaptive.as_ref().map(|a| a.view()),
            load_guard: Some(self.control.guard().view()),
            created_at: record.created_at,
            finished_at: record.finished_at,
            error: record.error.clone(),
            dead_letters: match (&inner.stats, &record.dead_letters) {
                (_, Some(kept)) if record.state.is_final() => Some(kept.clone()),
                (Some(stats), _) => Some(stats.dead_letters.snapshot()),
                (None, kept) => kept.clone(),
            },
            nodes: match inner.shares.is_empty() {
                true => record.nodes.clone(),
                false => inner.shares.clone(),
            },
            progress,
            links: Links::new(self.id, record.spec.mode.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    const STATES: [JobState; 7] = [
        Pending,
        Running,
        Paused,
        Completed,
        Failed,
        Cancelled,
        Interrupted,
    ];

    fn ended(outcome: Ending) -> Event {
        Event::Ended(outcome, None)
    }

    #[test]
    fn every_state_and_event() {
        let events = [
            Event::Started,
            Event::Paused,
            Event::Resumed { started: true },
            Event::Resumed { started: false },
            ended(Ending::Completed),
            ended(Ending::Failed),
            ended(Ending::Cancelled),
            ended(Ending::Interrupted),
            Event::Abandoned,
        ];
        // One row per state, one column per event above; `-` where the event is refused.
        let expected = [
            (
                "pending",
                "running paused pending pending completed failed cancelled interrupted -",
            ),
            (
                "running",
                "- paused running running completed failed cancelled interrupted -",
            ),
            (
                "paused",
                "paused paused running pending completed failed cancelled interrupted -",
            ),
            ("completed", "- - - - - - - - -"),
            ("failed", "- - - - - - - - -"),
            ("cancelled", "- - - - - - - - -"),
            ("interrupted", "- - - - - failed - - cancelled"),
        ];
        for (state, (name, row)) in STATES.iter().zip(expected) {
            assert_eq!(state.as_str(), name);
            let got: Vec<String> = events
                .iter()
                .map(|e| match state.after(e) {
                    Ok(next) => next.as_str().to_string(),
                    Err(current) => {
                        assert_eq!(current, *state, "a refusal names the current state");
                        "-".to_string()
                    }
                })
                .collect();
            assert_eq!(got.join(" "), row, "from {name}");
        }
    }

    #[test]
    fn final_states_are_final_and_the_rest_are_not() {
        for state in STATES {
            let refused_all = [
                Event::Started,
                Event::Paused,
                Event::Resumed { started: true },
            ]
            .iter()
            .all(|e| state.after(e).is_err());
            assert_eq!(state.is_final(), refused_all, "{state}");
        }
    }
}
