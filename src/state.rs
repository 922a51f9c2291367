//! The job state store: checkpoints and dead letters, which outlive the process.
//!
//! In: a job's per-namespace low watermarks (only ever advanced after the destination
//! acknowledged every document below them) and the documents the destination refused. Out: the
//! same after a crash, so a rerun continues where the last one durably stopped, and nothing
//! refused is lost. [`StateStore`] is the seam: the embedded file store ([`FileStore`]) is the
//! default, [`MemoryStore`] keeps nothing, and a MongoDB collection can implement it later.
//!
//! File format (docs/ARCHITECTURE.md): checkpoints in one JSON file
//! `{"version": 1, "jobs": {KEY: Checkpoint}}`, rewritten through a temporary file, fsynced and
//! renamed under an advisory lock (`PATH.lock`) so that concurrent copies sharing the store do not
//! lose each other's updates; dead letters appended as JSON lines to `PATH.dead-letters.ndjson`
//! and fsynced before the batch counts as done. `_id`s and documents are canonical Extended JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{Bson, Document, RawBson, RawDocumentBuf};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state store {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the state store {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the state store {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("state store task failed: {0}")]
    Task(String),
    /// Another run of the same job holds it: two runs would move one checkpoint back and forth.
    #[error(
        "job {key} is already running{holder} with the state store {path}; wait for it to end or \
         stop it (sharing one job between processes needs a shared state store)"
    )]
    JobBusy {
        key: JobKey,
        path: PathBuf,
        /// " in process N", when the other run said who it is.
        holder: String,
    },
}

/// A run's exclusive hold on its job in a store, released when dropped.
pub struct JobClaim {
    _held: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for JobClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobClaim")
    }
}

/// Identifies one copy job across runs: the same servers (credentials left out), namespaces
/// and filter give the same key. Tunables (workers, rates) are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobKey(pub String);

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JobKey {
    /// The key and a readable description (no secrets) of a job.
    pub fn of(
        from: &str,
        to: &str,
        namespaces: &[String],
        filter: Option<&Document>,
    ) -> (JobKey, String) {
        let filter = filter
            .map(|f| {
                Bson::Document(f.clone())
                    .into_canonical_extjson()
                    .to_string()
            })
            .unwrap_or_default();
        let description = format!(
            "{} -> {} [{}]{}",
            without_credentials(from),
            without_credentials(to),
            namespaces.join(", "),
            if filter.is_empty() {
                String::new()
            } else {
                format!(" filter {filter}")
            }
        );
        (
            JobKey(format!("{:016x}", fnv1a(description.as_bytes()))),
            description,
        )
    }
}

/// The URI without its user info and with secret options as `***`, so a changed password is
/// still the same job and the description holds no secret.
fn without_credentials(uri: &str) -> String {
    let uri = &crate::mongo::redact_secret_options(uri);
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &uri[..scheme_end + 3], &rest[at + 1..]),
        None => uri.to_string(),
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where one namespace of a job stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NsCheckpoint {
    /// Every document up to and including this `_id` (canonical Extended JSON) is durably
    /// written; `None`: nothing yet.
    pub after: Option<serde_json::Value>,
    /// Documents written below the watermark (refused ones included).
    pub done: u64,
    /// Of those, the documents the destination refused (kept as dead letters).
    #[serde(default)]
    pub failed: u64,
    /// Every document of the namespace is written.
    pub complete: bool,
}

impl NsCheckpoint {
    pub fn new(after: Option<&RawBson>, done: u64, complete: bool) -> Self {
        NsCheckpoint {
            after: after
                .and_then(|id| Bson::try_from(id.clone()).ok())
                .map(|id| id.into_canonical_extjson()),
            done,
            failed: 0,
            complete,
        }
    }

    /// The watermark `_id` as raw BSON.
    pub fn after_id(&self) -> Result<Option<RawBson>, String> {
        let Some(value) = &self.after else {
            return Ok(None);
        };
        let bson = Bson::try_from(value.clone()).map_err(|e| e.to_string())?;
        RawBson::try_from(bson).map(Some).map_err(|e| e.to_string())
    }
}

