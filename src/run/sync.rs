//! The live part of a `sync` job: after the copy, the source's changes until cutover.
//!
//! In: a job whose documents are copied, its position in the source's history (recorded before
//! the copy began, or saved by an earlier run), where each namespace goes ([`Routes`]), and the
//! engine's parts (source, sink, control, ledger, stats). Out: the destination kept like the
//! source until the job is committed — every change up to the commit's moment applied — or
//! stopped, resumably.
//!
//! Once the copy is done, an engine run follows the source with this module's [`Follower`] as its
//! feed: document changes go on the engine's queue in chunks ([`ChangeWriter`]), written by the
//! engine's workers like any batch; a schema change waits for everything before it and is made
//! here, through the renames, before anything after it. The position is saved by the engine's
//! checkpointer, only ever up to what is written. A position the source no longer holds stops
//! the job ([`CopyError::HistoryLost`]).
//!
//! Beside it, unless `verify: "off"`, the job's [`Verifier`] compares the two sides; the follower
//! tells it every `_id` it applied and how far it is level with the source, and writes the
//! repairs it asks for between chunks. The commit, once every change up to its end is applied:
//! the application's writes blocked where asked (`block_writes`), the verifier's proof (only what
//! changed since its last one), the reverse point recorded ([`reverse_point`]), then the source
//! watched for `commit_watch_secs` for writes past the commit point, reported, not applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::RawBson;
use mongodb::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::changes::{
    self, ChangeWriter, ChunkLimits, Route, SchemaChange, SchemaOp, Step,
};
use crate::engine::control::guard::LoadGuard;
use crate::engine::queue::QueueSender;
use crate::engine::source::change_stream::{self, ChangeFeed, DdlOp, Position};
use crate::engine::stats::{EventCounts, JobStats, SyncPhase, WritesAfterCommit};
use crate::engine::{CopyError, Engine, Feed, Ledger, NsTask, Source};
use crate::mongo::schema::{self, Kind, Schema};
use crate::mongo::{Namespace, Side};
use crate::spec::{BlockWrites, CopySpec, NsMapping, Routes};
use crate::state::{ReverseFrom, SyncCheckpoint};

use super::cutover;
use super::verifier::{Repair, Verifier};

/// Returns once the commit is asked for and no flag file postpones it.
async fn commit_allowed(commit: &CancellationToken, guard: &LoadGuard) {
    commit.cancelled().await;
    guard.wait_commit_allowed().await;
}

/// Records where the source's history stands now: the sync applies every change after it.
pub async fn start_here(source: &Client, routes: &Routes) -> Result<SyncCheckpoint, CopyError> {
    let time = change_stream::source_time(source).await?;
    let feed = ChangeFeed::open(source, routes.databases(), None).await?;
    let position = feed.position().ok_or_else(|| {
        CopyError::Internal("the source's change stream gave no starting position".into())
    })?;
    Ok(SyncCheckpoint {
        start: position.to_json(),
        applied: None,
        applied_secs: time.time,
        events: 0,
        committed: false,
        verification: None,
        reverse_from: None,
        reconciling: false,
    })
}

/// At a sync's commit, once every change up to it is applied: where the destination's history
/// stands now, in the databases the job writes, with the job's mappings (from `routes`); the
/// caller adds what else it knows (a filter, a transform, the proof). `None` (and a warning)
/// when the destination's position cannot be read: the commit stands, only its reverse is
/// refused.
pub async fn reverse_point(destination: &Client, routes: &Routes) -> Option<ReverseFrom> {
    // Each mapping turned around as written: only its databases are read here.
    let turned: Vec<NsMapping> = routes.mappings().iter().map(NsMapping::turned).collect();
    let at_destination = Routes::new(&turned, &[]);
    match start_here(destination, &at_destination).await {
        Ok(here) => Some(ReverseFrom {
            start: here.start,
            secs: here.applied_secs,
            namespaces: routes.mappings().iter().map(|m| m.to_string()).collect(),
            exclude: routes.excludes().iter().map(|e| e.to_string()).collect(),
            ..ReverseFrom::default()
        }),
        Err(e) => {
            tracing::warn!(
                "committed, but the destination's position could not be read, so this job \
                 cannot be reversed: {e}"
            );
            None
        }
    }
}

