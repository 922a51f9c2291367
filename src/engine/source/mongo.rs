//! A MongoDB source cluster: reads a namespace in `_id` order, and fetches batches of `_id`s.
//!
//! In: a namespace task and the job's filter. Out: sorted batches on the queue, `_id`s or whole
//! documents by [`Strategy`]. A task resuming from a checkpoint reads only what sorts after its
//! watermark, across `_id` type brackets ([`bson_order::after`]). A transient error while reading
//! re-opens the cursor after the last `_id` queued (the partial batch is read again), with
//! backoff, up to the retry limit.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document, RawBson, RawDocumentBuf};
use mongodb::options::Hint;
use mongodb::Client;

use super::{id_of, BatchBuilder, Source, Strategy, MAX_BATCH_BYTES};
use crate::engine::queue::{NsTask, Payload, QueueSender};
use crate::engine::CopyError;
use crate::mongo::bson_order;
use crate::mongo::retry::{Attempts, Retry};
use crate::mongo::{describe, is_bad_query, MongoError, Namespace, Side};

/// A MongoDB source cluster.
pub struct MongoSource {
    client: Client,
    filter: Document,
    strategy: Strategy,
    retry: Retry,
    /// Namespaces read without hinting the `_id` index (time-series collections have none).
    unhinted: BTreeSet<Namespace>,
}

/// Why a scan of the source stopped early.
enum ScanStop {
    /// A driver error while reading: maybe worth re-opening the cursor.
    Read(mongodb::error::Error),
    Other(CopyError),
}

impl MongoSource {
    pub fn new(client: Client, filter: Option<Document>, strategy: Strategy) -> Self {
        MongoSource {
            client,
            filter: filter.unwrap_or_default(),
            strategy,
            retry: Retry::default(),
            unhinted: BTreeSet::new(),
        }
    }

    /// Reads these namespaces without an `_id` index hint.
    pub fn without_index_hint(mut self, namespaces: BTreeSet<Namespace>) -> Self {
        self.unhinted = namespaces;
        self
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
        batch_size: usize,
        queue: &QueueSender,
        after: &mut Option<RawBson>,
        attempts: &mut Attempts,
    ) -> Result<(), ScanStop> {
        let strategy = self.strategy;
        let ns = &task.source;
        // The hint makes the server walk the `_id` index instead of sorting the whole result.
        let collection = self.collection(ns);
        let find = collection
            .find(self.query(after.as_ref()))
            .sort(doc! { "_id": 1 });
        let find = if self.unhinted.contains(ns) {
            find
        } else {
            find.hint(Hint::Keys(doc! { "_id": 1 }))
        };
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
    fn count<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<u64, CopyError>> {
        async move {
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
        .boxed()
    }

    fn produce<'a>(
        &'a self,
        task: &'a Arc<NsTask>,
        batch_size: usize,
        queue: &'a QueueSender,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        async move {
            let mut after = task.resume_after.clone();
            let mut attempts = Attempts::default();
            loop {
                let outcome = self
                    .scan(task, batch_size, queue, &mut after, &mut attempts)
                    .await;
                match outcome {
                    Ok(()) => return Ok(()),
                    Err(ScanStop::Other(e)) => return Err(e),
                    Err(ScanStop::Read(e)) => {
                        // A pass may read for long before it fails: the window opens at the
                        // failure.
                        let failed_at = tokio::time::Instant::now();
                        if !self.retry.pause("find", &e, &mut attempts, failed_at).await {
                            return Err(self.read_error(&task.source, "find", e));
                        }
                    }
                }
            }
        }
        .boxed()
    }

    fn fetch<'a>(
        &'a self,
        ns: &'a Namespace,
        ids: &'a [RawBson],
    ) -> BoxFuture<'a, Result<Vec<RawDocumentBuf>, CopyError>> {
        async move {
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
        .boxed()
    }
}
