//! Shared harness of the integration tests.
//!
//! Each test gets a [`TestEnv`]: two SecantusDB servers started on free ports (source and
//! destination), killed when the env drops — also when the test fails. With
//! `MONGOFERRY_TEST_URI` set, the same tests run against that server instead, for both sides, in
//! databases named uniquely per test and dropped afterwards.

#![allow(dead_code)]

pub mod service;

use std::future::Future;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{
    doc, oid::ObjectId, spec::BinarySubtype, Binary, Bson, DateTime, Decimal128, Document,
    JavaScriptCodeWithScope, RawDocumentBuf, Regex, Timestamp,
};
use mongodb::Client;
use mongoferry::testkit::TestServer;

/// Upper bound of any single test body.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(150);

pub struct TestEnv {
    pub src: String,
    pub dst: String,
    prefix: String,
    shared: bool,
    _servers: Vec<TestServer>,
}

impl TestEnv {
    pub fn start() -> TestEnv {
        Self::start_with(&[])
    }

    /// Two test servers started with `extra` arguments too (ignored with a shared server).
    pub fn start_with(extra: &[&str]) -> TestEnv {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "mf{}_{}_",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if let Ok(uri) = std::env::var("MONGOFERRY_TEST_URI") {
            return TestEnv {
                src: uri.clone(),
                dst: uri,
                prefix,
                shared: true,
                _servers: vec![],
            };
        }
        // Test commands on, so failpoint tests can inject server errors.
        let args: Vec<&str> = ["--enable-test-commands"]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        let mut servers = TestServer::start_many(2, &args).expect("start test servers");
        let (dst, src) = (servers.pop().unwrap(), servers.pop().unwrap());
        TestEnv {
            src: src.uri.clone(),
            dst: dst.uri.clone(),
            prefix,
            shared: false,
            _servers: vec![src, dst],
        }
    }

    /// A database name unique to this test (its source side).
    pub fn src_db(&self, name: &str) -> String {
        format!("{}s_{name}", self.prefix)
    }

    /// A database name unique to this test (its destination side).
    pub fn dst_db(&self, name: &str) -> String {
        format!("{}d_{name}", self.prefix)
    }

    /// A MongoDB state store's URI: database `name` (unique to this test) on the destination.
    pub fn state_uri(&self, name: &str) -> String {
        with_database(&self.dst, &format!("{}state_{name}", self.prefix))
    }

    pub async fn src_client(&self) -> Client {
        client(&self.src).await
    }

    pub async fn dst_client(&self) -> Client {
        client(&self.dst).await
    }

    /// Runs an async test body on a fresh runtime with a time bound, then drops the test's
    /// databases on a shared server.
    pub fn run<F, Fut>(self, body: F)
    where
        F: FnOnce(std::sync::Arc<TestEnv>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let env = std::sync::Arc::new(self);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // The databases of a shared server are dropped even when the body panics.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async { tokio::time::timeout(TEST_TIMEOUT, body(env.clone())).await })
        }));
        if env.shared {
            let env = env.clone();
            runtime.block_on(async move {
                let c = client(&env.src).await;
                for name in c.list_database_names().await.unwrap_or_default() {
                    if name.starts_with(&env.prefix) {
                        let _ = c.database(&name).drop().await;
                    }
                }
            });
        }
        runtime.shutdown_timeout(Duration::from_secs(5));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// `uri` naming database `db` (in place of any it named).