/// Before the first write of a sync: records where the source's history stands (unless an
/// earlier run did), durably, so that every change from here on will be applied. A run that
/// plans a shared job (`publish`) saves it unshared: others join once the destination is ready.
pub async fn begin(
    source: &Client,
    spec: &CopySpec,
    ledger: &Ledger,
    tasks: &[Arc<NsTask>],
    publish: bool,
) -> Result<(), CopyError> {
    if ledger.sync_position().is_some() {
        return Ok(());
    }
    let routes = Routes::new(&spec.namespaces, &spec.exclude);
    ledger.set_sync_position(start_here(source, &routes).await?);
    let mut start = ledger.checkpoint(tasks);
    if publish {
        start.shared = None;
    }
    ledger.save(&start).await?;
    Ok(())
}

/// How a sync ends once it follows the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until committed (or stopped).
    Committed,
    /// The first time it is level with the source (`--until-caught-up`), not committed: a
    /// later run follows on from there.
    CaughtUp,
}

/// The sync's following of the source, built once the copy is done: the engine's feed while
/// the sync follows, so that its workers write the changes.
pub struct Follower {
    pub source_client: Client,
    pub destination: Client,
    pub routes: Routes,
    /// The job's source: documents that come into the job are read through it.
    pub source: Arc<dyn Source>,
    pub stats: Arc<JobStats>,
    pub ledger: Arc<Ledger>,
    pub limits: ChunkLimits,
    /// Asks for the cutover: everything up to now is applied, then the job ends.
    pub commit: CancellationToken,
    pub until: Until,
    /// The job has a filter: the current documents are read from the source with it.
    pub refresh: bool,
    /// The job has a transform: what it wrote cannot be written back (no reverse).
    pub transformed: bool,
    pub batch_size: usize,
    /// The continuous verification (`None`: `verify: "off"`).
    pub verifier: Option<Arc<Verifier>>,
    /// How long the source is watched after the commit for writes past its point.
    pub commit_watch: Duration,
    /// The sides whose writes the commit blocks, and the servers' URIs (for messages).
    pub block_writes: Option<BlockWrites>,
    pub uris: (String, String),
    /// The job's load guard: a commit waits while its flag file postpones it.
    pub guard: Arc<LoadGuard>,
}

/// The verifier at work beside the follower: its repairs come to the follower, which writes
/// them between chunks.
struct Verifying {
    verifier: Arc<Verifier>,
    repairs: mpsc::Receiver<Repair>,
    stop: CancellationToken,
    /// Until [`Verifying::finish`] joined it.
    task: Option<tokio::task::JoinHandle<Result<(), CopyError>>>,
}

impl Verifying {
    fn start(verifier: Arc<Verifier>) -> Verifying {
        let (asked, repairs) = mpsc::channel(16);
        let stop = CancellationToken::new();
        verifier.publish();
        let task = tokio::spawn(verifier.clone().run(asked, stop.clone()));
        Verifying {
            verifier,
            repairs,
            stop,
            task: Some(task),
        }
    }

    /// Stops the comparison in the background and waits for it.
    async fn finish(&mut self) -> Result<(), CopyError> {
        self.stop.cancel();
        self.repairs.close();
        match self.task.take() {
            None => Ok(()),
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(CopyError::Internal(format!("the verifier failed: {e}")))),
        }
    }
}

/// The next repair the verifier asks for; never, without one.
async fn next_repair(verifying: &mut Option<Verifying>) -> Option<Repair> {
    match verifying {
        Some(v) if !v.stop.is_cancelled() => v.repairs.recv().await,
        _ => std::future::pending().await,
    }
}

