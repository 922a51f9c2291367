//! The producer stage: reads a namespace in `_id` order and fills the queue.
//!
//! In: a namespace task and the job's filter. Out: sorted batches on the queue — `_id`s only
//! ([`Strategy::Ids`], workers fetch the documents) or whole raw documents ([`Strategy::Stream`]).
//! Also the fetch half of the id strategy: a batch of `_id`s in, their raw documents out.
//!
//! A task resuming from a checkpoint reads only what sorts after its watermark, across `_id`
//! type brackets ([`bson_order::after`]). A transient error while reading re-opens the cursor
//! after the last `_id` queued (the partial batch is read again), with backoff, up to the
//! retry limit.

use std::cmp::Ordering;
use std::future::Future;
use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawBson, RawDocumentBuf};
use mongodb::options::Hint;
use mongodb::Client;

use super::queue::{NsTask, Payload, QueueSender};
use super::CopyError;
use crate::bson_order;
use crate::config::Strategy;
use crate::mongo::{describe, is_bad_query, MongoError, Namespace, Side};
use crate::retry::{Attempts, Retry};

/// Largest batch of documents, in bytes, the producer puts on the queue (a bound on memory).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Where documents come from. The engine is generic over it so that its own overhead can be
/// measured with a synthetic source.
pub trait Source: Send + Sync + 'static {
    /// How many documents the namespace is expected to yield, for progress and ETA.
    fn count(&self, ns: &Namespace) -> impl Future<Output = Result<u64, CopyError>> + Send;

    /// Streams the namespace into the queue in batches of at most `batch_size` documents.
    /// Returns when every batch is queued, or with [`CopyError::Stopped`] if the queue closed.
    fn produce(
        &self,
        task: &Arc<NsTask>,
        strategy: Strategy,
        batch_size: usize,
        queue: &QueueSender,
    ) -> impl Future<Output = Result<(), CopyError>> + Send;

    /// The raw documents of a batch of `_id`s (those still present), in `_id` order. It may stop
    /// after the document that brings them to [`MAX_BATCH_BYTES`]: the caller then asks again for
    /// the `_id`s after the last one returned ([`still_to_fetch`]).
    fn fetch(
        &self,
        ns: &Namespace,
        ids: &[RawBson],
    ) -> impl Future<Output = Result<Vec<RawDocumentBuf>, CopyError>> + Send;
}

/// Accumulates documents into batches bounded by count and bytes.
pub struct BatchBuilder {
    batch_size: usize,
    docs: Vec<RawDocumentBuf>,
    bytes: usize,
}

impl BatchBuilder {
    pub fn new(batch_size: usize) -> Self {
        BatchBuilder {
            batch_size,
            docs: Vec::with_capacity(batch_size),
            bytes: 0,
        }
    }

