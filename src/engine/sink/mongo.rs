//! A MongoDB destination cluster: writes batches idempotently by `_id`.
//!
//! In: a destination namespace and raw documents. Out: the documents stored at the destination,
//! acknowledged by the server, and the ones it refused. A document already present (by `_id`) is
//! replaced, never duplicated: the batch goes in as one unordered insert (the fast path, as
//! mongorestore-style tools do), and only the documents the server reports as duplicate keys are
//! then replaced with the `update` command's upserts, which every server version understands.
//! Transient errors are retried ([`Retry`]); a document the server refuses (too large, failed
//! validation, a duplicate on a unique secondary index) is returned, not retried, and does not
//! stop the others.
//!
//! A replacement the server refuses because it stores the same `_id` number as another type
//! (`NumberLong(5)` for `Decimal128(5)`: `immutable field '_id'`) is deleted and inserted
//! instead. A server may also take such a replacement and keep the stored type (SecantusDB does
//! for `1` and `1.0`), which the write cannot see: a sync applies a type change's delete before
//! its insert (`engine::changes`), but a re-copy over a destination that holds an `_id` as another
//! number type may leave that type there.
//!
//! # Durable writes
//!
//! By default every write uses the write concern of the destination's URI. A sink made
//! [`durable`](MongoSink::durable) writes with `{w: "majority", j: true}` whatever the URI says:
//! a move deletes from the source what the destination acknowledged, and an acknowledgement
//! that a replica set can roll back (`w: 1`) would lose those documents.
//!
//! # Sharded destinations
//!
//! An upsert into a sharded collection must name the whole shard key in its filter, so the
//! router can send it to one shard. [`Sink::prepare`] reads each namespace's shard key from the
//! destination's `config.collections` (nothing there: not sharded), and every upsert's filter is
//! then `_id` plus each shard key field's value in the document written ([`upsert_filter`]; a
//! missing field counts as `null`, as the server files it). Deletes stay by `_id` (`limit: 1`), which a
//! router accepts. A document whose shard key value changed since its earlier copy does not
//! match its old version: the server refuses the upsert as a duplicate `_id`, and the document
//! becomes a dead letter rather than a second copy.

use std::collections::{BTreeSet, HashMap};
use std::future::IntoFuture;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::action::Action;
use mongodb::bson::{
    doc, rawdoc, Document, RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf,
};
use mongodb::error::ErrorKind;
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::Client;

use super::seam::{Refused, Sink, Write, MAX_DOCUMENT_BYTES};
use crate::engine::error::CopyError;
use crate::engine::source::seam::id_of;
use crate::mongo::retry::Retry;
use crate::mongo::{describe, is_namespace_exists, MongoError, Namespace, Side, DUPLICATE_KEY};

/// Room left in a hand-built command for its envelope around the statements.
const COMMAND_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;

/// The server error code for a document over the size limit.
const OBJECT_TOO_LARGE: i32 = 10334;

/// The server error code for a write that would change an immutable field (`_id`).
const IMMUTABLE_FIELD: i32 = 66;

/// A MongoDB destination cluster.
pub struct MongoSink {
    client: Client,
    retry: Retry,
    max_document_bytes: usize,
    /// Namespaces written past their validator (`bypassDocumentValidation`): the documents are
    /// the source's, which its own validator let in.
    past_validator: BTreeSet<Namespace>,
    /// The shard key fields (other than `_id`) of each sharded destination namespace.
    shard_keys: parking_lot::RwLock<HashMap<Namespace, Vec<String>>>,
    /// Majority and journaled on every write, over the URI's ("Durable writes").
    durable: bool,
}

impl MongoSink {
    pub fn new(client: Client) -> Self {
        MongoSink {
            client,
            retry: Retry::default(),
            max_document_bytes: MAX_DOCUMENT_BYTES,
            past_validator: BTreeSet::new(),
            shard_keys: Default::default(),
            durable: false,
        }
    }

    /// Every write waits for a majority of the replica set and its journal ("Durable writes").
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// The write concern the sink imposes on its writes; `None`: the URI's.
    pub fn write_concern(&self) -> Option<WriteConcern> {
        self.durable.then(|| {
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .build()
        })
    }

