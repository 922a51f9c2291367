//! The sink's seam: the [`Sink`] trait every kind of destination implements, and what flows
//! through it ([`Write`]s in, [`Refused`] documents out).

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{RawBson, RawDocumentBuf};

use crate::engine::error::CopyError;
use crate::mongo::Namespace;

/// The largest document a MongoDB server stores (its `maxBsonObjectSize`).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// A document the destination would not take, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    pub doc: RawDocumentBuf,
    pub code: Option<i32>,
    pub reason: String,
}

/// What one change makes of a document at the destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new document: inserted (or replaced, if it is there already).
    Insert(RawDocumentBuf),
    /// The document as it is now: replaced (or inserted, if it is missing).
    Replace(RawDocumentBuf),
    /// The document with this `_id` is gone.
    Delete(RawBson),
}

impl Write {
    /// Bytes of the document written (a delete's `_id` counts nothing).
    pub fn bytes(&self) -> usize {
        match self {
            Write::Insert(doc) | Write::Replace(doc) => doc.as_bytes().len(),
            Write::Delete(_) => 0,
        }
    }
}

/// Where documents go. Object safe, so layers (a journal) wrap a sink chosen at run time.
pub trait Sink: Send + Sync {
    /// Makes sure the namespace exists (so even an empty collection arrives).
    fn prepare<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), CopyError>>;

    /// Writes the documents; returns once the destination acknowledged all of them, with those
    /// it refused.
    fn write<'a>(
        &'a self,
        ns: &'a Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>>;

    /// Applies changes to distinct `_id`s (so in any order); returns once the destination
    /// acknowledged all of them, with the documents it refused. This default writes inserts and
    /// replacements as [`write`](Self::write) does and cannot delete.
    fn apply<'a>(
        &'a self,
        ns: &'a Namespace,
        writes: Vec<Write>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        async move {
            let mut docs = Vec::with_capacity(writes.len());
            for write in writes {
                match write {
                    Write::Insert(doc) | Write::Replace(doc) => docs.push(doc),
                    Write::Delete(_) => {
                        return Err(CopyError::Internal(format!(
                            "this destination cannot delete (in {ns})"
                        )))
                    }
                }
            }
            self.write(ns, docs).await
        }
        .boxed()
    }

    /// Returns once everything acknowledged so far is durable in every layer of the sink (a
    /// journal's fsync): the ledger calls it before a checkpoint moves past those writes.
    fn make_durable(&self) -> BoxFuture<'_, Result<(), CopyError>> {
        async { Ok(()) }.boxed()
    }
}
