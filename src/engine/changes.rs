//! A sync's changes as the engine's feed: the source's change events in, batches of writes by
//! `_id` on the engine's queue out.
//!
//! In: [`ChangeEvent`]s in the source's order, from the change-stream source, and where each
//! namespace goes ([`Route`]). Out: [`Step`]s — document changes gathered into [`Chunk`]s, schema
//! changes one by one, and the quiet moments ([`gather`]) — and, for each chunk, its writes
//! queued and acknowledged ([`ChangeWriter`]): the engine's workers write them, as they write a
//! copy's batches.
//!
//! # Order, and why the result converges
//!
//! A chunk keeps only the **last** change of each `_id` it gathers. What a document must become
//! depends only on its last change: an insert or replace carries the document as written; an
//! update carries the document as it was when the stream read the event (`updateLookup`), which
//! is that update's result or something later; a delete means the document is gone (if it came
//! back, a later insert says so). An update whose lookup answered no document (or a document of
//! another `_id` of the same value) does not prove it gone: a server may answer nothing for a
//! document it holds (SecantusDB does for `_id: null`), so the part reads it again from the
//! source by its exact `_id` and deletes it only if the source lacks it. Each write is therefore
//! a **state** ("the document is now X", "there is no document"), and applying the last state of
//! every `_id` is idempotent and lands where the source is.
//!
//! An `_id` is exact here, its type included ([`IdKey`]): `{_id: 1}` and `{_id: 1.0}` are two
//! documents of the source, one after the other. The server, though, takes them for one: a
//! write by `{_id: 1.0}` matches `{_id: 1}`, and a replacement there keeps the stored type (or
//! is refused, `NumberLong` to `Decimal128`). So a chunk never holds changes of two `_id`s of one
//! value: a change of `1.0` after one of `1` starts the next chunk, and the delete of `1` is
//! applied before the insert of `1.0`.
//!
//! Within a chunk every `_id` appears once, so its writes are split into parts of at most
//! `batch_size` that the engine's workers write in parallel, under the same pause, throttle (and
//! so adaptive mode) and dead letters as a copy. Chunks are written one after the other: a
//! barrier ([`QueueSender::barrier`]) waits for every part of a chunk before the next is queued,
//! so a later change of an `_id` is never written before an earlier one. A part's `_id`s are not
//! hashed to lanes: chunk order already keeps each `_id`'s events in order, and any split of a
//! chunk is independent.
//!
//! With a filter, the events' documents are not trusted to match it: the part goes as a
//! [`Payload::Current`] batch, whose worker reads the current documents of its `_id`s from the
//! source with the filter (`$in`), writes those it finds (of exactly those `_id`s: `$in` answers
//! `1.0` for `1` too) and deletes the others at the destination. A document that stops matching is deleted; one that starts to match (an update
//! brings it in) is copied.
//!
//! # Position
//!
//! Every step carries the stream's position after its last event. A chunk's position may be
//! saved once the chunk is applied: chunks finish in order, so that is the low watermark over
//! the events' sequence, and everything before it is applied. A killed run reads again from the
//! saved position and applies some events twice, which is harmless (states, by `_id`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{RawBson, RawDocumentBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::CopyError;
use super::queue::{Payload, QueueSender};
use super::sink::seam::Write;
use super::source::change_stream::{Change, ChangeEvent, ChangeFeed, DdlOp, DocOp, Position};
use super::source::seam::Source;
use super::stats::{EventCounts, JobStats, NsCounters};
use super::task::NsTask;
use crate::mongo::bson_order::{self, IdKey};
use crate::mongo::Namespace;

/// Where a source namespace goes at the destination; `None`: the job does not follow it.
pub type Route = Arc<dyn Fn(&Namespace) -> Option<Namespace> + Send + Sync>;

/// The last change of one `_id` in a chunk.
#[derive(Debug, Clone)]
pub struct DocChange {
    pub source: Namespace,
    pub destination: Namespace,
    pub id: RawBson,
    pub op: DocOp,
    pub doc: Option<RawDocumentBuf>,
}

