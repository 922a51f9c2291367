//! Several `mongoferry serve` nodes on one MongoDB state: the same jobs on every node, commands
//! carried to the node that runs a job, partitions copied by more than one node, and the job of
//! a node killed with `-9` taken over by another.

mod common;

use std::path::Path;
use std::time::Duration;

use common::service::{Serve, Service};
use common::*;
use serde_json::{json, Value};

/// `host:port` of a test server's URI, for `--allow-cluster`.
fn endpoint(uri: &str) -> String {
    let rest = uri.split("://").nth(1).expect("a URI");
    rest.split(['/', '?']).next().unwrap().to_string()
}

/// A service node on the MongoDB state `state`, allowed to reach only the test servers, that
/// takes over the jobs of a node silent for 3 s.
fn node(env: &TestEnv, state: &str) -> Serve {
    leased(env, state, "3")
}

/// As [`node`], with a lease of `secs`.
fn leased(env: &TestEnv, state: &str, secs: &str) -> Serve {
    Serve::with_state(Path::new(state))
        .arg("--lease-seconds")
        .arg(secs)
        .arg("--allow-cluster")
        .arg(endpoint(&env.src))
        .arg("--allow-cluster")
        .arg(endpoint(&env.dst))
}

fn ids(jobs: &[Value]) -> Vec<Value> {
    jobs.iter().map(|j| j["id"].clone()).collect()
}