pub fn with_database(uri: &str, db: &str) -> String {
    let scheme_end = uri.find("://").map_or(0, |i| i + 3);
    let rest = &uri[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map_or("", |q| &rest[authority_end + q..]);
    format!(
        "{}{}/{db}{query}",
        &uri[..scheme_end],
        &rest[..authority_end]
    )
}

pub async fn client(uri: &str) -> Client {
    mongoferry::mongo::connect(
        mongoferry::mongo::Side::Source,
        uri,
        8,
        Duration::from_secs(20),
    )
    .await
    .expect("connect to test server")
}

/// Inserts documents exactly as given (raw bytes, field order kept).
pub async fn insert_raw(client: &Client, db: &str, coll: &str, docs: &[RawDocumentBuf]) {
    let c = client.database(db).collection::<RawDocumentBuf>(coll);
    for chunk in docs.chunks(1000) {
        c.insert_many(chunk).await.expect("seed documents");
    }
}

/// `n` generated documents of about `size` bytes, `_id` 0 to n-1.
pub fn sample_docs(n: i64, size: usize) -> Vec<RawDocumentBuf> {
    (0..n)
        .map(|i| mongoferry::engine::source::synthetic::sample_document(i, size))
        .collect()
}

/// All documents of a collection, sorted by `_id`, as raw bytes.
pub async fn dump(client: &Client, db: &str, coll: &str) -> Vec<RawDocumentBuf> {
    client
        .database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read all")
}

/// Asserts both sides hold byte-identical documents.
pub async fn assert_same(env: &TestEnv, src: (&str, &str), dst: (&str, &str)) -> usize {
    let a = dump(&env.src_client().await, src.0, src.1).await;
    let b = dump(&env.dst_client().await, dst.0, dst.1).await;
    assert_eq!(a.len(), b.len(), "document counts differ");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x.as_bytes(),
            y.as_bytes(),
            "documents differ:\n source {x:?}\n dest   {y:?}"
        );
    }
    a.len()
}

/// Documents of `db.coll`.
pub async fn count_docs(client: &Client, db: &str, coll: &str) -> u64 {
    client
        .database(db)
        .collection::<mongodb::bson::Document>(coll)
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap()
}

pub async fn collection_names(client: &Client, db: &str) -> Vec<String> {
    let mut names = client.database(db).list_collection_names().await.unwrap();
    names.sort();
    names
}

/// Runs the `mongoferry` binary with a time bound; kills it if it overruns.
/// A state store that keeps nothing, for engine-level tests.
/// Creates the user `user` (role `root`) on both servers of `env` and returns the source's and
/// the destination's URIs with its credentials. The test servers run without `--auth`, so a
/// user can be created without one, and the driver then authenticates as it.
pub async fn with_user(env: &TestEnv, user: &str, password: &str) -> (String, String) {
    for client in [env.src_client().await, env.dst_client().await] {
        // Already there on a shared server of an earlier run: that is fine.
        let _ = client
            .database("admin")
            .run_command(mongodb::bson::doc! {
                "createUser": user, "pwd": password, "roles": ["root"]
            })
            .await;
    }
    let credentials = |uri: &str| uri.replacen("://", &format!("://{user}:{password}@"), 1);
    (credentials(&env.src), credentials(&env.dst))
}

pub fn memory_store() -> std::sync::Arc<dyn mongoferry::state::StateStore> {
    std::sync::Arc::new(mongoferry::state::MemoryStore::default())
}

/// Runs `mongoferry` with `args`, bounded by `timeout`. Each run gets its own data directory,
/// so runs never continue each other's checkpoints unless given the same `--state`.
pub fn mongoferry(args: &[&str], timeout: Duration) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mongoferry"));
    command.args(args).env("XDG_DATA_HOME", data.path());
    run_bounded(command, timeout)
}

/// Runs `mongoferry` with `args` in `dir`, its working directory, whose `data` is its data
/// directory, with the variables of `env` (and no other `MONGOFERRY_FROM`, `_TO` or `_STATE`),
/// bounded by `timeout`: for what a run leaves in the directory it runs in.
pub fn mongoferry_in(dir: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mongoferry"));
    command
        .args(args)
        .current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env_remove("MONGOFERRY_FROM")
        .env_remove("MONGOFERRY_TO")
        .env_remove("MONGOFERRY_STATE")
        .envs(env.iter().copied());
    run_bounded(command, timeout)
}

