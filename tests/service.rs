//! `mongoferry serve` as a user meets it: a real service process, real HTTP, real test servers.

mod common;

use std::time::{Duration, Instant};

use common::service::Service;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn spec(env: &TestEnv, src: &str, dst: &str) -> Value {
    json!({ "from": env.src, "to": env.dst, "namespaces": [format!("{src}:{dst}")] })
}

fn count(job: &Value) -> u64 {
    job["progress"]["docs"].as_u64().unwrap_or(0)
}

#[test]
fn a_job_runs_to_completion_through_the_api_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("api"), env.dst_db("api"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(5_000, 512)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "workers": 2, "batch_size": 100
        });
        let (status, job) = service.post("/api/jobs", body.clone()).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        assert!(
            matches!(job["state"].as_str(), Some("pending" | "running")),
            "{job}"
        );
        assert_eq!(job["links"]["events"], format!("/api/jobs/{id}/events"));

        // The same spec while the job is active: the same job, nothing new started.
        let (status, again) = service.post("/api/jobs", body).await;
        assert_eq!((status, &again["id"]), (200, &id), "{again}");

        // Follow the event stream to the end.
        let response = service
            .http
            .get(service.url(&format!("/api/jobs/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        let events: Vec<(String, Value)> = text
            .split("\n\n")
            .filter_map(|block| {
                let kind = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((kind.to_string(), serde_json::from_str(data).unwrap()))
            })
            .collect();
        let (last_kind, last) = events.last().expect("some events");
        assert_eq!(last_kind, "state");
        assert_eq!(last["state"], "completed", "{last}");
        assert_eq!(count(last), 5_000);

        let job = service.job(&id).await;
        assert_eq!(job["state"], "completed");
        assert_eq!(job["progress"]["expected"], 5_000);
        assert_eq!(job["progress"]["workers"].as_array().unwrap().len(), 2);
        assert_same(&env, (&s, "c"), (&d, "c")).await;

        // A finished job does not block the same spec: it starts anew.
        let (status, list) = service.get("/api/jobs").await;
        assert_eq!((status, list["jobs"].as_array().unwrap().len()), (200, 1));

        let (status, metrics) = service.get("/metrics").await;
        assert_eq!(status, 200);
        let metrics = metrics.as_str().unwrap().to_string();
        let line = format!("mongoferry_docs_copied_total{{job=\"{id}\",namespace=\"{s}.c\"}} 5000");
        assert!(metrics.contains(&line), "{metrics}");
        assert!(metrics.contains(&format!(
            "mongoferry_job_state{{job=\"{id}\",state=\"completed\"}} 1"
        )));
        assert!(metrics.contains("mongoferry_batch_write_seconds_count"));

        let (status, openapi) = service.get("/api/openapi.json").await;
        assert_eq!(status, 200);
        assert!(openapi["paths"]["/api/jobs/{id}/events"].is_object());
    });
}

#[test]
fn pause_resume_workers_and_cancel_take_effect_live() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("live"), env.dst_db("live"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(30_000, 256)).await;
        // Small `ids` batches are slow on the test server: a job that runs for a while.
        let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["strategy"] = json!("ids");
        body["batch_size"] = json!(20);
        body["workers"] = json!(1);
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service.wait_for(&id, "progress", |j| count(j) > 100).await;

        let (status, paused) = service
            .post(&format!("/api/jobs/{id}/pause"), json!({}))
            .await;
        assert_eq!(
            (status, paused["state"].as_str()),
            (200, Some("paused")),
            "{paused}"
        );
        let job = service
            .wait_for(&id, "workers paused", |j| {
                j["progress"]["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w["state"] == "paused")
            })
            .await;
        let held = count(&job);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            count(&service.job(&id).await),
            held,
            "no progress while paused"
        );

        // More workers while paused; they show in the per-worker stats once resumed.
        let (status, patched) = service
            .patch(&format!("/api/jobs/{id}"), json!({"workers": 3}))
            .await;
        assert_eq!((status, &patched["workers"]), (200, &json!(3)), "{patched}");
        let (status, resumed) = service
            .post(&format!("/api/jobs/{id}/resume"), json!({}))
            .await;
        assert_eq!(
            (status, resumed["state"].as_str()),
            (200, Some("running")),
            "{resumed}"
        );
        service
            .wait_for(&id, "three workers busy", |j| {
                let w = j["progress"]["workers"].as_array().unwrap();
                w.len() == 3 && w.iter().all(|w| w["batches"].as_u64().unwrap() > 0)
            })
            .await;

        let (status, _) = service
            .post(&format!("/api/jobs/{id}/cancel"), json!({}))
            .await;
        assert_eq!(status, 200);
        let job = service
            .wait_for(&id, "cancelled", |j| j["state"] == "cancelled")
            .await;
        assert!(count(&job) < 30_000, "cancelled part way");
        let workers = job["progress"]["workers"].as_array().unwrap();
        assert!(workers.iter().all(|w| w["state"] == "stopped"), "{job}");
        let stopped_at = count(&job);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let at_destination = env
            .dst_client()
            .await
            .database(&d)
            .collection::<mongodb::bson::Document>("c")
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap();
        assert_eq!(
            at_destination, stopped_at,
            "nothing written after the cancel"
        );
        let (status, _) = service
            .post(&format!("/api/jobs/{id}/resume"), json!({}))
            .await;
        assert_eq!(status, 409, "an ended job cannot resume");
    });
}

