//! A job's report (`GET /api/jobs/{id}/report`, `mongoferry report`) as an operator meets it: a
//! real service, a real copy on the test servers, a restart, and the binary reading the history.

mod common;

use std::time::Duration;

use common::service::Service;
use common::*;
use serde_json::{json, Value};

const PASSWORD: &str = "Report-s3cret-pw";

/// What must be the same in every report of one finished job.
fn lasting(report: &Value) -> Value {
    json!({
        "id": report["id"],
        "state": report["state"],
        "figures": {
            "docs": report["figures"]["docs"],
            "bytes": report["figures"]["bytes"],
            "skipped": report["figures"]["skipped"],
            "failed": report["figures"]["failed"],
            "expected": report["figures"]["expected"],
            "retries": report["figures"]["retries"],
            "duration_secs": report["figures"]["duration_secs"],
            "run_secs": report["figures"]["run_secs"],
            "average_docs_per_sec": report["figures"]["average_docs_per_sec"],
        },
        "timeline": report["timeline"],
        "namespaces": report["namespaces"],
        "spec": report["spec"],
        "series": report["series"],
    })
}

/// The HTML page needs nothing from the network and quotes no secret.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(!html.contains(PASSWORD), "the password in the page");
    for banned in [
        "http://", "https://", "<script", "<link", "src=", "@import", "url(",
    ] {
        assert!(!html.contains(banned), "{banned} in the page: {html}");
    }
    for id in [
        "report-figures",
        "report-timeline",
        "report-charts",
        "report-spec",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "#{id} missing");
    }
}

async fn report_json(service: &Service, id: &Value) -> Value {
    let (status, report) = service
        .get(&format!("/api/jobs/{id}/report?format=json"))
        .await;
    assert_eq!(status, 200, "{report}");
    report
}