/// Runs `command`; killed if it outlives `timeout`.
fn run_bounded(mut command: Command, timeout: Duration) -> Output {
    // Output goes to files, so a chatty child can never block on a full pipe.
    let stdout = tempfile::tempfile().unwrap();
    let stderr = tempfile::tempfile().unwrap();
    let mut child = command
        .env("MONGOFERRY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .spawn()
        .expect("spawn mongoferry");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mongoferry {:?} did not finish within {timeout:?}; stderr: {}",
                command.get_args().collect::<Vec<_>>(),
                read_all(stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: read_all(stdout).into_bytes(),
        stderr: read_all(stderr).into_bytes(),
    }
}

/// The names of every file and directory under `dir`, at any depth.
pub fn names_under(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        names.push(entry.file_name().to_string_lossy().into_owned());
        if entry.file_type().unwrap().is_dir() {
            names.extend(names_under(&entry.path()));
        }
    }
    names
}

fn read_all(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    text
}

/// Runs the binary off the async runtime's threads.
pub async fn mongoferry_async(args: Vec<String>, timeout: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mongoferry(&args, timeout)
    })
    .await
    .unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn as_doc(raw: &RawDocumentBuf) -> Document {
    Document::try_from(raw.as_ref()).unwrap()
}

fn binary(subtype: BinarySubtype, bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype,
        bytes: bytes.to_vec(),
    })
}

/// Documents with every BSON type the server stores, `_id`s of many types in one collection,
/// unusual field order and nesting.
pub fn every_type_documents() -> Vec<RawDocumentBuf> {
    let ids: Vec<Bson> = vec![
        Bson::Int32(1),
        Bson::Int64(2),
        Bson::Double(2.5),
        Bson::Decimal128(Decimal128::from_bytes([
            0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x3e, 0x30,
        ])),
        Bson::String("alpha".into()),
        Bson::String("".into()),
        Bson::Document(doc! { "a": 1, "b": "x" }),
        binary(BinarySubtype::Generic, b"\x00\x01\x02"),
        Bson::ObjectId(ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap()),
        Bson::Boolean(false),
        Bson::Boolean(true),
        Bson::DateTime(DateTime::from_millis(-2_208_988_800_000)),
        Bson::Timestamp(Timestamp {
            time: 1_700_000_000,
            increment: 7,
        }),
        Bson::Null,
        Bson::MinKey,
        Bson::MaxKey,
    ];
    let mut docs = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let body = doc! {
            "_id": id,
            "zeta": 1,
            "alpha": "field order is kept, not sorted",
            "double": -0.0_f64,
            "nan": f64::NAN,
            "inf": f64::INFINITY,
            "int32": i32::MIN,
            "int64": i64::MAX,
            "decimal": Decimal128::from_bytes([0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x3a, 0xb0]),
            "string": "ünïcödé ✓ \u{0}nul inside",
            "nested": { "arr": [[1, [2, [3, []]]], { "deep": { "deeper": [Bson::Null] } }], "empty": {} },
            "bin_generic": binary(BinarySubtype::Generic, &[0xff; 17]),
            "bin_function": binary(BinarySubtype::Function, b"fn"),
            "bin_old": binary(BinarySubtype::BinaryOld, b"old"),
            "bin_uuid_old": binary(BinarySubtype::UuidOld, &[3; 16]),
            "bin_uuid": binary(BinarySubtype::Uuid, &[4; 16]),
            "bin_md5": binary(BinarySubtype::Md5, &[5; 16]),
            "bin_user": binary(BinarySubtype::UserDefined(0x80), b"user"),
            "oid": ObjectId::parse_str("000000000000000000000001").unwrap(),
            "bool": true,
            "date_before_1970": DateTime::from_millis(-62_135_596_800_000),
            "date_epoch": DateTime::from_millis(0),
            "date_future": DateTime::from_millis(253_402_300_799_999),
            "null": Bson::Null,
            "regex": Regex { pattern: "^a.*b$".into(), options: "imsx".into() },
            "code": Bson::JavaScriptCode("function() { return 1; }".into()),
            "code_scope": Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "x + 1".into(),
                scope: doc! { "x": 41 },
            }),
            "symbol": Bson::Symbol("sym".into()),
            "timestamp": Timestamp { time: 0, increment: 0 },
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
            "seq": i as i32,
        };
        docs.push(RawDocumentBuf::from_document(&body).unwrap());
    }
    docs
}