    /// Adds the imposed write concern to a hand-built write command.
    fn concern_of(&self, command: &mut RawDocumentBuf) {
        if self.durable {
            command.append("writeConcern", rawdoc! { "w": "majority", "j": true });
        }
    }

    /// Writes into these namespaces past their validators.
    pub fn past_validators(mut self, namespaces: BTreeSet<Namespace>) -> Self {
        self.past_validator = namespaces;
        self
    }

    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Documents larger than this are refused before they are sent (for destinations with a
    /// lower limit than the source's).
    pub fn with_max_document_bytes(mut self, bytes: usize) -> Self {
        self.max_document_bytes = bytes;
        self
    }

    fn collection(&self, ns: &Namespace) -> mongodb::Collection<RawDocumentBuf> {
        self.client.database(&ns.db).collection(&ns.coll)
    }

    /// Inserts unordered; returns the duplicates (to replace) and the refused documents.
    async fn insert(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<(Vec<RawDocumentBuf>, Vec<Refused>), CopyError> {
        let collection = self.collection(ns);
        let bypass = self.past_validator.contains(ns);
        let outcome = self
            .retry
            .run("insert", || async {
                let insert = collection
                    .insert_many(&docs)
                    .ordered(false)
                    .optional(self.write_concern(), |insert, wc| insert.write_concern(wc));
                if bypass {
                    insert.bypass_document_validation(true).await
                } else {
                    insert.await
                }
            })
            .await;
        let err = match outcome {
            Ok(_) => return Ok((vec![], vec![])),
            Err(e) => e,
        };
        let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
            return Err(write_error(ns, "insert", &err));
        };
        let errors = failure.write_errors.as_deref().unwrap_or_default();
        if failure.write_concern_error.is_some() || errors.is_empty() {
            return Err(write_error(ns, "insert", &err));
        }
        // Everything without an error was inserted.
        let mut outcome: Vec<Option<(i32, String)>> = vec![None; docs.len()];
        for e in errors {
            // As for updates: an error no document can own fails the batch.
            let Some(slot) = outcome.get_mut(e.index) else {
                return Err(write_error(ns, "insert", &err));
            };
            *slot = Some((e.code, e.message.clone()));
        }
        let (mut duplicates, mut refused) = (Vec::new(), Vec::new());
        for (doc, error) in docs.into_iter().zip(outcome) {
            match error {
                None => {}
                Some((DUPLICATE_KEY, _)) => duplicates.push(doc),
                Some((code, reason)) => refused.push(Refused {
                    doc,
                    code: Some(code),
                    reason,
                }),
            }
        }
        Ok((duplicates, refused))
    }

    /// Replaces documents that already exist at the destination (upsert by `_id`).
    async fn replace(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<Refused>, CopyError> {
        // A replacement whose top-level field starts with '$' would be read as update operators;
        // such rare documents are deleted and inserted again instead (as are those whose `_id`
        // changed its number type).
        let (plain, dollar): (Vec<_>, Vec<_>) =
            docs.into_iter().partition(|d| !has_dollar_field(d));
        let mut refused = Vec::new();
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for doc in plain {
            let len = doc.as_bytes().len();
            if bytes > 0 && bytes + len > COMMAND_BYTES {
                refused.extend(self.run_update(ns, std::mem::take(&mut chunk)).await?);
                bytes = 0;
            }
            bytes += len + 64;
            chunk.push(doc);
        }
        if !chunk.is_empty() {
            refused.extend(self.run_update(ns, chunk).await?);
        }
        // The destination holds the same number as another type (`NumberLong(5)` for
        // `Decimal128(5)`), which a server may refuse to change in place: delete, then insert.
        let (retyped, refused): (Vec<Refused>, Vec<Refused>) =
            refused.into_iter().partition(is_retyped);
        let mut dollar = dollar;
        dollar.extend(retyped.into_iter().map(|r| r.doc));
        let mut refused = refused;
        if !dollar.is_empty() {
            let mut in_list = RawArrayBuf::new();
            for doc in &dollar {
                in_list.push(id_of(doc, ns)?);
            }
            let filter = Document::try_from(rawdoc! { "_id": { "$in": in_list } }.as_ref())
                .map_err(|e| CopyError::Internal(e.to_string()))?;
            let collection = self.collection(ns);
            self.retry
                .run("delete", || {
                    collection
                        .delete_many(filter.clone())
                        .optional(self.write_concern(), |delete, wc| delete.write_concern(wc))
                        .into_future()
                })
                .await
                .map_err(|e| write_error(ns, "delete", &e))?;
            let (duplicates, more) = self.insert(ns, dollar).await?;
            refused.extend(more);
            // Written by someone else between the delete and the insert: theirs stays, noted.
            refused.extend(duplicates.into_iter().map(|doc| Refused {
                doc,
                code: Some(DUPLICATE_KEY),
                reason:
                    "a document with this _id appeared again while it was being replaced".into(),
            }));
        }
        Ok(refused)
    }

    /// One `update` command of upserts; returns the statements the server refused.
    async fn run_update(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<Refused>, CopyError> {
        let mut statements = RawArrayBuf::new();
        let shard_key = self.shard_keys.read().get(ns).cloned().unwrap_or_default();
        for doc in &docs {
            let filter = upsert_filter(id_of(doc, ns)?, doc, &shard_key);
            statements.push(rawdoc! { "q": filter, "u": doc.clone(), "upsert": true });
        }
        let mut command = rawdoc! {
            "update": ns.coll.as_str(),
            "updates": statements,
            "ordered": false,
        };
        if self.past_validator.contains(ns) {
            command.append("bypassDocumentValidation", true);
        }
        self.concern_of(&mut command);
        let db = self.client.database(&ns.db);
        let reply = self
            .retry
            .run("update", || {
                db.run_raw_command(command.clone()).into_future()
            })
            .await
            .map_err(|e| write_error(ns, "update", &e))?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(MongoError::Command {
                side: Side::Destination,
                ns: ns.clone(),
                op: "update",
                reason: format!(
                    "write concern error: {}",
                    wce.get_str("errmsg").unwrap_or("no message")
                ),
            }
            .into());
        }
        // The command succeeds as a whole even when single statements fail: look inside.
        // An error that names no statement of the batch cannot be attributed to a document:
        // counting the batch as written would pass damage off as success, so the batch fails.
        let mut failed: Vec<Option<(i32, String)>> = vec![None; docs.len()];
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                let e = e.as_document();
                let index = e.and_then(|e| e.get_i32("index").ok());
                let slot = index
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| failed.get_mut(i));
                let (Some(e), Some(slot)) = (e, slot) else {
                    return Err(MongoError::Command {
                        side: Side::Destination,
                        ns: ns.clone(),
                        op: "update",
                        reason: format!(
                            "the server reported a write error for no statement of the batch \
                             (index {index:?} of {})",
                            docs.len()
                        ),
                    }
                    .into());
                };
                *slot = Some((
                    e.get_i32("code").unwrap_or_default(),
                    e.get_str("errmsg").unwrap_or("no message").to_string(),
                ));
            }
        }
        Ok(docs
            .into_iter()
            .zip(failed)
            .filter_map(|(doc, failure)| {
                let (code, reason) = failure?;
                Some(Refused {
                    doc,
                    code: Some(code),
                    reason,
                })
            })
            .collect())
    }
}