/// What the follower does once the source had nothing more.
enum AfterQuiet {
    GoOn,
    /// `--until-caught-up`: level with the source.
    CaughtUp,
    /// Level with the source after the commit was asked for: every change up to it is applied.
    Commit,
}

/// Follows the source with `engine`'s workers until committed (`Ok`), stopped
/// ([`CopyError::Stopped`]) or the first error. The engine's checkpointer saves the position.
pub async fn follow(
    follower: Follower,
    engine: Engine,
    cancel: CancellationToken,
) -> Result<(), CopyError> {
    let Some(sync) = follower.ledger.sync_position() else {
        return Err(CopyError::Internal(
            "a sync without a starting position".into(),
        ));
    };
    if sync.committed {
        follower.stats.sync.set_phase(SyncPhase::Committed);
        return Ok(());
    }
    engine.with_feed(Arc::new(follower)).run(cancel).await
}

impl Feed for Follower {
    fn run(
        self: Arc<Self>,
        queue: QueueSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CopyError>> {
        async move { self.follow_changes(queue, &cancel).await }.boxed()
    }
}

impl Follower {
    /// Reads the change stream from the saved position, gathers it into steps beside, and
    /// queues them in order.
    async fn follow_changes(
        &self,
        queue: QueueSender,
        cancel: &CancellationToken,
    ) -> Result<(), CopyError> {
        let mut sync = self
            .ledger
            .sync_position()
            .ok_or_else(|| CopyError::Internal("a sync without a starting position".into()))?;
        self.stats.sync.set_phase(SyncPhase::CatchingUp);
        let from = sync.applied.as_ref().unwrap_or(&sync.start);
        let from = Position::from_json(from).map_err(|reason| {
            CopyError::from(crate::state::StateError::Corrupt {
                path: self.ledger.store().location().into(),
                reason: format!("the sync position: {reason}"),
            })
        })?;
        let feed =
            ChangeFeed::open(&self.source_client, self.routes.databases(), Some(&from)).await?;
        let gathering = CancellationToken::new();
        let (steps, mut next) = mpsc::channel(1);
        let routes = self.routes.clone();
        let route: Route = Arc::new(move |ns: &Namespace| routes.destination(ns));
        let gatherer = tokio::spawn(changes::gather(
            feed,
            route,
            self.limits,
            self.stats.clone(),
            steps,
            gathering.clone(),
        ));
        let mut writer =
            ChangeWriter::new(queue, self.source.clone(), self.refresh, self.batch_size);
        let mut verifying = self.verifier.clone().map(Verifying::start);
        let outcome = self
            .apply_steps(&mut next, &mut writer, &mut verifying, &mut sync, cancel)
            .await;
        gathering.cancel();
        drop(next);
        let _ = gatherer.await;
        if let Some(mut verifying) = verifying {
            if let Err(e) = verifying.finish().await {
                tracing::warn!("verification: {e}");
            }
        }
        outcome
    }

