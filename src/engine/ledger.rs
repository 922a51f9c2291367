//! The job's durable record: dead letters and checkpoints, and the contract they keep.
//!
//! In: documents the destination refused (from the workers) and the namespace tasks' low
//! watermarks. Out: dead letters in the [`StateStore`], durable before their batch counts as
//! done, and the job's [`Checkpoint`], saved whenever a watermark moved (at most every
//! [`CHECKPOINT_EVERY`]) and once more when the run ends, however it ends.
//!
//! # The checkpoint contract
//!
//! A saved checkpoint never claims a document that is not durably written. It holds because:
//!
//! 1. **Batches are numbered in `_id` order.** A source queues each namespace's batches in `_id`
//!    order, each batch sorted; the queue numbers them as they are queued ([`Watermark`]).
//! 2. **A batch is acknowledged** when the sink returned success for it: the destination stored
//!    every document that was not refused, and the refused ones are durable dead letters
//!    ([`Ledger::keep`] returns only then). With a journal layer, success also means the journal
//!    writer has taken the batch.
//! 3. **The low watermark** of a namespace is the last `_id` of the longest unbroken run of
//!    acknowledged batches from the first. Batches finish out of order; the watermark never passes
//!    a batch still in flight, so everything at or below it is acknowledged.
//! 4. **Saving** a checkpoint first makes every layer of the sink durable ([`Sink::make_durable`]: the journal's
//!    fsync), then writes the watermarks to the state store.
//! 5. **Resuming** reads only what sorts after the watermark, across `_id` type brackets
//!    ([`bson_order::after`](crate::mongo::bson_order::after)). What a killed run wrote past its
//!    last saved watermark is written again: writes are idempotent by `_id`.
//!
//! # Shared jobs
//!
//! A job whose namespaces are partitioned can be shared by several processes through a store
//! that [shares jobs](StateStore::shares_jobs) (MongoDB). The job's own checkpoint then holds
//! only the layout (the partitions and the layout's id); each partition's progress is kept
//! under its own key ([`Checkpoint::part_key`]), claimed by lease by the one process that
//! copies it ([`Ledger::acquire`]) and saved fenced by that claim's token. The contract above
//! holds per partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::sink::seam::{Refused, Sink};
use super::stats::DeadLetterLog;
use super::task::NsTask;
use crate::engine::error::CopyError;
use crate::mongo::Namespace;
use crate::state::{
    unix_now, Checkpoint, DeadLetter, JobClaim, JobKey, MemoryStore, StateStore, SyncCheckpoint,
    VerificationCheckpoint,
};

/// How often a moved watermark is saved: a crash re-copies at most about this much work.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn StateStore>,
    key: JobKey,
    description: String,
    /// A sync job's position in the source's history, saved with every checkpoint.
    sync: Mutex<Option<SyncCheckpoint>>,
    /// A shared job's partitions ("Shared jobs" above), until the run holds the whole job
    /// again (a sync's following).
    shared: Mutex<Option<Arc<Shared>>>,
    /// A sync's verifier: its state is read into each checkpoint, after the sync's position.
    verification: Mutex<Option<Arc<dyn VerificationState>>>,
}

/// What a sync's continuous verification saves with each checkpoint. Read after the sync's
/// position, so that it holds at least every `_id` to compare again that the position covers.
pub trait VerificationState: Send + Sync + std::fmt::Debug {
    fn checkpoint(&self) -> VerificationCheckpoint;
}

/// The partitions of a shared job this run holds.
#[derive(Debug)]
struct Shared {
    /// The id of the job's layout.
    layout: String,
    /// Claims of the partitions this run copies, by checkpoint entry.
    held: Mutex<BTreeMap<String, JobClaim>>,
}

impl Ledger {
    pub fn new(store: Arc<dyn StateStore>, key: JobKey, description: String) -> Self {
        Ledger {
            store,
            key,
            description,
            sync: Mutex::new(None),
            shared: Mutex::new(None),
            verification: Mutex::new(None),
        }
    }

    /// A job whose partitions (of the layout `layout`) other processes may share.
    pub fn shared(self, layout: String) -> Self {
        *self.shared.lock() = Some(Arc::new(Shared {
            layout,
            held: Mutex::default(),
        }));
        self
    }

    fn sharing(&self) -> Option<Arc<Shared>> {
        self.shared.lock().clone()
    }

    pub fn is_shared(&self) -> bool {
        self.shared.lock().is_some()
    }

    /// The run holds the whole job again (its claim): the checkpoint is saved whole, under the
    /// job's key, from now on. A sync's following is done by one process.
    pub fn unshare(&self) {
        self.release();
        *self.shared.lock() = None;
    }

    /// Whether this run may read `task`: always, unless the job is shared; then only once this
    /// run holds the task's partition, continued from what other processes saved of it (not
    /// when another process holds it or finished it).
    pub async fn acquire(&self, task: &NsTask) -> Result<bool, CopyError> {
        let Some(shared) = self.sharing() else {
            return Ok(true);
        };
        let entry = task.key();
        let key = Checkpoint::part_key(&self.key, &shared.layout, &entry);
        let Some(claim) = self.store.try_claim(&key).await? else {
            return Ok(false);
        };
        self.continue_task(task, &key).await?;
        if task.is_finished() {
            return Ok(false);
        }
        shared.held.lock().insert(entry, claim);
        Ok(true)
    }