#[test]
fn two_jobs_at_once_and_history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("jobs.json");
    let service = Service::start(&state);
    let env = TestEnv::start();
    let (s, d) = (env.src_db("two"), env.dst_db("two"));
    let (service, ids) = {
        let mut ids = vec![];
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            tokio::time::timeout(TEST_TIMEOUT, async {
                let src = env.src_client().await;
                insert_raw(&src, &s, "a", &sample_docs(3_000, 256)).await;
                insert_raw(&src, &s, "b", &sample_docs(2_000, 256)).await;
                for c in ["a", "b"] {
                    let (status, job) = service
                        .post(
                            "/api/jobs",
                            spec(&env, &format!("{s}.{c}"), &format!("{d}.{c}")),
                        )
                        .await;
                    assert_eq!(status, 202, "{job}");
                    ids.push(job["id"].clone());
                }
                for id in &ids {
                    service
                        .wait_for(id, "completed", |j| j["state"] == "completed")
                        .await;
                }
                assert_same(&env, (&s, "a"), (&d, "a")).await;
                assert_same(&env, (&s, "b"), (&d, "b")).await;
            })
            .await
            .expect("bounded");
        });
        (service, ids)
    };
    assert!(service.stop(), "clean exit on SIGTERM");

    let service = Service::start(&state);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, list) = service.get("/api/jobs").await;
        assert_eq!(status, 200);
        let jobs = list["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2, "{list}");
        for (job, (id, n)) in jobs.iter().zip(ids.iter().zip([3_000, 2_000])) {
            assert_eq!(&job["id"], id);
            assert_eq!(job["state"], "completed");
            assert_eq!(count(job), n);
        }
        // New jobs continue the numbering.
        let (status, job) = service
            .post(
                "/api/jobs",
                spec(&env, &format!("{s}.a"), &format!("{d}.again")),
            )
            .await;
        assert_eq!(status, 202);
        assert_eq!(job["id"], 3);
    });
    drop(service);
    drop(env);
}

/// Issue 32: a job looked at only after it ended shows its charts from its first second, and a
/// restarted service shows the same.
#[test]
fn a_job_seen_only_after_it_ended_has_its_whole_series_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("jobs.json");
    let service = Service::start(&state);
    let env = TestEnv::start();
    let (s, d) = (env.src_db("series"), env.dst_db("series"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (job, series) = runtime.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let src = env.src_client().await;
            insert_raw(&src, &s, "c", &sample_docs(4_000, 256)).await;
            let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
            body["rate"] = json!(1_000);
            let (status, job) = service.post("/api/jobs", body).await;
            assert_eq!(status, 202, "{job}");
            // Nobody watches it run: the next look is at its end.
            let id = job["id"].clone();
            let job = service
                .wait_for(&id, "completed", |j| j["state"] == "completed")
                .await;
            let (status, series) = service.get(&format!("/api/jobs/{id}/series")).await;
            assert_eq!(status, 200, "{series}");
            (job, series["series"].clone())
        })
        .await
        .expect("bounded")
    });
    let created = job["created_at"].as_f64().unwrap();
    let finished = job["finished_at"].as_f64().unwrap();
    let docs = series["docs_per_sec"].as_array().expect("docs/s");
    let times: Vec<f64> = docs.iter().map(|p| p[0].as_f64().unwrap()).collect();
    assert!(
        times.len() >= 3,
        "about a point a second of a ~4 s job: {series}"
    );
    assert!(
        times[0] - created < 2.0,
        "from its first second: first point {:.2} s after its creation",
        times[0] - created
    );
    assert!(
        (finished - times[times.len() - 1]).abs() < 1.0,
        "to its end: last point {:.2} s before it ended",
        finished - times[times.len() - 1]
    );
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    let peak = docs
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        peak > 300.0 && peak < 2_000.0,
        "docs/s near the 1,000 limit: {peak}"
    );
    for (measure, expected) in [("rate_limit", Some(1_000.0)), ("workers", None)] {
        let points = series[measure].as_array().expect(measure);
        assert_eq!(
            points.len(),
            times.len(),
            "{measure}: a value at every time"
        );
        if let Some(expected) = expected {
            assert!(points.iter().all(|p| p[1].as_f64() == Some(expected)));
        }
    }
    assert!(series.get("sync_lag_secs").is_none(), "a copy has no lag");
    assert!(state.with_extension("series").join("1.json").exists());
    assert!(service.stop(), "clean exit on SIGTERM");

    let service = Service::start(&state);
    runtime.block_on(async {
        let (status, again) = service.get("/api/jobs/1/series").await;
        assert_eq!(status, 200);
        assert_eq!(again["series"], series, "the same series after a restart");
        let (status, _) = service.get("/api/jobs/99/series").await;
        assert_eq!(status, 404);
    });
    drop(service);
    drop(env);
}

