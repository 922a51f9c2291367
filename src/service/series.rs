//! A job's history on its charts: one point a second for each measure, kept for the job's whole
//! life at a bounded size.
//!
//! In: the job's [`Reading`] once a second (and its batch latency counters), while its run goes on, by
//! [`Sampler::sample`]. Out: [`Series`], at most [`MAX_POINTS`] points per measure whatever the
//! job's age: when full, its older half is merged pairwise into points twice as coarse, so the
//! newest minutes stay sharp and the first second is still there. The manager saves them with
//! the job's history (a file per job beside the history file, or a document per job in the
//! shared state database) every [`SAVE_EVERY`] and when the run ends; `GET
//! /api/jobs/{id}/series` and the job report show them ([`Series::by_measure`]).
//!
//! Memory: a point is its time and one value per measure, `(1 + MEASURES) × 8` bytes, so a job's
//! series take at most `1,000 × 80` bytes = 80 KB.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::stats::{Histogram, JobSnapshot, SyncPhase};

/// The most points a series keeps.
pub const MAX_POINTS: usize = 1000;

/// How often the series of a running job are saved (and its end saves them too).
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// How often a running job is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What a job's charts show, one series each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Documents written per second (every node's, for a job several nodes share).
    DocsPerSec,
    /// Bytes written per second by this node's run.
    BytesPerSec,
    Workers,
    /// The job's own rate limit in documents per second (none: unlimited).
    RateLimit,
    /// The mean time to write a batch over the last interval, in milliseconds.
    BatchLatencyMs,
    /// A sync's lag behind its source, in seconds, while it follows the source's changes.
    SyncLagSecs,
    /// A sync's changes applied per second.
    EventsPerSec,
    /// A move's documents deleted from the source per second.
    DeletesPerSec,
    /// The load guard held the job (1) or let it write (0); a merged point is the share held.
    Held,
}

/// How many measures a point has.
pub const MEASURES: usize = 9;

impl Measure {
    pub const ALL: [Measure; MEASURES] = [
        Measure::DocsPerSec,
        Measure::BytesPerSec,
        Measure::Workers,
        Measure::RateLimit,
        Measure::BatchLatencyMs,
        Measure::SyncLagSecs,
        Measure::EventsPerSec,
        Measure::DeletesPerSec,
        Measure::Held,
    ];

    /// Its name in the API, the saved series and the report.
    pub fn name(self) -> &'static str {
        match self {
            Measure::DocsPerSec => "docs_per_sec",
            Measure::BytesPerSec => "bytes_per_sec",
            Measure::Workers => "workers",
            Measure::RateLimit => "rate_limit",
            Measure::BatchLatencyMs => "batch_latency_ms",
            Measure::SyncLagSecs => "sync_lag_secs",
            Measure::EventsPerSec => "events_per_sec",
            Measure::DeletesPerSec => "deletes_per_sec",
            Measure::Held => "held",
        }
    }

    fn index(self) -> usize {
        Measure::ALL
            .iter()
            .position(|m| *m == self)
            .expect("every measure is in ALL")
    }
}

/// One point: its time (unix seconds) and a value per measure (`None`: the measure has no value
/// then, e.g. the lag of a copy).
pub type Values = [Option<f64>; MEASURES];

/// A job's series: rows of a time and the values of every measure at that time, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "Saved", try_from = "Saved")]
pub struct Series {
    times: Vec<f64>,
    values: Vec<Values>,
    /// How many samples each point stands for.
    weights: Vec<u32>,
}

/// Points being merged into one: sums weighted by their samples.
#[derive(Default)]
struct Bin {
    weight: u32,
    time: f64,
    sums: [f64; MEASURES],
    weights: [u32; MEASURES],
}

impl Bin {
    fn add(&mut self, at: f64, values: &Values, weight: u32) {
        self.weight += weight;
        self.time += at * f64::from(weight);
        for (i, value) in values.iter().enumerate() {
            if let Some(value) = value {
                self.sums[i] += value * f64::from(weight);
                self.weights[i] += weight;
            }
        }
    }

    fn close(self, into: &mut Series) {
        let weight = f64::from(self.weight);
        into.times.push(self.time / weight);
        let mut values = [None; MEASURES];
        for (i, value) in values.iter_mut().enumerate() {
            *value = (self.weights[i] > 0).then(|| self.sums[i] / f64::from(self.weights[i]));
        }
        into.values.push(values);
        into.weights.push(self.weight);
    }
}

/// The series as saved: a column per measure, by name (a measure a later version adds or drops
/// reads as missing, not as a damaged file).
#[derive(Serialize, Deserialize)]
struct Saved {
    times: Vec<f64>,
    /// Samples per point (missing: one each).
    #[serde(default)]
    weights: Vec<u32>,
    values: BTreeMap<String, Vec<Option<f64>>>,
}

impl From<Series> for Saved {
    fn from(series: Series) -> Saved {
        let values = Measure::ALL
            .iter()
            .map(|m| {
                let i = m.index();
                let column = series.values.iter().map(|row| row[i]).collect();
                (m.name().to_string(), column)
            })
            .collect();
        Saved {
            times: series.times,
            weights: series.weights,
            values,
        }
    }
}

