//! The write stage: where documents go, idempotently by `_id`.
//!
//! In: a destination namespace and raw documents. Out: the documents stored, acknowledged by the
//! destination, and the ones it refused ([`Refused`], with the reason). [`Sink`] is the seam; one
//! file per kind: [`mongo`] (a destination cluster), [`null`] (drops everything, to measure the
//! engine) and [`journaling`] (a layer around another sink that journals what it acknowledged).

pub mod journaling;
pub mod mongo;
pub mod null;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::RawDocumentBuf;

use super::CopyError;
use crate::mongo::Namespace;
pub use journaling::Journaled;
pub use mongo::MongoSink;
pub use null::NullSink;

/// The largest document a MongoDB server stores (its `maxBsonObjectSize`).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// A document the destination would not take, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    pub doc: RawDocumentBuf,
    pub code: Option<i32>,
    pub reason: String,
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

    /// Returns once everything acknowledged so far is durable in every layer of the sink (a
    /// journal's fsync): the ledger calls it before a checkpoint moves past those writes.
    fn sync(&self) -> BoxFuture<'_, Result<(), CopyError>> {
        async { Ok(()) }.boxed()
    }
}
