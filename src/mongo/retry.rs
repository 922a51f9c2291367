//! Retrying transient failures: which errors are worth another try, and how long to wait.
//!
//! In: a driver operation that may fail. Out: its result, after more tries with exponential
//! backoff and jitter for errors that say "try again" (network errors, closed connections, server
//! selection, "not primary", shutting down, cursor not found, exceeded time limits, ...). Anything
//! else fails at once: retrying a refused document or a bad filter only hides the problem.
//!
//! How long a stage keeps trying is bounded in time, not only in tries: no try starts later than
//! [`RetryPolicy::give_up_after`] after the first failed one began. A try against a server that
//! is gone lasts up to the server selection timeout (`--connect-timeout`), so counting tries alone
//! let ten of them stretch to two minutes; with the window, an operation gives up at most
//! `give_up_after + connect timeout` after its first failure (40 s with the defaults).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::error::{Error, ErrorKind};
use parking_lot::Mutex;
use tokio::time::Instant;
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
    /// No try starts later than this after the first failed try began.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// Half a minute of trying before giving up: outlasts a replica set election.
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30),
        }
    }
}

/// Where a retry loop stands: tries failed so far and when the first of them began.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attempts {
    failed: u32,
    since: Option<Instant>,
}

impl Attempts {
    /// Notes a failed try that began at `began`.
    fn failed(&mut self, began: Instant) {
        self.failed += 1;
        self.since.get_or_insert(began);
    }

    /// Progress was made: a later failure starts a new count and a new window.
    pub fn reset(&mut self) {
        *self = Attempts::default();
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
        self.last.lock().clone()
    }

    pub fn record(&self, what: &str, err: &Error) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let message = format!("{what}: {}", crate::mongo::describe(err));
        tracing::warn!("retrying after a transient error: {message}");
        *self.last.lock() = Some(message);
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

    /// After a try that began at `began` failed with `err`: waits out the backoff and returns
    /// `true` if another try is worth making, `false` (at once) when the error is permanent, the
    /// tries or the time window are used up, or retrying was stopped.
    pub async fn pause(
        &self,
        what: &str,
        err: &Error,
        attempts: &mut Attempts,
        began: Instant,
    ) -> bool {
        if !is_transient(err) || self.stop.is_cancelled() {
            return false;
        }
        attempts.failed(began);
        let backoff = self.policy.backoff(attempts.failed - 1);
        let window_left = attempts.since.map_or(self.policy.give_up_after, |since| {
            self.policy.give_up_after.saturating_sub(since.elapsed())
        });
        if attempts.failed >= self.policy.attempts || backoff > window_left {
            return false;
        }
        self.counters.record(what, err);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => !self.stop.is_cancelled(),
            _ = self.stop.cancelled() => false,
        }
    }

    /// Runs `op` until it succeeds, fails with a permanent error, or runs out of tries or time.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut attempts = Attempts::default();
        loop {
            let began = Instant::now();
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    if !self.pause(what, &e, &mut attempts, began).await {
                        return Err(e);
                    }
                }
            }
        }
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
                base: Duration::from_secs(1),
                ..RetryPolicy::default()
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

    /// Fails every try after `try_secs`, as a server that is gone does (server selection waits).
    async fn dead_server(retry: &Retry, try_secs: u64) -> (Duration, u32) {
        let started = Instant::now();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let outcome = retry
            .run("test", || async {
                tries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(try_secs)).await;
                Err::<(), _>(Error::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )))
            })
            .await;
        assert!(outcome.is_err());
        (started.elapsed(), tries.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn giving_up_takes_the_window_plus_one_try_at_most() {
        let policy = RetryPolicy::default();
        for try_secs in [1, 10, 29] {
            let (took, tries) = dead_server(&Retry::new(policy, Arc::default()), try_secs).await;
            let bound = policy.give_up_after + Duration::from_secs(try_secs);
            assert!(
                took <= bound,
                "tries of {try_secs} s: gave up after {took:?}"
            );
            assert!(tries >= 2, "tries of {try_secs} s: {tries} tries");
        }
        // Quick failures are bounded by the number of tries instead.
        let (took, tries) = dead_server(&Retry::new(policy, Arc::default()), 0).await;
        assert_eq!(tries, policy.attempts);
        assert!(took < policy.give_up_after, "{took:?}");
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
