//! A sync's cutover against real test servers: its continuous verification (rogue writes at the
//! destination found and repaired, `can_commit` and its reasons, a verification that resumes
//! after `kill -9`), a commit that proves equality and reports writes past its point, fail back
//! (`POST /api/jobs/{id}/reverse`, `sync --reverse-of KEY`: what is written at the destination
//! reaches the source), and writes blocked at a commit (`block_writes`), refused at submit where
//! the server cannot block them. Every comparison reads both sides with clients of the test's own.

mod common;

use std::time::{Duration, Instant};

use common::service::Service;
use common::*;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use serde_json::{json, Value};

fn sync_spec(env: &TestEnv, src: &str, dst: &str) -> Value {
    json!({
        "from": env.src,
        "to": env.dst,
        "namespaces": [format!("{src}:{dst}")],
        "mode": "sync",
        "commit_watch_secs": 1,
    })
}

fn verification(job: &Value) -> &Value {
    &job["verification"]
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

#[test]
fn rogue_writes_at_the_destination_are_found_repaired_and_the_commit_proves_equality() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("rogue"), env.dst_db("rogue"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        insert_raw(&src, &s, "c", &sample_docs(3_000, 200)).await;
        let (status, job) = service
            .post(
                "/api/jobs",
                sync_spec(&env, &format!("{s}.c"), &format!("{d}.c")),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        let job = service
            .wait_for(&id, "the initial verification", |j| {
                j["can_commit"]["ok"] == true
            })
            .await;
        let v = verification(&job);
        assert_eq!(v["phase"], "continuous", "{job}");
        assert_eq!(v["verified_docs"], 3_000, "{job}");
        assert_eq!(v["mismatches"], 0, "{job}");
        assert!(v["through"].as_f64().is_some(), "{job}");

        // Three rogue writes at the destination: a change, a delete, an extra document.
        let c = dst.database(&d).collection::<Document>("c");
        c.update_one(doc! { "_id": 10_i64 }, doc! { "$set": { "rogue": true } })
            .await
            .unwrap();
        c.delete_one(doc! { "_id": 20_i64 }).await.unwrap();
        c.insert_one(doc! { "_id": "extra", "rogue": true })
            .await
            .unwrap();
        let job = service
            .wait_for(&id, "the three mismatches repaired", |j| {
                count(&verification(j)["repaired"]) >= 3
            })
            .await;
        let v = verification(&job);
        assert_eq!(v["mismatches"], 3, "{job}");
        let mut kinds: Vec<&str> = v["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        kinds.sort();
        assert_eq!(kinds, ["different", "extra", "missing"], "{job}");
        assert!(
            v["recent"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["ns"] == format!("{s}.c -> {d}.c")),
            "{job}"
        );
        assert_same(&env, (&s, "c"), (&d, "c")).await;

        // Commit under a load stopped just before: proven equal, comparing only what changed.
        let sc = src.database(&s).collection::<Document>("c");
        for i in 0..200_i64 {
            sc.update_one(doc! { "_id": i }, doc! { "$set": { "late": i } })
                .await
                .unwrap();
        }
        let (status, job) = service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        assert_eq!(status, 200, "{job}");
        let job = service
            .wait_for(&id, "the commit", |j| j["state"] == "completed")
            .await;
        assert_eq!(job["error"], Value::Null, "{job}");
        let v = verification(&job);
        assert_eq!(v["phase"], "committed", "{job}");
        assert!(v["verified_through"].as_f64().is_some(), "{job}");
        assert!(count(&v["rechecked_at_commit"]) <= 200, "{job}");
        assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn reporting_only_leaves_the_mismatch_and_holds_the_commit_back() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("report"), env.dst_db("report"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        insert_raw(&src, &s, "c", &sample_docs(500, 100)).await;
        let mut body = sync_spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["verify"] = json!("report");
        let (status, job) = service.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service
            .wait_for(&id, "ready to commit", |j| j["can_commit"]["ok"] == true)
            .await;
        let c = dst.database(&d).collection::<Document>("c");
        c.delete_one(doc! { "_id": 7_i64 }).await.unwrap();
        let job = service
            .wait_for(&id, "the mismatch reported", |j| {
                count(&verification(j)["unrepaired"]) == 1
            })
            .await;
        assert_eq!(verification(&job)["repaired"], 0, "{job}");
        assert_eq!(job["can_commit"]["ok"], false, "{job}");
        let reasons = job["can_commit"]["reasons"].to_string();
        assert!(reasons.contains("1 mismatches are unrepaired"), "{job}");
        assert_eq!(
            c.count_documents(doc! {}).await.unwrap(),
            499,
            "not repaired"
        );
        let (status, bad) = service
            .post(
                "/api/jobs",
                json!({"from": env.src, "to": env.dst, "namespaces": ["a.b"], "verify": "repair"}),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
        assert!(bad.to_string().contains("`repair` is for a sync"), "{bad}");
        // Committed anyway: not proven, the mismatch counted once and still unrepaired.
        service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        let job = service
            .wait_for(&id, "the commit", |j| j["state"] == "completed")
            .await;
        let v = verification(&job);
        assert_eq!(
            (&v["mismatches"], &v["unrepaired"]),
            (&json!(1), &json!(1)),
            "{job}"
        );
        assert!(v["verified_through"].is_null(), "{job}");
        let unproven = v["unproven"].as_str().unwrap_or_default();
        assert!(unproven.contains("1 still different"), "{job}");
        assert!(
            job["error"]
                .as_str()
                .unwrap_or_default()
                .contains("not proven"),
            "{job}"
        );
    });
}

/// The verified documents of the (only) job in a state file.
fn verified_docs(state: &std::path::Path) -> (u64, bool) {
    let file = saved_state(state);
    let v = file["jobs"]
        .as_object()
        .and_then(|jobs| jobs.values().next())
        .map(|job| job["sync"]["verification"].clone())
        .unwrap_or(Value::Null);
    let complete = v["namespaces"]
        .as_object()
        .is_some_and(|n| !n.is_empty() && n.values().all(|s| s["complete"] == true));
    (count(&v["verified_docs"]), complete)
}

#[test]
fn killed_during_the_initial_verification_a_rerun_goes_on_from_where_it_stopped() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("vkill"), env.dst_db("vkill"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(6_000, 100)).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.db");
        let ns = format!("{s}.c:{d}.c");
        let argv = [
            "sync",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--state",
            state.to_str().unwrap(),
            "--rate",
            "2000",
        ];
        let (mut child, _) = spawn(&argv, data.path());
        let started = Instant::now();
        while verified_docs(&state).0 < 2_000 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "verification started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        child.wait().unwrap();
        let (before, complete) = verified_docs(&state);
        assert!(!complete && before < 6_000, "killed part way: {before}");

        let (mut child, _) = spawn(&argv, data.path());
        let started = Instant::now();
        while !verified_docs(&state).1 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "verification finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        child.wait().unwrap();
        // Started over, it would have compared the 6,000 again on top of what it had.
        assert_eq!(verified_docs(&state).0, 6_000);
    });
}

