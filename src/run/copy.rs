//! A copy job from start to end: connect, resolve namespaces, run the engine, summarise (and
//! for a sync job: record the source's position first, follow its changes after).
//!
//! In: a validated [`CopySpec`] and the [`StateStore`] holding checkpoints and dead letters. Out:
//! a [`CopySummary`] (what was copied, skipped, refused, how fast), or the first error with the
//! checkpoint saved. The command line and the service both run jobs through here, so there is
//! one engine and one set of rules.
//!
//! A job is identified across runs by its [`JobKey`] (servers without credentials, namespaces,
//! filter, transform). Its checkpoint, if any, makes a run continue after each namespace's watermark; a
//! finished job run again does nothing and says so, unless the spec asks to restart.

use std::collections::HashMap;
use std::sync::Arc;

use mongodb::bson::{doc, Document};
use mongodb::Client;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::digest::{DbHash, RangeDigest};
use super::guard;
use super::moving;
use super::overlap;
use super::reconcile::Reconciling;
use super::schema::{self, SchemaWork, Selection};
use super::share;
use super::sync::{self, Follower, Until};
use super::verifier::{Sides, Verifier};
use super::verify::{verify_all, Comparison, VerifyReport};
use crate::engine::budget::Budget;
use crate::engine::changes::{ChunkLimits, CHUNK_WAIT};
use crate::engine::control::throttle::Throttle;
use crate::engine::partition::{self, Partition};
use crate::engine::sink::{Journaled, Transforming, MAX_DOCUMENT_BYTES};
use crate::engine::source::mongo::FETCHES_AT_ONCE;
use crate::engine::stats::{
    HistoryLost, JobStats, MoveProgress, NsCounters, NsSnapshot, ReconcileProgress, SchemaProgress,
    SyncPhase, SyncProgress,
};
use crate::engine::transform::{HmacKey, Steps};
use crate::engine::{
    Adaptive, Control, CopyError, Engine, Ledger, MongoSink, MongoSource, NsTask, Settle, Sink,
    Source, Strategy,
};
use crate::journal::writer::{JournalSender, JournalWriter, SegmentWriter};
use crate::journal::{JournalConfig, JournalSummary};
use crate::mongo::retry::{Retry, RetryPolicy};
use crate::mongo::schema::Schema;
use crate::mongo::{self, describe, MongoError, Namespace, Side};
use crate::spec::{CopySpec, IndexMode, Mode, OnHistoryLost, Routes, TransformRules, VerifyMode};
use crate::state::{Checkpoint, JobClaim, JobKey, StateStore, SyncCheckpoint};

/// A job that is connected and knows exactly which namespaces it copies.
pub struct PreparedCopy {
    /// What the job asks for.
    spec: CopySpec,
    clients: Clients,
    /// The engine's parts, shared by every run of the engine the job makes.
    source: Arc<dyn Source>,
    /// The destination, wrapped in the journal's layer once the run starts ([`sink_stack`]).
    sink: Arc<dyn Sink>,
    /// A move's step after each stored batch, set once the run starts.
    settle: Option<Arc<dyn Settle>>,
    tasks: Vec<Arc<NsTask>>,
    stats: Arc<JobStats>,
    control: Arc<Control>,
    adaptive: Option<Arc<Adaptive>>,
    ledger: Arc<Ledger>,
    /// Shared by the source and the sink; stopped when the job is cancelled.
    retry: Retry,
    /// The journal, opened (and locked) but not yet written.
    journal: Option<SegmentWriter>,
    /// What the job copies, and what the destination held of it when the job started.
    selection: Selection,
    existing: Vec<Option<Schema>>,
    /// The run continues an earlier one's checkpoint.
    resumed: bool,
    sharing: Sharing,
    /// Asks a sync for its cutover.
    commit: CancellationToken,
    until: Until,
    /// How a reconcile compares ranges by digest first (`dbHash` where the servers have it).
    digests: Arc<dyn RangeDigest>,
    /// Each destination namespace's transform steps (none: written as read).
    transforms: HashMap<Namespace, Arc<Steps>>,
}

struct Clients {
    source: Client,
    destination: Client,
}

impl Clients {
    /// Every task is joined when this is called, so these are the last handles of the clients.
    async fn close(self) {
        mongo::close(self.source).await;
        mongo::close(self.destination).await;
    }
}

/// This run's part in a job that several processes may share.
struct Sharing {
    /// This run's hold on its job in the state store, for as long as it runs (until its layout
    /// is published, for the run that plans a shared job; none for a run that joins one).
    claim: Option<JobClaim>,
    /// This run planned a shared job: its layout is published once the destination is ready.
    publish: bool,
    /// A run that helps another process with a shared job: it ends once the partitions are
    /// copied, leaving the rest (indexes after, a sync's following, verify) to the job's run.
    partitions_only: bool,
}

