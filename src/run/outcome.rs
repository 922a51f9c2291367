//! How a finished job is judged, for the command line and the service alike: one order of
//! checks, one wording.
//!
//! In: the run's result (`Result<CopySummary, CopyError>`) and what the job was asked to do
//! ([`Asked`]: its mode, whether it journals, and who asks: the command line or the service).
//! Out: an [`Outcome`]: a [`Verdict`] (the command line's exit status, the service's job state),
//! the message that says why it is not a plain success, and a note for a success worth a word
//! (an earlier run had finished the job).
//!
//! Order of the checks, first that applies wins: verify found differences, documents refused by
//! the destination, documents a move left at the source, indexes the destination refused.

use crate::engine::CopyError;
use crate::run::copy::CopySummary;
use crate::spec::{CopySpec, Mode};

/// Who runs the job: the words of a hint (how to run it again) and the meaning of a stop
/// depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `mongoferry copy|sync|move`: a stop is Ctrl-C or SIGTERM.
    CommandLine,
    /// A job of `mongoferry serve`; `stopping`: the service itself is stopping (the job is
    /// interrupted and continues when it starts again), else the operator cancelled it.
    Service { stopping: bool },
}

/// What the job was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub mode: Mode,
    /// It keeps a journal.
    pub journal: bool,
    pub surface: Surface,
}

impl Asked {
    /// What `spec` asks, run from `surface`.
    pub fn of(spec: &CopySpec, surface: Surface) -> Asked {
        Asked {
            mode: spec.mode,
            journal: spec.journal.is_some(),
            surface,
        }
    }
}

/// The judgement of a finished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done, the destination as asked.
    Complete,
    /// It ran to its end, but the destination is not all the source: documents refused (dead
    /// letters), documents a move left at the source, or indexes refused.
    CompleteButDifferent,
    /// The verification after the copy found differences.
    VerifiedDifferent,
    /// Refused before writing, as a bad command line is: the job would destroy its own data.
    Refused,
    /// It failed.
    Failed,
    /// Stopped before its end (Ctrl-C, SIGTERM, a cancel, the service stopping).
    Stopped,
}

/// How a job ended, for the service's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Failed,
    Cancelled,
    Interrupted,
}

/// A finished job, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Why it is not a plain success (`None` for a success, and for a cancel in the service).
    pub message: Option<String>,
    /// A word on a success: an earlier run had finished the job. The command line prints it
    /// beside any message; the service shows it when there is no message.
    pub note: Option<String>,
    /// The service's stop rather than the operator's cancel ([`Surface::Service`]).
    stopping: bool,
}

/// Exit status of a command that finished but left the data different from the source:
/// documents refused (kept as dead letters) or, for `verify`, differences found.
pub const EXIT_DIFFERENT: u8 = 3;

impl Outcome {
    /// Judges a run that ended with `result`.
    pub fn judge(result: &Result<CopySummary, CopyError>, asked: &Asked) -> Outcome {
        match result {
            Ok(summary) => Self::of_summary(summary, asked),
            Err(e) => Self::of_error(e, asked),
        }
    }

    /// Judges a run that failed with `e` (before or during the copy).
    pub fn of_error(e: &CopyError, asked: &Asked) -> Outcome {
        let (verdict, message) = match (e, asked.surface) {
            (CopyError::Stopped, Surface::CommandLine) if asked.mode == Mode::Sync => (
                Verdict::Stopped,
                Some("stopped; run it again to follow on from the saved position".into()),
            ),
            (CopyError::Stopped, Surface::CommandLine) => (
                Verdict::Stopped,
                Some("interrupted; the copy is incomplete (run it again to finish)".into()),
            ),
            (CopyError::Stopped, Surface::Service { stopping: true }) => (
                Verdict::Stopped,
                Some(
                    "interrupted: the service stopped; it continues from its checkpoint when the \
                     service starts again"
                        .into(),
                ),
            ),
            (CopyError::Stopped, Surface::Service { stopping: false }) => (Verdict::Stopped, None),
            (
                unsafe_job @ (CopyError::Unsafe(_)
                | CopyError::CannotCommit(_)
                | CopyError::Refused(_)),
                _,
            ) => (Verdict::Refused, Some(unsafe_job.to_string())),
            (other, _) => (Verdict::Failed, Some(other.to_string())),
        };
        Outcome {
            verdict,
            message,
            note: None,
            stopping: asked.surface == Surface::Service { stopping: true },
        }
    }

    fn of_summary(summary: &CopySummary, asked: &Asked) -> Outcome {
        let (verdict, message) = match difference(summary, asked.surface) {
            Some((verdict, message)) => (verdict, Some(message)),
            None => (Verdict::Complete, None),
        };
        Outcome {
            verdict,
            message,
            note: summary
                .already_complete
                .then(|| already_complete(summary, asked)),
            stopping: false,
        }
    }

    /// The command line's exit status: 0 success, 1 failed, 2 refused (as invalid input), 3
    /// finished with the data different, 130 interrupted.
    pub fn exit_status(&self) -> u8 {
        match self.verdict {
            Verdict::Complete => 0,
            Verdict::Failed => 1,
            Verdict::Refused => 2,
            Verdict::CompleteButDifferent | Verdict::VerifiedDifferent => EXIT_DIFFERENT,
            Verdict::Stopped => 130,
        }
    }

    /// How the service's job ended.
    pub fn ending(&self) -> Ending {
        match self.verdict {
            Verdict::Complete | Verdict::CompleteButDifferent => Ending::Completed,
            Verdict::VerifiedDifferent | Verdict::Refused | Verdict::Failed => Ending::Failed,
            Verdict::Stopped if self.stopping => Ending::Interrupted,
            Verdict::Stopped => Ending::Cancelled,
        }
    }

