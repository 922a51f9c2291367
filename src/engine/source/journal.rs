//! A journal as the copy engine's source, for `mongoferry journal replay`.
//!
//! In: a verified journal (its [`Scan`](crate::journal::reader::Scan)) and a namespace task. Out: the
//! namespace's documents in journal order, in batches on the engine's queue, so that a replay
//! has the same workers, throttle and progress as a copy. Reading and decompressing run in
//! `spawn_blocking`, one frame at a time.
//!
//! Order: within one run of the journal a copy's upserts write an `_id` once, so the engine's
//! workers may write them in any order. A later run may write the same `_id`s again (a copy run
//! a second time into the same journal); before the first batch of a new run, the producer waits
//! until every batch of the earlier runs is written, so the later document wins as it did. A
//! sync's changes (deletes and changes, records 2 and 3) may touch one `_id` many times: they go
//! in batches that keep the last change of each `_id` ([`Payload::Writes`]), each one written
//! before the next is queued, after everything queued before them. A change of another `_id` of
//! the same value as one in the batch (`1.0` after `1`) starts the next batch, so that the
//! earlier one is written first and the later one's type is what stays.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::RawBson;

use super::seam::{id_of, BatchBuilder, Fetched, Source};
use crate::engine::error::CopyError;
use crate::engine::queue::{Payload, QueueSender};
use crate::engine::sink::seam::Write;
use crate::engine::task::NsTask;
use crate::journal::reader::{Frame, JournalReader};
use crate::journal::Op;
use crate::mongo::bson_order::{self, IdKey};
use crate::mongo::Namespace;

pub struct JournalSource {
    dir: PathBuf,
    /// Records per namespace, as verified before the replay.
    counts: BTreeMap<String, u64>,
    /// Records verified before the replay; frames a writer appended since are not replayed.
    records: u64,
}

impl JournalSource {
    pub fn new(dir: PathBuf, counts: BTreeMap<String, u64>, records: u64) -> Self {
        JournalSource {
            dir,
            counts,
            records,
        }
    }
}

/// The next frame of `reader`, read off the async threads.
async fn next_frame(reader: JournalReader) -> Result<(JournalReader, Option<Frame>), CopyError> {
    let (reader, frame) = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let frame = reader.next_frame();
        (reader, frame)
    })
    .await
    .map_err(|e| CopyError::Internal(format!("journal reader failed: {e}")))?;
    Ok((reader, frame?))
}

impl Source for JournalSource {
    fn count<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<u64, CopyError>> {
        let count = self.counts.get(&ns.to_string()).copied().unwrap_or(0);
        async move { Ok(count) }.boxed()
    }

    fn produce<'a>(
        &'a self,
        task: &'a Arc<NsTask>,
        batch_size: usize,
        queue: &'a QueueSender,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        self.replay(task, batch_size, queue).boxed()
    }

    fn fetch<'a>(
        &'a self,
        _ns: &'a Namespace,
        _ids: &'a [RawBson],
        _max_bytes: usize,
    ) -> BoxFuture<'a, Result<Fetched, CopyError>> {
        async {
            Err(CopyError::Internal(
                "a journal streams whole documents; it cannot fetch by _id".into(),
            ))
        }
        .boxed()
    }
}

impl JournalSource {
    /// Queues the task's records, run after run (see the module doc for the order).
    async fn replay(
        &self,
        task: &Arc<NsTask>,
        batch_size: usize,
        queue: &QueueSender,
    ) -> Result<(), CopyError> {
        let ns = task.source.to_string();
        let dir = self.dir.clone();
        let mut reader = tokio::task::spawn_blocking(move || JournalReader::open(&dir))
            .await
            .map_err(|e| CopyError::Internal(format!("journal reader failed: {e}")))??;
        let mut docs = BatchBuilder::new(batch_size, queue.budget().batch_bytes);
        let mut changes = Changes::default();
        let mut run = None;
        loop {
            let (back, frame) = next_frame(reader).await?;
            reader = back;
            let Some(frame) = frame else { break };
            if frame.header.first_seq >= self.records {
                break;
            }
            if run.is_some_and(|r| r != frame.run) {
                queue.send(task, Payload::Docs(docs.take())).await?;
                changes.send(task, queue).await?;
                queue.barrier(task).await?;
            }
            run = Some(frame.run);
            // A move's notes of what it deleted from its source change nothing here.
            for record in frame.records().filter(|r| r.ns == ns && r.op != Op::Moved) {
                let doc = record.doc.to_raw_document_buf();
                if record.op == Op::Upsert {
                    changes.send(task, queue).await?;
                    if let Some(full) = docs.push(doc) {
                        queue.send(task, Payload::Docs(full)).await?;
                    }
                    continue;
                }
                if changes.is_empty() {
                    // The upserts before the first change are written before it.
                    queue.send(task, Payload::Docs(docs.take())).await?;
                    queue.barrier(task).await?;
                }
                let id = id_of(&doc, &task.source)?;
                if !changes.takes(&id) {
                    changes.send(task, queue).await?;
                }
                let write = match record.op {
                    Op::Delete => Write::Delete(id.clone()),
                    _ => Write::Replace(doc),
                };
                changes.keep(&id, write);
                if changes.len() >= batch_size {
                    changes.send(task, queue).await?;
                }
            }
        }
        if let Some(torn) = reader.torn_tail() {
            tracing::debug!("{torn}");
        }
        queue.send(task, Payload::Docs(docs.take())).await?;
        changes.send(task, queue).await
    }
}

/// A sync's changes gathered for one batch: the last one of each `_id`, by its slot at the
/// server ([`bson_order::slot_key`]) with its exact `_id`.
#[derive(Default)]
struct Changes(HashMap<Vec<u8>, (IdKey, Write)>);

impl Changes {
    /// Whether a change of `id` may join the batch: not if it holds another `_id` of the same
    /// value (`1` then `1.0`), which must be written first (see `apply`'s `Chunk::takes`).
    fn takes(&self, id: &RawBson) -> bool {
        self.0
            .get(&bson_order::slot_key(id))
            .is_none_or(|(held, _)| *held == IdKey::of(id))
    }

    fn keep(&mut self, id: &RawBson, write: Write) {
        self.0
            .insert(bson_order::slot_key(id), (IdKey::of(id), write));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Queues the batch and waits until it is written: a later change of the same `_id`
    /// must not overtake it.
    async fn send(&mut self, task: &Arc<NsTask>, queue: &QueueSender) -> Result<(), CopyError> {
        if self.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.0)
            .into_values()
            .map(|(_, write)| write)
            .collect();
        queue.send(task, Payload::Writes(writes)).await?;
        Ok(queue.barrier(task).await?)
    }
}