/// What a finished copy did, as printed by `copy` (and `copy --json`).
#[derive(Debug, Clone, Serialize)]
pub struct CopySummary {
    pub from: String,
    pub to: String,
    pub strategy: Strategy,
    pub workers: usize,
    pub batch_size: usize,
    pub namespaces: Vec<NsSummary>,
    pub docs: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub docs_per_sec: f64,
    /// Documents earlier runs of the job had already written (not read again).
    pub skipped: u64,
    /// Documents the destination refused, kept as dead letters.
    pub failed: u64,
    /// Transient errors retried.
    pub retries: u64,
    /// The run continued from a checkpoint.
    pub resumed: bool,
    /// Nothing was left to do: an earlier run finished the job.
    pub already_complete: bool,
    /// The job's partitions were shared with other processes (through the state store):
    /// `docs` is what this one copied, `skipped` what the others (and earlier runs) did.
    pub shared: bool,
    pub job_key: JobKey,
    /// Where the checkpoint and the dead letters are kept.
    pub state: String,
    pub dead_letters: String,
    /// The comparison after the copy, when the job asked for one.
    pub verify: Option<VerifyReport>,
    /// Where a sync ended (`None` for a copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncProgress>,
    /// What a move deleted from its source, and kept there (`None` for a copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moves: Option<MoveProgress>,
    /// What a reconcile compared, wrote and deleted (`None` for a copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileProgress>,
    /// Peak resident memory of this process, where the OS tells it.
    pub peak_rss_bytes: Option<u64>,
    /// What this copy added to its journal, when it kept one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalSummary>,
    /// What the copy did to the destination's schema: dropped, created, indexes, views.
    pub schema: SchemaProgress,
}