impl MongoSink {
    /// Creates the namespace unless it exists.
    async fn ensure_collection(&self, ns: &Namespace) -> Result<(), CopyError> {
        let db = self.client.database(&ns.db);
        let existing = self
            .retry
            .run("listCollections", || {
                db.list_collection_names()
                    .filter(mongodb::bson::doc! { "name": &ns.coll })
                    .into_future()
            })
            .await
            .map_err(|e| write_error(ns, "listCollections", &e))?;
        if existing.is_empty() {
            let created = self
                .retry
                .run("create", || db.create_collection(&ns.coll).into_future())
                .await;
            if let Err(e) = created {
                if !is_namespace_exists(&e) {
                    return Err(write_error(ns, "create", &e));
                }
            }
        }
        Ok(())
    }

    /// Reads the namespace's shard key, if the destination shards it. A deployment that is not
    /// sharded has no `config.collections`, and a user who may not read `config` writes by
    /// `_id` alone: the router then refuses an upsert with its own clear error.
    async fn read_shard_key(&self, ns: &Namespace) {
        let found = self
            .client
            .database("config")
            .collection::<Document>("collections")
            .find_one(doc! { "_id": ns.to_string(), "dropped": { "$ne": true } })
            .await;
        let fields: Vec<String> = match found {
            Ok(Some(collection)) => collection
                .get_document("key")
                .map(|key| key.keys().filter(|f| *f != "_id").cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if !fields.is_empty() {
            tracing::info!("{ns} is sharded: upserts name its shard key {fields:?}");
            self.shard_keys.write().insert(ns.clone(), fields);
        }
    }

    /// The documents within the size limit, and the others refused.
    fn within_limit(&self, docs: Vec<RawDocumentBuf>) -> (Vec<RawDocumentBuf>, Vec<Refused>) {
        let limit = self.max_document_bytes;
        let (docs, oversized): (Vec<_>, Vec<_>) =
            docs.into_iter().partition(|d| d.as_bytes().len() <= limit);
        let refused = oversized
            .into_iter()
            .map(|doc| Refused {
                reason: format!(
                    "document of {} bytes is larger than the destination's limit of {limit} bytes",
                    doc.as_bytes().len()
                ),
                code: Some(OBJECT_TOO_LARGE),
                doc,
            })
            .collect();
        (docs, refused)
    }

    /// Refuses what is over the size limit, inserts the rest, replaces the duplicates.
    async fn write_docs(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<Refused>, CopyError> {
        let (docs, mut refused) = self.within_limit(docs);
        if docs.is_empty() {
            return Ok(refused);
        }
        let (duplicates, more) = self.insert(ns, docs).await?;
        refused.extend(more);
        if !duplicates.is_empty() {
            refused.extend(self.replace(ns, duplicates).await?);
        }
        Ok(refused)
    }
}

impl MongoSink {
    /// Inserts the new documents, replaces (upserts) the changed ones, deletes the gone ones.
    async fn apply_writes(
        &self,
        ns: &Namespace,
        writes: Vec<Write>,
    ) -> Result<Vec<Refused>, CopyError> {
        let (mut inserts, mut replaces, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
        for write in writes {
            match write {
                Write::Insert(doc) => inserts.push(doc),
                Write::Replace(doc) => replaces.push(doc),
                Write::Delete(id) => deletes.push(id),
            }
        }
        let mut refused = Vec::new();
        if !inserts.is_empty() {
            refused.extend(self.write_docs(ns, inserts).await?);
        }
        let (replaces, oversized) = self.within_limit(replaces);
        refused.extend(oversized);
        if !replaces.is_empty() {
            refused.extend(self.replace(ns, replaces).await?);
        }
        if !deletes.is_empty() {
            self.delete(ns, deletes).await?;
        }
        Ok(refused)
    }

    /// Deletes by `_id`, in `delete` commands of many statements.
    async fn delete(&self, ns: &Namespace, ids: Vec<RawBson>) -> Result<(), CopyError> {
        let db = self.client.database(&ns.db);
        let mut statements = RawArrayBuf::new();
        let mut bytes = 0;
        let mut ids = ids.into_iter().peekable();
        while let Some(id) = ids.next() {
            let statement = rawdoc! { "q": { "_id": id }, "limit": 1 };
            bytes += statement.as_bytes().len();
            statements.push(statement);
            if bytes < COMMAND_BYTES / 2 && ids.peek().is_some() {
                continue;
            }
            let mut command = rawdoc! {
                "delete": ns.coll.as_str(),
                "deletes": std::mem::take(&mut statements),
                "ordered": false,
            };
            self.concern_of(&mut command);
            bytes = 0;
            let reply = self
                .retry
                .run("delete", || {
                    db.run_raw_command(command.clone()).into_future()
                })
                .await
                .map_err(|e| write_error(ns, "delete", &e))?;
            // A delete by `_id` has no document to refuse: any error fails the batch.
            let problem = reply
                .get_array("writeErrors")
                .ok()
                .and_then(|errors| errors.first())
                .map(|e| {
                    e.as_document()
                        .and_then(|e| e.get_str("errmsg").ok())
                        .unwrap_or("no message")
                        .to_string()
                })
                .or_else(|| {
                    reply.get_document("writeConcernError").ok().map(|wce| {
                        format!(
                            "write concern error: {}",
                            wce.get_str("errmsg").unwrap_or("no message")
                        )
                    })
                });
            if let Some(reason) = problem {
                return Err(MongoError::Command {
                    side: Side::Destination,
                    ns: ns.clone(),
                    op: "delete",
                    reason,
                }
                .into());
            }
        }
        Ok(())
    }
}

impl Sink for MongoSink {
    fn apply<'a>(
        &'a self,
        ns: &'a Namespace,
        writes: Vec<Write>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.apply_writes(ns, writes).boxed()
    }

    fn prepare<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), CopyError>> {
        async move {
            self.ensure_collection(ns).await?;
            self.read_shard_key(ns).await;
            Ok(())
        }
        .boxed()
    }

    fn write<'a>(
        &'a self,
        ns: &'a Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.write_docs(ns, docs).boxed()
    }
}

/// An upsert's filter: the `_id`, and each shard key field (dotted paths) with its value in
/// `doc`, `null` where the document has none.
fn upsert_filter(id: RawBson, doc: &RawDocumentBuf, shard_key: &[String]) -> RawDocumentBuf {
    let mut filter = rawdoc! { "_id": id };
    for field in shard_key {
        filter.append(field, value_at(doc, field).unwrap_or(RawBson::Null));
    }
    filter
}

/// The value at a dotted path of a document (`a.b`: field `b` of the document in field `a`).
fn value_at(doc: &RawDocument, path: &str) -> Option<RawBson> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let value = doc.get(head).ok().flatten()?;
    match rest {
        None => Some(value.to_raw_bson()),
        Some(rest) => value_at(value.as_document()?, rest),
    }
}

