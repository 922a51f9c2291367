//! What outlives the process: checkpoints, dead letters and the service's job history.
//!
//! In: a job's per-namespace low watermarks (only ever advanced after the destination
//! acknowledged every document below them, see [`crate::engine::ledger`]) and the documents the
//! destination refused. Out: the same after a crash, so a rerun
//! continues where the last one durably stopped, and nothing refused is lost. [`StateStore`] is
//! the seam; one file per kind: [`file`] (the embedded default: SQLite, and dead letters as JSON lines), [`mongo`] (a MongoDB
//! database that several processes share, with leases and fencing), [`memory`] (keeps nothing);
//! [`history`] keeps the service's jobs in a file, [`shared_history`] in a MongoDB database that
//! several service nodes share; [`atomic`] is how every file is rewritten. [`Location`] reads a
//! `--state` value: a MongoDB URI or a file path, never a mistyped URI taken for a path;
//! [`choice`] is the one rule that picks a command's store from its options.

pub mod atomic;
pub mod choice;
pub mod file;
pub mod history;
pub mod memory;
pub mod mongo;
pub mod shared_history;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{Bson, Document, RawBson, RawDocumentBuf};
use serde::{Deserialize, Serialize};

pub use choice::{Store, StoreChoice};
pub use file::{read_checkpoints, read_dead_letters, FileStore};
pub use memory::MemoryStore;
pub use mongo::MongoStore;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A `--state` value shaped like a URI that is not a MongoDB one ([`Location::parse`]).
    #[error("{0}; a file whose name looks like a URI can be given as ./NAME")]
    Location(String),
    #[error("cannot read the state store {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the state store {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the state store {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("state store task failed: {0}")]
    Task(String),
    /// Another run of the same job holds it: two runs would move one checkpoint back and forth.
    #[error(
        "job {key} is already running{holder} with the state store {path}; wait for it to end or \
         stop it"
    )]
    JobBusy {
        key: JobKey,
        path: PathBuf,
        /// " in process N", when the other run said who it is.
        holder: String,
    },
    #[error(transparent)]
    Connect(#[from] crate::mongo::MongoError),
    #[error("the state database {location}: {reason}")]
    Database { location: String, reason: String },
    /// This run's lease on the job ran out and another process took the job over: this run may
    /// no longer move its checkpoint.
    #[error(
        "job {key} was taken over by {holder} after this run's lease ran out; this run stops \
         without moving the checkpoint (the other one continues the job)"
    )]
    Fenced { key: JobKey, holder: String },
}

/// Where a state store lives, as a `--state PATH|URI` value names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A MongoDB database: its URI as the driver takes it ([`crate::mongo::normalize_uri`]).
    Mongo(String),
    /// A file.
    File(PathBuf),
}

impl Location {
    /// Reads a `--state` value: a MongoDB URI whatever its scheme's case and the spaces around
    /// it (`MONGODB://…`, ` mongodb://…`); anything else shaped like a URI is refused, never taken
    /// for a path, which would run without the shared state asked for, in directories named
    /// after the URI and its password.
    pub fn parse(text: &str) -> Result<Location, StateError> {
        match crate::mongo::read_uri(text) {
            crate::mongo::UriText::Uri(uri) => Ok(Location::Mongo(uri)),
            crate::mongo::UriText::NotUri => Ok(Location::File(PathBuf::from(text))),
            crate::mongo::UriText::Invalid(why) => Err(StateError::Location(why)),
        }
    }
}

/// A run's exclusive hold on its job in a store, released when dropped.
pub struct JobClaim {
    _held: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for JobClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobClaim")
    }
}

/// Identifies one copy job across runs: the same servers (credentials left out), namespaces
/// and filter give the same key. Tunables (workers, rates) are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobKey(pub String);

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JobKey {
    /// The key and a readable description (no secrets) of a job.
    pub fn of(
        from: &str,
        to: &str,
        namespaces: &[String],
        filter: Option<&Document>,
    ) -> (JobKey, String) {
        let filter = filter
            .map(|f| {
                Bson::Document(f.clone())
                    .into_canonical_extjson()
                    .to_string()
            })
            .unwrap_or_default();
        let description = format!(
            "{} -> {} [{}]{}",
            without_credentials(from),
            without_credentials(to),
            namespaces.join(", "),
            if filter.is_empty() {
                String::new()
            } else {
                format!(" filter {filter}")
            }
        );
        (
            JobKey(format!("{:016x}", fnv1a(description.as_bytes()))),
            description,
        )
    }
}

