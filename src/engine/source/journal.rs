//! A journal as the copy engine's source, for `mongoferry journal replay`.
//!
//! In: a verified journal (its [`Scan`](crate::journal::reader::Scan)) and a namespace task. Out: the
//! namespace's documents in journal order, in batches on the engine's queue, so that a replay
//! has the same workers, throttle and progress as a copy. Reading and decompressing run in
//! `spawn_blocking`, one frame at a time.
//!
//! Order: within one run of the journal an `_id` is written once, so the engine's workers may
//! write a run's batches in any order. A later run may write the same `_id`s again (a copy run a
//! second time into the same journal); before the first batch of a new run, the producer waits
//! until every batch of the earlier runs is written, so the later document wins as it did.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{RawBson, RawDocumentBuf};

use super::{BatchBuilder, Source};
use crate::engine::queue::{NsTask, Payload, QueueSender};
use crate::engine::CopyError;
use crate::journal::reader::{Frame, JournalReader};
use crate::journal::Op;
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

/// Waits until every batch of the task sent so far is written (or the job stops).
async fn wait_written(task: &NsTask, queue: &QueueSender) -> Result<(), CopyError> {
    while task.outstanding_batches() > 0 {
        if queue.is_closed() {
            return Err(CopyError::Stopped);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
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
    ) -> BoxFuture<'a, Result<Vec<RawDocumentBuf>, CopyError>> {
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
                wait_written(task, queue).await?;
            }
            run = Some(frame.run);
            for record in frame.records().filter(|r| r.ns == ns) {
                if record.op != Op::Upsert {
                    return Err(CopyError::Change(format!(
                        "a {:?} record of {ns} in segment {} (a sync's journal): this version \
                         replays only the upserts of copies, not a sync's changes",
                        record.op, frame.segment
                    )));
                }
                if let Some(full) = docs.push(record.doc.to_raw_document_buf()) {
                    queue.send(task, Payload::Docs(full)).await?;
                }
            }
        }
        if let Some(torn) = reader.torn_tail() {
            tracing::debug!("{torn}");
        }
        queue.send(task, Payload::Docs(docs.take())).await?;
        Ok(())
    }
}
