//! The load guard against real test servers: each signal holds a running job and lets it go,
//! counted in documents at the destination; a critical load stops or hibernates it; what the
//! servers cannot report is refused before anything is written.

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::service::Service;
use common::*;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Documents at the destination.
async fn count(dst: &Client, db: &str) -> u64 {
    dst.database(db)
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap()
}

/// Polls `probe` every 50 ms until it holds; how long that took, or `None` after `limit`.
async fn within<F, Fut>(limit: Duration, probe: F) -> Option<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if probe().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The source's `serverStatus` value at `path`.
async fn server_value(client: &Client, section: &str, field: &str) -> i64 {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .unwrap();
    let value = status.get_document(section).unwrap().get(field).unwrap();
    match value {
        mongodb::bson::Bson::Int32(n) => i64::from(*n),
        mongodb::bson::Bson::Int64(n) => *n,
        mongodb::bson::Bson::Double(n) => *n as i64,
        other => panic!("{section}.{field}: {other}"),
    }
}

/// `n` clients of `uri`, each with a connection open (and its monitor's).
async fn crowd(uri: &str, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let c = Client::with_uri_str(uri).await.unwrap();
        c.database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .unwrap();
        clients.push(c);
    }
    clients
}

async fn disperse(clients: Vec<Client>) {
    for c in clients {
        c.shutdown().await;
    }
}

fn copy_argv<'a>(env: &'a TestEnv, ns: &'a str, state: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec![
        "copy", "--from", &env.src, "--to", &env.dst, "--ns", ns, "--state", state,
    ];
    argv.extend(more);
    argv
}

#[test]
fn a_flag_file_holds_a_running_copy_within_a_second_and_lets_it_go_within_a_second() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("flag"), env.dst_db("flag"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(12_000, 200)).await;
        let dst = env.dst_client().await;
        let data = tempfile::tempdir().unwrap();
        let flag = data.path().join("hold");
        let state = data.path().join("state.db");
        let ns = format!("{s}.c:{d}.c");
        let (flag_text, state_text) = (flag.display().to_string(), state.display().to_string());
        let argv = copy_argv(
            &env,
            &ns,
            &state_text,
            &[
                "--rate",
                "2000",
                "--batch-size",
                "100",
                "--throttle-flag-file",
                &flag_text,
            ],
        );
        let (mut child, log) = spawn(&argv, data.path());
        let started = within(Duration::from_secs(30), || async {
            count(&dst, &d).await >= 1_000
        });
        assert!(started.await.is_some(), "the copy did not start writing");
        std::fs::write(&flag, "").unwrap();
        // Within one interval (1 s) and the batches in flight, nothing more arrives.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let held = count(&dst, &d).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            count(&dst, &d).await,
            held,
            "held while the flag file exists"
        );
        assert!(held < 12_000, "{held}");
        std::fs::remove_file(&flag).unwrap();
        let released = within(Duration::from_secs(3), || async {
            count(&dst, &d).await > held
        });
        let released = released
            .await
            .expect("the copy went on once the flag file was gone");
        assert!(
            released < Duration::from_millis(1_300),
            "went on after {released:?}"
        );
        let (status, _) = exit_within(&mut child, Duration::from_secs(60)).await;
        let log = read_log(log);
        assert!(status.success(), "{log}");
        assert!(
            log.contains(&format!("load guard: held: flag file {flag_text} exists")),
            "{log}"
        );
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 12_000);
        println!("held at {held} documents; went on {released:?} after the flag file went");
    });
}

#[test]
fn a_critical_load_stops_a_copy_resumably_and_the_same_command_completes_it() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("crit"), env.dst_db("crit"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(12_000, 200)).await;
        let dst = env.dst_client().await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.db").display().to_string();
        let ns = format!("{s}.c:{d}.c");
        // SecantusDB counts insert commands: 30 batches of 100 are written, then it is critical.
        let inserts = server_value(&dst, "opcounters", "insert").await;
        let critical = format!("destination:opcounters.insert>{}", inserts + 30);
        let slow = ["--rate", "3000", "--batch-size", "100", "--json", "--quiet"];
        let mut argv = copy_argv(&env, &ns, &state, &slow);
        argv.extend(["--critical-load", &critical]);
        let out = mongoferry(&argv, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains("critical load: destination:opcounters.insert")
                && said.contains(&format!("> {}", inserts + 30))
                && said.contains("run it again to continue"),
            "{said}"
        );
        let written = count(&dst, &d).await;
        assert!((3_000..12_000).contains(&written), "{written}");
        // The same command, the load gone (here: the threshold lifted), goes on from the
        // checkpoint.
        let out = mongoferry(
            &copy_argv(&env, &ns, &state, &slow),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        // From the checkpoint: what was below its watermark is not written again.
        let skipped = summary["skipped"].as_u64().unwrap();
        assert!(skipped > 0 && skipped <= written, "{summary}");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 12_000);
    });
}

