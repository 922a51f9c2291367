//! `mongoferry move`: copy, verify, delete from the source, against real test servers. Both
//! sides are read with clients of their own.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{dump, mongoferry, stderr, stdout, TestEnv};
use mongodb::bson::{doc, DateTime, Document, RawDocumentBuf};
use mongodb::Client;
use serde_json::Value;

/// `n` orders, half of them before `cutoff` (even `_id`s), with a counter.
fn orders(n: i64) -> Vec<Document> {
    (0..n)
        .map(|i| {
            let day = if i % 2 == 0 { 1 } else { 30 };
            doc! {
                "_id": i,
                "createdAt": DateTime::from_millis(1_700_000_000_000 + day * 86_400_000),
                "total": i * 3,
                "n": 0,
            }
        })
        .collect()
}

const OLD: &str = r#"{"createdAt": {"$lt": {"$date": "2023-11-20T00:00:00Z"}}}"#;

fn is_old(doc: &RawDocumentBuf) -> bool {
    doc.get_i64("_id").map(|i| i % 2 == 0).unwrap_or(false)
}

/// Raw documents by `_id` (an `i64`).
/// `n` orders in the collection `c` of `db`.
async fn seed_orders(client: &Client, db: &str, n: i64) {
    client
        .database(db)
        .collection::<Document>("c")
        .insert_many(orders(n))
        .await
        .unwrap();
}

async fn by_id(client: &Client, db: &str) -> BTreeMap<i64, RawDocumentBuf> {
    dump(client, db, "c")
        .await
        .into_iter()
        .map(|d| (d.get_i64("_id").unwrap(), d))
        .collect()
}

