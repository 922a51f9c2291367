//! Cheaper comparisons for a reconcile: ranges of documents compared by a digest the servers
//! compute, so that only ranges whose digests differ are read document by document.
//!
//! In: a namespace task and a [`RangeDigest`] (what the servers can hash). Out: the `_id`
//! [`Range`]s of the task still to read ([`ranges_to_read`]); what a digest proved equal is
//! counted as equal and never read.
//!
//! A digest must be exact: two sides whose digests agree are taken as equal, byte for byte.
//!
//! - [`DbHash`] is what a real server takes: the `dbHash` command, an MD5 of a collection's
//!   documents (raw BSON, in `_id` order) computed on the server. It covers a whole collection
//!   only, so it applies to a task that is the whole collection, with no filter and no earlier
//!   run's watermark. Neither SecantusDB nor a server without the command (code 59) has it;
//!   they read every document.
//! - Ranges are hashed only by a strategy that can say a range's digest exactly. MongoDB's
//!   aggregation has no exact one: `$toHashedIndexKey` hashes numbers by value (`1` and `1.0`
//!   alike) and truncates doubles, so a `$group` of per-range hashes could call two different
//!   documents equal. The seam takes such a strategy ([`RangeDigest::ranges`]), and the tests
//!   drive it with a stub.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{doc, Document, RawBson};
use mongodb::Client;

use super::compare::Find;
use crate::engine::partition::{self, Partition};
use crate::engine::stats::JobStats;
use crate::engine::{CopyError, NsTask};
use crate::mongo::{describe, Namespace, Side};

/// Documents per range when a task whose digests differ is split to be compared range by range.
pub const RANGE_DOCS: u64 = 10_000;

/// An `_id` range of a task: the `_id`s after `after` (`None`: from the start) up to `upper`
/// (`None`: to the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub after: Option<RawBson>,
    pub upper: Option<RawBson>,
}

impl Range {
    /// What is left of `task`: after its watermark, up to its partition's end.
    pub fn whole(task: &NsTask) -> Range {
        Range {
            after: task.resume_after(),
            upper: task.upper().cloned(),
        }
    }
}

/// What a server says of a set of documents without sending them: two sides with equal digests
/// hold the same documents, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub docs: u64,
    pub hash: String,
}

/// Where the digests come from.
pub trait RangeDigest: Send + Sync {
    /// The digest of the documents of `ns` that `find` selects, on `side`; `whole`: `find`
    /// selects the whole collection. `None` where that side cannot compute one.
    fn digest<'a>(
        &'a self,
        at: (Side, &'a Client),
        ns: &'a Namespace,
        find: &'a Find,
        whole: bool,
    ) -> BoxFuture<'a, Result<Option<Digest>, CopyError>>;

    /// It can hash a part of a collection (else only whole ones).
    fn ranges(&self) -> bool;
}

/// `dbHash`: whole collections, on servers that have the command.
pub struct DbHash;

impl RangeDigest for DbHash {
    fn digest<'a>(
        &'a self,
        (side, client): (Side, &'a Client),
        ns: &'a Namespace,
        _find: &'a Find,
        whole: bool,
    ) -> BoxFuture<'a, Result<Option<Digest>, CopyError>> {
        async move {
            if !whole {
                return Ok(None);
            }
            let db = client.database(&ns.db);
            let answer = db
                .run_command(doc! { "dbHash": 1, "collections": [&ns.coll] })
                .await;
            let hash = match answer {
                Ok(answer) => answer
                    .get_document("collections")
                    .ok()
                    .and_then(|c| c.get_str(&ns.coll).ok())
                    .map(str::to_string),
                Err(e) => {
                    tracing::debug!("{side} {ns}: no dbHash ({}): read in full", describe(&e));
                    None
                }
            };
            let Some(hash) = hash else {
                return Ok(None);
            };
            let docs = db
                .collection::<Document>(&ns.coll)
                .estimated_document_count()
                .await
                .unwrap_or(0);
            Ok(Some(Digest { docs, hash }))
        }
        .boxed()
    }

    fn ranges(&self) -> bool {
        false
    }
}

/// What a task's digests are taken on.
pub struct Reading<'a> {
    /// The source's and the destination's clients.
    pub clients: (&'a Client, &'a Client),
    /// The read of a range of the task: the job's filter and the range.
    pub find: &'a (dyn Fn(&Range) -> Find + Sync),
    /// The job has a filter (so no task covers a whole collection).
    pub filtered: bool,
    /// What digests prove equal is counted here.
    pub stats: &'a JobStats,
}

/// The ranges of `task` to read document by document: none when both sides' digests of it
/// agree; else, where the strategy hashes ranges, those of about [`RANGE_DOCS`] documents whose
/// digests differ (or could not be computed); else the task whole.
pub async fn ranges_to_read(
    job: &Reading<'_>,
    digests: &dyn RangeDigest,
    task: &Arc<NsTask>,
) -> Result<Vec<Range>, CopyError> {
    let whole = Range::whole(task);
    let find = (job.find)(&whole);
    let entire = !job.filtered && whole.after.is_none() && task.part.is_none();
    let docs = match compare(job, digests, task, &find, entire).await? {
        Verdict::Equal => return Ok(vec![]),
        Verdict::Unknown => return Ok(vec![whole]),
        Verdict::Differ(_) if !digests.ranges() => return Ok(vec![whole]),
        Verdict::Differ(docs) => docs,
    };
    let parts = partition::parts_for(docs, RANGE_DOCS);
    let points =
        match partition::split_points(job.clients.0, &task.source, &find.filter, parts).await {
            Ok(points) if !points.is_empty() => points,
            Ok(_) => return Ok(vec![whole]),
            Err(e) => {
                tracing::debug!("{}: cannot split, read whole: {e}", task.source);
                return Ok(vec![whole]);
            }
        };
    let mut ranges = Vec::new();
    for part in Partition::between(&points) {
        let range = Range {
            after: part.lower.or(whole.after.clone()),
            upper: part.upper.or(whole.upper.clone()),
        };
        let find = (job.find)(&range);
        if compare(job, digests, task, &find, false).await? != Verdict::Equal {
            ranges.push(range);
        }
    }
    Ok(ranges)
}

/// What two digests say of a set of documents.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Both sides hold the same documents (counted equal, never read).
    Equal,
    /// They differ; the source holds this many.
    Differ(u64),
    /// A side could not compute a digest.
    Unknown,
}

/// Compares the digests of what `find` selects on both sides.
async fn compare(
    job: &Reading<'_>,
    digests: &dyn RangeDigest,
    task: &NsTask,
    find: &Find,
    whole: bool,
) -> Result<Verdict, CopyError> {
    let ours = (Side::Source, job.clients.0);
    let theirs = (Side::Destination, job.clients.1);
    let source = digests.digest(ours, &task.source, find, whole).await?;
    let destination = digests
        .digest(theirs, &task.destination, find, whole)
        .await?;
    Ok(match (source, destination) {
        (Some(a), Some(b)) if a == b => {
            task.counters.add_equal(a.docs);
            job.stats.reconcile.add_digested(a.docs);
            Verdict::Equal
        }
        (Some(a), Some(_)) => Verdict::Differ(a.docs),
        _ => Verdict::Unknown,
    })
}
