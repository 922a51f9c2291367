//! A job's report: one self-contained HTML page (or the same content as JSON) that tells what a
//! job did, for the operator's records.
//!
//! In: a [`Job`] (running, or restored from the history: its [`JobRecord`] with the timeline and
//! the final progress, dead letters and node shares) and its time series (`name → [[unix
//! seconds, value], …]`, [`super::series::Series::by_measure`]). Out: a [`Report`]: the spec (redacted: no
//! credentials), the timeline of states and phases, the figures, the verification verdict, the
//! dead letters' summary, the nodes and the series; [`Report::html`] renders it as a page that
//! needs no network: inline CSS, charts as inline SVG drawn here, no script, no external
//! reference, every string taken from data HTML-escaped. Served by `GET /api/jobs/{id}/report`
//! and written by `mongoferry report`.
//!
//! [`JobRecord`]: super::job::JobRecord

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::job::{Job, JobId, JobState, NodeShare, TimelineEntry, TimelineKind};
use super::series::Measure;
use crate::engine::stats::{
    human_bytes, DeadLetterSummary, JobSnapshot, MoveProgress, ReconcileProgress,
    VerificationProgress, WritesAfterCommit,
};
use crate::spec::JobSpec;
use crate::state::unix_now;

/// A job's time series: each name's `[unix seconds, value]` points, oldest first.
pub type SeriesPoints = BTreeMap<String, Vec<[f64; 2]>>;

/// The Content-Security-Policy of the page: nothing from the network, only its own inline CSS
/// and `data:` images.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// Everything a job's report shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Report {
    pub id: JobId,
    pub state: JobState,
    /// `copy`, `sync`, `move` or `reconcile`.
    pub mode: String,
    /// Redacted: no credentials.
    pub spec: JobSpec,
    /// Unix seconds.
    pub created_at: f64,
    pub finished_at: Option<f64>,
    /// When the report was made (Unix seconds).
    pub generated_at: f64,
    /// The message the job ended with, if any.
    pub error: Option<String>,
    /// The states the job entered and the phases it went through, oldest first.
    pub timeline: Vec<TimelineEntry>,
    pub figures: Figures,
    /// Per namespace pair: what was written.
    pub namespaces: Vec<NamespaceFigures>,
    pub verification: Verification,
    /// Documents the destination refused.
    pub dead_letters: Option<DeadLetterSummary>,
    /// Several service nodes on one state: what each did.
    pub nodes: Vec<NodeShare>,
    /// The job's time series: `name → [[unix seconds, value], …]`.
    #[schema(value_type = Object)]
    pub series: SeriesPoints,
}

/// The job's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    /// Documents written by the job's (last) run.
    pub docs: u64,
    pub bytes: u64,
    /// Documents earlier runs had written.
    pub skipped: u64,
    /// Documents the destination refused (dead letters).
    pub failed: u64,
    /// Documents the source held, when known.
    pub expected: Option<u64>,
    /// Transient errors retried, and the latest.
    pub retries: u64,
    pub last_retry: Option<String>,
    /// From creation to the end (or to now), seconds.
    pub duration_secs: f64,
    /// Seconds the (last) run ran.
    pub run_secs: f64,
    /// Documents per second over the run.
    pub average_docs_per_sec: f64,
    pub workers: usize,
}

/// What was written to one namespace pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NamespaceFigures {
    pub source: String,
    pub destination: String,
    pub docs: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    pub finished: bool,
}

/// Whatever the job has to say about the destination's equality with the source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// A sync's continuous verification.
    pub sync: Option<VerificationProgress>,
    /// A committed sync: the source's writes past the commit point.
    pub writes_after_commit: Option<WritesAfterCommit>,
    /// A move's verification and deletes.
    pub moves: Option<MoveProgress>,
    /// A reconcile's counts.
    pub reconcile: Option<ReconcileProgress>,
}