#[test]
fn a_write_after_the_commit_point_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("late"), env.dst_db("late"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(300, 100)).await;
        let mut body = sync_spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["commit_watch_secs"] = json!(5);
        let (_, job) = service.post("/api/jobs", body).await;
        let id = job["id"].clone();
        service
            .wait_for(&id, "ready to commit", |j| j["can_commit"]["ok"] == true)
            .await;
        service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        service
            .wait_for(&id, "the commit point", |j| {
                j["progress"]["sync"]["phase"] == "committed"
            })
            .await;
        src.database(&s)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": "late", "after": "the commit" })
            .await
            .unwrap();
        let job = service
            .wait_for(&id, "the end of the watch", |j| j["state"] == "completed")
            .await;
        let writes = &job["writes_after_commit"];
        assert_eq!(writes["count"], 1, "{job}");
        assert_eq!(writes["namespaces"], json!([format!("{s}.c")]), "{job}");
        assert_eq!(writes["ids"], json!(["late"]), "{job}");
        let message = job["error"].as_str().unwrap_or_default();
        assert!(message.contains("after the commit point"), "{job}");
        // Proven at the commit; the late write is not applied.
        assert!(
            verification(&job)["verified_through"].as_f64().is_some(),
            "{job}"
        );
        let dst = env.dst_client().await;
        let late = dst
            .database(&d)
            .collection::<Document>("c")
            .count_documents(doc! { "_id": "late" })
            .await
            .unwrap();
        assert_eq!(late, 0);
    });
}