#[test]
fn bad_requests_get_clear_errors_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let send = |method, path: &'static str, body: &'static str| {
            // JSON, as every request that changes something must say (tests/security.rs shows
            // the refusals of anything else).
            let request = service
                .http
                .request(method, service.url(path))
                .header("content-type", "application/json")
                .body(body);
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("every error is JSON");
                (status, body)
            }
        };
        let (status, body) = send(reqwest::Method::POST, "/api/jobs", "{not json").await;
        assert_eq!(status, 400);
        assert!(
            body["error"].as_str().unwrap().contains("malformed"),
            "{body}"
        );
        let (status, body) = send(
            reqwest::Method::POST,
            "/api/jobs",
            r#"{"from": "x", "to": "", "namespaces": ["nodot"], "workers": 0, "rate": -5}"#,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["problems"].as_array().unwrap().len(), 5, "{body}");
        let (status, body) = send(
            reqwest::Method::POST,
            "/api/jobs",
            r#"{"from": "mongodb://a", "to": "mongodb://b", "namespaces": ["a.b"], "colour": 1}"#,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");
        let (status, _) = send(reqwest::Method::GET, "/api/jobs/12345", "").await;
        assert_eq!(status, 404);
        let (status, _) = send(reqwest::Method::GET, "/api/jobs/not-a-number", "").await;
        assert_eq!(status, 404);
        let (status, _) = send(reqwest::Method::POST, "/api/jobs/12345/pause", "").await;
        assert_eq!(status, 404);
        let (status, _) = send(reqwest::Method::DELETE, "/api/jobs", "").await;
        assert_eq!(status, 405);
        let (status, _) = send(reqwest::Method::GET, "/nowhere", "").await;
        assert_eq!(status, 404);

        // A job whose destination refuses the credentials: it fails, and the password shows
        // nowhere — not in the answer, the job, its events, the metrics or the history file.
        let password = "hunter2-Secret";
        let to = env
            .dst
            .replace("mongodb://", &format!("mongodb://admin:{password}@"));
        let s = env.src_db("secret");
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(10, 64)).await;
        let (status, job) = service
            .post(
                "/api/jobs",
                json!({ "from": env.src, "to": to, "namespaces": [format!("{s}.c:{s}x.c")] }),
            )
            .await;
        assert_eq!(status, 202);
        let id = job["id"].clone();
        let failed = service
            .wait_for(&id, "failed", |j| j["state"] == "failed")
            .await;
        assert!(
            failed["error"].as_str().unwrap().contains("authentication"),
            "{failed}"
        );
        let (_, patch) = service
            .patch(&format!("/api/jobs/{id}"), json!({"workers": 2}))
            .await;
        assert!(
            patch["error"].as_str().unwrap().contains("failed"),
            "{patch}"
        );
        let events = service
            .http
            .get(service.url(&format!("/api/jobs/{id}/events")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Secrets also travel as options: a key file's password, an AWS session token.
        let option_secrets = ["k3y-Secret", "t0ken-Secret"];
        // A URI the driver does not take (this build has no key file passwords) is refused at
        // once, and the refusal quotes it redacted.
        let (status, refused) = service
            .post(
                "/api/jobs",
                json!({
                    "from": env.src,
                    "to": format!("{}&tlsCertificateKeyFilePassword={}", env.dst, option_secrets[0]),
                    "namespaces": [format!("{s}.c:{s}y.c")],
                }),
            )
            .await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused.to_string().contains("tlsCertificateKeyFilePassword=***"),
            "{refused}"
        );
        let (status, optioned) = service
            .post(
                "/api/jobs",
                json!({
                    "from": format!("{}&authMechanismProperties=AWS_SESSION_TOKEN:{}", env.src, option_secrets[1]),
                    "to": to,
                    "namespaces": [format!("{s}.c:{s}y.c")],
                }),
            )
            .await;
        assert_eq!(status, 202, "{optioned}");
        let optioned = service
            .wait_for(&optioned["id"], "failed", |j| j["state"] == "failed")
            .await;
        assert!(
            optioned["spec"]["from"].as_str().unwrap().contains("AWS_SESSION_TOKEN:***"),
            "{optioned}"
        );
        let (_, list) = service.get("/api/jobs").await;
        let (_, metrics) = service.get("/metrics").await;
        let history = std::fs::read_to_string(dir.path().join("jobs.json")).unwrap();
        // The store's files as they are on disk (its write-ahead log too), and as it reads back.
        let checkpoints = ["copy-state.db", "copy-state.db-wal"]
            .map(|f| String::from_utf8_lossy(&std::fs::read(dir.path().join(f)).unwrap_or_default()).into_owned())
            .join("")
            + &saved_state(&dir.path().join("copy-state.db")).to_string();
        for text in [
            job.to_string(),
            failed.to_string(),
            refused.to_string(),
            optioned.to_string(),
            events,
            list.to_string(),
            metrics.to_string(),
            history,
            checkpoints,
        ] {
            for secret in [password, option_secrets[0], option_secrets[1]] {
                assert!(!text.contains(secret), "{secret} leaked: {text}");
            }
        }
        assert!(failed["spec"]["to"]
            .as_str()
            .unwrap()
            .contains("admin:***@"));
    });
}