/// The URI without its user info and with secret options as `***`, so a changed password is
/// still the same job and the description holds no secret.
fn without_credentials(uri: &str) -> String {
    let uri = &crate::mongo::redact_secret_options(uri);
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &uri[..scheme_end + 3], &rest[at + 1..]),
        None => uri.to_string(),
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Lowercase hex digits of `bytes` (digests and signatures as text).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where one namespace of a job stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NsCheckpoint {
    /// Every document up to and including this `_id` (canonical Extended JSON) is durably
    /// written; `None`: nothing yet.
    pub after: Option<serde_json::Value>,
    /// Documents written below the watermark (refused ones included).
    pub done: u64,
    /// Of those, the documents the destination refused (kept as dead letters).
    #[serde(default)]
    pub failed: u64,
    /// Every document of the namespace (or partition) is written.
    pub complete: bool,
    /// The `_id` range of a partition: the entry covers only it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartCheckpoint>,
}

/// Which `_id` range of its namespace a partition covers: after `lower` (from the start when
/// `None`), up to and including `upper` (to the end when `None`); `_id`s in canonical Extended
/// JSON. Kept so that a resumed job reads the same ranges, however the namespace changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartCheckpoint {
    pub index: u32,
    /// Partitions of the namespace.
    pub of: u32,
    pub lower: Option<serde_json::Value>,
    pub upper: Option<serde_json::Value>,
}

impl NsCheckpoint {
    pub fn new(after: Option<&RawBson>, done: u64, complete: bool) -> Self {
        NsCheckpoint {
            after: after.and_then(id_to_json),
            done,
            failed: 0,
            complete,
            part: None,
        }
    }

    /// The watermark `_id` as raw BSON.
    pub fn after_id(&self) -> Result<Option<RawBson>, String> {
        self.after.as_ref().map(id_from_json).transpose()
    }
}

/// An `_id` as the state keeps it: canonical Extended JSON, which keeps its type.
pub fn id_to_json(id: &RawBson) -> Option<serde_json::Value> {
    Bson::try_from(id.clone())
        .ok()
        .map(Bson::into_canonical_extjson)
}

/// The `_id` a state entry holds ([`id_to_json`]).
pub fn id_from_json(value: &serde_json::Value) -> Result<RawBson, String> {
    let bson = Bson::try_from(value.clone()).map_err(|e| e.to_string())?;
    RawBson::try_from(bson).map_err(|e| e.to_string())
}

/// A job's checkpoint: one entry per namespace pair (`"src.coll -> dst.coll"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub description: String,
    pub updated_at: f64,
    /// The whole job finished (every namespace complete).
    pub complete: bool,
    pub namespaces: BTreeMap<String, NsCheckpoint>,
    /// Where a sync job's following of the source's changes stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncCheckpoint>,
    /// A job whose partitions several processes share: the id of its layout (the entries
    /// above). Each partition's progress is kept apart, under [`Checkpoint::part_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
    /// A page of a sync's recheck list, spilled to the store under a key of its own
    /// ([`Checkpoint::recheck_page_key`]) when the list grew long.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recheck: Vec<RecheckEntry>,
}

impl Checkpoint {
    /// Where the progress of the entry `entry` of the shared job `job` with layout `layout` is
    /// kept: its own key, claimed by the process that copies the partition.
    pub fn part_key(job: &JobKey, layout: &str, entry: &str) -> JobKey {
        JobKey(format!("{job} {layout} {entry}"))
    }

    /// Where page `page` of the job `job`'s recheck list is kept.
    pub fn recheck_page_key(job: &JobKey, page: u64) -> JobKey {
        JobKey(format!("{job} recheck {page}"))
    }
}

/// A sync job's place in the source's history (positions are resume tokens, canonical Extended
/// JSON, opaque).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncCheckpoint {
    /// Recorded before the first document was copied: every change after it is applied.
    pub start: serde_json::Value,
    /// Every change up to this position is applied (`None`: none yet, from `start`).
    pub applied: Option<serde_json::Value>,
    /// Cluster time (Unix seconds) of the last change applied (of the start, before any).
    pub applied_secs: u32,
    /// Changes applied, every run of the job together.
    pub events: u64,
    /// Committed: every change up to the commit is applied and the job is over.
    pub committed: bool,
    /// Where the sync's continuous verification stands (`None`: not started, or off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationCheckpoint>,
    /// Recorded at the commit: where the destination's history stood then, so that a reverse
    /// sync (fail back, [`crate::run::reverse`]) can follow the destination from there. `None`
    /// before the commit, or when the destination's position could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_from: Option<ReverseFrom>,
    /// The position before this one was gone from the source's history, and every namespace
    /// is being reconciled (`on_history_lost: reconcile`): a run that finds this finishes that
    /// reconcile (from the namespaces' watermarks) before it follows from `start`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciling: bool,
}

