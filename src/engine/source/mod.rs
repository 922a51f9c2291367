//! The producer stage: where documents come from, read in `_id` order onto the queue.
//!
//! In: a namespace task. Out: sorted batches on the queue — `_id`s only ([`Strategy::Ids`],
//! workers fetch the documents) or whole raw documents ([`Strategy::Stream`]). Also the fetch
//! half of the id strategy: a batch of `_id`s in, their raw documents out.
//!
//! [`Source`] is the seam; one file per kind: [`mongo`] (a source cluster), [`synthetic`]
//! (generated documents, to measure the engine itself) and [`journal`] (a journal being
//! replayed). Batches a source queues must be sorted by `_id` within a namespace and cover it in
//! order: the [ledger](super::ledger)'s watermark relies on it.

pub mod change_stream;
pub mod journal;
pub mod mongo;
pub mod synthetic;

use std::cmp::Ordering;
use std::sync::Arc;

use futures::future::BoxFuture;
use mongodb::bson::{RawBson, RawDocumentBuf};
use serde::{Deserialize, Serialize};

use super::queue::{NsTask, QueueSender};
use super::CopyError;
use crate::mongo::bson_order;
use crate::mongo::Namespace;
pub use mongo::MongoSource;

/// How documents travel from the source to the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum Strategy {
    /// The producer streams sorted `_id` batches; workers fetch each batch with `$in`.
    Ids,
    /// The producer streams whole documents in `_id` order; workers only write.
    #[default]
    Stream,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Ids => "ids",
            Strategy::Stream => "stream",
        })
    }
}

/// Where documents come from. Object safe, so a job picks its source at run time.
pub trait Source: Send + Sync {
    /// How many documents the namespace is expected to yield, for progress and ETA.
    fn count<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<u64, CopyError>>;

    /// Streams the namespace into the queue in batches of at most `batch_size` documents.
    /// Returns when every batch is queued, or with [`CopyError::Stopped`] if the queue closed.
    fn produce<'a>(
        &'a self,
        task: &'a Arc<NsTask>,
        batch_size: usize,
        queue: &'a QueueSender,
    ) -> BoxFuture<'a, Result<(), CopyError>>;

    /// The raw documents of a batch of `_id`s (those still present and matching the job's
    /// filter), in `_id` order. It may stop after the document that brings them to `max_bytes`:
    /// the caller then asks again for the `_id`s after the last one returned
    /// ([`still_to_fetch`]).
    fn fetch<'a>(
        &'a self,
        ns: &'a Namespace,
        ids: &'a [RawBson],
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<RawDocumentBuf>, CopyError>>;
}

/// Accumulates documents into batches bounded by count and bytes (at least one document).
pub struct BatchBuilder {
    batch_size: usize,
    max_bytes: usize,
    docs: Vec<RawDocumentBuf>,
    bytes: usize,
}

impl BatchBuilder {
    pub fn new(batch_size: usize, max_bytes: usize) -> Self {
        BatchBuilder {
            batch_size,
            max_bytes,
            docs: Vec::with_capacity(batch_size),
            bytes: 0,
        }
    }

    /// Adds a document; returns a full batch when one is ready.
    pub fn push(&mut self, doc: RawDocumentBuf) -> Option<Vec<RawDocumentBuf>> {
        let len = doc.as_bytes().len();
        let full = if !self.docs.is_empty() && self.bytes + len > self.max_bytes {
            Some(self.take())
        } else {
            None
        };
        self.bytes += len;
        self.docs.push(doc);
        if full.is_none() && self.docs.len() >= self.batch_size {
            return Some(self.take());
        }
        full
    }

    pub fn take(&mut self) -> Vec<RawDocumentBuf> {
        self.bytes = 0;
        std::mem::replace(&mut self.docs, Vec::with_capacity(self.batch_size))
    }
}

/// The part of `ids` (sorted in `_id` order) a [`Source::fetch`] that returned `fetched` did not
/// reach: none when it returned everything, else the `_id`s after the last document returned.
pub fn still_to_fetch<'a>(
    ids: &'a [RawBson],
    fetched: &[RawDocumentBuf],
    max_bytes: usize,
    ns: &Namespace,
) -> Result<&'a [RawBson], CopyError> {
    let bytes: usize = fetched.iter().map(|d| d.as_bytes().len()).sum();
    let Some(last) = fetched.last().filter(|_| bytes >= max_bytes) else {
        return Ok(&[]);
    };
    let last = id_of(last, ns)?;
    let reached = ids.partition_point(|id| {
        bson_order::compare(id.as_raw_bson_ref(), last.as_raw_bson_ref()) != Ordering::Greater
    });
    Ok(&ids[reached..])
}

/// The `_id` of a raw document; a document without one cannot be copied by id.
pub fn id_of(doc: &RawDocumentBuf, ns: &Namespace) -> Result<RawBson, CopyError> {
    match doc.get("_id") {
        Ok(Some(id)) => Ok(id.to_raw_bson()),
        _ => Err(CopyError::Internal(format!(
            "a document of {ns} has no readable _id"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{rawdoc, spec::BinarySubtype, Binary};

    use super::*;

    fn doc(id: i64, bytes: usize) -> RawDocumentBuf {
        rawdoc! { "_id": id, "pad": Binary { subtype: BinarySubtype::Generic, bytes: vec![0; bytes] } }
    }

    #[test]
    fn a_fetch_cut_at_the_byte_bound_continues_after_its_last_document() {
        const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
        let ns = Namespace::new("a", "b");
        let ids: Vec<RawBson> = (1..=5).map(RawBson::Int64).collect();
        // Everything, or less than the bound: nothing left, even if some `_id`s were missing.
        let small = [doc(1, 10), doc(3, 10)];
        assert!(still_to_fetch(&ids, &small, MAX_BATCH_BYTES, &ns)
            .unwrap()
            .is_empty());
        assert!(still_to_fetch(&ids, &[], MAX_BATCH_BYTES, &ns)
            .unwrap()
            .is_empty());
        // Cut after `_id` 3 (2 was missing): 4 and 5 are still to fetch.
        let cut = [doc(1, MAX_BATCH_BYTES / 2), doc(3, MAX_BATCH_BYTES / 2)];
        assert_eq!(
            still_to_fetch(&ids, &cut, MAX_BATCH_BYTES, &ns).unwrap(),
            &ids[3..],
            "continues after the last one returned"
        );
        let cut_at_end = [doc(4, MAX_BATCH_BYTES), doc(5, 1)];
        assert!(still_to_fetch(&ids, &cut_at_end, MAX_BATCH_BYTES, &ns)
            .unwrap()
            .is_empty());
    }
}
