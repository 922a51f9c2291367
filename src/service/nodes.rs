//! Several service nodes on one MongoDB state (`serve --state mongodb://…` on each): every node
//! shows every job, a command reaches the node that runs its job, nodes copy partitions of each
//! other's jobs, and the jobs of a node that is gone are taken over.
//!
//! In: the [`SharedHistory`] (jobs, heartbeats, commands), read every [`BEAT`]. Out: this node's
//! jobs and heartbeat written there; the other nodes' jobs mirrored here (their published views,
//! their state changes on event streams); helping runs of their partitioned jobs; answers to the
//! commands for this node's jobs.
//!
//! One node runs a job: the job's record and state are its run's, and only it writes them. The
//! node a spec is submitted to claims it in the shared history (`Nodes::claim_spec`), so
//! that a spec submitted to two nodes at once makes one job, which both answer with.
//! Other nodes may help copy the partitions of a copy (or of a sync's initial copy) the way
//! several CLI processes share a job ([`crate::run::copy`]: each partition claimed by lease in
//! the state store); they follow the job's pause, workers, rate limits (each takes an equal
//! share), commit and cancel, and end once the partitions are copied. A node whose heartbeat is
//! older than the lease is gone (or at once, when it stopped and left, or ran on this host and
//! its process is gone): the first node that can run a job of it (open its credentials, reach its
//! clusters) takes the job over and continues it from its checkpoint; a helping run of it there
//! goes on, and the job's run joins it. A spec whose URIs carry a secret can be run by another
//! node only if that node has the [credentials key](super::credentials) that sealed them in the
//! record; else the job is mirrored, never helped, and shows as interrupted if its node goes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::DateTime;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::command::{Command, CommandError};
use super::job::{Event, Job, JobId, JobRecord, JobState, JobView, NodeRole, NodeShare};
use crate::engine::Control;
use crate::run::share;
use crate::spec::{CopySpec, JobSpec, SpecError};
use crate::state::mongo::{host_name, process_runs};
use crate::state::shared_history::{NodeBeat, SharedHistory, StoredJob};
use crate::state::{unix_now, StateError, StateStore};
use futures::future::BoxFuture;

/// A job as stored in the shared history.
type Stored = StoredJob<JobRecord, JobView>;

/// How often a node beats: writes its jobs and heartbeat, reads the others'.
pub const BEAT: Duration = Duration::from_secs(1);

/// How long a command for a job of another node waits for that node's answer.
const COMMAND_WAIT: Duration = Duration::from_secs(10);

/// How often a beat that keeps failing is logged.
const FAILURE_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// A command older than this is withdrawn unanswered: its sender gave up on it.
const STALE_COMMAND: Duration = Duration::from_secs(60);

/// How far back, beyond a lease, each beat reads the jobs written lately.
const JOBS_WINDOW: Duration = Duration::from_secs(10);

/// How long after a helping run ended another may start for the same job.
const HELP_AGAIN: Duration = Duration::from_secs(5);

/// How long a submit waits for the job that claimed its spec on another node to be written,
/// before it takes the claim for itself (that node died starting the job).
const CLAIM_STARTING: Duration = Duration::from_secs(5);

/// A node's answer to a command for one of its jobs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Done,
    Refused { message: String, conflict: bool },
}

/// What the nodes code asks of the manager that owns it (`JobManager`): its jobs, the store, and
/// starting runs. The whole interface between the two.
pub(super) trait Manager: Send + Sync + 'static {
    /// Its [`Nodes`] (a shared history only).
    fn nodes(&self) -> Option<&Nodes>;
    /// The service is stopping: no run starts.
    fn stopping(&self) -> bool;
    fn state(&self) -> &Arc<dyn StateStore>;
    fn get(&self, id: JobId) -> Option<Arc<Job>>;
    fn list(&self) -> Vec<Arc<Job>>;
    /// Shows `job` (a mirror, or a job taken over), replacing the one with its id.
    fn insert(&self, job: Arc<Job>);
    /// The spec a job of the history runs with here, or why it cannot.
    fn runnable(&self, record: &JobRecord) -> Result<JobSpec, &'static str>;
    fn copy_spec(&self, spec: &JobSpec) -> Result<CopySpec, SpecError>;
    fn control(&self, copy_spec: &CopySpec) -> Control;
    /// Continues an interrupted job here, from its checkpoint.
    fn continue_job(self: &Arc<Self>, old: Arc<Job>);
    fn spawn_run(self: &Arc<Self>, job: Arc<Job>, copy_spec: CopySpec, role: NodeRole);
    /// Applies an operator's command (one another node left for a job of this node).
    fn command(&self, id: JobId, command: Command)
        -> BoxFuture<'_, Result<Arc<Job>, CommandError>>;
}