#[derive(Debug, Clone, Serialize)]
pub struct NsSummary {
    pub source: Namespace,
    pub destination: Namespace,
    pub docs: u64,
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
    /// The `_id` ranges the namespace was read in (0: read whole).
    #[serde(skip_serializing_if = "is_zero")]
    pub partitions: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl From<&NsSnapshot> for NsSummary {
    fn from(n: &NsSnapshot) -> Self {
        NsSummary {
            source: n.source.clone(),
            destination: n.destination.clone(),
            docs: n.docs,
            skipped: n.skipped,
            failed: n.failed,
            bytes: n.bytes,
            partitions: n.partitions.len(),
        }
    }
}

/// Fails as the copy would, with nothing yet written, when the source refuses `filter`
/// (`{"$bogus": 1}`). The server parses a filter before it reads, and the filter is the same
/// for every namespace: asking one collection for one document is enough.
async fn check_filter(
    source: &Client,
    selection: &Selection,
    filter: &Document,
) -> Result<(), CopyError> {
    let Some(first) = selection.collections.first() else {
        return Ok(());
    };
    let ns = &first.source;
    let found = async {
        let mut cursor = source
            .database(&ns.db)
            .collection::<mongodb::bson::RawDocumentBuf>(&ns.coll)
            .find(filter.clone())
            .limit(1)
            .await?;
        cursor.advance().await
    };
    match found.await {
        Ok(_) => Ok(()),
        Err(e) if mongo::is_bad_query(&e) => Err(MongoError::BadFilter {
            ns: ns.clone(),
            reason: describe(&e),
        }
        .into()),
        Err(e) => Err(MongoError::Command {
            side: Side::Source,
            ns: ns.clone(),
            op: "find",
            reason: describe(&e),
        }
        .into()),
    }
}

/// Connects to both clusters, resolves the namespaces and loads the job's checkpoint from
/// `store`; nothing is written yet.
pub async fn prepare(
    spec: &CopySpec,
    store: Arc<dyn StateStore>,
) -> Result<PreparedCopy, CopyError> {
    // Workers, the readers and the counter each hold at most one connection; a worker of the
    // `ids` strategy fetches several parts of its batch at once.
    let per_worker = match spec.strategy {
        Strategy::Ids => FETCHES_AT_ONCE as u32,
        Strategy::Stream => 1,
    };
    let pool = spec.workers as u32 * per_worker + spec.readers as u32 + 1;
    let (source, destination) =
        mongo::connect_both(&spec.from, &spec.to, pool, spec.connect_timeout).await?;
    let clients = Clients {
        source,
        destination,
    };
    let refused = guard::problems(
        &spec.guard,
        (&clients.source, &clients.destination),
        spec.mode,
    )
    .await;
    if !refused.is_empty() {
        clients.close().await;
        return Err(CopyError::Refused(refused));
    }
    let (selection, existing) = match select(spec, &store, &clients).await {
        Ok(found) => found,
        Err(e) => {
            clients.close().await;
            return Err(e);
        }
    };
    let transforms = match transforms(spec, &selection.pairs()) {
        Ok(transforms) => transforms,
        Err(e) => {
            clients.close().await;
            return Err(e);
        }
    };
    let stats = Arc::new(JobStats::new(selection.pairs(), spec.workers));
    let transformed = !transforms.is_empty();
    let opened = match open_job(spec, &store, &stats, &clients, transformed).await {
        Ok(opened) => opened,
        Err(e) => {
            clients.close().await;
            return Err(e);
        }
    };
    let retry = Retry::new(RetryPolicy::default(), stats.retry.clone());
    let max_document_bytes = spec
        .max_document_bytes
        .map_or(opened.server_limit, |limit| limit.min(opened.server_limit));
    let source = MongoSource::new(clients.source.clone(), spec.filter.clone(), spec.strategy)
        .with_retry(retry.clone())
        .without_index_hint(selection.time_series());
    let destination = MongoSink::new(clients.destination.clone())
        .with_retry(retry.clone())
        .with_max_document_bytes(max_document_bytes)
        .past_validators(selection.validated());
    // A move deletes from the source what the destination acknowledged: only an
    // acknowledgement no rollback can undo will do, whatever the URI asks for.
    let destination = match spec.mode {
        Mode::Move => destination.durable(),
        Mode::Copy | Mode::Sync | Mode::Reconcile => destination,
    };
    let mut ledger = Ledger::new(store, opened.key, opened.description);
    if let Some(layout) = opened.shared {
        ledger = ledger.shared(layout);
    }
    if let Some(sync) = opened.sync {
        ledger.set_sync_position(sync);
    }
    Ok(PreparedCopy {
        spec: spec.clone(),
        clients,
        source: Arc::new(source),
        sink: Arc::new(destination),
        settle: None,
        tasks: opened.tasks,
        stats,
        control: Arc::new(
            Control::with_throttle(spec.workers, Throttle::new(spec.limits))
                .with_guard(spec.guard.clone()),
        ),
        adaptive: spec.adaptive.map(|c| Arc::new(Adaptive::new(c))),
        ledger: Arc::new(ledger),
        retry,
        journal: opened.journal,
        selection,
        existing,
        resumed: opened.resumed,
        sharing: Sharing {
            claim: opened.claim,
            publish: opened.publish,
            partitions_only: false,
        },
        commit: CancellationToken::new(),
        until: Until::Committed,
        digests: Arc::new(DbHash),
        transforms,
    })
}

/// What the job copies, and what the destination holds of it; refused here, with nothing
/// written, when the job cannot be run as asked.
async fn select(
    spec: &CopySpec,
    store: &Arc<dyn StateStore>,
    clients: &Clients,
) -> Result<(Selection, Vec<Option<Schema>>), CopyError> {
    let Clients {
        source,
        destination,
    } = clients;
    let selection = schema::select(source, &spec.namespaces, &spec.exclude).await?;
    if let Some(filter) = &spec.filter {
        check_filter(source, &selection, filter).await?;
    }
    overlap::check(spec, &selection, source, destination, store.database()).await?;
    super::cutover::check(spec, source, destination)
        .await
        .map_err(|e| CopyError::CannotCommit(e.to_string()))?;
    let existing = schema::destination(destination, &selection).await?;
    if spec.mode == Mode::Move && !spec.keep_source {
        let unmovable = schema::unmovable(&selection);
        if !unmovable.is_empty() {
            return Err(CopyError::Schema(format!(
                "nothing was written: {}",
                unmovable.join("; ")
            )));
        }
    }
    if spec.mode == Mode::Reconcile {
        let conflicts = schema::fixed_conflicts(&selection, &existing);
        if !conflicts.is_empty() {
            return Err(CopyError::Schema(format!(
                "nothing was written: {}; a reconcile changes a collection in place, so copy \
                 with --drop to replace it",
                conflicts.join("; ")
            )));
        }
        return Ok((selection, existing));
    }
    let conflicts = schema::conflicts(&selection, &existing);
    if !conflicts.is_empty() && !spec.drop {
        return Err(CopyError::Schema(format!(
            "the destination differs from the source (nothing was written): {}; copy with \
             --drop to replace it",
            conflicts.join("; ")
        )));
    }
    Ok((selection, existing))
}

/// The job as the state store knows it, held for this run.
struct OpenedJob {
    key: JobKey,
    description: String,
    claim: Option<JobClaim>,
    /// This run plans a shared job and publishes its layout.
    publish: bool,
    /// The shared job's layout id, joined or planned.
    shared: Option<String>,
    tasks: Vec<Arc<NsTask>>,
    resumed: bool,
    /// The destination's largest document.
    server_limit: usize,
    journal: Option<SegmentWriter>,
    sync: Option<SyncCheckpoint>,
}

/// Holds the job (or joins its shared layout), reads its checkpoint and lays out its tasks;
/// opens the journal last, so that a copy that cannot start leaves no run in the journal.
async fn open_job(
    spec: &CopySpec,
    store: &Arc<dyn StateStore>,
    stats: &JobStats,
    clients: &Clients,
    transformed: bool,
) -> Result<OpenedJob, CopyError> {
    let (key, description) = spec.job_key();
    // Before the checkpoint is read: a second run of the job would move it back and forth.
    let (mut claim, checkpoint) = share::hold_or_join(spec, &key, store).await?;
    // A reconcile compares again each time it runs: only an unfinished one is continued.
    let checkpoint = checkpoint.filter(|c| !(spec.mode == Mode::Reconcile && c.complete));
    let sync = checkpoint.as_ref().and_then(|c| c.sync.clone());
    let layout = Layout {
        source: &clients.source,
        filter: spec.filter.as_ref(),
        partition_docs: spec.partition_docs,
    };
    let (tasks, mut resumed) = layout.tasks(stats, checkpoint.as_ref(), store).await?;
    // A shared job: joined as it stands, or planned here and published for others to join.
    let mut shared = checkpoint.as_ref().and_then(|c| c.shared.clone());
    let mut publish = false;
    if shared.is_some() {
        claim = None;
        // Other processes may have written: never drop what they did.
        resumed = true;
    } else if claim.is_some()
        && share::shareable(spec, store)
        && tasks.iter().any(|t| t.part.is_some())
    {
        shared = Some(format!("{:016x}", fastrand::u64(..)));
        publish = true;
    }
    let server_limit = max_document_bytes(&clients.destination).await;
    let journal = match &spec.journal {
        None => None,
        Some(config) => {
            // The journal records what was written: the transform's output (where a pattern
            // matched a namespace of the job), said so.
            let transform = spec.transform.as_ref().filter(|_| transformed);
            let config = JournalConfig {
                transform: transform.map(|t| t.identity(spec.transform_key.as_ref())),
                ..config.clone()
            };
            Some(JournalWriter::open(config).await?)
        }
    };
    Ok(OpenedJob {
        key,
        description,
        claim,
        publish,
        shared,
        tasks,
        resumed,
        server_limit,
        journal,
        sync,
    })
}

impl PreparedCopy {
    /// Live counters, for a progress display while [`run`](Self::run) works.
    pub fn stats(&self) -> Arc<JobStats> {
        self.stats.clone()
    }

