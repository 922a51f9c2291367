//! The job manager (the seed's "bus"): starts jobs, answers "is this already being done?",
//! carries operator commands to running jobs, and keeps the history.
//!
//! In: [`JobSpec`]s and [`Command`]s from the API. Out: [`Job`]s running the copy engine in tasks
//! the manager owns and joins (at shutdown too), the [`History`], and each job's checkpoint and
//! dead letters in the [`StateStore`]. Jobs the service was running when it stopped (or crashed)
//! continue from their checkpoints when it starts again. With a shared history, several service
//! nodes show the same jobs and share them ([`super::nodes`]). The state changes of the jobs
//! this node runs are announced to the [`Notifier`] (`serve --notify-url`), if any.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use super::command::{Command, CommandError};
use super::credentials::CredentialsKey;
use super::job::{Event, Job, JobId, JobRecord, JobState, NodeRole};
use super::nodes::{self, Nodes};
use super::notify::Notifier;
use super::series::{self, Series};
use crate::bounds;
use crate::engine::control::guard::GuardSettings;
use crate::engine::control::throttle::{Limiter, Limits, Throttle};
use crate::engine::transform::HmacKey;
use crate::engine::{Control, CopyError};
use crate::run::outcome::{Asked, Ending, Outcome, Surface};
use crate::run::plan::Plan;
use crate::run::reverse::{self, ReverseError};
use crate::run::{copy, cutover, overlap};
use crate::service::clusters::AllowList;
use crate::spec::{CopySpec, JobSpec, Mode, SpecError};
use crate::state::history::{HistoryError, HistoryFile};
use crate::state::shared_history::SharedHistory;
use crate::state::unix_now;
use crate::state::{StateError, StateStore};

/// How long a submit waits for each server to say who it is: the request returns at once, and
/// a server slower than this is checked by the job's run instead.
const SUBMIT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the notices still queued at shutdown get to be delivered.
const NOTIFY_GRACE: Duration = Duration::from_secs(3);

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(SpecError),
    #[error("the plan could not be made: {0}")]
    Failed(CopyError),
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// The shared history could not give the job an id.
    #[error("the job was not started: {0}")]
    State(#[from] StateError),
}

