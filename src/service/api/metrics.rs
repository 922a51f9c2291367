//! `GET /metrics`: the jobs' counters in the Prometheus text format.
//!
//! In: the job manager's jobs and their stats. Out: documents and bytes copied per job and
//! namespace, failed jobs, queue batches pushed and popped, batch latency histograms, workers and
//! the state of each job, a sync job's lag and changes applied by type, documents refused (dead
//! letters), and the service nodes alive on a shared state. Labels are a small fixed
//! set: `job`, `namespace`, `state`, `le`, `type`, `kind`, and the load guard's `reason` and
//! `signal`; a move job's documents verified, deleted and kept. Notifications (`--notify-url`)
//! sent, retried and dropped, by `receiver` (its position among the URLs, never the URL) and
//! drop `reason`.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::engine::stats::{Histogram, JobStats, LATENCY_BUCKETS};
use crate::service::job::{JobState, JobView};
use crate::service::manager::JobManager;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP mongoferry_{name} {help}");
    let _ = writeln!(out, "# TYPE mongoferry_{name} {kind}");
}

fn histogram(out: &mut String, name: &str, job: &str, h: &Histogram) {
    let (buckets, count, sum) = h.snapshot();
    for (le, n) in LATENCY_BUCKETS.iter().zip(&buckets) {
        let _ = writeln!(
            out,
            "mongoferry_{name}_bucket{{job=\"{job}\",le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "mongoferry_{name}_bucket{{job=\"{job}\",le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "mongoferry_{name}_sum{{job=\"{job}\"}} {sum}");
    let _ = writeln!(out, "mongoferry_{name}_count{{job=\"{job}\"}} {count}");
}

/// The counters of this service's runs in the Prometheus text format. With several service
/// nodes on one state, each node's cover the jobs it runs and its share of the jobs it helps
/// with, so that their sum counts every document once.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn render(State(manager): State<Arc<JobManager>>) -> Response {
    let jobs = manager.runs_here();
    let views: Vec<_> = jobs.iter().map(|j| j.view()).collect();
    let live: Vec<_> = jobs
        .iter()
        .filter_map(|j| j.stats().map(|s| (j.id.to_string(), s)))
        .collect();
    let mut out = String::new();
    documents(&mut out, &views);
    job_states(&mut out, &views);
    limits(&mut out, &views, &manager);
    load_guard(&mut out, &views);
    sync_and_move(&mut out, &views);
    queue(&mut out, &live);
    nodes(&mut out, &manager);
    notifications(&mut out, &manager);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Documents and bytes written, and documents refused (dead letters), per job and namespace.
fn documents(out: &mut String, views: &[JobView]) {
    family(
        out,
        "docs_copied_total",
        "counter",
        "Documents written to the destination.",
    );
    for view in views {
        for ns in view.progress.iter().flat_map(|p| &p.namespaces) {
            let _ = writeln!(
                out,
                "mongoferry_docs_copied_total{{job=\"{}\",namespace=\"{}\"}} {}",
                view.id,
                escape(&ns.source.to_string()),
                ns.docs
            );
        }
    }
    family(
        out,
        "bytes_copied_total",
        "counter",
        "Bytes of documents written to the destination.",
    );
    for view in views {
        for ns in view.progress.iter().flat_map(|p| &p.namespaces) {
            let _ = writeln!(
                out,
                "mongoferry_bytes_copied_total{{job=\"{}\",namespace=\"{}\"}} {}",
                view.id,
                escape(&ns.source.to_string()),
                ns.bytes
            );
        }
    }
    family(
        out,
        "dead_letters_total",
        "counter",
        "Documents the destination refused, kept as dead letters.",
    );
    for view in views {
        for ns in view.progress.iter().flat_map(|p| &p.namespaces) {
            let _ = writeln!(
                out,
                "mongoferry_dead_letters_total{{job=\"{}\",namespace=\"{}\"}} {}",
                view.id,
                escape(&ns.source.to_string()),
                ns.failed
            );
        }
    }
}

/// Each job's failure, state and workers.
fn job_states(out: &mut String, views: &[JobView]) {
    family(
        out,
        "job_errors_total",
        "counter",
        "Errors that failed the job.",
    );
    for view in views {
        let failed = u8::from(view.state == JobState::Failed);
        let _ = writeln!(
            out,
            "mongoferry_job_errors_total{{job=\"{}\"}} {failed}",
            view.id
        );
    }
    family(out, "job_state", "gauge", "1 for the state the job is in.");
    for view in views {
        let state = view.state;
        let _ = writeln!(
            out,
            "mongoferry_job_state{{job=\"{}\",state=\"{state}\"}} 1",
            view.id
        );
    }
    family(out, "job_workers", "gauge", "Workers wanted for the job.");
    for view in views {
        let _ = writeln!(
            out,
            "mongoferry_job_workers{{job=\"{}\"}} {}",
            view.id, view.workers
        );
    }
}

/// The rate limits in force: each job's, the global one, adaptive mode's cap.
fn limits(out: &mut String, views: &[JobView], manager: &JobManager) {
    family(
        out,
        "job_rate_limit",
        "gauge",
        "The job's limit in documents per second (absent: none).",
    );
    for view in views {
        if let Some(rate) = view.limits.rate {
            let _ = writeln!(
                out,
                "mongoferry_job_rate_limit{{job=\"{}\"}} {rate}",
                view.id
            );
        }
    }
    family(
        out,
        "global_rate_limit",
        "gauge",
        "The limit all jobs share, documents per second (absent: none).",
    );
    if let Some(rate) = manager.global_limits().rate {
        let _ = writeln!(out, "mongoferry_global_rate_limit {rate}");
    }
    family(
        out,
        "adaptive_rate_cap",
        "gauge",
        "Adaptive mode's current cap in documents per second (absent: none).",
    );
    for view in views {
        let cap = view
            .adaptive
            .as_ref()
            .and_then(|a| a.decisions.last()?.rate_cap);
        if let Some(cap) = cap {
            let _ = writeln!(
                out,
                "mongoferry_adaptive_rate_cap{{job=\"{}\"}} {cap}",
                view.id
            );
        }
    }
}

/// Each job's load guard: whether it holds the job and why, and the signals it read last.
fn load_guard(out: &mut String, views: &[JobView]) {
    let guards: Vec<_> = views
        .iter()
        .filter_map(|v| Some((v.id, v.load_guard.as_ref()?)))
        .collect();
    family(
        out,
        "throttled",
        "gauge",
        "1 while the job's load guard holds it, with the reason; 0 (reason \"\") when free.",
    );
    for (job, guard) in &guards {
        let reason = match guard.throttled {
            true => guard.reason.as_deref().unwrap_or(""),
            false => "",
        };
        let _ = writeln!(
            out,
            "mongoferry_throttled{{job=\"{job}\",reason=\"{}\"}} {}",
            escape(reason),
            u8::from(guard.throttled)
        );
    }
    family(
        out,
        "guard_signal",
        "gauge",
        "The last value of each signal the job's load guard reads (lag in ms, serverStatus values).",
    );
    for (job, guard) in &guards {
        for (signal, value) in &guard.signals {
            let _ = writeln!(
                out,
                "mongoferry_guard_signal{{job=\"{job}\",signal=\"{}\"}} {value}",
                escape(signal)
            );
        }
    }
    family(
        out,
        "oplog_headroom_seconds",
        "gauge",
        "A sync: how much older than its saved position the source's oldest oplog entry may get before the position is lost.",
    );
    for (job, guard) in &guards {
        if let Some(headroom) = guard.signals.get("oplog_headroom_secs") {
            let _ = writeln!(
                out,
                "mongoferry_oplog_headroom_seconds{{job=\"{job}\"}} {headroom}"
            );
        }
    }
}

/// What a sync job applied and how far behind it is; what a move job verified and deleted;
/// what a reconcile compared and wrote.
fn sync_and_move(out: &mut String, views: &[JobView]) {
    family(
        out,
        "sync_lag_seconds",
        "gauge",
        "A sync job's lag: now minus the cluster time of the last change applied (0 when level).",
    );
    for view in views {
        if let Some(sync) = view.progress.as_ref().and_then(|p| p.sync.as_ref()) {
            let _ = writeln!(
                out,
                "mongoferry_sync_lag_seconds{{job=\"{}\"}} {}",
                view.id, sync.lag_secs
            );
        }
    }
    family(
        out,
        "sync_events_total",
        "counter",
        "Changes of the source a sync job applied, by type.",
    );
    for view in views {
        if let Some(sync) = view.progress.as_ref().and_then(|p| p.sync.as_ref()) {
            let a = &sync.applied;
            for (kind, n) in [
                ("insert", a.insert),
                ("update", a.update),
                ("replace", a.replace),
                ("delete", a.delete),
                ("ddl", a.ddl),
            ] {
                let _ = writeln!(
                    out,
                    "mongoferry_sync_events_total{{job=\"{}\",type=\"{kind}\"}} {n}",
                    view.id
                );
            }
        }
    }
    verification(out, views);
    family(
        out,
        "move_documents_total",
        "counter",
        "A move job's documents: verified at the destination, deleted from the source, kept there because they changed.",
    );
    for view in views {
        if let Some(moves) = view.progress.as_ref().and_then(|p| p.moves.as_ref()) {
            for (kind, n) in [
                ("verified", moves.verified),
                ("deleted", moves.deleted),
                ("changed", moves.changed),
            ] {
                let _ = writeln!(
                    out,
                    "mongoferry_move_documents_total{{job=\"{}\",kind=\"{kind}\"}} {n}",
                    view.id
                );
            }
        }
    }
    family(
        out,
        "reconcile_documents_total",
        "counter",
        "A reconcile's documents (a reconcile job's, or a sync's after lost history): compared, equal, written, deleted; found missing, different, extra.",
    );
    for view in views {
        if let Some(r) = view.progress.as_ref().and_then(|p| p.reconcile.as_ref()) {
            for (kind, n) in [
                ("compared", r.compared),
                ("equal", r.equal),
                ("written", r.written),
                ("deleted", r.deleted),
                ("missing", r.missing),
                ("different", r.different),
                ("extra", r.extra),
            ] {
                let _ = writeln!(
                    out,
                    "mongoferry_reconcile_documents_total{{job=\"{}\",kind=\"{kind}\"}} {n}",
                    view.id
                );
            }
        }
    }
}

/// A sync's continuous verification: documents compared, mismatches, repairs, what waits to be
/// compared again, whether it can commit.
fn verification(out: &mut String, views: &[JobView]) {
    let verifying: Vec<_> = views
        .iter()
        .filter_map(|view| {
            let sync = view.progress.as_ref()?.sync.as_ref()?;
            Some((view.id, sync))
        })
        .collect();
    family(
        out,
        "sync_can_commit",
        "gauge",
        "1 when a sync job is ready for its cutover (its view's can_commit says why not).",
    );
    for (id, sync) in &verifying {
        let ok = u8::from(sync.can_commit.ok);
        let _ = writeln!(out, "mongoferry_sync_can_commit{{job=\"{id}\"}} {ok}");
    }
    family(
        out,
        "sync_verification_documents_total",
        "counter",
        "A sync job's continuous verification: documents compared, mismatches found, repaired.",
    );
    for (id, sync) in &verifying {
        let Some(v) = &sync.verification else {
            continue;
        };
        for (kind, n) in [
            ("verified", v.verified_docs),
            ("mismatched", v.mismatches),
            ("repaired", v.repaired),
        ] {
            let _ = writeln!(
                out,
                "mongoferry_sync_verification_documents_total{{job=\"{id}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    family(
        out,
        "sync_verification_recheck_pending",
        "gauge",
        "`_id`s a sync job's verification will compare again (changed since compared).",
    );
    for (id, sync) in &verifying {
        if let Some(v) = &sync.verification {
            let _ = writeln!(
                out,
                "mongoferry_sync_verification_recheck_pending{{job=\"{id}\"}} {}",
                v.recheck_pending
            );
        }
    }
}

/// The live runs' queue counters and batch latency histograms.
fn queue(out: &mut String, live: &[(String, Arc<JobStats>)]) {
    family(
        out,
        "queue_batches_pushed_total",
        "counter",
        "Batches the producer put on the queue.",
    );
    for (job, stats) in live {
        let n = stats.batches_queued.load(Relaxed);
        let _ = writeln!(
            out,
            "mongoferry_queue_batches_pushed_total{{job=\"{job}\"}} {n}"
        );
    }
    family(
        out,
        "queue_batches_popped_total",
        "counter",
        "Batches the workers took off the queue.",
    );
    for (job, stats) in live {
        let n = stats.batches_taken.load(Relaxed);
        let _ = writeln!(
            out,
            "mongoferry_queue_batches_popped_total{{job=\"{job}\"}} {n}"
        );
    }
    family(
        out,
        "batch_fetch_seconds",
        "histogram",
        "Time to fetch a batch by _id.",
    );
    for (job, stats) in live {
        histogram(out, "batch_fetch_seconds", job, &stats.fetch_latency);
    }
    family(
        out,
        "batch_write_seconds",
        "histogram",
        "Time to write a batch to the destination.",
    );
    for (job, stats) in live {
        histogram(out, "batch_write_seconds", job, &stats.write_latency);
    }
}

/// The service nodes alive on the service's MongoDB state, as this node's last beat saw them; 1
/// (this node) without a shared state.
fn nodes(out: &mut String, manager: &JobManager) {
    family(
        out,
        "service_nodes",
        "gauge",
        "Service nodes alive on the shared state at this node's last beat, itself included (1 without a shared state).",
    );
    let live = manager.nodes().map_or(1, |nodes| nodes.live().max(1));
    let _ = writeln!(out, "mongoferry_service_nodes {live}");
}

/// Notifications sent, retried and dropped, per receiver (by its position among the
/// `--notify-url`s: a URL may carry secrets).
fn notifications(out: &mut String, manager: &JobManager) {
    let counts = manager.notifier().map(|n| n.counts()).unwrap_or_default();
    family(
        out,
        "notifications_sent_total",
        "counter",
        "Notices of jobs' state changes a receiver (--notify-url, by position) accepted.",
    );
    for c in &counts {
        let _ = writeln!(
            out,
            "mongoferry_notifications_sent_total{{receiver=\"{}\"}} {}",
            c.receiver, c.sent
        );
    }
    family(
        out,
        "notifications_retries_total",
        "counter",
        "Attempts to deliver a notice that failed and were tried again.",
    );
    for c in &counts {
        let _ = writeln!(
            out,
            "mongoferry_notifications_retries_total{{receiver=\"{}\"}} {}",
            c.receiver, c.retries
        );
    }
    family(
        out,
        "notifications_dropped_total",
        "counter",
        "Notices never delivered: its queue was full, its retries ran out (failed), the receiver refused it with a 4xx (refused), or the service stopped.",
    );
    for c in &counts {
        for (reason, n) in c.dropped {
            let _ = writeln!(
                out,
                "mongoferry_notifications_dropped_total{{receiver=\"{}\",reason=\"{reason}\"}} {n}",
                c.receiver
            );
        }
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