/// A job's checkpoint: one entry per namespace pair (`"src.coll -> dst.coll"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub description: String,
    pub updated_at: f64,
    /// The whole job finished (every namespace complete).
    pub complete: bool,
    pub namespaces: BTreeMap<String, NsCheckpoint>,
}

/// A document the destination refused, kept with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub job: JobKey,
    /// The destination namespace.
    pub ns: String,
    /// The document's `_id`, canonical Extended JSON.
    pub id: serde_json::Value,
    pub reason: String,
    pub code: Option<i32>,
    pub at: f64,
    /// The whole document, canonical Extended JSON.
    pub document: serde_json::Value,
}

impl DeadLetter {
    pub fn new(
        job: &JobKey,
        ns: String,
        doc: &RawDocumentBuf,
        reason: String,
        code: Option<i32>,
    ) -> Self {
        let id = doc
            .get("_id")
            .ok()
            .flatten()
            .and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
            .map(Bson::into_canonical_extjson)
            .unwrap_or(serde_json::Value::Null);
        // A document that does not decode (e.g. invalid UTF-8 from an old server) is kept as
        // its raw bytes: a binary value in Extended JSON, never dropped.
        let document = Document::try_from(doc.as_ref())
            .map(|d| Bson::Document(d).into_canonical_extjson())
            .unwrap_or_else(|_| {
                Bson::Binary(mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: doc.as_bytes().to_vec(),
                })
                .into_canonical_extjson()
            });
        DeadLetter {
            job: job.clone(),
            ns,
            id,
            reason,
            code,
            at: crate::job::unix_now(),
            document,
        }
    }
}

/// Durable job state. Object safe, so stores can be chosen at run time.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Claims the job for this run until the claim is dropped; [`StateError::JobBusy`] while
    /// another run (of this process or another) holds it.
    fn claim<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<JobClaim, StateError>>;
    fn load<'a>(&'a self, key: &'a JobKey)
        -> BoxFuture<'a, Result<Option<Checkpoint>, StateError>>;
    fn save<'a>(
        &'a self,
        key: &'a JobKey,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), StateError>>;
    fn remove<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<(), StateError>>;
    /// Appends refused documents; returns once they are durable.
    fn keep_dead_letters(&self, letters: Vec<DeadLetter>) -> BoxFuture<'_, Result<(), StateError>>;
    /// Where the state lives, for messages.
    fn location(&self) -> String;
    /// Where the dead letters live, for messages.
    fn dead_letter_location(&self) -> String;
}

/// Keeps state in memory only (`--no-state`): nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    checkpoints: Mutex<BTreeMap<JobKey, Checkpoint>>,
    dead_letters: Mutex<Vec<DeadLetter>>,
    claimed: std::sync::Arc<Mutex<std::collections::BTreeSet<JobKey>>>,
}

/// Releases a [`MemoryStore`] claim.
struct MemoryClaim {
    claimed: std::sync::Arc<Mutex<std::collections::BTreeSet<JobKey>>>,
    key: JobKey,
}

impl Drop for MemoryClaim {
    fn drop(&mut self) {
        self.claimed.lock().remove(&self.key);
    }
}

impl MemoryStore {
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().clone()
    }
}

impl StateStore for MemoryStore {
    fn claim<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<JobClaim, StateError>> {
        let claimed = self.claimed.lock().insert(key.clone());
        let outcome = if claimed {
            Ok(JobClaim {
                _held: Box::new(MemoryClaim {
                    claimed: self.claimed.clone(),
                    key: key.clone(),
                }),
            })
        } else {
            Err(StateError::JobBusy {
                key: key.clone(),
                path: self.location().into(),
                holder: " in this process".into(),
            })
        };
        async move { outcome }.boxed()
    }

