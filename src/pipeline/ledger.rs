//! The job's durable record: dead letters and checkpoints.
//!
//! In: documents the destination refused (from the workers) and the namespace tasks' low
//! watermarks. Out: dead letters in the [`StateStore`], durable before their batch counts as
//! done, and the job's [`Checkpoint`], saved whenever a watermark moved (at most every
//! [`CHECKPOINT_EVERY`]) and once more when the run ends, however it ends. A watermark only
//! moves after the destination acknowledged everything below it, so a checkpoint never claims
//! a document that is not written.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::queue::NsTask;
use super::sink::Refused;
use super::CopyError;
use crate::journal::writer::JournalSender;
use crate::mongo::Namespace;
use crate::state::{Checkpoint, DeadLetter, JobKey, MemoryStore, StateStore};
use crate::stats::DeadLetterLog;

/// How often a moved watermark is saved: a crash re-copies at most about this much work.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn StateStore>,
    key: JobKey,
    description: String,
}

impl Ledger {
    pub fn new(store: Arc<dyn StateStore>, key: JobKey, description: String) -> Self {
        Ledger {
            store,
            key,
            description,
        }
    }

    /// Keeps nothing beyond the process (benchmarks, tests of the engine alone).
    pub fn in_memory() -> Self {
        Ledger::new(
            Arc::new(MemoryStore::default()),
            JobKey("in-memory".into()),
            String::new(),
        )
    }

    pub fn key(&self) -> &JobKey {
        &self.key
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Stores refused documents with their reasons; returns once they are durable.
    pub async fn keep(
        &self,
        ns: &Namespace,
        refused: Vec<Refused>,
        log: &DeadLetterLog,
    ) -> Result<(), CopyError> {
        let letters: Vec<DeadLetter> = refused
            .into_iter()
            .map(|r| DeadLetter::new(&self.key, ns.to_string(), &r.doc, r.reason, r.code))
            .collect();
        for letter in &letters {
            tracing::warn!("{ns}: document {} refused: {}", letter.id, letter.reason);
        }
        self.store.keep_dead_letters(letters.clone()).await?;
        log.record(&letters);
        Ok(())
    }

    /// The job's checkpoint as of now.
    pub fn checkpoint(&self, tasks: &[Arc<NsTask>]) -> Checkpoint {
        let namespaces: std::collections::BTreeMap<_, _> =
            tasks.iter().map(|t| (t.key(), t.checkpoint())).collect();
        Checkpoint {
            description: self.description.clone(),
            updated_at: crate::job::unix_now(),
            complete: namespaces.values().all(|n| n.complete),
            namespaces,
        }
    }

    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CopyError> {
        Ok(self.store.save(&self.key, checkpoint).await?)
    }

    /// Saves the checkpoint whenever it moved, until `stop`; then once more. With a `journal`,
    /// each save first waits until the journal durably holds every batch the checkpoint covers
    /// (they were appended before the batches counted as done).
    pub async fn run(
        self: Arc<Self>,
        tasks: Vec<Arc<NsTask>>,
        journal: Option<JournalSender>,
        stop: CancellationToken,
    ) -> Result<(), CopyError> {
        let mut saved = self.checkpoint(&tasks).namespaces;
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => false,
            };
            let now = self.checkpoint(&tasks);
            if now.namespaces != saved || stopping {
                if let Some(journal) = &journal {
                    journal.sync().await?;
                }
                self.save(&now).await?;
                saved = now.namespaces;
            }
            if stopping {
                return Ok(());
            }
        }
    }
}