    async fn apply_steps(
        &self,
        next: &mut mpsc::Receiver<Result<Step, CopyError>>,
        writer: &mut ChangeWriter,
        verifying: &mut Option<Verifying>,
        sync: &mut SyncCheckpoint,
        cancel: &CancellationToken,
    ) -> Result<(), CopyError> {
        let stats = &self.stats;
        // When the commit was asked for (after the source's time was read), and that time: a
        // read of the stream that began after it and found nothing more means every change up
        // to the commit is applied. A quiet moment found by a read that began before does not.
        let mut committing: Option<(Instant, u32)> = None;
        loop {
            let step = tokio::select! {
                step = next.recv() => step,
                Some(repair) = next_repair(verifying) => {
                    writer.rewrite(&repair.source, &repair.destination, repair.ids.clone()).await?;
                    if let Some(v) = verifying {
                        v.verifier.repaired(&repair);
                    }
                    continue;
                }
                _ = commit_allowed(&self.commit, &self.guard), if committing.is_none() => {
                    // No application write lands after the end read next.
                    self.block(Side::Source).await?;
                    let end = change_stream::source_time(&self.source_client).await?;
                    tracing::info!("committing: applying every change up to {}", end.time);
                    stats.sync.set_phase(SyncPhase::Committing);
                    committing = Some((Instant::now(), end.time));
                    continue;
                }
                _ = cancel.cancelled() => return Err(CopyError::Stopped),
            };
            let Some(step) = step else {
                return Err(CopyError::Internal(
                    "the change stream reader stopped".into(),
                ));
            };
            match step? {
                Step::Changes(chunk) => {
                    let (events, end, secs) = (chunk.events, chunk.end.clone(), chunk.last_secs);
                    let ids = verifying.as_ref().map(|_| chunk.ids());
                    writer.write(chunk).await?;
                    if let (Some(v), Some(ids)) = (verifying.as_ref(), ids) {
                        v.verifier.applied(ids).await?;
                        v.verifier.level_at(f64::from(secs));
                    }
                    stats.sync.record(&events);
                    stats.sync.applied_step();
                    self.applied(sync, end, secs, &events);
                }
                Step::Schema(change) => {
                    self.apply_schema(&change, writer).await?;
                    stats.sync.applied_step();
                    let events = EventCounts {
                        ddl: 1,
                        ..EventCounts::default()
                    };
                    stats.sync.record(&events);
                    self.applied(sync, Some(change.end), change.secs, &events);
                }
                Step::Quiet { position, since } => {
                    if let Some(v) = verifying.as_ref() {
                        let asked = crate::state::unix_now() - since.elapsed().as_secs_f64();
                        v.verifier.level_at_local(asked);
                    }
                    match self.quiet(sync, position, since, committing.map(|(at, _)| at)) {
                        AfterQuiet::GoOn => {}
                        AfterQuiet::CaughtUp => return Ok(()),
                        AfterQuiet::Commit => {
                            let end = committing.map_or(0, |(_, end)| end);
                            self.commit(writer, verifying, sync, end).await?;
                            return self.watch_after_commit(next, cancel).await;
                        }
                    }
                }
            }
        }
    }

    /// After the commit, reads the source's changes for [`Follower::commit_watch`]: every one
    /// is a write past the commit point (the application was not fully stopped), counted and
    /// not applied.
    async fn watch_after_commit(
        &self,
        next: &mut mpsc::Receiver<Result<Step, CopyError>>,
        cancel: &CancellationToken,
    ) -> Result<(), CopyError> {
        let until = tokio::time::Instant::now() + self.commit_watch;
        loop {
            let step = tokio::select! {
                step = next.recv() => step,
                _ = tokio::time::sleep_until(until) => return Ok(()),
                _ = cancel.cancelled() => return Ok(()),
            };
            let written: Vec<(Namespace, Option<RawBson>)> = match step {
                Some(Ok(Step::Changes(chunk))) => chunk
                    .ids()
                    .into_iter()
                    .map(|(source, _, id)| (source, Some(id)))
                    .collect(),
                Some(Ok(Step::Schema(change))) => vec![(change.ns, None)],
                Some(Ok(Step::Quiet { .. })) => continue,
                Some(Err(e)) => {
                    tracing::warn!("watching the source after the commit: {e}");
                    return Ok(());
                }
                None => return Ok(()),
            };
            tracing::warn!(
                "{} writes reached the source after the commit point: the application was not \
                 fully stopped (the destination does not have them)",
                written.len()
            );
            self.stats.sync.wrote_after_commit(|w| {
                for (ns, id) in written {
                    w.count += 1;
                    let ns = ns.to_string();
                    if !w.namespaces.contains(&ns) {
                        w.namespaces.push(ns);
                    }
                    if let Some(id) = id.as_ref().and_then(crate::state::id_to_json) {
                        if w.ids.len() < WritesAfterCommit::IDS {
                            w.ids.push(id);
                        }
                    }
                }
            });
        }
    }