/// Waits until `service` knows job `id` (another node's job shows within a heartbeat or two).
async fn appears(service: &Service, id: &Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while service.get(&format!("/api/jobs/{id}")).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never showed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits `body` to `node`, and waits until `other` shows the job too; its id.
async fn submit(node: &Service, other: &Service, body: Value) -> Value {
    let (status, job) = node.post("/api/jobs", body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].clone();
    appears(other, &id).await;
    id
}

/// Waits until `service` shows two nodes copying documents of job `id`.
async fn both_copying(service: &Service, id: &Value) -> Value {
    service
        .wait_for(id, "both nodes copying", |j| {
            let nodes = j["nodes"].as_array().cloned().unwrap_or_default();
            nodes.len() == 2 && nodes.iter().all(|n| n["docs"].as_u64() > Some(0))
        })
        .await
}

/// The node that runs job `id`, as `service` shows it.
async fn runner(service: &Service, id: &Value) -> Value {
    let job = service
        .wait_for(id, "the node running the job", |j| {
            j["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["role"] == "runs"))
        })
        .await;
    let nodes = job["nodes"].as_array().unwrap();
    nodes.iter().find(|n| n["role"] == "runs").unwrap()["node"].clone()
}

/// Waits until `service` shows job `id` run by a node other than `gone`.
async fn taken_from(service: &Service, id: &Value, gone: &Value) -> Value {
    service
        .wait_for(id, "the job run by another node", |j| {
            j["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["role"] == "runs" && n["node"] != *gone))
        })
        .await
}

/// Waits until `service` shows job `id` in a state that `check` accepts.
async fn wait_state(service: &Service, id: &Value, check: impl Fn(&str) -> bool) -> Value {
    service
        .wait_for(id, "a state", |job| {
            check(job["state"].as_str().unwrap_or(""))
        })
        .await
}

#[test]
fn nodes_on_one_state_show_the_same_jobs_share_partitions_and_carry_commands() {
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("nodes");
        let a = node(&env, &state).start();
        let b = node(&env, &state).start();
        let (s, d) = (env.src_db("nodes"), env.dst_db("nodes"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(8_000, 512)).await;
        // Slow at first, so that the other node joins while partitions are left.
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "partition_docs": 500, "workers": 2, "batch_size": 100, "rate": 400
        });
        let (status, job) = a.post("/api/jobs", body.clone()).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();

        // The other node shows the same job, and the same spec submitted there is that job.
        appears(&b, &id).await;
        let seen = b
            .wait_for(&id, "the job on the other node", |j| {
                j["state"] == "running"
            })
            .await;
        assert_eq!(seen["spec"], job["spec"], "{seen}");
        let (status, again) = b.post("/api/jobs", body).await;
        assert_eq!((status, &again["id"]), (200, &id), "{again}");

        // Both nodes copy partitions of it.
        let both = both_copying(&a, &id).await;
        let roles: Vec<&str> = both["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["runs", "helps"], "{both}");
        // Each node counts both alive on the state.
        for service in [&a, &b] {
            let (_, metrics) = service.get("/metrics").await;
            let metrics = metrics.as_str().unwrap().to_string();
            assert!(
                metrics.lines().any(|l| l == "mongoferry_service_nodes 2"),
                "{metrics}"
            );
        }

        // Each node's metrics count what it copied itself: their sum counts each document once.
        let copied = |service: &Service| {
            let request = service.request(reqwest::Method::GET, "/metrics");
            let prefix = format!("mongoferry_docs_copied_total{{job=\"{id}\"");
            async move {
                let text = request.send().await.unwrap().text().await.unwrap();
                text.lines()
                    .filter(|l| l.starts_with(&prefix))
                    .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                    .sum::<u64>()
            }
        };
        let (at_a, at_b) = (copied(&a).await, copied(&b).await);
        assert!(at_a > 0 && at_b > 0, "{at_a} and {at_b}");
        assert!(at_a + at_b <= 8_000, "{at_a} and {at_b}");

        // The job's rate limit holds for both nodes together (each takes half of it).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let written = || async {
            env.dst_client()
                .await
                .database(&d)
                .collection::<mongodb::bson::Document>("c")
                .count_documents(mongodb::bson::doc! {})
                .await
                .unwrap()
        };
        let (before, started) = (written().await, std::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(4)).await;
        let rate = (written().await - before) as f64 / started.elapsed().as_secs_f64();
        assert!(rate < 400.0 * 1.3, "{rate:.0} docs/s under a limit of 400");

        // Commands given to the node that does not run the job reach the one that does.
        let (status, paused) = b.post(&format!("/api/jobs/{id}/pause"), json!({})).await;
        assert_eq!(
            (status, paused["state"].as_str()),
            (200, Some("paused")),
            "{paused}"
        );
        wait_state(&a, &id, |s| s == "paused").await;
        let (status, patched) = b
            .patch(
                &format!("/api/jobs/{id}"),
                json!({"rate": null, "workers": 3}),
            )
            .await;
        assert_eq!(status, 200, "{patched}");
        assert_eq!(patched["limits"]["rate"], Value::Null, "{patched}");
        assert_eq!(patched["workers"], 3, "{patched}");
        let at_a = a.job(&id).await;
        assert_eq!(
            (at_a["limits"]["rate"].clone(), at_a["workers"].clone()),
            (Value::Null, json!(3))
        );
        let (status, resumed) = b.post(&format!("/api/jobs/{id}/resume"), json!({})).await;
        assert_eq!(
            (status, resumed["state"].as_str()),
            (200, Some("running")),
            "{resumed}"
        );

        let done = wait_state(&a, &id, |s| s == "completed").await;
        assert_eq!(done["error"], Value::Null, "{done}");
        wait_state(&b, &id, |s| s == "completed").await;
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 8_000);

        // The other node shows the job's charts as the node that ran it saved them.
        let series = format!("/api/jobs/{id}/series");
        let ((_, at_a), (_, at_b)) = (a.get(&series).await, b.get(&series).await);
        let points = at_a["series"]["docs_per_sec"]
            .as_array()
            .map_or(0, Vec::len);
        assert!(points >= 5, "a point a second of a run of seconds: {at_a}");
        assert_eq!(at_b, at_a);

        // A command for an ended job is refused by either node, with the same answer.
        let (status, refused) = b.post(&format!("/api/jobs/{id}/pause"), json!({})).await;
        assert_eq!(status, 409, "{refused}");
        assert_eq!(ids(&a.jobs().await), ids(&b.jobs().await));

        // A job submitted to the other node gets an id no node gave before.
        let (s2, d2) = (env.src_db("nodes2"), env.dst_db("nodes2"));
        insert_raw(&env.src_client().await, &s2, "c", &sample_docs(100, 64)).await;
        let spec2 =
            json!({"from": env.src, "to": env.dst, "namespaces": [format!("{s2}.c:{d2}.c")]});
        let (status, second) = b.post("/api/jobs", spec2).await;
        assert_eq!(status, 202, "{second}");
        assert_ne!(second["id"], id);
        appears(&a, &second["id"]).await;
        wait_state(&a, &second["id"], |s| s == "completed").await;
        assert!(a.stop() && b.stop(), "both nodes stop cleanly");
    });
}

