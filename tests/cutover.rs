//! A sync's continuous verification and its verified cutover, against real test servers: rogue
//! writes at the destination found and repaired, `can_commit` and its reasons, a commit that
//! proves equality, and a verification that resumes after `kill -9`. Every comparison reads both
//! sides with clients of the test's own.

mod common;

use std::time::{Duration, Instant};

use common::service::Service;
use common::*;
use mongodb::bson::{doc, Document};
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
        service
            .post(&format!("/api/jobs/{id}/cancel"), json!({}))
            .await;
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
