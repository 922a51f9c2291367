//! The source's seam: the [`Source`] trait every kind of source implements, the [`Strategy`]
//! it reads with, and the helpers its kinds share (batches bounded by count and bytes, `_id`s).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use mongodb::bson::{RawBson, RawDocumentBuf};
use serde::{Deserialize, Serialize};

use crate::engine::error::CopyError;
use crate::engine::queue::QueueSender;
use crate::engine::sink::seam::Write;
use crate::engine::task::NsTask;
use crate::mongo::bson_order::{self, IdKey};
use crate::mongo::Namespace;

/// How documents travel from the source to the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

    /// The raw documents of a batch of `_id`s (sorted in `_id` order): those still present and
    /// matching the job's filter, in `_id` order. It may answer for only the first `_id`s (at
    /// least one), to keep near `max_bytes`: the caller then asks again for the rest.
    fn fetch<'a>(
        &'a self,
        ns: &'a Namespace,
        ids: &'a [RawBson],
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Fetched, CopyError>>;
}

/// What a [`Source::fetch`] found.
#[derive(Debug, Default)]
pub struct Fetched {
    pub docs: Vec<RawDocumentBuf>,
    /// How many of the `_id`s asked for this answers for, from the first.
    pub covered: usize,
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

/// How many of `ids` (sorted in `_id` order) a fetch cut short after `last` answers for: those
/// up to and including it.
pub fn covered_up_to(
    ids: &[RawBson],
    last: &RawDocumentBuf,
    ns: &Namespace,
) -> Result<usize, CopyError> {
    let last = id_of(last, ns)?;
    Ok(ids.partition_point(|id| {
        bson_order::compare(id.as_raw_bson_ref(), last.as_raw_bson_ref()) != Ordering::Greater
    }))
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

/// The writes that make the documents of `ids` at the destination like `source`'s now (its
/// filter applied, if it has one): those found are written, the others deleted. A document is
/// matched to its `_id` exactly ([`IdKey`]): the server answers `{_id: 1}` with `{_id: 1.0}`
/// too, which is another document and does not mean that `1` is there. Read in parts of about
/// `max_bytes`.
pub async fn current(
    source: &dyn Source,
    ns: &Namespace,
    mut ids: Vec<RawBson>,
    max_bytes: usize,
) -> Result<Vec<Write>, CopyError> {
    ids.sort_by(|a, b| bson_order::compare(a.as_raw_bson_ref(), b.as_raw_bson_ref()));
    let mut found = Vec::with_capacity(ids.len());
    let mut pending = &ids[..];
    while !pending.is_empty() {
        let fetched = source.fetch(ns, pending, max_bytes).await?;
        // At least one `_id` each time, so a source that answered for none cannot loop forever.
        pending = &pending[fetched.covered.max(1).min(pending.len())..];
        found.extend(fetched.docs);
    }
    let wanted: HashSet<IdKey> = ids.iter().map(IdKey::of).collect();
    let mut present = HashSet::new();
    let mut writes = Vec::with_capacity(ids.len());
    for doc in found {
        let key = IdKey::of(&id_of(&doc, ns)?);
        if wanted.contains(&key) && present.insert(key) {
            writes.push(Write::Replace(doc));
        }
    }
    writes.extend(
        ids.into_iter()
            .filter(|id| !present.contains(&IdKey::of(id)))
            .map(Write::Delete),
    );
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{rawdoc, spec::BinarySubtype, Binary};

    use super::*;

    fn doc(id: i64, bytes: usize) -> RawDocumentBuf {
        rawdoc! { "_id": id, "pad": Binary { subtype: BinarySubtype::Generic, bytes: vec![0; bytes] } }
    }

    #[test]
    fn a_fetch_cut_short_answers_for_the_ids_up_to_its_last_document() {
        let ns = Namespace::new("a", "b");
        let ids: Vec<RawBson> = (1..=5).map(RawBson::Int64).collect();
        // Cut after `_id` 3 (2 was missing): 1 to 3 are answered for, 4 and 5 are still to fetch.
        assert_eq!(covered_up_to(&ids, &doc(3, 10), &ns).unwrap(), 3);
        assert_eq!(covered_up_to(&ids, &doc(5, 10), &ns).unwrap(), 5);
        assert!(covered_up_to(&ids, &rawdoc! { "no_id": 1 }, &ns).is_err());
    }
}