/// A password every node opens with the credentials key they share.
const PASSWORD: &str = "Node-s3cret-pw";

#[test]
fn the_job_of_a_node_killed_with_sigkill_is_taken_over_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("credentials.key");
    std::fs::write(&key, "the-key-every-node-of-the-test-has\n").unwrap();
    let key = key.display().to_string();
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("takeover");
        let keyed = |serve: Serve| serve.arg("--credentials-key-file").arg(key.clone());
        let a = keyed(node(&env, &state)).spawn();
        let b = keyed(node(&env, &state)).start();
        let (s, d) = (env.src_db("takeover"), env.dst_db("takeover"));
        let (from, to) = with_user(&env, "ferry", PASSWORD).await;
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(6_000, 512)).await;
        // One cursor, slowed down: only the node that runs it copies. Its URIs carry a password,
        // which the shared history keeps sealed.
        let body = json!({
            "from": from, "to": to,
            "namespaces": [format!("{s}.c:{d}.c")], "workers": 2, "batch_size": 100, "rate": 1000
        });
        let id = submit(&a, &b, body).await;
        b.wait_for(&id, "progress seen by the other node", |j| {
            j["progress"]["docs"].as_u64() > Some(1_000)
        })
        .await;
        let node_a = runner(&b, &id).await;
        // SIGKILL: no word to the other node.
        drop(a);
        let taken = taken_from(&b, &id, &node_a).await;
        assert_eq!(taken["id"], id);
        let (status, faster) = b
            .patch(&format!("/api/jobs/{id}"), json!({"rate": null}))
            .await;
        assert_eq!(status, 200, "{faster}");
        let done = wait_state(&b, &id, |s| s == "completed").await;
        assert!(
            done["progress"]["skipped"].as_u64() > Some(0),
            "it continued from the checkpoint: {done}"
        );
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 6_000);
        assert!(!done.to_string().contains(PASSWORD), "{done}");
        let stored = client(&state)
            .await
            .default_database()
            .expect("the state URI names its database")
            .collection::<mongodb::bson::Document>("service_jobs")
            .find_one(mongodb::bson::doc! {})
            .await
            .unwrap()
            .unwrap();
        assert!(!stored.to_string().contains(PASSWORD), "{stored}");
        assert!(
            stored
                .get_str("record")
                .unwrap()
                .contains("\"sealed\":\"v1:"),
            "{stored}"
        );
        assert!(b.stop());
    });
}

#[test]
fn a_node_helping_with_a_partitioned_job_finishes_it_when_the_node_running_it_is_killed() {
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("promote");
        let a = node(&env, &state).spawn();
        let b = node(&env, &state).start();
        let (s, d) = (env.src_db("promote"), env.dst_db("promote"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(8_000, 512)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "partition_docs": 500, "workers": 2, "batch_size": 100, "rate": 300
        });
        let id = submit(&a, &b, body).await;
        both_copying(&b, &id).await;
        let node_a = runner(&b, &id).await;
        // SIGKILL, partitions held part-way. B runs the job then; its helping run goes on with
        // its partitions, and ends.
        drop(a);
        let taken = taken_from(&b, &id, &node_a).await;
        assert!(
            matches!(taken["state"].as_str(), Some("running" | "pending")),
            "{taken}"
        );
        let (status, faster) = b
            .patch(&format!("/api/jobs/{id}"), json!({"rate": null}))
            .await;
        assert_eq!(status, 200, "{faster}");
        let done = wait_state(&b, &id, |s| s == "completed").await;
        let progress = &done["progress"];
        let total = ["docs", "skipped", "failed"]
            .iter()
            .map(|k| progress[k].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(total, 8_000, "{done}");
        assert!(progress["skipped"].as_u64() > Some(0), "{done}");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 8_000);
        assert!(b.stop());
    });
}