#[test]
fn sigterm_interrupts_the_job_and_a_restarted_service_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("jobs.json");
    // A process of its own: the signal is what this test is about.
    let service = Service::spawn(&state);
    let env = TestEnv::start();
    let (s, d) = (env.src_db("term"), env.dst_db("term"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let id = runtime.block_on(async {
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(30_000, 256)).await;
        let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["strategy"] = json!("ids");
        body["batch_size"] = json!(20);
        body["workers"] = json!(2);
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service.wait_for(&id, "progress", |j| count(j) > 100).await;
        id
    });
    let started = Instant::now();
    assert!(service.stop(), "clean exit on SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let history: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let recorded = &history["jobs"][0];
    assert_eq!(recorded["state"], "interrupted", "{recorded}");
    let written_before = recorded["docs"].as_u64().unwrap();
    runtime.block_on(async {
        let at_destination = env
            .dst_client()
            .await
            .database(&d)
            .collection::<mongodb::bson::Document>("c")
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap();
        assert!(written_before > 0 && written_before < 30_000, "{recorded}");
        assert_eq!(
            at_destination, written_before,
            "the record matches what was written"
        );
    });

    // The same job continues from its checkpoint and finishes.
    let service = Service::start(&state);
    runtime.block_on(async {
        let job = service
            .wait_for(&id, "the continued job completes", |j| {
                j["state"] == "completed"
            })
            .await;
        let skipped = job["progress"]["skipped"].as_u64().unwrap();
        assert!(
            skipped > 0 && skipped <= written_before,
            "skipped {skipped} of {written_before} written before: {job}"
        );
        assert_eq!(
            skipped + count(&job),
            30_000,
            "nothing read twice beyond the checkpoint: {job}"
        );
        assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
    drop(service);
    drop(env);
}

/// Documents per second of a job over `secs`, measured through the API.
async fn measured_rate(service: &Service, ids: &[Value], secs: f64) -> f64 {
    let total = |jobs: Vec<Value>| jobs.iter().map(count).sum::<u64>();
    let mut before = vec![];
    for id in ids {
        before.push(service.job(id).await);
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let mut after = vec![];
    for id in ids {
        after.push(service.job(id).await);
    }
    (total(after) - total(before)) as f64 / started.elapsed().as_secs_f64()
}

#[test]
fn rate_limits_hold_change_live_and_share_a_global_budget() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("rate"), env.dst_db("rate"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "a", &sample_docs(40_000, 128)).await;
        insert_raw(&src, &s, "b", &sample_docs(40_000, 128)).await;

        // One job limited to 300 docs/s.
        let mut body = spec(&env, &format!("{s}.a"), &format!("{d}.a"));
        body["rate"] = json!(300);
        body["batch_size"] = json!(50);
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        assert_eq!(job["limits"]["rate"], 300.0);
        let a = job["id"].clone();
        service.wait_for(&a, "running", |j| count(j) > 0).await;
        let rate = measured_rate(&service, std::slice::from_ref(&a), 4.0).await;
        assert!(
            (rate - 300.0).abs() < 300.0 * 0.15,
            "limited to 300: {rate:.0}"
        );

        // Raised live.
        let (status, patched) = service
            .patch(&format!("/api/jobs/{a}"), json!({"rate": 800}))
            .await;
        assert_eq!(
            (status, &patched["limits"]["rate"]),
            (200, &json!(800.0)),
            "{patched}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rate = measured_rate(&service, std::slice::from_ref(&a), 4.0).await;
        assert!(
            (rate - 800.0).abs() < 800.0 * 0.15,
            "raised to 800: {rate:.0}"
        );

        // A global budget of 400 docs/s shared by this job and an unlimited second one.
        let (status, global) = service
            .send(
                reqwest::Method::PUT,
                "/api/throttle",
                Some(json!({"rate": 400, "rate_bytes": null})),
            )
            .await;
        assert_eq!((status, &global["rate"]), (200, &json!(400.0)), "{global}");
        let mut body = spec(&env, &format!("{s}.b"), &format!("{d}.b"));
        body["batch_size"] = json!(50);
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202);
        let b = job["id"].clone();
        service
            .wait_for(&b, "second job running", |j| count(j) > 0)
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rate = measured_rate(&service, &[a.clone(), b.clone()], 4.0).await;
        assert!(
            (rate - 400.0).abs() < 400.0 * 0.15,
            "both jobs together: {rate:.0}"
        );
        let (_, metrics) = service.get("/metrics").await;
        assert!(metrics
            .as_str()
            .unwrap()
            .contains("mongoferry_global_rate_limit 400"));

        for id in [&a, &b] {
            let (status, _) = service
                .post(&format!("/api/jobs/{id}/cancel"), json!({}))
                .await;
            assert_eq!(status, 200);
        }
        let (status, body) = service
            .patch(&format!("/api/jobs/{a}"), json!({"rate": 0}))
            .await;
        assert!(status == 400 || status == 409, "{status} {body}");
    });
}

#[test]
fn refused_documents_are_visible_on_the_job_and_kept_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("dead"), env.dst_db("dead"));
        let docs: Vec<_> = (0..300_i32)
            .map(|i| mongodb::bson::rawdoc! { "_id": i, "name": format!("n{i}") })
            .collect();
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        // A unique index of the destination's own refuses all but one of the documents below
        // `_id` 31 (none has `tag`): 30 of 300.
        env.dst_client()
            .await
            .database(&d)
            .run_command(mongodb::bson::doc! {
                "createIndexes": "c",
                "indexes": [{
                    "key": { "tag": 1 },
                    "name": "one_untagged",
                    "unique": true,
                    "partialFilterExpression": { "_id": { "$lt": 31 } },
                }],
            })
            .await
            .unwrap();
        let (status, job) = service
            .post(
                "/api/jobs",
                spec(&env, &format!("{s}.c"), &format!("{d}.c")),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        let job = service
            .wait_for(&job["id"], "completion", |j| j["state"] == "completed")
            .await;
        assert_eq!(job["progress"]["failed"], 30, "{job}");
        assert_eq!(job["progress"]["docs"], 270, "{job}");
        assert_eq!(job["dead_letters"]["count"], 30, "{job}");
        let recent = job["dead_letters"]["recent"].as_array().unwrap();
        assert_eq!(recent.len(), 20, "the latest 20 are listed: {job}");
        for letter in recent {
            assert_eq!(letter["ns"], format!("{d}.c"));
            let id: i32 = letter["id"]["$numberInt"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(id < 31, "{letter}");
            assert!(!letter["reason"].as_str().unwrap().is_empty());
        }
        let error = job["error"].as_str().unwrap();
        assert!(
            error.contains("completed with 30 failed documents"),
            "{error}"
        );
        // The metrics count them too: what the dashboard and the dead-letter alert read.
        let (_, metrics) = service.get("/metrics").await;
        let line = format!(
            "mongoferry_dead_letters_total{{job=\"{}\",namespace=\"{s}.c\"}} 30",
            job["id"]
        );
        assert!(metrics.as_str().unwrap().contains(&line), "{metrics}");
        let kept =
            std::fs::read_to_string(dir.path().join("copy-state.db.dead-letters.ndjson")).unwrap();
        assert_eq!(kept.lines().count(), 30);
    });
}