    /// Adds a document; returns a full batch when one is ready.
    pub fn push(&mut self, doc: RawDocumentBuf) -> Option<Vec<RawDocumentBuf>> {
        let len = doc.as_bytes().len();
        let full = if !self.docs.is_empty() && self.bytes + len > MAX_BATCH_BYTES {
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

/// A MongoDB source cluster.
pub struct MongoSource {
    client: Client,
    filter: Document,
    retry: Retry,
}

/// Why a scan of the source stopped early.
enum ScanStop {
    /// A driver error while reading: maybe worth re-opening the cursor.
    Read(mongodb::error::Error),
    Other(CopyError),
}

impl MongoSource {
    pub fn new(client: Client, filter: Option<Document>) -> Self {
        MongoSource {
            client,
            filter: filter.unwrap_or_default(),
            retry: Retry::default(),
        }
    }

    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The job's filter, restricted to what sorts after `after`.
    fn query(&self, after: Option<&RawBson>) -> Document {
        match after {
            None => self.filter.clone(),
            Some(id) if self.filter.is_empty() => bson_order::after(id),
            Some(id) => doc! { "$and": [self.filter.clone(), bson_order::after(id)] },
        }
    }

    /// One pass of the cursor from `after` on; `after` follows every batch queued.
    async fn scan(
        &self,
        task: &Arc<NsTask>,
        strategy: Strategy,
        batch_size: usize,
        queue: &QueueSender,
        after: &mut Option<RawBson>,
        attempts: &mut Attempts,
    ) -> Result<(), ScanStop> {
        let ns = &task.source;
        // The hint makes the server walk the `_id` index instead of sorting the whole result.
        let collection = self.collection(ns);
        let find = collection
            .find(self.query(after.as_ref()))
            .sort(doc! { "_id": 1 })
            .hint(Hint::Keys(doc! { "_id": 1 }));
        let mut cursor = match strategy {
            // Ids are tiny: ask for many per round trip.
            Strategy::Ids => find.projection(doc! { "_id": 1 }).batch_size(10_000).await,
            // Documents: the server's own batching, a small first batch (the first write starts
            // early) and then replies of up to 16 MiB. Asking for `batch_size` per getMore made
            // 200 round trips per 100k documents, and each one that met a busy server (a count,
            // another client) left the workers idle; one large reply is a read-ahead that
            // outlasts such a stall. Memory stays bounded by the reply's 16 MiB.
            Strategy::Stream => find.await,
        }
        .map_err(ScanStop::Read)?;
        let stop = |e: CopyError| ScanStop::Other(e);

        // One pass over the cursor; only one of the two batches fills, by strategy.
        let mut ids = Vec::with_capacity(batch_size);
        let mut docs = BatchBuilder::new(batch_size);
        while let Some(doc) = cursor.try_next().await.map_err(ScanStop::Read)? {
            let full = match strategy {
                Strategy::Ids => {
                    ids.push(id_of(&doc, ns).map_err(stop)?);
                    (ids.len() >= batch_size).then(|| {
                        Payload::Ids(std::mem::replace(&mut ids, Vec::with_capacity(batch_size)))
                    })
                }
                Strategy::Stream => docs.push(doc).map(Payload::Docs),
            };
            if let Some(payload) = full {
                self.queue(task, payload, queue, after)
                    .await
                    .map_err(stop)?;
                attempts.reset();
            }
        }
        // Empty payloads are not queued.
        self.queue(task, Payload::Ids(ids), queue, after)
            .await
            .map_err(stop)?;
        self.queue(task, Payload::Docs(docs.take()), queue, after)
            .await
            .map_err(stop)
    }

    async fn queue(
        &self,
        task: &Arc<NsTask>,
        payload: Payload,
        queue: &QueueSender,
        after: &mut Option<RawBson>,
    ) -> Result<(), CopyError> {
        let last = payload.last_id();
        if last.is_none() && !payload.is_empty() {
            return Err(CopyError::Internal(format!(
                "a document of {} has no readable _id",
                task.source
            )));
        }
        queue.send(task, payload).await?;
        if last.is_some() {
            *after = last;
        }
        Ok(())
    }

    fn collection(&self, ns: &Namespace) -> mongodb::Collection<RawDocumentBuf> {
        self.client.database(&ns.db).collection(&ns.coll)
    }

    fn read_error(&self, ns: &Namespace, op: &'static str, e: mongodb::error::Error) -> CopyError {
        if is_bad_query(&e) {
            MongoError::BadFilter {
                ns: ns.clone(),
                reason: describe(&e),
            }
            .into()
        } else {
            MongoError::Command {
                side: Side::Source,
                ns: ns.clone(),
                op,
                reason: describe(&e),
            }
            .into()
        }
    }
}

impl Source for MongoSource {
    async fn count(&self, ns: &Namespace) -> Result<u64, CopyError> {
        let coll = self.collection(ns);
        self.retry
            .run("count", || async {
                if self.filter.is_empty() {
                    coll.estimated_document_count().await
                } else {
                    coll.count_documents(self.filter.clone()).await
                }
            })
            .await
            .map_err(|e| self.read_error(ns, "count", e))
    }

    async fn produce(
        &self,
        task: &Arc<NsTask>,
        strategy: Strategy,
        batch_size: usize,
        queue: &QueueSender,
    ) -> Result<(), CopyError> {
        let mut after = task.resume_after.clone();
        let mut attempts = Attempts::default();
        loop {
            let outcome = self
                .scan(task, strategy, batch_size, queue, &mut after, &mut attempts)
                .await;
            match outcome {
                Ok(()) => return Ok(()),
                Err(ScanStop::Other(e)) => return Err(e),
                Err(ScanStop::Read(e)) => {
                    // A pass may read for long before it fails: the window opens at the failure.
                    let failed_at = tokio::time::Instant::now();
                    if !self.retry.pause("find", &e, &mut attempts, failed_at).await {
                        return Err(self.read_error(&task.source, "find", e));
                    }
                }
            }
        }
    }

    async fn fetch(
        &self,
        ns: &Namespace,
        ids: &[RawBson],
    ) -> Result<Vec<RawDocumentBuf>, CopyError> {
        let wanted = ids.len();
        let ids = ids
            .iter()
            .cloned()
            .map(Bson::try_from)
            .collect::<Result<Vec<Bson>, _>>()
            .map_err(|e| CopyError::Internal(format!("undecodable _id: {e}")))?;
        let collection = self.collection(ns);
        self.retry
            .run("fetch", || async {
                let mut cursor = collection
                    .find(doc! { "_id": { "$in": ids.clone() } })
                    .sort(doc! { "_id": 1 })
                    .batch_size(wanted.min(u32::MAX as usize) as u32)
                    .await?;
                // Large documents: stop at the byte bound (the cursor is closed when dropped).
                let (mut docs, mut bytes) = (Vec::new(), 0);
                while bytes < MAX_BATCH_BYTES {
                    let Some(doc) = cursor.try_next().await? else {
                        break;
                    };
                    bytes += doc.as_bytes().len();
                    docs.push(doc);
                }
                Ok(docs)
            })
            .await
            .map_err(|e| self.read_error(ns, "fetch", e))
    }
}

/// The part of `ids` (sorted in `_id` order) a [`Source::fetch`] that returned `fetched` did not
/// reach: none when it returned everything, else the `_id`s after the last document returned.
pub fn still_to_fetch<'a>(
    ids: &'a [RawBson],
    fetched: &[RawDocumentBuf],
    ns: &Namespace,
) -> Result<&'a [RawBson], CopyError> {
    let bytes: usize = fetched.iter().map(|d| d.as_bytes().len()).sum();
    let Some(last) = fetched.last().filter(|_| bytes >= MAX_BATCH_BYTES) else {
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
        let ns = Namespace::new("a", "b");
        let ids: Vec<RawBson> = (1..=5).map(RawBson::Int64).collect();
        // Everything, or less than the bound: nothing left, even if some `_id`s were missing.
        let small = [doc(1, 10), doc(3, 10)];
        assert!(still_to_fetch(&ids, &small, &ns).unwrap().is_empty());
        assert!(still_to_fetch(&ids, &[], &ns).unwrap().is_empty());
        // Cut after `_id` 3 (2 was missing): 4 and 5 are still to fetch.
        let cut = [doc(1, MAX_BATCH_BYTES / 2), doc(3, MAX_BATCH_BYTES / 2)];
        assert_eq!(
            still_to_fetch(&ids, &cut, &ns).unwrap(),
            &ids[3..],
            "continues after the last one returned"
        );
        let cut_at_end = [doc(4, MAX_BATCH_BYTES), doc(5, 1)];
        assert!(still_to_fetch(&ids, &cut_at_end, &ns).unwrap().is_empty());
    }
}
