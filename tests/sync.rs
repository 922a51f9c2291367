//! `mongoferry sync`: a copy, then the source's changes, against real test servers. Every
//! comparison reads both sides with clients of its own, byte for byte.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dump, exit_within, insert_raw, mongoferry, read_log, spawn, stderr, TestEnv};
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::Client;
use serde_json::Value;

/// Writes a mix of inserts, updates, replaces and deletes (and re-inserts of deleted `_id`s)
/// into `db.c` until `stop`; returns how many writes it made.
async fn write_load(client: Client, db: String, first_new: i64, stop: Arc<AtomicBool>) -> u64 {
    let c = client.database(&db).collection::<Document>("c");
    let seed = fastrand::u64(..);
    println!("write load seeded with {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut next, mut writes) = (first_new, 0);
    while !stop.load(Ordering::Relaxed) {
        let id = rng.i64(0..next);
        let outcome = match rng.u8(0..10) {
            0..=2 => {
                next += 1;
                c.insert_one(doc! { "_id": next - 1, "n": rng.i32(..), "s": "new" })
                    .await
                    .map(|_| ())
            }
            3..=5 => c
                .update_one(
                    doc! { "_id": id },
                    doc! { "$inc": { "n": 1 }, "$set": { "u": true } },
                )
                .await
                .map(|_| ()),
            6 => c
                .replace_one(doc! { "_id": id }, doc! { "replaced": rng.i32(..) })
                .await
                .map(|_| ()),
            7..=8 => c.delete_one(doc! { "_id": id }).await.map(|_| ()),
            // Back after a delete (or replaced, if it was never gone).
            _ => c
                .replace_one(doc! { "_id": id }, doc! { "again": true })
                .upsert(true)
                .await
                .map(|_| ()),
        };
        outcome.expect("a write of the load");
        writes += 1;
    }
    writes
}

/// Starts the load in the background.
fn start_load(env: &TestEnv, client: Client, db: &str, first_new: i64) -> Load {
    let _ = env;
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(write_load(client, db.to_string(), first_new, stop.clone()));
    Load { stop, task }
}

struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Load {
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Waits (bounded) until the destination holds exactly the source's documents.
async fn converged(src: &Client, dst: &Client, s: (&str, &str), d: (&str, &str), limit: Duration) {
    let started = Instant::now();
    loop {
        let (a, b) = (dump(src, s.0, s.1).await, dump(dst, d.0, d.1).await);
        if same(&a, &b) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not converged after {limit:?}: {} documents at the source, {} at the destination",
            a.len(),
            b.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn same(a: &[RawDocumentBuf], b: &[RawDocumentBuf]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_bytes() == y.as_bytes())
}

/// The sync part of the (only) job in a state file.
fn sync_state(state: &Path) -> Value {
    let Ok(text) = std::fs::read_to_string(state) else {
        return Value::Null;
    };
    let file: Value = serde_json::from_str(&text).unwrap();
    file["jobs"]
        .as_object()
        .and_then(|jobs| jobs.values().next())
        .map(|job| job["sync"].clone())
        .unwrap_or(Value::Null)
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

#[test]
fn a_mixed_load_during_and_after_the_copy_converges() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("load"), env.dst_db("load"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        insert_raw(&src, &s, "c", &common::sample_docs(5_000, 200)).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.json");
        let ns = format!("{s}.c:{d}.c");
        // A slow copy (about 2.5 s), so that the load runs during it as well as after.
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
            "--batch-size",
            "200",
        ];
        let (mut child, log) = spawn(&argv, data.path());
        let load = start_load(&env, src.clone(), &s, 5_000);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let writes = load.finish().await;
        assert!(writes > 200, "only {writes} writes");
        converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(40)).await;
        // Caught up and idle: the position is saved, the copy complete.
        wait_for("the position saved", Duration::from_secs(10), || {
            !sync_state(&state)["applied"].is_null()
        })
        .await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "sync ended by itself: {}",
            read_log(log)
        );
        sigterm(&child);
        let (status, _) = exit_within(&mut child, Duration::from_secs(20)).await;
        let err = read_log(log);
        assert_eq!(status.code(), Some(130), "{err}");
        assert!(err.contains("stopped; run it again"), "{err}");
        // Writes that changed nothing (an update or delete of a missing `_id`) make no event.
        let sync = sync_state(&state);
        let events = sync["events"].as_u64().unwrap();
        assert!(
            events > writes / 2 && events <= writes,
            "{sync} after {writes} writes"
        );
        assert_eq!(sync["committed"], false);
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn killed_during_the_copy_and_during_the_live_phase_a_rerun_converges() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("kill9"), env.dst_db("kill9"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        insert_raw(&src, &s, "c", &common::sample_docs(12_000, 200)).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.json");
        let ns = format!("{s}.c:{d}.c");
        let state_arg = state.to_str().unwrap();
        let argv = [
            "sync",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--state",
            state_arg,
            "--rate",
            "3000",
            "--batch-size",
            "200",
        ];
        let load = start_load(&env, src.clone(), &s, 12_000);

        // During the copy (about 4 s of it).
        let (mut child, _) = spawn(&argv, data.path());
        wait_for("the start position saved", Duration::from_secs(20), || {
            sync_state(&state)["start"].is_object()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(child.try_wait().unwrap().is_none(), "the copy ended early");
        let _ = child.kill();
        child.wait().unwrap();
        let start = sync_state(&state)["start"].clone();
        assert!(
            sync_state(&state)["applied"].is_null(),
            "killed during the copy"
        );

        // During the live phase: the rerun continues the copy, then follows.
        let (mut child, _) = spawn(&argv, data.path());
        wait_for("changes applied live", Duration::from_secs(60), || {
            sync_state(&state)["events"].as_u64().unwrap_or(0) > 50
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = child.kill();
        child.wait().unwrap();
        assert_eq!(
            sync_state(&state)["start"],
            start,
            "the start position is kept"
        );

        let writes = load.finish().await;
        println!("{writes} writes of the load");
        let out = mongoferry(
            &[&argv[..], &["--until-caught-up", "--quiet"]].concat(),
            Duration::from_secs(90),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(1)).await;
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
        // Caught up is not committed: a later run follows on from the saved position.
        assert_eq!(sync_state(&state)["committed"], false);
        src.database(&s)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": -1, "late": true })
            .await
            .unwrap();
        let again = mongoferry(
            &[&argv[..], &["--until-caught-up", "--quiet"]].concat(),
            Duration::from_secs(60),
        );
        assert!(again.status.success(), "{}", stderr(&again));
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}