    /// Runs under `control` (e.g. a job's, which the API changes) instead of its own.
    pub fn with_control(mut self, control: Arc<Control>) -> Self {
        self.control = control;
        self
    }

    /// Live controls: pause, resume, worker count.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&Namespace, &Namespace)> {
        self.tasks.iter().map(|t| (&t.source, &t.destination))
    }

    /// A sync job: the cutover is asked for by cancelling this token (`POST …/commit`).
    pub fn with_commit(mut self, commit: CancellationToken) -> Self {
        self.commit = commit;
        self
    }

    /// A run that only helps copy the partitions of a shared job that another process runs: it
    /// ends once every partition is copied (a service node helping another node's job).
    pub fn partitions_only(mut self) -> Self {
        self.sharing.partitions_only = true;
        self
    }

    /// A reconcile compares ranges by `digests` before it reads them (instead of `dbHash`).
    pub fn with_digests(mut self, digests: Arc<dyn RangeDigest>) -> Self {
        self.digests = digests;
        self
    }

    /// A sync job ends the first time it is level with the source (`--until-caught-up`).
    pub fn until_caught_up(mut self) -> Self {
        self.until = Until::CaughtUp;
        self
    }

    pub fn mode(&self) -> Mode {
        self.spec.mode
    }

    /// The job's partitions are shared with other processes.
    pub fn shared(&self) -> bool {
        self.ledger.is_shared()
    }

    /// The run continues from an earlier run's checkpoint.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The adaptive mode's state, when the job asked for it.
    pub fn adaptive(&self) -> Option<Arc<Adaptive>> {
        self.adaptive.clone()
    }

