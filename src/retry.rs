//! Retrying transient failures: which errors are worth another try, and how long to wait.
//!
//! In: a driver operation that may fail. Out: its result, after up to
//! [`RetryPolicy::attempts`] tries with exponential backoff and jitter for errors that
//! say "try again" (network errors, closed connections, server selection, "not primary",
//! shutting down, cursor not found, exceeded time limits, ...). Anything else fails at once:
//! retrying a refused document or a bad filter only hides the problem.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::error::{Error, ErrorKind};
use tokio_util::sync::CancellationToken;

/// Server error codes that mean "this may work if you try again".
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    43,    // CursorNotFound
    63,    // StaleShardVersion
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    150,   // StaleEpoch
    189,   // PrimarySteppedDown
    202,   // NetworkInterfaceExceededTimeLimit
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13388, // StaleConfig
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    16500, // "request rate is large" (Cosmos DB's throttling)
];

/// Whether an error is worth retrying.
pub fn is_transient(err: &Error) -> bool {
    if err.contains_label("RetryableWriteError")
        || err.contains_label("TransientTransactionError")
        || err.contains_label("SystemOverloadedError")
    {
        return true;
    }
    match err.kind.as_ref() {
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => true,
        ErrorKind::ServerSelection { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::InsertMany(failure) => {
            // Per-document errors are refusals; only a transient write concern error retries.
            failure.write_errors.as_ref().is_none_or(|w| w.is_empty())
                && failure
                    .write_concern_error
                    .as_ref()
                    .is_some_and(|w| TRANSIENT_CODES.contains(&w.code))
        }
        ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(w)) => {
            TRANSIENT_CODES.contains(&w.code)
        }
        _ => false,
    }
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff; each later one doubles, up to `max_backoff`.
    pub base: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// About half a minute of trying before giving up: outlasts a replica set election.
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1`: a random time up to the exponential bound.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let bound = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        // Jitter (between half and all of the bound) keeps many workers from retrying in lock step.
        bound.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// What retrying has done so far, for the job's view.
#[derive(Debug, Default)]
pub struct RetryCounters {
    retries: AtomicU64,
    last: Mutex<Option<String>>,
}

impl RetryCounters {
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last.lock().unwrap().clone()
    }

    pub fn record(&self, what: &str, err: &Error) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let message = format!("{what}: {}", crate::mongo::describe(err));
        tracing::warn!("retrying after a transient error: {message}");
        *self.last.lock().unwrap() = Some(message);
    }
}

/// A retry policy and where to count retries; cloned into every stage that talks to a server.
/// Stopping it (the job is cancelled) cuts every backoff short: the pending error is returned.
#[derive(Debug, Clone, Default)]
pub struct Retry {
    pub policy: RetryPolicy,
    pub counters: Arc<RetryCounters>,
    stop: CancellationToken,
}

impl Retry {
    pub fn new(policy: RetryPolicy, counters: Arc<RetryCounters>) -> Self {
        Retry {
            policy,
            counters,
            stop: CancellationToken::new(),
        }
    }

    /// Ends all waiting for another try, now and later.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Runs `work` to its end; once `cancel` fires, retrying stops (backoffs are cut short), so a
    /// cancelled job does not sit out backoffs.
    pub async fn stopping_on<F: std::future::Future>(
        &self,
        cancel: &CancellationToken,
        work: F,
    ) -> F::Output {
        let stop = async {
            cancel.cancelled().await;
            self.stop();
            std::future::pending::<()>().await
        };
        tokio::select! {
            output = work => output,
            _ = stop => unreachable!("never completes"),
        }
    }

    /// Waits out the backoff; `false` if retrying was stopped meanwhile.
    async fn backoff(&self, attempt: u32) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.policy.backoff(attempt)) => !self.stop.is_cancelled(),
            _ = self.stop.cancelled() => false,
        }
    }

    /// Runs `op` until it succeeds, fails with a permanent error, or runs out of attempts.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e)
                    if is_transient(&e)
                        && attempt + 1 < self.policy.attempts
                        && !self.stop.is_cancelled() =>
                {
                    self.counters.record(what, &e);
                    if !self.backoff(attempt).await {
                        return Err(e);
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits before try number `attempt + 1` of a hand-rolled retry loop; `false` when the
    /// attempts are used up (the caller then fails with `err`).
    pub async fn pause(&self, what: &str, err: &Error, attempt: u32) -> bool {
        if !is_transient(err) || attempt + 1 >= self.policy.attempts || self.stop.is_cancelled() {
            return false;
        }
        self.counters.record(what, err);
        self.backoff(attempt).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let policy = RetryPolicy::default();
        for attempt in 0..30 {
            let wait = policy.backoff(attempt);
            let bound = (policy.base * 2u32.pow(attempt.min(16))).min(policy.max_backoff);
            assert!(wait <= bound && wait >= bound / 2, "{attempt}: {wait:?}");
        }
    }

    #[tokio::test]
    async fn stopping_cuts_the_backoff_short() {
        let retry = Retry::new(
            RetryPolicy {
                attempts: 10,
                base: Duration::from_secs(1),
                max_backoff: Duration::from_secs(5),
            },
            Arc::default(),
        );
        // The job is cancelled during the first backoff (of about a second).
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            canceller.cancel();
        });
        let started = std::time::Instant::now();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let failing = retry.run("test", || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(Error::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        });
        let outcome = retry.stopping_on(&cancel, failing).await;
        assert!(outcome.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(tries.load(Ordering::Relaxed), 1);
        assert_eq!(retry.counters.retries(), 1);
    }

    #[test]
    fn classifies_errors() {
        let io = Error::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "x",
        ));
        assert!(is_transient(&io));
        let custom = Error::custom("nope");
        assert!(!is_transient(&custom));
    }
}
