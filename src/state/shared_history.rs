//! The service's job history in a MongoDB state database, shared by every `serve` node that opens
//! it (`serve --state mongodb://host/db`).
//!
//! In: the records and views of the jobs this node runs (JSON text, already redacted: no
//! credentials in clear, at most sealed ones: `serve --credentials-key-file`), this node's heartbeat with its share of each job it works on, operators'
//! commands for jobs that other nodes run, and the claims of the specs this node starts. Out: the same, to every node on the database. Six
//! collections beside the [store](super::mongo)'s (docs/ARCHITECTURE.md), with majority writes
//! and reads:
//!
//! - `service_jobs`: `{_id: job id, node, state, record, view, updated}`, one per job, written only
//!   by the node that runs it (`node`); a node takes a job over only from a node that is gone.
//! - `service_nodes`: `{_id: node, host, pid, seen, shares: [{job, share}]}`: each node's
//!   heartbeat and what it does for each job it runs or helps with.
//! - `service_commands`: `{_id, job, command, answer, at}`: a command for a job another node runs,
//!   answered by that node.
//! - `counters`: `{_id: "service_jobs", n}`: the last job id given, so ids are unique across nodes.
//! - `service_specs`: `{_id: spec identity, job, node, at}`: the job that holds each spec, so that
//!   a spec submitted to two nodes at once starts one job (the `_id` is the claim: one insert
//!   wins); moved to a new job only from one that ended.
//! - `service_series`: `{_id: job id, series, updated}`: a job's chart series
//!   ([`crate::service::series`]), written by the node that runs it.
//!
//! Records, views, shares and commands are the service's JSON, opaque here.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::mongo::{host_name, MongoStore, DUPLICATE_KEY};
use super::{StateError, StateStore};
use crate::mongo::{describe, error_code};

/// How often a job id is asked for when the counter's creation keeps losing races.
const COUNTER_TRIES: u32 = 20;

/// The jobs, heartbeats and commands of the service nodes sharing one state database.
pub struct SharedHistory {
    location: String,
    jobs: Collection<Document>,
    nodes: Collection<Document>,
    commands: Collection<Document>,
    counters: Collection<Document>,
    specs: Collection<Document>,
    series: Collection<Document>,
    /// This node: `host:pid:random`, unique for the life of the process.
    node: String,
}

impl std::fmt::Debug for SharedHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHistory")
            .field("location", &self.location)
            .field("node", &self.node)
            .finish()
    }
}

/// A job as the node running it last wrote it: its record `R` and its view `V` (each stored as
/// JSON text).
#[derive(Debug, Clone)]
pub struct StoredJob<R, V> {
    pub id: u64,
    /// The node that runs it (or ran it last).
    pub node: String,
    pub record: R,
    /// `None`: not written, or unreadable.
    pub view: Option<V>,
}

/// A node's last heartbeat, with its shares `S` (each stored as JSON text).
#[derive(Debug, Clone)]
pub struct NodeBeat<S> {
    pub node: String,
    pub host: String,
    pub pid: i64,
    /// How long ago, by this machine's clock.
    pub age: Duration,
    /// Its share of each job it works on: `(job id, share)` (unreadable ones left out).
    pub shares: Vec<(u64, S)>,
}

/// A command `C` waiting for the node that runs its job (stored as JSON text).
#[derive(Debug, Clone)]
pub struct PendingCommand<C> {
    pub id: ObjectId,
    pub job: u64,
    /// The command, or why it could not be read.
    pub command: Result<C, String>,
    /// How long ago it was sent, by this machine's clock.
    pub age: Duration,
}