/// Document changes to apply together, the last one per `_id`.
#[derive(Debug, Default)]
pub struct Chunk {
    /// By the document's slot at the server ([`bson_order::slot_key`]); the change kept there
    /// is always of the same exact `_id` ([`Chunk::takes`]).
    changes: HashMap<(Namespace, Vec<u8>), DocChange>,
    /// Events gathered (before keeping the last per `_id`), by kind.
    pub events: EventCounts,
    bytes: usize,
    /// Cluster time of the last event (Unix seconds).
    pub last_secs: u32,
    /// The position after the last event gathered (ignored ones too).
    pub end: Option<Position>,
    /// When its first change was gathered.
    started: Option<Instant>,
}

impl Chunk {
    /// Every `_id` the chunk changes: (source, destination, `_id`).
    pub fn ids(&self) -> Vec<(Namespace, Namespace, RawBson)> {
        self.changes
            .values()
            .map(|c| (c.source.clone(), c.destination.clone(), c.id.clone()))
            .collect()
    }

    fn push(&mut self, change: DocChange, bytes: usize) {
        let count = match change.op {
            DocOp::Insert => &mut self.events.insert,
            DocOp::Update => &mut self.events.update,
            DocOp::Replace => &mut self.events.replace,
            DocOp::Delete => &mut self.events.delete,
        };
        *count += 1;
        self.bytes += bytes;
        let key = (change.source.clone(), bson_order::slot_key(&change.id));
        if let Some(earlier) = self.changes.insert(key, change) {
            self.bytes = self
                .bytes
                .saturating_sub(earlier.doc.map_or(0, |d| d.as_bytes().len()));
        }
    }

