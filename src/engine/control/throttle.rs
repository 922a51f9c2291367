//! Rate limits on documents and bytes per second, changeable while a job runs.
//!
//! In: the count and size of each batch a worker is about to write, and limits set by the
//! operator at any time. Out: the worker waits just long enough to keep the job (and, in the
//! service, all jobs together) under the limits. Pausing is not a rate of zero: it is the gate
//! in [`Control`](crate::engine::Control).
//!
//! Each limit is a token bucket that may go into debt: a batch larger than the bucket passes at
//! once and the next waits until the debt is paid, so any batch size works and the long-run rate is
//! exact. Waits are cut into short sleeps, so a changed limit is in force within
//! [`MAX_SLEEP`].

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::guard::Hold;
use crate::bounds;

/// The longest a waiting worker sleeps before it looks at the limit again.
pub const MAX_SLEEP: Duration = Duration::from_millis(100);

/// How much unused allowance a bucket keeps: this many seconds' worth of its rate.
const BURST_SECS: f64 = 0.1;

/// Limits as the operator sets them; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Documents per second.
    pub rate: Option<f64>,
    /// Bytes per second.
    pub rate_bytes: Option<f64>,
}

impl Limits {
    /// Every problem of the limits ([`bounds::RATE`], [`bounds::RATE_BYTES`]): the one check for
    /// the command line, job specs, `PATCH` and `PUT /api/throttle`.
    pub fn problems(&self) -> Vec<String> {
        [
            bounds::RATE.problem_opt(self.rate),
            bounds::RATE_BYTES.problem_opt(self.rate_bytes),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// One of `parts` equal shares of these limits (unlimited stays unlimited).
    pub fn divided(self, parts: usize) -> Limits {
        let part = |rate: Option<f64>| rate.map(|r| r / parts.max(1) as f64);
        Limits {
            rate: part(self.rate),
            rate_bytes: part(self.rate_bytes),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(rate: Option<f64>) -> Self {
        Bucket {
            rate,
            tokens: 0.0,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let earned = now.duration_since(self.refilled).as_secs_f64() * rate;
            self.tokens = (self.tokens + earned).min(rate * BURST_SECS);
        }
        self.refilled = now;
    }

    /// How long until `self` may spend, at most [`MAX_SLEEP`] (the caller looks again then);
    /// `None` when it may now. Computed in seconds and clamped before it becomes a `Duration`,
    /// so no rate, however small, makes a wait that cannot be represented.
    fn wait(&self) -> Option<Duration> {
        let rate = self.rate?;
        (self.tokens < 0.0).then(|| {
            let secs = (-self.tokens / rate).min(MAX_SLEEP.as_secs_f64());
            Duration::try_from_secs_f64(secs).unwrap_or(MAX_SLEEP)
        })
    }
}

/// Limits on documents and bytes per second, shared by the workers of one job (or of all jobs).
#[derive(Debug)]
pub struct Limiter {
    buckets: Mutex<[Bucket; 2]>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Limiter {
            buckets: Mutex::new([Bucket::new(limits.rate), Bucket::new(limits.rate_bytes)]),
        }
    }

    pub fn limits(&self) -> Limits {
        let b = self.buckets.lock();
        Limits {
            rate: b[0].rate,
            rate_bytes: b[1].rate,
        }
    }

    /// Changes the limits; waiting workers see them within [`MAX_SLEEP`].
    pub fn set(&self, limits: Limits) {
        let now = Instant::now();
        let mut b = self.buckets.lock();
        for (bucket, rate) in b.iter_mut().zip([limits.rate, limits.rate_bytes]) {
            bucket.refill(now);
            bucket.rate = rate;
            // Debt run up under an old, lower limit is forgiven: the new limit counts from now.
            bucket.tokens = bucket.tokens.max(0.0);
        }
    }

    /// Waits until the limits allow another batch, then charges `docs` and `bytes` for it.
    pub async fn acquire(&self, docs: u64, bytes: u64) {
        loop {
            let wait = {
                let now = Instant::now();
                let mut b = self.buckets.lock();
                b.iter_mut().for_each(|bucket| bucket.refill(now));
                match b.iter().filter_map(Bucket::wait).max() {
                    None => {
                        if b[0].rate.is_some() {
                            b[0].tokens -= docs as f64;
                        }
                        if b[1].rate.is_some() {
                            b[1].tokens -= bytes as f64;
                        }
                        return;
                    }
                    Some(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The limiters a worker obeys: its job's (set by the operator), the adaptive mode's cap, this
/// process's share of a job that several service nodes run, and, in the service, the global one.
/// The strictest binds. Before them all, the load guard's gate: closed, nothing passes.
#[derive(Debug, Clone)]
pub struct Throttle {
    pub hold: Hold,
    pub job: Arc<Limiter>,
    pub adaptive: Arc<Limiter>,
    /// The job's limits divided among the service nodes working on it (unlimited otherwise), so
    /// that together they keep to the job's limits.
    pub share: Arc<Limiter>,
    pub global: Option<Arc<Limiter>>,
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Throttle {
            hold: Hold::default(),
            job: Arc::new(Limiter::new(limits)),
            adaptive: Arc::new(Limiter::new(Limits::default())),
            share: Arc::new(Limiter::new(Limits::default())),
            global: None,
        }
    }

    pub fn with_global(mut self, global: Arc<Limiter>) -> Self {
        self.global = Some(global);
        self
    }

    pub async fn acquire(&self, docs: u64, bytes: u64) {
        self.hold.wait_open().await;
        self.job.acquire(docs, bytes).await;
        self.adaptive.acquire(docs, bytes).await;
        self.share.acquire(docs, bytes).await;
        if let Some(global) = &self.global {
            global.acquire(docs, bytes).await;
        }
        // A hold that came while the limits made this batch wait holds it too.
        self.hold.wait_open().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Charges batches of `batch` docs as fast as allowed for `secs`; returns how many passed.
    async fn run_for(limiter: &Limiter, batch: u64, secs: u64) -> u64 {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut passed = 0;
        while Instant::now() < end {
            limiter.acquire(batch, batch * 100).await;
            passed += batch;
        }
        passed
    }

    #[tokio::test(start_paused = true)]
    async fn holds_a_document_rate() {
        for (rate, batch) in [(100.0, 1), (1000.0, 50), (5000.0, 500), (50.0, 500)] {
            let limiter = Limiter::new(Limits {
                rate: Some(rate),
                rate_bytes: None,
            });
            let passed = run_for(&limiter, batch, 10).await as f64;
            let expected = rate * 10.0;
            assert!(
                (passed - expected).abs() <= expected * 0.02 + batch as f64,
                "rate {rate}, batch {batch}: {passed} passed, {expected} expected"
            );
        }
    }

    #[test]
    fn limits_divide_into_equal_shares() {
        let limits = Limits {
            rate: Some(900.0),
            rate_bytes: None,
        };
        let third = limits.divided(3);
        assert_eq!((third.rate, third.rate_bytes), (Some(300.0), None));
        assert_eq!(limits.divided(0), limits, "no nodes: the whole");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tighter_of_docs_and_bytes_wins() {
        // 1000 docs/s but 20,000 bytes/s at 100 bytes a doc: 200 docs/s.
        let limiter = Limiter::new(Limits {
            rate: Some(1000.0),
            rate_bytes: Some(20_000.0),
        });
        let passed = run_for(&limiter, 10, 10).await as f64;
        assert!((passed - 2000.0).abs() <= 60.0, "{passed}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_limit_is_in_force_within_max_sleep() {
        let limiter = Arc::new(Limiter::new(Limits {
            rate: Some(10.0),
            rate_bytes: None,
        }));
        // A big batch puts the bucket 10 s into debt at the old rate.
        limiter.acquire(100, 0).await;
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                limiter.acquire(1, 0).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        limiter.set(Limits {
            rate: Some(10_000.0),
            rate_bytes: None,
        });
        let waited = waiter.await.unwrap();
        assert!(
            waited <= MAX_SLEEP + Duration::from_millis(20),
            "{waited:?}"
        );
        // Two seconds at the new rate, plus at most one burst (0.1 s) saved up meanwhile.
        let passed = run_for(&limiter, 100, 2).await as f64;
        assert!((20_000.0..=21_100.0).contains(&passed), "{passed}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits_and_limits_can_be_lifted() {
        let limiter = Limiter::new(Limits::default());
        let started = Instant::now();
        for _ in 0..1000 {
            limiter.acquire(1000, 1 << 20).await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        limiter.set(Limits {
            rate: Some(1.0),
            rate_bytes: None,
        });
        limiter.acquire(5, 0).await;
        limiter.set(Limits::default());
        let started = Instant::now();
        limiter.acquire(5, 0).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn no_rate_that_reaches_the_limiter_can_break_it() {
        // Validation refuses these; the limiter must still survive them, and stay usable.
        for rate in [1e-308, 1e-17, f64::MIN_POSITIVE, 5e-324] {
            let limiter = Limiter::new(Limits {
                rate: Some(rate),
                rate_bytes: Some(rate),
            });
            limiter.acquire(500, 1 << 20).await;
            let waited =
                tokio::time::timeout(Duration::from_secs(1), limiter.acquire(500, 1 << 20)).await;
            assert!(
                waited.is_err(),
                "rate {rate}: the debt is not paid in a second"
            );
            assert_eq!(limiter.limits().rate, Some(rate));
            limiter.set(Limits::default());
            let started = Instant::now();
            limiter.acquire(500, 1 << 20).await;
            assert!(started.elapsed() <= MAX_SLEEP, "rate {rate}: lifted");
        }
    }

    #[test]
    fn rejects_nonsense_limits() {
        let bad = Limits {
            rate: Some(0.0),
            rate_bytes: Some(f64::NAN),
        };
        assert_eq!(bad.problems().len(), 2);
        let tiny = Limits {
            rate: Some(1e-308),
            rate_bytes: Some(1e-308),
        };
        assert_eq!(tiny.problems().len(), 2, "{:?}", tiny.problems());
        assert!(Limits::default().problems().is_empty());
    }
}
