//! A copy job from start to end: connect, resolve namespaces, run the engine, summarise (and
//! for a sync job: record the source's position first, follow its changes after).
//!
//! In: a validated [`CopySpec`] and the [`StateStore`] holding checkpoints and dead letters. Out:
//! a [`CopySummary`] (what was copied, skipped, refused, how fast), or the first error with the
//! checkpoint saved. The command line and the service both run jobs through here, so there is
//! one engine and one set of rules.
//!
//! A job is identified across runs by its [`JobKey`] (servers without credentials, namespaces,
//! filter). Its checkpoint, if any, makes a run continue after each namespace's watermark; a
//! finished job run again does nothing and says so, unless the spec asks to restart.

use std::sync::Arc;

use mongodb::bson::{doc, Document};
use mongodb::Client;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::overlap;
use super::schema::{self, SchemaWork, Selection};
use super::sync::{self, Follower, Until};
use super::verify::{verify_all, Comparison, VerifyReport};
use crate::engine::budget::Budget;
use crate::engine::changes::{ChunkLimits, CHUNK_WAIT};
use crate::engine::control::throttle::Throttle;
use crate::engine::partition::{self, Part};
use crate::engine::sink::{Journaled, Moving, MAX_DOCUMENT_BYTES};
use crate::engine::source::mongo::FETCHES_AT_ONCE;
use crate::engine::stats::{
    JobStats, MoveProgress, NsCounters, NsSnapshot, SchemaProgress, SyncPhase, SyncProgress,
};
use crate::engine::{
    Adaptive, Control, CopyError, Engine, Ledger, MongoSink, MongoSource, NsTask, Sink, Source,
    Strategy,
};
use crate::journal::writer::{JournalWriter, SegmentWriter};
use crate::journal::JournalSummary;
use crate::mongo::retry::{Retry, RetryPolicy};
use crate::mongo::schema::{estimated_count, Schema};
use crate::mongo::{self, describe, MongoError, Namespace, Side};
use crate::spec::{CopySpec, IndexMode, Mode, Routes};
use crate::state::{Checkpoint, JobClaim, JobKey, StateStore};