#[test]
fn a_filtered_move_leaves_the_source_without_exactly_those_documents() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mv"), env.dst_db("mv"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        seed_orders(&src, &s, 2_000).await;
        let before = by_id(&src, &s).await;
        let ns = format!("{s}.c:{d}.c");

        // A dry run says what would move, and moves nothing.
        let out = mongoferry(
            &[
                "move",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--filter",
                OLD,
                "--dry-run",
                "--json",
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let plan: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(plan["documents"], 1_000, "{plan}");
        assert_eq!(by_id(&src, &s).await.len(), 2_000);

        // A rehearsal copies and verifies, and deletes nothing.
        let out = mongoferry(
            &[
                "move",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--filter",
                OLD,
                "--keep-source",
                "--no-state",
                "--json",
                "--quiet",
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["moves"]["verified"], 1_000, "{summary}");
        assert_eq!(summary["moves"]["deleted"], 0, "{summary}");
        assert_eq!(summary["moves"]["rehearsal"], true, "{summary}");
        assert_eq!(by_id(&src, &s).await.len(), 2_000);
        // Its summary says the source keeps them, not "0 left at the source".
        let out = mongoferry(
            &[
                "move",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--filter",
                OLD,
                "--keep-source",
                "--no-state",
                "--quiet",
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("1,000 kept at the source"), "{text}");
        assert!(!text.contains("left at the source"), "{text}");

        let out = mongoferry(
            &[
                "move",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--filter",
                OLD,
                "--no-state",
                "--json",
                "--quiet",
                "--batch-size",
                "100",
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["moves"]["deleted"], 1_000, "{summary}");
        assert_eq!(summary["moves"]["left"], 0, "{summary}");

        let (left, moved) = (by_id(&src, &s).await, by_id(&dst, &d).await);
        let expected_left: Vec<&RawDocumentBuf> = before.values().filter(|d| !is_old(d)).collect();
        let expected_moved: Vec<&RawDocumentBuf> = before.values().filter(|d| is_old(d)).collect();
        assert_eq!(left.values().collect::<Vec<_>>(), expected_left);
        assert_eq!(
            moved.values().collect::<Vec<_>>(),
            expected_moved,
            "byte-equal"
        );
    });
}

/// Updates and inserts matching documents until `stop`; the count each `_id` was given.
async fn writer(client: Client, db: String, stop: Arc<AtomicBool>) -> BTreeMap<i64, i64> {
    let c = client.database(&db).collection::<Document>("c");
    let mut given: BTreeMap<i64, i64> = BTreeMap::new();
    let mut next_new = 1_000_000;
    let mut rng = fastrand::Rng::new();
    while !stop.load(Ordering::Relaxed) {
        if rng.u8(0..5) == 0 {
            let old = orders(1).remove(0);
            let mut doc = old.clone();
            doc.insert("_id", next_new);
            c.insert_one(doc).await.unwrap();
            given.insert(next_new, 0);
            next_new += 2;
            continue;
        }
        let id = rng.i64(0..3_000) * 2;
        // The count is only known to have landed when the server says it modified a document.
        let updated = c
            .update_one(doc! { "_id": id }, doc! { "$inc": { "n": 1 } })
            .await
            .unwrap();
        if updated.modified_count == 1 {
            *given.entry(id).or_default() += 1;
        }
    }
    given
}

#[test]
fn updates_during_a_move_are_never_lost() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mvw"), env.dst_db("mvw"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        seed_orders(&src, &s, 6_000).await;
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(writer(src.clone(), s.clone(), stop.clone()));
        let ns = format!("{s}.c:{d}.c");
        let argv: Vec<String> = [
            "move",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--filter",
            OLD,
            "--no-state",
            "--json",
            "--quiet",
            "--batch-size",
            "100",
            "--rate",
            "3000",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let out = common::mongoferry_async(argv, Duration::from_secs(90)).await;
        stop.store(true, Ordering::Relaxed);
        let given = load.await.unwrap();
        let summary: Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        println!("{summary}");
        // Documents updated after the last pass may still be at the source: that is fine.
        assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));

        let (left, moved) = (by_id(&src, &s).await, by_id(&dst, &d).await);
        let mut updates = 0;
        for (id, n) in &given {
            let (at_source, at_destination) = (left.get(id), moved.get(id));
            let doc = match (at_source, at_destination) {
                // Kept at the source: whatever the destination holds is an older copy.
                (Some(doc), _) => doc,
                (None, Some(doc)) => doc,
                (None, None) => panic!("document {id} is on neither side"),
            };
            let count = doc
                .get_i32("n")
                .map(i64::from)
                .or_else(|_| doc.get_i64("n"))
                .unwrap();
            assert_eq!(count, *n, "document {id} lost updates");
            updates += n;
        }
        assert!(updates > 50, "only {updates} updates landed");
        // And nothing else went missing: every old order is on one side.
        for id in (0..6_000).step_by(2) {
            assert!(
                left.contains_key(&id) || moved.contains_key(&id),
                "{id} lost"
            );
        }
        let changed = summary["moves"]["changed"].as_u64().unwrap();
        println!("{updates} updates landed; {changed} documents kept because they changed");
    });
}