/// A replacement refused because the stored `_id` is the same number as another type.
fn is_retyped(refused: &Refused) -> bool {
    let number = matches!(
        refused.doc.get("_id"),
        Ok(Some(
            RawBsonRef::Int32(_)
                | RawBsonRef::Int64(_)
                | RawBsonRef::Double(_)
                | RawBsonRef::Decimal128(_)
        ))
    );
    number && refused.code == Some(IMMUTABLE_FIELD)
}

fn has_dollar_field(doc: &RawDocumentBuf) -> bool {
    doc.iter_elements()
        .any(|e| e.map(|e| e.key().starts_with('$')).unwrap_or(false))
}

fn write_error(ns: &Namespace, op: &'static str, e: &mongodb::error::Error) -> CopyError {
    MongoError::Command {
        side: Side::Destination,
        ns: ns.clone(),
        op,
        reason: describe(e),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upsert_names_the_whole_shard_key() {
        let doc = rawdoc! { "_id": 7, "region": "eu", "tenant": { "id": 42, "name": "a" }, "n": 1 };
        let key = ["region".to_string(), "tenant.id".to_string()];
        assert_eq!(
            upsert_filter(RawBson::Int32(7), &doc, &key),
            rawdoc! { "_id": 7, "region": "eu", "tenant.id": 42 }
        );
        // Unsharded: by `_id` alone.
        assert_eq!(
            upsert_filter(RawBson::Int32(7), &doc, &[]),
            rawdoc! { "_id": 7 }
        );
        // A document without a shard key field is filed under null.
        let bare = rawdoc! { "_id": 8, "tenant": 3 };
        assert_eq!(
            upsert_filter(RawBson::Int32(8), &bare, &key),
            rawdoc! { "_id": 8, "region": null, "tenant.id": null }
        );
    }
}