#[test]
fn a_node_stopped_with_sigterm_hands_its_job_over_at_once_paused_as_it_was() {
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("handover");
        // A lease far longer than the test's wait: the handover cannot be the lease running out.
        let a = leased(&env, &state, "120").start();
        let b = leased(&env, &state, "120").start();
        let (s, d) = (env.src_db("handover"), env.dst_db("handover"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(5_000, 512)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "workers": 2, "batch_size": 100, "rate": 1000
        });
        let (status, job) = a.post("/api/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        a.wait_for(&id, "progress", |j| {
            j["progress"]["docs"].as_u64() > Some(500)
        })
        .await;
        appears(&b, &id).await;
        // The operator's pause and rate hold across the handover.
        let (status, paused) = a.post(&format!("/api/jobs/{id}/pause"), json!({})).await;
        assert_eq!(status, 200, "{paused}");
        let (status, slower) = a
            .patch(&format!("/api/jobs/{id}"), json!({"rate": 700}))
            .await;
        assert_eq!(status, 200, "{slower}");
        let node_a = runner(&a, &id).await;
        assert!(a.stop(), "a clean stop");
        let started = std::time::Instant::now();
        let taken = taken_from(&b, &id, &node_a).await;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "taken over in {:?}",
            started.elapsed()
        );
        assert_eq!(taken["state"], "paused", "{taken}");
        assert_eq!(taken["limits"]["rate"], 700.0, "{taken}");
        let resumed_at = taken["progress"]["docs"].as_u64().unwrap_or(0)
            + taken["progress"]["skipped"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let still = b.job(&id).await;
        let now = still["progress"]["docs"].as_u64().unwrap_or(0)
            + still["progress"]["skipped"].as_u64().unwrap_or(0);
        assert_eq!(
            (still["state"].as_str(), now),
            (Some("paused"), resumed_at),
            "{still}"
        );
        b.patch(&format!("/api/jobs/{id}"), json!({"rate": null}))
            .await;
        let (status, resumed) = b.post(&format!("/api/jobs/{id}/resume"), json!({})).await;
        assert_eq!(
            (status, resumed["state"].as_str()),
            (200, Some("running")),
            "{resumed}"
        );
        let done = wait_state(&b, &id, |s| s == "completed").await;
        assert_eq!(done["error"], Value::Null, "{done}");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 5_000);
        assert!(b.stop());
    });
}

#[test]
fn a_command_for_a_job_whose_node_does_not_answer_gets_503_and_is_withdrawn() {
    TestEnv::start().run(|env| async move {
        use mongodb::bson::{doc, DateTime, Document};
        let state = env.state_uri("silent");
        let db = client(&state).await.default_database().unwrap();
        // A node that beats but never answers, running job 1.
        let record = json!({
            "id": 1, "spec": {"from": env.src, "to": env.dst, "namespaces": ["a.b"]},
            "state": "running", "workers": 1, "created_at": 0.0, "finished_at": null,
            "error": null, "docs": 0, "bytes": 0
        });
        db.collection::<Document>("service_jobs")
            .insert_one(doc! {
                "_id": 1_i64, "node": "ghost:1:0000", "state": "running",
                "record": record.to_string(), "updated": DateTime::now()
            })
            .await
            .unwrap();
        let nodes = db.collection::<Document>("service_nodes");
        let beating = tokio::spawn(async move {
            loop {
                nodes
                    .update_one(
                        doc! { "_id": "ghost:1:0000" },
                        doc! { "$set": {
                            "host": "elsewhere", "pid": 1_i64, "seen": DateTime::now(),
                            "shares": []
                        } },
                    )
                    .upsert(true)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let b = node(&env, &state).start();
        let id = json!(1);
        appears(&b, &id).await;
        let started = std::time::Instant::now();
        let response = b
            .request(reqwest::Method::POST, "/api/jobs/1/pause")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("ghost:1:0000, which did not answer"),
            "{body}"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let left = db
            .collection::<Document>("service_commands")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(left, 0, "the unanswered command is withdrawn");
        // The job is still the silent node's, as it was.
        assert_eq!(b.job(&id).await["state"], "running");
        beating.abort();
        assert!(b.stop());
    });
}

#[test]
fn a_journaled_job_is_not_helped_so_its_journal_stays_whole() {
    let roots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [root_a, root_b] = roots.each_ref().map(|r| r.path().display().to_string());
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("journaled");
        let a = node(&env, &state)
            .arg("--journal-root")
            .arg(root_a.clone())
            .start();
        let b = node(&env, &state)
            .arg("--journal-root")
            .arg(root_b.clone())
            .start();
        let (s, d) = (env.src_db("journaled"), env.dst_db("journaled"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(3_000, 256)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "partition_docs": 300, "batch_size": 100, "rate": 600, "journal": {"dir": "j"}
        });
        let id = submit(&a, &b, body).await;
        let done = b
            .wait_for(&id, "the job completed", |j| {
                let nodes = j["nodes"].as_array().map_or(0, Vec::len);
                assert!(nodes <= 1, "another node helped: {j}");
                j["state"] == "completed"
            })
            .await;
        assert_eq!(done["error"], Value::Null, "{done}");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 3_000);
        assert!(Path::new(&root_a).join("j").is_dir(), "the journal is on A");
        assert!(
            !Path::new(&root_b).join("j").exists(),
            "nothing journaled on B"
        );
        assert!(a.stop() && b.stop());
    });
}