impl Report {
    /// The report of `job` as it is now, with its `series`.
    pub fn of(job: &Job, series: SeriesPoints) -> Report {
        let record = job.record();
        let view = job.view();
        let progress = view.progress.clone().unwrap_or_default();
        let end = view.finished_at.unwrap_or_else(unix_now);
        let run_secs = progress.seconds;
        let figures = Figures {
            docs: progress.docs,
            bytes: progress.bytes,
            skipped: progress.skipped,
            failed: progress.failed,
            expected: progress.expected,
            retries: progress.retries,
            last_retry: progress.last_retry.clone(),
            duration_secs: (end - view.created_at).max(0.0),
            run_secs,
            // Over the run; a record without its run time (an older history): over the job.
            average_docs_per_sec: match (run_secs > 0.0, end - view.created_at) {
                (true, _) => progress.average_docs_per_sec(),
                (false, wall) if wall > 0.0 => progress.docs as f64 / wall,
                _ => 0.0,
            },
            workers: view.workers,
        };
        let namespaces = progress
            .namespaces
            .iter()
            .map(|n| NamespaceFigures {
                source: n.source.to_string(),
                destination: n.destination.to_string(),
                docs: n.docs,
                bytes: n.bytes,
                skipped: n.skipped,
                failed: n.failed,
                finished: n.finished,
            })
            .collect();
        let verification = verification_of(&progress);
        let series = series
            .into_iter()
            .map(|(name, points)| {
                let points: Vec<[f64; 2]> = points
                    .into_iter()
                    .filter(|[t, v]| t.is_finite() && v.is_finite())
                    .collect();
                (name, points)
            })
            .collect();
        Report {
            id: view.id,
            state: view.state,
            mode: mode_name(&record.spec).to_string(),
            // Redacted in the record already; once more costs nothing.
            spec: record.spec.redacted(),
            created_at: view.created_at,
            finished_at: view.finished_at,
            generated_at: unix_now(),
            error: view.error.clone(),
            timeline: record.timeline,
            figures,
            namespaces,
            verification,
            dead_letters: view.dead_letters,
            // A job another node ran shows the shares heard lately; its record, the final ones.
            nodes: match view.nodes.is_empty() {
                true => record.nodes,
                false => view.nodes,
            },
            series,
        }
    }

    /// The report as one self-contained HTML page.
    pub fn html(&self) -> String {
        let mut page = String::with_capacity(16 * 1024);
        let title = format!("mongoferry job {} report", self.id);
        let _ = write!(
            page,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
            csp = escape(CONTENT_SECURITY_POLICY),
            title = escape(&title),
        );
        let _ = write!(
            page,
            "<header id=\"report-header\"><h1>{title}</h1>\
             <p>State <strong class=\"state state-{state}\" id=\"report-state\">{state}</strong> \
             · {mode} · created {created} · finished {finished} · report made {generated}</p>",
            title = escape(&title),
            state = self.state,
            mode = escape(&self.mode),
            created = escape(&clock(self.created_at)),
            finished = escape(&self.finished_at.map_or("—".into(), clock)),
            generated = escape(&clock(self.generated_at)),
        );
        if let Some(error) = &self.error {
            let _ = write!(
                page,
                "<p class=\"error\" id=\"report-error\">{}</p>",
                escape(error)
            );
        }
        page.push_str("</header>\n");
        self.figures_html(&mut page);
        self.timeline_html(&mut page);
        self.charts_html(&mut page);
        self.verification_html(&mut page);
        self.dead_letters_html(&mut page);
        self.nodes_html(&mut page);
        self.namespaces_html(&mut page);
        let spec = serde_json::to_string_pretty(&self.spec).unwrap_or_default();
        let _ = writeln!(
            page,
            "<section id=\"report-spec\"><h2>Spec</h2>\
             <p class=\"note\">Credentials are never shown.</p><pre>{}</pre></section>",
            escape(&spec)
        );
        page.push_str("</body>\n</html>\n");
        page
    }

