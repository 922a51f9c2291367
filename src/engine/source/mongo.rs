//! A MongoDB source cluster: reads a namespace in `_id` order, and fetches batches of `_id`s.
//!
//! In: a namespace task and the job's filter. Out: sorted batches on the queue, `_id`s or whole
//! documents by [`Strategy`]. A task resuming from a checkpoint reads only what sorts after its
//! watermark, across `_id` type brackets ([`bson_order::after`]). A transient error while reading
//! re-opens the cursor after the last `_id` queued (the partial batch is read again), with
//! backoff, up to the retry limit.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use mongodb::bson::{doc, rawdoc, Bson, Document, RawBson, RawDocumentBuf};
use mongodb::options::Hint;
use mongodb::raw_batch_cursor::RawBatchCursor;
use mongodb::Client;

use super::fetch_sizer::FetchSizer;
use super::seam::{covered_up_to, id_of, BatchBuilder, Fetched, Source, Strategy};
use crate::engine::budget::Budget;
use crate::engine::error::CopyError;
use crate::engine::queue::{Payload, QueueSender};
use crate::engine::task::NsTask;
use crate::mongo::bson_order;
use crate::mongo::retry::{Attempts, Retry};
use crate::mongo::{describe, is_bad_query, MongoError, Namespace, Side};

/// The document size assumed before any reply of the source was seen (it sizes the getMores of
/// the first cursor; a cursor whose first reply shows documents far larger is opened again).
const GUESS_DOC_BYTES: usize = 1024;

/// A MongoDB source cluster.
pub struct MongoSource {
    client: Client,
    filter: Document,
    strategy: Strategy,
    retry: Retry,
    /// Namespaces read without hinting the `_id` index (time-series collections have none).
    unhinted: BTreeSet<Namespace>,
    /// Average bytes of a document in the latest reply (0 until one was seen): sizes the
    /// getMores of the next cursor and the fetches of the `ids` strategy.
    avg_doc_bytes: AtomicUsize,
    /// The `_id`s per `$in` fetch, by measurement.
    sizer: parking_lot::Mutex<FetchSizer>,
}