/// A tiny HTTP server answering every request with the status in `status`.
async fn answering(status: Arc<AtomicU16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let code = status.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, task)
}

#[test]
fn a_throttle_url_holds_the_copy_until_it_answers_200() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("url"), env.dst_db("url"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(3_000, 200)).await;
        let dst = env.dst_client().await;
        let status = Arc::new(AtomicU16::new(503));
        let (port, server) = answering(status.clone()).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.db").display().to_string();
        let ns = format!("{s}.c:{d}.c");
        let url = format!("http://127.0.0.1:{port}/ready");
        let argv = copy_argv(&env, &ns, &state, &["--throttle-url", &url]);
        let (mut child, log) = spawn(&argv, data.path());
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(count(&dst, &d).await, 0, "held while the URL answers 503");
        status.store(200, Ordering::SeqCst);
        let (exit, took) = exit_within(&mut child, Duration::from_secs(60)).await;
        let log = read_log(log);
        assert!(exit.success(), "{log}");
        assert!(log.contains("throttle URL answered 503"), "{log}");
        assert!(took < Duration::from_secs(20), "{took:?}");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 3_000);
        server.abort();
        // Nothing answers there any more: unreachable holds too.
        let (s2, d2) = (env.src_db("url2"), env.dst_db("url2"));
        insert_raw(&env.src_client().await, &s2, "c", &sample_docs(100, 10)).await;
        let ns2 = format!("{s2}.c:{d2}.c");
        let argv = copy_argv(&env, &ns2, &state, &["--throttle-url", &url]);
        let (mut child, log) = spawn(&argv, data.path());
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(count(&dst, &d2).await, 0);
        let _ = child.kill();
        let _ = child.wait();
        let log = read_log(log);
        assert!(log.contains("throttle URL unreachable"), "{log}");
    });
}

#[test]
fn what_the_servers_do_not_report_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("lack"), env.dst_db("lack"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(10, 10)).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.db").display().to_string();
        let ns = format!("{s}.c:{d}.c");
        let lacking = "source:connections.current>5,destination:no.such.path>1";
        let out = mongoferry(
            &copy_argv(&env, &ns, &state, &["--max-load", lacking]),
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "max_load: the destination's serverStatus has no number at `no.such.path`"
            ),
            "{}",
            stderr(&out)
        );
        for bad in ["connections.current>5", "source:connections.current"] {
            let out = mongoferry(
                &copy_argv(&env, &ns, &state, &["--critical-load", bad]),
                Duration::from_secs(30),
            );
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            assert!(
                stderr(&out).contains("critical_load: `"),
                "{}",
                stderr(&out)
            );
        }
        assert_eq!(count(&env.dst_client().await, &d).await, 0);
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [ns], "max_load": lacking,
        });
        let (status, refused) = service.post("/api/jobs", body).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused.to_string().contains("no.such.path"), "{refused}");
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [ns],
            "postpone_commit_flag_file": "/tmp/x",
        });
        let (status, refused) = service.post("/api/jobs", body).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused.to_string().contains("only a sync"), "{refused}");
    });
}