    fn figures_html(&self, page: &mut String) {
        let f = &self.figures;
        let mut rows = vec![
            ("Documents written", count(f.docs)),
            ("Bytes written", human_bytes(f.bytes)),
            ("Skipped (written by earlier runs)", count(f.skipped)),
            ("Failed (dead letters)", count(f.failed)),
        ];
        if let Some(expected) = f.expected {
            rows.push(("Expected", count(expected)));
        }
        rows.extend([
            ("Duration", duration(f.duration_secs)),
            (
                "Run time",
                match f.run_secs > 0.0 {
                    true => duration(f.run_secs),
                    false => "—".into(),
                },
            ),
            ("Average", format!("{:.1} docs/s", f.average_docs_per_sec)),
            ("Retries", count(f.retries)),
            ("Workers", f.workers.to_string()),
        ]);
        if let Some(retry) = &f.last_retry {
            rows.push(("Last retry", retry.clone()));
        }
        page.push_str("<section id=\"report-figures\"><h2>Figures</h2><dl class=\"figures\">");
        for (name, value) in rows {
            let id = name
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_lowercase();
            let _ = write!(
                page,
                "<div class=\"figure\" data-figure=\"{}\"><dt>{}</dt><dd>{}</dd></div>",
                escape(&id),
                escape(name),
                escape(&value)
            );
        }
        page.push_str("</dl></section>\n");
    }

    fn timeline_html(&self, page: &mut String) {
        page.push_str("<section id=\"report-timeline\"><h2>Timeline</h2>");
        if self.timeline.is_empty() {
            page.push_str("<p class=\"note\">No timeline was kept for this job.</p>");
        } else {
            page.push_str(
                "<table><thead><tr><th>Time (UTC)</th><th>After</th><th>Kind</th><th>Name</th>\
                 </tr></thead><tbody>",
            );
            let start = self.timeline[0].at;
            for entry in &self.timeline {
                let kind = match entry.kind {
                    TimelineKind::State => "state",
                    TimelineKind::Phase => "phase",
                };
                let _ = write!(
                    page,
                    "<tr class=\"tl-{kind}\"><td>{}</td><td>{}</td><td>{kind}</td><td>{}</td></tr>",
                    escape(&clock(entry.at)),
                    escape(&duration(entry.at - start)),
                    escape(&entry.name)
                );
            }
            page.push_str("</tbody></table>");
        }
        page.push_str("</section>\n");
    }

    fn charts_html(&self, page: &mut String) {
        page.push_str("<section id=\"report-charts\"><h2>Charts</h2>");
        // In the order of the measures (throughput first), any other name after them.
        let rank = |name: &str| {
            Measure::ALL
                .iter()
                .position(|m| m.name() == name)
                .unwrap_or(usize::MAX)
        };
        let mut series: Vec<_> = self.series.iter().collect();
        series.sort_by_key(|(name, _)| rank(name));
        let charts: Vec<String> = series
            .into_iter()
            .filter_map(|(name, points)| svg_chart(name, points))
            .collect();
        if charts.is_empty() {
            page.push_str("<p class=\"note\">No time series were kept for this job.</p>");
        }
        for chart in charts {
            page.push_str(&chart);
        }
        page.push_str("</section>\n");
    }

