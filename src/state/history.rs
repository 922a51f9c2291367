//! The service's job history on disk: one JSON file, rewritten whole on every change.
//!
//! In: the service's job records (specs already redacted: no credentials ever reach the file).
//! Out: the same records after a restart. The file is rewritten whole ([`write_bytes_atomic`]), so
//! a crash leaves either the old or the new history, never half of one. The records' shape is the
//! service's ([`crate::service::job::JobRecord`]); this file only keeps them.
//!
//! Format: `{"version": 1, "jobs": [record, ...]}` (see docs/ARCHITECTURE.md). Each job's chart
//! series ([`crate::service::series`]) are kept apart, one file per job in a directory beside
//! the history (`jobs.json` → `jobs.series/7.json`), so that sampling a running job rewrites its
//! own small file and never the whole history.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::atomic::write_bytes_atomic;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the state file {path} is not a mongoferry job history: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Serialize, Deserialize)]
struct History<R> {
    version: u32,
    jobs: Vec<R>,
}

/// A JSON file holding the job history.
#[derive(Debug, Clone)]
pub struct HistoryFile {
    path: PathBuf,
}

impl HistoryFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        HistoryFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The jobs of earlier runs; none if the file does not exist yet.
    pub fn load<R: DeserializeOwned>(&self) -> Result<Vec<R>, HistoryError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => {
                return Err(HistoryError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |reason: String| HistoryError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let history: History<R> =
            serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if history.version != VERSION {
            return Err(corrupt(format!("unknown version {}", history.version)));
        }
        Ok(history.jobs)
    }

    /// The directory of the jobs' series: the history's name with `.series` for its extension.
    fn series_dir(&self) -> PathBuf {
        self.path.with_extension("series")
    }

    /// Job `id`'s series, if saved.
    pub fn load_series<S: DeserializeOwned>(&self, id: u64) -> Result<Option<S>, HistoryError> {
        let path = self.series_dir().join(format!("{id}.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(HistoryError::Read { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| HistoryError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Replaces job `id`'s series, atomically.
    pub fn save_series<S: Serialize>(&self, id: u64, series: &S) -> Result<(), HistoryError> {
        let dir = self.series_dir();
        let path = dir.join(format!("{id}.json"));
        let text = serde_json::to_vec(series).expect("series serialise");
        std::fs::create_dir_all(&dir)
            .and_then(|()| write_bytes_atomic(&path, &text))
            .map_err(|source| HistoryError::Write { path, source })
    }

    /// Replaces the history with `jobs`, atomically.
    pub fn save<R: Serialize>(&self, jobs: Vec<R>) -> Result<(), HistoryError> {
        let failed = |source| HistoryError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let text = serde_json::to_vec_pretty(&History {
            version: VERSION,
            jobs,
        })
        .expect("records serialise");
        write_bytes_atomic(&self.path, &text).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_refuses_what_is_not_a_history() {
        let dir = tempfile::tempdir().unwrap();
        let file = HistoryFile::new(dir.path().join("sub/jobs.json"));
        assert!(file.load::<serde_json::Value>().unwrap().is_empty());
        let records = vec![serde_json::json!({"id": 7, "state": "completed"})];
        file.save(records.clone()).unwrap();
        assert_eq!(file.load::<serde_json::Value>().unwrap(), records);
        std::fs::write(file.path(), r#"{"version": 9, "jobs": []}"#).unwrap();
        let err = file.load::<serde_json::Value>().unwrap_err();
        assert!(err.to_string().contains("unknown version 9"), "{err}");
        std::fs::write(file.path(), "{ nope").unwrap();
        assert!(matches!(
            file.load::<serde_json::Value>(),
            Err(HistoryError::Corrupt { .. })
        ));
    }

    #[test]
    fn series_are_kept_per_job_beside_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let file = HistoryFile::new(dir.path().join("jobs.json"));
        assert_eq!(file.load_series::<Vec<f64>>(3).unwrap(), None);
        file.save_series(3, &vec![1.5, 2.5]).unwrap();
        assert_eq!(
            file.load_series::<Vec<f64>>(3).unwrap(),
            Some(vec![1.5, 2.5])
        );
        assert!(dir.path().join("jobs.series/3.json").exists());
        std::fs::write(dir.path().join("jobs.series/3.json"), "[1,").unwrap();
        assert!(matches!(
            file.load_series::<Vec<f64>>(3),
            Err(HistoryError::Corrupt { .. })
        ));
    }
}