#[test]
fn a_node_that_cannot_run_a_job_leaves_it_to_one_that_can() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("credentials.key");
    std::fs::write(&key, "the-key-only-some-nodes-have\n").unwrap();
    let key = key.display().to_string();
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("leave");
        let keyed = |serve: Serve| serve.arg("--credentials-key-file").arg(key.clone());
        let a = keyed(node(&env, &state)).spawn();
        let keyless = node(&env, &state).start();
        let (s, d) = (env.src_db("leave"), env.dst_db("leave"));
        let (from, to) = with_user(&env, "ferry", PASSWORD).await;
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(4_000, 256)).await;
        let body = json!({
            "from": from, "to": to, "namespaces": [format!("{s}.c:{d}.c")],
            "batch_size": 100, "rate": 1000
        });
        let id = submit(&a, &keyless, body).await;
        keyless
            .wait_for(&id, "progress", |j| {
                j["progress"]["docs"].as_u64() > Some(500)
            })
            .await;
        // SIGKILL. The node without the key cannot open the job's credentials: it does not take
        // the job over.
        drop(a);
        let shown = wait_state(&keyless, &id, |s| s == "interrupted").await;
        let error = shown["error"].as_str().unwrap();
        assert!(error.contains("this node cannot run it"), "{shown}");
        assert!(
            error.contains("sealed with a key this service does not have"),
            "{shown}"
        );
        // A node with the key, started later, takes it over and finishes it.
        let b = keyed(node(&env, &state)).start();
        appears(&b, &id).await;
        b.patch(&format!("/api/jobs/{id}"), json!({"rate": null}))
            .await;
        let done = wait_state(&b, &id, |s| s == "completed").await;
        assert!(done["progress"]["skipped"].as_u64() > Some(0), "{done}");
        wait_state(&keyless, &id, |s| s == "completed").await;
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 4_000);
        assert!(keyless.stop() && b.stop());
    });
}

#[test]
fn a_partitioned_sync_is_helped_then_followed_by_its_node_and_committed_from_the_other() {
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("sync");
        let a = node(&env, &state).start();
        let b = node(&env, &state).start();
        let (s, d) = (env.src_db("nsync"), env.dst_db("nsync"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(4_000, 256)).await;
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
            "mode": "sync", "partition_docs": 500, "batch_size": 100, "rate": 400
        });
        let id = submit(&a, &b, body).await;
        both_copying(&a, &id).await;
        a.patch(&format!("/api/jobs/{id}"), json!({"rate": null}))
            .await;
        // The helping run ends with the partitions: the job's own run alone follows the source.
        a.wait_for(&id, "the sync live, followed by its node alone", |j| {
            let nodes = j["nodes"].as_array().cloned().unwrap_or_default();
            j["progress"]["sync"]["phase"] == "live"
                && nodes.len() == 1
                && nodes[0]["role"] == "runs"
        })
        .await;
        // Changes after the copy, then the cutover asked of the other node.
        let more: Vec<_> = (4_000..4_100)
            .map(|i| {
                mongodb::bson::rawdoc! { "_id": i64::from(i), "late": true }
            })
            .collect();
        insert_raw(&src, &s, "c", &more).await;
        let (status, committed) = b.post(&format!("/api/jobs/{id}/commit"), json!({})).await;
        assert_eq!(status, 200, "{committed}");
        let done = wait_state(&a, &id, |s| s == "completed").await;
        assert_eq!(done["error"], Value::Null, "{done}");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 4_100);
        assert!(a.stop() && b.stop());
    });
}

