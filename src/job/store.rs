//! The service's job history on disk: one JSON file, rewritten whole on every change.
//!
//! In: [`JobRecord`]s (specs already redacted: no credentials ever reach the file). Out: the same
//! records after a restart. The file is rewritten whole ([`write_bytes_atomic`]), so a crash
//! leaves either the old or the new history, never half of one.
//!
//! Format: `{"version": 1, "jobs": [JobRecord, ...]}` (see docs/ARCHITECTURE.md).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JobRecord;
use crate::state::atomic::write_bytes_atomic;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the state file {path} is not a mongoferry job history: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Serialize, Deserialize)]
struct History {
    version: u32,
    jobs: Vec<JobRecord>,
}

/// A JSON file holding the job history.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The jobs of earlier runs; none if the file does not exist yet.
    pub fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let history: History = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if history.version != VERSION {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("unknown version {}", history.version),
            });
        }
        Ok(history.jobs)
    }

    /// Replaces the history with `jobs`, atomically.
    pub fn save(&self, jobs: Vec<JobRecord>) -> Result<(), StoreError> {
        let failed = |source| StoreError::Write {
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
    use crate::job::{JobId, JobSpec, JobState};

    #[test]
    fn saves_and_loads_without_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("sub/state.json"));
        assert!(file.load().unwrap().is_empty());
        let spec = JobSpec {
            from: "mongodb://u:secret@a".into(),
            to: "mongodb://b".into(),
            namespaces: vec!["a.b".into()],
            filter: None,
            workers: None,
            batch_size: None,
            strategy: None,
            rate: None,
            rate_bytes: None,
            adaptive: None,
            restart: None,
            max_document_bytes: None,
            verify: None,
            journal: None,
        };
        let record = crate::job::JobRecord {
            id: JobId(7),
            spec: spec.redacted(),
            state: JobState::Completed,
            workers: 4,
            created_at: 1.0,
            finished_at: Some(2.0),
            error: None,
            docs: 10,
            bytes: 100,
            skipped: 0,
            failed: 0,
        };
        file.save(vec![record]).unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let loaded = file.load().unwrap();
        assert_eq!(loaded[0].id, JobId(7));
        assert_eq!(loaded[0].state, JobState::Completed);
        std::fs::write(file.path(), "{ nope").unwrap();
        assert!(matches!(file.load(), Err(StoreError::Corrupt { .. })));
    }
}
