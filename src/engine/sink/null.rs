//! A sink that accepts every write and keeps nothing.
//!
//! In: batches. Out: nothing, at once. Between it and the synthetic source the engine runs with
//! no database at all, which measures what mongoferry itself costs per document (the "engine
//! ceiling" of BENCHMARKS.md).

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::RawDocumentBuf;

use super::seam::{Refused, Sink, Write};
use crate::engine::error::CopyError;
use crate::mongo::Namespace;

pub struct NullSink;

impl Sink for NullSink {
    fn prepare<'a>(&'a self, _ns: &'a Namespace) -> BoxFuture<'a, Result<(), CopyError>> {
        async { Ok(()) }.boxed()
    }

    fn write<'a>(
        &'a self,
        _ns: &'a Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        drop(docs);
        async { Ok(vec![]) }.boxed()
    }

    fn apply<'a>(
        &'a self,
        _ns: &'a Namespace,
        writes: Vec<Write>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        drop(writes);
        async { Ok(vec![]) }.boxed()
    }
}