    fn load<'a>(
        &'a self,
        key: &'a JobKey,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, StateError>> {
        let found = self.checkpoints.lock().get(key).cloned();
        async move { Ok(found) }.boxed()
    }

    fn save<'a>(
        &'a self,
        key: &'a JobKey,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        self.checkpoints
            .lock()
            .insert(key.clone(), checkpoint.clone());
        async { Ok(()) }.boxed()
    }

    fn remove<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<(), StateError>> {
        self.checkpoints.lock().remove(key);
        async { Ok(()) }.boxed()
    }

    fn keep_dead_letters(&self, letters: Vec<DeadLetter>) -> BoxFuture<'_, Result<(), StateError>> {
        self.dead_letters.lock().extend(letters);
        async { Ok(()) }.boxed()
    }

    fn location(&self) -> String {
        "memory (not kept)".into()
    }

    fn dead_letter_location(&self) -> String {
        "no store (--no-state): only their _ids and reasons went to the log".into()
    }
}

/// The embedded store: a JSON file of checkpoints and a JSON-lines file of dead letters.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    jobs: BTreeMap<JobKey, Checkpoint>,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    /// The default store, in the user's data directory.
    pub fn default_path() -> PathBuf {
        data_dir().join("mongoferry/copy-state.json")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    pub fn dead_letter_path(&self) -> PathBuf {
        self.sibling(".dead-letters.ndjson")
    }

    fn write_error(&self, source: io::Error) -> StateError {
        StateError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn ensure_dir(&self) -> Result<(), StateError> {
        match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => std::fs::create_dir_all(dir).map_err(|e| self.write_error(e)),
            None => Ok(()),
        }
    }

    /// Holds the store's advisory lock while `f` runs (blocking: call off the async threads).
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
        self.ensure_dir()?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.sibling(".lock"))
            .map_err(|e| self.write_error(e))?;
        // Released when `lock` closes.
        lock.lock().map_err(|e| self.write_error(e))?;
        f()
    }

    /// The lock file of one job: `PATH.jobs/KEY.lock`, holding the pid of its run.
    fn job_lock_path(&self, key: &JobKey) -> PathBuf {
        self.sibling(".jobs").join(format!("{key}.lock"))
    }

    /// Takes the job's lock without waiting (blocking I/O: call off the async threads).
    fn claim_now(&self, key: &JobKey) -> Result<JobClaim, StateError> {
        use std::io::{Read as _, Seek as _};
        let path = self.job_lock_path(key);
        let failed = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("a file in a directory")).map_err(failed)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim().parse::<u32>() {
                    Ok(pid) if pid == std::process::id() => " in this process".to_string(),
                    Ok(pid) => format!(" in process {pid}"),
                    Err(_) => String::new(),
                };
                return Err(StateError::JobBusy {
                    key: key.clone(),
                    path: self.path.clone(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
        }
        // Who holds it, for the message of a run refused meanwhile.
        file.set_len(0).map_err(failed)?;
        file.rewind().map_err(failed)?;
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(failed)?;
        Ok(JobClaim {
            _held: Box::new(file),
        })
    }

    fn read_all(&self) -> Result<BTreeMap<JobKey, Checkpoint>, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let file: CheckpointFile = serde_json::from_str(&text)
            .map_err(|e| corrupt(format!("not a mongoferry checkpoint file: {e}")))?;
        if file.version != VERSION {
            return Err(corrupt(format!("unknown version {}", file.version)));
        }
        Ok(file.jobs)
    }

    fn write_all(&self, jobs: BTreeMap<JobKey, Checkpoint>) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(&CheckpointFile {
            version: VERSION,
            jobs,
        })
        .expect("checkpoints serialise");
        let tmp = self.sibling(".tmp");
        let write = || -> io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself must survive a crash too.
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.write_error(e))
    }

    fn update(
        &self,
        change: impl FnOnce(&mut BTreeMap<JobKey, Checkpoint>),
    ) -> Result<(), StateError> {
        self.locked(|| {
            let mut jobs = self.read_all()?;
            change(&mut jobs);
            self.write_all(jobs)
        })
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(FileStore) -> Result<T, StateError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StateError>> {
        let store = self.clone();
        async move {
            tokio::task::spawn_blocking(move || f(store))
                .await
                .map_err(|e| StateError::Task(e.to_string()))?
        }
        .boxed()
    }
}

