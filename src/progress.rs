//! Shows a running copy to a person: progress bars on a terminal, plain log lines otherwise.
//!
//! In: the job's live [`JobStats`]. Out: bars per namespace and in total (docs, docs/s, ETA) on
//! stderr, redrawn a few times a second; or, when stderr is not a terminal, one line every few
//! seconds. Nothing here touches the engine: it only reads counters.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stats::JobStats;

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
    pub fn start(stats: Arc<JobStats>, mode: ProgressMode, line_every: Duration) -> Self {
        let stop = CancellationToken::new();
        let task = match mode {
            ProgressMode::Quiet => None,
            ProgressMode::Bars => Some(tokio::spawn(draw_bars(stats, stop.clone()))),
            ProgressMode::Lines => Some(tokio::spawn(log_lines(stats, stop.clone(), line_every))),
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

async fn draw_bars(stats: Arc<JobStats>, stop: CancellationToken) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    let style = ProgressStyle::with_template(
        "{prefix:<28!} [{bar:30.cyan/blue}] {human_pos:>9}/{human_len:9} {per_sec:>12} ETA {eta:>4}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let bar = |prefix: String| {
        let b = multi.add(
            ProgressBar::new(0)
                .with_style(style.clone())
                .with_prefix(prefix),
        );
        b.set_length(0);
        b
    };
    let ns_bars: Vec<ProgressBar> = stats
        .namespaces
        .iter()
        .map(|n| bar(n.source.to_string()))
        .collect();
    let total = (stats.namespaces.len() > 1).then(|| bar("total".to_string()));
    let mut tick = tokio::time::interval(Duration::from_millis(125));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let snap = stats.snapshot();
        for (b, n) in ns_bars.iter().zip(&snap.namespaces) {
            b.set_length(n.expected.unwrap_or(n.docs));
            b.set_position(n.docs);
        }
        if let Some(t) = &total {
            t.set_length(snap.expected.unwrap_or(snap.docs));
            t.set_position(snap.docs);
        }
        if stopping {
            for b in ns_bars.iter().chain(total.iter()) {
                b.abandon();
            }
            return;
        }
    }
}

async fn log_lines(stats: Arc<JobStats>, stop: CancellationToken, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.cancelled() => return,
        }
        let snap = stats.snapshot();
        let total = match snap.expected {
            Some(n) => format!("{}/{n}", snap.docs),
            None => snap.docs.to_string(),
        };
        let eta = snap
            .eta()
            .map(|d| format!(", ETA {}s", d.as_secs()))
            .unwrap_or_default();
        tracing::info!(
            "copied {total} docs, {} bytes, {:.0} docs/s{eta}",
            snap.bytes,
            snap.docs_per_sec
        );
    }
}