#[test]
fn killed_moves_finish_on_a_rerun_with_nothing_lost_or_doubled() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mvk"), env.dst_db("mvk"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        seed_orders(&src, &s, 8_000).await;
        let before = by_id(&src, &s).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.json");
        let ns = format!("{s}.c:{d}.c");
        let argv = [
            "move",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--filter",
            OLD,
            "--state",
            state.to_str().unwrap(),
            "--batch-size",
            "100",
            "--rate",
            "2000",
            "--quiet",
        ];
        let mut rng = fastrand::Rng::new();
        let mut kills = 0;
        for _ in 0..5 {
            let (mut child, _) = common::spawn(&argv, data.path());
            tokio::time::sleep(Duration::from_millis(rng.u64(200..900))).await;
            let finished = child.try_wait().unwrap().is_some();
            let _ = child.kill();
            child.wait().unwrap();
            if finished {
                break;
            }
            kills += 1;
            // A killed run leaves its delete transaction open, holding its documents until the
            // server gives it up (60 s): the rerun's deletes wait for it (tried again up to
            // 90 s). Ending the killed run's sessions now, as an operator can, keeps the test from
            // waiting a minute; MONGOFERRY_SLOW_TESTS=1 waits the server's time out instead, and
            // so does a shared server (MONGOFERRY_TEST_URI), whose other tests' sessions live on.
            let slow = std::env::var("MONGOFERRY_SLOW_TESTS").as_deref() == Ok("1");
            if !slow && env.src != env.dst {
                src.database("admin")
                    .run_command(doc! { "killAllSessions": [] })
                    .await
                    .unwrap();
            }
            // At every moment each old order is on one side at least, and byte-equal.
            let (left, moved) = (by_id(&src, &s).await, by_id(&dst, &d).await);
            for (id, doc) in before.iter().filter(|(_, d)| is_old(d)) {
                let there = left.get(id).or(moved.get(id));
                assert_eq!(there, Some(doc), "order {id} after kill {kills}");
            }
        }
        assert!(kills >= 3, "only {kills} kills");
        let out = mongoferry(&argv, Duration::from_secs(90));
        assert!(out.status.success(), "{}", stderr(&out));
        let (left, moved) = (by_id(&src, &s).await, by_id(&dst, &d).await);
        assert_eq!(
            left.values().collect::<Vec<_>>(),
            before.values().filter(|d| !is_old(d)).collect::<Vec<_>>()
        );
        assert_eq!(
            moved.values().collect::<Vec<_>>(),
            before.values().filter(|d| is_old(d)).collect::<Vec<_>>()
        );
    });
}

#[test]
fn refused_documents_stay_at_the_source_and_the_journal_replays_the_destination() {
    TestEnv::start().run(|env| async move {
        let (s, d, third) = (env.src_db("mvr"), env.dst_db("mvr"), env.src_db("mvr3"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        let c = src.database(&s).collection::<Document>("c");
        c.insert_many(orders(400)).await.unwrap();
        // The destination refuses two old orders: a unique index they collide on.
        for id in [10, 12] {
            c.update_one(doc! { "_id": id }, doc! { "$set": { "code": "same" } })
                .await
                .unwrap();
        }
        dst.database(&d)
            .run_command(doc! { "createIndexes": "c", "indexes": [{
                "key": { "code": 1 }, "name": "code_unique", "unique": true,
                "partialFilterExpression": { "code": { "$exists": true } },
            }] })
            .await
            .unwrap();
        dst.database(&d)
            .collection::<Document>("c")
            .insert_one(doc! { "_id": "taken", "code": "same" })
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let journal = data.path().join("journal");
        let ns = format!("{s}.c:{d}.c");
        let out = mongoferry(
            &[
                "move",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--filter",
                OLD,
                "--state",
                data.path().join("state.json").to_str().unwrap(),
                "--journal",
                journal.to_str().unwrap(),
                "--json",
                "--quiet",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["failed"], 2, "{summary}");
        assert_eq!(summary["moves"]["deleted"], 198, "{summary}");
        assert_eq!(summary["moves"]["left"], 2, "{summary}");
        let left = by_id(&src, &s).await;
        assert!(
            left.contains_key(&10) && left.contains_key(&12),
            "refused ones stay"
        );
        assert_eq!(left.len(), 202);

        // The journal replayed elsewhere gives what the move put at the destination.
        let out = mongoferry(
            &[
                "journal",
                "replay",
                journal.to_str().unwrap(),
                "--to",
                &env.src,
                "--quiet",
                "--ns",
                &format!("{d}.c:{third}.c"),
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let replayed = dump(&src, &third, "c").await;
        // The destination also holds the document that was there before the move.
        let moved_here: Vec<RawDocumentBuf> = dump(&dst, &d, "c")
            .await
            .into_iter()
            .filter(|d| d.get_i64("_id").is_ok())
            .collect();
        assert_eq!(moved_here.len(), 198);
        assert_eq!(replayed, moved_here);
        // The export holds what was moved.
        let exported = data.path().join("moved.ndjson");
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
                exported.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let lines = std::fs::read_to_string(&exported).unwrap();
        assert_eq!(lines.lines().count(), 198);
    });
}

#[test]
fn a_move_that_left_documents_is_finished_by_running_it_again() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mvagain"), env.dst_db("mvagain"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        // 95 small orders and 5 large ones, which a first run refuses as too large.
        let docs: Vec<Document> = (0..100_i64)
            .map(|i| {
                let pad = if i % 20 == 0 { 4_000 } else { 10 };
                doc! { "_id": i, "pad": "x".repeat(pad) }
            })
            .collect();
        src.database(&s)
            .collection::<Document>("c")
            .insert_many(docs)
            .await
            .unwrap();
        let before = by_id(&src, &s).await;
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.db");
        let ns = format!("{s}.c:{d}.c");
        let argv = |limit: Option<&'static str>| {
            let mut argv = vec![
                "move".to_string(),
                "--from".into(),
                env.src.clone(),
                "--to".into(),
                env.dst.clone(),
                "--ns".into(),
                ns.clone(),
                "--state".into(),
                state.display().to_string(),
                "--quiet".into(),
            ];
            if let Some(limit) = limit {
                argv.extend(["--max-document-bytes".into(), limit.into()]);
            }
            argv
        };
        let run = |argv: Vec<String>| async move {
            common::mongoferry_async(argv, Duration::from_secs(60)).await
        };
        let out = run(argv(Some("1000"))).await;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_eq!(by_id(&src, &s).await.len(), 5);
        assert_eq!(by_id(&dst, &d).await.len(), 95);
        // The same job again (without the limit) moves what is left.
        let out = run(argv(None)).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            !stderr(&out).contains("already complete"),
            "{}",
            stderr(&out)
        );
        assert!(by_id(&src, &s).await.is_empty());
        assert_eq!(by_id(&dst, &d).await, before);
        // Once nothing is left, it says so.
        let out = run(argv(None)).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("earlier runs moved every document"),
            "{}",
            stderr(&out)
        );
    });
}

