//! The producer's seam: what the engine reads onto its queue.
//!
//! In: the queue's sending end and the run's cancel token. Out: batches on the queue until the
//! feed is done — it then drops the sender, which closes the queue, and the workers drain it and
//! stop — or its first error. Three feeds fill the one queue:
//!
//! - a collection scan ([`Scan`](super::scan::Scan)): a [`Source`](super::source::Source)'s
//!   namespaces in `_id` order, from a cluster or (for a replay) a journal;
//! - a sync's change stream (`run::sync`): the source's changes as batches of writes by `_id`,
//!   in order, each chunk written before the next is queued
//!   ([`QueueSender::barrier`]).
//!
//! Whatever the feed, the workers write every batch the same way ([`worker`](super::worker)).

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::error::CopyError;
use super::queue::QueueSender;

/// Fills the engine's queue.
pub trait Feed: Send + Sync {
    /// Queues batches until done or `cancel`; dropping `queue` at the end closes it.
    fn run(
        self: Arc<Self>,
        queue: QueueSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), CopyError>>;
}
