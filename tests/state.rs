//! The state stores against one contract: the embedded file store, the memory store and the
//! MongoDB store (a database on a SecantusDB server). Then what only the MongoDB store does:
//! leases that run out, fencing of a process that lost its lease, and the claim of a dead process
//! of this host taken over at once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestEnv;
use mongodb::bson::{doc, rawdoc, DateTime};
use mongoferry::state::{
    read_dead_letters, Checkpoint, DeadLetter, FileStore, JobKey, MemoryStore, MongoStore,
    NsCheckpoint, StateError, StateStore,
};

const LEASE: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(10);

fn checkpoint(done: u64, last: i64) -> Checkpoint {
    let mut checkpoint = Checkpoint {
        description: "a -> b [s.c]".into(),
        updated_at: 1.5,
        ..Checkpoint::default()
    };
    checkpoint.namespaces.insert(
        "s.c -> d.c".into(),
        NsCheckpoint::new(Some(&mongodb::bson::RawBson::Int64(last)), done, false),
    );
    checkpoint
}

fn letter(job: &JobKey, id: i32) -> DeadLetter {
    DeadLetter::new(
        job,
        "d.c".into(),
        &rawdoc! { "_id": id, "big": "x" },
        "too large".into(),
        Some(10334),
    )
}

/// What every store promises: no checkpoint before the first save; one run of a job at a time
/// (a second claim is refused while the first is held, and succeeds once it is dropped); a
/// saved checkpoint loads back equal, the latest save wins, a removed one is gone; jobs do not
/// see each other's checkpoints.
async fn contract(store: Arc<dyn StateStore>) {
    let (job, other) = (JobKey("job-a".into()), JobKey("job-b".into()));
    assert_eq!(store.load(&job).await.unwrap(), None);

    let claim = store.claim(&job).await.unwrap();
    match store.claim(&job).await {
        Err(StateError::JobBusy { key, .. }) => assert_eq!(key, job),
        other => panic!("a second claim of a held job: {other:?}"),
    }
    let _other_claim = store.claim(&other).await.expect("another job is free");

    store.save(&job, &checkpoint(100, 100)).await.unwrap();
    assert_eq!(store.load(&job).await.unwrap(), Some(checkpoint(100, 100)));
    store.save(&job, &checkpoint(250, 250)).await.unwrap();
    assert_eq!(store.load(&job).await.unwrap(), Some(checkpoint(250, 250)));
    assert_eq!(store.load(&other).await.unwrap(), None, "jobs are apart");
    store.save(&other, &checkpoint(7, 7)).await.unwrap();
    store.remove(&job).await.unwrap();
    assert_eq!(store.load(&job).await.unwrap(), None);
    assert_eq!(store.load(&other).await.unwrap(), Some(checkpoint(7, 7)));

    store
        .keep_dead_letters(vec![letter(&job, 1), letter(&job, 2), letter(&other, 3)])
        .await
        .unwrap();

    drop(claim);
    let again = tokio::time::timeout(TIMEOUT, store.claim(&job))
        .await
        .expect("bounded")
        .expect("a dropped claim frees the job");
    store.save(&job, &checkpoint(300, 300)).await.unwrap();
    assert_eq!(store.load(&job).await.unwrap(), Some(checkpoint(300, 300)));
    drop(again);
}

#[test]
fn the_file_and_memory_stores_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let file = FileStore::new(dir.path().join("state.json"));
        contract(Arc::new(file.clone())).await;
        let letters =
            read_dead_letters(&file.dead_letter_path(), Some(&JobKey("job-a".into()))).unwrap();
        assert_eq!(letters.len(), 2);

        let memory = Arc::new(MemoryStore::default());
        contract(memory.clone()).await;
        assert_eq!(memory.dead_letters().len(), 3);
    });
}