/// Starts a sync of `s.c` to `d.c` through `service`, commits it once live, and returns its id.
async fn committed_sync(service: &Service, env: &TestEnv, s: &str, d: &str) -> Value {
    let (status, job) = service
        .post(
            "/api/jobs",
            sync_spec(env, &format!("{s}.c"), &format!("{d}.c")),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].clone();
    service
        .wait_for(&id, "ready to commit", |j| j["can_commit"]["ok"] == true)
        .await;
    let c = env.src_client().await;
    c.database(s)
        .collection::<Document>("c")
        .insert_one(doc! { "_id": -1, "last": "before the commit" })
        .await
        .unwrap();
    let (status, job) = service
        .post(&format!("/api/jobs/{id}/commit"), json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    let job = service
        .wait_for(&id, "the commit", |j| j["state"] == "completed")
        .await;
    assert_eq!(job["progress"]["sync"]["phase"], "committed", "{job}");
    assert_same(env, (s, "c"), (d, "c")).await;
    id
}

/// Writes at the destination after the commit: an insert, an update, a delete.
async fn write_at(client: &Client, db: &str) {
    let c = client.database(db).collection::<Document>("c");
    c.insert_one(doc! { "_id": 100_000, "made": "after the commit" })
        .await
        .unwrap();
    c.update_one(doc! { "_id": 1_i64 }, doc! { "$set": { "changed": true } })
        .await
        .unwrap();
    let deleted = c.delete_one(doc! { "_id": 2_i64 }).await.unwrap();
    assert_eq!(deleted.deleted_count, 1);
}

/// Waits (bounded) until `db.c` at `client` shows the writes of [`write_at`].
async fn wait_for_writes(client: &Client, db: &str) {
    let c = client.database(db).collection::<Document>("c");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inserted = c.find_one(doc! { "_id": 100_000 }).await.unwrap().is_some();
        let updated = c
            .find_one(doc! { "_id": 1_i64, "changed": true })
            .await
            .unwrap()
            .is_some();
        let deleted = c.find_one(doc! { "_id": 2_i64 }).await.unwrap().is_none();
        if inserted && updated && deleted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the destination's writes did not reach the source (insert {inserted}, update \
             {updated}, delete {deleted})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_committed_sync_reversed_brings_the_destinations_writes_back_to_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("rev"), env.dst_db("rev"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(300, 200)).await;
        let id = committed_sync(&service, &env, &s, &d).await;

        let (status, reverse) = service
            .post(&format!("/api/jobs/{id}/reverse"), json!({}))
            .await;
        assert_eq!(status, 202, "{reverse}");
        let rid = reverse["id"].clone();
        assert_ne!(rid, id, "{reverse}");
        assert_eq!(reverse["spec"]["mode"], "sync", "{reverse}");
        assert_eq!(
            reverse["spec"]["namespaces"],
            json!([format!("{d}.c:{s}.c")]),
            "{reverse}"
        );
        // Asked again while it runs: the same reverse.
        let (status, again) = service
            .post(&format!("/api/jobs/{id}/reverse"), json!({}))
            .await;
        assert_eq!((status, &again["id"]), (200, &rid), "{again}");
        let job = service
            .wait_for(&rid, "the reverse's live phase", |j| {
                j["progress"]["sync"]["phase"] == "live"
            })
            .await;
        // No initial copy: the sides were equal at the commit point.
        assert_eq!(job["progress"]["docs"], 0, "{job}");

        // The application, moved to the destination, writes there; the source follows.
        write_at(&env.dst_client().await, &d).await;
        wait_for_writes(&src, &s).await;
        assert_same(&env, (&s, "c"), (&d, "c")).await;

        // A sync that is not committed (the reverse itself, running) cannot be reversed.
        let (status, refused) = service
            .post(&format!("/api/jobs/{rid}/reverse"), json!({}))
            .await;
        assert_eq!(status, 409, "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("not committed"),
            "{refused}"
        );
        let (status, _) = service
            .post(&format!("/api/jobs/{rid}/commit"), json!({}))
            .await;
        assert_eq!(status, 200);
        service
            .wait_for(&rid, "the reverse's commit", |j| j["state"] == "completed")
            .await;
        // Once that reverse is committed, the source has moved on: not started again.
        let (status, refused) = service
            .post(&format!("/api/jobs/{id}/reverse"), json!({}))
            .await;
        assert_eq!(status, 409, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("ran and was committed"),
            "{refused}"
        );
        // The reverse, committed, is reversed in turn: forward again, from its commit point.
        let (status, again) = service
            .post(&format!("/api/jobs/{rid}/reverse"), json!({}))
            .await;
        assert_eq!(status, 202, "{again}");
        let forward_again = again["id"].clone();
        let job = service
            .wait_for(&forward_again, "forward again, live", |j| {
                j["progress"]["sync"]["phase"] == "live"
            })
            .await;
        assert_eq!(job["progress"]["docs"], 0, "{job}");
        let c = src.database(&s).collection::<Document>("c");
        c.insert_one(doc! { "_id": 200_000, "made": "back at the source" })
            .await
            .unwrap();
        let dst = env.dst_client().await;
        let at_destination = dst.database(&d).collection::<Document>("c");
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_destination
            .find_one(doc! { "_id": 200_000 })
            .await
            .unwrap()
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "the source's write did not reach the destination"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_same(&env, (&s, "c"), (&d, "c")).await;
        let (status, _) = service
            .post(&format!("/api/jobs/{forward_again}/cancel"), json!({}))
            .await;
        assert_eq!(status, 200);

        // Nor can a sync with a filter, even committed.
        let mut filtered = sync_spec(&env, &format!("{s}.c"), &format!("{d}.f"));
        filtered["filter"] = json!({ "_id": { "$gte": 0 } });
        let (status, job) = service.post("/api/jobs", filtered).await;
        assert_eq!(status, 202, "{job}");
        let fid = job["id"].clone();
        let (status, refused) = service
            .post(&format!("/api/jobs/{fid}/reverse"), json!({}))
            .await;
        assert_eq!(status, 409, "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("filter"),
            "{refused}"
        );
        let (status, _) = service
            .post(&format!("/api/jobs/{fid}/cancel"), json!({}))
            .await;
        assert_eq!(status, 200);
        // And a job that does not exist is not found.
        let (status, _) = service.post("/api/jobs/9999/reverse", json!({})).await;
        assert_eq!(status, 404);
    });
}