    /// Whether a change of `id` may join: not if the chunk holds a change of another `_id` of
    /// the same value (`1` then `1.0`). Kept apart, the earlier one is applied first (a delete
    /// of the int before the insert of the double); merged, the destination would keep the
    /// int, as a write by `{_id: 1.0}` matches it.
    fn takes(&self, ns: &Namespace, id: &RawBson) -> bool {
        self.changes
            .get(&(ns.clone(), bson_order::slot_key(id)))
            .is_none_or(|held| IdKey::of(&held.id) == IdKey::of(id))
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Distinct `_id`s to write.
    pub fn len(&self) -> usize {
        self.changes.len()
    }
}

/// A schema change of a namespace the job follows, in the stream's order.
#[derive(Debug, Clone)]
pub struct SchemaChange {
    pub op: SchemaOp,
    pub ns: Namespace,
    /// The new name of a rename.
    pub to: Option<Namespace>,
    pub secs: u32,
    pub end: Position,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaOp {
    Ddl(DdlOp),
    /// An event this version cannot apply (named in the error it causes).
    Unknown(String),
}

/// What the gatherer hands to the follower.
#[derive(Debug)]
pub enum Step {
    /// Document changes, applied together.
    Changes(Chunk),
    /// A schema change: everything before it is applied first, and it before anything after.
    Schema(SchemaChange),
    /// The source had nothing more for now, when asked at `since`; the stream's position.
    Quiet {
        position: Option<Position>,
        since: Instant,
    },
}

/// How large a chunk may grow, and how long its first change may wait for the others.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub changes: usize,
    pub bytes: usize,
    pub wait: Duration,
}

/// How long a change may wait for others to fill its chunk: under a steady trickle of writes
/// the source is never quiet, and a chunk would otherwise wait until full.
pub const CHUNK_WAIT: Duration = Duration::from_millis(100);

/// Reads the feed into steps until `cancel`, or the first error (sent on as `Err`). At most
/// one chunk waits in `steps` while another is gathered. A chunk goes when it is full, when its
/// first change has waited [`ChunkLimits::wait`], or when the source is quiet. Each step of
/// changes is counted as read in `stats` (for the lag) when its first change is gathered.
pub async fn gather(
    mut feed: ChangeFeed,
    route: Route,
    limits: ChunkLimits,
    stats: Arc<JobStats>,
    steps: mpsc::Sender<Result<Step, CopyError>>,
    cancel: CancellationToken,
) {
    let sync = &stats.sync;
    let mut chunk = Chunk::default();
    loop {
        let asked = Instant::now();
        let next = tokio::select! {
            next = feed.next() => next,
            _ = cancel.cancelled() => return,
        };
        let step = match next {
            Err(e) => Err(e),
            // Quiet: what was gathered goes now, then the position.
            Ok(None) => {
                if !chunk.is_empty() && !send(&steps, Ok(Step::Changes(take(&mut chunk)))).await {
                    return;
                }
                Ok(Step::Quiet {
                    position: feed.position().or_else(|| chunk.end.take()),
                    since: asked,
                })
            }
            Ok(Some(event)) => {
                let made_ms = event.made_ms;
                let mut was_empty = chunk.is_empty();
                match gathered(&mut chunk, event, &route) {
                    Gathered::Schema(schema) => {
                        if !chunk.is_empty()
                            && !send(&steps, Ok(Step::Changes(take(&mut chunk)))).await
                        {
                            return;
                        }
                        sync.read(made_ms);
                        Ok(Step::Schema(schema))
                    }
                    gathered => {
                        if let Gathered::After(earlier) = gathered {
                            if !send(&steps, Ok(Step::Changes(earlier))).await {
                                return;
                            }
                            was_empty = true;
                        }
                        if was_empty && !chunk.is_empty() {
                            sync.read(made_ms);
                            chunk.started = Some(Instant::now());
                        }
                        let waited = chunk.started.is_some_and(|t| t.elapsed() >= limits.wait);
                        if !chunk.is_empty()
                            && (chunk.len() >= limits.changes
                                || chunk.bytes >= limits.bytes
                                || waited)
                        {
                            Ok(Step::Changes(take(&mut chunk)))
                        } else {
                            continue;
                        }
                    }
                }
            }
        };
        let failed = step.is_err();
        if !send(&steps, step).await || failed {
            return;
        }
    }
}

async fn send(
    steps: &mpsc::Sender<Result<Step, CopyError>>,
    step: Result<Step, CopyError>,
) -> bool {
    steps.send(step).await.is_ok()
}

fn take(chunk: &mut Chunk) -> Chunk {
    std::mem::take(chunk)
}

/// What became of an event.
#[derive(Debug)]
enum Gathered {
    /// Added to the chunk, or ignored.
    Changes,
    /// A schema change.
    Schema(SchemaChange),
    /// It started a new chunk: these earlier changes go first ([`Chunk::takes`]).
    After(Chunk),
}

/// Adds a document change to the chunk, or returns the schema change the event is.
fn gathered(chunk: &mut Chunk, event: ChangeEvent, route: &Route) -> Gathered {
    let ChangeEvent {
        change,
        cluster_secs,
        after,
        bytes,
        ..
    } = event;
    let mut earlier = None;
    if let Change::Doc { ns, id, .. } = &change {
        if !chunk.takes(ns, id) {
            earlier = Some(take(chunk));
        }
    }
    chunk.end = Some(after.clone());
    let schema = |op, ns: Namespace, to| SchemaChange {
        op,
        ns,
        to,
        secs: cluster_secs,
        end: after.clone(),
    };
    let found = match change {
        Change::Doc { ns, id, op, doc } => {
            if let Some(destination) = route(&ns) {
                chunk.last_secs = chunk.last_secs.max(cluster_secs);
                chunk.push(
                    DocChange {
                        source: ns,
                        destination,
                        id,
                        op,
                        doc,
                    },
                    bytes,
                );
            }
            None
        }
        Change::Ddl { op, ns, to } => {
            let followed = route(&ns).is_some()
                || to.as_ref().is_some_and(|to| route(to).is_some())
                || op == DdlOp::DropDatabase;
            followed.then(|| schema(SchemaOp::Ddl(op), ns, to))
        }
        Change::Other { op, ns: Some(ns) } if route(&ns).is_some() => {
            Some(schema(SchemaOp::Unknown(op), ns, None))
        }
        Change::Other { .. } | Change::Invalidate => None,
    };
    match (found, earlier) {
        (Some(schema), _) => Gathered::Schema(schema),
        (None, Some(earlier)) => Gathered::After(earlier),
        (None, None) => Gathered::Changes,
    }
}

/// Queues a sync's changes on the engine's queue, a chunk at a time, each one written before
/// the next is queued; and the documents of a namespace that came into the job, through the
/// job's own source.
pub struct ChangeWriter {
    queue: QueueSender,
    source: Arc<dyn Source>,
    /// One task per namespace pair: the changes' batches report to it, and the barrier waits
    /// for it. Their counters are the task's own: a sync counts changes as events
    /// ([`SyncStats`](super::stats::SyncStats)), not as documents copied.
    tasks: HashMap<(Namespace, Namespace), Arc<NsTask>>,
    /// The job has a filter: every change is read again from the source with it.
    refresh: bool,
    batch_size: usize,
}

impl ChangeWriter {
    pub fn new(
        queue: QueueSender,
        source: Arc<dyn Source>,
        refresh: bool,
        batch_size: usize,
    ) -> Self {
        ChangeWriter {
            queue,
            source,
            tasks: HashMap::new(),
            refresh,
            batch_size: batch_size.max(1),
        }
    }