#[test]
fn a_move_from_a_capped_collection_is_refused_before_anything_is_written() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mvcap"), env.dst_db("mvcap"));
        let src = env.src_client().await;
        src.database(&s)
            .run_command(doc! { "create": "c", "capped": true, "size": 1_048_576 })
            .await
            .unwrap();
        src.database(&s)
            .collection::<Document>("c")
            .insert_many((0..10_i64).map(|i| doc! { "_id": i }))
            .await
            .unwrap();
        let ns = format!("{s}.c:{d}.c");
        let args = ["--from", &env.src, "--to", &env.dst, "--ns", &ns];
        let plan = mongoferry(
            &[&["move", "--dry-run", "--json"], &args[..]].concat(),
            Duration::from_secs(60),
        );
        assert_eq!(plan.status.code(), Some(3), "{}", stderr(&plan));
        let plan: Value = serde_json::from_str(stdout(&plan).trim()).unwrap();
        assert!(
            plan["problems"][0]["message"]
                .as_str()
                .unwrap()
                .contains("capped"),
            "{plan}"
        );
        let out = mongoferry(&[&["move"], &args[..]].concat(), Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("capped collection"),
            "{}",
            stderr(&out)
        );
        assert_eq!(by_id(&src, &s).await.len(), 10);
        let dst = env.dst_client().await;
        assert!(common::collection_names(&dst, &d).await.is_empty());
    });
}

