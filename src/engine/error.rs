//! The engine's errors: what any stage may fail with.
//!
//! In: the errors of the layers below (MongoDB, the state store, the journal). Out: one
//! [`CopyError`] that every stage returns and the surfaces (command line, API) map to an exit
//! status or an HTTP answer.

use crate::mongo::MongoError;

/// Errors of the copy engine.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The schema of the source cannot be made at the destination as it stands (its options
    /// differ, or nothing is selected).
    #[error("{0}")]
    Schema(String),
    /// The job would destroy data that exists nowhere else (`run::overlap`): nothing was
    /// written.
    #[error("refused, nothing was written: {}", .0.join("; "))]
    Unsafe(Vec<String>),
    /// The job asks its commit for what a server cannot do (`run::cutover`: writes blocked
    /// where `setUserWriteBlockMode` is missing): refused before anything was written.
    #[error("refused, nothing was written: {0}")]
    CannotCommit(String),
    /// What the job asks of the servers they cannot give (the load guard's signals): refused
    /// before anything was written.
    #[error("refused, nothing was written: {}", .0.join("; "))]
    Refused(Vec<String>),
    /// The load guard saw a critical threshold crossed and stopped the job; its checkpoint is
    /// kept.
    #[error("{0}: the job stopped and keeps its checkpoint; run it again to continue")]
    CriticalLoad(String),
    /// The source no longer holds the changes after the job's saved position.
    #[error(
        "the source no longer holds the changes since this job's saved position ({0}); following \
         changes cannot bring the destination up to date any more: run the job again with \
         --on-history-lost reconcile to write only what differs and follow on from a new \
         position, or with --restart for a full copy"
    )]
    HistoryLost(String),
    /// A change of the source that cannot be made at the destination (never skipped).
    #[error("cannot apply {0}")]
    Change(String),
    /// The job was stopped before it finished (not a failure of its own).
    #[error("stopped before completion")]
    Stopped,
    #[error("internal error: {0}")]
    Internal(String),
}

/// The work queue was closed because the job is stopping.
#[derive(Debug, thiserror::Error)]
#[error("the work queue is closed")]
pub struct QueueClosed;

impl From<QueueClosed> for CopyError {
    fn from(_: QueueClosed) -> Self {
        CopyError::Stopped
    }
}
