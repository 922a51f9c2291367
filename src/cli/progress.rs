//! Shows a running copy to a person: progress bars on a terminal, plain log lines otherwise.
//!
//! In: the job's live [`JobStats`] and its load guard. Out: bars per namespace and in total
//! (docs, docs/s, ETA) on stderr, redrawn a few times a second, with a line for why the guard
//! holds the job; or, when stderr is not a terminal, one line every few seconds. Nothing here
//! touches the engine: it only reads counters.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{
    HumanCount, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState,
    ProgressStyle,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::control::guard::{GuardView, LoadGuard};
use crate::engine::stats::{
    JobStats, MoveProgress, ReconcileProgress, SyncPhase, SyncProgress, VerificationPhase,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bars,
    Lines,
    Quiet,
}

impl ProgressMode {
    /// Bars on a terminal, lines when logging to a file or pipe.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

/// A running progress display; [`finish`](Progress::finish) draws the last state and stops it.
pub struct Progress {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(
        (stats, guard): (Arc<JobStats>, Option<Arc<LoadGuard>>),
        mode: ProgressMode,
        line_every: Duration,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = match mode {
            ProgressMode::Quiet => None,
            ProgressMode::Bars => Some(tokio::spawn(draw_bars(stats, guard, stop.clone()))),
            ProgressMode::Lines => Some(tokio::spawn(log_lines(
                (stats, guard),
                stop.clone(),
                line_every,
            ))),
        };
        Progress { stop, task }
    }

    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn draw_bars(stats: Arc<JobStats>, guard: Option<Arc<LoadGuard>>, stop: CancellationToken) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    let style = ProgressStyle::with_template(
        "{prefix:<28!} [{bar:30.cyan/blue}] {human_pos:>11}/{expected:11} {msg}",
    )
    .expect("valid template")
    // Until counted, the total is `?` (indicatif's `human_len` would repeat the position).
    .with_key(
        "expected",
        |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = match state.len() {
                Some(len) => write!(out, "{}", HumanCount(len)),
                None => write!(out, "?"),
            };
        },
    )
    .progress_chars("=> ");
    let bar = |prefix: String| {
        // Unknown until counted: an empty bar, not a full one (0 of 0 would draw as done).
        multi.add(
            ProgressBar::no_length()
                .with_style(style.clone())
                .with_prefix(prefix),
        )
    };
    let ns_bars: Vec<ProgressBar> = stats
        .namespaces
        .iter()
        .map(|n| bar(n.source.to_string()))
        .collect();
    let total = (stats.namespaces.len() > 1).then(|| bar("total".to_string()));
    // A sync's or a move's line, once the job turns out to be one; the guard's, once it held.
    let mut status_bar: Option<ProgressBar> = None;
    let mut guard_bar: Option<ProgressBar> = None;
    let mut rates: Vec<RateWindow> = ns_bars
        .iter()
        .chain(total.iter())
        .map(|_| RateWindow::new(Duration::from_secs(5)))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(125));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let snap = stats.snapshot();
        let now = Instant::now();
        // Position counts what earlier runs copied (skipped) and what was refused; the rate only
        // what this run does (writes, and what a reconcile found equal).
        let rows = snap
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.docs + n.equal,
                    n.skipped + n.failed,
                    n.expected,
                    n.finished,
                )
            })
            .chain(total.iter().map(|_| {
                let equal: u64 = snap.namespaces.iter().map(|n| n.equal).sum();
                (
                    snap.docs + equal,
                    snap.skipped + snap.failed,
                    snap.expected,
                    stopping,
                )
            }));
        for ((bar, rate), (docs, before, expected, finished)) in
            ns_bars.iter().chain(total.iter()).zip(&mut rates).zip(rows)
        {
            let per_sec = rate.update(now, docs);
            let done = docs + before;
            match (expected, finished) {
                (Some(expected), _) => bar.set_length(expected),
                (None, true) => bar.set_length(done),
                (None, false) => bar.unset_length(),
            }
            bar.set_position(done);
            let mut message = rate_and_eta(per_sec, done, expected, finished);
            if before > 0 {
                message.push_str(&format!("  ({before} skipped or failed)"));
            }
            bar.set_message(message);
        }
        let status = match (&snap.sync, &snap.moves, &snap.reconcile) {
            (Some(sync), _, _) => Some(("sync", sync_line(sync))),
            (_, Some(moves), _) => Some(("move", move_line(moves))),
            (_, _, Some(reconcile)) => Some(("reconcile", reconcile_line(reconcile))),
            _ => None,
        };
        if let Some((prefix, message)) = status {
            let line = status_bar.get_or_insert_with(|| {
                multi.add(
                    ProgressBar::new_spinner()
                        .with_style(
                            ProgressStyle::with_template("{prefix:<28!} {msg}")
                                .expect("valid template"),
                        )
                        .with_prefix(prefix),
                )
            });
            line.set_message(message);
        }
        let held = guard.as_ref().map(|g| guard_line(&g.view()));
        if let Some(message) = held
            .flatten()
            .or(guard_bar.as_ref().map(|_| "writing".into()))
        {
            let line = guard_bar.get_or_insert_with(|| {
                multi.add(
                    ProgressBar::new_spinner()
                        .with_style(
                            ProgressStyle::with_template("{prefix:<28!} {msg}")
                                .expect("valid template"),
                        )
                        .with_prefix("load guard"),
                )
            });
            line.set_message(message);
        }
        if stopping {
            let lines = status_bar.iter().chain(guard_bar.iter());
            for b in ns_bars.iter().chain(total.iter()).chain(lines) {
                b.abandon();
            }
            return;
        }
    }
}