/// `$in` fetches of one batch of `_id`s in flight at once.
pub const FETCHES_AT_ONCE: usize = 4;

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
            avg_doc_bytes: AtomicUsize::new(0),
            sizer: Default::default(),
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

    /// `query` and the job's filter.
    fn with_filter(&self, query: Document) -> Document {
        if self.filter.is_empty() {
            query
        } else {
            doc! { "$and": [self.filter.clone(), query] }
        }
    }

    /// The job's filter, restricted to what sorts after `after`, up to `upper` (a partition's
    /// end).
    fn query(&self, after: Option<&RawBson>, upper: Option<&RawBson>) -> Document {
        let mut parts: Vec<Document> = [
            (!self.filter.is_empty()).then(|| self.filter.clone()),
            after.map(bson_order::after),
            upper.map(bson_order::up_to),
        ]
        .into_iter()
        .flatten()
        .collect();
        match parts.len() {
            0 => Document::new(),
            1 => parts.remove(0),
            _ => doc! { "$and": parts },
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
        match self.strategy {
            Strategy::Ids => {
                self.scan_ids(task, batch_size, queue, after, attempts)
                    .await
            }
            Strategy::Stream => {
                self.scan_docs(task, batch_size, queue, after, attempts)
                    .await
            }
        }
    }

    /// The `ids` read: sorted `_id`s only, many per reply (they are tiny).
    async fn scan_ids(
        &self,
        task: &Arc<NsTask>,
        batch_size: usize,
        queue: &QueueSender,
        after: &mut Option<RawBson>,
        attempts: &mut Attempts,
    ) -> Result<(), ScanStop> {
        let ns = &task.source;
        let collection = self.collection(ns);
        let find = collection
            .find(self.query(after.as_ref(), task.upper()))
            .sort(doc! { "_id": 1 })
            .projection(doc! { "_id": 1 })
            .batch_size(10_000);
        let find = match self.hint(ns) {
            Some(hint) => find.hint(Hint::Keys(hint)),
            None => find,
        };
        let mut cursor = find.await.map_err(ScanStop::Read)?;
        let stop = |e: CopyError| ScanStop::Other(e);
        let mut ids = Vec::with_capacity(batch_size);
        while let Some(doc) = cursor.try_next().await.map_err(ScanStop::Read)? {
            ids.push(id_of(&doc, ns).map_err(stop)?);
            if ids.len() >= batch_size {
                let full = std::mem::replace(&mut ids, Vec::with_capacity(batch_size));
                self.queue(task, Payload::Ids(full), queue, after)
                    .await
                    .map_err(stop)?;
                attempts.reset();
            }
        }
        // An empty payload is not queued.
        self.queue(task, Payload::Ids(ids), queue, after)
            .await
            .map_err(stop)
    }

    /// The `_id` index hint, unless the namespace has no `_id` index (a time-series
    /// collection): it makes the server walk the index instead of sorting the whole result.
    fn hint(&self, ns: &Namespace) -> Option<Document> {
        (!self.unhinted.contains(ns)).then(|| doc! { "_id": 1 })
    }

    /// The average document size seen last, or the guess before any was seen.
    fn doc_bytes_estimate(&self) -> usize {
        match self.avg_doc_bytes.load(Relaxed) {
            0 => GUESS_DOC_BYTES,
            n => n,
        }
    }

    /// Opens the sorted read of whole documents: a first reply of `first` documents, then
    /// getMores of `more` documents each, as raw batches (each reply as the server sent it: the
    /// driver copies no document out of it).
    async fn open_sized(
        &self,
        task: &NsTask,
        after: Option<&RawBson>,
        first: u32,
        more: u32,
    ) -> mongodb::error::Result<RawBatchCursor> {
        let ns = &task.source;
        let db = self.client.database(&ns.db);
        let filter = RawDocumentBuf::try_from(&self.query(after, task.upper()))?;
        let mut command = rawdoc! {
            "find": ns.coll.as_str(),
            "filter": filter,
            "sort": { "_id": 1 },
            "batchSize": first as i32,
        };
        if let Some(hint) = self.hint(ns) {
            command.append("hint", RawDocumentBuf::try_from(&hint)?);
        }
        if let Some(concern) = db.read_concern() {
            let concern = mongodb::bson::to_document(concern)?;
            command.append("readConcern", RawDocumentBuf::try_from(&concern)?);
        }
        // The read preference of the URI, as the collection's own `find` would use it.
        let mut find = db.run_raw_cursor_command(command).batch_size(more);
        if let Some(criteria) = db.selection_criteria() {
            find = find.selection_criteria(criteria.clone());
        }
        find.batch().await
    }

    /// The `stream` read: whole documents in `_id` order, replies sized from the memory budget
    /// (`reply_bytes / average document` per getMore, the average of the source's latest reply,
    /// a guess before the first). The driver fixes a cursor's getMore size when it opens it, so
    /// a cursor whose first reply shows documents over twice as large as assumed is opened
    /// again after that reply, before any getMore (only then: a new query costs some servers a
    /// scan).
    async fn scan_docs(
        &self,
        task: &Arc<NsTask>,
        batch_size: usize,
        queue: &QueueSender,
        after: &mut Option<RawBson>,
        attempts: &mut Attempts,
    ) -> Result<(), ScanStop> {
        let ns = &task.source;
        let budget: Budget = *queue.budget();
        let stop = |e: CopyError| ScanStop::Other(e);
        let mut more = budget.reply_docs(self.doc_bytes_estimate());
        let mut cursor = self
            .open_sized(task, after.as_ref(), budget.first_reply_docs(), more)
            .await
            .map_err(ScanStop::Read)?;
        let mut docs = BatchBuilder::new(batch_size, budget.batch_bytes);
        let mut last_read: Option<RawBson> = None;
        let mut first_reply = true;
        while let Some(reply) = cursor.try_next().await.map_err(ScanStop::Read)? {
            let (mut count, mut bytes) = (0usize, 0usize);
            for doc in reply.doc_slices().map_err(ScanStop::Read)? {
                let doc = doc.map_err(|e| ScanStop::Read(e.into()))?;
                let Some(doc) = doc.as_document() else {
                    return Err(stop(CopyError::Internal(format!(
                        "a reply of {ns} holds something other than a document"
                    ))));
                };
                count += 1;
                bytes += doc.as_bytes().len();
                let doc = doc.to_owned();
                if first_reply {
                    last_read = Some(id_of(&doc, ns).map_err(stop)?);
                }
                if let Some(full) = docs.push(doc) {
                    self.queue(task, Payload::Docs(full), queue, after)
                        .await
                        .map_err(stop)?;
                    attempts.reset();
                }
            }
            drop(reply);
            if count == 0 {
                continue;
            }
            let average = bytes / count;
            self.avg_doc_bytes.store(average, Relaxed);
            if std::mem::take(&mut first_reply) {
                let wanted = budget.reply_docs(average);
                if u64::from(more) > 2 * u64::from(wanted) {
                    tracing::debug!(
                        "{ns}: documents of {average} bytes: the cursor opens again for \
                         getMores of {wanted}"
                    );
                    drop(cursor);
                    more = wanted;
                    cursor = self
                        .open_sized(task, last_read.as_ref(), wanted, wanted)
                        .await
                        .map_err(ScanStop::Read)?;
                }
            }
        }
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
            let mut after = task.resume_after();
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
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Fetched, CopyError>> {
        async move {
            // About `max_bytes` of documents at the latest average size, in fetches of the
            // sizer's length, [`FETCHES_AT_ONCE`] at a time, each bounded by its share of the
            // bytes (at least one document): memory stays near `max_bytes`.
            let wanted = ids
                .len()
                .min((max_bytes / self.doc_bytes_estimate()).max(1));
            let mut chunks = Vec::new();
            let mut start = 0;
            while start < wanted {
                let size = self.sizer.lock().next();
                let end = (start + size).min(wanted);
                chunks.push((size, &ids[start..end]));
                start = end;
            }
            let share = (max_bytes / FETCHES_AT_ONCE).max(1);
            let fetches: Vec<BoxFuture<'_, Result<_, CopyError>>> = chunks
                .iter()
                .map(|&(planned, chunk)| self.timed_fetch(ns, planned, chunk, share).boxed())
                .collect();
            let parts: Vec<(Vec<RawDocumentBuf>, bool)> = futures::stream::iter(fetches)
                .buffered(FETCHES_AT_ONCE)
                .try_collect()
                .await?;
            // In `_id` order, up to the first fetch cut short by its bytes: it answers for its
            // `_id`s up to its last document, and the caller asks again for the rest.
            let mut fetched = Fetched::default();
            for ((_, chunk), (docs, cut)) in chunks.iter().zip(parts) {
                let answered = match docs.last() {
                    Some(last) if cut => covered_up_to(chunk, last, ns)?,
                    _ => chunk.len(),
                };
                fetched.covered += answered;
                fetched.docs.extend(docs);
                if cut {
                    break;
                }
            }
            Ok(fetched)
        }
        .boxed()
    }
}

impl MongoSource {
    /// [`Self::fetch_chunk`], its time told to the sizer (`planned`: the size it asked for).
    async fn timed_fetch(
        &self,
        ns: &Namespace,
        planned: usize,
        ids: &[RawBson],
        max_bytes: usize,
    ) -> Result<(Vec<RawDocumentBuf>, bool), CopyError> {
        let started = std::time::Instant::now();
        let outcome = self.fetch_chunk(ns, ids, max_bytes).await?;
        let secs = started.elapsed().as_secs_f64();
        self.sizer.lock().observe(planned, ids.len(), secs);
        Ok(outcome)
    }

    /// One `$in` fetch of `ids`, in `_id` order, stopped after the document that brings it to
    /// `max_bytes` (then `true`: cut short).
    async fn fetch_chunk(
        &self,
        ns: &Namespace,
        ids: &[RawBson],
        max_bytes: usize,
    ) -> Result<(Vec<RawDocumentBuf>, bool), CopyError> {
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
                // The filter again: a document may have stopped matching since it was listed.
                let mut cursor = collection
                    .find(self.with_filter(doc! { "_id": { "$in": ids.clone() } }))
                    .sort(doc! { "_id": 1 })
                    .batch_size(wanted.min(u32::MAX as usize) as u32)
                    .await?;
                let (mut docs, mut bytes) = (Vec::new(), 0);
                while bytes < max_bytes {
                    let Some(doc) = cursor.try_next().await? else {
                        if !docs.is_empty() {
                            self.avg_doc_bytes.store(bytes / docs.len(), Relaxed);
                        }
                        return Ok((docs, false));
                    };
                    bytes += doc.as_bytes().len();
                    docs.push(doc);
                }
                // Large documents: the cursor is closed when dropped.
                self.avg_doc_bytes.store(bytes / docs.len(), Relaxed);
                Ok((docs, true))
            })
            .await
            .map_err(|e| self.read_error(ns, "fetch", e))
    }
}
