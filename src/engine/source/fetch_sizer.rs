//! How many `_id`s one `$in` fetch of the `ids` strategy asks for, chosen by measurement.
//!
//! In: each fetch's number of `_id`s and how long it took. Out: the size of the next fetches.
//! The best size depends on the server: mongod looks each `_id` up in its index, so larger
//! fetches only save round trips; a server that matches `$in` lists less cleverly (SecantusDB:
//! 76 µs per `_id` at 25, 131 µs at 100, 466 µs at 500) wants short ones. The sizer climbs the
//! cost curve: it measures the current size over a round of fetches, then a probe at double or
//! half of it, and moves to the probe when its cost per `_id` is clearly lower; a probe that loses
//! turns the next one the other way.

/// The smallest and largest fetch.
pub const MIN_IDS: usize = 8;
pub const MAX_IDS: usize = 2048;
/// The size before any measurement.
pub const START_IDS: usize = 64;
/// Fetches measured at a size before it is compared. Long enough that latency jitter (on a
/// busy server a fetch can take twice as long as the one before) rarely decides: with rounds of
/// 6 and a 10% margin, a simulation of jittery latencies (lognormal, σ = 0.6) moved from the
/// best size to one 40% more costly in 12% of runs; with 16 and 15%, in 1%.
const ROUND: u32 = 16;
/// A probe wins when its cost per `_id` is below this share of the current size's.
const WIN: f64 = 0.85;

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    fetches: u32,
    ids: usize,
    secs: f64,
}

impl Tally {
    fn add(&mut self, ids: usize, secs: f64) {
        self.fetches += 1;
        self.ids += ids;
        self.secs += secs;
    }

    fn cost_per_id(&self) -> f64 {
        self.secs / self.ids.max(1) as f64
    }
}

#[derive(Debug)]
pub struct FetchSizer {
    size: usize,
    /// The size being tried against `size`, while a probe runs.
    probe: Option<usize>,
    current: Tally,
    probed: Tally,
    /// The direction of the next probe: larger (true) or smaller.
    up: bool,
}

impl Default for FetchSizer {
    fn default() -> Self {
        FetchSizer::new(START_IDS)
    }
}

impl FetchSizer {
    pub fn new(start: usize) -> Self {
        FetchSizer {
            size: start.clamp(MIN_IDS, MAX_IDS),
            probe: None,
            current: Tally::default(),
            probed: Tally::default(),
            up: false,
        }
    }

    /// The size of the next fetch.
    pub fn next(&self) -> usize {
        self.probe.unwrap_or(self.size)
    }

    /// The size settled on so far.
    pub fn settled(&self) -> usize {
        self.size
    }

    /// A fetch planned at `planned` `_id`s asked for `ids` (fewer at a batch's end) and took
    /// `secs`. Fetches planned at a size no longer measured are ignored.
    pub fn observe(&mut self, planned: usize, ids: usize, secs: f64) {
        match self.probe {
            Some(probe) if planned == probe => self.probed.add(ids, secs),
            None if planned == self.size => self.current.add(ids, secs),
            _ => return,
        }
        if self.probe.is_none() && self.current.fetches >= ROUND {
            let probe = if self.up {
                self.size * 2
            } else {
                self.size / 2
            }
            .clamp(MIN_IDS, MAX_IDS);
            if probe == self.size {
                // At a bound: the next probe goes the other way.
                self.up = !self.up;
                self.current = Tally::default();
            } else {
                self.probe = Some(probe);
            }
        } else if let (Some(probe), true) = (self.probe, self.probed.fetches >= ROUND) {
            if self.probed.cost_per_id() < self.current.cost_per_id() * WIN {
                self.size = probe;
            } else {
                self.up = !self.up;
            }
            self.probe = None;
            self.current = Tally::default();
            self.probed = Tally::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the sizer `fetches` fetches whose cost is `cost(size)` seconds.
    fn run(sizer: &mut FetchSizer, fetches: usize, cost: impl Fn(usize) -> f64) {
        for _ in 0..fetches {
            let size = sizer.next();
            sizer.observe(size, size, cost(size));
        }
    }

    #[test]
    fn it_settles_where_a_fetch_costs_least_per_id() {
        // SecantusDB-like: a fixed cost per fetch, and a cost per id that grows with the list.
        let quadratic = |n: usize| 0.0005 + n as f64 * (60e-6 + n as f64 * 0.8e-6);
        let mut sizer = FetchSizer::new(START_IDS);
        run(&mut sizer, 400, quadratic);
        assert!((16..=64).contains(&sizer.settled()), "{}", sizer.settled());

        // mongod-like: a round trip dominates; the cost per id is flat.
        let linear = |n: usize| 0.002 + n as f64 * 10e-6;
        let mut sizer = FetchSizer::new(START_IDS);
        run(&mut sizer, 400, linear);
        assert!(sizer.settled() >= 512, "{}", sizer.settled());
    }

    #[test]
    fn it_stays_within_its_bounds_and_ignores_stale_sizes() {
        let mut sizer = FetchSizer::new(1);
        assert_eq!(sizer.next(), MIN_IDS);
        run(&mut sizer, 300, |n| n as f64 * n as f64);
        assert_eq!(sizer.settled(), MIN_IDS);
        let mut sizer = FetchSizer::new(1_000_000);
        run(&mut sizer, 300, |_| 1.0);
        assert_eq!(sizer.settled(), MAX_IDS);
        // A fetch planned before a change of size tells nothing about the new one.
        let mut sizer = FetchSizer::new(64);
        sizer.observe(999, 999, 100.0);
        assert_eq!(sizer.current.fetches, 0);
    }
}