/// Where a committed sync's reverse starts, and what it needs to map the names back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReverseFrom {
    /// The destination's change-stream position at the commit point, after the last change was
    /// applied (a resume token, canonical Extended JSON, opaque).
    pub start: serde_json::Value,
    /// The destination's cluster time (Unix seconds) then.
    pub secs: u32,
    /// The forward job's namespace mappings, as `--ns` writes them (`db.c[:db2.c2]`, `db.*`…).
    pub namespaces: Vec<String>,
    /// The forward job's excludes, as `--exclude` writes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The forward job had a filter: it cannot be reversed (the destination holds only part).
    #[serde(default)]
    pub filtered: bool,
    /// The forward job had a transform: it cannot be reversed (the destination holds what the
    /// transform made of the source's documents, and writing that back would overwrite the
    /// originals).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transformed: bool,
    /// The commit proved the two sides equal: the reverse starts with its verification done.
    #[serde(default)]
    pub proven: bool,
}

/// Where a sync's continuous verification stands: how far each namespace pair was compared,
/// what must be compared again, and the counts so far (`run::verifier`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerificationCheckpoint {
    /// By namespace pair (`"src.coll -> dst.coll"`): the scan's progress in `_id` order.
    pub namespaces: BTreeMap<String, ScanCheckpoint>,
    /// `_id`s to compare again (changed since they were compared, or found different), kept
    /// here while few; more go to pages of their own in the store ([`Checkpoint::recheck`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recheck: Vec<RecheckEntry>,
    /// The numbers of the spilled pages still to compare, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<u64>,
    /// The number the next spilled page takes.
    #[serde(default)]
    pub next_page: u64,
    /// `_id`s the pages hold together.
    #[serde(default)]
    pub paged: u64,
    pub verified_docs: u64,
    pub mismatches: u64,
    pub repaired: u64,
    /// Source time (Unix seconds) up to which everything is proven equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<f64>,
    /// Where the watch of the destination's own changes stands (a resume token): writes
    /// that reach the destination from elsewhere are compared too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_position: Option<serde_json::Value>,
}

/// One namespace pair's scan: compared up to and including `after`, or `complete`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanCheckpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
    pub complete: bool,
}

/// An `_id` (canonical Extended JSON) of a namespace pair to compare again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecheckEntry {
    pub ns: String,
    pub id: serde_json::Value,
}

/// A document the destination refused, kept with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub job: JobKey,
    /// The destination namespace.
    pub ns: String,
    /// The document's `_id`, canonical Extended JSON.
    pub id: serde_json::Value,
    pub reason: String,
    pub code: Option<i32>,
    pub at: f64,
    /// The whole document, canonical Extended JSON.
    pub document: serde_json::Value,
}

impl DeadLetter {
    pub fn new(
        job: &JobKey,
        ns: String,
        doc: &RawDocumentBuf,
        reason: String,
        code: Option<i32>,
    ) -> Self {
        let id = doc
            .get("_id")
            .ok()
            .flatten()
            .and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
            .map(Bson::into_canonical_extjson)
            .unwrap_or(serde_json::Value::Null);
        // A document that does not decode (e.g. invalid UTF-8 from an old server) is kept as
        // its raw bytes: a binary value in Extended JSON, never dropped.
        let document = Document::try_from(doc.as_ref())
            .map(|d| Bson::Document(d).into_canonical_extjson())
            .unwrap_or_else(|_| {
                Bson::Binary(mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: doc.as_bytes().to_vec(),
                })
                .into_canonical_extjson()
            });
        DeadLetter {
            job: job.clone(),
            ns,
            id,
            reason,
            code,
            at: crate::state::unix_now(),
            document,
        }
    }
}

