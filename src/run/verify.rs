//! Verification: are source and destination the same, document by document?
//!
//! In: two clusters, namespace pairs and an optional filter. Out: a [`VerifyReport`] per
//! namespace: both counts, and the `_id`s missing at the destination, extra there, or different
//! (totals, plus the first few of each). Both sides are streamed in `_id` order and merged, so
//! memory stays bounded by one cursor batch per side whatever the collection's size; documents
//! with the same `_id` are compared byte for byte (raw BSON: field order and types count).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawBson, RawDocumentBuf};
use mongodb::options::Hint;
use mongodb::{Client, Cursor};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::schema::{self, SchemaDifference, Selection};
use crate::engine::transform::Steps;
use crate::engine::CopyError;
use crate::mongo::bson_order;
use crate::mongo::{describe, MongoError, Namespace, Side};

/// Documents per cursor batch on each side.
const BATCH: u32 = 1000;

/// The comparison of one namespace pair.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NsVerify {
    pub source: String,
    pub destination: String,
    pub source_count: u64,
    pub destination_count: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// The first `_id`s (canonical Extended JSON) of each kind, in `_id` order.
    pub first_missing: Vec<serde_json::Value>,
    pub first_extra: Vec<serde_json::Value>,
    pub first_different: Vec<serde_json::Value>,
}

impl NsVerify {
    pub fn differences(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

/// The comparison of a whole job.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VerifyReport {
    pub namespaces: Vec<NsVerify>,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Namespaces whose options, indexes or view definition differ (not compared with
    /// `--documents-only`).
    pub schema: Vec<SchemaDifference>,
    pub identical: bool,
}

impl VerifyReport {
    pub fn new(namespaces: Vec<NsVerify>, schema: Vec<SchemaDifference>) -> Self {
        let sum = |f: fn(&NsVerify) -> u64| namespaces.iter().map(f).sum::<u64>();
        let (missing, extra, different) =
            (sum(|n| n.missing), sum(|n| n.extra), sum(|n| n.different));
        VerifyReport {
            identical: missing + extra + different == 0 && schema.is_empty(),
            namespaces,
            missing,
            extra,
            different,
            schema,
        }
    }
}

/// What to compare.
pub struct Comparison<'a> {
    pub selection: &'a Selection,
    /// Only the documents matching this, on both sides.
    pub filter: Option<&'a Document>,
    /// How many `_id`s of each kind of difference to list.
    pub show: usize,
    /// The schema too (`Some`), indexes included when `true`; `None`: documents only.
    pub schema: Option<bool>,
    /// The transform of each destination namespace: its source's documents are compared
    /// transformed.
    pub transforms: &'a HashMap<Namespace, Arc<Steps>>,
}

/// Compares `source` on `src` with `destination` on `dst`, both restricted to `filter`;
/// keeps the first `show` `_id`s of each kind of difference. `None` if `stop` was cancelled
/// before the end (checked between documents: an in-flight read is never dropped).
pub async fn verify_namespace(
    src: &Client,
    dst: &Client,
    (source, destination): (&Namespace, &Namespace),
    (filter, hint): (Option<&Document>, bool),
    (show, steps): (usize, Option<&Steps>),
    stop: &CancellationToken,
) -> Result<Option<NsVerify>, MongoError> {
    let mut left = open(Side::Source, src, source, filter, hint).await?;
    let mut right = open(Side::Destination, dst, destination, filter, hint).await?;
    let mut report = NsVerify {
        source: source.to_string(),
        destination: destination.to_string(),
        ..Default::default()
    };
    let mut a = next(&mut left, Side::Source, source).await?;
    let mut b = next(&mut right, Side::Destination, destination).await?;
    loop {
        if stop.is_cancelled() {
            return Ok(None);
        }
        let order = match (&a, &b) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((x, _)), Some((y, _))) => {
                bson_order::compare(x.as_raw_bson_ref(), y.as_raw_bson_ref())
            }
        };
        match order {
            Ordering::Less => {
                let (id, _) = a.take().expect("present");
                note(&mut report.missing, &mut report.first_missing, &id, show);
                report.source_count += 1;
                a = next(&mut left, Side::Source, source).await?;
            }
            Ordering::Greater => {
                let (id, _) = b.take().expect("present");
                note(&mut report.extra, &mut report.first_extra, &id, show);
                report.destination_count += 1;
                b = next(&mut right, Side::Destination, destination).await?;
            }
            Ordering::Equal => {
                let ((id, x), (_, y)) = (a.take().expect("present"), b.take().expect("present"));
                // What the copy wrote of it (a document the steps cannot read differs).
                let x = match steps {
                    Some(steps) => steps.apply(x).ok(),
                    None => Some(x),
                };
                if x.is_none_or(|x| x.as_bytes() != y.as_bytes()) {
                    note(
                        &mut report.different,
                        &mut report.first_different,
                        &id,
                        show,
                    );
                }
                report.source_count += 1;
                report.destination_count += 1;
                a = next(&mut left, Side::Source, source).await?;
                b = next(&mut right, Side::Destination, destination).await?;
            }
        }
    }
    Ok(Some(report))
}