/// The line of `metrics` that starts with `prefix`.
fn metric_line<'a>(metrics: &'a str, prefix: &str) -> Option<&'a str> {
    metrics.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn connections_over_a_threshold_set_live_hold_the_job_and_a_critical_one_hibernates_it() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("load"), env.dst_db("load"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(20_000, 200)).await;
        let dst = env.dst_client().await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "rate": 1500, "batch_size": 100, "guard_interval_ms": 200,
        });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        let writing = within(Duration::from_secs(30), || async { count(&dst, &d).await > 500 });
        assert!(writing.await.is_some());
        // The job's own connections and ours, and a margin: extra clients cross it.
        let now = server_value(&src, "connections", "current").await;
        let limit = now + 6;
        let threshold = format!("source:connections.current>{limit}");
        let (status, patched) = service
            .patch(&format!("/api/jobs/{id}"), json!({ "max_load": threshold }))
            .await;
        assert_eq!(status, 200, "{patched}");
        assert_eq!(patched["load_guard"]["settings"]["max_load"], threshold);
        // A path the servers do not report is refused live as at submit, and changes nothing.
        let (status, refused) = service
            .patch(&format!("/api/jobs/{id}"), json!({ "max_load": "source:no.such.path>1" }))
            .await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused.to_string().contains("the source's serverStatus has no number at `no.such.path`"),
            "{refused}"
        );
        assert_eq!(service.job(&id).await["load_guard"]["settings"]["max_load"], threshold);
        let extra = crowd(&env.src, 10).await;
        let job = service
            .wait_for(&id, "the hold", |j| j["load_guard"]["throttled"] == true)
            .await;
        let reason = job["load_guard"]["reason"].as_str().unwrap().to_string();
        assert!(reason.starts_with("source:connections.current "), "{reason}");
        assert!(reason.ends_with(&format!("> {limit}")), "{reason}");
        assert!(job["load_guard"]["signals"]["source:connections.current"].as_f64() > Some(limit as f64));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let held = count(&dst, &d).await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(count(&dst, &d).await, held, "held while the connections are open");
        let (_, metrics) = service.get("/metrics").await;
        let metrics = metrics.as_str().unwrap().to_string();
        let line = metric_line(&metrics, &format!("mongoferry_throttled{{job=\"{id}\""));
        assert!(line.is_some_and(|l| l.contains("connections.current") && l.ends_with(" 1")), "{metrics}");
        disperse(extra).await;
        service
            .wait_for(&id, "the release", |j| j["load_guard"]["throttled"] == false)
            .await;
        let goes_on = within(Duration::from_secs(5), || async { count(&dst, &d).await > held });
        assert!(goes_on.await.is_some(), "the job went on once the connections closed");
        // Critical now, hibernating rather than stopping: held while the crowd is there, and
        // going on by itself after it left.
        let (status, patched) = service
            .patch(
                &format!("/api/jobs/{id}"),
                json!({ "max_load": null, "critical_load": threshold, "critical_load_hibernate_secs": 1 }),
            )
            .await;
        assert_eq!(status, 200, "{patched}");
        assert!(patched["load_guard"]["settings"]["max_load"].is_null(), "{patched}");
        let extra = crowd(&env.src, 10).await;
        let job = service
            .wait_for(&id, "the hibernation", |j| {
                j["load_guard"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("hibernating 1 s"))
            })
            .await;
        assert_eq!(job["state"], "running", "{job}");
        let held = count(&dst, &d).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let after = count(&dst, &d).await;
        // At most the batches being written when it began (4 workers, 100 documents each).
        assert!(after <= held + 400, "hibernating: {held} then {after}: {}", service.job(&id).await);
        disperse(extra).await;
        let job = service
            .wait_for(&id, "the end", |j| j["state"] == "completed")
            .await;
        let decisions = job["load_guard"]["decisions"].as_array().unwrap();
        assert!(decisions.len() >= 4, "{job}");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 20_000);
    });
}