async fn report_html(service: &Service, id: &Value) -> String {
    let response = service
        .request(reqwest::Method::GET, &format!("/api/jobs/{id}/report"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        header("content-security-policy"),
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    );
    response.text().await.unwrap()
}

#[test]
fn a_finished_jobs_report_is_self_contained_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("jobs.json");
    let env = TestEnv::start();
    let (s, d) = (env.src_db("report"), env.dst_db("report"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let service = Service::start(&state);
    let (id, before) = runtime.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let (from, to) = with_user(&env, "reporter", PASSWORD).await;
            insert_raw(&env.src_client().await, &s, "c", &sample_docs(3_000, 256)).await;
            let body = json!({
                "from": from, "to": to,
                "namespaces": [format!("{s}.c:{d}.c")], "workers": 2, "batch_size": 100
            });
            let (status, job) = service.post("/api/jobs", body).await;
            assert_eq!(status, 202, "{job}");
            let id = job["id"].clone();
            service
                .wait_for(&id, "completed", |j| j["state"] == "completed")
                .await;

            let report = report_json(&service, &id).await;
            assert!(!report.to_string().contains(PASSWORD), "{report}");
            assert_eq!(report["state"], "completed");
            assert_eq!(report["mode"], "copy");
            assert_eq!(report["figures"]["docs"], 3_000, "{report}");
            assert_eq!(report["figures"]["failed"], 0);
            assert!(
                report["figures"]["bytes"].as_u64().unwrap() >= 3_000 * 200,
                "{report}"
            );
            assert_eq!(report["namespaces"][0]["docs"], 3_000, "{report}");
            // The spec, redacted: the user may show, the password never.
            let from = report["spec"]["from"].as_str().unwrap();
            assert!(from.starts_with("mongodb://"), "{report}");
            // The timeline: pending, running, completed, in order of time.
            let timeline = report["timeline"].as_array().unwrap();
            let at = |name: &str| {
                timeline
                    .iter()
                    .find(|e| e["kind"] == "state" && e["name"] == name)
                    .unwrap_or_else(|| panic!("no {name} in {timeline:?}"))["at"]
                    .as_f64()
                    .unwrap()
            };
            assert!(at("pending") <= at("running"), "{timeline:?}");
            assert!(at("running") < at("completed"), "{timeline:?}");
            let times: Vec<f64> = timeline.iter().map(|e| e["at"].as_f64().unwrap()).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

            // Its charts: the series the run was sampled into, from its start to its end.
            let docs_per_sec = report["series"]["docs_per_sec"].as_array().unwrap();
            assert!(docs_per_sec.len() >= 2, "{report}");

            let html = report_html(&service, &id).await;
            assert_self_contained(&html);
            assert!(html.contains("3,000"), "the documents copied: {html}");
            assert!(html.contains("<svg"), "a chart of its series: {html}");
            assert!(html.contains(">completed<"), "{html}");

            // Unknown format, unknown job.
            let (status, error) = service
                .get(&format!("/api/jobs/{id}/report?format=pdf"))
                .await;
            assert_eq!(status, 400, "{error}");
            let (status, error) = service.get("/api/jobs/999/report").await;
            assert_eq!(status, 404, "{error}");
            (id, report)
        })
        .await
        .expect("bounded")
    });
    assert!(service.stop(), "clean exit");
    let history = std::fs::read_to_string(&state).unwrap();
    assert!(!history.contains(PASSWORD), "the password in the history");
    assert!(history.contains("\"timeline\""), "{history}");

    // After a restart: the same report from the history.
    let service = Service::start(&state);
    runtime.block_on(async {
        let after = report_json(&service, &id).await;
        assert_eq!(lasting(&after), lasting(&before));
        // The restored job's view shows its whole final progress, not only its counts.
        let job = service.job(&id).await;
        assert_eq!(job["progress"]["namespaces"][0]["docs"], 3_000, "{job}");
        assert_self_contained(&report_html(&service, &id).await);
    });
    assert!(service.stop());

    // The command line reads the same history.
    let id_text = id.to_string();
    let state_text = state.display().to_string();
    let out = mongoferry(
        &[
            "report",
            "--state",
            &state_text,
            &id_text,
            "--format",
            "json",
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let cli: Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    assert_eq!(lasting(&cli), lasting(&before));

    let page = dir.path().join("report.html");
    let out = mongoferry(
        &[
            "report",
            "--state",
            &state_text,
            &id_text,
            "--out",
            page.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("3,000"));

    // An unknown job, a missing history: a clear error, status 2.
    let out = mongoferry(
        &["report", "--state", &state_text, "999"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("job 999 is not in the job history"),
        "{}",
        stderr(&out)
    );
    let missing = dir.path().join("none.json");
    let out = mongoferry(
        &["report", "--state", missing.to_str().unwrap(), "1"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no job history"), "{}", stderr(&out));
    drop(env);
}

/// With a MongoDB state (several service nodes), the command line reads the shared history.
#[test]
fn the_command_line_reports_a_job_of_a_shared_history() {
    use common::service::Serve;
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("report");
        let service = Serve::with_state(std::path::Path::new(&state)).start();
        let (s, d) = (env.src_db("shared_report"), env.dst_db("shared_report"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(1_000, 128)).await;
        let body =
            json!({ "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")] });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service
            .wait_for(&id, "completed", |j| j["state"] == "completed")
            .await;
        let api = report_json(&service, &id).await;
        assert_eq!(api["figures"]["docs"], 1_000, "{api}");
        let id_text = id.to_string();
        // The node writes its job's record (and final view) on its next beat.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let cli = loop {
            let out = mongoferry_async(
                ["report", "--state", &state, &id_text, "--format", "json"]
                    .map(String::from)
                    .to_vec(),
                Duration::from_secs(30),
            )
            .await;
            if out.status.success() {
                let cli: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
                if cli["state"] == "completed" {
                    break cli;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no completed report: {}",
                stderr(&out)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(cli["figures"]["docs"], 1_000, "{cli}");
        assert_eq!(cli["timeline"], api["timeline"], "{cli}");
        let out = mongoferry_async(
            ["report", "--state", &state, "999"]
                .map(String::from)
                .to_vec(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        drop(service);
    });
}