/// This node's part in the shared history: the history itself, and what the node keeps of it
/// between beats. Owned by the manager (`History::Shared`), which it reaches only through the
/// [`Manager`] trait.
pub struct Nodes {
    shared: SharedHistory,
    /// How long a node's silence is waited out before its jobs are taken over.
    lease: Duration,
    /// Jobs other nodes run whose partitions this node copies too.
    helping: Mutex<BTreeMap<JobId, Arc<Job>>>,
    /// When each job's last helping run here ended, if it stopped short: it is not started again
    /// at once. `None`: it copied every partition left, so the job needs no more help.
    helped: Mutex<HashMap<JobId, Option<Instant>>>,
    /// The record last written of each job this node runs.
    written: Mutex<HashMap<JobId, JobRecord>>,
    /// From when the next beat reads the jobs written; `None`: every job.
    jobs_read: Mutex<Option<DateTime>>,
    /// When a failing beat was last logged: once a minute, not every beat.
    beat_failed: Mutex<Option<Instant>>,
    /// The nodes alive at the last beat that read them, this one included (0: none read yet).
    live: AtomicUsize,
    /// Writes of this node's jobs run one at a time.
    publishing: tokio::sync::Mutex<()>,
}

/// Beats every [`BEAT`] until `halt` (a shared history only).
pub(super) async fn beat_until<M: Manager>(manager: Arc<M>, halt: CancellationToken) {
    loop {
        tokio::select! {
            _ = halt.cancelled() => return,
            _ = tokio::time::sleep(BEAT) => {}
        }
        if let Some(nodes) = manager.nodes() {
            nodes.pulse(&manager).await;
        }
    }
}

impl Nodes {
    /// This node on `shared`, taking over the jobs of nodes silent for `lease`.
    pub(super) fn new(shared: SharedHistory, lease: Duration) -> Self {
        Nodes {
            shared,
            lease,
            helping: Mutex::default(),
            helped: Mutex::default(),
            written: Mutex::default(),
            jobs_read: Mutex::default(),
            beat_failed: Mutex::default(),
            live: AtomicUsize::new(0),
            publishing: tokio::sync::Mutex::new(()),
        }
    }

    /// The shared history (ids, spec claims, leaving).
    pub(super) fn shared(&self) -> &SharedHistory {
        &self.shared
    }

    /// The nodes alive at the last beat that read them, this one included (0: none read yet).
    pub(super) fn live(&self) -> usize {
        self.live.load(Relaxed)
    }

    /// This node's runs that help other nodes' jobs.
    pub(super) fn helpers(&self) -> Vec<Arc<Job>> {
        self.helping.lock().values().cloned().collect()
    }

    /// One beat (a shared history only): mirrors the other nodes' jobs, takes over those of
    /// nodes that are gone, starts and steers helping runs, answers commands, then writes this
    /// node's jobs and heartbeat. A failure is logged; the next beat tries again.
    pub(super) async fn pulse<M: Manager>(&self, manager: &Arc<M>) {
        let shared = &self.shared;
        let beat = self.beat_once(manager).await;
        let mut failed = self.beat_failed.lock();
        match beat {
            Err(e) => {
                if failed.is_none_or(|at| at.elapsed() >= FAILURE_LOGGED_EVERY) {
                    tracing::warn!(
                        "service node {}: {e} (trying again every second)",
                        shared.node()
                    );
                    *failed = Some(Instant::now());
                }
            }
            Ok(()) if failed.take().is_some() => {
                tracing::info!(
                    "service node {}: the shared state answers again",
                    shared.node()
                );
            }
            Ok(()) => {}
        }
    }

