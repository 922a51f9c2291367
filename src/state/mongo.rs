//! A state store in a MongoDB database (`--state mongodb://host/db`): processes on several
//! machines share a job's state through the deployment the user already runs.
//!
//! In: checkpoints, dead letters, claims. Out: the same, to every process that opens the same
//! database. Three collections (docs/ARCHITECTURE.md), every write acknowledged by a majority and
//! every read at majority:
//!
//! - `claims`: `{_id: job key, holder, host, pid, token, expires}`, one lease per job (and per
//!   partition of a shared job, keyed by [`Checkpoint::part_key`]);
//! - `checkpoints`: `{_id: job key, fence, updated_at, checkpoint}`, the checkpoint as the JSON
//!   the file store keeps (its `_id`s are canonical Extended JSON already);
//! - `dead_letters`: `{job, ns, id, reason, code, at, document}`, with `_id` and document as BSON.
//!
//! # Leases and fencing
//!
//! A claim is a lease of [`MongoStore::lease`]: taken with one `findAndModify` when the job has
//! no claim or its lease ran out, which increments the claim's `token`; kept alive by a heartbeat
//! every third of the lease; given back when the run ends (its lease ended, the claim and its token
//! kept, so tokens only grow). A run killed with `-9` holds the job
//! until its lease runs out, except for a run on the same host, which sees that the holder's
//! process is gone and takes over at once.
//!
//! A process that stalled past its lease (a long pause, a partition) may still believe it holds
//! the job. Fencing keeps it from doing harm: the new holder raises the checkpoint's `fence` to
//! its token as it claims, and a save matches only a checkpoint whose fence is not above the
//! saver's token. The stale process's save is refused ([`StateError::Fenced`]), so it can no
//! longer move the checkpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::{CollectionOptions, ReadConcern, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Checkpoint, DeadLetter, JobClaim, JobKey, StateError, StateStore};
use crate::mongo::{self, describe, error_code, redact_uri, Side};

/// The lease's default length: how long a job waits for a process that died without a word.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The database when the URI names none.
const DEFAULT_DATABASE: &str = "mongoferry";

/// How long giving a claim back may take when the run ends.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Numbers the stores of this process.
static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// MongoDB's duplicate key error: an upsert whose filter matched nothing met an existing `_id`.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// The state of jobs in a MongoDB database.
pub struct MongoStore {
    client: Client,
    /// `mongodb://host/db`, without credentials: for messages.
    location: String,
    claims: Collection<Document>,
    checkpoints: Collection<Document>,
    dead_letters: Collection<Document>,
    /// The database, for the service's collections ([`super::shared_history`]).
    database: mongodb::Database,
    lease: Duration,
    /// Who this process is, in claims and messages: `host pid N`.
    host: String,
    /// This store among the process's stores (claims it gave back are taken again at once).
    instance: String,
    /// The token of each job this process holds: the fence its saves carry.
    held: Arc<Mutex<HashMap<JobKey, i64>>>,
    /// Each claim's heartbeat; it gives the claim back when the claim is dropped.
    heartbeats: Mutex<Vec<JoinHandle<()>>>,
    /// A claim of a job another process holds waits for it instead of failing.
    standby: bool,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("location", &self.location)
            .finish()
    }
}