impl StateStore for FileStore {
    fn claim<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<JobClaim, StateError>> {
        let key = key.clone();
        self.blocking(move |s| s.claim_now(&key))
    }

    fn load<'a>(
        &'a self,
        key: &'a JobKey,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, StateError>> {
        let key = key.clone();
        self.blocking(move |s| s.locked(|| Ok(s.read_all()?.remove(&key))))
    }

    fn save<'a>(
        &'a self,
        key: &'a JobKey,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let (key, checkpoint) = (key.clone(), checkpoint.clone());
        self.blocking(move |s| {
            s.update(|jobs| {
                jobs.insert(key, checkpoint);
            })
        })
    }

    fn remove<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<(), StateError>> {
        let key = key.clone();
        self.blocking(move |s| {
            s.update(|jobs| {
                jobs.remove(&key);
            })
        })
    }

    fn keep_dead_letters(&self, letters: Vec<DeadLetter>) -> BoxFuture<'_, Result<(), StateError>> {
        self.blocking(move |s| {
            let mut text = String::new();
            for letter in &letters {
                let line = serde_json::to_string(letter).expect("dead letters serialise");
                let _ = writeln!(text, "{line}");
            }
            let path = s.dead_letter_path();
            let failed = |source| StateError::Write {
                path: path.clone(),
                source,
            };
            s.locked(|| {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(failed)?;
                file.write_all(text.as_bytes()).map_err(failed)?;
                file.sync_all().map_err(failed)
            })
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn dead_letter_location(&self) -> String {
        self.dead_letter_path().display().to_string()
    }
}

/// Reads the dead letters of a file store (all jobs, or one).
pub fn read_dead_letters(path: &Path, job: Option<&JobKey>) -> Result<Vec<DeadLetter>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut letters = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let letter: DeadLetter = serde_json::from_str(line).map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        if job.is_none_or(|k| *k == letter.job) {
            letters.push(letter);
        }
    }
    Ok(letters)
}

/// `$XDG_DATA_HOME`, else `~/.local/share`, else the working directory.
pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| ".".into())
}

#[cfg(test)]
mod tests {
    use mongodb::bson::rawdoc;

    use super::*;

    #[test]
    fn keys_ignore_credentials_and_tunables() {
        let ns = vec!["a.b".to_string()];
        let (k1, d1) = JobKey::of("mongodb://u:p1@h:1/?x=1", "mongodb://h:2", &ns, None);
        let (k2, _) = JobKey::of("mongodb://u:p2@h:1/?x=1", "mongodb://h:2", &ns, None);
        assert_eq!(k1, k2);
        assert!(!d1.contains("p1"), "{d1}");
        let (k3, _) = JobKey::of("mongodb://h:1/?x=1", "mongodb://h:3", &ns, None);
        assert_ne!(k1, k3);
        let filter = mongodb::bson::doc! { "a": 1 };
        let (k4, _) = JobKey::of("mongodb://h:1/?x=1", "mongodb://h:2", &ns, Some(&filter));
        assert_ne!(k1, k4);
        let with_secret = |s: &str| format!("mongodb://h:2/?tlsCertificateKeyFilePassword={s}");
        let (k5, d5) = JobKey::of("mongodb://h:1/?x=1", &with_secret("old-key"), &ns, None);
        let (k6, _) = JobKey::of("mongodb://h:1/?x=1", &with_secret("new-key"), &ns, None);
        assert_eq!(k5, k6, "a changed secret option is the same job");
        assert!(!d5.contains("old-key"), "{d5}");
    }