fn rate_and_eta(per_sec: f64, docs: u64, expected: Option<u64>, finished: bool) -> String {
    let eta = match expected {
        _ if finished => "done".to_string(),
        Some(n) if per_sec >= 1.0 => {
            match Duration::try_from_secs_f64(n.saturating_sub(docs) as f64 / per_sec) {
                Ok(left) => format!("ETA {}", HumanDuration(left)),
                Err(_) => "ETA -".to_string(),
            }
        }
        _ => "ETA -".to_string(),
    };
    format!("{:>7} docs/s  {eta}", HumanCount(per_sec.round() as u64))
}

/// "pass 1: 9,000 moved (deleted from the source), 12 kept (changed since their copy), …".
pub fn move_line(moves: &MoveProgress) -> String {
    if moves.rehearsal {
        // Nothing is deleted: "0 left at the source" would read as if nothing were there.
        return format!(
            "rehearsal, nothing deleted: {} verified at the destination, {} kept at the source",
            HumanCount(moves.verified),
            HumanCount(moves.verified)
        );
    }
    format!(
        "pass {}: {} verified at the destination, {} moved (deleted from the source), {} kept \
         (changed since their copy), {} left at the source, {} deletes/s",
        moves.pass,
        HumanCount(moves.verified),
        HumanCount(moves.deleted),
        HumanCount(moves.changed),
        HumanCount(moves.left),
        HumanCount(moves.deletes_per_sec.round() as u64)
    )
}

/// "100,000 compared: 98,000 equal, 1,000 written, 500 extra deleted".
pub fn reconcile_line(r: &ReconcileProgress) -> String {
    let extras = if r.delete_extra {
        format!("{} extra deleted", HumanCount(r.deleted))
    } else {
        format!(
            "{} extra kept (--delete-extra deletes them)",
            HumanCount(r.extra)
        )
    };
    format!(
        "{} compared: {} equal, {} written ({} missing, {} different), {extras}",
        HumanCount(r.compared),
        HumanCount(r.equal),
        HumanCount(r.written),
        HumanCount(r.missing),
        HumanCount(r.different),
    )
}

