//! The change-stream source: what happened on the source cluster since a position, in order.
//!
//! In: a source cluster, the databases a job selects (all but the server's own when it selects
//! `*`), and a position (a resume token) or none (from now). Out: [`ChangeEvent`]s one by one,
//! in the order the source applied them, each with the stream's position right after it; `None`
//! when nothing more has happened for now. The stream watches the whole deployment, not single
//! collections, so that collections created later, renames into a database and drops of a whole
//! database are seen, and so that no drop or rename invalidates it. Updates come with the
//! document as it is when the event is read (`fullDocument: updateLookup`) and schema changes
//! are asked for (`showExpandedEvents`). A position the source no longer holds is
//! [`CopyError::HistoryLost`]: never skipped.

use std::time::Duration;

use mongodb::bson::{self, doc, Bson, Document, RawBson, RawDocument, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::Client;

use crate::engine::error::CopyError;
use crate::mongo::{describe, error_code, MongoError, Namespace, Side};

/// How long one getMore waits for news: the longest a quiet stream delays what was read before.
const MAX_AWAIT: Duration = Duration::from_millis(200);

/// Server codes meaning the position is gone: ChangeStreamHistoryLost, ChangeStreamFatalError,
/// CappedPositionLost.
const HISTORY_LOST: [i32; 3] = [286, 280, 136];

/// A position in the source's history, as the server gave it (opaque).
#[derive(Debug, Clone, PartialEq)]
pub struct Position(pub ResumeToken);

impl Position {
    /// Canonical Extended JSON, for the checkpoint.
    pub fn to_json(&self) -> serde_json::Value {
        bson::to_bson(&self.0)
            .map(Bson::into_canonical_extjson)
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let bson = Bson::try_from(value.clone()).map_err(|e| e.to_string())?;
        if !matches!(bson, Bson::Document(_)) {
            return Err(format!("not a resume token: {value}"));
        }
        bson::from_bson(bson)
            .map(Position)
            .map_err(|e| format!("not a resume token: {e}"))
    }
}

/// What happened to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocOp {
    Insert,
    Update,
    Replace,
    Delete,
}

/// What happened to a collection, a view or a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlOp {
    Create,
    Drop,
    Rename,
    DropDatabase,
    CreateIndexes,
    DropIndexes,
    /// `collMod`.
    Modify,
}

impl DdlOp {
    pub fn name(self) -> &'static str {
        match self {
            DdlOp::Create => "create",
            DdlOp::Drop => "drop",
            DdlOp::Rename => "rename",
            DdlOp::DropDatabase => "dropDatabase",
            DdlOp::CreateIndexes => "createIndexes",
            DdlOp::DropIndexes => "dropIndexes",
            DdlOp::Modify => "modify",
        }
    }
}

/// One event of the stream.
#[derive(Debug, Clone)]
pub enum Change {
    Doc {
        ns: Namespace,
        id: RawBson,
        op: DocOp,
        /// The document after the change: inserted or replaced, or looked up for an update
        /// (`None` if the lookup found none: deleted since, or missed by the server, so the
        /// apply stage reads it again before it counts as gone); never for a delete.
        doc: Option<RawDocumentBuf>,
    },
    /// A schema change; `ns.coll` is empty for a database's.
    Ddl {
        op: DdlOp,
        ns: Namespace,
        /// The new name of a rename.
        to: Option<Namespace>,
    },
    /// The stream cannot go on from here (reopened after it).
    Invalidate,
    /// An event of a kind this version does not apply (it stops the job if it concerns it).
    Other { op: String, ns: Option<Namespace> },
}

#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub change: Change,
    /// When the source applied it (seconds of the cluster time; 0 if it did not say).
    pub cluster_secs: u32,
    /// When the source made it, in milliseconds since the Unix epoch: its `wallTime`, else the
    /// second of its cluster time (0 if it said neither).
    pub made_ms: u64,
    /// The position right after this event.
    pub after: Position,
    /// Bytes of the event as read (for the memory bound of what is held).
    pub bytes: usize,
}

/// An open change stream on the source.
pub struct ChangeFeed {
    client: Client,
    databases: Option<Vec<String>>,
    stream: ChangeStream<RawDocumentBuf>,
    /// Updates come with the document as it is now (`updateLookup`): the sync applies them.
    /// Without: only which document changed (a verifier's watch of the destination).
    lookup: bool,
}

impl ChangeFeed {
    /// Opens the stream after `from`, or at the source's present moment when `None`.
    /// `databases`: the databases whose events (and renames into) are wanted; `None`: all but
    /// `admin`, `local` and `config`.
    pub async fn open(
        client: &Client,
        databases: Option<Vec<String>>,
        from: Option<&Position>,
    ) -> Result<Self, CopyError> {
        let stream = watch(client, databases.as_deref(), from, false, true).await?;
        Ok(ChangeFeed {
            client: client.clone(),
            databases,
            stream,
            lookup: true,
        })
    }