#[test]
fn the_mongodb_store_keeps_the_contract() {
    TestEnv::start().run(|env| async move {
        let uri = env.state_uri("contract");
        let store = Arc::new(MongoStore::open(&uri, LEASE, TIMEOUT).await.unwrap());
        contract(store.clone()).await;
        let letters = store
            .dead_letters(Some(&JobKey("job-a".into())))
            .await
            .unwrap();
        assert_eq!(letters.len(), 2);
        // Kept as BSON, not text: the document can be queried where it is.
        let first = &letters[0];
        assert_eq!(
            first.get_document("document").unwrap(),
            &doc! { "_id": 1, "big": "x" }
        );
        assert_eq!(first.get_i32("id").unwrap(), 1);
        assert_eq!(first.get_str("reason").unwrap(), "too large");
        // Runs one after another: each claim's token is above the last, so each run's saves pass
        // the fence its predecessors raised (whether the claim was given back by the heartbeat
        // or taken back at once).
        let job = JobKey("job-c".into());
        for run in 0..4 {
            let claim = store.claim(&job).await.unwrap();
            store
                .save(&job, &checkpoint(run, run as i64))
                .await
                .unwrap();
            drop(claim);
            if run % 2 == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        assert_eq!(store.load(&job).await.unwrap(), Some(checkpoint(3, 3)));
        // What another process opening the same database sees.
        let other = MongoStore::open(&uri, LEASE, TIMEOUT).await.unwrap();
        assert_eq!(
            other.load(&JobKey("job-b".into())).await.unwrap(),
            Some(checkpoint(7, 7))
        );
        assert!(!other.location().contains("password"));
        other.close().await;
        store.close().await;
    });
}

#[test]
fn a_run_that_lost_its_lease_can_no_longer_move_the_checkpoint() {
    TestEnv::start().run(|env| async move {
        let uri = env.state_uri("fence");
        let job = JobKey("fenced".into());
        let (first, second) = (
            MongoStore::open(&uri, LEASE, TIMEOUT).await.unwrap(),
            MongoStore::open(&uri, LEASE, TIMEOUT).await.unwrap(),
        );
        let _first_claim = first.claim(&job).await.unwrap();
        first.save(&job, &checkpoint(10, 10)).await.unwrap();
        match second.claim(&job).await {
            Err(e @ StateError::JobBusy { .. }) => {
                assert!(e.to_string().contains("lease runs out"), "{e}")
            }
            other => panic!("held by the first: {other:?}"),
        }

        // The first process stalls past its lease (its heartbeat does not get through): here,
        // the lease is made to run out at once.
        let claims = common::client(&uri)
            .await
            .default_database()
            .expect("the state URI names its database")
            .collection::<mongodb::bson::Document>("claims");
        claims
            .update_one(
                doc! { "_id": &job.0 },
                doc! { "$set": { "expires": DateTime::from_millis(0) } },
            )
            .await
            .unwrap();
        let _second_claim = second.claim(&job).await.expect("the lease ran out");
        assert_eq!(second.load(&job).await.unwrap(), Some(checkpoint(10, 10)));

        // The first one's saves are refused from now on; the second's go through.
        match first.save(&job, &checkpoint(20, 20)).await {
            Err(e @ StateError::Fenced { .. }) => {
                assert!(e.to_string().contains("taken over"), "{e}")
            }
            other => panic!("a fenced save: {other:?}"),
        }
        assert!(matches!(
            first.remove(&job).await,
            Ok(()) | Err(StateError::Fenced { .. })
        ));
        assert_eq!(second.load(&job).await.unwrap(), Some(checkpoint(10, 10)));
        second.save(&job, &checkpoint(30, 30)).await.unwrap();
        assert_eq!(first.load(&job).await.unwrap(), Some(checkpoint(30, 30)));
        drop(_first_claim);
        first.close().await;
        drop(_second_claim);
        second.close().await;
    });
}

#[test]
fn the_job_of_a_process_that_died_elsewhere_is_taken_once_its_lease_runs_out() {
    TestEnv::start().run(|env| async move {
        let uri = env.state_uri("lease");
        let job = JobKey("orphan".into());
        // A process of another machine held the job and died: its lease runs for 3 s more.
        let claims = common::client(&uri)
            .await
            .default_database()
            .unwrap()
            .collection::<mongodb::bson::Document>("claims");
        let expires = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_000);
        claims
            .insert_one(doc! {
                "_id": &job.0, "holder": "ferry-7 pid 42", "instance": "ferry-7 42 1",
                "host": "ferry-7", "pid": 42_i64, "token": 4_i64, "expires": expires,
            })
            .await
            .unwrap();
        let store = MongoStore::open(&uri, LEASE, TIMEOUT).await.unwrap();
        let started = Instant::now();
        let refused = store.claim(&job).await.expect_err("the lease still runs");
        assert!(refused.to_string().contains("ferry-7 pid 42"), "{refused}");
        let claim = loop {
            match store.claim(&job).await {
                Ok(claim) => break claim,
                Err(StateError::JobBusy { .. }) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "never taken over"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(2_500),
            "taken after {waited:?}: too soon"
        );
        let held = claims
            .find_one(doc! { "_id": &job.0 })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            held.get_i64("token").unwrap(),
            5,
            "a new token fences the old holder"
        );
        assert_eq!(held.get_i64("pid").unwrap(), i64::from(std::process::id()));
        // The heartbeat keeps the lease past its first length.
        tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
        let other = MongoStore::open(&uri, LEASE, TIMEOUT).await.unwrap();
        assert!(matches!(
            other.claim(&job).await,
            Err(StateError::JobBusy { .. })
        ));
        // Given back when dropped: free at once.
        drop(claim);
        store.close().await;
        let free = other.claim(&job).await.expect("given back");
        drop(free);
        other.close().await;
    });
}