    fn verification_html(&self, page: &mut String) {
        let v = &self.verification;
        page.push_str("<section id=\"report-verification\"><h2>Verification</h2>");
        let mut any = false;
        if let Some(s) = &v.sync {
            any = true;
            let verdict = if s.unrepaired == 0 && s.mismatches == s.repaired {
                "no difference left"
            } else {
                "differences left"
            };
            let mut rows = vec![
                ("Verdict", verdict.to_string()),
                ("Phase", format!("{:?}", s.phase).to_lowercase()),
                ("Documents compared", count(s.verified_docs)),
                (
                    "Namespaces verified",
                    format!("{} of {}", s.namespaces_verified, s.namespaces),
                ),
                ("Mismatches", count(s.mismatches)),
                ("Repaired", count(s.repaired)),
                ("Unrepaired", count(s.unrepaired)),
                ("To compare again", count(s.recheck_pending)),
            ];
            if let Some(through) = s.verified_through.or(s.through) {
                rows.push(("Proven equal through", clock(through)));
            }
            if let Some(unproven) = &s.unproven {
                rows.push(("Unproven", unproven.clone()));
            }
            table(page, "Continuous verification (sync)", &rows);
            if !s.recent.is_empty() {
                page.push_str(
                    "<table><thead><tr><th>Namespace</th><th>_id</th><th>Kind</th>\
                     <th>Repaired</th></tr></thead><tbody>",
                );
                for m in &s.recent {
                    let _ = write!(
                        page,
                        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                        escape(&m.ns),
                        escape(&m.id.to_string()),
                        escape(&format!("{:?}", m.kind).to_lowercase()),
                        if m.repaired { "yes" } else { "no" }
                    );
                }
                page.push_str("</tbody></table>");
            }
        }
        if let Some(w) = &v.writes_after_commit {
            any = true;
            table(
                page,
                "Writes after the commit",
                &[
                    ("Count", count(w.count)),
                    ("Namespaces", w.namespaces.join(", ")),
                ],
            );
        }
        if let Some(m) = &v.moves {
            any = true;
            table(
                page,
                "Move",
                &[
                    ("Passes", count(m.pass)),
                    ("Verified at the destination", count(m.verified)),
                    ("Deleted from the source", count(m.deleted)),
                    ("Kept (changed after their copy)", count(m.changed)),
                    ("Gone (deleted by another client)", count(m.gone)),
                    ("Conflicts", count(m.conflicts)),
                    ("Left at the source", count(m.left)),
                    ("Rehearsal", if m.rehearsal { "yes" } else { "no" }.into()),
                ],
            );
        }
        if let Some(r) = &v.reconcile {
            any = true;
            table(
                page,
                "Reconcile",
                &[
                    ("Compared", count(r.compared)),
                    ("Equal", count(r.equal)),
                    ("Missing at the destination", count(r.missing)),
                    ("Different", count(r.different)),
                    ("Extra at the destination", count(r.extra)),
                    ("Written", count(r.written)),
                    ("Deleted", count(r.deleted)),
                    ("Extras kept", count(r.kept_extra())),
                ],
            );
        }
        if !any {
            page.push_str("<p class=\"note\">This job has no verification to report.</p>");
        }
        page.push_str("</section>\n");
    }

    fn dead_letters_html(&self, page: &mut String) {
        page.push_str("<section id=\"report-dead-letters\"><h2>Dead letters</h2>");
        match &self.dead_letters {
            Some(d) if d.count > 0 => {
                let _ = write!(
                    page,
                    "<p><strong>{}</strong> documents refused by the destination; the latest:</p>\
                     <table><thead><tr><th>Namespace</th><th>_id</th><th>Reason</th></tr>\
                     </thead><tbody>",
                    escape(&count(d.count))
                );
                for letter in &d.recent {
                    let _ = write!(
                        page,
                        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                        escape(&letter.ns),
                        escape(&letter.id.to_string()),
                        escape(&letter.reason)
                    );
                }
                page.push_str("</tbody></table>");
            }
            _ => page.push_str("<p class=\"note\">None: the destination refused nothing.</p>"),
        }
        page.push_str("</section>\n");
    }

    fn nodes_html(&self, page: &mut String) {
        if self.nodes.is_empty() {
            return;
        }
        page.push_str(
            "<section id=\"report-nodes\"><h2>Service nodes</h2><table><thead><tr>\
             <th>Node</th><th>Role</th><th>State</th><th>Documents</th><th>Bytes</th>\
             <th>Workers</th></tr></thead><tbody>",
        );
        for n in &self.nodes {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&n.node),
                escape(&format!("{:?}", n.role).to_lowercase()),
                n.state,
                escape(&count(n.docs)),
                escape(&human_bytes(n.bytes)),
                n.workers
            );
        }
        page.push_str("</tbody></table></section>\n");
    }

    fn namespaces_html(&self, page: &mut String) {
        if self.namespaces.is_empty() {
            return;
        }
        page.push_str(
            "<section id=\"report-namespaces\"><h2>Namespaces</h2><table><thead><tr>\
             <th>Source</th><th>Destination</th><th>Documents</th><th>Bytes</th>\
             <th>Skipped</th><th>Failed</th><th>Finished</th></tr></thead><tbody>",
        );
        for n in &self.namespaces {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                escape(&n.source),
                escape(&n.destination),
                escape(&count(n.docs)),
                escape(&human_bytes(n.bytes)),
                escape(&count(n.skipped)),
                escape(&count(n.failed)),
                if n.finished { "yes" } else { "no" }
            );
        }
        page.push_str("</tbody></table></section>\n");
    }
}

