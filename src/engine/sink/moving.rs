//! A layer around the destination sink that makes a copy a move.
//!
//! In: a batch for a destination namespace. Out: the inner sink's outcome (the refused
//! documents); before it returns, the batch's documents are read back from the destination and
//! compared byte for byte with what was written (matched by their exact `_id`, type included:
//! [`IdKey`]), and those the destination holds exactly are
//! deleted from the source — only where the source still holds them byte-identical to the copy.
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
//! ([`MongoSink::durable`](super::MongoSink::durable): `w: majority, j: true` whatever the URI
//! says), so no rollback there can undo a write whose source document is deleted. With `keep_source` nothing is deleted: a rehearsal that copies and verifies.
//! Deletes wait for the same throttle as the writes (the job's limit counts both).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{doc, rawdoc, Bson, RawBson, RawDocumentBuf};
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::Client;

use super::seam::{Refused, Sink, Write};
use crate::engine::control::throttle::Throttle;
use crate::engine::error::CopyError;
use crate::engine::source::seam::id_of;
use crate::engine::stats::MoveStats;
use crate::journal::writer::{EncodedBatch, JournalSender};
use crate::journal::Op;
use crate::mongo::bson_order::IdKey;
use crate::mongo::{describe, MongoError, Namespace, Side};

/// `_id`s per read-back query: `$in` lists cost more per `_id` as they grow on some servers.
const READ_BACK_IDS: usize = 100;

/// How long a batch's delete transaction is tried again while it conflicts: longer than a
/// server keeps a transaction that its client abandoned (60 s on mongod: a killed run's
/// transaction holds its documents until then).
const CONFLICTS_FOR_AT_MOST: Duration = Duration::from_secs(90);

/// WriteConflict and NoSuchTransaction: worth a new transaction even without the label.
const TRANSIENT_CODES: [i32; 2] = [112, 251];

pub struct Moving {
    inner: Arc<dyn Sink>,
    source: Client,
    destination: Client,
    /// Where each destination namespace comes from.
    sources: HashMap<Namespace, Namespace>,
    keep_source: bool,
    throttle: Throttle,
    stats: Arc<MoveStats>,
    /// Records each delete from the source (record 4), when the job journals.
    journal: Option<JournalSender>,
}

impl Moving {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: Arc<dyn Sink>,
        source: Client,
        destination: Client,
        pairs: impl IntoIterator<Item = (Namespace, Namespace)>,
        keep_source: bool,
        throttle: Throttle,
        stats: Arc<MoveStats>,
        journal: Option<JournalSender>,
    ) -> Self {
        Moving {
            inner,
            source,
            destination,
            sources: pairs.into_iter().map(|(s, d)| (d, s)).collect(),
            keep_source,
            throttle,
            stats,
            journal,
        }
    }

    async fn write_and_move(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<Refused>, CopyError> {
        // What was sent, by `_id`, to compare with what comes back.
        let mut sent = HashMap::with_capacity(docs.len());
        for doc in &docs {
            sent.insert(IdKey::of(&id_of(doc, ns)?), doc.clone());
        }
        let refused = self.inner.write(ns, docs).await?;
        for r in &refused {
            if let Ok(id) = id_of(&r.doc, ns) {
                sent.remove(&IdKey::of(&id));
            }
        }
        let verified = self.verified(ns, sent).await?;
        self.stats.add_verified(verified.len() as u64);
        if self.keep_source || verified.is_empty() {
            return Ok(refused);
        }
        let source = self.sources.get(ns).ok_or_else(|| {
            CopyError::Internal(format!("a move into {ns}, which has no source namespace"))
        })?;
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
        Ok(refused)
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
            for doc in found {
                let key = IdKey::of(&id_of(&doc, ns)?);
                if let Some(copy) = sent.remove(&key) {
                    if copy.as_bytes() == doc.as_bytes() {
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

impl Sink for Moving {
    fn prepare<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), CopyError>> {
        self.inner.prepare(ns)
    }

    fn write<'a>(
        &'a self,
        ns: &'a Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.write_and_move(ns, docs).boxed()
    }

    fn apply<'a>(
        &'a self,
        ns: &'a Namespace,
        writes: Vec<Write>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.inner.apply(ns, writes)
    }

    fn make_durable(&self) -> BoxFuture<'_, Result<(), CopyError>> {
        self.inner.make_durable()
    }
}
