//! Adaptive mode: the job watches its write latency and steers its own load to stay under a
//! target the operator sets.
//!
//! In: every interval, the batches the job wrote (count, documents, and their mean latency: the
//! time to read them by `_id`, if the strategy does, plus the time to write them) and the
//! transient errors it retried. Out: a [`Decision`] — additive increase while latency is well
//! under the target (one more worker, a higher rate cap), multiplicative decrease when it is over
//! or when the databases answered with transient errors (half the workers, the rate cap at 70% of
//! what was measured) — applied to the job's [`Control`] and kept, with its reason, for the API
//! and events. The operator's own limits stay an upper bound: the adaptive cap is a limiter of its
//! own, and the worker count never exceeds `max_workers`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bounds;
use crate::engine::control::throttle::Limits;
use crate::engine::control::Control;
use crate::engine::stats::JobStats;

/// Decisions kept for display.
const KEPT: usize = 120;

/// What the operator asks of adaptive mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Adaptive mode: the mean batch latency (read by `_id` plus write) to stay under, in
    /// milliseconds.
    pub target_ms: f64,
    /// Most workers adaptive mode may use [default: the job's worker count].
    #[serde(default)]
    pub max_workers: Option<usize>,
    /// Milliseconds between adaptive decisions [default: 1000].
    #[serde(default)]
    pub interval_ms: Option<u64>,
}

impl AdaptiveConfig {
    pub fn problems(&self) -> Vec<String> {
        [
            bounds::ADAPTIVE_TARGET_MS.problem(self.target_ms),
            bounds::ADAPTIVE_MAX_WORKERS.problem_opt(self.max_workers),
            bounds::ADAPTIVE_INTERVAL_MS.problem_opt(self.interval_ms),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.unwrap_or(1000))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Increase,
    Decrease,
    Hold,
}

/// One adaptive decision and why it was taken.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Decision {
    /// Seconds since the job started.
    pub at_secs: f64,
    pub action: Action,
    /// Mean latency (read by `_id` plus write) of the batches of the last interval.
    pub latency_ms: Option<f64>,
    pub docs_per_sec: f64,
    /// Workers and rate cap from now on (`None`: no adaptive cap).
    pub workers: usize,
    pub rate_cap: Option<f64>,
    pub reason: String,
}

/// What one interval looked like.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub batches: u64,
    /// Transient errors retried during the interval (timeouts, "not primary", closed connections).
    pub errors: u64,
    pub latency_ms: f64,
    pub docs_per_sec: f64,
}

/// The rule: additive increase, multiplicative decrease. Pure, so it is tested on its own.
pub fn decide(
    config: &AdaptiveConfig,
    max_workers: usize,
    seen: Observation,
    workers: usize,
    cap: Option<f64>,
) -> (Action, usize, Option<f64>, String) {
    let target = config.target_ms;
    if seen.errors > 0 {
        let workers = workers.div_ceil(2).max(1);
        // With nothing written there is no rate to cap at; the old cap stays.
        let cap = if seen.docs_per_sec > 0.0 {
            Some((seen.docs_per_sec * 0.7).max(1.0))
        } else {
            cap
        };
        let reason = format!(
            "{} transient errors retried: halve workers{}",
            seen.errors,
            match cap {
                Some(c) => format!(", cap at {c:.0} docs/s"),
                None => String::new(),
            }
        );
        return (Action::Decrease, workers, cap, reason);
    }
    if seen.batches == 0 {
        return (Action::Hold, workers, cap, "no batch finished".into());
    }
    if seen.latency_ms > target {
        let workers = workers.div_ceil(2).max(1);
        let cap = (seen.docs_per_sec * 0.7).max(1.0);
        let reason = format!(
            "batch latency {:.0} ms over the {target:.0} ms target: halve workers, cap at 70% of {:.0} docs/s",
            seen.latency_ms, seen.docs_per_sec
        );
        return (Action::Decrease, workers, Some(cap), reason);
    }
    if seen.latency_ms < target * 0.7 {
        let more_workers = (workers + 1).min(max_workers);
        // The cap grows by a tenth (at least 10 docs/s) and goes once it no longer binds.
        let cap = cap
            .map(|c| c + (c * 0.1).max(10.0))
            .filter(|c| *c < seen.docs_per_sec * 1.5);
        let mut steps = vec![];
        if more_workers > workers {
            steps.push("one more worker".to_string());
        }
        match cap {
            Some(c) => steps.push(format!("cap {c:.0} docs/s")),
            None if steps.is_empty() => {
                let reason = format!(
                    "batch latency {:.0} ms well under the {target:.0} ms target, no adaptive limit left",
                    seen.latency_ms
                );
                return (Action::Hold, workers, None, reason);
            }
            None => steps.push("no cap".to_string()),
        }
        let reason = format!(
            "batch latency {:.0} ms well under the {target:.0} ms target: {}",
            seen.latency_ms,
            steps.join(", ")
        );
        return (Action::Increase, more_workers, cap, reason);
    }
    let reason = format!(
        "batch latency {:.0} ms near the {target:.0} ms target",
        seen.latency_ms
    );
    (Action::Hold, workers, cap, reason)
}