/// Why the reverse of a job was not started ([`JobManager::reverse`]).
#[derive(Debug, thiserror::Error)]
pub enum ReverseJobError {
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job's spec, with its credentials, is not at hand (a job of an earlier run whose
    /// credentials were not sealed).
    #[error("job {id}: {why}, so its reverse cannot be started here")]
    NoSpec { id: JobId, why: &'static str },
    #[error(transparent)]
    Reverse(#[from] ReverseError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// Where the manager keeps the jobs' records.
pub enum History {
    /// Nowhere (`serve --no-state`): forgotten when the service stops.
    None,
    /// A JSON file that this service alone writes.
    File(HistoryFile),
    /// A MongoDB database that several service nodes share, with this node's part in it
    /// ([`super::nodes`]).
    Shared(Box<Nodes>),
}

impl History {
    /// Keeps job `id`'s series beside the jobs' records (nowhere with no history).
    async fn save_series(&self, id: JobId, series: Series) -> Result<(), String> {
        match self {
            History::None => Ok(()),
            History::File(file) => {
                let file = file.clone();
                blocking(move || file.save_series(id.0, &series)).await
            }
            History::Shared(nodes) => nodes
                .shared()
                .put_series(id.0, &series)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Job `id`'s series as last kept, if any.
    async fn load_series(&self, id: JobId) -> Result<Option<Series>, String> {
        match self {
            History::None => Ok(None),
            History::File(file) => {
                let file = file.clone();
                blocking(move || file.load_series(id.0)).await
            }
            History::Shared(nodes) => nodes.shared().series(id.0).await.map_err(|e| e.to_string()),
        }
    }
}

/// Runs a file operation off the async threads; its error (or the task's) as text.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    operation: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(operation).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

pub struct JobManager {
    jobs: Mutex<BTreeMap<JobId, Arc<Job>>>,
    next_id: AtomicU64,
    history: History,
    /// Checkpoints and dead letters of the jobs.
    state: Arc<dyn StateStore>,
    /// Jobs that were running when the service last stopped, to continue.
    interrupted: Mutex<Vec<JobId>>,
    /// Set by [`shutdown`](Self::shutdown): stopped jobs are interrupted, not cancelled.
    stopping: AtomicBool,
    /// Saves run one at a time, so the file always ends with the latest history.
    saving: tokio::sync::Mutex<()>,
    tasks: TaskTracker,
    /// The budget shared by all jobs, on top of each job's own limits.
    global: Arc<Limiter>,
    /// Where jobs' journals go: a spec names its journal, relative to this directory.
    journal_root: Option<PathBuf>,
    /// The hosts jobs may read and write (`serve --allow-cluster`).
    clusters: AllowList,
    /// Stops the heartbeat (shared history) at shutdown.
    halt: CancellationToken,
    /// Seals the credentials of jobs' URIs in the history, and opens them to continue a job.
    credentials: std::sync::OnceLock<CredentialsKey>,
    /// While this file exists, no job writes (`serve --throttle-flag-file`).
    throttle_flag_file: std::sync::OnceLock<PathBuf>,
    /// The key of the jobs' transforms (`hmac` steps); never in a spec or the history.
    transform_key: std::sync::OnceLock<HmacKey>,
    /// Announces the state changes of the jobs this node runs (`serve --notify-url`).
    notifier: std::sync::OnceLock<Arc<Notifier>>,
}

impl JobManager {
    /// A manager with the history of `store` and the checkpoints of `state`, keeping jobs'
    /// journals under `journal_root` (without one, jobs cannot journal). Jobs that were still
    /// active when the service stopped are continued by [`resume`](Self::resume).
    pub fn open(
        store: Option<HistoryFile>,
        state: Arc<dyn StateStore>,
        journal_root: Option<PathBuf>,
    ) -> Result<Arc<Self>, HistoryError> {
        Self::open_with_clusters(store, state, journal_root, AllowList::default())
    }

    /// As [`open`](Self::open), with jobs allowed to reach only the hosts of `clusters`: a spec
    /// naming any other is refused before anything connects or looks a name up.
    pub fn open_with_clusters(
        store: Option<HistoryFile>,
        state: Arc<dyn StateStore>,
        journal_root: Option<PathBuf>,
        clusters: AllowList,
    ) -> Result<Arc<Self>, HistoryError> {
        let history = match store {
            Some(file) => History::File(file),
            None => History::None,
        };
        Self::with_history(history, state, journal_root, clusters)
    }

    /// A manager whose history several service nodes share: each shows every node's jobs, and
    /// takes over those of a node silent for `lease`. The jobs are read as the service starts
    /// ([`resume`](Self::resume)).
    pub fn open_shared(
        history: SharedHistory,
        lease: Duration,
        state: Arc<dyn StateStore>,
        journal_root: Option<PathBuf>,
        clusters: AllowList,
    ) -> Arc<Self> {
        Self::with_history(
            History::Shared(Box::new(Nodes::new(history, lease))),
            state,
            journal_root,
            clusters,
        )
        .expect("a shared history is read as the service starts")
    }

    fn with_history(
        history: History,
        state: Arc<dyn StateStore>,
        journal_root: Option<PathBuf>,
        clusters: AllowList,
    ) -> Result<Arc<Self>, HistoryError> {
        let records: Vec<JobRecord> = match &history {
            History::File(file) => file.load()?,
            History::None | History::Shared(_) => vec![],
        };
        let mut jobs = BTreeMap::new();
        let mut interrupted = Vec::new();
        let mut next_id = 1;
        for mut record in records {
            if !record.state.is_final() || record.state == JobState::Interrupted {
                interrupted.push(record.id);
                record.state = JobState::Interrupted;
                record.error =
                    Some("interrupted: the service stopped before the job finished".into());
                record.finished_at.get_or_insert(unix_now());
            }
            next_id = next_id.max(record.id.0 + 1);
            jobs.insert(record.id, Arc::new(Job::restored(record)));
        }
        Ok(Arc::new(JobManager {
            jobs: Mutex::new(jobs),
            next_id: AtomicU64::new(next_id),
            history,
            state,
            interrupted: Mutex::new(interrupted),
            stopping: AtomicBool::new(false),
            saving: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            global: Arc::new(Limiter::new(Limits::default())),
            journal_root,
            clusters,
            halt: CancellationToken::new(),
            credentials: std::sync::OnceLock::new(),
            throttle_flag_file: std::sync::OnceLock::new(),
            transform_key: std::sync::OnceLock::new(),
            notifier: std::sync::OnceLock::new(),
        }))
    }

    /// The copy a job's spec describes, its journal placed under the journal root: an API
    /// client names a journal, it does not choose where on this machine the service writes.
    /// Its hosts must be in the cluster allow-list (checked on the URIs' text, before any
    /// connection or DNS lookup); every problem is reported at once.
    pub(super) fn copy_spec(&self, spec: &JobSpec) -> Result<CopySpec, SpecError> {
        let mut problems = self.clusters.problems("from", &spec.endpoints.from);
        problems.extend(self.clusters.problems("to", &spec.endpoints.to));
        if let Some(url) = &spec.guard.throttle_url {
            problems.extend(self.clusters.url_problems("throttle_url", url));
        }
        let validated = spec.validate();
        if !problems.is_empty() {
            if let Err(SpecError(more)) = validated {
                problems.extend(more);
            }
            return Err(SpecError(problems));
        }
        let mut copy_spec = validated?;
        if let Some(journal) = &mut copy_spec.journal {
            let Some(root) = &self.journal_root else {
                return Err(SpecError(vec![
                    "journal: this service keeps no journals (start it with --journal-root DIR)"
                        .into(),
                ]));
            };
            let name = Path::new(&journal.dir);
            if !name.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(SpecError(vec![format!(
                    "journal.dir: {:?} must be a name under the service's journal root \
                     (no absolute path, no ..)",
                    journal.dir
                )]));
            }
            journal.dir = root.join(name).to_string_lossy().into_owned();
        }
        copy_spec.transform_key = self.transform_key.get().cloned();
        let needs_key = copy_spec.transform.as_ref().is_some_and(|t| t.needs_key());
        if needs_key && copy_spec.transform_key.is_none() {
            return Err(SpecError(vec![
                "transform: hmac steps need the service's key (serve --transform-key-file, or \
                 MONGOFERRY_TRANSFORM_KEY)"
                    .into(),
            ]));
        }
        Ok(copy_spec)
    }

    /// The key of the transforms' `hmac` steps of every job (`serve --transform-key-file`).
    pub fn set_transform_key(&self, key: HmacKey) {
        let _ = self.transform_key.set(key);
    }

    /// Seals the credentials of the jobs submitted from now on with `key`, and opens those of
    /// the history's jobs with it (`serve --credentials-key-file`). Set once, before serving.
    pub fn set_credentials_key(&self, key: CredentialsKey) {
        let _ = self.credentials.set(key);
    }

    /// Announces the state changes of the jobs this node runs from now on to `notifier`, which
    /// the manager stops at its shutdown, once its jobs are stopped. Set once, before serving.
    pub fn set_notifier(&self, notifier: Arc<Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// The notifier of `serve --notify-url`, if any.
    pub fn notifier(&self) -> Option<&Arc<Notifier>> {
        self.notifier.get()
    }

    /// Has `job`, which this node runs (or ends), announce its state changes.
    fn notifying(&self, job: &Job) {
        if let Some(notifier) = self.notifier.get() {
            job.notify_to(notifier.clone());
        }
    }

    /// While `path` exists, every job of this service is held by its load guard.
    pub fn set_throttle_flag_file(&self, path: PathBuf) {
        let _ = self.throttle_flag_file.set(path);
    }

    /// The spec a job of the history runs with: its record's, with its credentials back when
    /// they were sealed with this service's key; else why it cannot run.
    pub(super) fn runnable(&self, record: &JobRecord) -> Result<JobSpec, &'static str> {
        let spec = if !record.spec.is_redacted() {
            record.spec.clone()
        } else {
            let Some(sealed) = &record.sealed else {
                return Err("its credentials are not stored");
            };
            // Opened against the spec as kept: the sealed value is bound to all of it.
            self.credentials
                .get()
                .and_then(|key| key.open(record.id, &record.spec, sealed))
                .ok_or("its credentials are sealed with a key this service does not have")?
        };
        // With the workers and rate limits it had last.
        let limits = record.limits.unwrap_or(Limits {
            rate: spec.rate,
            rate_bytes: spec.rate_bytes,
        });
        Ok(JobSpec {
            workers: Some(record.workers),
            rate: limits.rate,
            rate_bytes: limits.rate_bytes,
            ..spec
        })
    }

    /// This node's part in a shared history (`None`: the history is this service's alone).
    pub(super) fn nodes(&self) -> Option<&Nodes> {
        match &self.history {
            History::Shared(nodes) => Some(nodes),
            History::None | History::File(_) => None,
        }
    }

    /// Set once the service is stopping: its jobs are interrupted, and no run starts.
    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The jobs' checkpoints and dead letters.
    pub(super) fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    pub fn get(&self, id: JobId) -> Option<Arc<Job>> {
        self.jobs.lock().get(&id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().values().cloned().collect()
    }

    /// The runs of this service: the jobs it runs, and its runs helping other nodes' jobs.
    pub fn runs_here(&self) -> Vec<Arc<Job>> {
        let helping = self.nodes().map(Nodes::helpers).unwrap_or_default();
        self.list()
            .into_iter()
            .filter(|j| j.runs_elsewhere().is_none())
            .chain(helping)
            .collect()
    }

    /// Adds a job to those shown, or replaces the one with its id.
    pub(super) fn insert(&self, job: Arc<Job>) {
        self.jobs.lock().insert(job.id, job);
    }

    /// Continues the jobs the service was running when it last stopped, as the same jobs, from
    /// their checkpoints. A job whose URIs carried a password or another secret stays interrupted
    /// unless its credentials were sealed with this service's key: its stored spec is redacted,
    /// and submitting it again continues it from its checkpoint.
    ///
    /// With a shared history, it reads every node's jobs, takes over those of nodes that are
    /// gone, and starts this node's heartbeat ([`super::nodes`]).
    pub async fn resume(self: &Arc<Self>) {
        if let Some(nodes) = self.nodes() {
            let shared = nodes.shared();
            tracing::info!("service node {} on {}", shared.node(), shared.location());
            nodes.pulse(self).await;
            let manager = self.clone();
            let halt = self.halt.clone();
            self.tasks
                .spawn(async move { nodes::beat_until(manager, halt).await });
            return;
        }
        let ids = std::mem::take(&mut *self.interrupted.lock());
        for id in ids {
            if let Some(old) = self.get(id) {
                self.continue_job(old);
            }
        }
        self.save().await;
    }

    /// Continues `old`, a job interrupted by the end of the service (or of another node), as the
    /// same job from its checkpoint, if it can run ([`runnable`](Self::runnable): else it stays
    /// interrupted, and says why); one whose spec is refused now fails.
    pub(super) fn continue_job(self: &Arc<Self>, old: Arc<Job>) {
        // A service that stops starts nothing: the job stays interrupted, for the next start.
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let id = old.id;
        let record = old.record();
        let spec = match self.runnable(&record) {
            Ok(spec) => spec,
            Err(why) => {
                // Why it was interrupted (the service stopped, its node went), and why it stays.
                let reason = record.error.as_deref().unwrap_or("interrupted");
                old.explain(format!(
                    "{reason}; {why}, so submit it again to continue from its checkpoint"
                ));
                return;
            }
        };
        let copy_spec = match self.copy_spec(&spec) {
            Ok(copy_spec) => copy_spec,
            Err(e) => {
                self.notifying(&old);
                let _ = old.apply(Event::Ended(Ending::Failed, Some(e.to_string())));
                return;
            }
        };
        let paused = record.paused;
        let was = record.state;
        let job = Arc::new(Job::continued(record, spec, self.control(&copy_spec)));
        // Announced before anyone else can see the job: its changes reach receivers in order.
        self.notifying(&job);
        job.announce(Some(was));
        // The operator's pause holds across the interruption: the job continues paused.
        if paused {
            let _ = job.apply(Event::Paused);
            job.control.pause();
        }
        self.jobs.lock().insert(id, job.clone());
        tracing::info!("job {id} continues from its checkpoint");
        self.spawn_run(job, copy_spec, NodeRole::Runs);
    }

    /// A job's workers and throttle, under the budget shared by all jobs.
    pub(super) fn control(&self, copy_spec: &CopySpec) -> Control {
        let throttle = Throttle::new(copy_spec.limits).with_global(self.global.clone());
        let control =
            Control::with_throttle(copy_spec.workers, throttle).with_guard(copy_spec.guard.clone());
        control
            .guard()
            .set_service_flag_file(self.throttle_flag_file.get().cloned());
        control
    }

    /// Runs `job` in a task of the manager's: the job's own run, or (`NodeRole::Helps`) one that
    /// only helps copy the partitions of a job another node runs.
    pub(super) fn spawn_run(self: &Arc<Self>, job: Arc<Job>, copy_spec: CopySpec, role: NodeRole) {
        // A stop that began meanwhile must not miss this run.
        if self.stopping.load(Ordering::SeqCst) {
            job.cancel.cancel();
        }
        let manager = self.clone();
        self.tasks
            .spawn(async move { manager.run_job(job, copy_spec, role).await });
    }

    /// What a job of `spec` would do (a dry run: it reads both clusters and writes nothing).
    pub async fn plan(&self, spec: &JobSpec) -> Result<Plan, PlanError> {
        let copy_spec = self.copy_spec(spec).map_err(PlanError::Invalid)?;
        crate::run::plan::plan(&copy_spec, self.state.database())
            .await
            .map_err(PlanError::Failed)
    }

    /// Starts a job, or returns the active job with the same spec (`false`: nothing new started;
    /// with a shared history, an active job of another node with the same spec counts too, also
    /// one submitted there at the same moment: [`claim_spec`](Self::claim_spec)).
    pub async fn submit(self: &Arc<Self>, spec: JobSpec) -> Result<(Arc<Job>, bool), SubmitError> {
        let copy_spec = self.copy_spec(&spec)?;
        // A job that would destroy its own data is refused before it is accepted (its run
        // checks again: a wildcard may expand differently by then).
        let timeout = copy_spec.connect_timeout.min(SUBMIT_PROBE_TIMEOUT);
        if let Err(CopyError::Unsafe(problems)) =
            overlap::probe(&copy_spec, self.state.database(), timeout).await
        {
            return Err(SpecError(problems).into());
        }
        // Writes blocked at the commit where a server cannot: refused now, not at the commit.
        if let Err(e) = cutover::probe(&copy_spec, timeout).await {
            return Err(SpecError(vec![e.to_string()]).into());
        }
        // What the load guard would read and the servers do not report: refused now.
        let unreported = crate::run::guard::probe(&copy_spec, timeout).await;
        if !unreported.is_empty() {
            return Err(SpecError(unreported).into());
        }
        let redacted = spec.redacted();
        let same = |j: &Arc<Job>| {
            !j.state().is_final()
                && match j.runs_elsewhere() {
                    None => j.spec.as_ref() == Some(&spec),
                    Some(_) => j.record().spec == redacted,
                }
        };
        if let Some(existing) = self.list().into_iter().find(same) {
            return Ok((existing, false));
        }
        // Unique among the nodes of a shared history, which give ids out one at a time.
        let id = match &self.history {
            History::Shared(nodes) => {
                let id = JobId(nodes.shared().next_id().await?);
                // Of the nodes given this spec at once, one starts a job; the others answer
                // with it.
                if let Some(existing) = nodes.claim_spec(self.as_ref(), &spec, id).await? {
                    return Ok((existing, false));
                }
                Some(id)
            }
            History::None | History::File(_) => None,
        };
        let job = {
            let mut jobs = self.jobs.lock();
            if let Some(existing) = jobs.values().find(|j| same(j)) {
                return Ok((existing.clone(), false));
            }
            let id = id.unwrap_or_else(|| JobId(self.next_id.fetch_add(1, Ordering::SeqCst)));
            let job = Arc::new(Job::new(id, spec.clone(), self.control(&copy_spec)));
            // Announced before anyone else can see the job: its changes reach receivers in order.
            self.notifying(&job);
            job.announce(None);
            jobs.insert(id, job.clone());
            job
        };
        if let Some(key) = self.credentials.get() {
            job.set_sealed(key.seal(job.id, &spec));
        }
        self.save().await;
        self.spawn_run(job.clone(), copy_spec, NodeRole::Runs);
        Ok((job, true))
    }

    /// Starts the reverse of the committed sync job `id`: a sync from its destination back to
    /// its source, from the commit point, with the names mapped back and no initial copy
    /// ([`crate::run::reverse`]); or returns the reverse already active (`false`).
    pub async fn reverse(self: &Arc<Self>, id: JobId) -> Result<(Arc<Job>, bool), ReverseJobError> {
        let job = self.get(id).ok_or(ReverseJobError::NotFound(id))?;
        let record = job.record();
        let spec = match &job.spec {
            Some(spec) => spec.clone(),
            None => self
                .runnable(&record)
                .map_err(|why| ReverseJobError::NoSpec { id, why })?,
        };
        let name = format!("job {id}");
        if spec.mode != Some(Mode::Sync) {
            return Err(ReverseError::NotSync { job: name }.into());
        }
        if spec.endpoints.filter.is_some() {
            return Err(ReverseError::Filtered { job: name }.into());
        }
        if spec.transform.is_some() {
            return Err(ReverseError::Transformed { job: name }.into());
        }
        // Refused changes are counted here too, not only those of the copy's checkpoint.
        if record.failed > 0 {
            return Err(ReverseError::DeadLetters {
                job: name,
                count: record.failed,
            }
            .into());
        }
        let forward = self.copy_spec(&spec).map_err(SubmitError::from)?;
        let checkpoint = self
            .state
            .load(&forward.job_key().0)
            .await
            .map_err(ReverseError::from)?
            .ok_or_else(|| ReverseError::NotCommitted { job: name.clone() })?;
        let from = reverse::reversible(&name, &checkpoint)?;
        let reversed = reverse::reverse_of_spec(&spec, &from)?;
        let reversed_copy = self.copy_spec(&reversed).map_err(ReverseError::Invalid)?;
        let active = self
            .list()
            .into_iter()
            .find(|j| !j.state().is_final() && j.spec.as_ref() == Some(&reversed));
        if let Some(active) = active {
            return Ok((active, false));
        }
        reverse::seed(&self.state, &reversed_copy, &from).await?;
        tracing::info!("job {id}: its reverse starts from the commit point");
        Ok(self.submit(reversed).await?)
    }

    async fn run_job(self: Arc<Self>, job: Arc<Job>, spec: CopySpec, role: NodeRole) {
        let runs = role == NodeRole::Runs;
        // A job continued after a restart or taken over goes on with the series saved so far.
        if runs {
            if let Some(saved) = self.stored_series(job.id).await {
                job.continue_series(saved);
            }
        }
        let outcome = match copy::prepare(&spec, self.state.clone()).await {
            Err(e) => Err(e),
            // Cancelled while connecting: the run stops at once and closes the clients.
            Ok(prepared) => {
                let mut prepared = prepared
                    .with_control(job.control.clone())
                    .with_commit(job.commit.clone());
                if role == NodeRole::Helps {
                    prepared = prepared.partitions_only();
                }
                job.attach(prepared.stats(), prepared.adaptive());
                // Refused when it was paused or cancelled meanwhile: that state stays.
                let _ = job.apply(Event::Started);
                tracing::info!("job {} running", job.id);
                let run = prepared.run(job.cancel.clone());
                match runs {
                    true => {
                        // The sampler stops at its next tick once the run ended: never in the
                        // middle of a save, which an older save could then overwrite.
                        let ended = CancellationToken::new();
                        let run = async {
                            let outcome = run.await;
                            ended.cancel();
                            outcome
                        };
                        tokio::join!(run, self.sample_until(&job, &ended)).0
                    }
                    false => run.await,
                }
            }
        };
        let stopping = self.stopping.load(Ordering::SeqCst);
        let judged = Outcome::judge(&outcome, &Asked::of(&spec, Surface::Service { stopping }));
        // Its own task is the only one that ends a running job.
        let _ = job.apply(Event::Ended(judged.ending(), judged.job_message()));
        tracing::info!("job {} {}", job.id, job.state());
        if let Some(nodes) = self.nodes() {
            nodes.helped_out(&job);
        }
        if runs {
            job.sample();
            self.save_series(&job).await;
        }
        self.save().await;
    }

    /// Samples a running job's series once a second and saves them every
    /// [`series::SAVE_EVERY`], until `ended`.
    async fn sample_until(&self, job: &Job, ended: &CancellationToken) {
        let mut tick = tokio::time::interval(series::SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = ended.cancelled() => return,
            }
            job.sample();
            if saved.elapsed() >= series::SAVE_EVERY {
                self.save_series(job).await;
                saved = tokio::time::Instant::now();
            }
        }
    }

    /// Saves a job's series with the history (if the service keeps one). A failed write is
    /// logged: the job goes on.
    async fn save_series(&self, job: &Job) {
        let id = job.id;
        if let Err(e) = self.history.save_series(id, job.series()).await {
            tracing::warn!("job {id}: its chart series were not saved: {e}");
        }
    }

    /// The series saved for job `id`, if any (an unreadable one is logged and left out).
    async fn stored_series(&self, id: JobId) -> Option<Series> {
        self.history.load_series(id).await.unwrap_or_else(|e| {
            tracing::warn!("job {id}: its saved chart series cannot be read: {e}");
            None
        })
    }

    /// A job's series: its run's here, else those saved (a job of the history, or one another
    /// node runs, saved by that node every [`series::SAVE_EVERY`]).
    pub async fn series(&self, job: &Job) -> Series {
        let live = job.series();
        if !live.is_empty() && job.runs_elsewhere().is_none() {
            return live;
        }
        self.stored_series(job.id).await.unwrap_or(live)
    }

    /// What `job`'s servers do not report of what the guard `settings` would read, checked as
    /// at submit, within the submit's probe timeout (none when its servers are not known here,
    /// or do not answer in time: its run then reports what it cannot read).
    async fn unreported(&self, job: &Job, settings: GuardSettings) -> Vec<String> {
        let Some(Ok(mut copy_spec)) = job.spec.as_ref().map(|spec| self.copy_spec(spec)) else {
            return Vec::new();
        };
        copy_spec.guard = settings;
        let timeout = copy_spec.connect_timeout.min(SUBMIT_PROBE_TIMEOUT);
        crate::run::guard::probe(&copy_spec, timeout).await
    }

    /// Carries an operator's command to a job.
    pub async fn command(&self, id: JobId, command: Command) -> Result<Arc<Job>, CommandError> {
        let job = self.get(id).ok_or(CommandError::NotFound(id))?;
        let state = job.state();
        let name = match command {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Cancel => "cancel",
            Command::SetWorkers(_) => "change its workers",
            Command::SetLimits(_) => "change its rate limits",
            Command::SetGuard(_) => "change its load guard",
            Command::Commit => "commit",
        };
        let refuse = |state| CommandError::Conflict {
            id,
            state,
            command: name,
        };
        let abandon = state == JobState::Interrupted && command == Command::Cancel;
        if command == Command::Commit && job.record().spec.mode != Some(Mode::Sync) {
            return Err(CommandError::NotSync(id));
        }
        if state.is_final() && !abandon {
            return Err(refuse(state));
        }
        match &command {
            Command::SetWorkers(n) => {
                if let Some(problem) = bounds::WORKERS.problem(*n) {
                    return Err(CommandError::Invalid(problem));
                }
            }
            Command::SetLimits(limits) => {
                let problems = limits.problems();
                if !problems.is_empty() {
                    return Err(CommandError::Invalid(problems.join("; ")));
                }
            }
            Command::SetGuard(config) => {
                let mode = job.record().spec.mode.unwrap_or_default();
                let settings = config.settings(mode);
                let mut problems = settings.as_ref().err().cloned().unwrap_or_default();
                if let Some(url) = &config.throttle_url {
                    problems.extend(self.clusters.url_problems("throttle_url", url));
                }
                if let (true, Ok(settings)) = (problems.is_empty(), settings) {
                    // As at submit: a path the servers do not report is refused now. Only what
                    // the job does not read yet is asked: a path a server stopped reporting
                    // since (shown as unread) does not block other changes.
                    let new = settings.reads_beyond(&job.control.guard().settings());
                    problems = self.unreported(&job, new).await;
                }
                if !problems.is_empty() {
                    return Err(CommandError::Invalid(problems.join("; ")));
                }
            }
            _ => {}
        }
        // Another node runs the job: the command goes to it, and its answer comes back.
        if let Some(node) = job.runs_elsewhere() {
            return match self.nodes() {
                Some(nodes) => nodes.forward(self, job, node, command).await,
                None => Err(CommandError::Unanswered {
                    id,
                    node,
                    reason: "no shared history".into(),
                }),
            };
        }
        // An interrupted job would continue at the next start of the service: it can be
        // cancelled for good.
        if abandon {
            self.notifying(&job);
            job.apply(Event::Abandoned).map_err(refuse)?;
            job.explain("cancelled while interrupted: it will not continue".into());
            self.save().await;
            return Ok(job);
        }
        match command {
            Command::Pause => {
                job.apply(Event::Paused).map_err(refuse)?;
                job.control.pause();
            }
            Command::Resume => {
                // A job paused before it started goes back to waiting for its start.
                let started = job.stats().is_some();
                job.apply(Event::Resumed { started }).map_err(refuse)?;
                job.control.resume();
            }
            Command::Cancel => job.cancel.cancel(),
            Command::Commit => job.ask_commit(),
            Command::SetWorkers(n) => job.control.set_workers(n),
            Command::SetLimits(limits) => job.control.throttle().job.set(limits),
            Command::SetGuard(config) => {
                let mode = job.record().spec.mode.unwrap_or_default();
                if let Ok(settings) = config.settings(mode) {
                    job.control.guard().set_settings(settings);
                }
            }
        }
        self.save().await;
        Ok(job)
    }

    /// The budget shared by all jobs.
    pub fn global_limits(&self) -> Limits {
        self.global.limits()
    }

    pub fn set_global_limits(&self, limits: Limits) -> Result<(), CommandError> {
        let problems = limits.problems();
        if !problems.is_empty() {
            return Err(CommandError::Invalid(problems.join("; ")));
        }
        self.global.set(limits);
        Ok(())
    }

    /// Writes the history (if the service keeps one). A failed write is logged: the jobs go on.
    pub(super) async fn save(&self) {
        let store = match &self.history {
            History::None => return,
            History::File(file) => file.clone(),
            History::Shared(nodes) => return nodes.publish(self).await,
        };
        let _one_at_a_time = self.saving.lock().await;
        let records = self.list().iter().map(|j| j.record()).collect();
        if let Err(e) = blocking(move || store.save(records)).await {
            tracing::error!("the job history was not saved: {e}");
        }
    }

    /// Stops every job after the batches in flight and waits for them, at most `deadline`;
    /// records the final states.
    pub async fn shutdown(&self, deadline: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.halt.cancel();
        let helping = self.nodes().map(Nodes::helpers).unwrap_or_default();
        for job in self.list().into_iter().chain(helping) {
            job.cancel.cancel();
        }
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("jobs still running after {deadline:?}; their state is recorded as is");
        }
        self.save().await;
        // The jobs' last changes are queued: their notices get a short grace.
        if let Some(notifier) = self.notifier.get() {
            notifier.shutdown(NOTIFY_GRACE).await;
        }
        // The other nodes continue this node's jobs at once, rather than after its lease.
        if let Some(nodes) = self.nodes() {
            if let Err(e) = nodes.shared().leave().await {
                tracing::warn!("{e}");
            }
        }
    }
}

/// The manager as the nodes code sees it.
impl nodes::Manager for JobManager {
    fn nodes(&self) -> Option<&Nodes> {
        JobManager::nodes(self)
    }
    fn stopping(&self) -> bool {
        JobManager::stopping(self)
    }
    fn state(&self) -> &Arc<dyn StateStore> {
        JobManager::state(self)
    }
    fn get(&self, id: JobId) -> Option<Arc<Job>> {
        JobManager::get(self, id)
    }
    fn list(&self) -> Vec<Arc<Job>> {
        JobManager::list(self)
    }
    fn insert(&self, job: Arc<Job>) {
        JobManager::insert(self, job)
    }
    fn runnable(&self, record: &JobRecord) -> Result<JobSpec, &'static str> {
        JobManager::runnable(self, record)
    }
    fn copy_spec(&self, spec: &JobSpec) -> Result<CopySpec, SpecError> {
        JobManager::copy_spec(self, spec)
    }
    fn control(&self, copy_spec: &CopySpec) -> Control {
        JobManager::control(self, copy_spec)
    }
    fn continue_job(self: &Arc<Self>, old: Arc<Job>) {
        JobManager::continue_job(self, old)
    }
    fn spawn_run(self: &Arc<Self>, job: Arc<Job>, copy_spec: CopySpec, role: NodeRole) {
        JobManager::spawn_run(self, job, copy_spec, role)
    }
    fn command(
        &self,
        id: JobId,
        command: Command,
    ) -> BoxFuture<'_, Result<Arc<Job>, CommandError>> {
        Box::pin(JobManager::command(self, id, command))
    }
}