    async fn beat_once<M: Manager>(&self, manager: &Arc<M>) -> Result<(), StateError> {
        let shared = &self.shared;
        // A node that stops starts no run: its jobs are the other nodes' to take over.
        if manager.stopping() {
            return Ok(());
        }
        // The heartbeat first: however long the rest of the beat takes, this node is alive.
        let shares = self.shares(manager.as_ref(), shared.node());
        let wire: Vec<(u64, &NodeShare)> = shares.iter().map(|(id, share)| (id.0, share)).collect();
        shared.beat(&wire).await?;
        let nodes = shared.nodes::<NodeShare>().await?;
        let live: HashSet<&str> = nodes
            .iter()
            .filter(|n| self.alive(n))
            .map(|n| n.node.as_str())
            .collect();
        self.live.store(live.len(), Relaxed);
        // Every job at the first beat; then those written lately, and those not ended. The
        // window reaches back a lease and more, for writers whose clocks run behind.
        let read_at = DateTime::now();
        let since = *self.jobs_read.lock();
        for stored in shared.jobs(since).await? {
            let owner = stored.node.clone();
            let record = self.mirror(manager.as_ref(), stored);
            let id = record.id;
            if owner == shared.node() {
                // Ours by the record, yet shown as another node's: a takeover whose answer was
                // lost on the way. This node runs it.
                if manager
                    .get(id)
                    .is_some_and(|j| j.runs_elsewhere().is_some())
                {
                    run_here(manager, id, &owner);
                }
                continue;
            }
            let orphan = !record.state.is_final() || record.state == JobState::Interrupted;
            if orphan && !live.contains(owner.as_str()) {
                match can_run(manager.as_ref(), &record) {
                    Ok(()) => self.take_over(manager, id, &owner).await?,
                    // Left to a node that can run it; shown for what it is meanwhile.
                    Err(why) => show_orphaned(manager.as_ref(), id, &owner, &why),
                }
            }
        }
        // Every helping run follows its job, whether or not the job's node is still there.
        self.steer_helpers(manager.as_ref());
        for job in manager.list() {
            match job.runs_elsewhere() {
                Some(owner) if live.contains(owner.as_str()) => self.help(manager, &job).await,
                _ => {}
            }
        }
        let window = (self.lease + JOBS_WINDOW).as_millis() as i64;
        *self.jobs_read.lock() = Some(DateTime::from_millis(read_at.timestamp_millis() - window));
        self.answer_commands(manager.as_ref()).await?;
        self.show_shares(manager.as_ref(), shared.node(), shares, &nodes, &live);
        for gone in nodes.iter().filter(|n| n.age > self.lease * 10) {
            shared.forget(&gone.node).await?;
        }
        self.publish(manager.as_ref()).await;
        Ok(())
    }