    #[test]
    fn an_undecodable_refused_document_is_kept_as_raw_bytes() {
        // {_id: 1, s: <a string whose bytes are not UTF-8>}
        let mut bytes = vec![];
        let body: Vec<u8> = [
            &[0x10][..],
            b"_id\0",
            &1i32.to_le_bytes(),
            &[0x02],
            b"s\0",
            &2i32.to_le_bytes(),
            &[0xff, 0x00],
            &[0x00],
        ]
        .concat();
        bytes.extend_from_slice(&((body.len() + 4) as i32).to_le_bytes());
        bytes.extend_from_slice(&body);
        let doc = RawDocumentBuf::from_bytes(bytes.clone()).unwrap();
        let letter = DeadLetter::new(&JobKey("k".into()), "a.b".into(), &doc, "bad".into(), None);
        assert_eq!(letter.id["$numberInt"], "1");
        let kept = letter.document["$binary"]["base64"].as_str().unwrap();
        let bson = Bson::try_from(letter.document.clone()).unwrap();
        assert_eq!(
            bson,
            Bson::Binary(mongodb::bson::Binary {
                subtype: mongodb::bson::spec::BinarySubtype::Generic,
                bytes,
            }),
            "{kept}"
        );
    }

    #[test]
    fn watermarks_keep_their_type() {
        for id in [
            RawBson::Int64(5),
            RawBson::Int32(5),
            RawBson::String("x".into()),
            RawBson::Double(2.5),
        ] {
            let cp = NsCheckpoint::new(Some(&id), 1, false);
            let text = serde_json::to_string(&cp).unwrap();
            let back: NsCheckpoint = serde_json::from_str(&text).unwrap();
            assert_eq!(back.after_id().unwrap(), Some(id));
        }
    }

    #[tokio::test]
    async fn file_store_round_trips_and_merges_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("sub/state.json"));
        let key = |s: &str| JobKey(s.into());
        assert_eq!(store.load(&key("a")).await.unwrap(), None);
        let mut cp = Checkpoint {
            description: "d".into(),
            ..Default::default()
        };
        cp.namespaces.insert(
            "a.b -> a.b".into(),
            NsCheckpoint::new(Some(&RawBson::Int32(3)), 3, false),
        );
        store.save(&key("a"), &cp).await.unwrap();
        store.save(&key("b"), &Checkpoint::default()).await.unwrap();
        assert_eq!(store.load(&key("a")).await.unwrap(), Some(cp));
        store.remove(&key("a")).await.unwrap();
        assert_eq!(store.load(&key("a")).await.unwrap(), None);
        assert!(store.load(&key("b")).await.unwrap().is_some());

        let doc = rawdoc! { "_id": 7_i64, "x": "y" };
        let letter = DeadLetter::new(&key("b"), "a.b".into(), &doc, "too big".into(), Some(2));
        store.keep_dead_letters(vec![letter.clone()]).await.unwrap();
        let read = read_dead_letters(&store.dead_letter_path(), Some(&key("b"))).unwrap();
        assert_eq!(read, vec![letter]);
        assert!(
            read_dead_letters(&store.dead_letter_path(), Some(&key("a")))
                .unwrap()
                .is_empty()
        );

        // One run of a job at a time, in this process or another; others after it ends.
        let claim = store.claim(&key("a")).await.unwrap();
        let busy = store.claim(&key("a")).await.unwrap_err();
        assert!(matches!(busy, StateError::JobBusy { .. }), "{busy}");
        assert!(
            busy.to_string().contains("already running in this process"),
            "{busy}"
        );
        let other = store.claim(&key("b")).await.unwrap();
        drop(claim);
        drop(store.claim(&key("a")).await.unwrap());
        drop(other);

        std::fs::write(store.path(), "{ nope").unwrap();
        assert!(matches!(
            store.load(&key("b")).await,
            Err(StateError::Corrupt { .. })
        ));
    }
}