fn verification_of(progress: &JobSnapshot) -> Verification {
    let sync = progress.sync.as_ref();
    Verification {
        sync: sync.and_then(|s| s.verification.clone()),
        writes_after_commit: sync.and_then(|s| s.writes_after_commit.clone()),
        moves: progress.moves.clone(),
        reconcile: progress.reconcile.clone(),
    }
}

fn mode_name(spec: &JobSpec) -> &'static str {
    match spec.mode.unwrap_or_default() {
        crate::spec::Mode::Copy => "copy",
        crate::spec::Mode::Sync => "sync",
        crate::spec::Mode::Move => "move",
        crate::spec::Mode::Reconcile => "reconcile",
    }
}

/// A two-column table under a heading.
fn table(page: &mut String, heading: &str, rows: &[(&str, String)]) {
    let _ = write!(
        page,
        "<h3>{}</h3><table class=\"pairs\"><tbody>",
        escape(heading)
    );
    for (name, value) in rows {
        let _ = write!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(value)
        );
    }
    page.push_str("</tbody></table>");
}

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // So that no URL in data reads as a reference, even to a careless scanner.
            '/' => out.push_str("&#47;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` as `1,234,567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3725.4` seconds as `1h 2m 5s`.
fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "—".into();
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let total = secs.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// Unix seconds as `2026-12-07 14:53:15 UTC`.
fn clock(unix: f64) -> String {
    if !unix.is_finite() {
        return "—".into();
    }
    let secs = unix.floor() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Unix seconds as `14:53:15` (UTC), for a chart's time axis.
fn time_of_day(unix: f64) -> String {
    let rest = (unix.floor() as i64).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60)
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The unit of a series, by its name.
fn unit_of(name: &str) -> &'static str {
    match name {
        n if n.ends_with("docs_per_sec") => "documents/s",
        n if n.ends_with("bytes_per_sec") => "bytes/s",
        n if n.ends_with("events_per_sec") => "events/s",
        n if n.ends_with("deletes_per_sec") => "deletes/s",
        n if n.ends_with("_ms") => "ms",
        n if n.ends_with("_secs") => "s",
        "workers" => "workers",
        "rate_limit" => "documents/s",
        "held" => "1 = held by the load guard",
        _ => "",
    }
}

/// A chart's drawing area, in SVG units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A round upper bound for a y axis whose largest value is `max`, and its tick step (at most
/// five steps up to it).
fn nice_scale(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil().max(1.0) * step, step)
}

