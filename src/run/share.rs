//! The sharing driver: one job's partitions copied by several processes (or service nodes)
//! through a state store that shares jobs (MongoDB), with leases kept there.
//!
//! In: a job whose namespaces are partitioned, its [`Ledger`] (which claims partitions by lease
//! and saves each one's checkpoint fenced by that claim) and a way to build the engine for the
//! job's tasks. Out: every partition copied, by this process or by others; for a sync, the one
//! process that follows the source afterwards. Who plans a job: the first run to hold the job's
//! claim; it publishes the layout once the destination is ready, and others join it from there
//! ([`hold_or_join`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::{CopyError, Engine, Ledger, NsTask};
use crate::spec::{CopySpec, Mode};
use crate::state::{Checkpoint, JobClaim, JobKey, StateStore};

/// How often a process of a shared job with nothing to copy looks again for partitions to
/// take over.
const SHARE_POLL: Duration = Duration::from_secs(1);

/// How long a run of a shareable job waits for the process planning it to publish its layout
/// before it claims the job as any run does.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Copies the partitions this process can claim, then waits for those other processes hold,
/// taking over any whose holder ends or dies, until every one is complete.
pub async fn copy_partitions(
    ledger: &Ledger,
    tasks: &[Arc<NsTask>],
    engine: &(dyn Fn(Vec<Arc<NsTask>>) -> Engine + Sync),
    cancel: &CancellationToken,
) -> Result<(), CopyError> {
    while ledger.refresh(tasks).await? > 0 {
        let copied = engine(tasks.to_vec()).run(cancel.clone()).await;
        ledger.release();
        copied?;
        if ledger.refresh(tasks).await? == 0 {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(CopyError::Stopped),
            _ = tokio::time::sleep(SHARE_POLL) => {}
        }
    }
    Ok(())
}

/// A shared sync whose partitions are all copied: waits until this process holds the job (the
/// process following the source ends or dies), then follows on from the position saved, saving
/// the whole checkpoint from now on. `None`: the job was committed meanwhile.
pub async fn take_over_following(
    ledger: &Ledger,
    cancel: &CancellationToken,
) -> Result<Option<JobClaim>, CopyError> {
    let (store, key) = (ledger.store(), ledger.key());
    let committed = |saved: &Option<Checkpoint>| {
        saved
            .as_ref()
            .and_then(|c| c.sync.as_ref())
            .is_some_and(|s| s.committed)
    };
    loop {
        let claim = store.try_claim(key).await?;
        let saved = store.load(key).await?;
        if committed(&saved) {
            return Ok(None);
        }
        if let Some(claim) = claim {
            if let Some(sync) = saved.and_then(|c| c.sync) {
                ledger.set_sync_position(sync);
            }
            ledger.unshare();
            return Ok(Some(claim));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(CopyError::Stopped),
            _ = tokio::time::sleep(SHARE_POLL) => {}
        }
    }
}

/// Whether another process may join the job of `spec` now: it is shared on `store` (its layout
/// published) and not complete.
pub async fn joinable(spec: &CopySpec, store: &Arc<dyn StateStore>) -> Result<bool, CopyError> {
    if !shareable(spec, store) {
        return Ok(false);
    }
    let (key, _) = spec.job_key();
    Ok(store
        .load(&key)
        .await?
        .is_some_and(|c| c.shared.is_some() && !c.complete))
}

/// Whether several processes may share the job of `spec` on `store`: a copy or a sync (its
/// initial copy) with partitions, on a store that shares jobs. A move's passes and deletes are
/// one process's.
pub fn shareable(spec: &CopySpec, store: &Arc<dyn StateStore>) -> bool {
    store.shares_jobs() && spec.mode != Mode::Move && spec.partition_docs.is_some()
}

/// Holds the job for this run and reads its checkpoint. A job several processes may share
/// (a copy with partitions, on a store that shares jobs) is planned by one run, under the
/// job's claim; a run that finds the claim held and a shared layout saved joins it without a
/// claim (`None`), and one that finds no layout yet waits up to [`JOIN_WAIT`] for the planner
/// before it claims the job as any run does (a standby waits, others are told who holds it).
pub async fn hold_or_join(
    spec: &CopySpec,
    key: &JobKey,
    store: &Arc<dyn StateStore>,
) -> Result<(Option<JobClaim>, Option<Checkpoint>), CopyError> {
    let shareable = shareable(spec, store);
    let started = std::time::Instant::now();
    let claim = loop {
        if !shareable || started.elapsed() > JOIN_WAIT {
            break store.claim(key).await?;
        }
        if let Some(claim) = store.try_claim(key).await? {
            break claim;
        }
        if let Some(checkpoint) = store.load(key).await? {
            if checkpoint.shared.is_some() {
                return Ok((None, Some(checkpoint)));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Ok((Some(claim), load_checkpoint(spec, key, store).await?))
}

/// The job's checkpoint (none after a restart, which forgets it).
async fn load_checkpoint(
    spec: &CopySpec,
    key: &JobKey,
    store: &Arc<dyn StateStore>,
) -> Result<Option<Checkpoint>, CopyError> {
    if spec.restart {
        store.remove(key).await?;
        return Ok(None);
    }
    Ok(store.load(key).await?)
}
