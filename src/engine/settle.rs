//! What a job does with a batch after the destination acknowledged it, before the batch counts
//! as done: a move's read-back and delete at the source (`run::moving`).
//!
//! In: a batch's namespace task and the documents the sink stored (those it refused left out).
//! Out: `Ok` once the job has done with them; an error fails the job, as a write error does.
//! The engine calls it from its one write path ([`worker`](super::worker)) for batches of
//! documents read from the source; a sink only ever writes to the destination.

use futures::future::BoxFuture;
use mongodb::bson::RawDocumentBuf;

use super::error::CopyError;
use super::task::NsTask;

pub trait Settle: Send + Sync {
    fn settle<'a>(
        &'a self,
        task: &'a NsTask,
        stored: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<(), CopyError>>;
}