#[test]
fn sync_reverse_of_on_the_command_line_follows_the_destination_from_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("revcli"), env.dst_db("revcli"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(200, 200)).await;
        committed_sync(&service, &env, &s, &d).await;
        assert!(service.stop(), "the service stops cleanly");
        write_at(&env.dst_client().await, &d).await;

        // The forward job's key, as its summary prints it.
        let mut forward = mongoferry::spec::JobSpec::new(&env.src, &env.dst, &[]);
        forward.endpoints.namespaces = vec![format!("{s}.c:{d}.c")];
        forward.mode = Some(mongoferry::spec::Mode::Sync);
        let key = forward.validate().unwrap().job_key().0 .0;
        let state = dir.path().join("copy-state.db");
        let state = state.to_str().unwrap();
        let run = |args: Vec<String>| async move {
            let args: Vec<String> = ["sync", "--quiet", "--state", state]
                .iter()
                .map(|a| a.to_string())
                .chain(args)
                .collect();
            mongoferry_async(args, Duration::from_secs(90)).await
        };
        let args = |from: &str, to: &str, key: &str| {
            ["--reverse-of", key, "--from", from, "--to", to]
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        };

        // Refused before anything is written: an unknown key, the servers swapped, --ns given.
        let out = run(args(&env.dst, &env.src, "0123456789abcdef")).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no job 0123456789abcdef"),
            "{}",
            stderr(&out)
        );
        let out = run(args(&env.src, &env.dst, &key)).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("give its destination as --from"),
            "{}",
            stderr(&out)
        );
        let mut with_ns = args(&env.dst, &env.src, &key);
        with_ns.extend(["--ns".to_string(), format!("{d}.c")]);
        let out = run(with_ns).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--ns: --reverse-of"),
            "{}",
            stderr(&out)
        );
        let c = src.database(&s).collection::<Document>("c");
        assert!(c.find_one(doc! { "_id": 100_000 }).await.unwrap().is_none());

        // The reverse: the destination's writes since the commit, and nothing copied first.
        let mut reverse = args(&env.dst, &env.src, &key);
        reverse.extend(["--until-caught-up".to_string(), "--json".to_string()]);
        let out = run(reverse).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(&stdout(&out)).expect("a JSON summary");
        assert_eq!(summary["docs"], 0, "{summary}");
        assert!(
            summary["sync"]["events"].as_u64().unwrap() >= 3,
            "{summary}"
        );
        wait_for_writes(&src, &s).await;
        assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn writes_blocked_at_the_commit_are_refused_at_submit_where_the_server_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("block"), env.dst_db("block"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(20, 100)).await;
        let dst = env.dst_client().await;
        let written = || async { dst.list_database_names().await.unwrap().contains(&d) };

        // The API: 400, naming the server and what it lacks.
        let mut body = sync_spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["block_writes"] = json!("destination");
        let (status, refused) = service.post("/api/jobs", body.clone()).await;
        assert_eq!(status, 400, "{refused}");
        let text = refused.to_string();
        assert!(text.contains("setUserWriteBlockMode"), "{text}");
        assert!(text.contains("the destination mongodb://"), "{text}");
        assert!(service.jobs().await.is_empty(), "no job was started");
        // Only a sync commits.
        body["mode"] = json!("copy");
        let (status, refused) = service.post("/api/jobs", body).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused.to_string().contains("only a sync job"), "{refused}");

        // The command line: refused before anything is written.
        let out = mongoferry(
            &[
                "sync",
                "--quiet",
                "--no-state",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.c:{d}.c"),
                "--block-writes",
                "both",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("setUserWriteBlockMode"), "{text}");
        assert!(text.contains("nothing was written"), "{text}");
        assert!(text.contains("the source mongodb://"), "{text}");
        assert!(!written().await, "the destination was written");
    });
}