    /// Continues every task of a shared job that this run does not hold from what the other
    /// processes saved of it; the number still unfinished.
    pub async fn refresh(&self, tasks: &[Arc<NsTask>]) -> Result<usize, CopyError> {
        let Some(shared) = self.sharing() else {
            return Ok(tasks.iter().filter(|t| !t.is_finished()).count());
        };
        let mut left = 0;
        for task in tasks.iter().filter(|t| !t.is_finished()) {
            let entry = task.key();
            if !shared.held.lock().contains_key(&entry) {
                let key = Checkpoint::part_key(&self.key, &shared.layout, &entry);
                self.continue_task(task, &key).await?;
            }
            left += usize::from(!task.is_finished());
        }
        Ok(left)
    }

    /// Gives back the partitions this run holds (after its last save).
    pub fn release(&self) {
        if let Some(shared) = self.sharing() {
            shared.held.lock().clear();
        }
    }

    async fn continue_task(&self, task: &NsTask, key: &JobKey) -> Result<(), CopyError> {
        let saved = self.store.load(key).await?;
        let Some(entry) = saved.as_ref().and_then(|c| c.namespaces.get(&task.key())) else {
            return Ok(());
        };
        task.continue_from(entry).map_err(|reason| {
            CopyError::from(crate::state::StateError::Corrupt {
                path: self.store.location().into(),
                reason: format!("checkpoint of {key}: {reason}"),
            })
        })
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

    /// The job's checkpoint as of now. A sync job is complete once committed.
    pub fn checkpoint(&self, tasks: &[Arc<NsTask>]) -> Checkpoint {
        let namespaces: std::collections::BTreeMap<_, _> =
            tasks.iter().map(|t| (t.key(), t.checkpoint())).collect();
        let mut sync = self.sync.lock().clone();
        let verification = self.verification.lock().clone();
        if let (Some(sync), Some(verification)) = (sync.as_mut(), verification) {
            sync.verification = Some(verification.checkpoint());
        }
        Checkpoint {
            description: self.description.clone(),
            updated_at: unix_now(),
            complete: namespaces.values().all(|n| n.complete)
                && sync.as_ref().is_none_or(|s| s.committed),
            namespaces,
            sync,
            shared: self.sharing().map(|s| s.layout.clone()),
            recheck: Vec::new(),
        }
    }

    /// Moves a sync job's position; saved with the next checkpoint. Only ever called with a
    /// position up to which every change is applied (and the sink synced before the save).
    pub fn set_sync_position(&self, sync: SyncCheckpoint) {
        *self.sync.lock() = Some(sync);
    }

    /// From now on each checkpoint saves `state`'s verification with the sync's position.
    pub fn record_verification(&self, state: Arc<dyn VerificationState>) {
        *self.verification.lock() = Some(state);
    }

    /// Checkpoints no longer save a verification (the sync's position changed under it).
    pub fn forget_verification(&self) {
        *self.verification.lock() = None;
    }

    pub fn sync_position(&self) -> Option<SyncCheckpoint> {
        self.sync.lock().clone()
    }

    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), CopyError> {
        Ok(self.store.save(&self.key, checkpoint).await?)
    }

    /// Saves the checkpoint whenever it moved, until `stop`; then once more. Each save first
    /// waits until every layer of the `sink` durably holds the batches the checkpoint covers
    /// ([`Sink::make_durable`]: a journal's fsync; they were handed over before the batches counted as
    /// done).
    pub async fn run(
        self: Arc<Self>,
        tasks: Vec<Arc<NsTask>>,
        sink: Arc<dyn Sink>,
        stop: CancellationToken,
    ) -> Result<(), CopyError> {
        // What was saved under each key. Nothing counts as saved until this task has saved
        // once: the run may have moved the checkpoint before this task first ran, and that
        // must not pass for saved.
        let mut saved: BTreeMap<JobKey, Checkpoint> = BTreeMap::new();
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => false,
            };
            let due: Vec<(JobKey, Checkpoint)> = self
                .due(&tasks)
                .into_iter()
                .filter(|(key, now)| {
                    stopping
                        || saved.get(key).is_none_or(|saved| {
                            saved.namespaces != now.namespaces || saved.sync != now.sync
                        })
                })
                .collect();
            if !due.is_empty() {
                sink.make_durable().await?;
                for (key, now) in due {
                    self.store.save(&key, &now).await?;
                    saved.insert(key, now);
                }
            }
            if stopping {
                return Ok(());
            }
        }
    }

    /// What this run saves, under which key: the job's checkpoint, or for a shared job each
    /// held partition's own.
    fn due(&self, tasks: &[Arc<NsTask>]) -> Vec<(JobKey, Checkpoint)> {
        let now = self.checkpoint(tasks);
        let Some(shared) = self.sharing() else {
            return vec![(self.key.clone(), now)];
        };
        let held = shared.held.lock();
        now.namespaces
            .iter()
            .filter(|(entry, _)| held.contains_key(*entry))
            .map(|(entry, part)| {
                let key = Checkpoint::part_key(&self.key, &shared.layout, entry);
                let checkpoint = Checkpoint {
                    complete: part.complete,
                    namespaces: BTreeMap::from([(entry.clone(), part.clone())]),
                    sync: None,
                    ..now.clone()
                };
                (key, checkpoint)
            })
            .collect()
    }
}