impl TryFrom<Saved> for Series {
    type Error = String;

    fn try_from(saved: Saved) -> Result<Series, String> {
        let n = saved.times.len();
        if n > MAX_POINTS {
            return Err(format!("{n} points, more than {MAX_POINTS}"));
        }
        let mut values = vec![[None; MEASURES]; n];
        for measure in Measure::ALL {
            let Some(column) = saved.values.get(measure.name()) else {
                continue;
            };
            if column.len() != n {
                return Err(format!(
                    "{} has {} values for {n} times",
                    measure.name(),
                    column.len()
                ));
            }
            for (row, value) in values.iter_mut().zip(column) {
                row[measure.index()] = *value;
            }
        }
        let weights = match saved.weights.len() {
            0 => vec![1; n],
            m if m == n && saved.weights.iter().all(|w| *w > 0) => saved.weights,
            _ => return Err(format!("weights do not fit the {n} times")),
        };
        Ok(Series {
            times: saved.times,
            values,
            weights,
        })
    }
}

impl Series {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Adds a point at `at` (a time before the last point's is moved to it: a clock that stepped
    /// back does not break the order). When the series is full, its older half is merged first.
    pub fn push(&mut self, at: f64, values: Values) {
        if self.times.len() >= MAX_POINTS {
            self.merge_older_half();
        }
        let at = self.times.last().map_or(at, |last| at.max(*last));
        self.times.push(at);
        self.values.push(values);
        self.weights.push(1);
    }

    /// Merges the older half's points into at most half as many, each standing for about the
    /// same number of samples: the older half stays even (never one point for the first days),
    /// the newer half keeps its one point a second. A merged point has the mean time of its
    /// samples, and each measure's mean over the samples that had it.
    fn merge_older_half(&mut self) {
        let half = self.times.len() / 2;
        let most = (half / 2).max(1);
        let samples: u64 = self.weights[..half].iter().map(|w| u64::from(*w)).sum();
        // Neighbours are packed while they stay within a limit; raised until few enough bins.
        let mut limit = samples as f64 / most as f64;
        let bins = loop {
            let bins = self.pack(half, limit);
            if bins.len() <= most {
                break bins;
            }
            limit *= 1.25;
        };
        let mut merged = Series::default();
        let mut start = 0;
        for end in bins {
            let mut bin = Bin::default();
            for i in start..end {
                bin.add(self.times[i], &self.values[i], self.weights[i]);
            }
            bin.close(&mut merged);
            start = end;
        }
        merged.times.extend_from_slice(&self.times[half..]);
        merged.values.extend_from_slice(&self.values[half..]);
        merged.weights.extend_from_slice(&self.weights[half..]);
        *self = merged;
    }

    /// Where each bin of the first `count` points ends, packing neighbours while their samples
    /// stay within `limit` (a point over it alone).
    fn pack(&self, count: usize, limit: f64) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut weight = 0u64;
        for (i, w) in self.weights[..count].iter().enumerate() {
            let w = u64::from(*w);
            if weight > 0 && (weight + w) as f64 > limit {
                ends.push(i);
                weight = 0;
            }
            weight += w;
        }
        ends.push(count);
        ends
    }

    /// Each measure that has a value somewhere, as `[unix seconds, value]` pairs, oldest first.
    pub fn by_measure(&self) -> BTreeMap<String, Vec<[f64; 2]>> {
        let mut out = BTreeMap::new();
        for measure in Measure::ALL {
            let i = measure.index();
            let points: Vec<[f64; 2]> = self
                .times
                .iter()
                .zip(&self.values)
                .filter_map(|(t, row)| row[i].map(|v| [*t, v]))
                .collect();
            if !points.is_empty() {
                out.insert(measure.name().to_string(), points);
            }
        }
        out
    }
}

/// What a job shows at one time, as the series take it.
pub struct Reading<'a> {
    /// Its progress, with its rate of every node's together.
    pub progress: Option<&'a JobSnapshot>,
    pub workers: usize,
    /// Its own rate limit (documents per second).
    pub rate_limit: Option<f64>,
    /// Whether its load guard holds it.
    pub held: bool,
}

/// Turns a running job's readings into points: rates from the counters' changes since the last
/// sample.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Option<Counters>,
}

/// The cumulative counters a rate is taken from.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: f64,
    bytes: u64,
    deleted: u64,
    batches: u64,
    batch_secs: f64,
}

