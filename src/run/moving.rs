//! The move driver: a copy whose every stored document is read back at the destination and
//! then deleted from the source, in passes until nothing that can move is left.
//!
//! In: a prepared job in `move` mode. Out: its documents at the destination and gone from the
//! source; what changed after its copy stays at the source (another pass copies it again), and
//! what the destination refused stays too. Per batch ([`DeleteFromSource`], the engine's
//! [`Settle`] step after the sink stored it): the documents stored are read back from the
//! destination and compared byte for byte with what was written (matched by their exact `_id`,
//! type included: [`IdKey`]); those the destination holds exactly are deleted from the source —
//! only where the source still holds them byte-identical to the copy.
//!
//! # Never deleting a changed document
//!
//! The delete of a batch is one transaction on the source: it reads the documents by `_id`,
//! compares each one's raw bytes with the copy, and deletes by `_id` only the equal ones. Inside
//! the transaction every document read is either deleted as it was read, or left alone:
//!
//! - a writer that changed a document before the transaction read it: the bytes differ, the
//!   document stays (counted as *changed*), and the next pass copies it again;
//! - a writer that changes it after the read and before the commit: the transaction's delete and
//!   that write conflict, one of them is refused (a write conflict: the transaction is retried and
//!   reads the new bytes, or the writer's driver retries its write, which then finds no document
//!   — a retried update by `_id` of a deleted document is an application's ordinary race with a
//!   delete, and the copy at the destination is the one it read).
//!
//! A document the destination refused (a dead letter), or does not hold exactly as written, is
//! never deleted. The destination's writes of a move are made durable by the run
//! ([`MongoSink::durable`](crate::engine::MongoSink::durable): `w: majority, j: true` whatever the URI
//! says), so no rollback there can undo a write whose source document is deleted. With `keep_source` nothing is deleted: a rehearsal that copies and verifies.
//! Deletes wait for the same throttle as the writes (the job's limit counts both).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{doc, rawdoc, Bson, Document, RawBson, RawDocumentBuf};
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::Client;
use tokio_util::sync::CancellationToken;

use super::schema::Selection;
use crate::engine::control::throttle::Throttle;
use crate::engine::source::id_of;
use crate::engine::stats::{JobStats, MoveStats};
use crate::engine::transform::Steps;
use crate::engine::{CopyError, Engine, NsTask, Settle};
use crate::journal::writer::{EncodedBatch, JournalSender};
use crate::journal::Op;
use crate::mongo::bson_order::IdKey;
use crate::mongo::schema::{estimated_count, Schema};
use crate::mongo::{describe, MongoError, Namespace, Side};

/// `_id`s per read-back query: `$in` lists cost more per `_id` as they grow on some servers.
const READ_BACK_IDS: usize = 100;

/// How long a batch's delete transaction is tried again while it conflicts: longer than a
/// server keeps a transaction that its client abandoned (60 s on mongod: a killed run's
/// transaction holds its documents until then).
const CONFLICTS_FOR_AT_MOST: Duration = Duration::from_secs(90);

/// WriteConflict and NoSuchTransaction: worth a new transaction even without the label.
const TRANSIENT_CODES: [i32; 2] = [112, 251];

/// Deletes a batch's stored documents from the source once the destination holds them.
pub struct DeleteFromSource {
    pub source: Client,
    pub destination: Client,
    /// A rehearsal: read back and counted, nothing deleted.
    pub keep_source: bool,
    pub throttle: Throttle,
    pub stats: Arc<MoveStats>,
    /// Records each delete from the source (record 4), when the job journals.
    pub journal: Option<JournalSender>,
    /// The transform each destination namespace's documents went through (a move that
    /// allows it): the destination is compared with the source's documents transformed.
    pub transforms: HashMap<Namespace, Arc<Steps>>,
}

impl DeleteFromSource {
    /// The step after each stored batch, for the move's first pass (a rehearsal's, with
    /// `keep_source`).
    pub fn first_pass(self) -> Arc<dyn Settle> {
        self.stats.start_pass();
        if self.keep_source {
            self.stats.set_rehearsal();
        }
        Arc::new(self)
    }