    /// Every change up to the commit's `end` is applied: the verifier proves the two sides
    /// equal (comparing what changed since its last proof), then the job is committed.
    async fn commit(
        &self,
        writer: &mut ChangeWriter,
        verifying: &mut Option<Verifying>,
        sync: &mut SyncCheckpoint,
        end: u32,
    ) -> Result<(), CopyError> {
        let mut proven = false;
        if let Some(v) = verifying.as_mut() {
            v.finish().await?;
            let proof = v.verifier.prove(writer, f64::from(end)).await?;
            proven = proof.unproven.is_none();
            match &proof.unproven {
                None => tracing::info!(
                    "commit verified: equal through {end} ({} documents compared again)",
                    proof.rechecked
                ),
                Some(why) => tracing::warn!("commit not verified: {why}"),
            }
        }
        // Every change is applied: the sync's own writes are over.
        self.block(Side::Destination).await?;
        sync.committed = true;
        // Where the destination's history stands at the commit point, every change applied:
        // a reverse sync (fail back) starts there.
        sync.reverse_from = reverse_point(&self.destination, &self.routes)
            .await
            .map(|from| ReverseFrom {
                filtered: self.refresh,
                transformed: self.transformed,
                proven,
                ..from
            });
        self.ledger.set_sync_position(sync.clone());
        self.stats.sync.set_phase(SyncPhase::Committed);
        Ok(())
    }

    /// Blocks the application's writes on `side` at the commit, if the job asks for it.
    async fn block(&self, side: Side) -> Result<(), CopyError> {
        let (client, uri) = match side {
            Side::Destination => (&self.destination, &self.uris.1),
            _ => (&self.source_client, &self.uris.0),
        };
        cutover::block_at_commit(self.block_writes, side, client, uri)
            .await
            .map(|_| ())
            .map_err(|e| CopyError::CannotCommit(e.to_string()))
    }

    /// The source had nothing more: the position is saved; `true` when the sync ends here (level
    /// with the source after the commit was asked for, or `--until-caught-up`).
    fn quiet(
        &self,
        sync: &mut SyncCheckpoint,
        position: Option<Position>,
        since: Instant,
        committing: Option<Instant>,
    ) -> AfterQuiet {
        let stats = &self.stats;
        stats.sync.set_quiet();
        // A server that gave no position yet (no event, no resume token in its reply):
        // everything up to where the sync started is applied, and the checkpoint says so (a
        // rerun goes on from there either way).
        let position = position.or_else(|| {
            sync.applied
                .is_none()
                .then(|| Position::from_json(&sync.start).ok())
                .flatten()
        });
        self.applied(sync, position, 0, &EventCounts::default());
        if stats.sync.phase() == Some(SyncPhase::CatchingUp) {
            tracing::info!("caught up with the source: following it live");
            stats.sync.set_phase(SyncPhase::Live);
        }
        match (self.until, committing) {
            (_, Some(asked)) if since > asked => AfterQuiet::Commit,
            // The position is kept: a later run follows on from here.
            (Until::CaughtUp, None) => AfterQuiet::CaughtUp,
            _ => AfterQuiet::GoOn,
        }
    }

    /// Everything up to `position` is applied: the checkpointer may save it.
    fn applied(
        &self,
        sync: &mut SyncCheckpoint,
        position: Option<Position>,
        secs: u32,
        events: &EventCounts,
    ) {
        if let Some(position) = position {
            sync.applied = Some(position.to_json());
        }
        sync.applied_secs = sync.applied_secs.max(secs);
        sync.events += events.total();
        self.ledger.set_sync_position(sync.clone());
    }