/// Rates too small for any wait to be represented once reached the limiter, panicked it with its
/// lock held, and every later job failed until a restart. Each entry point refuses them now.
#[test]
fn tiny_rates_are_refused_at_every_entry_point_and_the_service_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("tiny"), env.dst_db("tiny"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(2_000, 128)).await;
        let put = |body: Value| service.send(reqwest::Method::PUT, "/api/throttle", Some(body));
        for body in [
            json!({"rate": 1e-17}),
            json!({"rate": 1e-308}),
            json!({"rate_bytes": 1e-308}),
        ] {
            let (status, answer) = put(body.clone()).await;
            assert_eq!(status, 400, "PUT /api/throttle {body}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains("must be"),
                "{answer}"
            );
        }
        let (status, limits) = service.get("/api/throttle").await;
        assert_eq!(
            (status, &limits),
            (200, &json!({"rate": null, "rate_bytes": null}))
        );

        // A spec with such a rate starts nothing.
        for field in ["rate", "rate_bytes"] {
            let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
            body[field] = json!(1e-308);
            let (status, answer) = service.post("/api/jobs", body).await;
            assert_eq!(status, 400, "{answer}");
            let problems = answer["problems"].to_string();
            assert!(
                problems.contains(&format!("{field}: must be")),
                "{problems}"
            );
        }
        let (_, jobs) = service.get("/api/jobs").await;
        assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");

        // A running job refuses them too, and goes on.
        let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["rate"] = json!(200);
        body["batch_size"] = json!(50);
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service.wait_for(&id, "running", |j| count(j) > 0).await;
        for patch in [json!({"rate": 1e-308}), json!({"rate_bytes": 1e-308})] {
            let (status, answer) = service.patch(&format!("/api/jobs/{id}"), patch).await;
            assert_eq!(status, 400, "{answer}");
        }
        let job = service.job(&id).await;
        assert_eq!(job["limits"]["rate"], json!(200.0), "{job}");
        let (status, _) = service
            .patch(&format!("/api/jobs/{id}"), json!({"rate": null}))
            .await;
        assert_eq!(status, 200);
        let job = service
            .wait_for(&id, "completed", |j| j["state"] != "running")
            .await;
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(count(&job), 2_000);

        // And the service as a whole still works: metrics, the throttle, a new job.
        let (status, _) = service.get("/metrics").await;
        assert_eq!(status, 200);
        let (status, _) = put(json!({"rate": null})).await;
        assert_eq!(status, 200);
        let (status, job) = service
            .post(
                "/api/jobs",
                spec(&env, &format!("{s}.c"), &format!("{d}.again")),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        let job = service
            .wait_for(&job["id"], "second job done", |j| {
                j["state"] != "running" && j["state"] != "pending"
            })
            .await;
        assert_eq!(
            (job["state"].as_str(), count(&job)),
            (Some("completed"), 2_000)
        );
    });
}