    async fn settle_batch(
        &self,
        task: &NsTask,
        stored: Vec<RawDocumentBuf>,
    ) -> Result<(), CopyError> {
        let ns = &task.destination;
        // What was stored, by `_id`, to compare with what comes back.
        let mut sent = HashMap::with_capacity(stored.len());
        for doc in stored {
            sent.insert(IdKey::of(&id_of(&doc, ns)?), doc);
        }
        let verified = self.verified(ns, sent).await?;
        self.stats.add_verified(verified.len() as u64);
        if self.keep_source || verified.is_empty() {
            return Ok(());
        }
        let source = &task.source;
        self.throttle.acquire(verified.len() as u64, 0).await;
        let deleted = self.delete_unchanged(source, &verified).await?;
        self.stats.add_deleted(
            deleted.len() as u64,
            (verified.len() - deleted.len()) as u64,
        );
        if let (Some(journal), false) = (&self.journal, deleted.is_empty()) {
            let records: Vec<RawDocumentBuf> = deleted
                .iter()
                .map(|id| rawdoc! { "_id": id.clone() })
                .collect();
            let batch =
                EncodedBatch::encode_ops(ns, records.iter().map(|r| (Op::Moved, r.as_bytes())))?;
            journal.append(batch).await?;
        }
        Ok(())
    }

    /// The documents of `sent` the destination holds byte-identical (read back by `_id`).
    async fn verified(
        &self,
        ns: &Namespace,
        mut sent: HashMap<IdKey, RawDocumentBuf>,
    ) -> Result<Vec<RawDocumentBuf>, CopyError> {
        let collection = self
            .destination
            .database(&ns.db)
            .collection::<RawDocumentBuf>(&ns.coll);
        let ids: Vec<RawBson> = sent
            .values()
            .map(|d| id_of(d, ns))
            .collect::<Result<_, _>>()?;
        let mut verified = Vec::with_capacity(ids.len());
        for part in ids.chunks(READ_BACK_IDS) {
            let found: Vec<RawDocumentBuf> = collection
                .find(doc! { "_id": { "$in": as_bson(part)? } })
                .await
                .map_err(|e| failed(Side::Destination, ns, "find", &e))?
                .try_collect()
                .await
                .map_err(|e| failed(Side::Destination, ns, "find", &e))?;
            let steps = self.transforms.get(ns);
            for doc in found {
                let key = IdKey::of(&id_of(&doc, ns)?);
                if let Some(copy) = sent.remove(&key) {
                    let written = match steps {
                        Some(steps) => steps.apply(copy.clone()).ok(),
                        None => Some(copy.clone()),
                    };
                    if written.is_some_and(|w| w.as_bytes() == doc.as_bytes()) {
                        verified.push(copy);
                    }
                }
            }
        }
        Ok(verified)
    }

    /// Deletes from `source` the documents still byte-identical to `copies`, in one transaction;
    /// returns the `_id`s deleted.
    async fn delete_unchanged(
        &self,
        source: &Namespace,
        copies: &[RawDocumentBuf],
    ) -> Result<Vec<RawBson>, CopyError> {
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(5);
        loop {
            match self.delete_once(source, copies).await {
                Ok(deleted) => return Ok(deleted),
                Err(e) if is_transient(&e) && started.elapsed() < CONFLICTS_FOR_AT_MOST => {
                    self.stats.add_conflict();
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(failed(Side::Source, source, "delete", &e)),
            }
        }
    }

    async fn delete_once(
        &self,
        ns: &Namespace,
        copies: &[RawDocumentBuf],
    ) -> mongodb::error::Result<Vec<RawBson>> {
        let copied: HashMap<IdKey, &RawDocumentBuf> = copies
            .iter()
            .filter_map(|d| Some((IdKey::of(&d.get("_id").ok()??.to_raw_bson()), d)))
            .collect();
        let ids: Vec<RawBson> = copies
            .iter()
            .filter_map(|d| Some(d.get("_id").ok()??.to_raw_bson()))
            .collect();
        let collection = self
            .source
            .database(&ns.db)
            .collection::<RawDocumentBuf>(&ns.coll);
        let mut session = self.source.start_session().await?;
        session.start_transaction().await?;
        let mut unchanged = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for part in ids.chunks(READ_BACK_IDS) {
            let in_list =
                as_bson(part).map_err(|e| mongodb::error::Error::custom(e.to_string()))?;
            let mut cursor = collection
                .find(doc! { "_id": { "$in": in_list } })
                .session(&mut session)
                .await?;
            while let Some(doc) = cursor.next(&mut session).await.transpose()? {
                let Some(id) = doc.get("_id").ok().flatten().map(|i| i.to_raw_bson()) else {
                    continue;
                };
                // `$in` answers `1.0` for `1` too: that is another document, and not a sign
                // that the copied one is still there.
                let key = IdKey::of(&id);
                let Some(copy) = copied.get(&key) else {
                    continue;
                };
                seen.insert(key);
                if copy.as_bytes() == doc.as_bytes() {
                    unchanged.push(id);
                }
            }
        }
        // By value, but in the transaction that read them: the document of each value is the
        // one just compared.
        for part in unchanged.chunks(READ_BACK_IDS) {
            let in_list =
                as_bson(part).map_err(|e| mongodb::error::Error::custom(e.to_string()))?;
            collection
                .delete_many(doc! { "_id": { "$in": in_list } })
                .session(&mut session)
                .await?;
        }
        loop {
            match session.commit_transaction().await {
                Ok(()) => break,
                Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
                Err(e) => return Err(e),
            }
        }
        // Already gone from the source (a writer deleted it): nothing to do, nothing lost.
        let gone = ids.len() - seen.len();
        self.stats.add_gone(gone as u64);
        Ok(unchanged)
    }
}

fn is_transient(e: &mongodb::error::Error) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || crate::mongo::error_code(e).is_some_and(|c| TRANSIENT_CODES.contains(&c))
}

