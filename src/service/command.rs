//! What an operator asks of a job ([`Command`]), and why it may be refused ([`CommandError`]): a
//! leaf the manager, the nodes code and the API share.

use serde::{Deserialize, Serialize};

use super::job::{JobId, JobState};
use crate::engine::control::throttle::Limits;
use crate::spec::GuardConfig;

/// An operator's command to a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Pause,
    Resume,
    Cancel,
    SetWorkers(usize),
    SetLimits(Limits),
    /// The load guard's settings, all of them (what a `PATCH` left out, as they were).
    SetGuard(GuardConfig),
    /// A sync job's cutover: every change up to now is applied, then the job ends.
    Commit,
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("job {id} is {state} and cannot {command}")]
    Conflict {
        id: JobId,
        state: JobState,
        command: &'static str,
    },
    /// A value out of its range ([`bounds`]).
    #[error("{0}")]
    Invalid(String),
    #[error("job {0} is a copy: only a sync job (\"mode\": \"sync\") can be committed")]
    NotSync(JobId),
    /// The node that runs the job (another node on the same state) refused the command.
    #[error("{message}")]
    RefusedElsewhere { message: String, conflict: bool },
    /// The node that runs the job did not answer in time, or the shared state failed.
    #[error("job {id} runs on node {node}, which did not answer: {reason}")]
    Unanswered {
        id: JobId,
        node: String,
        reason: String,
    },
}