#[test]
fn a_commit_right_after_a_write_load_stops_completes_verified_with_both_sides_equal() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("underload"), env.dst_db("underload"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(2_000, 100)).await;
        let (status, job) = service
            .post(
                "/api/jobs",
                sync_spec(&env, &format!("{s}.c"), &format!("{d}.c")),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service
            .wait_for(&id, "ready to commit", |j| j["can_commit"]["ok"] == true)
            .await;
        // Inserts, updates and deletes for 3 s; the commit the moment they stop.
        let c = src.database(&s).collection::<Document>("c");
        let started = Instant::now();
        let mut next = 10_000_i64;
        while started.elapsed() < Duration::from_secs(3) {
            let any = fastrand::i64(0..2_000);
            match fastrand::u8(0..3) {
                0 => {
                    c.insert_one(doc! { "_id": next, "new": true })
                        .await
                        .unwrap();
                    next += 1;
                }
                1 => {
                    c.update_one(doc! { "_id": any }, doc! { "$inc": { "n": 1 } })
                        .await
                        .unwrap();
                }
                _ => {
                    c.delete_one(doc! { "_id": any }).await.unwrap();
                }
            }
        }
        let (status, job) = service
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        assert_eq!(status, 200, "{job}");
        let job = service
            .wait_for(&id, "the commit", |j| j["state"] == "completed")
            .await;
        assert_eq!(job["error"], Value::Null, "{job}");
        let v = verification(&job);
        assert!(v["verified_through"].as_f64().is_some(), "{job}");
        assert_eq!(v["mismatches"], 0, "{job}");
        assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}
