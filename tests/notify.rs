//! `serve --notify-url`: the notices of jobs' state changes, received by a real HTTP listener
//! of the test's, from a service copying between real test servers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::service::{Serve, Service};
use common::*;
use serde_json::{json, Value};

/// What the listener received: each notice's headers and exact body.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A listener on a free loopback port that takes every POST to `/hook` (200), keeping it; served
/// on the current runtime.
fn receiver(listener: std::net::TcpListener) -> Received {
    let received: Received = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    received
}

/// The notices received so far, once one says `state`, within `limit`.
async fn notices_until(
    received: &Received,
    state: &str,
    limit: Duration,
) -> Vec<(HeaderMap, Bytes)> {
    let deadline = Instant::now() + limit;
    loop {
        let got = received.lock().unwrap().clone();
        let done = got
            .iter()
            .any(|(_, body)| serde_json::from_slice::<Value>(body).unwrap()["state"] == state);
        if done {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "no {state} notice within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The line of /metrics starting with `prefix`, once `check` holds for it, within `limit`.
async fn metric(
    service: &Service,
    prefix: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, text) = service.get("/metrics").await;
        assert_eq!(status, 200);
        let text = text.as_str().unwrap().to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or("")
            .to_string();
        if check(&line) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix}: {line:?} after {limit:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_copy_job_announces_its_states_in_order_signed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("notify-secret");
    std::fs::write(&secret, "a-secret-for-the-test\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // The query is sent, never shown.
    let url = format!(
        "http://{}/hook?token=q-s3cret",
        listener.local_addr().unwrap()
    );
    let service = Serve::with_state(&dir.path().join("jobs.json"))
        .arg("--notify-url")
        .arg(url)
        .arg("--notify-secret-file")
        .arg(secret.display().to_string())
        .start();
    TestEnv::start().run(|env| async move {
        let received = receiver(listener);
        let (s, d) = (env.src_db("notify"), env.dst_db("notify"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(2_000, 256)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "workers": 2, "batch_size": 200
        });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].as_u64().unwrap();

        let got = notices_until(&received, "completed", Duration::from_secs(60)).await;
        let notices: Vec<Value> = got
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect();
        let states: Vec<(Value, Value)> = notices
            .iter()
            .map(|n| (n["previous_state"].clone(), n["state"].clone()))
            .collect();
        assert_eq!(
            states,
            [
                (Value::Null, json!("pending")),
                (json!("pending"), json!("running")),
                (json!("running"), json!("completed")),
            ],
            "{notices:#?}"
        );
        for (i, notice) in notices.iter().enumerate() {
            assert_eq!(notice["event"], "job.state");
            assert_eq!(notice["job"], id);
            assert_eq!(notice["mode"], "copy");
            assert_eq!(notice["sequence"], i as u64 + 1, "{notice}");
            assert_eq!(notice["instance"], notices[0]["instance"]);
            assert!(notice["time"].as_f64().unwrap() >= notice["created_at"].as_f64().unwrap());
        }
        let done = &notices[2];
        assert_eq!(done["docs"], 2_000, "{done}");
        let view = service.job(&json!(id)).await;
        assert_eq!(done["bytes"], view["progress"]["bytes"], "{done}");
        assert!(done["bytes"].as_u64().unwrap() >= 2_000 * 256, "{done}");
        assert_eq!((&done["failed"], &done["skipped"]), (&json!(0), &json!(0)));
        assert!(done["finished_at"].as_f64().is_some(), "{done}");
        assert!(done["seconds"].as_f64().is_some(), "{done}");
        assert!(done["error"].is_null(), "{done}");
        assert_eq!(notices[0]["docs"], 0);
        assert!(notices[0]["docs_per_sec"].is_null());
        assert_same(&env, (&s, "c"), (&d, "c")).await;

        // Each body is signed with the secret (trimmed), over its exact bytes.
        for (headers, body) in &got {
            let signature = headers["x-mongoferry-signature"].to_str().unwrap();
            let expected = format!("sha256={}", hmac_hex(b"a-secret-for-the-test", body));
            assert_eq!(signature, expected);
            assert_eq!(headers["content-type"], "application/json");
            let sequence: Value =
                serde_json::from_slice::<Value>(body).unwrap()["sequence"].clone();
            assert_eq!(
                headers["x-mongoferry-sequence"].to_str().unwrap(),
                sequence.to_string()
            );
        }

        let line = metric(
            &service,
            "mongoferry_notifications_sent_total{",
            Duration::from_secs(10),
            |l| l.ends_with(" 3"),
        )
        .await;
        assert_eq!(
            line,
            "mongoferry_notifications_sent_total{receiver=\"0\"} 3"
        );
        let (_, metrics) = service.get("/metrics").await;
        let metrics = metrics.as_str().unwrap();
        assert!(!metrics.contains("q-s3cret"), "{metrics}");
        assert!(metrics.contains(
            "mongoferry_notifications_dropped_total{receiver=\"0\",reason=\"queue_full\"} 0"
        ));
    });
}

#[test]
fn a_receiver_that_is_down_never_slows_a_job_and_its_notices_are_counted_dropped() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://user:pw-s3cret@{}/hook",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let service = Serve::with_state(&dir.path().join("jobs.json"))
        .arg("--notify-url")
        .arg(url)
        .arg("--notify-retry-seconds")
        .arg("1")
        .start();
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("notify_down"), env.dst_db("notify_down"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(2_000, 256)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "workers": 2, "batch_size": 200
        });
        let started = Instant::now();
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let done = service
            .wait_for(&job["id"], "the job's end", |j| {
                j["state"] != "pending" && j["state"] != "running"
            })
            .await;
        let took = started.elapsed();
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(done["progress"]["docs"], 2_000);
        // Well under the retry window times the notices: nothing waited for the receiver.
        assert!(took < Duration::from_secs(20), "the job took {took:?}");

        // pending, running, completed: each retried for 1 s, then dropped.
        let line = metric(
            &service,
            "mongoferry_notifications_dropped_total{receiver=\"0\",reason=\"failed\"}",
            Duration::from_secs(20),
            |l| l.ends_with(" 3"),
        )
        .await;
        assert!(line.ends_with(" 3"), "{line}");
        let sent = metric(
            &service,
            "mongoferry_notifications_sent_total{",
            Duration::from_secs(1),
            |_| true,
        )
        .await;
        assert_eq!(
            sent,
            "mongoferry_notifications_sent_total{receiver=\"0\"} 0"
        );
        let retries = metric(
            &service,
            "mongoferry_notifications_retries_total{",
            Duration::from_secs(1),
            |_| true,
        )
        .await;
        let retries: u64 = retries.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(retries >= 3, "{retries}");
    });
}

