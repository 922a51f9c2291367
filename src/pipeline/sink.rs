//! The write stage: puts a batch of raw documents into the destination, idempotently by `_id`.
//!
//! In: a destination namespace and raw documents. Out: the documents stored at the destination,
//! acknowledged by the server. A document already present (by `_id`) is replaced, never
//! duplicated: the batch goes in as one unordered insert (the fast path, as mongorestore-style
//! tools do), and only the documents the server reports as duplicate keys are then replaced with
//! the `update` command's upserts, which every server version understands.

use std::future::Future;

use mongodb::bson::{rawdoc, Document, RawArrayBuf, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::Client;

use super::CopyError;
use crate::mongo::{describe, is_namespace_exists, MongoError, Namespace, Side, DUPLICATE_KEY};

/// Room left in a hand-built command for its envelope around the statements.
const COMMAND_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;

/// Where documents go. The engine is generic over it so that a null sink can measure the
/// engine's own overhead.
pub trait Sink: Send + Sync + 'static {
    /// Makes sure the namespace exists (so even an empty collection arrives).
    fn prepare(&self, ns: &Namespace) -> impl Future<Output = Result<(), CopyError>> + Send;

    /// Writes the documents; returns once the server acknowledged all of them.
    fn write(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> impl Future<Output = Result<(), CopyError>> + Send;
}

/// A MongoDB destination cluster.
pub struct MongoSink {
    client: Client,
}

impl MongoSink {
    pub fn new(client: Client) -> Self {
        MongoSink { client }
    }

    fn collection(&self, ns: &Namespace) -> mongodb::Collection<RawDocumentBuf> {
        self.client.database(&ns.db).collection(&ns.coll)
    }

    /// Replaces documents that already exist at the destination (upsert by `_id`).
    async fn replace(&self, ns: &Namespace, docs: Vec<RawDocumentBuf>) -> Result<(), CopyError> {
        // A replacement whose top-level field starts with '$' would be read as update operators;
        // such rare documents are deleted and inserted again instead.
        let (plain, dollar): (Vec<_>, Vec<_>) =
            docs.into_iter().partition(|d| !has_dollar_field(d));
        let mut statements = RawArrayBuf::new();
        let mut bytes = 0;
        for doc in plain {
            let id = super::source::id_of(&doc, ns)?;
            let len = doc.as_bytes().len();
            if bytes > 0 && bytes + len > COMMAND_BYTES {
                self.run_update(ns, std::mem::take(&mut statements)).await?;
                bytes = 0;
            }
            bytes += len + 64;
            statements.push(rawdoc! { "q": { "_id": id }, "u": doc, "upsert": true });
        }
        if bytes > 0 {
            self.run_update(ns, statements).await?;
        }
        if !dollar.is_empty() {
            let ids = dollar
                .iter()
                .map(|d| super::source::id_of(d, ns))
                .collect::<Result<Vec<_>, _>>()?;
            let mut in_list = RawArrayBuf::new();
            for id in ids {
                in_list.push(id);
            }
            let filter = Document::try_from(rawdoc! { "_id": { "$in": in_list } }.as_ref())
                .map_err(|e| CopyError::Internal(e.to_string()))?;
            self.collection(ns)
                .delete_many(filter)
                .await
                .map_err(|e| write_error(ns, "delete", &e))?;
            self.collection(ns)
                .insert_many(&dollar)
                .ordered(false)
                .await
                .map_err(|e| write_error(ns, "insert", &e))?;
        }
        Ok(())
    }

    async fn run_update(&self, ns: &Namespace, statements: RawArrayBuf) -> Result<(), CopyError> {
        let command = rawdoc! {
            "update": ns.coll.as_str(),
            "updates": statements,
            "ordered": false,
        };
        let reply = self
            .client
            .database(&ns.db)
            .run_raw_command(command)
            .await
            .map_err(|e| write_error(ns, "update", &e))?;
        // The command succeeds as a whole even when single statements fail: look inside.
        if let Ok(errors) = reply.get_array("writeErrors") {
            if let Some(first) = errors.iter().find_map(|e| e.as_document()) {
                return Err(MongoError::Command {
                    side: Side::Destination,
                    ns: ns.clone(),
                    op: "update",
                    reason: format!(
                        "{} document(s) refused, first: {} (code {})",
                        errors.len(),
                        first.get_str("errmsg").unwrap_or("no message"),
                        first.get_i32("code").unwrap_or_default()
                    ),
                }
                .into());
            }
        }
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
        Ok(())
    }
}

impl Sink for MongoSink {
    async fn prepare(&self, ns: &Namespace) -> Result<(), CopyError> {
        let db = self.client.database(&ns.db);
        let existing = db
            .list_collection_names()
            .filter(mongodb::bson::doc! { "name": &ns.coll })
            .await
            .map_err(|e| write_error(ns, "listCollections", &e))?;
        if existing.is_empty() {
            if let Err(e) = db.create_collection(&ns.coll).await {
                if !is_namespace_exists(&e) {
                    return Err(write_error(ns, "create", &e));
                }
            }
        }
        Ok(())
    }

    async fn write(&self, ns: &Namespace, docs: Vec<RawDocumentBuf>) -> Result<(), CopyError> {
        let err = match self.collection(ns).insert_many(&docs).ordered(false).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
            return Err(write_error(ns, "insert", &err));
        };
        let errors = failure.write_errors.as_deref().unwrap_or_default();
        let refused = errors.iter().find(|e| e.code != DUPLICATE_KEY);
        if failure.write_concern_error.is_some() || refused.is_some() || errors.is_empty() {
            let reason = match refused {
                Some(e) => format!(
                    "document {} refused: {} (code {})",
                    docs.get(e.index)
                        .and_then(|d| d.get("_id").ok().flatten())
                        .map(|id| format!("{id:?}"))
                        .unwrap_or_default(),
                    e.message,
                    e.code
                ),
                None => describe(&err),
            };
            return Err(MongoError::Command {
                side: Side::Destination,
                ns: ns.clone(),
                op: "insert",
                reason,
            }
            .into());
        }
        // Everything else was inserted; the duplicates already exist and get replaced.
        let mut duplicate = vec![false; docs.len()];
        for e in errors {
            if let Some(flag) = duplicate.get_mut(e.index) {
                *flag = true;
            }
        }
        let existing = docs
            .into_iter()
            .zip(duplicate)
            .filter_map(|(d, dup)| dup.then_some(d))
            .collect();
        self.replace(ns, existing).await
    }
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