impl Sampler {
    /// The point of `reading` at `at`, with the batch write latency histogram of its run.
    pub fn sample(&mut self, at: f64, reading: &Reading, writes: &Histogram) -> Values {
        let progress = reading.progress;
        let sync = progress.and_then(|p| p.sync.as_ref());
        let (_, batches, batch_secs) = writes.snapshot();
        let now = Counters {
            at,
            bytes: progress.map_or(0, |p| p.bytes),
            deleted: progress
                .and_then(|p| p.moves.as_ref())
                .map_or(0, |m| m.deleted),
            batches,
            batch_secs,
        };
        let last = self.last.replace(now);
        let elapsed = last.map(|l| now.at - l.at).filter(|secs| *secs > 0.0);
        let rate = |new: u64, old: u64| elapsed.map(|secs| new.saturating_sub(old) as f64 / secs);
        let mut values = [None; MEASURES];
        let mut set = |measure: Measure, value: Option<f64>| values[measure.index()] = value;
        set(Measure::DocsPerSec, progress.map(|p| p.docs_per_sec));
        set(
            Measure::BytesPerSec,
            last.and_then(|l| rate(now.bytes, l.bytes)),
        );
        set(Measure::Workers, Some(reading.workers as f64));
        set(Measure::RateLimit, reading.rate_limit);
        set(
            Measure::BatchLatencyMs,
            last.and_then(|l| {
                let batches = now.batches.saturating_sub(l.batches);
                (batches > 0).then(|| (now.batch_secs - l.batch_secs) * 1000.0 / batches as f64)
            }),
        );
        // A lag means something only while the changes are followed.
        let following = sync.filter(|s| {
            matches!(
                s.phase,
                SyncPhase::CatchingUp | SyncPhase::Live | SyncPhase::Committing
            )
        });
        set(Measure::SyncLagSecs, following.map(|s| s.lag_secs));
        set(Measure::EventsPerSec, sync.map(|s| s.events_per_sec));
        set(
            Measure::DeletesPerSec,
            progress
                .and_then(|p| p.moves.as_ref())
                .and(last)
                .and_then(|l| rate(now.deleted, l.deleted)),
        );
        set(Measure::Held, Some(f64::from(u8::from(reading.held))));
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(value: f64) -> Values {
        let mut values = [None; MEASURES];
        values[Measure::DocsPerSec.index()] = Some(value);
        values
    }

    #[test]
    fn a_long_job_keeps_at_most_the_bound_and_still_its_first_second() {
        let mut series = Series::default();
        // A week at one point a second.
        let seconds = 7 * 24 * 3600;
        for t in 0..seconds {
            series.push(1_000_000.0 + t as f64, point(t as f64));
            assert!(series.len() <= MAX_POINTS, "{} points at {t}", series.len());
        }
        assert!(series.len() > MAX_POINTS / 2);
        let times = &series.times;
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
        // The first point is the mean of the first seconds merged into it: near the start.
        let span = times[times.len() - 1] - times[0];
        assert!(
            span > seconds as f64 * 0.95,
            "covers the whole week: {span}"
        );
        // The older points each stand for about as many seconds as each other.
        let old = &series.weights[..200];
        let (least, most) = (old.iter().min().unwrap(), old.iter().max().unwrap());
        assert!(*most <= 4 * *least, "uneven: {least}..{most}");
        // The newest points are still one a second.
        let last = &times[times.len() - 10..];
        assert!(last.windows(2).all(|w| w[1] - w[0] == 1.0), "{last:?}");
        // A merged value is the mean of what it merged: values rise with time, so they stay
        // ordered, and the last is exact.
        let docs = &series.by_measure()["docs_per_sec"];
        assert!(docs.windows(2).all(|w| w[0][1] <= w[1][1]));
        assert_eq!(docs.last().unwrap()[1], (seconds - 1) as f64);
    }

    #[test]
    fn merging_keeps_a_value_only_one_of_a_pair_has_and_the_share_held() {
        let mut series = Series::default();
        for t in 0..MAX_POINTS + 1 {
            let mut values = [None; MEASURES];
            values[Measure::Held.index()] = Some((t % 2) as f64);
            if t % 2 == 0 {
                values[Measure::SyncLagSecs.index()] = Some(4.0);
            }
            series.push(t as f64, values);
        }
        let measures = series.by_measure();
        let held = &measures["held"];
        assert_eq!(held[0], [0.5, 0.5], "two seconds, one held: half");
        assert_eq!(measures["sync_lag_secs"][0], [0.5, 4.0]);
        assert!(!measures.contains_key("docs_per_sec"), "never had a value");
    }

    #[test]
    fn saved_by_name_and_read_back_refusing_what_does_not_fit() {
        let mut series = Series::default();
        series.push(10.0, point(1.0));
        series.push(9.0, point(2.0));
        assert_eq!(series.times, vec![10.0, 10.0], "a clock stepping back");
        let text = serde_json::to_string(&series).unwrap();
        let back: Series = serde_json::from_str(&text).unwrap();
        assert_eq!(back, series);
        // A measure this version does not know is ignored; one it knows that is missing is empty.
        let other = r#"{"times": [1.0], "values": {"future": [3.0]}}"#;
        let read: Series = serde_json::from_str(other).unwrap();
        assert!(read.by_measure().is_empty());
        let broken = r#"{"times": [1.0, 2.0], "values": {"workers": [3.0]}}"#;
        let err = serde_json::from_str::<Series>(broken).unwrap_err();
        assert!(err.to_string().contains("1 values for 2 times"), "{err}");
    }
}
