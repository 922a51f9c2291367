//! What every subcommand shares: how it fails ([`Failure`]: a message and an exit status), how
//! a job runs in the terminal ([`run_in_terminal`]: progress, Ctrl-C and SIGTERM), and how sizes
//! read ([`human_bytes`]). A leaf: the subcommands' files import it, it imports none of them.
//!
//! In: a job to run, errors and judged outcomes. Out: progress on stderr, an exit status.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::progress::{Progress, ProgressMode};
use crate::engine::control::guard::LoadGuard;
pub(crate) use crate::engine::stats::human_bytes;
use crate::engine::stats::JobStats;
use crate::engine::transform::HmacKey;
use crate::engine::CopyError;
use crate::run::outcome::{Asked, Outcome, Surface};
use crate::spec::Mode;

pub use crate::run::outcome::EXIT_DIFFERENT;

/// A failed command: one line for the operator and an exit status.
pub struct Failure {
    pub(super) message: String,
    pub(super) status: u8,
}

impl Failure {
    pub fn new(message: String, status: u8) -> Self {
        Failure { message, status }
    }

    /// The line printed after `error: `.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The exit status.
    pub fn status(&self) -> u8 {
        self.status
    }
}

impl From<crate::spec::SpecError> for Failure {
    fn from(e: crate::spec::SpecError) -> Self {
        Failure {
            message: e.for_command_line(),
            status: 2,
        }
    }
}

impl From<CopyError> for Failure {
    fn from(e: CopyError) -> Self {
        let asked = Asked {
            mode: Mode::Copy,
            journal: false,
            surface: Surface::CommandLine,
        };
        match Failure::of(Outcome::of_error(&e, &asked)) {
            Err(failure) => failure,
            Ok(()) => unreachable!("an error is never a success"),
        }
    }
}

impl Failure {
    /// A judged job as the command line ends: `Ok` for a success (its note printed to
    /// stderr by the caller), else its message and exit status.
    pub(super) fn of(outcome: Outcome) -> Result<(), Failure> {
        match outcome.exit_status() {
            0 => Ok(()),
            status => Err(Failure {
                message: outcome.message.unwrap_or_default(),
                status,
            }),
        }
    }
}

impl From<crate::mongo::MongoError> for Failure {
    fn from(e: crate::mongo::MongoError) -> Self {
        CopyError::from(e).into()
    }
}

/// Runs a job from the terminal: a progress display of its stats and load guard (none when
/// `quiet`), and Ctrl-C
/// or SIGTERM cancelling the job after its current batches.
pub(crate) async fn run_in_terminal<T, Job>(
    watched: (Arc<JobStats>, Option<Arc<LoadGuard>>),
    quiet: bool,
    job: impl FnOnce(CancellationToken) -> Job,
) -> T
where
    Job: std::future::Future<Output = T>,
{
    let mode = if quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::detect()
    };
    let progress = Progress::start(watched, mode, Duration::from_secs(5));
    let cancel = CancellationToken::new();
    let signals = cancel_on_signal(cancel.clone());
    let outcome = job(cancel.clone()).await;
    progress.finish().await;
    cancel.cancel();
    let _ = signals.await;
    outcome
}

/// Cancels `token` on Ctrl-C or SIGTERM, so that the job stops after its current batches.
pub(super) fn cancel_on_signal(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        #[cfg(unix)]
        let terminated = term.recv();
        #[cfg(not(unix))]
        let terminated = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = terminated => {},
            _ = token.cancelled() => return,
        }
        eprintln!("stopping after the batches in flight…");
        token.cancel();
    })
}

/// The key of a transform's `hmac` steps: the file's content (its last line break left
/// out), else `MONGOFERRY_TRANSFORM_KEY`; at least 16 bytes.
pub fn transform_key(file: &Option<std::path::PathBuf>) -> Result<Option<HmacKey>, Failure> {
    let refused = |message: String| Failure { message, status: 2 };
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| refused(format!("--transform-key-file {}: {e}", path.display())))?,
        None => match std::env::var("MONGOFERRY_TRANSFORM_KEY") {
            Ok(key) => key,
            Err(_) => return Ok(None),
        },
    };
    if secret.len() < 16 {
        return Err(refused(
            "the transform key must be at least 16 bytes (--transform-key-file or \
             MONGOFERRY_TRANSFORM_KEY)"
                .into(),
        ));
    }
    Ok(Some(HmacKey::new(secret.as_bytes())))
}