    /// Runs the job to its end: the documents by the driver of its mode, then the verify it
    /// asked for; whatever the outcome, the journal is closed and the clients too.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<CopySummary, CopyError> {
        // A shared job: what the other processes did so far counts, and may finish it.
        if let Err(e) = self.ledger.refresh(&self.tasks).await {
            self.clients.close().await;
            return Err(e);
        }
        // A job of views alone has no documents to have copied before.
        let already_complete = !self.tasks.is_empty() && self.tasks.iter().all(|t| t.is_finished());
        // As the run starts: a sync's follower takes the whole job over at the end.
        let shared = self.ledger.is_shared();
        let journal = self.journal.take().map(JournalWriter::start);
        let journal_sender = journal.as_ref().map(|j| j.sender());
        self.sink = sink_stack(self.sink.clone(), journal_sender.clone(), &self.transforms);
        if self.spec.mode == Mode::Move {
            self.settle = Some(self.delete_from_source(journal_sender));
        }
        // Held until the run ends, unless it is given up for a shared job's layout.
        let mut claim = self.sharing.claim.take();
        // The job stops on the operator's word, or the load guard's on a critical load.
        let halt = cancel.child_token();
        let (guard, watching) = self.watch_load(&halt);
        let documents = self.documents(&mut claim, already_complete, &halt);
        let outcome = self.retry.stopping_on(&halt, documents).await;
        // The verify step runs on the same clients, once everything is written.
        let verified = match &outcome {
            Ok(()) => self.verify(&halt).await,
            Err(_) => None,
        };
        watching.cancel();
        let critical = guard.await.unwrap_or_else(|e| {
            tracing::warn!("the load guard failed: {e}");
            None
        });
        // An operator's stop is a stop, whatever error it cut short; the guard's says why.
        let outcome = match (critical, outcome) {
            (Some(critical), _) => Err(CopyError::CriticalLoad(critical)),
            (None, Err(_)) if halt.is_cancelled() => Err(CopyError::Stopped),
            (None, other) => other,
        };
        // Whatever the outcome, what was acknowledged is written out and the journal closed.
        let journal = match journal {
            None => Ok(None),
            Some(journal) => journal.finish().await.map(Some),
        };
        if let (Err(copy), Err(journal)) = (&outcome, &journal) {
            // The copy's own error is the one reported; this one may say more about the journal.
            tracing::warn!("{journal} (the copy failed: {copy})");
        }
        let summary = (|| {
            outcome?;
            let journal = journal?;
            let verified = verified.transpose()?;
            Ok(self.summary(already_complete, shared, verified, journal))
        })();
        drop(claim);
        self.clients.close().await;
        summary
    }

    /// The load guard at work until `watching` is cancelled; it cancels `halt` on a critical
    /// load and its task returns why.
    fn watch_load(
        &self,
        halt: &CancellationToken,
    ) -> (JoinHandle<Option<String>>, CancellationToken) {
        let watching = CancellationToken::new();
        self.control.guard().hold_until_first_decision();
        let watch = guard::Watch {
            guard: self.control.guard().clone(),
            source: self.clients.source.clone(),
            destination: self.clients.destination.clone(),
            mode: self.spec.mode,
            ledger: self.ledger.clone(),
            stats: self.stats.clone(),
        };
        let task = tokio::spawn(watch.run(watching.clone(), halt.clone()));
        (task, watching)
    }

    /// The documents, by the driver of the job's mode: the schema before them, the engine over
    /// the tasks (alone, or shared with other processes), a move's later passes, the schema
    /// after them, and a sync's following of the source.
    async fn documents(
        &self,
        claim: &mut Option<JobClaim>,
        already_complete: bool,
        cancel: &CancellationToken,
    ) -> Result<(), CopyError> {
        let mode = self.spec.mode;
        let (src, dst) = (&self.clients.source, &self.clients.destination);
        if mode == Mode::Sync {
            sync::begin(
                src,
                &self.spec,
                &self.ledger,
                &self.tasks,
                self.sharing.publish,
            )
            .await?;
            self.stats.sync.set_phase(SyncPhase::InitialCopy);
            self.stats
                .sync
                .set_commit_max_lag(self.spec.commit_max_lag_secs);
        }
        // A run continuing a checkpoint does not drop what the first run wrote.
        let drop = self.spec.drop && !self.resumed;
        if drop && mode == Mode::Move {
            moving::refuse_dropping_documents(dst, &self.selection, &self.existing).await?;
        }
        let work = SchemaWork {
            destination: dst,
            selection: &self.selection,
            log: &self.stats.schema,
            control: &self.control,
            cancel,
        };
        // A reconcile, or a sync that was reconciling when its last run stopped.
        let reconciling =
            mode == Mode::Reconcile || self.ledger.sync_position().is_some_and(|s| s.reconciling);
        let indexes = self.spec.indexes != IndexMode::None;
        if mode == Mode::Reconcile {
            work.make_equal(&self.selection.collections, indexes)
                .await?;
        } else {
            let indexes_first = self.spec.indexes == IndexMode::Before;
            work.before_documents(&self.existing, drop, indexes_first)
                .await?;
        }
        if self.sharing.publish {
            // The destination is ready: other processes may join from here on.
            self.ledger
                .save(&self.ledger.checkpoint(&self.tasks))
                .await?;
            claim.take();
        }
        let source = match reconciling {
            // A sync reconciles to make the destination equal: what the source lacks goes.
            true => self.reconciling(mode == Mode::Sync || self.spec.delete_extra),
            false => self.source.clone(),
        };
        if reconciling && mode == Mode::Sync {
            self.lost_history("found by an earlier run, whose reconcile this run finishes".into());
        }
        if reconciling {
            self.begin_reconcile(mode == Mode::Sync || self.spec.delete_extra);
        }
        let engine = |tasks| self.engine_with(source.clone(), tasks);
        if self.ledger.is_shared() {
            share::copy_partitions(&self.ledger, &self.tasks, &engine, cancel).await?;
            if self.sharing.partitions_only {
                return Ok(());
            }
            if mode == Mode::Sync {
                // Following the source is one process's: the first to hold the job.
                match share::take_over_following(&self.ledger, cancel).await? {
                    Some(held) => *claim = Some(held),
                    None => return Ok(()),
                }
            }
        } else {
            engine(self.tasks.clone()).run(cancel.clone()).await?;
        }
        if reconciling {
            self.reconciled();
        }
        if mode == Mode::Move && !self.spec.keep_source {
            let passes = moving::Passes {
                source: src,
                selection: &self.selection,
                filter: self.spec.filter.as_ref(),
                stats: &self.stats,
            };
            passes.run(&engine, cancel, already_complete).await?;
        }
        if mode == Mode::Reconcile {
            work.make_equal(&self.selection.views, false).await?;
        } else {
            work.after_documents(self.spec.indexes == IndexMode::After)
                .await?;
        }
        if mode == Mode::Sync {
            self.follow(cancel).await?;
        }
        Ok(())
    }

    /// A sync's following of the source, from its saved position; with `on_history_lost:
    /// reconcile`, a position gone from the source's history is recovered from
    /// ([`PreparedCopy::recover`]) and the following goes on from the new one.
    async fn follow(&self, cancel: &CancellationToken) -> Result<(), CopyError> {
        let mut tasks = self.tasks.clone();
        loop {
            let follower = self.follower()?;
            let engine = self.engine_with(self.source.clone(), tasks.clone());
            match sync::follow(follower, engine, cancel.clone()).await {
                Err(CopyError::HistoryLost(reason))
                    if self.spec.on_history_lost == OnHistoryLost::Reconcile =>
                {
                    tasks = self.recover(reason, cancel).await?;
                }
                other => return other,
            }
        }
    }

    /// The sync's position is gone from the source's history: a new position is taken first,
    /// then every namespace is reconciled (what differs written, what the source lacks deleted),
    /// so that following from the new position converges as after the initial copy: changes
    /// made meanwhile are applied after, as states by `_id`. Returns the reconcile's tasks.
    async fn recover(
        &self,
        reason: String,
        cancel: &CancellationToken,
    ) -> Result<Vec<Arc<NsTask>>, CopyError> {
        tracing::warn!(
            "history lost: the sync's position is gone from the source's history ({reason}); \
             reconciling every namespace from a new position"
        );
        self.lost_history(reason);
        let routes = Routes::new(&self.spec.namespaces, &self.spec.exclude);
        let mut position = sync::start_here(&self.clients.source, &routes).await?;
        position.reconciling = true;
        // The verification starts again with the new position: what it had proven is stale.
        self.ledger.forget_verification();
        self.ledger.set_sync_position(position);
        for counters in &self.stats.namespaces {
            counters.reopen();
        }
        let tasks = NsTask::for_stats(&self.stats);
        self.ledger.save(&self.ledger.checkpoint(&tasks)).await?;
        self.begin_reconcile(true);
        self.engine_with(self.reconciling(true), tasks.clone())
            .run(cancel.clone())
            .await?;
        self.reconciled();
        Ok(tasks)
    }

    /// The sync's views say that its position was lost (`reason`), and that it reconciles.
    fn lost_history(&self, reason: String) {
        self.stats.sync.set_history_lost(HistoryLost {
            at: crate::state::unix_now(),
            reason,
            recovered: false,
        });
        self.stats.sync.set_phase(SyncPhase::Reconciling);
    }

    /// A reconcile's engine run starts: its counts from here on.
    fn begin_reconcile(&self, delete_extra: bool) {
        let (written, deleted, _) = self.stats.written_deleted_equal();
        self.stats.reconcile.begin(delete_extra, (written, deleted));
    }

    /// A reconcile's engine run is over: its counts are final; a sync's says so in its position
    /// and its log, and follows from the new position next.
    fn reconciled(&self) {
        let (written, deleted, _) = self.stats.written_deleted_equal();
        self.stats.reconcile.end((written, deleted));
        let Some(mut position) = self.ledger.sync_position().filter(|s| s.reconciling) else {
            return;
        };
        position.reconciling = false;
        self.ledger.set_sync_position(position);
        let done = self.stats.snapshot().reconcile.unwrap_or_default();
        tracing::info!(
            "history lost: reconciled every namespace ({} compared, {} written, {} deleted, {} \
             equal); following the source from the new position",
            done.compared,
            done.written,
            done.deleted,
            done.equal
        );
        self.stats.sync.recovered();
    }

    /// The job's source as a reconcile reads it: both sides compared, only what differs
    /// queued; extras deleted with `delete_extra`.
    fn reconciling(&self, delete_extra: bool) -> Arc<dyn Source> {
        Arc::new(Reconciling {
            source: self.source.clone(),
            source_client: self.clients.source.clone(),
            destination: self.clients.destination.clone(),
            filter: self.spec.filter.clone(),
            unhinted: self.selection.time_series(),
            delete_extra,
            stats: self.stats.clone(),
            throttle: self.control.throttle().clone(),
            digests: self.digests.clone(),
            transforms: self.transforms.clone(),
        })
    }

    /// The engine over `tasks`, reading `source`, with the job's other parts.
    fn engine_with(&self, source: Arc<dyn Source>, tasks: Vec<Arc<NsTask>>) -> Engine {
        Engine::new(source, self.sink.clone(), self.stats.clone())
            .with_tasks(tasks)
            .with_batch_size(self.spec.batch_size)
            .with_readers(self.spec.readers)
            .with_memory_limit(self.spec.memory_limit)
            .with_control(self.control.clone())
            .with_ledger(self.ledger.clone())
            .with_adaptive(self.adaptive.clone())
            .with_settle(self.settle.clone())
    }

    /// A move's step after each stored batch: read back, then deleted from the source.
    fn delete_from_source(&self, journal: Option<JournalSender>) -> Arc<dyn Settle> {
        moving::DeleteFromSource {
            source: self.clients.source.clone(),
            destination: self.clients.destination.clone(),
            keep_source: self.spec.keep_source,
            throttle: self.control.throttle().clone(),
            stats: self.stats.moves.clone(),
            journal,
            transforms: self.transforms.clone(),
        }
        .first_pass()
    }

    /// A sync's following of the source, once its documents are copied, and its verifier.
    fn follower(&self) -> Result<Follower, CopyError> {
        let budget = Budget::new(self.spec.memory_limit, self.control.workers());
        Ok(Follower {
            source_client: self.clients.source.clone(),
            destination: self.clients.destination.clone(),
            routes: Routes::new(&self.spec.namespaces, &self.spec.exclude),
            source: self.source.clone(),
            stats: self.stats.clone(),
            ledger: self.ledger.clone(),
            limits: ChunkLimits {
                changes: self.spec.batch_size * self.control.workers().max(1),
                bytes: budget.pipeline_bytes,
                wait: CHUNK_WAIT,
            },
            commit: self.commit.clone(),
            until: self.until,
            refresh: self.spec.filter.is_some(),
            transformed: !self.transforms.is_empty(),
            batch_size: self.spec.batch_size,
            verifier: self.verifier()?,
            commit_watch: self.spec.commit_watch,
            block_writes: self.spec.block_writes,
            uris: (self.spec.from.clone(), self.spec.to.clone()),
            guard: self.control.guard().clone(),
        })
    }

    /// The sync's continuous verification, going on from the checkpoint's (`None`: off); each
    /// checkpoint saves its state from now on.
    fn verifier(&self) -> Result<Option<Arc<Verifier>>, CopyError> {
        if self.spec.verify == VerifyMode::Off {
            return Ok(None);
        }
        let sides = Sides {
            source: self.clients.source.clone(),
            destination: self.clients.destination.clone(),
            filter: self.spec.filter.clone(),
            unhinted: self.selection.time_series(),
            control: self.control.clone(),
            stats: self.stats.clone(),
            store: self.ledger.store().clone(),
            job: self.ledger.key().clone(),
            transforms: self.transforms.clone(),
        };
        let saved = self.ledger.sync_position().and_then(|s| s.verification);
        let pairs = self
            .tasks
            .iter()
            .map(|t| (t.source.clone(), t.destination.clone()));
        let repairs = self.spec.verify == VerifyMode::Repair;
        let verifier = Arc::new(Verifier::new(sides, repairs, pairs, saved)?);
        self.ledger.record_verification(verifier.clone());
        Ok(Some(verifier))
    }

    /// The comparison the job asked for, on its own clients (`None`: not asked, or a helping
    /// run, which leaves it to the job's run).
    async fn verify(&self, cancel: &CancellationToken) -> Option<Result<VerifyReport, CopyError>> {
        // A sync verifies while it follows the source, and proves equality at its commit.
        let after = self.spec.verify != VerifyMode::Off && self.spec.mode != Mode::Sync;
        if !after || self.sharing.partitions_only {
            return None;
        }
        let compared = Comparison {
            selection: &self.selection,
            filter: self.spec.filter.as_ref(),
            show: 10,
            schema: Some(self.spec.indexes != IndexMode::None),
            transforms: &self.transforms,
        };
        let (src, dst) = (&self.clients.source, &self.clients.destination);
        Some(verify_all(src, dst, &compared, cancel).await)
    }

    fn summary(
        &self,
        already_complete: bool,
        shared: bool,
        verify: Option<VerifyReport>,
        journal: Option<JournalSummary>,
    ) -> CopySummary {
        let snap = self.stats.snapshot();
        CopySummary {
            docs_per_sec: snap.average_docs_per_sec(),
            from: mongo::redact_uri(&self.spec.from),
            to: mongo::redact_uri(&self.spec.to),
            strategy: self.spec.strategy,
            workers: self.control.workers(),
            batch_size: self.spec.batch_size,
            namespaces: snap.namespaces.iter().map(NsSummary::from).collect(),
            skipped: snap.skipped,
            failed: snap.failed,
            retries: snap.retries,
            resumed: self.resumed,
            // A rerun that found work left (a move's documents) was not complete after all.
            already_complete: already_complete && snap.docs == 0,
            shared,
            job_key: self.ledger.key().clone(),
            state: self.ledger.store().location(),
            dead_letters: self.ledger.store().dead_letter_location(),
            verify,
            sync: snap.sync,
            moves: snap.moves,
            reconcile: snap.reconcile,
            docs: snap.docs,
            bytes: snap.bytes,
            seconds: snap.seconds,
            peak_rss_bytes: peak_rss_bytes(),
            journal,
            schema: snap.schema,
        }
    }
}