/// A history written before JobSpec became the one spec type (by the previous version of the
/// service) reads back with every field of every job, and survives being written again.
#[test]
fn a_history_written_by_the_previous_version_reads_back() {
    use mongoferry::service::JobManager;
    use mongoferry::state::history::HistoryFile;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.json");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jobs-history-before-one-spec.json"
    );
    std::fs::copy(fixture, &path).unwrap();
    let views = |path: &std::path::Path| -> Vec<Value> {
        let manager = JobManager::open(Some(HistoryFile::new(path)), memory_store(), None)
            .expect("the old history opens");
        manager
            .list()
            .iter()
            .map(|job| serde_json::to_value(job.view()).unwrap())
            .collect()
    };
    let jobs = views(&path);
    assert_eq!(jobs.len(), 2);
    let (first, second) = (&jobs[0], &jobs[1]);
    assert_eq!(
        (&first["state"], &first["workers"]),
        (&json!("failed"), &json!(3))
    );
    assert!(first["error"].as_str().unwrap().contains("authentication"));
    let spec = &first["spec"];
    for (field, value) in [
        (
            "to",
            json!("mongodb://user:***@127.0.0.1:27501/?directConnection=true"),
        ),
        ("namespaces", json!(["h.src:h.dst"])),
        ("filter", json!({"n": {"$gte": 5}})),
        ("batch_size", json!(20)),
        ("strategy", json!("ids")),
        ("rate", json!(1000.0)),
        ("rate_bytes", json!(1000000.0)),
        (
            "adaptive",
            json!({"target_ms": 500.0, "max_workers": 4, "interval_ms": 1000}),
        ),
        ("max_document_bytes", json!(100000)),
        // `true` reads as the mode it meant: compare and report.
        ("verify", json!("report")),
        ("journal", json!({"dir": "j1", "segment_bytes": 1048576})),
    ] {
        assert_eq!(spec[field], value, "{field} of {spec}");
    }
    assert_eq!(
        (&second["state"], &second["progress"]["docs"]),
        (&json!("completed"), &json!(50))
    );
    assert_eq!(
        second["spec"]["verify"],
        Value::Null,
        "null reads as the mode's default"
    );
    // Written again by this version (as every change does) and read back: the same jobs.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let manager =
            JobManager::open(Some(HistoryFile::new(&path)), memory_store(), None).unwrap();
        manager.shutdown(Duration::from_secs(5)).await;
    });
    assert_eq!(views(&path), jobs);
}

/// `POST /api/plan`: what a job would do, from the same spec; nothing starts, nothing is written.
#[test]
fn the_api_plans_a_job_without_starting_it() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("aplan"), env.dst_db("aplan"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(1_000, 256)).await;
        let (status, plan) = service
            .post(
                "/api/plan",
                spec(&env, &format!("{s}.c"), &format!("{d}.c")),
            )
            .await;
        assert_eq!(status, 200, "{plan}");
        assert_eq!(plan["namespaces"][0]["documents"], 1_000, "{plan}");
        assert_eq!(plan["blocked"], false);
        assert!(service.jobs().await.is_empty(), "a plan starts no job");
        let names = env.dst_client().await.list_database_names().await.unwrap();
        assert!(!names.contains(&d), "a plan writes nothing");
        let (status, answer) = service
            .post(
                "/api/plan",
                spec(&env, &format!("{s}.missing"), &format!("{d}.c")),
            )
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("not found"),
            "{answer}"
        );
        let (status, answer) = service
            .post(
                "/api/plan",
                json!({"from": "x", "to": "y", "namespaces": ["a.b"]}),
            )
            .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid job")),
            "{answer}"
        );
    });
}