/// The same spec submitted to two nodes at the same moment starts one job: both answer with it
/// (one `202`, the other `200`, as a node answers a spec already submitted to it), and every
/// node shows that one job.
#[test]
fn the_same_spec_submitted_to_two_nodes_at_once_starts_one_job() {
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("twice");
        // The counter of job ids is there already: this test is about the spec's claim.
        let client = client(&state).await;
        client
            .default_database()
            .unwrap()
            .collection::<mongodb::bson::Document>("counters")
            .insert_one(mongodb::bson::doc! { "_id": "service_jobs", "n": 0_i64 })
            .await
            .unwrap();
        let a = node(&env, &state).start();
        let b = node(&env, &state).start();
        let s = env.src_db("twice");
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(2_000, 64)).await;
        let mut jobs = Vec::new();
        // Slow: the job is still running when the other node answers.
        let body = |round: usize| {
            json!({
                "from": env.src, "to": env.dst,
                "namespaces": [format!("{s}.c:{}.c", env.dst_db(&format!("twice{round}")))],
                "workers": 1, "batch_size": 10, "rate": 50
            })
        };
        for round in 0..3 {
            let body = body(round);
            let (at_a, at_b) = tokio::join!(
                a.post("/api/jobs", body.clone()),
                b.post("/api/jobs", body.clone())
            );
            assert_eq!(
                at_a.1["id"], at_b.1["id"],
                "two jobs: {at_a:?} and {at_b:?}"
            );
            let mut statuses = [at_a.0, at_b.0];
            statuses.sort();
            assert_eq!(statuses, [200, 202], "{at_a:?} and {at_b:?}");
            jobs.push(at_a.1["id"].clone());
            // Submitted again later, to either node: the same job.
            let (status, again) = b.post("/api/jobs", body).await;
            assert_eq!((status, &again["id"]), (200, &at_a.1["id"]), "{again}");
        }
        for service in [&a, &b] {
            for id in &jobs {
                appears(service, id).await;
            }
            assert_eq!(ids(&service.jobs().await), jobs, "one job per spec");
        }
        for id in &jobs {
            let (status, job) = a.post(&format!("/api/jobs/{id}/cancel"), json!({})).await;
            assert_eq!(status, 200, "{job}");
            wait_state(&b, id, |s| s == "cancelled").await;
        }
        // Its job ended, the spec starts a new job, on either node.
        let (status, new) = b.post("/api/jobs", body(0)).await;
        assert_eq!(status, 202, "{new}");
        assert!(!jobs.contains(&new["id"]), "{new}");
        let (status, again) = a.post("/api/jobs", body(0)).await;
        assert_eq!((status, &again["id"]), (200, &new["id"]), "{again}");
        let (status, job) = a
            .post(&format!("/api/jobs/{}/cancel", new["id"]), json!({}))
            .await;
        assert_eq!(status, 200, "{job}");
        assert!(a.stop() && b.stop(), "both nodes stop cleanly");
    });
}

/// On a fresh shared state (no counter of job ids yet), many submits at once to two nodes each
/// start a job with an id of its own, and none is answered with a server error.
#[test]
fn concurrent_submits_on_a_fresh_state_get_distinct_ids() {
    TestEnv::start().run(|env| async move {
        let state = env.state_uri("fresh");
        let a = node(&env, &state).start();
        let b = node(&env, &state).start();
        let s = env.src_db("fresh");
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(20, 64)).await;
        let submits = (0..16).map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            let body = json!({
                "from": env.src, "to": env.dst,
                "namespaces": [format!("{s}.c:{}.c", env.dst_db(&format!("fresh{i}")))]
            });
            node.post("/api/jobs", body)
        });
        let answers = futures::future::join_all(submits).await;
        for (status, job) in &answers {
            assert_eq!(*status, 202, "{job}");
        }
        let given: std::collections::HashSet<u64> = answers
            .iter()
            .map(|(_, job)| job["id"].as_u64().expect("a numeric id"))
            .collect();
        assert_eq!(given.len(), answers.len(), "ids given twice: {answers:?}");
        assert!(given.iter().all(|id| *id > 0), "{given:?}");
        for (_, job) in &answers {
            appears(&a, &job["id"]).await;
            wait_state(&a, &job["id"], |s| s == "completed").await;
        }
        assert!(a.stop() && b.stop(), "both nodes stop cleanly");
    });
}