impl SharedHistory {
    /// The history in `store`'s database, for a new node of this process.
    pub fn open(store: &MongoStore) -> Self {
        let node = format!(
            "{}:{}:{:04x}",
            host_name().replace(['.', '$'], "_"),
            std::process::id(),
            fastrand::u16(..)
        );
        SharedHistory {
            location: store.location(),
            jobs: store.collection("service_jobs"),
            nodes: store.collection("service_nodes"),
            commands: store.collection("service_commands"),
            counters: store.collection("counters"),
            specs: store.collection("service_specs"),
            series: store.collection("service_series"),
            node,
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn failed(&self, e: &mongodb::error::Error) -> StateError {
        StateError::Database {
            location: self.location.clone(),
            reason: describe(e),
        }
    }

    /// A job id no node has given. The counter is created by the first call (an upsert); of
    /// calls that race to create it, those that lose (a duplicate key, or no document, as some
    /// servers answer) try again, and find it.
    pub async fn next_id(&self) -> Result<u64, StateError> {
        let mut tries = 0;
        let counter = loop {
            let counted = self
                .counters
                .find_one_and_update(
                    doc! { "_id": "service_jobs" },
                    doc! { "$inc": { "n": 1_i64 } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match counted {
                Ok(Some(counter)) if counter.contains_key("n") => break counter,
                // A race with the node creating the counter can answer nothing, or `{}`.
                Ok(_) => {}
                Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => {}
                Err(e) => return Err(self.failed(&e)),
            }
            tries += 1;
            if tries == COUNTER_TRIES {
                return Err(StateError::Database {
                    location: self.location.clone(),
                    reason: format!(
                        "the counter of job ids could not be created ({tries} tries lost a race)"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
        };
        // Numbers written by another tool (a shell's doubles) count as well.
        let n = match counter.get("n") {
            Some(Bson::Int64(n)) => Some(*n),
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            Some(Bson::Double(n)) if n.fract() == 0.0 => Some(*n as i64),
            _ => None,
        };
        n.and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| StateError::Database {
                location: self.location.clone(),
                reason: format!("the counter of job ids is not a positive number: {counter}"),
            })
    }

    /// Claims the spec whose identity is `spec` for job `id`, with one insert, so that of the
    /// nodes given the same spec at once only one starts a job. `None`: job `id` holds it now;
    /// else the job that holds it, which may have ended since ([`reclaim_spec`](Self::reclaim_spec)).
    pub async fn claim_spec(&self, spec: &str, id: u64) -> Result<Option<u64>, StateError> {
        let inserted = self
            .specs
            .insert_one(doc! {
                "_id": spec,
                "job": id as i64,
                "node": &self.node,
                "at": DateTime::now(),
            })
            .await;
        match inserted {
            Ok(_) => return Ok(None),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => {}
            Err(e) => return Err(self.failed(&e)),
        }
        // Claims are moved from job to job, never removed: the one that refused the insert is
        // there to read.
        let claim = self
            .specs
            .find_one(doc! { "_id": spec })
            .await
            .map_err(|e| self.failed(&e))?;
        claim
            .and_then(|c| c.get_i64("job").ok())
            .and_then(|job| u64::try_from(job).ok())
            .map(Some)
            .ok_or_else(|| StateError::Database {
                location: self.location.clone(),
                reason: format!("the claim of spec {spec} names no job"),
            })
    }

    /// Moves the claim of the spec `spec` from job `from` (which ended, or never started) to job
    /// `id`: `false` when another job took it meanwhile.
    pub async fn reclaim_spec(&self, spec: &str, from: u64, id: u64) -> Result<bool, StateError> {
        let moved = self
            .specs
            .update_one(
                doc! { "_id": spec, "job": from as i64 },
                doc! { "$set": { "job": id as i64, "node": &self.node, "at": DateTime::now() } },
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(moved.modified_count == 1)
    }

    /// Writes a job this node runs. `false`: another node runs it now (it took the job over
    /// while this node seemed gone), and nothing was written.
    pub async fn put(
        &self,
        id: u64,
        state: &str,
        record: &impl Serialize,
        view: &impl Serialize,
    ) -> Result<bool, StateError> {
        let record = serde_json::to_string(record).expect("records serialise");
        let view = serde_json::to_string(view).expect("views serialise");
        let written = self
            .jobs
            .update_one(
                doc! { "_id": id as i64, "node": &self.node },
                doc! { "$set": {
                    "state": state,
                    "record": &record,
                    "view": &view,
                    "updated": DateTime::now(),
                } },
            )
            .upsert(true)
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => Ok(false),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// The documents of `collection` that match `filter`, in `_id` order.
    async fn all(
        &self,
        collection: &Collection<Document>,
        filter: Document,
    ) -> Result<Vec<Document>, StateError> {
        collection
            .find(filter)
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| self.failed(&e))?
            .try_collect()
            .await
            .map_err(|e| self.failed(&e))
    }

    /// The jobs, oldest first: every one (`since` = `None`), or those written at or after
    /// `since` (by their writers' clocks) and every one not ended (whose node may be gone).
    pub async fn jobs<R: DeserializeOwned, V: DeserializeOwned>(
        &self,
        since: Option<DateTime>,
    ) -> Result<Vec<StoredJob<R, V>>, StateError> {
        let filter = match since {
            None => doc! {},
            Some(since) => doc! { "$or": [
                { "updated": { "$gte": since } },
                { "state": { "$in": ["pending", "running", "paused", "interrupted"] } },
            ] },
        };
        let found = self.all(&self.jobs, filter).await?;
        Ok(found.iter().filter_map(|d| self.stored_job(d)).collect())
    }

    /// One job, if stored.
    pub async fn job<R: DeserializeOwned, V: DeserializeOwned>(
        &self,
        id: u64,
    ) -> Result<Option<StoredJob<R, V>>, StateError> {
        let found = self
            .jobs
            .find_one(doc! { "_id": id as i64 })
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(found.as_ref().and_then(|d| self.stored_job(d)))
    }

    /// Makes this node the one that runs job `id`, if node `from` (gone) still does: `false`
    /// when another node was quicker.
    pub async fn take_over(&self, id: u64, from: &str) -> Result<bool, StateError> {
        let taken = self
            .jobs
            .update_one(
                doc! { "_id": id as i64, "node": from },
                doc! { "$set": { "node": &self.node, "updated": DateTime::now() } },
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(taken.modified_count == 1)
    }

    /// Replaces job `id`'s series (stored as JSON text, like the records).
    pub async fn put_series(&self, id: u64, series: &impl Serialize) -> Result<(), StateError> {
        let series = serde_json::to_string(series).expect("series serialise");
        self.series
            .update_one(
                doc! { "_id": id as i64 },
                doc! { "$set": { "series": series, "updated": DateTime::now() } },
            )
            .upsert(true)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Job `id`'s series, if stored and readable.
    pub async fn series<S: DeserializeOwned>(&self, id: u64) -> Result<Option<S>, StateError> {
        let found = self
            .series
            .find_one(doc! { "_id": id as i64 })
            .await
            .map_err(|e| self.failed(&e))?;
        let Some(text) = found.as_ref().and_then(|d| d.get_str("series").ok()) else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| StateError::Database {
                location: self.location.clone(),
                reason: format!("the series of job {id} are unreadable: {e}"),
            })
    }

    /// This node's heartbeat, with its share of each job it works on.
    pub async fn beat(&self, shares: &[(u64, impl Serialize)]) -> Result<(), StateError> {
        let shares: Vec<Document> = shares
            .iter()
            .map(|(job, share)| {
                let share = serde_json::to_string(share).expect("shares serialise");
                doc! { "job": *job as i64, "share": share }
            })
            .collect();
        self.nodes
            .update_one(
                doc! { "_id": &self.node },
                doc! { "$set": {
                    "host": host_name(),
                    "pid": i64::from(std::process::id()),
                    "seen": DateTime::now(),
                    "shares": shares,
                } },
            )
            .upsert(true)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Every node's last heartbeat.
    pub async fn nodes<S: DeserializeOwned>(&self) -> Result<Vec<NodeBeat<S>>, StateError> {
        let found = self.all(&self.nodes, doc! {}).await?;
        let now = DateTime::now().timestamp_millis();
        Ok(found
            .into_iter()
            .filter_map(|d| {
                let seen = d.get_datetime("seen").ok()?.timestamp_millis();
                let shares = d
                    .get_array("shares")
                    .map(|shares| {
                        shares
                            .iter()
                            .filter_map(|s| {
                                let s = s.as_document()?;
                                let job = u64::try_from(s.get_i64("job").ok()?).ok()?;
                                let share = serde_json::from_str(s.get_str("share").ok()?);
                                Some((job, share.ok()?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(NodeBeat {
                    node: d.get_str("_id").ok()?.to_string(),
                    host: d.get_str("host").unwrap_or_default().to_string(),
                    pid: d.get_i64("pid").unwrap_or(0),
                    age: Duration::from_millis((now - seen).max(0) as u64),
                    shares,
                })
            })
            .collect())
    }

    /// This node leaves (it stops): the others take its jobs over at once.
    pub async fn leave(&self) -> Result<(), StateError> {
        self.nodes
            .delete_one(doc! { "_id": &self.node })
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Forgets a node that is gone (its heartbeat is older than any lease).
    pub async fn forget(&self, node: &str) -> Result<(), StateError> {
        self.nodes
            .delete_one(doc! { "_id": node })
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Leaves `command` for the node that runs job `job`; its answer comes through
    /// [`answer_of`](Self::answer_of).
    pub async fn send(&self, job: u64, command: &impl Serialize) -> Result<ObjectId, StateError> {
        let command = serde_json::to_string(command).expect("commands serialise");
        let id = ObjectId::new();
        self.commands
            .insert_one(doc! {
                "_id": id,
                "job": job as i64,
                "command": &command,
                "answer": null,
                "from": &self.node,
                "at": DateTime::now(),
            })
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(id)
    }

    /// The answer to a command sent, once given (or why it could not be read); the command is
    /// then removed.
    pub async fn answer_of<A: DeserializeOwned>(
        &self,
        command: ObjectId,
    ) -> Result<Option<Result<A, String>>, StateError> {
        let found = self
            .commands
            .find_one(doc! { "_id": command })
            .await
            .map_err(|e| self.failed(&e))?;
        let Some(answer) = found.and_then(|d| d.get_str("answer").ok().map(str::to_string)) else {
            return Ok(None);
        };
        // The answer counts even if the command stays behind: it is withdrawn as stale later.
        let _ = self.withdraw(command).await;
        Ok(Some(
            serde_json::from_str(&answer).map_err(|e| e.to_string()),
        ))
    }

    /// Removes a command (answered, or given up on).
    pub async fn withdraw(&self, command: ObjectId) -> Result<(), StateError> {
        self.commands
            .delete_one(doc! { "_id": command })
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Every command not answered yet, oldest first (a node answers those for its jobs).
    pub async fn pending<C: DeserializeOwned>(&self) -> Result<Vec<PendingCommand<C>>, StateError> {
        let found = self.all(&self.commands, doc! { "answer": null }).await?;
        let now = DateTime::now().timestamp_millis();
        Ok(found
            .into_iter()
            .filter_map(|d| {
                let at = d.get_datetime("at").map_or(0, |at| at.timestamp_millis());
                Some(PendingCommand {
                    id: d.get_object_id("_id").ok()?,
                    job: u64::try_from(d.get_i64("job").ok()?).ok()?,
                    command: serde_json::from_str(d.get_str("command").ok()?)
                        .map_err(|e| e.to_string()),
                    age: Duration::from_millis((now - at).max(0) as u64),
                })
            })
            .collect())
    }

    /// Answers a command.
    pub async fn answer(
        &self,
        command: ObjectId,
        answer: &impl Serialize,
    ) -> Result<(), StateError> {
        let answer = serde_json::to_string(answer).expect("answers serialise");
        self.commands
            .update_one(
                doc! { "_id": command },
                doc! { "$set": { "answer": &answer } },
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }
}

impl SharedHistory {
    /// A job document read: `None` when it lacks a field, or its record is unreadable (logged).
    fn stored_job<R: DeserializeOwned, V: DeserializeOwned>(
        &self,
        d: &Document,
    ) -> Option<StoredJob<R, V>> {
        let id = u64::try_from(d.get_i64("_id").ok()?).ok()?;
        let node = d.get_str("node").ok()?.to_string();
        let record = match serde_json::from_str(d.get_str("record").ok()?) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!("job {id} in {}: unreadable: {e}", self.location);
                return None;
            }
        };
        let view = d
            .get_str("view")
            .ok()
            .and_then(|v| serde_json::from_str(v).ok());
        Some(StoredJob {
            id,
            node,
            record,
            view,
        })
    }
}