/// Compares the schema (if asked), then every collection's documents in turn;
/// [`CopyError::Stopped`] if `stop` was cancelled before the end.
pub async fn verify_all(
    src: &Client,
    dst: &Client,
    what: &Comparison<'_>,
    stop: &CancellationToken,
) -> Result<VerifyReport, CopyError> {
    let schema = match what.schema {
        Some(indexes) => schema::compare(dst, what.selection, indexes).await?,
        None => vec![],
    };
    let time_series = what.selection.time_series();
    let mut namespaces = Vec::new();
    for (source, destination) in what.selection.pairs() {
        let read = (what.filter, !time_series.contains(&source));
        let shown = (
            what.show,
            what.transforms.get(&destination).map(Arc::as_ref),
        );
        match verify_namespace(src, dst, (&source, &destination), read, shown, stop).await? {
            Some(report) => namespaces.push(report),
            None => return Err(CopyError::Stopped),
        }
    }
    Ok(VerifyReport::new(namespaces, schema))
}

fn note(total: &mut u64, first: &mut Vec<serde_json::Value>, id: &RawBson, show: usize) {
    *total += 1;
    if first.len() < show {
        first.push(
            Bson::try_from(id.clone())
                .map(Bson::into_canonical_extjson)
                .unwrap_or(serde_json::Value::Null),
        );
    }
}

/// A cursor over the namespace in `_id` order (an `_id` index walk, no sort).
/// (`hint`: walk the `_id` index; time-series collections have none.)
async fn open(
    side: Side,
    client: &Client,
    ns: &Namespace,
    filter: Option<&Document>,
    hint: bool,
) -> Result<Cursor<RawDocumentBuf>, MongoError> {
    let collection = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    let find = collection
        .find(filter.cloned().unwrap_or_default())
        .sort(doc! { "_id": 1 })
        .batch_size(BATCH);
    let find = if hint {
        find.hint(Hint::Keys(doc! { "_id": 1 }))
    } else {
        find
    };
    find.await.map_err(|e| failed(side, ns, &e))
}

async fn next(
    cursor: &mut Cursor<RawDocumentBuf>,
    side: Side,
    ns: &Namespace,
) -> Result<Option<(RawBson, RawDocumentBuf)>, MongoError> {
    let Some(doc) = cursor.try_next().await.map_err(|e| failed(side, ns, &e))? else {
        return Ok(None);
    };
    let id = match doc.get("_id") {
        Ok(Some(id)) => id.to_raw_bson(),
        _ => {
            return Err(MongoError::Command {
                side,
                ns: ns.clone(),
                op: "verify",
                reason: "a document has no readable _id".into(),
            })
        }
    };
    Ok(Some((id, doc)))
}

fn failed(side: Side, ns: &Namespace, e: &mongodb::error::Error) -> MongoError {
    MongoError::Command {
        side,
        ns: ns.clone(),
        op: "verify",
        reason: describe(e),
    }
}
