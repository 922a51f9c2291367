//! A state store that keeps everything in memory (`--no-state`): nothing survives the process.
//!
//! In: checkpoints, dead letters, claims. Out: the same, for as long as the process lives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;

use super::{Checkpoint, DeadLetter, JobClaim, JobKey, StateError, StateStore};

/// Keeps state in memory only (`--no-state`): nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    checkpoints: Mutex<BTreeMap<JobKey, Checkpoint>>,
    dead_letters: Mutex<Vec<DeadLetter>>,
    claimed: Arc<Mutex<BTreeSet<JobKey>>>,
}

/// Releases a [`MemoryStore`] claim.
struct MemoryClaim {
    claimed: Arc<Mutex<BTreeSet<JobKey>>>,
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
