//! An in-process source of generated documents.
//!
//! In: a document count and size. Out: the same stream of batches a database would give, with no
//! database behind it. Running the real engine between it and the [null
//! sink](crate::engine::sink::null) measures what mongoferry itself costs per document (the
//! "engine ceiling" of BENCHMARKS.md); `mongoferry sample` writes its documents to a server.

use std::sync::Arc;

use mongodb::bson::{rawdoc, Binary, RawBson, RawDocumentBuf};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::seam::{BatchBuilder, Fetched, Source, Strategy};
use crate::engine::error::CopyError;
use crate::engine::queue::{Payload, QueueSender};
use crate::engine::task::NsTask;
use crate::mongo::Namespace;

/// Generates `docs` documents of about `doc_size` bytes per namespace, `_id` 0, 1, 2, ...,
/// queued as ids or as documents by `strategy`.
pub struct SyntheticSource {
    pub docs: u64,
    pub doc_size: usize,
    pub strategy: Strategy,
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
    fn count<'a>(&'a self, _ns: &'a Namespace) -> BoxFuture<'a, Result<u64, CopyError>> {
        async { Ok(self.docs) }.boxed()
    }

    fn produce<'a>(
        &'a self,
        task: &'a Arc<NsTask>,
        batch_size: usize,
        queue: &'a QueueSender,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        self.generate(task, batch_size, queue).boxed()
    }

    fn fetch<'a>(
        &'a self,
        _ns: &'a Namespace,
        ids: &'a [RawBson],
        _max_bytes: usize,
    ) -> BoxFuture<'a, Result<Fetched, CopyError>> {
        let docs = ids
            .iter()
            .filter_map(|id| match id {
                RawBson::Int64(i) => Some(self.document(*i)),
                _ => None,
            })
            .collect();
        let covered = ids.len();
        async move { Ok(Fetched { docs, covered }) }.boxed()
    }
}

impl SyntheticSource {
    async fn generate(
        &self,
        task: &Arc<NsTask>,
        batch_size: usize,
        queue: &QueueSender,
    ) -> Result<(), CopyError> {
        let mut ids = Vec::with_capacity(batch_size);
        let mut docs = BatchBuilder::new(batch_size, queue.budget().batch_bytes);
        for id in 0..self.docs as i64 {
            match self.strategy {
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
}