    fn task(&mut self, source: &Namespace, destination: &Namespace) -> Arc<NsTask> {
        self.tasks
            .entry((source.clone(), destination.clone()))
            .or_insert_with(|| {
                let counters = NsCounters::new(source.clone(), destination.clone());
                Arc::new(NsTask::new(Arc::new(counters)))
            })
            .clone()
    }

    /// Queues a chunk's writes in parts of at most a batch, and returns once every part is
    /// written (or the job stops). Within a chunk each `_id` appears once, so its parts may be
    /// written in any order, in parallel; the next chunk waits.
    pub async fn write(&mut self, chunk: Chunk) -> Result<(), CopyError> {
        let mut by_ns: HashMap<(Namespace, Namespace), Vec<DocChange>> = HashMap::new();
        for (_, change) in chunk.changes {
            let key = (change.source.clone(), change.destination.clone());
            by_ns.entry(key).or_default().push(change);
        }
        let mut used = Vec::with_capacity(by_ns.len());
        for ((source, destination), changes) in by_ns {
            let task = self.task(&source, &destination);
            let (known, unsure): (Vec<DocChange>, Vec<DocChange>) = if self.refresh {
                (Vec::new(), changes)
            } else {
                changes.into_iter().partition(is_known)
            };
            for part in chunks_of(known, self.batch_size) {
                let writes = part.into_iter().map(as_written).collect();
                self.queue.send(&task, Payload::Writes(writes)).await?;
            }
            for part in chunks_of(unsure, self.batch_size) {
                let ids = part.into_iter().map(|c| c.id).collect();
                self.queue.send(&task, Payload::Current(ids)).await?;
            }
            used.push(task);
        }
        for task in used {
            self.queue.barrier(&task).await?;
        }
        Ok(())
    }

    /// Writes `ids` of `destination` again as `source` holds them now (or deletes those it
    /// does not hold), and returns once they are written: a verifier's repair.
    pub async fn rewrite(
        &mut self,
        source: &Namespace,
        destination: &Namespace,
        ids: Vec<RawBson>,
    ) -> Result<(), CopyError> {
        let task = self.task(source, destination);
        for part in chunks_of(ids, self.batch_size) {
            self.queue.send(&task, Payload::Current(part)).await?;
        }
        Ok(self.queue.barrier(&task).await?)
    }