/// A TCP proxy in front of a server that records the body of every command clients send
/// through it (OP_MSG section 0), to see what the binary asks of the server.
struct Recorder {
    port: u16,
    commands: Arc<std::sync::Mutex<Vec<Document>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(target: &str) -> Recorder {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = target
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', '?']).next())
            .unwrap()
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands: Arc<std::sync::Mutex<Vec<Document>>> = Arc::default();
        let seen = commands.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = async move {
                        let (mut buf, mut pending) = (vec![0u8; 64 * 1024], Vec::new());
                        loop {
                            let n = client_read.read(&mut buf).await?;
                            if n == 0 {
                                return server_write.shutdown().await;
                            }
                            server_write.write_all(&buf[..n]).await?;
                            pending.extend_from_slice(&buf[..n]);
                            while let Some(body) = take_message(&mut pending) {
                                seen.lock().unwrap().extend(body);
                            }
                        }
                    };
                    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
                    let _ = tokio::try_join!(upstream, downstream);
                });
            }
        });
        Recorder {
            port,
            commands,
            task,
        }
    }

    fn commands(&self) -> Vec<Document> {
        self.commands.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes one whole message off the front of `pending`; its command body if it is an OP_MSG.
fn take_message(pending: &mut Vec<u8>) -> Option<Option<Document>> {
    let length = u32::from_le_bytes(pending.get(..4)?.try_into().unwrap()) as usize;
    if pending.len() < length {
        return None;
    }
    let message: Vec<u8> = pending.drain(..length).collect();
    let op_code = i32::from_le_bytes(message[12..16].try_into().unwrap());
    // OP_MSG: header, flag bits, then sections; kind 0 is the command's body.
    if op_code != 2013 || message.get(20) != Some(&0) {
        return Some(None);
    }
    Some(Document::from_reader(&message[21..]).ok())
}

#[test]
fn a_move_writes_with_majority_and_journal_whatever_the_uri_says() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("wc"), env.dst_db("wc"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        seed_orders(&src, &s, 300).await;
        // Older versions of some documents at the destination: those are replaced (`update`).
        let stale: Vec<Document> = orders(300)
            .into_iter()
            .step_by(10)
            .map(|mut o| {
                o.insert("n", -1);
                o
            })
            .collect();
        dst.database(&d)
            .collection::<Document>("c")
            .insert_many(stale)
            .await
            .unwrap();
        let moved: Vec<RawDocumentBuf> = dump(&src, &s, "c").await;
        let recorder = Recorder::start(&env.dst).await;
        // `w=1`: an acknowledgement a replica set can roll back.
        let to = format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&w=1",
            recorder.port
        );
        let out = common::mongoferry_async(
            [
                "move",
                "--from",
                &env.src,
                "--to",
                &to,
                "--ns",
                &format!("{s}.c:{d}.c"),
                "--no-state",
                "--json",
                "--quiet",
                "--batch-size",
                "50",
            ]
            .map(String::from)
            .to_vec(),
            Duration::from_secs(60),
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["moves"]["deleted"], 300, "{summary}");
        assert!(dump(&src, &s, "c").await.is_empty());
        assert_eq!(dump(&dst, &d, "c").await, moved);

        let writes: Vec<Document> = recorder
            .commands()
            .into_iter()
            .filter(|c| c.get_str("$db") == Ok(d.as_str()))
            .filter(|c| {
                c.keys()
                    .next()
                    .is_some_and(|k| ["insert", "update", "delete"].contains(&k.as_str()))
            })
            .collect();
        let kinds: Vec<&str> = writes
            .iter()
            .map(|c| c.keys().next().unwrap().as_str())
            .collect();
        assert!(
            kinds.contains(&"insert") && kinds.contains(&"update"),
            "inserts and replacements went through the recorder: {kinds:?}"
        );
        for write in &writes {
            let concern = write.get_document("writeConcern").ok();
            assert_eq!(
                concern,
                Some(&doc! { "w": "majority", "j": true }),
                "a destination write of a move: {write}"
            );
        }
    });
}

#[test]
fn a_move_never_drops_a_destination_that_holds_documents() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mvdrop"), env.dst_db("mvdrop"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        seed_orders(&src, &s, 100).await;
        let before = by_id(&src, &s).await;
        let ns = format!("{s}.c:{d}.c");
        // Without a state kept, a second run knows nothing of the first.
        let argv = [
            "move",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--drop",
            "--no-state",
            "--quiet",
        ];
        let out = mongoferry(&argv, Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(by_id(&src, &s).await.is_empty());
        // The destination now holds the only copy: the same command again must not drop it.
        let out = mongoferry(&argv, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("a move drops only empty destinations"),
            "{}",
            stderr(&out)
        );
        assert_eq!(by_id(&dst, &d).await, before);
    });
}