fn as_bson(ids: &[RawBson]) -> Result<Vec<Bson>, CopyError> {
    ids.iter()
        .cloned()
        .map(Bson::try_from)
        .collect::<Result<_, _>>()
        .map_err(|e| CopyError::Internal(format!("undecodable _id: {e}")))
}

fn failed(side: Side, ns: &Namespace, op: &'static str, e: &mongodb::error::Error) -> CopyError {
    MongoError::Command {
        side,
        ns: ns.clone(),
        op,
        reason: describe(e),
    }
    .into()
}

impl Settle for DeleteFromSource {
    fn settle<'a>(
        &'a self,
        task: &'a NsTask,
        stored: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        self.settle_batch(task, stored).boxed()
    }
}

/// Passes of a move after the first, at most: each copies what the one before left at the
/// source (documents that changed after their copy), until nothing is left.
const MOVE_PASSES: u64 = 5;

/// What a move's later passes read: the job's selection at the source.
pub struct Passes<'a> {
    pub source: &'a Client,
    pub selection: &'a Selection,
    pub filter: Option<&'a Document>,
    pub stats: &'a JobStats,
}

impl Passes<'_> {
    /// While documents of the selection are left at the source and the pass before moved some,
    /// copies (and moves) them again from the start of each namespace. A rerun of a move whose
    /// copy was complete (`rerun`) makes one such pass for what an earlier run left.
    pub async fn run(
        &self,
        engine: &(dyn Fn(Vec<Arc<NsTask>>) -> Engine + Sync),
        cancel: &CancellationToken,
        rerun: bool,
    ) -> Result<(), CopyError> {
        let moves = &self.stats.moves;
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
            engine(NsTask::for_stats(self.stats))
                .run(cancel.clone())
                .await?;
        }
    }

    /// Documents of the selection (the filter's) still at the source.
    async fn left_at_source(&self) -> Result<u64, CopyError> {
        let mut left = 0;
        for selected in &self.selection.collections {
            let ns = &selected.source;
            left += self
                .source
                .database(&ns.db)
                .collection::<Document>(&ns.coll)
                .count_documents(self.filter.cloned().unwrap_or_default())
                .await
                .map_err(|e| failed(Side::Source, ns, "count", &e))?;
        }
        Ok(left)
    }
}

/// A move drops only empty destinations: documents there may be the only copy of what an
/// earlier move (one whose checkpoint this run does not have) deleted from the source.
pub async fn refuse_dropping_documents(
    destination: &Client,
    selection: &Selection,
    existing: &[Option<Schema>],
) -> Result<(), CopyError> {
    let mut problems = Vec::new();
    for (selected, existing) in selection.collections.iter().zip(existing) {
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