/// The sink stack every document goes through, from the engine's workers to the destination:
///
/// 1. the transform, where a pattern matches the namespace: outside the journal, so that the
///    journal records what was written;
/// 2. the journal, when the job keeps one: it sees every batch the destination acknowledged,
///    and checkpoints wait for it to be durable;
/// 3. the destination.
///
/// A sink writes to the destination only: a move's deletes at the source are its driver's
/// ([`moving`]), after the stack stored a batch.
pub fn sink_stack(
    destination: Arc<dyn Sink>,
    journal: Option<JournalSender>,
    transforms: &HashMap<Namespace, Arc<Steps>>,
) -> Arc<dyn Sink> {
    let journaled: Arc<dyn Sink> = match journal {
        Some(journal) => Arc::new(Journaled::new(destination, journal)),
        None => destination,
    };
    match transforms.is_empty() {
        true => journaled,
        false => Arc::new(Transforming::new(journaled, transforms.clone())),
    }
}

/// The steps of each destination namespace of `pairs` whose source a pattern of the job's
/// transform matches; refused when `hmac` steps have no key.
pub fn transforms(
    spec: &CopySpec,
    pairs: &[(Namespace, Namespace)],
) -> Result<HashMap<Namespace, Arc<Steps>>, CopyError> {
    steps_by_destination(spec.transform.as_ref(), spec.transform_key.as_ref(), pairs)
}