#[test]
fn a_sync_job_shows_its_lag_and_a_commit_completes_it_equal() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("apisync"), env.dst_db("apisync"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(2_000, 200)).await;
        let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["mode"] = json!("sync");
        body["verify"] = json!(true);
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        assert_eq!(job["links"]["commit"], format!("/api/jobs/{id}/commit"));
        let job = service
            .wait_for(&id, "the live phase", |j| {
                j["progress"]["sync"]["phase"] == "live"
            })
            .await;
        assert_eq!(job["state"], "running");
        assert_eq!(job["progress"]["sync"]["lag_secs"], 0.0, "{job}");

        // Changes while live are applied, and counted by kind.
        let c = src.database(&s).collection::<mongodb::bson::Document>("c");
        for i in 0..50 {
            c.insert_one(mongodb::bson::doc! { "_id": 10_000 + i })
                .await
                .unwrap();
        }
        c.delete_one(mongodb::bson::doc! { "_id": 0_i64 })
            .await
            .unwrap();
        let job = service
            .wait_for(&id, "the changes applied", |j| {
                j["progress"]["sync"]["events"].as_u64().unwrap_or(0) >= 51
            })
            .await;
        assert_eq!(job["progress"]["sync"]["applied"]["insert"], 50, "{job}");
        assert_eq!(job["progress"]["sync"]["applied"]["delete"], 1, "{job}");
        let (_, metrics) = service.get("/metrics").await;
        let metrics = metrics.as_str().unwrap().to_string();
        assert!(
            metrics.contains(&format!("mongoferry_sync_lag_seconds{{job=\"{id}\"}}")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "mongoferry_sync_events_total{{job=\"{id}\",type=\"insert\"}} 50"
            )),
            "{metrics}"
        );

        // The cutover: everything up to now applied, verified, completed.
        c.insert_one(mongodb::bson::doc! { "_id": -1, "last": true })
            .await
            .unwrap();
        let (status, job) = service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        assert_eq!(status, 200, "{job}");
        let job = service
            .wait_for(&id, "the commit", |j| j["state"] == "completed")
            .await;
        assert_eq!(job["error"], Value::Null, "{job}");
        assert_eq!(job["progress"]["sync"]["phase"], "committed", "{job}");
        assert_same(&env, (&s, "c"), (&d, "c")).await;
        let (status, again) = service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        assert_eq!(status, 409, "{again}");

        // A copy job cannot be committed.
        let (status, copy) = service
            .post(
                "/api/jobs",
                spec(&env, &format!("{s}.c"), &format!("{d}.other")),
            )
            .await;
        assert_eq!(status, 202, "{copy}");
        assert!(copy["links"]["commit"].is_null(), "{copy}");
        let (status, refused) = service
            .post(&format!("/api/jobs/{}/commit", copy["id"]), json!({}))
            .await;
        assert!(
            status == 409
                && refused["error"]
                    .as_str()
                    .unwrap()
                    .contains("only a sync job"),
            "{status} {refused}"
        );
    });
}

#[test]
fn a_move_job_reports_what_it_moved_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("apimove"), env.dst_db("apimove"));
        let src = env.src_client().await;
        let c = src.database(&s).collection::<mongodb::bson::Document>("c");
        let docs: Vec<_> = (0..600)
            .map(|i| mongodb::bson::doc! { "_id": i, "old": i < 400 })
            .collect();
        c.insert_many(docs).await.unwrap();
        let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["mode"] = json!("move");
        body["filter"] = json!({ "old": true });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        let job = service
            .wait_for(&id, "the move", |j| j["state"] == "completed")
            .await;
        assert_eq!(job["error"], Value::Null, "{job}");
        let moves = &job["progress"]["moves"];
        assert_eq!(
            (
                moves["verified"].as_u64(),
                moves["deleted"].as_u64(),
                moves["left"].as_u64()
            ),
            (Some(400), Some(400), Some(0)),
            "{job}"
        );
        assert_eq!(
            c.count_documents(mongodb::bson::doc! {}).await.unwrap(),
            200
        );
        let (_, metrics) = service.get("/metrics").await;
        let metrics = metrics.as_str().unwrap().to_string();
        assert!(
            metrics.contains(&format!(
                "mongoferry_move_documents_total{{job=\"{id}\",kind=\"deleted\"}} 400"
            )),
            "{metrics}"
        );
    });
}

#[test]
fn a_reconcile_job_shows_its_counts_in_its_view_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("apirec"), env.dst_db("apirec"));
        let docs = sample_docs(500, 100);
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        // The destination lacks 50, holds 20 stale and 5 of its own.
        let dst = env.dst_client().await;
        insert_raw(&dst, &d, "c", &docs[50..]).await;
        let c = dst.database(&d).collection::<mongodb::bson::Document>("c");
        c.update_many(
            mongodb::bson::doc! { "_id": { "$gte": 100, "$lt": 120 } },
            mongodb::bson::doc! { "$set": { "stale": true } },
        )
        .await
        .unwrap();
        for i in 0..5 {
            c.insert_one(mongodb::bson::doc! { "_id": 9_000 + i })
                .await
                .unwrap();
        }
        let mut body = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["mode"] = json!("reconcile");
        body["delete_extra"] = json!(true);
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        let job = service
            .wait_for(&id, "the reconcile", |j| j["state"] == "completed")
            .await;
        assert_eq!(job["error"], Value::Null, "{job}");
        let r = &job["progress"]["reconcile"];
        assert_eq!(
            (
                r["written"].as_u64(),
                r["deleted"].as_u64(),
                r["equal"].as_u64(),
                r["compared"].as_u64()
            ),
            (Some(70), Some(5), Some(430), Some(505)),
            "{job}"
        );
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
        let (_, metrics) = service.get("/metrics").await;
        let metrics = metrics.as_str().unwrap().to_string();
        for (kind, n) in [("written", 70), ("deleted", 5), ("equal", 430)] {
            let line =
                format!("mongoferry_reconcile_documents_total{{job=\"{id}\",kind=\"{kind}\"}} {n}");
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
        // Without `delete_extra` on a copy, the spec is refused with the field named.
        let mut copy = spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        copy["delete_extra"] = json!(true);
        let (status, refused) = service.post("/api/jobs", copy).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused.to_string().contains("delete_extra"), "{refused}");
    });
}