/// Durable job state. Object safe, so stores can be chosen at run time.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Claims the job for this run until the claim is dropped; [`StateError::JobBusy`] while
    /// another run (of this process or another) holds it.
    fn claim<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<JobClaim, StateError>>;
    /// Claims the job (or one partition of a shared job) if no other run holds it, without
    /// waiting even for a standby: `None` while another run holds it.
    fn try_claim<'a>(
        &'a self,
        key: &'a JobKey,
    ) -> BoxFuture<'a, Result<Option<JobClaim>, StateError>> {
        async move {
            match self.claim(key).await {
                Ok(claim) => Ok(Some(claim)),
                Err(StateError::JobBusy { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }
        .boxed()
    }
    /// Whether several processes may share one job's partitions through this store (each
    /// partition claimed by lease, [`crate::engine::ledger`]); else one run holds a whole job.
    fn shares_jobs(&self) -> bool {
        false
    }
    fn load<'a>(&'a self, key: &'a JobKey)
        -> BoxFuture<'a, Result<Option<Checkpoint>, StateError>>;
    fn save<'a>(
        &'a self,
        key: &'a JobKey,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), StateError>>;
    fn remove<'a>(&'a self, key: &'a JobKey) -> BoxFuture<'a, Result<(), StateError>>;
    /// Appends refused documents; returns once they are durable.
    fn keep_dead_letters(&self, letters: Vec<DeadLetter>) -> BoxFuture<'_, Result<(), StateError>>;
    /// Where the state lives, for messages.
    fn location(&self) -> String;
    /// The database of a store kept in MongoDB: a job never writes into it
    /// (`run::overlap`). `None` for the file and memory stores.
    fn database(&self) -> Option<&mongodb::Database> {
        None
    }
    /// Where the dead letters live, for messages.
    fn dead_letter_location(&self) -> String;
    /// Gives back what the store holds (connections; claims already dropped) before the process
    /// ends. Nothing to do for the file and memory stores.
    fn close(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

/// Seconds since the Unix epoch, as the state files record times.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `$XDG_DATA_HOME`, else `~/.local/share`, else the working directory.
pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| ".".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_credentials_and_tunables() {
        let ns = vec!["a.b".to_string()];
        let (k1, d1) = JobKey::of("mongodb://u:p1@h:1/?x=1", "mongodb://h:2", &ns, None);
        let (k2, _) = JobKey::of("mongodb://u:p2@h:1/?x=1", "mongodb://h:2", &ns, None);
        assert_eq!(k1, k2);
        assert!(!d1.contains("p1"), "{d1}");
        let (k3, _) = JobKey::of("mongodb://h:1/?x=1", "mongodb://h:3", &ns, None);
        assert_ne!(k1, k3);
        let filter = mongodb::bson::doc! { "a": 1 };
        let (k4, _) = JobKey::of("mongodb://h:1/?x=1", "mongodb://h:2", &ns, Some(&filter));
        assert_ne!(k1, k4);
        let with_secret = |s: &str| format!("mongodb://h:2/?tlsCertificateKeyFilePassword={s}");
        let (k5, d5) = JobKey::of("mongodb://h:1/?x=1", &with_secret("old-key"), &ns, None);
        let (k6, _) = JobKey::of("mongodb://h:1/?x=1", &with_secret("new-key"), &ns, None);
        assert_eq!(k5, k6, "a changed secret option is the same job");
        assert!(!d5.contains("old-key"), "{d5}");
    }

    #[test]
    fn an_undecodable_refused_document_is_kept_as_raw_bytes() {
        // {_id: 1, s: <a string whose bytes are not UTF-8>}
        let mut bytes = vec![];
        let body: Vec<u8> = [
            &[0x10][..],
            b"_id\0",
            &1i32.to_le_bytes(),
            &[0x02],
            b"s\0",
            &2i32.to_le_bytes(),
            &[0xff, 0x00],
            &[0x00],
        ]
        .concat();
        bytes.extend_from_slice(&((body.len() + 4) as i32).to_le_bytes());
        bytes.extend_from_slice(&body);
        let doc = RawDocumentBuf::from_bytes(bytes.clone()).unwrap();
        let letter = DeadLetter::new(&JobKey("k".into()), "a.b".into(), &doc, "bad".into(), None);
        assert_eq!(letter.id["$numberInt"], "1");
        let kept = letter.document["$binary"]["base64"].as_str().unwrap();
        let bson = Bson::try_from(letter.document.clone()).unwrap();
        assert_eq!(
            bson,
            Bson::Binary(mongodb::bson::Binary {
                subtype: mongodb::bson::spec::BinarySubtype::Generic,
                bytes,
            }),
            "{kept}"
        );
    }

    #[test]
    fn watermarks_keep_their_type() {
        for id in [
            RawBson::Int64(5),
            RawBson::Int32(5),
            RawBson::String("x".into()),
            RawBson::Double(2.5),
        ] {
            let cp = NsCheckpoint::new(Some(&id), 1, false);
            let text = serde_json::to_string(&cp).unwrap();
            let back: NsCheckpoint = serde_json::from_str(&text).unwrap();
            assert_eq!(back.after_id().unwrap(), Some(id));
        }
    }
}