/// The steps of `rules` for each destination of `pairs`, by their source namespace.
pub fn steps_by_destination(
    rules: Option<&TransformRules>,
    key: Option<&HmacKey>,
    pairs: &[(Namespace, Namespace)],
) -> Result<HashMap<Namespace, Arc<Steps>>, CopyError> {
    let Some(rules) = rules else {
        return Ok(HashMap::new());
    };
    let mut by_destination = HashMap::new();
    for (source, destination) in pairs {
        let steps = rules.steps_for(source);
        if steps.is_empty() {
            continue;
        }
        let steps = Steps::new(steps, key.cloned())
            .map_err(|e| CopyError::Refused(vec![format!("transform of {source}: {e}")]))?;
        by_destination.insert(destination.clone(), steps);
    }
    Ok(by_destination)
}

/// How a job's namespaces are read: each whole, or in partitions.
struct Layout<'a> {
    source: &'a Client,
    filter: Option<&'a Document>,
    /// Namespaces of more documents are split into partitions of about this many.
    partition_docs: Option<u64>,
}

impl Layout<'_> {
    /// The tasks of every namespace, continuing from `checkpoint` where it has an entry (the
    /// partitions it names, or the whole namespace), else new; `true` if any continues.
    async fn tasks(
        &self,
        stats: &JobStats,
        checkpoint: Option<&Checkpoint>,
        store: &Arc<dyn StateStore>,
    ) -> Result<(Vec<Arc<NsTask>>, bool), CopyError> {
        let mut resumed = false;
        let mut tasks = Vec::new();
        for counters in &stats.namespaces {
            let key = format!("{} -> {}", counters.source, counters.destination);
            let kept: Vec<_> = checkpoint
                .into_iter()
                .flat_map(|c| &c.namespaces)
                .filter(|(k, _)| **k == key || Partition::is_key_of(k, &key))
                .collect();
            if kept.is_empty() {
                tasks.extend(self.split(counters).await?.into_iter().map(Arc::new));
                continue;
            }
            for (key, from) in kept {
                let task = NsTask::resuming(counters.clone(), Some(from)).map_err(|reason| {
                    CopyError::from(crate::state::StateError::Corrupt {
                        path: store.location().into(),
                        reason: format!("checkpoint of {key}: {reason}"),
                    })
                })?;
                // A partition's watermark starts at its lower bound: only what was written
                // counts as continuing.
                resumed |= from.done > 0 || from.complete;
                tasks.push(Arc::new(task));
            }
        }
        Ok((tasks, resumed))
    }

    /// A new namespace's tasks: one, or its partitions when it holds more than a partition's
    /// documents. A namespace that cannot be split (its count or sample fails) is read whole.
    async fn split(&self, counters: &Arc<NsCounters>) -> Result<Vec<NsTask>, CopyError> {
        let whole = || Ok(vec![NsTask::new(counters.clone())]);
        let Some(target) = self.partition_docs else {
            return whole();
        };
        let ns = &counters.source;
        let collection = self
            .source
            .database(&ns.db)
            .collection::<Document>(&ns.coll);
        let counted = match self.filter {
            None => collection.estimated_document_count().await,
            Some(filter) => collection.count_documents(filter.clone()).await,
        };
        let docs = match counted {
            Ok(docs) => docs,
            Err(e) => {
                tracing::warn!("{ns}: cannot count, read whole: {}", describe(&e));
                return whole();
            }
        };
        counters.set_expected(docs);
        let parts = partition::parts_for(docs, target);
        if parts <= 1 {
            return whole();
        }
        let filter = self.filter.cloned().unwrap_or_default();
        let points = match partition::split_points(self.source, ns, &filter, parts).await {
            Ok(points) => points,
            Err(e) => {
                tracing::warn!("{ns}: cannot split, read whole: {e}");
                return whole();
            }
        };
        let parts = Partition::between(&points);
        tracing::info!("{ns}: {docs} documents, read in {} partitions", parts.len());
        Ok(parts
            .into_iter()
            .map(|part| NsTask::new(counters.clone()).within(part))
            .collect())
    }
}

/// The destination's largest document (its `maxBsonObjectSize`; the usual 16 MiB if unsaid).
pub(crate) async fn max_document_bytes(client: &Client) -> usize {
    let hello = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await;
    hello
        .ok()
        .and_then(|h| h.get_i32("maxBsonObjectSize").ok())
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(MAX_DOCUMENT_BYTES)
}

/// The process's peak resident set size (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