    /// What the service shows with the job's end: the message, else the note.
    pub fn job_message(&self) -> Option<String> {
        self.message.clone().or_else(|| self.note.clone())
    }
}

/// How the destination differs from what was asked, first that applies.
fn difference(summary: &CopySummary, surface: Surface) -> Option<(Verdict, String)> {
    if let Some(report) = summary.verify.as_ref().filter(|v| !v.identical) {
        let refused = if summary.failed > 0 {
            format!(
                " ({} documents were refused, see {})",
                summary.failed, summary.dead_letters
            )
        } else {
            String::new()
        };
        return Some((
            Verdict::VerifiedDifferent,
            format!(
                "verify: the destination differs: {} missing, {} extra, {} different{refused}",
                report.missing, report.extra, report.different
            ),
        ));
    }
    if summary.failed > 0 {
        return Some((
            Verdict::CompleteButDifferent,
            format!(
                "completed with {} failed documents: the destination refused them; dead \
                 letters (documents and reasons): {}",
                summary.failed, summary.dead_letters
            ),
        ));
    }
    if let Some(moves) = summary.moves.as_ref().filter(|m| m.left > 0) {
        let again = match surface {
            Surface::CommandLine => "run the move again",
            Surface::Service { .. } => "submit the move again",
        };
        return Some((
            Verdict::CompleteButDifferent,
            format!(
                "moved {} documents; {} documents of the selection are still at the source \
                 (changed after their copy in every pass, or refused by the destination): \
                 {again} to move them",
                moves.deleted, moves.left
            ),
        ));
    }
    if let Some(reconcile) = summary.reconcile.as_ref().filter(|r| r.kept_extra() > 0) {
        let flag = match surface {
            Surface::CommandLine => "--delete-extra",
            Surface::Service { .. } => "\"delete_extra\": true",
        };
        return Some((
            Verdict::CompleteButDifferent,
            format!(
                "reconciled ({} written, {} equal), but {} documents only the destination holds \
                 were kept: reconcile with {flag} to delete them",
                reconcile.written,
                reconcile.equal,
                reconcile.kept_extra()
            ),
        ));
    }
    if let Some(sync) = &summary.sync {
        if let Some(why) = sync.verification.as_ref().and_then(|v| v.unproven.as_ref()) {
            return Some((
                Verdict::CompleteButDifferent,
                format!("committed, but equality is not proven: {why}"),
            ));
        }
        if let Some(writes) = &sync.writes_after_commit {
            return Some((
                Verdict::CompleteButDifferent,
                format!(
                    "committed, but {} writes reached the source after the commit point (in {}): \
                     the application was not fully stopped, and the destination does not have \
                     them",
                    writes.count,
                    writes.namespaces.join(", ")
                ),
            ));
        }
    }
    summary.schema.refused_indexes().map(|refused| {
        (
            Verdict::CompleteButDifferent,
            format!("completed, but {refused}"),
        )
    })
}

/// The note of a run that found its job already done by earlier runs.
fn already_complete(summary: &CopySummary, asked: &Asked) -> String {
    let state = &summary.state;
    let restart = match asked.surface {
        Surface::CommandLine => "use --restart",
        Surface::Service { .. } => "submit it with \"restart\": true",
    };
    match asked.mode {
        Mode::Move => format!(
            "already complete: earlier runs moved every document of this job and none is left \
             at the source (state {state})"
        ),
        // The copy is behind it, not the sync: this run followed the changes.
        Mode::Sync => format!(
            "an earlier run completed the copy of this job (state {state}): this run followed \
             the source's changes on from its saved position"
        ),
        // A reconcile compares again on every run; only a run with nothing to compare gets here.
        Mode::Reconcile => format!("nothing to reconcile (state {state})"),
        Mode::Copy if asked.journal => format!(
            "already complete: an earlier run copied every document of this job (state \
             {state}), so this run wrote nothing and journaled nothing; {restart} to copy (and \
             journal) everything again"
        ),
        Mode::Copy => format!(
            "already complete: an earlier run copied every document of this job (state \
             {state}); {restart} to copy again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(mode: Mode, surface: Surface) -> Asked {
        Asked {
            mode,
            journal: false,
            surface,
        }
    }

    #[test]
    fn a_stop_is_an_interruption_only_when_the_service_stops() {
        let stopped = Err(CopyError::Stopped);
        let cli = Outcome::judge(&stopped, &asked(Mode::Sync, Surface::CommandLine));
        assert_eq!(cli.exit_status(), 130);
        assert!(cli.message.unwrap().contains("follow on"));
        let cancel = Surface::Service { stopping: false };
        let cancelled = Outcome::judge(&stopped, &asked(Mode::Copy, cancel));
        assert_eq!(
            (cancelled.ending(), cancelled.message),
            (Ending::Cancelled, None)
        );
        let stop = Surface::Service { stopping: true };
        let interrupted = Outcome::judge(&stopped, &asked(Mode::Copy, stop));
        assert_eq!(interrupted.ending(), Ending::Interrupted);
    }

    #[test]
    fn a_refused_job_is_bad_input_on_the_command_line_and_failed_in_the_service() {
        let refused = Err(CopyError::Unsafe(vec!["writes what it reads".into()]));
        let cli = Outcome::judge(&refused, &asked(Mode::Copy, Surface::CommandLine));
        assert_eq!(cli.exit_status(), 2);
        let service = Surface::Service { stopping: false };
        let job = Outcome::judge(&refused, &asked(Mode::Copy, service));
        assert_eq!(job.ending(), Ending::Failed);
    }
}