/// A job that is connected and knows exactly which namespaces it copies.
pub struct PreparedCopy {
    clients: [Client; 2],
    source: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
    tasks: Vec<Arc<NsTask>>,
    stats: Arc<JobStats>,
    strategy: Strategy,
    batch_size: usize,
    /// Namespaces read at once.
    readers: usize,
    memory_limit: usize,
    control: Arc<Control>,
    adaptive: Option<Arc<Adaptive>>,
    ledger: Arc<Ledger>,
    /// The run continues an earlier one's checkpoint.
    resumed: bool,
    /// Verify afterwards, with this filter on both sides.
    verify: Option<Option<Document>>,
    /// Shared by the source and the sink; stopped when the job is cancelled.
    retry: Retry,
    /// The journal, opened (and locked) but not yet written.
    journal: Option<SegmentWriter>,
    /// What the job copies, and what the destination held of it when the job started.
    selection: Selection,
    existing: Vec<Option<Schema>>,
    drop: bool,
    /// A move that deletes nothing from the source.
    keep_source: bool,
    indexes: IndexMode,
    /// This run's hold on its job in the state store, for as long as it runs (until its layout
    /// is published, for the run that plans a shared job; none for a run that joins one).
    claim: Option<JobClaim>,
    /// This run planned a shared job: its layout is published once the destination is ready.
    publish: bool,
    /// A sync follows the source's changes after the copy.
    mode: Mode,
    routes: Routes,
    filter: Option<Document>,
    /// Asks a sync for its cutover.
    commit: CancellationToken,
    until: Until,
    /// A run that helps another process with a shared job: it ends once the partitions are
    /// copied, leaving the rest (indexes after, a sync's following, verify) to the job's run.
    partitions_only: bool,
    from: String,
    to: String,
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

/// Connects to both clusters, resolves the namespaces and loads the job's checkpoint from
/// `store`; nothing is written yet.
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
    let found = async {
        let selection = schema::select(&source, &spec.namespaces, &spec.exclude).await?;
        if let Some(filter) = &spec.filter {
            check_filter(&source, &selection, filter).await?;
        }
        overlap::check(spec, &selection, &source, &destination, store.database()).await?;
        let existing = schema::destination(&destination, &selection).await?;
        if spec.mode == Mode::Move && !spec.keep_source {
            let unmovable = schema::unmovable(&selection);
            if !unmovable.is_empty() {
                return Err(CopyError::Schema(format!(
                    "nothing was written: {}",
                    unmovable.join("; ")
                )));
            }
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
    };
    let (selection, existing) = match found.await {
        Ok(found) => found,
        Err(e) => {
            mongo::close(source).await;
            mongo::close(destination).await;
            return Err(e);
        }
    };
    let stats = Arc::new(JobStats::new(selection.pairs(), spec.workers));
    let setup = async {
        let (key, description) = job_key(spec);
        // Before the checkpoint is read: a second run of the job would move it back and forth.
        let (mut claim, checkpoint) = hold_or_join(spec, &key, &store).await?;
        let sync = checkpoint.as_ref().and_then(|c| c.sync.clone());
        let layout = Layout {
            source: &source,
            filter: spec.filter.as_ref(),
            partition_docs: spec.partition_docs,
        };
        let (tasks, mut resumed) = layout.tasks(&stats, checkpoint.as_ref(), &store).await?;
        // A shared job: joined as it stands, or planned here and published for others to join.
        let mut shared = checkpoint.as_ref().and_then(|c| c.shared.clone());
        let mut publish = false;
        if shared.is_some() {
            claim = None;
            // Other processes may have written: never drop what they did.
            resumed = true;
        } else if claim.is_some()
            && shareable(spec, &store)
            && tasks.iter().any(|t| t.part.is_some())
        {
            shared = Some(format!("{:016x}", fastrand::u64(..)));
            publish = true;
        }
        let limit = max_document_bytes(&destination).await;
        // Opened last, so that a copy that cannot start leaves no run in the journal.
        let journal = match &spec.journal {
            None => None,
            Some(config) => Some(JournalWriter::open(config.clone()).await?),
        };
        Ok::<_, CopyError>((
            key,
            description,
            (claim, publish, shared),
            tasks,
            resumed,
            limit,
            journal,
            sync,
        ))
    };
    let (key, description, (claim, publish, shared), tasks, resumed, server_limit, journal, sync) =
        match setup.await {
            Ok(found) => found,
            Err(e) => {
                mongo::close(source).await;
                mongo::close(destination).await;
                return Err(e);
            }
        };
    let retry = Retry::new(RetryPolicy::default(), stats.retry.clone());
    let max_document_bytes = spec
        .max_document_bytes
        .map_or(server_limit, |limit| limit.min(server_limit));
    Ok(PreparedCopy {
        clients: [source.clone(), destination.clone()],
        source: Arc::new(
            MongoSource::new(source, spec.filter.clone(), spec.strategy)
                .with_retry(retry.clone())
                .without_index_hint(selection.time_series()),
        ),
        sink: Arc::new({
            let sink = MongoSink::new(destination)
                .with_retry(retry.clone())
                .with_max_document_bytes(max_document_bytes)
                .past_validators(selection.validated());
            // A move deletes from the source what the destination acknowledged: only an
            // acknowledgement no rollback can undo will do, whatever the URI asks for.
            if spec.mode == Mode::Move {
                sink.durable()
            } else {
                sink
            }
        }),
        selection,
        existing,
        drop: spec.drop,
        keep_source: spec.keep_source,
        indexes: spec.indexes,
        tasks,
        stats,
        ledger: {
            let mut ledger = Ledger::new(store, key, description);
            if let Some(layout) = shared {
                ledger = ledger.shared(layout);
            }
            if let Some(sync) = sync {
                ledger.set_sync_position(sync);
            }
            Arc::new(ledger)
        },
        resumed,
        verify: spec.verify.then(|| spec.filter.clone()),
        retry,
        strategy: spec.strategy,
        batch_size: spec.batch_size,
        readers: spec.readers,
        memory_limit: spec.memory_limit,
        control: Arc::new(Control::with_throttle(
            spec.workers,
            Throttle::new(spec.limits),
        )),
        adaptive: spec.adaptive.map(|c| Arc::new(Adaptive::new(c))),
        journal,
        claim,
        publish,
        mode: spec.mode,
        routes: Routes::new(&spec.namespaces, &spec.exclude),
        filter: spec.filter.clone(),
        commit: CancellationToken::new(),
        until: Until::Committed,
        partitions_only: false,
        from: mongo::redact_uri(&spec.from),
        to: mongo::redact_uri(&spec.to),
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
        self.partitions_only = true;
        self
    }

    /// A sync job ends the first time it is level with the source (`--until-caught-up`).
    pub fn until_caught_up(mut self) -> Self {
        self.until = Until::CaughtUp;
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
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

    pub async fn run(mut self, cancel: CancellationToken) -> Result<CopySummary, CopyError> {
        // Held until the run ends, unless it is given up for a shared job's layout.
        let mut claim = self.claim.take();
        let publish = self.publish;
        let shared = self.ledger.is_shared();
        // A shared job: what the other processes did so far counts, and may finish it.
        if let Err(e) = self.ledger.refresh(&self.tasks).await {
            for client in self.clients {
                mongo::close(client).await;
            }
            return Err(e);
        }
        // A job of views alone has no documents to have copied before.
        let already_complete = !self.tasks.is_empty() && self.tasks.iter().all(|t| t.is_finished());
        // The journal is a layer around the destination: it sees every batch the destination
        // acknowledged, and checkpoints wait for it to be durable. The engine does not know.
        let journal = self.journal.take().map(JournalWriter::start);
        let sink: Arc<dyn Sink> = match &journal {
            Some(journal) => Arc::new(Journaled::new(self.sink.clone(), journal.sender())),
            None => self.sink.clone(),
        };
        // A move: each batch is verified at the destination, then deleted from the source.
        let sink: Arc<dyn Sink> = match self.mode {
            Mode::Move => {
                let [src, dst] = &self.clients;
                self.stats.moves.start_pass();
                if self.keep_source {
                    self.stats.moves.set_rehearsal();
                }
                Arc::new(Moving::new(
                    sink,
                    src.clone(),
                    dst.clone(),
                    self.selection.pairs(),
                    self.keep_source,
                    self.control.throttle().clone(),
                    self.stats.moves.clone(),
                    journal.as_ref().map(|j| j.sender()),
                ))
            }
            Mode::Copy | Mode::Sync => sink,
        };
        let budget = Budget::new(self.memory_limit, self.control.workers());
        let follower = |source_client: &Client, destination: &Client| Follower {
            source_client: source_client.clone(),
            destination: destination.clone(),
            routes: self.routes.clone(),
            source: self.source.clone(),
            stats: self.stats.clone(),
            ledger: self.ledger.clone(),
            limits: ChunkLimits {
                changes: self.batch_size * self.control.workers().max(1),
                bytes: budget.pipeline_bytes,
                wait: CHUNK_WAIT,
            },
            commit: self.commit.clone(),
            until: self.until,
            refresh: self.filter.is_some(),
            batch_size: self.batch_size,
        };
        let engine = |tasks: Vec<Arc<NsTask>>| {
            Engine::new(self.source.clone(), sink.clone(), self.stats.clone())
                .with_tasks(tasks)
                .with_batch_size(self.batch_size)
                .with_readers(self.readers)
                .with_memory_limit(self.memory_limit)
                .with_control(self.control.clone())
                .with_ledger(self.ledger.clone())
                .with_adaptive(self.adaptive.clone())
        };
        let [_, dst] = &self.clients;
        let work = SchemaWork {
            destination: dst,
            selection: &self.selection,
            log: &self.stats.schema,
            control: &self.control,
            cancel: &cancel,
        };
        let copy = async {
            let [src, _] = &self.clients;
            if self.mode == Mode::Sync {
                // Durable before the first write: every change from here on will be applied.
                if self.ledger.sync_position().is_none() {
                    self.ledger
                        .set_sync_position(sync::start_here(src, &self.routes).await?);
                    let mut start = self.ledger.checkpoint(&self.tasks);
                    // Not shared yet: others join once the destination is ready.
                    if publish {
                        start.shared = None;
                    }
                    self.ledger.save(&start).await?;
                }
                self.stats.sync.set_phase(SyncPhase::InitialCopy);
            }
            // A run continuing a checkpoint does not drop what the first run wrote.
            let drop = self.drop && !self.resumed;
            if drop && self.mode == Mode::Move {
                self.refuse_dropping_documents(dst).await?;
            }
            let indexes_first = self.indexes == IndexMode::Before;
            work.before_documents(&self.existing, drop, indexes_first)
                .await?;
            if publish {
                // The destination is ready: other processes may join from here on.
                self.ledger
                    .save(&self.ledger.checkpoint(&self.tasks))
                    .await?;
                claim.take();
            }
            if shared {
                self.share(&engine, &cancel).await?;
                if self.partitions_only {
                    return Ok(());
                }
                if self.mode == Mode::Sync {
                    // Following the source is one process's: the first to hold the job.
                    claim = match self.take_over_following(&cancel).await? {
                        Some(claim) => Some(claim),
                        None => return Ok(()),
                    };
                }
            } else {
                engine(self.tasks.clone()).run(cancel.clone()).await?;
            }
            if self.mode == Mode::Move {
                self.more_passes(&engine, &cancel, already_complete).await?;
            }
            work.after_documents(self.indexes == IndexMode::After)
                .await?;
            if self.mode == Mode::Sync {
                sync::follow(
                    follower(src, dst),
                    engine(self.tasks.clone()),
                    cancel.clone(),
                )
                .await?;
            }
            Ok(())
        };
        let outcome = self.retry.stopping_on(&cancel, copy).await;
        // An operator's stop is a stop, whatever error it cut short.
        let outcome = match outcome {
            Err(_) if cancel.is_cancelled() => Err(CopyError::Stopped),
            other => other,
        };
        // The verify step runs on the same clients, once everything is written.
        let verified = match (&outcome, &self.verify) {
            (Ok(()), Some(filter)) if !self.partitions_only => {
                let [src, dst] = &self.clients;
                let indexes = self.indexes != IndexMode::None;
                let compared = Comparison {
                    selection: &self.selection,
                    filter: filter.as_ref(),
                    show: 10,
                    schema: Some(indexes),
                };
                Some(verify_all(src, dst, &compared, &cancel).await)
            }
            _ => None,
        };
        // Whatever the outcome, what was acknowledged is written out and the journal closed.
        let journal = match journal {
            None => Ok(None),
            Some(journal) => journal.finish().await.map(Some),
        };
        // Every task is joined, so these are the last handles of the clients.
        for client in self.clients {
            mongo::close(client).await;
        }
        if let (Err(copy), Err(journal)) = (&outcome, &journal) {
            // The copy's own error is the one reported; this one may say more about the journal.
            tracing::warn!("{journal} (the copy failed: {copy})");
        }
        outcome?;
        let journal = journal?;
        let verified = verified.transpose()?;
        let snap = self.stats.snapshot();
        Ok(CopySummary {
            from: self.from,
            to: self.to,
            strategy: self.strategy,
            workers: self.control.workers(),
            batch_size: self.batch_size,
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
            verify: verified,
            sync: snap.sync,
            moves: snap.moves,
            docs: snap.docs,
            bytes: snap.bytes,
            seconds: snap.seconds,
            docs_per_sec: snap.docs_per_sec,
            peak_rss_bytes: peak_rss_bytes(),
            journal,
            schema: snap.schema,
        })
    }
}

/// How often a process of a shared job with nothing to copy looks again for partitions to
/// take over.
const SHARE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a run of a shareable job waits for the process planning it to publish its layout
/// before it claims the job as any run does.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl PreparedCopy {
    /// A shared job: copies the partitions this process can claim, then waits for those other
    /// processes hold, taking over any whose holder ends or dies, until every one is complete.
    async fn share(
        &self,
        engine: &impl Fn(Vec<Arc<NsTask>>) -> Engine,
        cancel: &CancellationToken,
    ) -> Result<(), CopyError> {
        while self.ledger.refresh(&self.tasks).await? > 0 {
            let copied = engine(self.tasks.clone()).run(cancel.clone()).await;
            self.ledger.release();
            copied?;
            if self.ledger.refresh(&self.tasks).await? == 0 {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(CopyError::Stopped),
                _ = tokio::time::sleep(SHARE_POLL) => {}
            }
        }
        Ok(())
    }
}

impl PreparedCopy {
    /// A shared sync whose partitions are all copied: waits until this process holds the job
    /// (the process following the source ends or dies), then follows on from the position saved,
    /// saving the whole checkpoint from now on. `None`: the job was committed meanwhile.
    async fn take_over_following(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Option<JobClaim>, CopyError> {
        let (store, key) = (self.ledger.store(), self.ledger.key());
        let committed = |saved: &Option<Checkpoint>| {
            saved
                .as_ref()
                .and_then(|c| c.sync.as_ref())
                .is_some_and(|s| s.committed)
        };
        loop {
            let claim = store.try_claim(key).await?;
            let saved = store.load(key).await?;
            if committed(&saved) {
                return Ok(None);
            }
            if let Some(claim) = claim {
                if let Some(sync) = saved.and_then(|c| c.sync) {
                    self.ledger.set_sync_position(sync);
                }
                self.ledger.unshare();
                return Ok(Some(claim));
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(CopyError::Stopped),
                _ = tokio::time::sleep(SHARE_POLL) => {}
            }
        }
    }
}

/// Whether another process may join the job of `spec` now: it is shared on `store` (its layout
/// published) and not complete.
pub async fn joinable(spec: &CopySpec, store: &Arc<dyn StateStore>) -> Result<bool, CopyError> {
    if !shareable(spec, store) {
        return Ok(false);
    }
    let (key, _) = job_key(spec);
    Ok(store
        .load(&key)
        .await?
        .is_some_and(|c| c.shared.is_some() && !c.complete))
}

/// Whether several processes may share the job of `spec` on `store`: a copy or a sync (its
/// initial copy) with partitions, on a store that shares jobs. A move's passes and deletes are
/// one process's.
fn shareable(spec: &CopySpec, store: &Arc<dyn StateStore>) -> bool {
    store.shares_jobs() && spec.mode != Mode::Move && spec.partition_docs.is_some()
}

/// Passes of a move after the first, at most: each copies what the one before left at the
/// source (documents that changed after their copy), until nothing is left.
const MOVE_PASSES: u64 = 5;

impl PreparedCopy {
    /// A move's later passes: while documents of the selection are left at the source and the
    /// pass before moved some, copy (and move) them again from the start of each namespace.
    /// A rerun of a move whose copy was complete (`rerun`) makes one such pass for what an
    /// earlier run left.
    async fn more_passes(
        &self,
        engine: &impl Fn(Vec<Arc<NsTask>>) -> Engine,
        cancel: &CancellationToken,
        rerun: bool,
    ) -> Result<(), CopyError> {
        let moves = &self.stats.moves;
        if self.keep_source {
            return Ok(());
        }
        loop {
            let left = self.left_at_source().await?;
            moves.set_left(left);
            let progress = moves
                .snapshot()
                .unwrap_or_else(|| unreachable!("a move counts"));
            // Only documents that changed since their copy are worth another pass (refused
            // ones would be refused again).
            let left_by_earlier_run = rerun && progress.pass == 1;
            let worth_it =
                (progress.changed > 0 || left_by_earlier_run) && progress.pass < MOVE_PASSES;
            if left == 0 || !worth_it {
                return Ok(());
            }
            let changed_before = progress.changed;
            moves.start_pass();
            tracing::info!(
                "move pass {}: {left} documents left at the source ({changed_before} changed \
                 after their copy)",
                progress.pass + 1
            );
            for counters in &self.stats.namespaces {
                counters.reopen();
            }
            engine(NsTask::for_stats(&self.stats))
                .run(cancel.clone())
                .await?;
        }
    }

    /// A move drops only empty destinations: documents there may be the only copy of what an
    /// earlier move (one whose checkpoint this run does not have) deleted from the source.
    async fn refuse_dropping_documents(&self, destination: &Client) -> Result<(), CopyError> {
        let mut problems = Vec::new();
        for (selected, existing) in self.selection.collections.iter().zip(&self.existing) {
            if existing.is_none() {
                continue;
            }
            let ns = &selected.destination;
            let held = estimated_count(destination, Side::Destination, ns).await?;
            if held > 0 {
                problems.push(format!(
                    "drop: {ns} holds {held} documents, which may be the only copy of what an \
                     earlier move deleted from the source; a move drops only empty destinations \
                     (run it without --drop to move what is left, or drop {ns} yourself)"
                ));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(CopyError::Unsafe(problems)),
        }
    }

    /// Documents of the selection (the filter's) still at the source.
    async fn left_at_source(&self) -> Result<u64, CopyError> {
        let [src, _] = &self.clients;
        let mut left = 0;
        for selected in &self.selection.collections {
            let ns = &selected.source;
            left += src
                .database(&ns.db)
                .collection::<Document>(&ns.coll)
                .count_documents(self.filter.clone().unwrap_or_default())
                .await
                .map_err(|e| MongoError::Command {
                    side: Side::Source,
                    ns: ns.clone(),
                    op: "count",
                    reason: describe(&e),
                })?;
        }
        Ok(left)
    }
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
                .filter(|(k, _)| **k == key || Part::is_key_of(k, &key))
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
        let parts = Part::between(&points);
        tracing::info!("{ns}: {docs} documents, read in {} partitions", parts.len());
        Ok(parts
            .into_iter()
            .map(|part| NsTask::new(counters.clone()).within(part))
            .collect())
    }
}

/// The job's key and description: what it selects (excludes too, as `!pattern`) and how.
fn job_key(spec: &CopySpec) -> (JobKey, String) {
    let namespaces: Vec<String> = spec
        .namespaces
        .iter()
        .map(|m| m.to_string())
        .chain(spec.exclude.iter().map(|e| format!("!{e}")))
        // A sync keeps a position in the source's history that a copy of the same namespaces
        // must not share (nor take over a copy's finished checkpoint).
        .chain((spec.mode != Mode::Copy).then(|| format!("({})", spec.mode)))
        .collect();
    JobKey::of(&spec.from, &spec.to, &namespaces, spec.filter.as_ref())
}

/// Holds the job for this run and reads its checkpoint. A job several processes may share
/// (a copy with partitions, on a store that shares jobs) is planned by one run, under the
/// job's claim; a run that finds the claim held and a shared layout saved joins it without a
/// claim (`None`), and one that finds no layout yet waits up to [`JOIN_WAIT`] for the planner
/// before it claims the job as any run does (a standby waits, others are told who holds it).
async fn hold_or_join(
    spec: &CopySpec,
    key: &JobKey,
    store: &Arc<dyn StateStore>,
) -> Result<(Option<JobClaim>, Option<Checkpoint>), CopyError> {
    let shareable = shareable(spec, store);
    let started = std::time::Instant::now();
    let claim = loop {
        if !shareable || started.elapsed() > JOIN_WAIT {
            break store.claim(key).await?;
        }
        if let Some(claim) = store.try_claim(key).await? {
            break claim;
        }
        if let Some(checkpoint) = store.load(key).await? {
            if checkpoint.shared.is_some() {
                return Ok((None, Some(checkpoint)));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    Ok((Some(claim), load_checkpoint(spec, key, store).await?))
}

/// The job's checkpoint (none after a restart, which forgets it).
async fn load_checkpoint(
    spec: &CopySpec,
    key: &JobKey,
    store: &Arc<dyn StateStore>,
) -> Result<Option<Checkpoint>, CopyError> {
    if spec.restart {
        store.remove(key).await?;
        return Ok(None);
    }
    Ok(store.load(key).await?)
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