#[test]
fn notify_urls_are_checked_at_startup_without_showing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-secret");
    std::fs::write(&empty, " \n").unwrap();
    let empty = empty.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--notify-url", "ftp://u:pw-s3cret@example.com/x?k=q-s3cret"],
            "--notify-url ftp://example.com/x: the scheme is \"ftp\"",
        ),
        (
            &["--notify-url", "hooks.example.com/x?k=q-s3cret"],
            "--notify-url (the 1st): not a URL",
        ),
        (
            &[
                "--allow-cluster",
                "db.example.com",
                "--notify-url",
                "https://u:pw-s3cret@hooks.example.org/x?k=q-s3cret",
            ],
            "--notify-url https://hooks.example.org/x: host hooks.example.org:443 is not in --allow-cluster",
        ),
        (
            &["--notify-url", "http://127.0.0.1:1/x", "--notify-secret-file", &empty],
            "the file is empty",
        ),
    ];
    for (args, expected) in cases {
        let mut argv = vec!["serve", "--no-state", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let out = mongoferry(&argv, Duration::from_secs(30));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("s3cret"), "{args:?}: {err}");
    }
}

/// `host:port` of a test server's URI, for `--allow-cluster`.
fn endpoint(uri: &str) -> String {
    let rest = uri.split("://").nth(1).expect("a URI");
    rest.split(['/', '?']).next().unwrap().to_string()
}

/// A service node on the MongoDB state `state`, allowed to reach only the test servers and
/// `receiver` (its notify URL's host must be allowed too), notifying `receiver`.
fn node(env: &TestEnv, state: &str, receiver: &std::net::TcpListener) -> Serve {
    let at = receiver.local_addr().unwrap();
    Serve::with_state(std::path::Path::new(state))
        .arg("--lease-seconds")
        .arg("3")
        .arg("--allow-cluster")
        .arg(endpoint(&env.src))
        .arg("--allow-cluster")
        .arg(endpoint(&env.dst))
        .arg("--allow-cluster")
        .arg(at.to_string())
        .arg("--notify-url")
        .arg(format!("http://{at}/hook"))
}

#[test]
fn only_the_node_that_runs_a_job_notifies() {
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("notify_nodes");
        let (to_a, to_b) = (
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let a = node(&env, &state, &to_a).start();
        let b = node(&env, &state, &to_b).start();
        let (at_a, at_b) = (receiver(to_a), receiver(to_b));
        let (s, d) = (env.src_db("notify_nodes"), env.dst_db("notify_nodes"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(4_000, 256)).await;
        // In partitions, slowly enough that the other node shows the job and may help copy it.
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "partition_docs": 500, "workers": 2, "batch_size": 100, "rate": 1000
        });
        let (status, job) = a.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        // The other node shows it within a heartbeat or two.
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.get(&format!("/api/jobs/{id}")).await.0 != 200 {
            assert!(Instant::now() < deadline, "job {id} never showed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b.wait_for(&id, "the job completed, seen on the other node", |j| {
            j["state"] == "completed"
        })
        .await;

        let got = notices_until(&at_a, "completed", Duration::from_secs(30)).await;
        let states: Vec<Value> = got
            .iter()
            .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap()["state"].clone())
            .collect();
        assert_eq!(states, ["pending", "running", "completed"]);
        // The other node mirrored the job (and perhaps helped): it announces nothing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            at_b.lock().unwrap().is_empty(),
            "{:?}",
            at_b.lock().unwrap()
        );
        let (_, metrics) = b.get("/metrics").await;
        let metrics = metrics.as_str().unwrap();
        assert!(
            metrics.contains("mongoferry_notifications_sent_total{receiver=\"0\"} 0"),
            "{metrics}"
        );
    });
}