/// A service job with several readers and a partition size reads its namespace in
/// partitions, and its progress shows each one: while it runs some are read at once, and at the
/// end all are complete and add up to the namespace.
#[test]
fn a_partitioned_job_shows_its_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("apiparts"), env.dst_db("apiparts"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(4_000, 200)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "workers": 2, "batch_size": 100, "readers": 2, "partition_docs": 500, "rate": 2000
        });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        let reading = |job: &Value| {
            job["progress"]["namespaces"][0]["partitions"]
                .as_array()
                .map_or(0, |parts| {
                    parts.iter().filter(|p| p["state"] == "reading").count()
                })
        };
        let part_way = service
            .wait_for(&id, "two partitions read at once", |job| reading(job) >= 2)
            .await;
        assert!(
            part_way["progress"]["namespaces"][0]["partitions"]
                .as_array()
                .unwrap()
                .len()
                >= 6
        );
        let done = service
            .wait_for(&id, "completed", |job| job["state"] == "completed")
            .await;
        let parts = done["progress"]["namespaces"][0]["partitions"]
            .as_array()
            .unwrap()
            .clone();
        assert!(parts.iter().all(|p| p["state"] == "complete"), "{parts:?}");
        assert_eq!(
            parts
                .iter()
                .map(|p| p["done"].as_u64().unwrap())
                .sum::<u64>(),
            4_000
        );
        assert_eq!(done["spec"]["partition_docs"], 500);
        assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

/// With a credentials key, a job whose URIs carry a password keeps them sealed in the history: a
/// restarted service with the key continues it, one without the key leaves it interrupted and
/// says why, and the password is never in the file in clear.
#[test]
fn a_job_with_a_password_continues_after_a_restart_when_its_credentials_are_sealed() {
    use common::service::Serve;
    const PASSWORD: &str = "Ferry-s3cret-pw";
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("jobs.json");
    let key = dir.path().join("credentials.key");
    std::fs::write(&key, "a-credentials-key-for-the-tests\n").unwrap();
    let keyed = || {
        Serve::with_state(&state)
            .arg("--credentials-key-file")
            .arg(key.display().to_string())
            .start()
    };
    let env = TestEnv::start();
    let (s, d) = (env.src_db("sealed"), env.dst_db("sealed"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let service = keyed();
    let id = runtime.block_on(async {
        let (from, to) = with_user(&env, "ferry", PASSWORD).await;
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(6_000, 256)).await;
        let body = json!({
            "from": from, "to": to,
            "namespaces": [format!("{s}.c:{d}.c")], "workers": 2, "batch_size": 100, "rate": 1000
        });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        assert!(!job.to_string().contains(PASSWORD), "{job}");
        let id = job["id"].clone();
        service.wait_for(&id, "progress", |j| count(j) > 500).await;
        id
    });
    assert!(service.stop());
    let history = std::fs::read_to_string(&state).unwrap();
    assert!(
        !history.contains(PASSWORD),
        "the password in clear: {history}"
    );
    assert!(history.contains("\"sealed\": \"v1:"), "{history}");

    // Without the key: the job stays interrupted, and says why.
    let keyless = Service::start(&state);
    runtime.block_on(async {
        let job = keyless.job(&id).await;
        assert_eq!(job["state"], "interrupted", "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(
            error.contains("sealed with a key this service does not have"),
            "{job}"
        );
    });
    assert!(keyless.stop());

    // With it: the same job continues from its checkpoint and completes.
    let service = keyed();
    runtime.block_on(async {
        let job = service
            .wait_for(&id, "the continued job completes", |j| {
                j["state"] == "completed"
            })
            .await;
        let skipped = job["progress"]["skipped"].as_u64().unwrap();
        assert!(skipped > 0, "it continued from its checkpoint: {job}");
        assert_eq!(skipped + count(&job), 6_000, "{job}");
        assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
    assert!(service.stop());
    assert!(!std::fs::read_to_string(&state).unwrap().contains(PASSWORD));
}