/// A `serve` child process, killed when dropped (also when the test fails).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `serve --state STATE` says until it serves, run in `dir`, within 30 s.
fn serve_says(dir: &std::path::Path, state: &str) -> String {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mongoferry"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--state", state])
        .current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env_remove("MONGOFERRY_STATE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    mongoferry::testkit::kill_with_parent(&mut command);
    let mut child = Child(command.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while !log.contains("serving on") {
        let left = deadline.saturating_duration_since(Instant::now());
        match said.recv_timeout(left) {
            Ok(line) => log.push_str(&(line + "\n")),
            Err(_) => panic!("serve --state {state:?} did not serve within 30 s: {log}"),
        }
    }
    log
}

/// `MONGODB://…` and ` mongodb://…` (as `--state`, `MONGOFERRY_STATE` or `serve --state`) are
/// the MongoDB state they name; a value shaped like a URI that is not a MongoDB one is refused
/// (status 2, its password not shown), never taken for a file path: no directory is created
/// after it, and no run goes on without the shared state asked for.
#[test]
fn state_uris_are_read_whatever_their_case_and_spaces_and_never_become_paths() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("stateuri"), env.dst_db("stateuri"));
        common::insert_raw(
            &env.src_client().await,
            &s,
            "c",
            &common::sample_docs(50, 64),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let state = env.state_uri("stateuri");
        let state_db = state
            .split('/')
            .nth(3)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string();
        let upper = state.replacen("mongodb://", "MONGODB://", 1);
        let given = [
            ("--state", upper.clone()),
            ("--state", format!("  {state} ")),
            ("MONGOFERRY_STATE", format!(" {upper}\t")),
        ];
        for (run, (how, value)) in given.iter().enumerate() {
            let ns = format!("{s}.c:{d}.c{run}");
            let mut args = vec!["copy", "--from", &env.src, "--to", &env.dst, "--ns", &ns];
            let mut vars = vec![];
            match *how {
                "--state" => args.extend(["--state", value.as_str()]),
                variable => vars.push((variable, value.as_str())),
            }
            let out = common::mongoferry_in(dir.path(), &args, &vars, Duration::from_secs(60));
            assert!(
                out.status.success(),
                "{how} {value:?}: {}",
                common::stderr(&out)
            );
            // Its checkpoint is in the state database.
            let checkpoints = env
                .dst_client()
                .await
                .database(&state_db)
                .collection::<mongodb::bson::Document>("checkpoints")
                .count_documents(doc! { "checkpoint": { "$exists": true } })
                .await
                .unwrap();
            assert_eq!(checkpoints, run as u64 + 1, "{how} {value:?}");
        }
        // Shaped like URIs, not MongoDB ones: refused, as the copy's and the service's state.
        for bad in [
            "MONGODB:/u:S3cretPw!x@127.0.0.1:9/db",
            "mongdb://127.0.0.1:9/db",
            "u:S3cretPw!x@127.0.0.1:9/db",
            "mongodb://",
            " MONGODB://u:S3cretPw!x@127.0.0.1:9/?maxPoolSize=bogus ",
        ] {
            let ns = format!("{s}.c:{d}.bad");
            let copy = [
                "copy", "--from", &env.src, "--to", &env.dst, "--ns", &ns, "--state", bad,
            ];
            let serve = ["serve", "--listen", "127.0.0.1:0", "--state", bad];
            for args in [&copy[..], &serve[..]] {
                let out = common::mongoferry_in(dir.path(), args, &[], Duration::from_secs(60));
                let said = common::stderr(&out);
                assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
                assert!(said.contains("--state"), "{said}");
                assert!(!said.contains("S3cretPw"), "{said}");
            }
        }
        let names = common::names_under(dir.path());
        assert!(
            names
                .iter()
                .all(|n| !n.contains(':') && !n.contains('@') && !n.contains("copy-state")),
            "the runs used a file store: {names:?}"
        );
        // The service on a MongoDB state given so shares it with other nodes.
        let said = serve_says(dir.path(), &format!(" {upper} "));
        assert!(said.contains("(shared by service nodes)"), "{said}");
        assert!(!said.contains("jobs.json"), "{said}");
    });
}