impl MongoStore {
    /// Connects to the database `uri` names (`mongoferry` if it names none), within `timeout`.
    /// The URI is read as the driver reads it ([`mongo::normalize_uri`]: `MONGODB://h/db` names
    /// database `db` too).
    pub async fn open(uri: &str, lease: Duration, timeout: Duration) -> Result<Self, StateError> {
        let normalized = mongo::normalize_uri(uri);
        let uri = normalized.as_deref().unwrap_or(uri);
        let location = redact_uri(uri);
        let client = mongo::connect(Side::State, uri, 8, timeout).await?;
        let db_name = mongodb::options::ClientOptions::parse(uri)
            .await
            .ok()
            .and_then(|o| o.default_database)
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let db = client.database(&db_name);
        let collection = |name: &str| db.collection_with_options(name, majority());
        let pid = std::process::id();
        Ok(MongoStore {
            location: format!("{location} (database {db_name})"),
            claims: collection("claims"),
            checkpoints: collection("checkpoints"),
            dead_letters: collection("dead_letters"),
            database: db,
            lease,
            host: format!("{} pid {pid}", host_name()),
            instance: format!(
                "{} {pid} {}",
                host_name(),
                INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            held: Arc::default(),
            heartbeats: Mutex::default(),
            standby: false,
            client,
        })
    }

    /// A collection of the state database, written and read at majority as the store's are.
    pub fn collection(&self, name: &str) -> Collection<Document> {
        self.database.collection_with_options(name, majority())
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Claims wait while another process holds the job, trying again every third of a lease,
    /// instead of failing: a standby that takes the job over when its holder ends or dies (and
    /// finds it complete if the holder finished it).
    pub fn standby(mut self, standby: bool) -> Self {
        self.standby = standby;
        self
    }

    fn failed(&self, e: &mongodb::error::Error) -> StateError {
        StateError::Database {
            location: self.location.clone(),
            reason: describe(e),
        }
    }

    /// Takes the job's lease if it is free or ran out (or, when `stale` is given, if it still
    /// has that token: its holder is known dead). `None`: another process holds it.
    async fn take(&self, key: &JobKey, stale: Option<i64>) -> Result<Option<i64>, StateError> {
        let now = DateTime::now();
        let mut free = vec![doc! { "expires": { "$lt": now } }];
        if let Some(token) = stale {
            free.push(doc! { "token": token });
        }
        let expires = DateTime::from_millis(now.timestamp_millis() + self.lease.as_millis() as i64);
        let taken = self
            .claims
            .find_one_and_update(
                doc! { "_id": &key.0, "$or": free },
                doc! {
                    "$set": {
                        "holder": &self.host,
                        "instance": &self.instance,
                        "host": host_name(),
                        "pid": i64::from(std::process::id()),
                        "expires": expires,
                    },
                    "$inc": { "token": 1_i64 },
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            Ok(Some(claim)) => Ok(Some(claim.get_i64("token").unwrap_or(1))),
            Ok(None) => Ok(None),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => Ok(None),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// The job refused: who holds it, and whether it is free after all (its token, to take the
    /// job over at once): a claim of this store that was dropped and is being given back, or
    /// the claim of a process of this host that no longer runs.
    async fn busy(&self, key: &JobKey) -> Result<(StateError, Option<i64>), StateError> {
        let claim = self
            .claims
            .find_one(doc! { "_id": &key.0 })
            .await
            .map_err(|e| self.failed(&e))?
            .unwrap_or_default();
        let holder = claim.get_str("holder").unwrap_or("another process");
        let ours = claim.get_str("instance") == Ok(self.instance.as_str());
        let given_back = ours && !self.held.lock().contains_key(key);
        let dead = claim.get_str("host").is_ok_and(|h| h == host_name())
            && claim
                .get_i64("pid")
                .is_ok_and(|pid| pid != i64::from(std::process::id()) && !process_runs(pid));
        let holder = if ours {
            " in this process".to_string()
        } else {
            let left = claim
                .get_datetime("expires")
                .map(|e| (e.timestamp_millis() - DateTime::now().timestamp_millis()).max(0) / 1000)
                .unwrap_or(0);
            format!(" in {holder} (its lease runs out in {left} s unless it is renewed)")
        };
        let error = StateError::JobBusy {
            key: key.clone(),
            path: self.location.clone().into(),
            holder,
        };
        let free = given_back || dead;
        Ok((error, free.then(|| claim.get_i64("token").ok()).flatten()))
    }

    async fn claim_job(&self, key: &JobKey) -> Result<JobClaim, StateError> {
        let mut waiting = false;
        let token = loop {
            match self.lease_if_free(key).await {
                Ok(token) => break token,
                Err(busy @ StateError::JobBusy { .. }) if self.standby => {
                    if !waiting {
                        tracing::warn!("{busy}: waiting as a standby");
                        waiting = true;
                    }
                    tokio::time::sleep(self.lease / 3).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.hold(key, token).await
    }

    /// The job's lease if it is free (or its holder is known gone), else `JobBusy`.
    async fn lease_if_free(&self, key: &JobKey) -> Result<i64, StateError> {
        if let Some(token) = self.take(key, None).await? {
            return Ok(token);
        }
        let (busy, gone_holder) = self.busy(key).await?;
        match gone_holder {
            Some(stale) => self.take(key, Some(stale)).await?.ok_or(busy),
            None => Err(busy),
        }
    }

    /// Holds the job under `token`: fences earlier holders off and starts the heartbeat.
    async fn hold(&self, key: &JobKey, token: i64) -> Result<JobClaim, StateError> {
        // Fence off every earlier holder before this run reads or writes the checkpoint.
        self.checkpoints
            .update_one(doc! { "_id": &key.0 }, doc! { "$max": { "fence": token } })
            .upsert(true)
            .await
            .map_err(|e| self.failed(&e))?;
        self.held.lock().insert(key.clone(), token);
        let stop = CancellationToken::new();
        let heartbeat = Heartbeat {
            claims: self.claims.clone(),
            held: self.held.clone(),
            key: key.clone(),
            token,
            lease: self.lease,
        };
        let mut heartbeats = self.heartbeats.lock();
        heartbeats.retain(|h| !h.is_finished());
        heartbeats.push(tokio::spawn(heartbeat.run(stop.clone())));
        Ok(JobClaim {
            _held: Box::new(ClaimGuard {
                held: self.held.clone(),
                key: key.clone(),
                token,
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// The fence this process's saves of `key` carry: its claim's token (0 without a claim,
    /// which only an unfenced checkpoint accepts).
    fn fence(&self, key: &JobKey) -> i64 {
        self.held.lock().get(key).copied().unwrap_or(0)
    }

    /// The error of a save that the fence refused: who holds the job now.
    async fn fenced(&self, key: &JobKey) -> StateError {
        let holder = match self.claims.find_one(doc! { "_id": &key.0 }).await {
            Ok(Some(claim)) => claim
                .get_str("holder")
                .unwrap_or("another process")
                .to_string(),
            _ => "another process".to_string(),
        };
        StateError::Fenced {
            key: key.clone(),
            holder,
        }
    }

    async fn save_checkpoint(
        &self,
        key: &JobKey,
        checkpoint: &Checkpoint,
    ) -> Result<(), StateError> {
        let fence = self.fence(key);
        let json = serde_json::to_string(checkpoint).expect("checkpoints serialise");
        let saved = self
            .checkpoints
            .update_one(
                doc! { "_id": &key.0, "$or": [{ "fence": { "$lte": fence } }, { "fence": { "$exists": false } }] },
                doc! { "$set": { "fence": fence, "updated_at": checkpoint.updated_at, "checkpoint": json } },
            )
            .upsert(true)
            .await;
        match saved {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => Err(self.fenced(key).await),
            Err(e) => Err(self.failed(&e)),
        }
    }

    async fn load_checkpoint(&self, key: &JobKey) -> Result<Option<Checkpoint>, StateError> {
        let found = self
            .checkpoints
            .find_one(doc! { "_id": &key.0 })
            .await
            .map_err(|e| self.failed(&e))?;
        let Some(json) = found.as_ref().and_then(|d| d.get_str("checkpoint").ok()) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: self.location.clone().into(),
                reason: format!("the checkpoint of job {key} is not a mongoferry checkpoint: {e}"),
            })
    }

    async fn remove_checkpoint(&self, key: &JobKey) -> Result<(), StateError> {
        let fence = self.fence(key);
        // The fence stays: a stale holder must not write the checkpoint back.
        self.checkpoints
            .update_one(
                doc! { "_id": &key.0, "fence": { "$lte": fence } },
                doc! { "$unset": { "checkpoint": "", "updated_at": "" } },
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    async fn insert_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), StateError> {
        if letters.is_empty() {
            return Ok(());
        }
        let as_bson =
            |value: serde_json::Value| Bson::try_from(value.clone()).unwrap_or(Bson::Null);
        let documents = letters.into_iter().map(|letter| {
            doc! {
                "job": letter.job.0,
                "ns": letter.ns,
                "id": as_bson(letter.id),
                "reason": letter.reason,
                "code": letter.code,
                "at": letter.at,
                "document": as_bson(letter.document),
            }
        });
        self.dead_letters
            .insert_many(documents)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// The dead letters kept for `job` (all jobs': `None`), oldest first.
    pub async fn dead_letters(&self, job: Option<&JobKey>) -> Result<Vec<Document>, StateError> {
        let filter = job.map_or_else(Document::new, |job| doc! { "job": &job.0 });
        self.dead_letters
            .find(filter)
            .sort(doc! { "at": 1, "_id": 1 })
            .await
            .map_err(|e| self.failed(&e))?
            .try_collect()
            .await
            .map_err(|e| self.failed(&e))
    }
}

impl StateStore for MongoStore {
    fn claim<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<JobClaim, StateError>> {
        self.claim_job(key).boxed()
    }

    fn try_claim<'a>(
        &'a self,
        key: &'a JobKey,
    ) -> BoxFuture<'a, Result<Option<JobClaim>, StateError>> {
        async move {
            match self.lease_if_free(key).await {
                Ok(token) => self.hold(key, token).await.map(Some),
                Err(StateError::JobBusy { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }

    fn shares_jobs(&self) -> bool {
        true
    }

    fn load<'a>(
        &'a self,
        key: &'a JobKey,
    ) -> BoxFuture<'a, Result<Option<Checkpoint>, StateError>> {
        self.load_checkpoint(key).boxed()
    }

    fn save<'a>(
        &'a self,
        key: &'a JobKey,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        self.save_checkpoint(key, checkpoint).boxed()
    }

    fn remove<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<(), StateError>> {
        self.remove_checkpoint(key).boxed()
    }

    fn keep_dead_letters(&self, letters: Vec<DeadLetter>) -> BoxFuture<'_, Result<(), StateError>> {
        self.insert_dead_letters(letters).boxed()
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn database(&self) -> Option<&mongodb::Database> {
        Some(&self.database)
    }

    fn dead_letter_location(&self) -> String {
        format!("the dead_letters collection of {}", self.location)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            // Claims dropped by now give themselves back; wait for that, then close the pool.
            let heartbeats = std::mem::take(&mut *self.heartbeats.lock());
            for heartbeat in heartbeats {
                let _ = tokio::time::timeout(RELEASE_TIMEOUT * 2, heartbeat).await;
            }
            mongo::close(self.client.clone()).await;
        }
        .boxed()
    }
}

/// A claim of this store: dropping it ends this process's hold at once (its saves carry no
/// token any more) and has the heartbeat give the lease back.
struct ClaimGuard {
    held: Arc<Mutex<HashMap<JobKey, i64>>>,
    key: JobKey,
    token: i64,
    _stop: tokio_util::sync::DropGuard,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        if held.get(&self.key) == Some(&self.token) {
            held.remove(&self.key);
        }
    }
}

/// Keeps one claim's lease alive until the claim is dropped, then gives it back.
struct Heartbeat {
    claims: Collection<Document>,
    held: Arc<Mutex<HashMap<JobKey, i64>>>,
    key: JobKey,
    token: i64,
    lease: Duration,
}

impl Heartbeat {
    async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let expires = DateTime::from_millis(
                DateTime::now().timestamp_millis() + self.lease.as_millis() as i64,
            );
            let renewed = self
                .claims
                .update_one(
                    doc! { "_id": &self.key.0, "token": self.token },
                    doc! { "$set": { "expires": expires } },
                )
                .await;
            // Lost (another process took the job): nothing to renew or give back; the fence
            // refuses this process's saves from now on. A failed renewal is tried at the next tick.
            if matches!(renewed, Ok(r) if r.matched_count == 0) {
                let mut held = self.held.lock();
                // Only this claim's token: the store may hold the job again under a newer one.
                if held.get(&self.key) == Some(&self.token) {
                    held.remove(&self.key);
                }
                return;
            }
        }
        // Given back by ending the lease, not by deleting the claim: its token must keep
        // growing, or the next holder would carry a token below the checkpoint's fence.
        let _ = tokio::time::timeout(
            RELEASE_TIMEOUT,
            self.claims.update_one(
                doc! { "_id": &self.key.0, "token": self.token },
                doc! { "$set": { "expires": DateTime::from_millis(0) } },
            ),
        )
        .await;
    }
}

/// Every write acknowledged by a majority, every read at majority.
fn majority() -> CollectionOptions {
    CollectionOptions::builder()
        .write_concern(WriteConcern::majority())
        .read_concern(ReadConcern::majority())
        .build()
}

/// This machine's name, as claims record it.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether process `pid` of this host still runs (Linux's `/proc`; elsewhere, assumed alive).
pub(crate) fn process_runs(pid: i64) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