    /// Claims `spec` for the new job `id`, so that of the nodes given the same spec
    /// at once only one starts a job: the claim is one insert in the shared history, keyed by
    /// the spec ([`spec_identity`]). `Some`: the active job that holds the spec, this node's or
    /// another's, to answer with; `None`: job `id` holds it now. A claim whose job ended (or was
    /// not written within [`CLAIM_STARTING`]) is moved to `id`.
    pub(super) async fn claim_spec<M: Manager>(
        &self,
        manager: &M,
        spec: &JobSpec,
        id: JobId,
    ) -> Result<Option<Arc<Job>>, StateError> {
        let shared = &self.shared;
        let identity = spec_identity(spec);
        let asked = Instant::now();
        loop {
            let Some(holder) = shared.claim_spec(&identity, id.0).await? else {
                return Ok(None);
            };
            let holder = JobId(holder);
            let job = match manager.get(holder) {
                Some(job) => Some(job),
                None => match shared.job(holder.0).await? {
                    Some(stored) => {
                        self.mirror(manager, stored);
                        manager.get(holder)
                    }
                    None => None,
                },
            };
            let ended = match job {
                Some(job) if !job.state().is_final() => return Ok(Some(job)),
                Some(_) => true,
                // Claimed but not written yet: its node is starting it, or died doing so.
                None => asked.elapsed() > CLAIM_STARTING,
            };
            if ended {
                if shared.reclaim_spec(&identity, holder.0, id.0).await? {
                    return Ok(None);
                }
                // Another node moved the claim first: its job is the one.
                continue;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether a node's heartbeat says it runs: recent enough, and (on this host) its process
    /// still there.
    fn alive(&self, node: &NodeBeat<NodeShare>) -> bool {
        let gone_here = node.host == host_name()
            && node.pid != i64::from(std::process::id())
            && !process_runs(node.pid);
        node.age < self.lease && !gone_here
    }

    /// Takes in a job as stored: a job of another node is mirrored (this node's own run of it
    /// stops, if another node took it over). Its record.
    fn mirror<M: Manager>(&self, manager: &M, stored: Stored) -> JobRecord {
        let StoredJob {
            node, record, view, ..
        } = stored;
        if node == self.shared.node() {
            return record;
        }
        let id = record.id;
        match manager.get(id) {
            Some(job) if job.runs_elsewhere().is_some() => job.mirror(record.clone(), node, view),
            local => {
                if let Some(mine) = local {
                    tracing::warn!(
                        "job {id}: node {node} took it over while this node seemed gone; this \
                         node's run stops"
                    );
                    mine.cancel.cancel();
                }
                let job = Job::elsewhere(record.clone(), node, view);
                manager.insert(Arc::new(job));
            }
        }
        record
    }

    /// Makes this node run job `id` of the node `from`, which is gone, if no other node was
    /// quicker.
    async fn take_over<M: Manager>(
        &self,
        manager: &Arc<M>,
        id: JobId,
        from: &str,
    ) -> Result<(), StateError> {
        if self.shared.take_over(id.0, from).await? {
            tracing::info!("job {id}: node {from} is gone; this node runs it now");
            run_here(manager, id, from);
        }
        Ok(())
    }

    /// Has every helping run follow the job it helps with (see [`steer`]).
    fn steer_helpers<M: Manager>(&self, manager: &M) {
        let helping: Vec<Arc<Job>> = self.helping.lock().values().cloned().collect();
        for helper in helping {
            if let Some(job) = manager.get(helper.id) {
                steer(&helper, &job);
            }
        }
    }

    /// Starts a run that helps copy the partitions of `mirror`, a job another node runs, if it is
    /// running, shared (partitioned, its layout published) and not complete, does not journal,
    /// and this node can run its spec.
    async fn help<M: Manager>(&self, manager: &Arc<M>, mirror: &Arc<Job>) {
        if self.helping.lock().contains_key(&mirror.id) {
            return;
        }
        let record = mirror.record();
        let recently = match self.helped.lock().get(&mirror.id) {
            None => false,
            // Every partition is copied: what is left (indexes, verify, a sync's following) is
            // the job's run's.
            Some(None) => true,
            Some(Some(ended)) => ended.elapsed() < HELP_AGAIN,
        };
        // A journaled job is not helped: its journal stays whole, on the node that runs it.
        if record.state != JobState::Running || recently || record.spec.journal.is_some() {
            return;
        }
        let Ok(spec) = manager.runnable(&record) else {
            return;
        };
        let view = mirror.view();
        let spec = JobSpec {
            workers: Some(view.workers),
            ..spec
        };
        let Ok(copy_spec) = manager.copy_spec(&spec) else {
            return;
        };
        match share::joinable(&copy_spec, manager.state()).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return tracing::warn!("job {}: {e}", mirror.id),
        }
        let helper = Arc::new(Job::continued(record, spec, manager.control(&copy_spec)));
        helper.control.throttle().job.set(view.limits);
        self.helping.lock().insert(mirror.id, helper.clone());
        tracing::info!("job {}: this node helps copy its partitions", mirror.id);
        manager.spawn_run(helper, copy_spec, NodeRole::Helps);
    }

    /// A run of `job` ended: if it was a helping run, it is forgotten, and not started again:
    /// for a while if it stopped short, for good if it completed (every partition copied).
    pub(super) fn helped_out(&self, job: &Arc<Job>) {
        let mut helping = self.helping.lock();
        if helping.get(&job.id).is_some_and(|h| Arc::ptr_eq(h, job)) {
            helping.remove(&job.id);
            let again = (job.state() != JobState::Completed).then(Instant::now);
            self.helped.lock().insert(job.id, again);
        }
    }

    /// Applies the commands other nodes left for this node's jobs, and answers them.
    async fn answer_commands<M: Manager>(&self, manager: &M) -> Result<(), StateError> {
        let shared = &self.shared;
        let mine: HashSet<u64> = manager
            .list()
            .iter()
            .filter(|j| j.runs_elsewhere().is_none())
            .map(|j| j.id.0)
            .collect();
        for pending in shared.pending::<Command>().await? {
            // Its sender gave up long ago (and may have died before withdrawing it).
            if pending.age > STALE_COMMAND {
                shared.withdraw(pending.id).await?;
                continue;
            }
            if !mine.contains(&pending.job) {
                continue;
            }
            let answer = match pending.command {
                Err(e) => Answer::Refused {
                    message: format!("unknown command: {e}"),
                    conflict: false,
                },
                Ok(command) => match manager.command(JobId(pending.job), command).await {
                    Ok(_) => Answer::Done,
                    Err(e) => Answer::Refused {
                        conflict: matches!(
                            e,
                            CommandError::Conflict { .. }
                                | CommandError::NotSync(_)
                                | CommandError::RefusedElsewhere { conflict: true, .. }
                        ),
                        message: e.to_string(),
                    },
                },
            };
            shared.answer(pending.id, &answer).await?;
        }
        Ok(())
    }

    /// Carries `command` to `node`, which runs `job`, and waits for its answer; the job as that
    /// node wrote it afterwards.
    pub(super) async fn forward<M: Manager>(
        &self,
        manager: &M,
        job: Arc<Job>,
        node: String,
        command: Command,
    ) -> Result<Arc<Job>, CommandError> {
        let unanswered = |reason: String| CommandError::Unanswered {
            id: job.id,
            node: node.clone(),
            reason,
        };
        let shared = &self.shared;
        let sent = shared
            .send(job.id.0, &command)
            .await
            .map_err(|e| unanswered(e.to_string()))?;
        let asked = Instant::now();
        let answer = loop {
            match shared.answer_of::<Answer>(sent).await {
                Ok(Some(answer)) => break answer,
                Ok(None) => {}
                Err(e) => return Err(unanswered(e.to_string())),
            }
            if asked.elapsed() > COMMAND_WAIT {
                let _ = shared.withdraw(sent).await;
                return Err(unanswered(format!(
                    "no answer within {} s (it may still apply the command)",
                    COMMAND_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match answer {
            Ok(Answer::Done) => {}
            Ok(Answer::Refused { message, conflict }) => {
                return Err(CommandError::RefusedElsewhere { message, conflict })
            }
            Err(e) => return Err(unanswered(format!("unreadable answer: {e}"))),
        }
        // The node answered after writing the job: show it as it is now (unless this node took
        // the job over meanwhile: then its run is what there is to show).
        if let Ok(Some(stored)) = shared.job(job.id.0).await {
            if manager
                .get(job.id)
                .is_some_and(|j| j.runs_elsewhere().is_some())
            {
                self.mirror(manager, stored);
            }
        }
        Ok(manager.get(job.id).unwrap_or(job))
    }

    /// What this node does for each job: those it runs and those it helps with.
    fn shares<M: Manager>(&self, manager: &M, node: &str) -> Vec<(JobId, NodeShare)> {
        let running = manager
            .list()
            .into_iter()
            .filter(|j| j.runs_elsewhere().is_none() && !j.state().is_final())
            .map(|j| (j.id, j.share(node, NodeRole::Runs)));
        let helping: Vec<Arc<Job>> = self.helping.lock().values().cloned().collect();
        running
            .chain(
                helping
                    .iter()
                    .map(|j| (j.id, j.share(node, NodeRole::Helps))),
            )
            .collect()
    }

    /// Shows with each job what every live node does for it (this node's from `own`, the
    /// others' from their heartbeats).
    fn show_shares<M: Manager>(
        &self,
        manager: &M,
        me: &str,
        own: Vec<(JobId, NodeShare)>,
        nodes: &[NodeBeat<NodeShare>],
        live: &HashSet<&str>,
    ) {
        let mut by_job: HashMap<JobId, Vec<NodeShare>> = HashMap::new();
        for (id, share) in own {
            by_job.entry(id).or_default().push(share);
        }
        for node in nodes
            .iter()
            .filter(|n| n.node != me && live.contains(n.node.as_str()))
        {
            for (id, share) in &node.shares {
                by_job.entry(JobId(*id)).or_default().push(share.clone());
            }
        }
        for job in manager.list() {
            let mut shares = by_job.remove(&job.id).unwrap_or_default();
            // The node that runs the job first.
            shares.sort_by(|a, b| {
                (a.role != NodeRole::Runs, &a.node).cmp(&(b.role != NodeRole::Runs, &b.node))
            });
            // The job's limits hold for all its nodes together: each takes an equal share.
            let nodes = shares.len();
            let helper = self.helping.lock().get(&job.id).cloned();
            let runs_here = (job.runs_elsewhere().is_none()).then(|| job.clone());
            for run in runs_here.iter().chain(helper.iter()) {
                let throttle = run.control.throttle();
                let share = throttle.job.limits().divided(nodes);
                // Set only when it changes: setting a limit forgives the debt run up under it.
                if throttle.share.limits() != share {
                    throttle.share.set(share);
                }
            }
            job.set_shares(shares);
        }
    }

    /// Writes every job this node runs that changed (an active one at every beat, for its
    /// progress). A job another node took over meanwhile stops here.
    pub(super) async fn publish<M: Manager>(&self, manager: &M) {
        let shared = &self.shared;
        let _one_at_a_time = self.publishing.lock().await;
        for job in manager.list() {
            if job.runs_elsewhere().is_some() {
                continue;
            }
            let record = job.record();
            if record.state.is_final() && self.written.lock().get(&job.id) == Some(&record) {
                continue;
            }
            match shared
                .put(job.id.0, record.state.as_str(), &record, &job.view())
                .await
            {
                Ok(true) => {
                    self.written.lock().insert(job.id, record);
                }
                Ok(false) => {
                    tracing::warn!("job {}: another node runs it now; this node stops", job.id);
                    job.cancel.cancel();
                }
                Err(e) => tracing::error!("job {}: {e}", job.id),
            }
        }
    }
}

/// Continues job `id`, which node `from` ran, here from its checkpoint. A helping run of it
/// on this node goes on with its partitions; the job's run joins them.
fn run_here<M: Manager>(manager: &Arc<M>, id: JobId, from: &str) {
    let Some(mirror) = manager.get(id) else {
        return;
    };
    let mut record = mirror.record();
    record.state = JobState::Interrupted;
    record.error = Some(format!("interrupted: its node {from} is gone"));
    record.finished_at.get_or_insert(unix_now());
    let old = Arc::new(Job::restored(record));
    manager.insert(old.clone());
    manager.continue_job(old);
}

/// Whether this node can run the job of `record`: open its credentials and reach its
/// clusters.
fn can_run<M: Manager>(manager: &M, record: &JobRecord) -> Result<(), String> {
    let spec = manager.runnable(record).map_err(str::to_string)?;
    manager
        .copy_spec(&spec)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Shows job `id`, whose node `from` is gone and which this node cannot run, as interrupted
/// (its record stays as that node left it, for a node that can run it).
fn show_orphaned<M: Manager>(manager: &M, id: JobId, from: &str, why: &str) {
    let Some(mirror) = manager.get(id) else {
        return;
    };
    let mut record = mirror.record();
    if record.state.is_final() {
        return;
    }
    record.state = JobState::Interrupted;
    record.error = Some(format!(
        "interrupted: its node {from} is gone, and this node cannot run it: {why}"
    ));
    mirror.mirror(record, from.to_string(), mirror.published());
}

/// What makes two submits one job on every node: the spec as kept (its secrets and `restart`
/// left out), hashed with SHA-256.
fn spec_identity(spec: &JobSpec) -> String {
    let text = serde_json::to_string(&spec.redacted()).expect("specs serialise");
    crate::state::hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// Has a helping run follow the job it helps with: its pause, workers, rate limits, commit and
/// cancellation (a completed job's helpers end by themselves; an interrupted one's go on, and
/// one of their nodes takes the job over).
fn steer(helper: &Arc<Job>, mirror: &Arc<Job>) {
    let record = mirror.record();
    let view = mirror.view();
    match (record.state, helper.state()) {
        (JobState::Paused, JobState::Pending | JobState::Running) => {
            let _ = helper.apply(Event::Paused);
            helper.control.pause();
        }
        (JobState::Running, JobState::Paused) => {
            let started = helper.stats().is_some();
            let _ = helper.apply(Event::Resumed { started });
            helper.control.resume();
        }
        (JobState::Cancelled | JobState::Failed, _) => helper.cancel.cancel(),
        _ => {}
    }
    if helper.control.workers() != view.workers {
        helper.control.set_workers(view.workers);
    }
    let throttle = helper.control.throttle();
    if throttle.job.limits() != view.limits {
        throttle.job.set(view.limits);
    }
    if record.commit {
        helper.ask_commit();
    }
}