#[test]
fn a_sync_shows_its_oplog_headroom_is_not_held_when_it_is_short_and_its_commit_waits_for_the_flag()
{
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("room"), env.dst_db("room"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(200, 50)).await;
        let flags = tempfile::tempdir().unwrap();
        let hold = flags.path().join("hold");
        let postpone = flags.path().join("postpone");
        std::fs::write(&postpone, "").unwrap();
        // Every signal the guard has would hold it: the flag file exists. A headroom minimum
        // of 30 days is more than the test server's oplog can have, so the sync is not held.
        std::fs::write(&hold, "").unwrap();
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "mode": "sync", "throttle_flag_file": hold, "min_oplog_headroom_secs": 2_592_000,
            "postpone_commit_flag_file": postpone, "guard_interval_ms": 200,
        });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        let job = service
            .wait_for(&id, "the live phase", |j| {
                j["progress"]["sync"]["phase"] == "live"
            })
            .await;
        let guard = &job["load_guard"];
        assert_eq!(guard["throttled"], false, "{job}");
        let reason = guard["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("not held, oplog headroom "), "{job}");
        assert!(
            reason.ends_with(&format!("flag file {} exists", hold.display())),
            "{job}"
        );
        // The headroom: the saved position's time minus the oldest oplog entry's.
        let oldest = src
            .database("local")
            .collection::<Document>("oplog.rs")
            .find_one(doc! {})
            .sort(doc! { "$natural": 1 })
            .await
            .unwrap()
            .unwrap()
            .get_timestamp("ts")
            .unwrap()
            .time;
        let headroom = guard["signals"]["oplog_headroom_secs"].as_f64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            headroom >= 0.0 && headroom <= now - f64::from(oldest) + 1.0,
            "{headroom} {oldest}"
        );
        let (_, metrics) = service.get("/metrics").await;
        let metrics = metrics.as_str().unwrap().to_string();
        assert!(
            metric_line(
                &metrics,
                &format!("mongoferry_oplog_headroom_seconds{{job=\"{id}\"}}")
            )
            .is_some(),
            "{metrics}"
        );
        // A write is applied though the flag file exists.
        src.database(&s)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": 10_000, "late": true })
            .await
            .unwrap();
        let dst = env.dst_client().await;
        let applied = within(Duration::from_secs(20), || async {
            count(&dst, &d).await == 201
        });
        assert!(applied.await.is_some(), "the change was applied");
        // The commit waits while its flag file exists, and says why.
        let (status, committing) = service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        assert_eq!(status, 200, "{committing}");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let job = service.job(&id).await;
        assert_eq!(job["state"], "running", "{job}");
        let reasons = job["can_commit"]["reasons"].to_string();
        assert!(
            reasons.contains("commit postponed while the flag file"),
            "{job}"
        );
        std::fs::remove_file(&postpone).unwrap();
        service
            .wait_for(&id, "the commit", |j| j["state"] == "completed")
            .await;
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 201);
    });
}

#[test]
fn a_move_is_held_before_it_copies_or_deletes_anything() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mv"), env.dst_db("mv"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(2_000, 100)).await;
        let dst = env.dst_client().await;
        let data = tempfile::tempdir().unwrap();
        let flag = data.path().join("hold");
        std::fs::write(&flag, "").unwrap();
        let state = data.path().join("state.db").display().to_string();
        let ns = format!("{s}.c:{d}.c");
        let flag_text = flag.display().to_string();
        let mut argv = copy_argv(&env, &ns, &state, &["--throttle-flag-file", &flag_text]);
        argv[0] = "move";
        let (mut child, log) = spawn(&argv, data.path());
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(count(&dst, &d).await, 0, "nothing copied while held");
        assert_eq!(count(&src, &s).await, 2_000, "nothing deleted while held");
        std::fs::remove_file(&flag).unwrap();
        let (status, _) = exit_within(&mut child, Duration::from_secs(60)).await;
        assert!(status.success(), "{}", read_log(log));
        assert_eq!(count(&dst, &d).await, 2_000);
        assert_eq!(count(&src, &s).await, 0);
    });
}

#[test]
fn the_services_flag_file_holds_a_syncs_changes_and_every_job() {
    let dir = tempfile::tempdir().unwrap();
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("hold-all");
    let service = common::service::Serve::with_state(&dir.path().join("jobs.json"))
        .arg("--throttle-flag-file")
        .arg(flag.display().to_string())
        .start();
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("all"), env.dst_db("all"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(100, 50)).await;
        let dst = env.dst_client().await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            // The test server's oplog is as young as the job's position: no minimum, or the
            // guard would not hold a sync so short of headroom.
            "mode": "sync", "guard_interval_ms": 200, "min_oplog_headroom_secs": 0,
        });
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service
            .wait_for(&id, "the live phase", |j| {
                j["progress"]["sync"]["phase"] == "live"
            })
            .await;
        std::fs::write(&flag, "").unwrap();
        let job = service
            .wait_for(&id, "the hold", |j| j["load_guard"]["throttled"] == true)
            .await;
        let expected = format!("the service's flag file {} exists", flag.display());
        assert_eq!(job["load_guard"]["reason"], expected.as_str(), "{job}");
        src.database(&s)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": 5_000 })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(count(&dst, &d).await, 100, "the change waits while held");
        std::fs::remove_file(&flag).unwrap();
        let applied = within(Duration::from_secs(3), || async {
            count(&dst, &d).await == 101
        });
        assert!(
            applied.await.is_some(),
            "applied once the flag file was gone"
        );
        let (status, _) = service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        assert_eq!(status, 200);
        service
            .wait_for(&id, "the commit", |j| j["state"] == "completed")
            .await;
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 101);
    });
}
