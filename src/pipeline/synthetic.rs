//! An in-process source of generated documents and a sink that drops them.
//!
//! In: a document count and size. Out: the same stream of batches a database would give, with no
//! database behind it. Running the real engine between these two measures what mongoferry itself
//! costs per document (the "engine ceiling" of BENCHMARKS.md).

use std::sync::Arc;

use mongodb::bson::{rawdoc, Binary, RawBson, RawDocumentBuf};

use super::queue::{NsTask, Payload, QueueSender};
use super::sink::{Refused, Sink};
use super::source::{BatchBuilder, Source};
use super::CopyError;
use crate::config::Strategy;
use crate::mongo::Namespace;

/// Generates `docs` documents of about `doc_size` bytes per namespace, `_id` 0, 1, 2, ...
pub struct SyntheticSource {
    pub docs: u64,
    pub doc_size: usize,
}

impl SyntheticSource {
    fn document(&self, id: i64) -> RawDocumentBuf {
        sample_document(id, self.doc_size)
    }
}

/// A document with an `i64` `_id`, a few typed fields and padding up to `size` bytes.
pub fn sample_document(id: i64, size: usize) -> RawDocumentBuf {
    let mut doc = rawdoc! {
        "_id": id,
        "name": format!("item-{id:08}"),
        "qty": (id % 1000) as i32,
        "price": (id % 10_000) as f64 / 100.0,
        "status": if id % 3 == 0 { "closed" } else { "open" },
    };
    let overhead = doc.as_bytes().len() + 4 + "pad".len() + 2 + 1;
    doc.append(
        "pad",
        RawBson::Binary(Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Generic,
            bytes: vec![b'x'; size.saturating_sub(overhead)],
        }),
    );
    doc
}

impl Source for SyntheticSource {
    async fn count(&self, _ns: &Namespace) -> Result<u64, CopyError> {
        Ok(self.docs)
    }

    async fn produce(
        &self,
        task: &Arc<NsTask>,
        strategy: Strategy,
        batch_size: usize,
        queue: &QueueSender,
    ) -> Result<(), CopyError> {
        let mut ids = Vec::with_capacity(batch_size);
        let mut docs = BatchBuilder::new(batch_size);
        for id in 0..self.docs as i64 {
            match strategy {
                Strategy::Ids => {
                    ids.push(RawBson::Int64(id));
                    if ids.len() >= batch_size {
                        let full = std::mem::replace(&mut ids, Vec::with_capacity(batch_size));
                        queue.send(task, Payload::Ids(full)).await?;
                    }
                }
                Strategy::Stream => {
                    if let Some(full) = docs.push(self.document(id)) {
                        queue.send(task, Payload::Docs(full)).await?;
                    }
                }
            }
        }
        queue.send(task, Payload::Ids(ids)).await?;
        queue.send(task, Payload::Docs(docs.take())).await?;
        Ok(())
    }

    async fn fetch(
        &self,
        _ns: &Namespace,
        ids: &[RawBson],
    ) -> Result<Vec<RawDocumentBuf>, CopyError> {
        Ok(ids
            .iter()
            .filter_map(|id| match id {
                RawBson::Int64(i) => Some(self.document(*i)),
                _ => None,
            })
            .collect())
    }
}

/// Accepts every write and keeps nothing.
pub struct NullSink;

impl Sink for NullSink {
    async fn prepare(&self, _ns: &Namespace) -> Result<(), CopyError> {
        Ok(())
    }

    async fn write(
        &self,
        _ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<Refused>, CopyError> {
        drop(docs);
        Ok(vec![])
    }
}