    /// Queues the documents `source` holds now of `from` (its filter applied) for `to`, read as
    /// a copy reads them, and returns once all are written. Its later changes follow as events.
    pub async fn copy_namespace(
        &mut self,
        from: &Namespace,
        to: &Namespace,
    ) -> Result<(), CopyError> {
        let counters = NsCounters::new(from.clone(), to.clone());
        let task = Arc::new(NsTask::new(Arc::new(counters)));
        self.source
            .produce(&task, self.batch_size, &self.queue)
            .await?;
        task.mark_produced();
        Ok(self.queue.barrier(&task).await?)
    }
}

/// `items` in parts of at most `size`.
fn chunks_of<T>(mut items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut parts = Vec::with_capacity(items.len().div_ceil(size));
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(size));
        parts.push(std::mem::replace(&mut items, rest));
    }
    parts
}

/// Whether the event itself says what the document is now: a delete, or a document of exactly
/// its `_id`. An update whose lookup found nothing, or found another `_id` of the same value, is
/// not proof that the document is gone: a server may answer no document for one it holds
/// (SecantusDB does for `_id: null`), so the source is asked again by that `_id`.
fn is_known(change: &DocChange) -> bool {
    match (&change.op, &change.doc) {
        (DocOp::Delete, _) => true,
        (_, Some(doc)) => doc
            .get("_id")
            .ok()
            .flatten()
            .is_some_and(|id| IdKey::of(&id.to_raw_bson()) == IdKey::of(&change.id)),
        (_, None) => false,
    }
}