/// A y tick's label: short, without needless decimals.
fn tick_label(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e9 {
        format!("{:.1}G", value / 1e9)
    } else if abs >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if abs >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// One series as an inline SVG line chart (`held`: shaded bands and a step line), in a
/// `<figure>`: time along x with clock labels (UTC), y from 0 with labelled ticks, the name and
/// unit as its caption. `None` when the series has no (finite) point.
pub fn svg_chart(name: &str, points: &[[f64; 2]]) -> Option<String> {
    let mut points: Vec<[f64; 2]> = points
        .iter()
        .copied()
        .filter(|[t, v]| t.is_finite() && v.is_finite())
        .collect();
    if points.is_empty() {
        return None;
    }
    points.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let held = name == "held";
    let (mut t0, mut t1) = (points[0][0], points[points.len() - 1][0]);
    // One moment: a minute around it; a few seconds: ten seconds, so the clock ticks differ.
    if t1 <= t0 {
        t0 -= 30.0;
        t1 = t0 + 60.0;
    } else if t1 - t0 < 10.0 {
        t1 = t0 + 10.0;
    }
    let max = points.iter().map(|p| p[1]).fold(0.0, f64::max);
    let (top, step) = if held { (1.0, 1.0) } else { nice_scale(max) };
    let frame = Frame { t0, t1, top };
    let unit = unit_of(name);
    let id = format!(
        "chart-{}",
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    );
    let mut svg = String::new();
    let last = points[points.len() - 1][1];
    let _ = write!(
        svg,
        "<figure class=\"chart\" id=\"{id}\" data-series=\"{name}\">\
         <figcaption><strong>{name}</strong> <span class=\"unit\">{unit}</span> \
         <span class=\"last\">last {last} · max {max} · {n} point{plural}</span></figcaption>\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         role=\"img\" aria-label=\"{name} over time\">",
        id = escape(&id),
        name = escape(name),
        unit = escape(unit),
        last = escape(&tick_label(last)),
        max = escape(&tick_label(max)),
        n = points.len(),
        plural = if points.len() == 1 { "" } else { "s" },
    );
    frame.axes(&mut svg, step, held);
    match (held, points.len()) {
        (true, _) => frame.held(&mut svg, &points),
        (false, 1) => {
            let [t, v] = points[0];
            let _ = write!(
                svg,
                "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>",
                frame.x(t),
                frame.y(v)
            );
        }
        (false, _) => {
            let line: Vec<String> = points
                .iter()
                .map(|[t, v]| format!("{:.1},{:.1}", frame.x(*t), frame.y(*v)))
                .collect();
            let _ = write!(
                svg,
                "<polyline class=\"line\" points=\"{}\"/>",
                line.join(" ")
            );
        }
    }
    svg.push_str("</svg></figure>");
    Some(svg)
}

/// Where a chart's values land: times `t0..t1` across the plot, values `0..top` up it.
struct Frame {
    t0: f64,
    t1: f64,
    top: f64,
}

impl Frame {
    const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
    const PLOT_HEIGHT: f64 = HEIGHT - TOP - BOTTOM;

    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.t0) / (self.t1 - self.t0) * Frame::PLOT_WIDTH
    }

    fn y(&self, v: f64) -> f64 {
        TOP + Frame::PLOT_HEIGHT - (v.max(0.0) / self.top).min(1.0) * Frame::PLOT_HEIGHT
    }

    /// The y axis (0 and a tick every `step` up to the top; `held`: free and held), five clock
    /// labels along the time axis, and the two axis lines.
    fn axes(&self, svg: &mut String, step: f64, held: bool) {
        let ticks = (self.top / step).round() as usize;
        for i in 0..=ticks {
            let v = step * i as f64;
            let label = match held {
                true if i == 1 => "held".to_string(),
                true => "free".to_string(),
                false => tick_label(v),
            };
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
                 <text class=\"tick\" x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
                x2 = WIDTH - RIGHT,
                yy = self.y(v),
                tx = LEFT - 6.0,
                ty = self.y(v) + 4.0,
                label = escape(&label),
            );
        }
        for i in 0..5 {
            let t = self.t0 + (self.t1 - self.t0) * i as f64 / 4.0;
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let _ = write!(
                svg,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                self.x(t),
                HEIGHT - 8.0,
                escape(&time_of_day(t))
            );
        }
        let _ = write!(
            svg,
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{b}\"/>\
             <line class=\"axis\" x1=\"{LEFT}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\"/>",
            b = TOP + Frame::PLOT_HEIGHT,
            r = WIDTH - RIGHT,
        );
    }

    /// Shaded bands where the job was held, and the step line over them.
    fn held(&self, svg: &mut String, points: &[[f64; 2]]) {
        for (i, [t, v]) in points.iter().enumerate() {
            if *v > 0.0 {
                let end = points.get(i + 1).map_or(*t + 1.0, |p| p[0]).min(self.t1);
                let _ = write!(
                    svg,
                    "<rect class=\"held\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{h}\"/>",
                    self.x(*t),
                    (self.x(end) - self.x(*t)).max(1.0),
                    h = Frame::PLOT_HEIGHT,
                );
            }
        }
        let mut path = String::new();
        for (i, [t, v]) in points.iter().enumerate() {
            let v = if *v > 0.0 { 1.0 } else { 0.0 };
            let _ = match i {
                0 => write!(path, "M{:.1},{:.1}", self.x(*t), self.y(v)),
                _ => write!(path, " H{:.1} V{:.1}", self.x(*t), self.y(v)),
            };
        }
        let _ = write!(svg, "<path class=\"line\" d=\"{path}\"/>");
    }
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:980px;
color:#1d2430;background:#fff;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;
padding-bottom:4px}h3{font-size:14px;margin:16px 0 6px}
.note{color:#5b6576}.error{color:#a3261b;background:#fdf0ee;padding:6px 10px;border-radius:4px}
.state{padding:1px 6px;border-radius:3px;background:#e8ecf2}.state-completed{background:#dcf3e3}
.state-failed,.state-cancelled{background:#fbe1de}.state-interrupted{background:#fdf1d6}
dl.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:8px;margin:0}
.figure{border:1px solid #dde2ea;border-radius:6px;padding:8px 10px}.figure dt{color:#5b6576;font-size:12px}
.figure dd{margin:2px 0 0;font-size:17px;font-weight:600}
table{border-collapse:collapse;width:100%;margin:4px 0 8px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #eef1f5;vertical-align:top}thead th{color:#5b6576;font-weight:600}
table.pairs th{width:40%;font-weight:normal;color:#5b6576}
tr.tl-phase td{color:#3b5b8c}pre{background:#f5f7fa;padding:10px;border-radius:6px;overflow:auto}
figure.chart{margin:12px 0}figure.chart svg{max-width:100%;height:auto;display:block}
figcaption .unit,figcaption .last{color:#5b6576;margin-left:6px}
svg .grid{stroke:#eef1f5}svg .axis{stroke:#9aa4b2}svg .tick{font-size:10px;fill:#5b6576}
svg .line{fill:none;stroke:#2f6fd6;stroke-width:1.6}svg .point{fill:#2f6fd6}
svg rect.held{fill:#f4b400;opacity:.25}
@media print{body{margin:0;max-width:none}}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;&#47;script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn report_chart_of_an_empty_series_is_none() {
        assert!(svg_chart("docs_per_sec", &[]).is_none());
        assert!(svg_chart("docs_per_sec", &[[f64::NAN, 1.0], [1.0, f64::INFINITY]]).is_none());
    }

    #[test]
    fn report_chart_of_one_point_is_a_dot() {
        let svg = svg_chart("docs_per_sec", &[[1_765_119_600.0, 40.0]]).unwrap();
        assert!(svg.contains("<circle"), "{svg}");
        assert!(!svg.contains("<polyline"), "{svg}");
        // Clock labels in UTC, the unit, y from 0.
        assert!(svg.contains("15:00:00"), "{svg}");
        assert!(svg.contains("documents&#47;s"), "{svg}");
        assert!(svg.contains(">0</text>"), "{svg}");
    }

    #[test]
    fn report_chart_of_many_points_is_a_line_with_ticks() {
        let points: Vec<[f64; 2]> = (0..120)
            .map(|i| [1_765_119_600.0 + i as f64, (i * 10) as f64])
            .collect();
        let svg = svg_chart("bytes_per_sec", &points).unwrap();
        let line = svg.split("points=\"").nth(1).unwrap();
        let line = &line[..line.find('"').unwrap()];
        assert_eq!(line.split(' ').count(), 120);
        // Every point inside the drawing area.
        for p in line.split(' ') {
            let (px, py) = p.split_once(',').unwrap();
            let (px, py): (f64, f64) = (px.parse().unwrap(), py.parse().unwrap());
            assert!((LEFT..=WIDTH - RIGHT).contains(&px), "{p}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&py), "{p}");
        }
        // y ticks: 0 up to a round top at or above the max (1190).
        assert!(
            svg.contains(">0</text>") && svg.contains(">1250</text>"),
            "{svg}"
        );
        assert!(
            svg.contains("15:00:00") && svg.contains("15:01:59"),
            "{svg}"
        );
        assert!(!svg.contains("http"), "no namespace or other reference");
    }

    #[test]
    fn report_chart_of_held_has_bands_and_a_step_line() {
        let points = [[100.0, 0.0], [110.0, 1.0], [120.0, 1.0], [130.0, 0.0]];
        let svg = svg_chart("held", &points).unwrap();
        assert_eq!(svg.matches("<rect class=\"held\"").count(), 2, "{svg}");
        assert!(svg.contains("<path class=\"line\" d=\"M"), "{svg}");
    }

    #[test]
    fn report_chart_escapes_its_name() {
        let svg = svg_chart("<script>x</script>", &[[1.0, 1.0], [2.0, 2.0]]).unwrap();
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
    }

    /// A finished job of the history, with markup planted wherever data reaches the page.
    fn planted() -> Job {
        let record = serde_json::json!({
            "id": 7,
            "spec": {
                "from": "mongodb://h1/?appName=<script>alert(1)</script>",
                "to": "mongodb://h2/",
                "namespaces": ["db.<script>x</script>:db2.c"],
            },
            "state": "failed",
            "workers": 2,
            "created_at": 1_765_119_600.0,
            "finished_at": 1_765_119_660.0,
            "error": "<script>alert('error')</script> at https://example.com/x",
            "docs": 10, "bytes": 2048, "skipped": 1, "failed": 1,
            "timeline": [
                {"at": 1_765_119_600.0, "kind": "state", "name": "pending"},
                {"at": 1_765_119_601.0, "kind": "state", "name": "running"},
                {"at": 1_765_119_602.0, "kind": "phase", "name": "<img src=x onerror=alert(1)>"},
                {"at": 1_765_119_660.0, "kind": "state", "name": "failed"},
            ],
            "dead_letters": {"count": 1, "recent": [
                {"ns": "db.<b>c</b>", "id": {"$oid": "<script>"}, "reason": "<script>why</script>"}
            ]},
        });
        Job::restored(serde_json::from_value(record).expect("a record"))
    }

    #[test]
    fn report_escapes_every_string_from_data() {
        let mut series = SeriesPoints::new();
        series.insert("<script>s</script>".into(), vec![[1.0, 1.0], [2.0, 3.0]]);
        let report = Report::of(&planted(), series);
        let html = report.html();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;error&#39;)"),
            "{html}"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
        // Planted markup stays text (`&lt;img src=x …`): no element, no attribute.
        assert!(
            !html.contains("<link") && !html.contains(" src=\""),
            "{html}"
        );
        for id in [
            "report-figures",
            "report-timeline",
            "report-charts",
            "report-dead-letters",
            "report-verification",
            "report-spec",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        // The restored job's figures and timeline.
        assert_eq!(report.figures.docs, 10);
        assert_eq!(report.figures.failed, 1);
        assert_eq!(report.figures.duration_secs, 60.0);
        assert_eq!(report.timeline.len(), 4);
        assert_eq!(report.dead_letters.as_ref().unwrap().count, 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["timeline"][1]["name"], "running");
        assert_eq!(json["series"]["<script>s</script>"][1][1], 3.0);
    }

    #[test]
    fn report_nice_scale_and_clock() {
        assert_eq!(nice_scale(1190.0), (1250.0, 250.0));
        assert_eq!(nice_scale(40.0), (40.0, 10.0));
        assert_eq!(nice_scale(0.0), (1.0, 0.25));
        assert_eq!(nice_scale(4.0), (4.0, 1.0));
        assert_eq!(clock(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(clock(1_765_119_600.0), "2025-12-07 15:00:00 UTC");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(duration(3725.0), "1h 2m 5s");
    }
}