    /// Opens a stream of which documents change, without reading updated documents again: a
    /// lookup per update costs the server a read.
    pub async fn open_keys(
        client: &Client,
        databases: Option<Vec<String>>,
        from: Option<&Position>,
    ) -> Result<Self, CopyError> {
        let stream = watch(client, databases.as_deref(), from, false, false).await?;
        Ok(ChangeFeed {
            client: client.clone(),
            databases,
            stream,
            lookup: false,
        })
    }

    /// The position after the last event returned (or where the stream opened).
    pub fn position(&self) -> Option<Position> {
        self.stream.resume_token().map(Position)
    }

    /// The next event, or `None` when none came within a short wait.
    pub async fn next(&mut self) -> Result<Option<ChangeEvent>, CopyError> {
        let raw = match self.stream.next_if_any().await {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(None),
            Err(e) => return Err(stream_error(&e)),
        };
        let change = parse(&raw)?;
        let after = self.position().ok_or_else(|| {
            CopyError::Internal("a change stream event without a position".into())
        })?;
        let cluster_secs = raw.get_timestamp("clusterTime").map_or(0, |t| t.time);
        let made_ms = raw
            .get_datetime("wallTime")
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .unwrap_or(u64::from(cluster_secs) * 1000);
        let event = ChangeEvent {
            cluster_secs,
            made_ms,
            change,
            after,
            bytes: raw.as_bytes().len(),
        };
        if matches!(event.change, Change::Invalidate) {
            // A deployment-wide stream is not invalidated by drops or renames; should a server
            // do it anyway, the stream goes on from right after the invalidation.
            self.stream = watch(
                &self.client,
                self.databases.as_deref(),
                Some(&event.after),
                true,
                self.lookup,
            )
            .await?;
        }
        Ok(Some(event))
    }
}

/// The source's present cluster time, as a point the stream must reach (a commit's end).
pub async fn source_time(client: &Client) -> Result<Timestamp, CopyError> {
    let reply = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map_err(|e| source_error("ping", &e))?;
    // `operationTime` is what a replica set member answers with; `$clusterTime` otherwise.
    reply
        .get_timestamp("operationTime")
        .ok()
        .or_else(|| {
            reply
                .get_document("$clusterTime")
                .ok()
                .and_then(|c| c.get_timestamp("clusterTime").ok())
        })
        .ok_or_else(|| {
            MongoError::Command {
                side: Side::Source,
                ns: Namespace::new("admin", ""),
                op: "ping",
                reason: "the source reports no cluster time: live sync needs a replica set or a \
                         sharded cluster (change streams)"
                    .into(),
            }
            .into()
        })
}

/// Events per reply of a stream of which documents changed ([`ChangeFeed::open_keys`]).
const KEYS_BATCH: u32 = 1000;

async fn watch(
    client: &Client,
    databases: Option<&[String]>,
    from: Option<&Position>,
    start_after: bool,
    lookup: bool,
) -> Result<ChangeStream<RawDocumentBuf>, CopyError> {
    let wanted: Document = match databases {
        Some(dbs) => doc! { "$or": [
            { "ns.db": { "$in": dbs } },
            { "to.db": { "$in": dbs } },
        ] },
        None => doc! { "ns.db": { "$nin": ["admin", "local", "config"] } },
    };
    let mut watch = client
        .watch()
        .pipeline([doc! { "$match": wanted }])
        .show_expanded_events(true)
        .max_await_time(MAX_AWAIT);
    if lookup {
        watch = watch.full_document(FullDocumentType::UpdateLookup);
    } else {
        // Which documents changed, read in bounded replies however long the history waiting.
        watch = watch.batch_size(KEYS_BATCH);
    }
    watch = match (from, start_after) {
        (None, _) => watch,
        (Some(p), false) => watch.resume_after(p.0.clone()),
        (Some(p), true) => watch.start_after(p.0.clone()),
    };
    match watch.await {
        Ok(stream) => Ok(stream.with_type::<RawDocumentBuf>()),
        Err(e) => Err(stream_error(&e)),
    }
}

fn stream_error(e: &mongodb::error::Error) -> CopyError {
    if error_code(e).is_some_and(|c| HISTORY_LOST.contains(&c)) {
        CopyError::HistoryLost(describe(e))
    } else {
        source_error("change stream", e)
    }
}

fn source_error(op: &'static str, e: &mongodb::error::Error) -> CopyError {
    MongoError::Command {
        side: Side::Source,
        ns: Namespace::new("admin", ""),
        op,
        reason: describe(e),
    }
    .into()
}