/// The adaptive state of a job: its config and recent decisions.
#[derive(Debug)]
pub struct Adaptive {
    pub config: AdaptiveConfig,
    decisions: Mutex<VecDeque<Decision>>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AdaptiveView {
    pub config: AdaptiveConfig,
    /// Most recent last.
    pub decisions: Vec<Decision>,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig) -> Self {
        Adaptive {
            config,
            decisions: Mutex::new(VecDeque::new()),
        }
    }

    pub fn view(&self) -> AdaptiveView {
        AdaptiveView {
            config: self.config,
            decisions: self.decisions.lock().iter().cloned().collect(),
        }
    }

    pub fn last(&self) -> Option<Decision> {
        self.decisions.lock().back().cloned()
    }

    fn record(&self, decision: Decision) {
        let mut d = self.decisions.lock();
        if d.len() == KEPT {
            d.pop_front();
        }
        d.push_back(decision);
    }

    /// Watches the job and steers it until `stop`.
    pub async fn run(
        self: Arc<Self>,
        control: Arc<Control>,
        stats: Arc<JobStats>,
        stop: CancellationToken,
    ) {
        let max_workers = self.config.max_workers.unwrap_or(control.workers());
        let mut tick = tokio::time::interval(self.config.interval());
        tick.tick().await;
        let (mut batches, mut sum) = latency_totals(&stats);
        let mut docs = stats.snapshot().docs;
        let mut retries = stats.retry.retries();
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if control.is_paused() {
                // A paused job writes nothing; that says nothing about the database.
                (batches, sum) = latency_totals(&stats);
                docs = stats.snapshot().docs;
                retries = stats.retry.retries();
                last = tokio::time::Instant::now();
                continue;
            }
            let (now_batches, now_sum) = latency_totals(&stats);
            let now_docs = stats.snapshot().docs;
            let secs = last.elapsed().as_secs_f64().max(1e-3);
            let finished = now_batches - batches;
            let now_retries = stats.retry.retries();
            let seen = Observation {
                batches: finished,
                errors: now_retries - retries,
                latency_ms: if finished > 0 {
                    (now_sum - sum) / finished as f64 * 1000.0
                } else {
                    0.0
                },
                docs_per_sec: (now_docs - docs) as f64 / secs,
            };
            (batches, sum, docs, retries, last) = (
                now_batches,
                now_sum,
                now_docs,
                now_retries,
                tokio::time::Instant::now(),
            );
            let cap = control.throttle().adaptive.limits().rate;
            let (action, workers, cap, reason) =
                decide(&self.config, max_workers, seen, control.workers(), cap);
            control.set_workers(workers);
            control.throttle().adaptive.set(Limits {
                rate: cap,
                rate_bytes: None,
            });
            self.record(Decision {
                at_secs: stats.elapsed().as_secs_f64(),
                action,
                latency_ms: (finished > 0).then_some(seen.latency_ms),
                docs_per_sec: seen.docs_per_sec,
                workers,
                rate_cap: cap,
                reason,
            });
        }
    }
}