/// The write an event's own document asks for (one [`is_known`]).
fn as_written(change: DocChange) -> Write {
    match (change.op, change.doc) {
        (DocOp::Insert, Some(doc)) => Write::Insert(doc),
        (DocOp::Update | DocOp::Replace, Some(doc)) => Write::Replace(doc),
        _ => Write::Delete(change.id),
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{doc, rawdoc, Bson};

    use super::*;

    fn position(n: i32) -> Position {
        Position(mongodb::bson::from_bson(Bson::Document(doc! { "_data": n.to_string() })).unwrap())
    }

    fn event(n: i32, change: Change) -> ChangeEvent {
        ChangeEvent {
            change,
            cluster_secs: 100 + n as u32,
            made_ms: (100 + n as u64) * 1000,
            after: position(n),
            bytes: 100,
        }
    }

    fn doc_change(ns: &str, id: i32, op: DocOp, x: Option<i32>) -> Change {
        Change::Doc {
            ns: Namespace::new("a", ns),
            id: RawBson::Int32(id),
            op,
            doc: x.map(|x| rawdoc! { "_id": id, "x": x }),
        }
    }

    fn route() -> Route {
        Arc::new(|ns: &Namespace| (ns.coll != "skip").then(|| Namespace::new("b", &ns.coll)))
    }

    #[test]
    fn a_chunk_keeps_the_last_change_of_each_id() {
        let route = route();
        let mut chunk = Chunk::default();
        let events = [
            doc_change("c", 1, DocOp::Insert, Some(1)),
            doc_change("c", 1, DocOp::Update, Some(2)),
            doc_change("c", 2, DocOp::Insert, Some(1)),
            doc_change("skip", 3, DocOp::Insert, Some(1)),
            doc_change("c", 2, DocOp::Delete, None),
            doc_change("c", 1, DocOp::Replace, Some(3)),
        ];
        for (n, change) in events.into_iter().enumerate() {
            assert!(matches!(
                gathered(&mut chunk, event(n as i32, change), &route),
                Gathered::Changes
            ));
        }
        assert_eq!(chunk.len(), 2);
        assert_eq!(
            chunk.events,
            EventCounts {
                insert: 2,
                update: 1,
                replace: 1,
                delete: 1,
                ddl: 0
            }
        );
        assert_eq!(
            chunk.end,
            Some(position(5)),
            "ignored events move the position too"
        );
        assert_eq!(chunk.last_secs, 105);
        let mut writes: Vec<(Namespace, Write)> = chunk
            .changes
            .into_values()
            .map(|c| (c.destination.clone(), as_written(c)))
            .collect();
        writes.sort_by_key(|(_, w)| matches!(w, Write::Delete(_)));
        assert_eq!(
            writes,
            [
                (
                    Namespace::new("b", "c"),
                    Write::Replace(rawdoc! { "_id": 1, "x": 3 })
                ),
                (Namespace::new("b", "c"), Write::Delete(RawBson::Int32(2))),
            ]
        );
    }

    #[test]
    fn a_number_id_of_another_type_starts_a_new_chunk() {
        let route = route();
        let mut chunk = Chunk::default();
        let double = |op, doc| Change::Doc {
            ns: Namespace::new("a", "c"),
            id: RawBson::Double(1.0),
            op,
            doc,
        };
        let events = [
            doc_change("c", 1, DocOp::Delete, None),
            doc_change("c", 2, DocOp::Insert, Some(1)),
            // 1.0 after 1: to the server the same `_id`, to the source another document.
            double(DocOp::Insert, Some(rawdoc! { "_id": 1.0, "x": 3 })),
        ];
        let outcomes: Vec<Gathered> = events
            .into_iter()
            .enumerate()
            .map(|(n, change)| gathered(&mut chunk, event(n as i32, change), &route))
            .collect();
        let [Gathered::Changes, Gathered::Changes, Gathered::After(earlier)] = &outcomes[..] else {
            panic!("the double starts a chunk: {outcomes:?}");
        };
        assert_eq!(earlier.len(), 2);
        assert_eq!(earlier.end, Some(position(1)), "up to the event before");
        assert_eq!(chunk.len(), 1);
        assert_eq!(chunk.end, Some(position(2)));
        let last = chunk.changes.into_values().next().unwrap();
        assert_eq!(last.id, RawBson::Double(1.0));
        // Another `_id` of another value joins as usual; the same double too.
        let mut chunk = Chunk::default();
        for change in [
            double(DocOp::Insert, Some(rawdoc! { "_id": 1.0 })),
            doc_change("c", 2, DocOp::Insert, Some(1)),
            double(DocOp::Delete, None),
        ] {
            assert!(matches!(
                gathered(&mut chunk, event(0, change), &route),
                Gathered::Changes
            ));
        }
        assert_eq!(chunk.len(), 2);
    }

    #[test]
    fn schema_changes_of_followed_namespaces_are_steps_of_their_own() {
        let route = route();
        let mut chunk = Chunk::default();
        let rename_in = Change::Ddl {
            op: DdlOp::Rename,
            ns: Namespace::new("a", "skip"),
            to: Some(Namespace::new("a", "kept")),
        };
        let Gathered::Schema(schema) = gathered(&mut chunk, event(1, rename_in), &route) else {
            panic!("a schema change");
        };
        assert_eq!(schema.op, SchemaOp::Ddl(DdlOp::Rename));
        let ignored = Change::Ddl {
            op: DdlOp::Drop,
            ns: Namespace::new("a", "skip"),
            to: None,
        };
        assert!(matches!(
            gathered(&mut chunk, event(2, ignored), &route),
            Gathered::Changes
        ));
        let unknown = Change::Other {
            op: "shardCollection".into(),
            ns: Some(Namespace::new("a", "c")),
        };
        let Gathered::Schema(schema) = gathered(&mut chunk, event(3, unknown), &route) else {
            panic!("a schema change");
        };
        assert_eq!(schema.op, SchemaOp::Unknown("shardCollection".into()));
        assert!(chunk.is_empty());
    }

    #[test]
    fn an_update_without_its_own_document_is_read_again() {
        let change = |id: RawBson, op, doc| DocChange {
            source: Namespace::new("a", "c"),
            destination: Namespace::new("a", "c"),
            id,
            op,
            doc,
        };
        assert!(!is_known(&change(RawBson::Null, DocOp::Update, None)));
        // The lookup found the same number as another type: another document.
        let other = Some(rawdoc! { "_id": 7.0, "x": 1 });
        assert!(!is_known(&change(RawBson::Int32(7), DocOp::Update, other)));
        let own = Some(rawdoc! { "_id": 7, "x": 1 });
        assert!(is_known(&change(RawBson::Int32(7), DocOp::Update, own)));
        assert!(is_known(&change(RawBson::Int32(7), DocOp::Delete, None)));
    }
}