/// Reads one raw event.
fn parse(raw: &RawDocument) -> Result<Change, CopyError> {
    let malformed = |what: &str| CopyError::Internal(format!("a change event without {what}"));
    let op = raw
        .get_str("operationType")
        .map_err(|_| malformed("operationType"))?;
    let ns = namespace(raw, "ns");
    let doc_op = match op {
        "insert" => Some(DocOp::Insert),
        "update" => Some(DocOp::Update),
        "replace" => Some(DocOp::Replace),
        "delete" => Some(DocOp::Delete),
        _ => None,
    };
    if let Some(doc_op) = doc_op {
        let ns = ns.ok_or_else(|| malformed("ns"))?;
        let id = raw
            .get_document("documentKey")
            .ok()
            .and_then(|key| key.get("_id").ok().flatten())
            .map(|id| id.to_raw_bson())
            .ok_or_else(|| malformed("documentKey._id"))?;
        let doc = match doc_op {
            DocOp::Delete => None,
            _ => raw
                .get_document("fullDocument")
                .ok()
                .map(|d| d.to_raw_document_buf()),
        };
        return Ok(Change::Doc {
            ns,
            id,
            op: doc_op,
            doc,
        });
    }
    let ddl = match op {
        "create" => DdlOp::Create,
        "drop" => DdlOp::Drop,
        "rename" => DdlOp::Rename,
        "dropDatabase" => DdlOp::DropDatabase,
        "createIndexes" => DdlOp::CreateIndexes,
        "dropIndexes" => DdlOp::DropIndexes,
        "modify" => DdlOp::Modify,
        "invalidate" => return Ok(Change::Invalidate),
        other => {
            return Ok(Change::Other {
                op: other.to_string(),
                ns,
            })
        }
    };
    Ok(Change::Ddl {
        op: ddl,
        ns: ns.ok_or_else(|| malformed("ns"))?,
        to: namespace(raw, "to"),
    })
}

/// `{db, coll}` under `key`; `coll` is empty for a database's event.
fn namespace(raw: &RawDocument, key: &str) -> Option<Namespace> {
    let ns = raw.get_document(key).ok()?;
    let db = ns.get_str("db").ok()?;
    Some(Namespace::new(db, ns.get_str("coll").unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use mongodb::bson::rawdoc;

    use super::*;

    #[test]
    fn events_are_read_by_kind() {
        let update = rawdoc! {
            "_id": { "_data": "00" },
            "operationType": "update",
            "clusterTime": Timestamp { time: 7, increment: 1 },
            "ns": { "db": "a", "coll": "b" },
            "documentKey": { "_id": 5_i64 },
            "fullDocument": { "_id": 5_i64, "x": 1 },
        };
        let Change::Doc { ns, id, op, doc } = parse(&update).unwrap() else {
            panic!("a document change");
        };
        assert_eq!(
            (ns, id, op),
            (Namespace::new("a", "b"), RawBson::Int64(5), DocOp::Update)
        );
        assert_eq!(doc.unwrap(), rawdoc! { "_id": 5_i64, "x": 1 });

        let gone = rawdoc! {
            "operationType": "update", "ns": { "db": "a", "coll": "b" },
            "documentKey": { "_id": 5_i64 }, "fullDocument": null,
        };
        assert!(matches!(
            parse(&gone).unwrap(),
            Change::Doc { doc: None, .. }
        ));

        let rename = rawdoc! {
            "operationType": "rename", "ns": { "db": "a", "coll": "b" },
            "to": { "db": "a", "coll": "c" },
        };
        let Change::Ddl { op, ns, to } = parse(&rename).unwrap() else {
            panic!("a schema change");
        };
        assert_eq!(op, DdlOp::Rename);
        assert_eq!(
            (ns, to.unwrap()),
            (Namespace::new("a", "b"), Namespace::new("a", "c"))
        );

        let dropped = rawdoc! { "operationType": "dropDatabase", "ns": { "db": "a" } };
        assert!(matches!(
            parse(&dropped).unwrap(),
            Change::Ddl { op: DdlOp::DropDatabase, ns, .. } if ns.db == "a" && ns.coll.is_empty()
        ));
        let sharded =
            rawdoc! { "operationType": "shardCollection", "ns": { "db": "a", "coll": "b" } };
        assert!(
            matches!(parse(&sharded).unwrap(), Change::Other { op, .. } if op == "shardCollection")
        );
    }

    #[test]
    fn a_position_survives_the_checkpoint() {
        let token: ResumeToken =
            bson::from_bson(Bson::Document(doc! { "_data": "8263A1B2C3000000012B" })).unwrap();
        let position = Position(token);
        let json = position.to_json();
        assert_eq!(json["_data"], "8263A1B2C3000000012B");
        assert_eq!(Position::from_json(&json).unwrap(), position);
        assert!(Position::from_json(&serde_json::json!(3)).is_err());
    }
}
