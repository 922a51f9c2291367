//! The embedded state store: checkpoints in an SQLite database, dead letters in a JSON-lines
//! file.
//!
//! In: checkpoints, dead letters, claims. Out: the same after a crash. Format
//! (docs/ARCHITECTURE.md): a job's checkpoint is one row of `jobs` (its description, flags and
//! sync position) and one row of `entries` per namespace or partition; a save writes only the
//! entries that moved since this store last wrote the job (the job's claim makes this store its
//! only writer), in one transaction, so a job of thousands of partitions costs per save what
//! moved, not the whole checkpoint. SQLite's own locking and write-ahead log keep concurrent
//! copies sharing the store from losing each other's jobs. Dead letters are appended as JSON
//! lines to `PATH.dead-letters.ndjson` and fsynced before the batch counts as done; a run's
//! claim on its job is a lock on `PATH.jobs/KEY.lock`. `_id`s and documents are canonical
//! Extended JSON. A store of the first format (one JSON file) is converted on first use, its file
//! kept beside as `PATH.v1.json`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{
    data_dir, Checkpoint, DeadLetter, JobClaim, JobKey, NsCheckpoint, StateError, StateStore,
};

/// The first format: every job's checkpoint in one JSON document.
const JSON_VERSION: u32 = 1;

/// How long a write waits for another process's transaction on the same store.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The embedded store: an SQLite database of checkpoints and a JSON-lines file of dead letters.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    /// A store of the first format to take the jobs from, when `path` does not exist yet.
    migrate_from: Option<PathBuf>,
    /// The connection, opened on first use.
    db: Arc<Mutex<Option<Connection>>>,
    /// What this store last wrote (or read) of each job's entries: a save writes what differs.
    written: Arc<Mutex<HashMap<JobKey, BTreeMap<String, NsCheckpoint>>>>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    jobs: BTreeMap<JobKey, Checkpoint>,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: path.into(),
            migrate_from: None,
            db: Arc::default(),
            written: Arc::default(),
        }
    }

    /// Takes the jobs of `old` (a store of the first format, with its dead letters) when this
    /// store does not exist yet: the default path changed with the format.
    pub fn migrating_from(mut self, old: impl Into<PathBuf>) -> Self {
        self.migrate_from = Some(old.into());
        self
    }

    /// The default store, in the user's data directory.
    pub fn default_path() -> PathBuf {
        data_dir().join("mongoferry/copy-state.db")
    }

    /// Where the default store of the first format was.
    pub fn first_format_default_path() -> PathBuf {
        data_dir().join("mongoferry/copy-state.json")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        sibling(&self.path, suffix)
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

    fn database_error(&self, e: rusqlite::Error) -> StateError {
        match e {
            rusqlite::Error::SqliteFailure(code, _)
                if code.code == rusqlite::ErrorCode::NotADatabase =>
            {
                StateError::Corrupt {
                    path: self.path.clone(),
                    reason: "not a mongoferry state store (neither SQLite nor its JSON format)"
                        .into(),
                }
            }
            e => StateError::Write {
                path: self.path.clone(),
                source: io::Error::other(e),
            },
        }
    }

    fn ensure_dir(&self) -> Result<(), StateError> {
        match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => std::fs::create_dir_all(dir).map_err(|e| self.write_error(e)),
            None => Ok(()),
        }
    }

    /// Holds the store's advisory lock while `f` runs (blocking: call off the async threads):
    /// the dead letters' appends and the conversion of a store of the first format.
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

    /// Runs `f` on the store's database, opened (and converted from the first format) on first
    /// use. Blocking: call off the async threads.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StateError> {
        let mut db = self.db.lock();
        if db.is_none() {
            *db = Some(self.locked(|| self.open())?);
        }
        f(db.as_mut().expect("opened above")).map_err(|e| self.database_error(e))
    }

    /// Opens the database, creating its tables, after taking the jobs of a store of the first
    /// format: the file at `path` itself (kept as `PATH.v1.json`), or the one `migrate_from`
    /// names (kept as `OLD.migrated`, its dead letters moved beside this store). The database
    /// is built aside and renamed into place, so a crash leaves the old store or the new one. A
    /// file that cannot be read is left as it is, with the error.
    fn open(&self) -> Result<Connection, StateError> {
        let old = if is_first_format(&self.path) {
            Some(self.path.clone())
        } else {
            self.migrate_from
                .clone()
                .filter(|old| !self.path.exists() && is_first_format(old))
        };
        if let Some(old) = &old {
            self.convert(old)?;
        }
        let mut db = Connection::open(&self.path).map_err(|e| self.database_error(e))?;
        let setup = |db: &mut Connection| {
            db.busy_timeout(BUSY_TIMEOUT)?;
            db.pragma_update(None, "journal_mode", "wal")?;
            // Every commit is durable before a checkpoint counts as saved.
            db.pragma_update(None, "synchronous", "full")?;
            create_tables(db)
        };
        setup(&mut db).map_err(|e| self.database_error(e))?;
        Ok(db)
    }

    /// Makes this store from `old`, a store of the first format.
    fn convert(&self, old: &Path) -> Result<(), StateError> {
        let text = std::fs::read(old).map_err(|source| StateError::Read {
            path: old.to_path_buf(),
            source,
        })?;
        let jobs = read_first_format(old)?;
        let building = self.sibling(".converting");
        let _ = std::fs::remove_file(&building);
        let build = || -> Result<(), rusqlite::Error> {
            let mut db = Connection::open(&building)?;
            create_tables(&db)?;
            let tx = db.transaction()?;
            for (key, checkpoint) in &jobs {
                let changes = Changes {
                    key: key.clone(),
                    job: to_json(&job_row(checkpoint)),
                    whole: true,
                    upserts: checkpoint.namespaces.clone().into_iter().collect(),
                    removed: Vec::new(),
                };
                write_job(&tx, &changes)?;
            }
            tx.commit()?;
            db.close().map_err(|(_, e)| e)
        };
        build().map_err(|e| self.database_error(e))?;
        let failed = |e| self.write_error(e);
        let retired = if old == self.path {
            // Kept before the database takes its place.
            let kept = self.sibling(".v1.json");
            super::atomic::write_bytes_atomic(&kept, &text).map_err(failed)?;
            kept
        } else {
            let letters = sibling(old, ".dead-letters.ndjson");
            if letters.exists() && !self.dead_letter_path().exists() {
                std::fs::rename(&letters, self.dead_letter_path()).map_err(failed)?;
            }
            sibling(old, ".migrated")
        };
        std::fs::rename(&building, &self.path).map_err(failed)?;
        if old != self.path {
            std::fs::rename(old, &retired).map_err(failed)?;
        }
        tracing::info!(
            "converted the state store {} to {} ({} jobs; the old file is kept as {})",
            old.display(),
            self.path.display(),
            jobs.len(),
            retired.display()
        );
        Ok(())
    }

    fn load_job(&self, key: &JobKey) -> Result<Option<Checkpoint>, StateError> {
        let loaded = self.with_db(|db| read_job(db, key))?;
        let mut written = self.written.lock();
        match &loaded {
            Some(checkpoint) => written.insert(key.clone(), checkpoint.namespaces.clone()),
            None => written.remove(key),
        };
        Ok(loaded)
    }

    /// What a save of `checkpoint` changes in the store: computed on the caller's thread, so
    /// that only what moved is copied to the blocking write.
    fn changes(&self, key: &JobKey, checkpoint: &Checkpoint) -> Changes {
        let written = self.written.lock();
        let before = written.get(key);
        Changes {
            key: key.clone(),
            job: to_json(&job_row(checkpoint)),
            whole: before.is_none(),
            upserts: checkpoint
                .namespaces
                .iter()
                .filter(|(entry, now)| before.and_then(|b| b.get(*entry)) != Some(*now))
                .map(|(entry, now)| (entry.clone(), now.clone()))
                .collect(),
            removed: before
                .into_iter()
                .flat_map(|b| b.keys())
                .filter(|entry| !checkpoint.namespaces.contains_key(*entry))
                .cloned()
                .collect(),
        }
    }

    fn save_job(&self, changes: Changes) -> Result<(), StateError> {
        self.with_db(|db| {
            let tx = db.transaction()?;
            write_job(&tx, &changes)?;
            tx.commit()
        })?;
        let mut written = self.written.lock();
        let entries = written.entry(changes.key).or_default();
        if changes.whole {
            entries.clear();
        }
        for gone in changes.removed {
            entries.remove(&gone);
        }
        entries.extend(changes.upserts);
        Ok(())
    }

    fn remove_job(&self, key: &JobKey) -> Result<(), StateError> {
        self.with_db(|db| {
            let tx = db.transaction()?;
            tx.execute("DELETE FROM jobs WHERE key = ?1", params![key.0])?;
            tx.execute("DELETE FROM entries WHERE job = ?1", params![key.0])?;
            tx.commit()
        })?;
        self.written.lock().remove(key);
        Ok(())
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
        self.blocking(move |s| s.load_job(&key))
    }

    fn save<'a>(
        &'a self,
        key: &'a JobKey,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let changes = self.changes(key, checkpoint);
        self.blocking(move |s| s.save_job(changes))
    }

    fn remove<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<(), StateError>> {
        let key = key.clone();
        self.blocking(move |s| s.remove_job(&key))
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

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Whether `path` holds a store of the first format (a JSON document).
fn is_first_format(path: &Path) -> bool {
    use std::io::Read as _;
    let mut first = [0u8; 64];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let n = file.read(&mut first).unwrap_or(0);
    first[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// The jobs of a store of the first format.
fn read_first_format(path: &Path) -> Result<BTreeMap<JobKey, Checkpoint>, StateError> {
    let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: CheckpointFile = serde_json::from_str(&text)
        .map_err(|e| corrupt(format!("not a mongoferry checkpoint file: {e}")))?;
    if file.version != JSON_VERSION {
        return Err(corrupt(format!("unknown version {}", file.version)));
    }
    Ok(file.jobs)
}

/// What one save writes: the job's row, and of its entries those that moved (all, and no
/// other, when `whole`) and those it no longer has.
struct Changes {
    key: JobKey,
    job: String,
    whole: bool,
    upserts: Vec<(String, NsCheckpoint)>,
    removed: Vec<String>,
}

/// A checkpoint without its entries: the job's row.
fn job_row(checkpoint: &Checkpoint) -> Checkpoint {
    let Checkpoint {
        description,
        updated_at,
        complete,
        namespaces: _,
        sync,
        shared,
        recheck,
    } = checkpoint;
    Checkpoint {
        description: description.clone(),
        updated_at: *updated_at,
        complete: *complete,
        namespaces: BTreeMap::new(),
        sync: sync.clone(),
        shared: shared.clone(),
        recheck: recheck.clone(),
    }
}

fn write_job(tx: &rusqlite::Transaction<'_>, changes: &Changes) -> Result<(), rusqlite::Error> {
    let key = &changes.key.0;
    tx.execute(
        "INSERT INTO jobs (key, job) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET job = excluded.job",
        params![key, changes.job],
    )?;
    if changes.whole {
        tx.execute("DELETE FROM entries WHERE job = ?1", params![key])?;
    }
    for gone in &changes.removed {
        tx.execute(
            "DELETE FROM entries WHERE job = ?1 AND entry = ?2",
            params![key, gone],
        )?;
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO entries (job, entry, checkpoint) VALUES (?1, ?2, ?3)
         ON CONFLICT (job, entry) DO UPDATE SET checkpoint = excluded.checkpoint",
    )?;
    for (entry, now) in &changes.upserts {
        upsert.execute(params![key, entry, to_json(now)])?;
    }
    Ok(())
}

fn create_tables(db: &Connection) -> Result<(), rusqlite::Error> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS jobs (key TEXT PRIMARY KEY, job TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS entries (
             job TEXT NOT NULL, entry TEXT NOT NULL, checkpoint TEXT NOT NULL,
             PRIMARY KEY (job, entry)) WITHOUT ROWID;",
    )
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("checkpoints serialise")
}

/// A job as the store holds it.
fn read_job(db: &Connection, key: &JobKey) -> Result<Option<Checkpoint>, rusqlite::Error> {
    let job: Option<String> = db
        .query_row("SELECT job FROM jobs WHERE key = ?1", params![key.0], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(job) = job else {
        return Ok(None);
    };
    let bad = |e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    };
    let mut checkpoint: Checkpoint = serde_json::from_str(&job).map_err(bad)?;
    let mut entries = db.prepare_cached("SELECT entry, checkpoint FROM entries WHERE job = ?1")?;
    let rows = entries.query_map(params![key.0], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (entry, text) = row?;
        checkpoint
            .namespaces
            .insert(entry, serde_json::from_str(&text).map_err(bad)?);
    }
    Ok(Some(checkpoint))
}

/// Every job of the embedded store at `path`, as it stands (for tools and tests that look at a
/// store a copy is using).
pub fn read_checkpoints(path: &Path) -> Result<BTreeMap<JobKey, Checkpoint>, StateError> {
    if is_first_format(path) {
        return read_first_format(path);
    }
    let failed = |e: rusqlite::Error| StateError::Read {
        path: path.to_path_buf(),
        source: io::Error::other(e),
    };
    let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(failed)?;
    db.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    let keys: Vec<String> = db
        .prepare("SELECT key FROM jobs ORDER BY key")
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .map_err(failed)?;
    let mut jobs = BTreeMap::new();
    for key in keys {
        let key = JobKey(key);
        if let Some(checkpoint) = read_job(&db, &key).map_err(failed)? {
            jobs.insert(key, checkpoint);
        }
    }
    Ok(jobs)
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

        // A file that is no store: a clear error, and the file left as it is.
        for garbage in [
            "{ nope",
            "not a database at all, but long enough to be looked at",
        ] {
            let path = dir.path().join("garbage");
            std::fs::write(&path, garbage).unwrap();
            let error = FileStore::new(&path).load(&key("b")).await.unwrap_err();
            assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), garbage);
        }
    }

    fn partitioned(entries: u32, done: u64) -> Checkpoint {
        let mut cp = Checkpoint {
            description: "many partitions".into(),
            ..Default::default()
        };
        for i in 0..entries {
            cp.namespaces.insert(
                format!("a.b -> a.b #{i:05}"),
                NsCheckpoint::new(Some(&RawBson::Int64(i64::from(i))), done, false),
            );
        }
        cp
    }

    /// A save writes the entries that moved, not the whole checkpoint: with thousands of
    /// partitions a save of one that moved changes one row.
    #[tokio::test]
    async fn a_save_writes_only_what_moved() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("state.db"));
        let key = JobKey("k".into());
        let mut cp = partitioned(5_000, 1);
        store.save(&key, &cp).await.unwrap();
        let changes = || store.with_db(|db| Ok(db.total_changes())).unwrap();
        let before = changes();
        cp.namespaces.get_mut("a.b -> a.b #00042").unwrap().done = 2;
        cp.namespaces.remove("a.b -> a.b #00043");
        store.save(&key, &cp).await.unwrap();
        // The job's row, the entry that moved and the one removed.
        assert_eq!(changes() - before, 3);
        // Another store (another process) reads it all back.
        let other = FileStore::new(dir.path().join("state.db"));
        assert_eq!(other.load(&key).await.unwrap(), Some(cp.clone()));
        assert_eq!(read_checkpoints(store.path()).unwrap()[&key], cp);
    }

    /// A store of the first format is converted on first use, where it is or from the old
    /// default path, with its dead letters, and its file kept aside.
    #[tokio::test]
    async fn a_store_of_the_first_format_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let key = JobKey("k".into());
        let cp = partitioned(3, 7);
        let first_format = serde_json::to_string(&CheckpointFile {
            version: JSON_VERSION,
            jobs: BTreeMap::from([(key.clone(), cp.clone())]),
        })
        .unwrap();

        let in_place = dir.path().join("state.json");
        std::fs::write(&in_place, &first_format).unwrap();
        let store = FileStore::new(&in_place);
        assert_eq!(store.load(&key).await.unwrap(), Some(cp.clone()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("state.json.v1.json")).unwrap(),
            first_format
        );

        let old = dir.path().join("copy-state.json");
        std::fs::write(&old, &first_format).unwrap();
        std::fs::write(
            dir.path().join("copy-state.json.dead-letters.ndjson"),
            "{}\n",
        )
        .unwrap();
        let store = FileStore::new(dir.path().join("copy-state.db")).migrating_from(&old);
        assert_eq!(store.load(&key).await.unwrap(), Some(cp));
        assert!(!old.exists() && dir.path().join("copy-state.json.migrated").exists());
        assert_eq!(
            std::fs::read_to_string(store.dead_letter_path()).unwrap(),
            "{}\n"
        );
    }
}
