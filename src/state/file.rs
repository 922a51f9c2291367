//! The embedded state store: checkpoints in one JSON file, dead letters in a JSON-lines file.
//!
//! In: checkpoints, dead letters, claims. Out: the same after a crash. Format
//! (docs/ARCHITECTURE.md): checkpoints in `{"version": 1, "jobs": {KEY: Checkpoint}}`, rewritten
//! whole ([`write_atomic`]) under an advisory lock (`PATH.lock`) so that concurrent copies
//! sharing the store do not lose each other's updates; dead letters appended as JSON lines to
//! `PATH.dead-letters.ndjson` and fsynced before the batch counts as done; a run's claim on its
//! job is a lock on `PATH.jobs/KEY.lock`. `_id`s and documents are canonical Extended JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::atomic::write_bytes_atomic;
use super::{data_dir, Checkpoint, DeadLetter, JobClaim, JobKey, StateError, StateStore};

const VERSION: u32 = 1;

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
        write_bytes_atomic(&self.path, &text).map_err(|e| self.write_error(e))
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

#[cfg(test)]
mod tests {
    use mongodb::bson::{rawdoc, RawBson};

    use super::*;
    use crate::state::NsCheckpoint;

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