/// Batches written so far, and the seconds they spent against the databases: reading them by
/// `_id` (the `ids` strategy) and writing them.
fn latency_totals(stats: &JobStats) -> (u64, f64) {
    let (_, count, write) = stats.write_latency.snapshot();
    let (_, _, fetch) = stats.fetch_latency.snapshot();
    (count, write + fetch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: AdaptiveConfig = AdaptiveConfig {
        target_ms: 100.0,
        max_workers: Some(8),
        interval_ms: None,
    };

    fn seen(latency_ms: f64, docs_per_sec: f64) -> Observation {
        Observation {
            batches: 10,
            errors: 0,
            latency_ms,
            docs_per_sec,
        }
    }

    #[test]
    fn backs_off_on_transient_errors_even_when_fast() {
        let errors = Observation {
            errors: 3,
            ..seen(20.0, 1000.0)
        };
        let (action, workers, cap, reason) = decide(&CONFIG, 8, errors, 4, None);
        assert_eq!((action, workers, cap), (Action::Decrease, 2, Some(700.0)));
        assert!(reason.contains("3 transient errors"), "{reason}");
        // Nothing got through: the cap stays what it was.
        let stuck = Observation {
            batches: 0,
            errors: 1,
            latency_ms: 0.0,
            docs_per_sec: 0.0,
        };
        let (action, workers, cap, _) = decide(&CONFIG, 8, stuck, 2, Some(300.0));
        assert_eq!((action, workers, cap), (Action::Decrease, 1, Some(300.0)));
    }

    #[test]
    fn backs_off_multiplicatively_over_the_target() {
        let (action, workers, cap, reason) = decide(&CONFIG, 8, seen(250.0, 1000.0), 8, None);
        assert_eq!((action, workers, cap), (Action::Decrease, 4, Some(700.0)));
        assert!(reason.contains("250 ms over the 100 ms target"), "{reason}");
        let (_, workers, _, _) = decide(&CONFIG, 8, seen(250.0, 700.0), 1, Some(700.0));
        assert_eq!(workers, 1, "never below one worker");
    }

    #[test]
    fn recovers_additively_under_the_target() {
        let (action, workers, cap, _) = decide(&CONFIG, 8, seen(20.0, 600.0), 4, Some(700.0));
        assert_eq!((action, workers, cap), (Action::Increase, 5, Some(770.0)));
        // A cap far above the measured rate no longer binds: it goes.
        let (_, _, cap, _) = decide(&CONFIG, 8, seen(20.0, 100.0), 4, Some(700.0));
        assert_eq!(cap, None);
        let (action, workers, cap, _) = decide(&CONFIG, 8, seen(20.0, 600.0), 8, None);
        assert_eq!(
            (action, workers, cap),
            (Action::Hold, 8, None),
            "at full speed"
        );
    }

    #[test]
    fn holds_near_the_target_or_without_data() {
        let (action, workers, cap, _) = decide(&CONFIG, 8, seen(85.0, 600.0), 3, Some(500.0));
        assert_eq!((action, workers, cap), (Action::Hold, 3, Some(500.0)));
        let none = Observation {
            batches: 0,
            errors: 0,
            latency_ms: 0.0,
            docs_per_sec: 0.0,
        };
        assert_eq!(decide(&CONFIG, 8, none, 3, None).0, Action::Hold);
    }

    #[test]
    fn validates_its_config() {
        let bad = AdaptiveConfig {
            target_ms: -1.0,
            max_workers: Some(0),
            interval_ms: Some(5),
        };
        assert_eq!(bad.problems().len(), 3);
        assert!(CONFIG.problems().is_empty());
    }
}
