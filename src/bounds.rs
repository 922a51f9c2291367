//! The accepted range of every number an operator can give, in one table.
//!
//! In: a value from the command line, a job spec, `PATCH /api/jobs/{id}` or `PUT /api/throttle`.
//! Out: `None` when the value is in its range, or one line saying which field, what it must be
//! and what it was. Every entry point checks its numbers here, and the code past it relies on
//! the ranges: a rate of `1e-308` documents per second would ask a worker to wait longer than a
//! `Duration` can hold, a shutdown timeout of `inf` would not fit one either.

use std::fmt::Display;
use std::ops::RangeInclusive;

/// A numeric field and its range.
pub struct Bound<T> {
    pub field: &'static str,
    pub range: RangeInclusive<T>,
    /// What the number counts, for the message ("documents per second").
    pub unit: &'static str,
}

impl<T: PartialOrd + Display + Copy> Bound<T> {
    /// The problem with `value`, if any. A float that is NaN is outside every range.
    pub fn problem(&self, value: T) -> Option<String> {
        (!self.range.contains(&value)).then(|| {
            format!(
                "{}: must be {} to {} {}, got {value}",
                self.field,
                self.range.start(),
                self.range.end(),
                self.unit
            )
        })
    }

    /// Like [`problem`](Self::problem), for a value that may be left out.
    pub fn problem_opt(&self, value: Option<T>) -> Option<String> {
        value.and_then(|v| self.problem(v))
    }
}

/// Documents per second: from one every 1000 s (a slow trickle is still a rate) to far beyond
/// any server.
pub const RATE: Bound<f64> = Bound {
    field: "rate",
    range: 0.001..=1e9,
    unit: "documents per second",
};

/// Bytes per second: from one byte to 10 TB per second.
pub const RATE_BYTES: Bound<f64> = Bound {
    field: "rate_bytes",
    range: 1.0..=1e13,
    unit: "bytes per second",
};

pub const WORKERS: Bound<usize> = Bound {
    field: "workers",
    range: 1..=256,
    unit: "workers",
};

/// Namespaces read at once: each holds a cursor and a connection on the source.
pub const READERS: Bound<usize> = Bound {
    field: "readers",
    range: 1..=64,
    unit: "readers",
};

/// Documents per partition (0: never partition).
pub const PARTITION_DOCS: Bound<u64> = Bound {
    field: "partition_docs",
    range: 0..=1_000_000_000_000,
    unit: "documents",
};

pub const BATCH_SIZE: Bound<usize> = Bound {
    field: "batch_size",
    range: 1..=100_000,
    unit: "documents",
};

pub const CONNECT_TIMEOUT: Bound<f64> = Bound {
    field: "connect_timeout",
    range: 0.001..=3600.0,
    unit: "seconds",
};

/// Seconds a sync may lag the source and still be ready to commit: under a second would never
/// hold under load; a day is no longer a cutover.
pub const COMMIT_MAX_LAG_SECS: Bound<f64> = Bound {
    field: "commit_max_lag_secs",
    range: 0.5..=86_400.0,
    unit: "seconds",
};

/// Seconds a sync watches the source after its commit: none, up to an hour.
pub const COMMIT_WATCH_SECS: Bound<f64> = Bound {
    field: "commit_watch_secs",
    range: 0.0..=3600.0,
    unit: "seconds",
};

/// A lease on a job in a MongoDB state store: long enough for a heartbeat (a third of it) to
/// get through a slow moment, short enough that a dead process's job is taken over soon.
pub const LEASE: Bound<f64> = Bound {
    field: "lease_seconds",
    range: 3.0..=3600.0,
    unit: "seconds",
};

/// A document can never be larger than BSON's own limit of 2 GiB.
pub const MAX_DOCUMENT_BYTES: Bound<usize> = Bound {
    field: "max_document_bytes",
    range: 1..=i32::MAX as usize,
    unit: "bytes",
};

/// Below 4 MiB the process's fixed overhead dominates; above 1 TiB is surely a typo.
pub const MEMORY_LIMIT: Bound<usize> = Bound {
    field: "memory_limit",
    range: 4 * 1024 * 1024..=1 << 40,
    unit: "bytes",
};

pub const ADAPTIVE_TARGET_MS: Bound<f64> = Bound {
    field: "adaptive.target_ms",
    range: 1.0..=600_000.0,
    unit: "milliseconds",
};

pub const ADAPTIVE_MAX_WORKERS: Bound<usize> = Bound {
    field: "adaptive.max_workers",
    range: 1..=256,
    unit: "workers",
};

pub const ADAPTIVE_INTERVAL_MS: Bound<u64> = Bound {
    field: "adaptive.interval_ms",
    range: 100..=60_000,
    unit: "milliseconds",
};

pub const SHUTDOWN_TIMEOUT: Bound<f64> = Bound {
    field: "shutdown_timeout",
    range: 0.0..=3600.0,
    unit: "seconds",
};

/// How long `serve` waits for a client to send a request's body.
pub const CLIENT_TIMEOUT: Bound<f64> = Bound {
    field: "client_timeout",
    range: 0.001..=3600.0,
    unit: "seconds",
};

pub const MAX_EVENT_STREAMS: Bound<usize> = Bound {
    field: "max_event_streams",
    range: 1..=100_000,
    unit: "streams",
};

/// Generated sample documents: a useful size up to the server's document limit.
pub const SAMPLE_DOC_SIZE: Bound<usize> = Bound {
    field: "doc_size",
    range: 64..=16 * 1024 * 1024,
    unit: "bytes",
};

/// Replication lag the load guard allows: from 1 ms to a day.
pub const MAX_LAG_MS: Bound<f64> = Bound {
    field: "max_lag_ms",
    range: 1.0..=86_400_000.0,
    unit: "milliseconds",
};

/// A hibernation on critical load: from a second to a day.
pub const HIBERNATE_SECS: Bound<f64> = Bound {
    field: "critical_load_hibernate_secs",
    range: 1.0..=86_400.0,
    unit: "seconds",
};

/// The oplog headroom a sync keeps: from none to 30 days.
pub const MIN_OPLOG_HEADROOM_SECS: Bound<f64> = Bound {
    field: "min_oplog_headroom_secs",
    range: 0.0..=2_592_000.0,
    unit: "seconds",
};

/// Between two decisions of the load guard: from 100 ms (a serverStatus per side each time) to
/// a minute.
pub const GUARD_INTERVAL_MS: Bound<u64> = Bound {
    field: "guard_interval_ms",
    range: 100..=60_000,
    unit: "milliseconds",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_or_not_numbers_are_refused() {
        assert_eq!(RATE.problem(5.0), None);
        for bad in [0.0, -1.0, 1e-308, 1e-17, f64::NAN, f64::INFINITY, 2e9] {
            let problem = RATE.problem(bad).expect("refused");
            assert!(problem.starts_with("rate: must be 0.001 to"), "{problem}");
        }
        assert_eq!(WORKERS.problem_opt(None), None);
        assert!(WORKERS.problem_opt(Some(0)).is_some());
        assert!(SHUTDOWN_TIMEOUT.problem(f64::INFINITY).is_some());
        assert_eq!(SHUTDOWN_TIMEOUT.problem(0.0), None);
    }
}