/// "live, lag 0.4 s, 1,234 events applied (…), 56 events/s".
pub fn sync_line(sync: &SyncProgress) -> String {
    let phase = match sync.phase {
        SyncPhase::InitialCopy => "initial copy",
        SyncPhase::CatchingUp => "catching up",
        SyncPhase::Reconciling => "history lost, reconciling",
        SyncPhase::Live => "live",
        SyncPhase::Committing => "committing",
        SyncPhase::Committed => "committed",
    };
    let a = &sync.applied;
    let verified = sync.verification.as_ref().map_or(String::new(), |v| {
        let phase = match v.phase {
            VerificationPhase::Initial => "verifying",
            VerificationPhase::Continuous => "verified",
            VerificationPhase::Committed => "proven",
        };
        format!(
            "; {phase} {} docs, {} mismatches ({} repaired), {} to recheck",
            HumanCount(v.verified_docs),
            v.mismatches,
            v.repaired,
            HumanCount(v.recheck_pending)
        )
    });
    let commit = match (sync.phase, &sync.can_commit) {
        (SyncPhase::Committing | SyncPhase::Committed, _) => String::new(),
        (_, c) if c.ok => "; can commit".into(),
        (_, c) => format!("; not ready: {}", c.reasons.join(", ")),
    };
    format!(
        "{phase}, lag {:.1} s, {} events applied ({} insert, {} update, {} replace, {} delete, \
         {} schema), {} events/s{verified}{commit}",
        sync.lag_secs,
        HumanCount(sync.events),
        a.insert,
        a.update,
        a.replace,
        a.delete,
        a.ddl,
        HumanCount(sync.events_per_sec.round() as u64)
    )
}

/// "throttled: destination lag 3.2 s > 1 s" while the guard holds the job, or why it does not
/// (a sync short of oplog headroom); `None` when it has nothing to say.
pub fn guard_line(view: &GuardView) -> Option<String> {
    match (view.throttled, &view.reason) {
        (true, Some(why)) => Some(format!("throttled: {why}")),
        (true, None) => Some("throttled".into()),
        (false, why) => why.clone(),
    }
}

async fn log_lines(
    (stats, guard): (Arc<JobStats>, Option<Arc<LoadGuard>>),
    stop: CancellationToken,
    every: Duration,
) {
    let mut rate = RateWindow::new(every.max(Duration::from_secs(5)));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.cancelled() => return,
        }
        let snap = stats.snapshot();
        let per_sec = rate.update(Instant::now(), snap.docs);
        if snap.seconds < 1.0 {
            continue;
        }
        let equal: u64 = snap.namespaces.iter().map(|n| n.equal).sum();
        let done = snap.docs + snap.skipped + snap.failed + equal;
        let total = match snap.expected {
            Some(n) => format!("{done}/{n}"),
            None => done.to_string(),
        };
        tracing::info!(
            "copied {total} docs ({}; {} skipped as copied before, {} failed), {}",
            indicatif::HumanBytes(snap.bytes),
            snap.skipped,
            snap.failed,
            rate_and_eta(per_sec, done, snap.expected, false).trim_start()
        );
        if let Some(sync) = &snap.sync {
            tracing::info!("sync: {}", sync_line(sync));
        }
        if let Some(moves) = &snap.moves {
            tracing::info!("move: {}", move_line(moves));
        }
        if let Some(reconcile) = &snap.reconcile {
            tracing::info!("reconcile: {}", reconcile_line(reconcile));
        }
        if let Some(line) = guard.as_ref().and_then(|g| guard_line(&g.view())) {
            tracing::info!("load guard: {line}");
        }
    }
}

/// Rate over a sliding time window, fed with a running total now and then.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateWindow {
    pub fn new(window: Duration) -> Self {
        RateWindow {
            window,
            samples: Default::default(),
        }
    }

    /// Records the running total `total` at `now` and returns the rate per second over the window.
    fn update(&mut self, now: Instant, total: u64) -> f64 {
        self.samples.push_back((now, total));
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > self.window && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let (t0, n0) = *self.samples.front().expect("just pushed");
        let secs = now.duration_since(t0).as_secs_f64();
        if secs > 0.0 {
            total.saturating_sub(n0) as f64 / secs
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_forgets_old_samples() {
        let t = Instant::now();
        let mut w = RateWindow::new(Duration::from_secs(5));
        assert_eq!(w.update(t, 0), 0.0);
        assert_eq!(w.update(t + Duration::from_secs(1), 100), 100.0);
        // A burst long ago no longer counts: only the last 5 s are averaged.
        w.update(t + Duration::from_secs(2), 10_000);
        let r = w.update(t + Duration::from_secs(12), 10_500);
        assert!((r - 50.0).abs() < 1e-9, "{r}");
    }
}
