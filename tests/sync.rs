//! `mongoferry sync`: a copy, then the source's changes, against real test servers. Every
//! comparison reads both sides with clients of its own, byte for byte.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dump, exit_within, insert_raw, mongoferry, read_log, spawn, stderr, TestEnv};
use futures::TryStreamExt;
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
    let file = common::saved_state(state);
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

/// Replays a sync's journal of `d.c` into `again.c` of the source server, beside the original
/// `s.c`, and checks the two are the same documents.
async fn replayed_beside(
    env: &TestEnv,
    src: &Client,
    journal: &Path,
    (s, d): (&str, &str),
    again: &str,
) {
    let out = mongoferry(
        &[
            "journal",
            "replay",
            journal.to_str().unwrap(),
            "--to",
            &env.src,
            "--quiet",
            "--ns",
            &format!("{d}.c:{again}.c"),
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    converged(src, src, (s, "c"), (again, "c"), Duration::ZERO).await;
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

/// Waits until the destination database holds these collection names.
async fn collections_become(client: &Client, db: &str, names: &[&str], limit: Duration) {
    let started = Instant::now();
    loop {
        let now = common::collection_names(client, db).await;
        if now == names {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{db} holds {now:?}, not {names:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn index_names(client: &Client, db: &str, coll: &str) -> Vec<String> {
    let mut names = client
        .database(db)
        .collection::<Document>(coll)
        .list_index_names()
        .await
        .unwrap();
    names.sort();
    names
}

#[test]
fn schema_changes_are_followed_through_the_renames() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("ddl"), env.dst_db("ddl"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        insert_raw(&src, &s, "a", &common::sample_docs(100, 100)).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.json");
        let ns = format!("{s}.*:{d}");
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
        ];
        let (mut child, log) = spawn(&argv, data.path());
        wait_for("live", Duration::from_secs(30), || {
            !sync_state(&state)["applied"].is_null()
        })
        .await;
        let db = src.database(&s);
        // Created after the start inside `db.*`: followed, with its index and documents.
        db.create_collection("b").await.unwrap();
        insert_raw(&src, &s, "b", &common::sample_docs(20, 50)).await;
        db.run_command(doc! { "createIndexes": "b", "indexes": [
            { "key": { "pad": 1 }, "name": "pad_1" },
        ] })
        .await
        .unwrap();
        // Renamed: its documents go along.
        src.database("admin")
            .run_command(doc! {
                "renameCollection": format!("{s}.a"), "to": format!("{s}.a2"),
            })
            .await
            .unwrap();
        // Created and dropped again.
        db.create_collection("tmp").await.unwrap();
        db.collection::<Document>("tmp").drop().await.unwrap();
        // Written after the rename: lands in the new name.
        db.collection::<Document>("a2")
            .insert_one(doc! { "_id": -5, "after": "rename" })
            .await
            .unwrap();

        collections_become(&dst, &d, &["a2", "b"], Duration::from_secs(30)).await;
        let started = Instant::now();
        while index_names(&dst, &d, "b").await != ["_id_", "pad_1"] {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "index pad_1 not built"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        converged(&src, &dst, (&s, "a2"), (&d, "a2"), Duration::from_secs(30)).await;
        converged(&src, &dst, (&s, "b"), (&d, "b"), Duration::from_secs(30)).await;
        // A dropped index goes too.
        db.run_command(doc! { "dropIndexes": "b", "index": "pad_1" })
            .await
            .unwrap();
        let started = Instant::now();
        while index_names(&dst, &d, "b").await != ["_id_"] {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "index pad_1 not dropped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sigterm(&child);
        let (status, _) = exit_within(&mut child, Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(130), "{}", read_log(log));
        let events = sync_state(&state)["events"].as_u64().unwrap();
        assert!(events >= 6, "{}", sync_state(&state));
    });
}

#[test]
fn a_filtered_sync_deletes_what_stops_matching_and_copies_what_starts() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("filter"), env.dst_db("filter"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        let c = src.database(&s).collection::<Document>("c");
        let docs: Vec<Document> = (0..40)
            .map(|i| doc! { "_id": i, "keep": i % 2 == 0 })
            .collect();
        c.insert_many(docs).await.unwrap();
        let ns = format!("{s}.c:{d}.c");
        let argv = [
            "sync",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--no-state",
            "--filter",
            r#"{"keep": true}"#,
        ];
        let data = tempfile::tempdir().unwrap();
        let (mut child, log) = spawn(&argv, data.path());
        let count = |filter: Document| {
            let dst = dst.clone();
            let d = d.clone();
            async move {
                dst.database(&d)
                    .collection::<Document>("c")
                    .count_documents(filter)
                    .await
                    .unwrap()
            }
        };
        let started = Instant::now();
        while count(doc! {}).await != 20 {
            assert!(started.elapsed() < Duration::from_secs(30), "initial copy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // 0 stops matching, 1 starts, 100 never matches, 101 does.
        c.update_one(doc! { "_id": 0 }, doc! { "$set": { "keep": false } })
            .await
            .unwrap();
        c.update_one(doc! { "_id": 1 }, doc! { "$set": { "keep": true } })
            .await
            .unwrap();
        c.insert_one(doc! { "_id": 100, "keep": false })
            .await
            .unwrap();
        c.insert_one(doc! { "_id": 101, "keep": true })
            .await
            .unwrap();
        let wanted: Vec<RawDocumentBuf> = src
            .database(&s)
            .collection::<RawDocumentBuf>("c")
            .find(doc! { "keep": true })
            .sort(doc! { "_id": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(wanted.len(), 21);
        let started = Instant::now();
        loop {
            let there = dump(&dst, &d, "c").await;
            if same(&wanted, &there) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} documents at the destination, {} match at the source",
                there.len(),
                wanted.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sigterm(&child);
        let (status, _) = exit_within(&mut child, Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(130), "{}", read_log(log));
    });
}

/// A sync run again after its copy completed is not "already complete": it follows the
/// changes on from its saved position, and says so.
/// 50 documents in `s.c`, synced to `d.c` by `sync --until-caught-up` with its state in `dir`;
/// returns that command line, to run again.
async fn synced_until_caught_up(
    env: &TestEnv,
    src: &Client,
    (s, d): (&str, &str),
    dir: &Path,
) -> Vec<String> {
    insert_raw(src, s, "c", &common::sample_docs(50, 100)).await;
    let state = dir.join("state.json");
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
        "--until-caught-up",
        "--quiet",
    ];
    let out = mongoferry(&argv, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    argv.iter().map(|a| a.to_string()).collect()
}

#[test]
fn a_rerun_after_the_copy_says_it_follows_on_and_applies_the_changes() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("again"), env.dst_db("again"));
        let src = env.src_client().await;
        let data = tempfile::tempdir().unwrap();
        let argv = synced_until_caught_up(&env, &src, (&s, &d), data.path()).await;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let c = src.database(&s).collection::<Document>("c");
        for i in 0..3 {
            c.insert_one(doc! { "_id": 1000 + i }).await.unwrap();
        }
        let out = mongoferry(&argv, Duration::from_secs(60));
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("already complete"), "{err}");
        assert!(err.contains("followed the source's changes on"), "{err}");
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn a_position_the_source_no_longer_holds_stops_with_a_clear_error() {
    // A source that keeps only the last 100 changes.
    TestEnv::start_with(&["--oplog-max-entries", "100"]).run(|env| async move {
        let (s, d) = (env.src_db("lost"), env.dst_db("lost"));
        let src = env.src_client().await;
        let data = tempfile::tempdir().unwrap();
        let argv = synced_until_caught_up(&env, &src, (&s, &d), data.path()).await;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // 300 changes later, the saved position is gone from the source's history.
        let c = src.database(&s).collection::<Document>("c");
        for i in 0..300 {
            c.insert_one(doc! { "_id": 1000 + i }).await.unwrap();
        }
        let _ = src
            .database("admin")
            .run_command(doc! { "secantusAdmin.pruneOplog": 1 })
            .await;
        let out = mongoferry(&argv, Duration::from_secs(60));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("no longer holds the changes"), "{err}");
        assert!(err.contains("--restart"), "{err}");
        // Nothing was skipped silently: a full copy again brings it level.
        let again = mongoferry(
            &[&argv[..], &["--restart"]].concat(),
            Duration::from_secs(60),
        );
        assert!(again.status.success(), "{}", stderr(&again));
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn a_lost_position_is_recovered_by_a_reconcile_when_asked() {
    // A source that keeps only the last 100 changes.
    TestEnv::start_with(&["--oplog-max-entries", "100"]).run(|env| async move {
        let (s, d) = (env.src_db("recover"), env.dst_db("recover"));
        let src = env.src_client().await;
        let data = tempfile::tempdir().unwrap();
        let argv = synced_until_caught_up(&env, &src, (&s, &d), data.path()).await;
        // Before the recovery: 300 inserts, 20 updates and 10 deletes, and the saved position
        // is gone.
        let c = src.database(&s).collection::<Document>("c");
        for i in 0..300 {
            c.insert_one(doc! { "_id": 1000 + i }).await.unwrap();
        }
        for i in 0..20 {
            c.update_one(doc! { "_id": i }, doc! { "$set": { "changed": true } })
                .await
                .unwrap();
        }
        c.delete_many(doc! { "_id": { "$gte": 30, "$lt": 40 } })
            .await
            .unwrap();
        let _ = src
            .database("admin")
            .run_command(doc! { "secantusAdmin.pruneOplog": 1 })
            .await;
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = mongoferry(&refs, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--on-history-lost reconcile"),
            "{}",
            stderr(&out)
        );

        // With the flag, while inserts go on: the recovery writes about what changed.
        let during = tokio::spawn({
            let c = c.clone();
            async move {
                for i in 0..200 {
                    c.insert_one(doc! { "_id": 5000 + i }).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let mut recover = argv.clone();
        recover.extend(["--on-history-lost", "reconcile", "--json"].map(String::from));
        let out = common::mongoferry_async(recover, Duration::from_secs(90)).await;
        during.await.unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("history lost"), "{err}");
        let summary: Value = serde_json::from_str(common::stdout(&out).trim()).unwrap();
        let reconciled = &summary["reconcile"];
        let written = reconciled["written"].as_u64().unwrap();
        assert!((320..=520).contains(&written), "{reconciled}");
        assert_eq!(reconciled["deleted"], 10, "{reconciled}");
        assert_eq!(
            summary["sync"]["history_lost"]["recovered"], true,
            "{summary}"
        );
        // Level after a last catch-up (the inserts may have outlasted the first run).
        let out = mongoferry(&refs, Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn a_sync_journal_replays_in_order_to_the_same_documents() {
    TestEnv::start().run(|env| async move {
        let (s, d, again) = (
            env.src_db("jrnl"),
            env.dst_db("jrnl"),
            env.src_db("jrnl_again"),
        );
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        insert_raw(&src, &s, "c", &common::sample_docs(1_000, 100)).await;
        let data = tempfile::tempdir().unwrap();
        let journal = data.path().join("journal");
        let ns = format!("{s}.c:{d}.c");
        let argv = [
            "sync",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--no-state",
            "--journal",
            journal.to_str().unwrap(),
        ];
        let (mut child, log) = spawn(&argv, data.path());
        let load = start_load(&env, src.clone(), &s, 1_000);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let writes = load.finish().await;
        converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(30)).await;
        sigterm(&child);
        let (status, _) = exit_within(&mut child, Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(130), "{}", read_log(log));

        // The copy's upserts, then every change in order (many per `_id`): the same documents.
        replayed_beside(&env, &src, &journal, (&s, &d), &again).await;
        println!("{writes} writes replayed");
        // An export holds each document once: a sync's journal cannot be one.
        let out = mongoferry(
            &[
                "journal",
                "export",
                journal.to_str().unwrap(),
                "--format",
                "ndjson",
                "--ns",
                &format!("{d}.c"),
                "--out",
                data.path().join("out.ndjson").to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("a sync's change"), "{}", stderr(&out));
    });
}

/// Two processes of one partitioned sync on one MongoDB state share its initial copy (both
/// copy partitions, while a load writes to the source), then one of them follows the source
/// while the other waits to take over; both end caught up, and a last run finds the
/// destination byte-equal.
#[test]
fn two_processes_share_a_syncs_initial_copy_and_one_follows() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("sharedsync"), env.dst_db("sharedsync"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        insert_raw(&src, &s, "c", &common::sample_docs(4_000, 200)).await;
        let state = env.state_uri("sharedsync");
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
            &state,
            "--partition-docs",
            "500",
            "--lease-seconds",
            "3",
            "--rate",
            "800",
            "--until-caught-up",
            "--json",
            "--quiet",
        ];
        let load = start_load(&env, src.clone(), &s, 4_000);
        let processes = common::spawn_many(&argv, 2).await;
        // The load goes on during the initial copy (about 2.5 s at these rates), then stops so
        // that the follower can catch up.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = load.finish().await;
        let mut copied = Vec::new();
        for process in processes {
            let summary = process.summary(Duration::from_secs(90)).await;
            assert_eq!(summary["shared"], true, "{summary}");
            copied.push(summary["docs"].as_u64().unwrap());
        }
        assert!(
            copied.iter().all(|docs| *docs > 0),
            "both copied: {copied:?}"
        );
        println!("{writes} writes of the load; copied {copied:?}");
        let out = mongoferry(&argv, Duration::from_secs(90));
        assert!(out.status.success(), "{}", stderr(&out));
        converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(1)).await;
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

/// Runs a live sync of `s.c` into `d.c` until the returned child is stopped; waits (bounded)
/// for the initial copy of `count` documents.
async fn live_sync(
    env: &TestEnv,
    dst: &Client,
    (s, d): (&str, &str),
    count: u64,
    data: &Path,
    extra: &[&str],
) -> (std::process::Child, std::fs::File) {
    let ns = format!("{s}.c:{d}.c");
    let mut argv = vec![
        "sync",
        "--from",
        &env.src,
        "--to",
        &env.dst,
        "--ns",
        &ns,
        "--no-state",
    ];
    argv.extend(extra);
    let (child, log) = spawn(&argv, data);
    let c = dst.database(d).collection::<Document>("c");
    let started = Instant::now();
    while c.count_documents(doc! {}).await.unwrap() != count {
        assert!(started.elapsed() < Duration::from_secs(30), "initial copy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, log)
}

#[test]
fn an_update_of_a_null_id_keeps_the_document() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("null"), env.dst_db("null"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        let c = src.database(&s).collection::<Document>("c");
        c.insert_many([doc! { "_id": null, "n": 0 }, doc! { "_id": 1, "n": 0 }])
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let (mut child, log) = live_sync(&env, &dst, (&s, &d), 2, data.path(), &[]).await;
        // The server's lookup answers no document for `_id: null`: not a reason to delete it.
        for id in [mongodb::bson::Bson::Null, 1.into()] {
            c.update_one(doc! { "_id": id }, doc! { "$set": { "n": 1 } })
                .await
                .unwrap();
        }
        converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(20)).await;
        // Applied in order: once a later insert is there, nothing earlier is still to come.
        c.insert_one(doc! { "_id": 2, "n": 0 }).await.unwrap();
        converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(20)).await;
        let there = dump(&dst, &d, "c").await;
        assert_eq!(there.len(), 3);
        assert_eq!(
            there[0].get("_id").unwrap(),
            Some(mongodb::bson::RawBsonRef::Null)
        );
        assert_eq!(there[0].get_i32("n").unwrap(), 1);
        sigterm(&child);
        let (status, _) = exit_within(&mut child, Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(130), "{}", read_log(log));
    });
}

/// Deletes number `_id`s and inserts the same numbers as other types during a live sync
/// (`extra`: more arguments of the sync); the destination ends byte-equal to the source.
async fn number_ids_change_type(env: Arc<TestEnv>, extra: &[&str]) {
    use mongodb::bson::{Bson, Decimal128};
    let (s, d) = (env.src_db("retype"), env.dst_db("retype"));
    let (src, dst) = (env.src_client().await, env.dst_client().await);
    let c = src.database(&s).collection::<Document>("c");
    let decimal_5: Decimal128 = "5".parse().unwrap();
    c.insert_many([
        doc! { "_id": 1_i32, "n": 0 },
        doc! { "_id": 2_i32, "n": 0 },
        doc! { "_id": 5_i64, "n": 0 },
    ])
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let journal = data.path().join("journal");
    let mut args = vec!["--journal", journal.to_str().unwrap()];
    args.extend(extra);
    let (mut child, log) = live_sync(&env, &dst, (&s, &d), 3, data.path(), &args).await;
    // One after the other, quickly: the changes of each number fall into one chunk.
    let changes: [(Bson, Bson); 2] = [
        (Bson::Int32(1), Bson::Double(1.0)),
        (Bson::Int64(5), Bson::Decimal128(decimal_5)),
    ];
    for (old, new) in changes {
        c.delete_one(doc! { "_id": old }).await.unwrap();
        c.insert_one(doc! { "_id": new, "n": 1 }).await.unwrap();
    }
    c.update_one(doc! { "_id": 2 }, doc! { "$set": { "n": 1 } })
        .await
        .unwrap();
    converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(20)).await;
    // Applied in order: once a later insert is there, nothing earlier is still to come.
    c.insert_one(doc! { "_id": 9, "n": 0 }).await.unwrap();
    converged(&src, &dst, (&s, "c"), (&d, "c"), Duration::from_secs(20)).await;
    let there = dump(&dst, &d, "c").await;
    let types: Vec<_> = there
        .iter()
        .map(|doc| doc.get("_id").unwrap().unwrap().element_type())
        .collect();
    use mongodb::bson::spec::ElementType as T;
    assert_eq!(types, [T::Double, T::Int32, T::Decimal128, T::Int32]);
    sigterm(&child);
    let (status, _) = exit_within(&mut child, Duration::from_secs(20)).await;
    let err = read_log(log);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(!err.contains("refused"), "no dead letter: {err}");

    // The journal replays the changes in their order, types included.
    let again = env.src_db("retype_again");
    replayed_beside(&env, &src, &journal, (&s, &d), &again).await;
}

#[test]
fn a_number_id_that_changes_type_arrives_with_its_new_type() {
    TestEnv::start().run(|env| number_ids_change_type(env, &[]));
}

#[test]
fn a_number_id_that_changes_type_arrives_with_its_new_type_through_a_filter() {
    TestEnv::start().run(|env| number_ids_change_type(env, &["--filter", r#"{"n": {"$gte": 0}}"#]));
}