    /// Makes a schema change of the source at the destination; one it cannot make stops the job.
    async fn apply_schema(
        &self,
        change: &SchemaChange,
        writer: &mut ChangeWriter,
    ) -> Result<(), CopyError> {
        let named = |detail: String| {
            CopyError::Change(format!(
                "the source's {} of {} ({detail}); the job stops rather than skip it",
                match &change.op {
                    SchemaOp::Ddl(op) => op.name().to_string(),
                    SchemaOp::Unknown(op) => op.clone(),
                },
                change.ns
            ))
        };
        let op = match &change.op {
            SchemaOp::Ddl(op) => *op,
            SchemaOp::Unknown(_) => {
                return Err(named("not a change this version can apply".into()))
            }
        };
        let log = &self.stats.schema;
        let routed = self.routes.destination(&change.ns);
        let outcome = match op {
            // Its collections' drops came first, each as an event of its own.
            DdlOp::DropDatabase => Ok(()),
            DdlOp::Drop => match &routed {
                Some(dst) => {
                    schema::drop(&self.destination, dst).await?;
                    log.update(|p| p.dropped.push(dst.to_string()));
                    Ok(())
                }
                None => Ok(()),
            },
            DdlOp::Rename => self.rename(change, routed.as_ref(), writer).await,
            DdlOp::Create | DdlOp::CreateIndexes | DdlOp::DropIndexes | DdlOp::Modify => {
                match &routed {
                    Some(dst) => self.reconcile(&change.ns, dst).await,
                    None => Ok(()),
                }
            }
        };
        outcome.map_err(|e| match e {
            CopyError::Stopped => CopyError::Stopped,
            other => named(other.to_string()),
        })
    }

    async fn rename(
        &self,
        change: &SchemaChange,
        from: Option<&Namespace>,
        writer: &mut ChangeWriter,
    ) -> Result<(), CopyError> {
        let Some(to_source) = &change.to else {
            return Err(CopyError::Internal("a rename without its new name".into()));
        };
        let to = self.routes.destination(to_source);
        match (from, to) {
            (Some(from), Some(to)) => {
                let exists = schema::read(&self.destination, Side::Destination, from)
                    .await?
                    .is_some();
                if exists {
                    schema::rename(&self.destination, from, &to).await?;
                    Ok(())
                } else {
                    self.copy_whole(to_source, &to, writer).await
                }
            }
            // Renamed out of the job: gone from its point of view.
            (Some(from), None) => Ok(schema::drop(&self.destination, from).await?),
            // Renamed into the job: its documents never came as events.
            (None, Some(to)) => self.copy_whole(to_source, &to, writer).await,
            (None, None) => Ok(()),
        }
    }

    /// Makes the destination's namespace like the source's now ([`schema::make_like`]).
    async fn reconcile(&self, source: &Namespace, dst: &Namespace) -> Result<(), CopyError> {
        let Some(wanted) = self.source_schema(source).await? else {
            // Gone since: its drop or rename follows in the stream.
            return Ok(());
        };
        super::schema::make_like(&self.destination, dst, &wanted, &self.stats.schema, true).await
    }

    /// The source's schema of `ns` as the destination should have it (a view's source renamed).
    async fn source_schema(&self, ns: &Namespace) -> Result<Option<Schema>, CopyError> {
        let Some(found) = schema::read(&self.source_client, Side::Source, ns).await? else {
            return Ok(None);
        };
        Ok(Some(match found.kind {
            Kind::View => found.with_view_on(|on| {
                self.routes
                    .destination(&Namespace::new(&ns.db, on))
                    .map_or_else(|| on.to_string(), |d| d.coll)
            }),
            _ => found,
        }))
    }

    /// Copies a whole collection that came into the job (a rename into a selected database):
    /// schema first, then its documents as they are now, read as the copy reads them (its later
    /// changes follow as events).
    async fn copy_whole(
        &self,
        source: &Namespace,
        dst: &Namespace,
        writer: &mut ChangeWriter,
    ) -> Result<(), CopyError> {
        self.reconcile(source, dst).await?;
        writer.copy_namespace(source, dst).await
    }
}