/// Starts the binary in the background, its stderr kept in a file.
pub fn spawn(argv: &[&str], data: &Path) -> (std::process::Child, std::fs::File) {
    let log = tempfile::tempfile().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mongoferry"));
    command
        .args(argv)
        .env("MONGOFERRY_LOG", "warn")
        .env("XDG_DATA_HOME", data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().unwrap());
    mongoferry::testkit::kill_with_parent(&mut command);
    (command.spawn().unwrap(), log)
}

/// Waits (at most `limit`) for the child to exit; its status and how long that took.
pub async fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} later");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn read_log(mut log: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    log.rewind().unwrap();
    log.read_to_string(&mut text).unwrap();
    text
}

/// The jobs an embedded state store holds, as JSON: `{"jobs": {KEY: checkpoint}}` (`null` while
/// the store does not exist or cannot be read, e.g. as a copy creates it).
pub fn saved_state(path: &Path) -> serde_json::Value {
    match mongoferry::state::read_checkpoints(path) {
        Ok(jobs) => serde_json::json!({ "jobs": jobs }),
        Err(_) => serde_json::Value::Null,
    }
}

/// A `mongoferry` process whose stdout and stderr are kept (killed with the test's process).
pub struct Spawned {
    pub child: std::process::Child,
    out: std::fs::File,
    err: std::fs::File,
}

/// Starts `count` copies of one command, 200 ms apart.
pub async fn spawn_many(argv: &[&str], count: usize) -> Vec<Spawned> {
    let mut spawned = Vec::new();
    for _ in 0..count {
        let (out, err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let mut command = Command::new(env!("CARGO_BIN_EXE_mongoferry"));
        command
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap());
        mongoferry::testkit::kill_with_parent(&mut command);
        let child = command.spawn().unwrap();
        spawned.push(Spawned { child, out, err });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spawned
}

impl Spawned {
    /// Waits (at most `limit`) for the process to end with status 0; the JSON summary it
    /// printed (`--json`).
    pub async fn summary(mut self, limit: Duration) -> serde_json::Value {
        let (status, _) = exit_within(&mut self.child, limit).await;
        let (stdout, stderr) = (read_log(self.out), read_log(self.err));
        assert!(status.success(), "{stderr}");
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every checkpoint entry (namespace or partition) of every job in an embedded state store.
pub fn saved_entries(path: &Path) -> Vec<serde_json::Value> {
    saved_state(path)["jobs"]
        .as_object()
        .into_iter()
        .flat_map(|jobs| jobs.values())
        .flat_map(|job| {
            job["namespaces"]
                .as_object()
                .into_iter()
                .flat_map(|n| n.values())
        })
        .cloned()
        .collect()
}

/// Entries of an embedded state store written part-way: some documents done, not complete.
pub fn part_way(path: &Path) -> usize {
    saved_entries(path)
        .iter()
        .filter(|n| n["done"].as_u64() > Some(0) && n["complete"] == false)
        .count()
}

/// Runs `argv` (no output kept) and kills it with `-9` once `ready()` holds, or `limit` has
/// passed; whether it ended by itself before that.
pub async fn kill_when(argv: &[&str], limit: Duration, ready: impl Fn() -> bool) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mongoferry"))
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut ended = false;
    while !ready() && !ended && Instant::now() < deadline {
        ended = child.try_wait().unwrap().is_some();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed before the caller asserts anything, so that a failing test leaves nothing running.
    let _ = child.kill();
    child.wait().unwrap();
    ended
}
