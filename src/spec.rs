//! Job specification: a [`JobSpec`] as the operator writes it in, a validated [`CopySpec`] out.
//!
//! One type carries a job's settings everywhere they are written: the command line (it derives
//! clap's `Args`, and `copy`/`verify` flatten its groups), the API (JSON) and the job history.
//! The engine's types it holds know nothing of the command line: their flags are here
//! (`--strategy`'s values, the `--adaptive-*` flags).
//! Every problem of a spec is collected and reported at once ([`SpecError`]), so an operator fixes
//! a command line or an API request in one go.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use std::collections::BTreeMap;

use mongodb::bson::Document;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bounds;
use crate::engine::control::adaptive::AdaptiveConfig;
use crate::engine::control::guard::{GuardSettings, Threshold};
use crate::engine::control::throttle::Limits;
use crate::engine::transform::{HmacKey, Step};
use crate::engine::{Strategy, DEFAULT_BATCH_SIZE, DEFAULT_WORKERS};
use crate::journal::JournalConfig;
use crate::mongo::{is_redacted, redact_uri, Namespace, UriText};
use crate::state::JobKey;

/// One `--ns SRC[:DST]` argument. `db.*` names every collection of a database, `*` every
/// database but `admin`, `local` and `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsMapping {
    /// `db.coll[:db2.coll2]`
    Collection { src: Namespace, dst: Namespace },
    /// `db.*[:db2[.*]]`
    Database { src_db: String, dst_db: String },
    /// `*`: every database, each under its own name.
    Everything,
}

/// Databases `*` leaves out: the server's own.
pub const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

impl NsMapping {
    /// The mapping from destination to source (a reverse sync's).
    pub fn turned(&self) -> NsMapping {
        match self {
            NsMapping::Collection { src, dst } => NsMapping::Collection {
                src: dst.clone(),
                dst: src.clone(),
            },
            NsMapping::Database { src_db, dst_db } => NsMapping::Database {
                src_db: dst_db.clone(),
                dst_db: src_db.clone(),
            },
            NsMapping::Everything => NsMapping::Everything,
        }
    }

    /// Where this mapping sends the source namespace `ns`, if it names it (excludes aside).
    pub fn destination(&self, ns: &Namespace) -> Option<Namespace> {
        match self {
            NsMapping::Collection { src, dst } => (src == ns).then(|| dst.clone()),
            NsMapping::Database { src_db, dst_db } => {
                (*src_db == ns.db).then(|| Namespace::new(dst_db, &ns.coll))
            }
            NsMapping::Everything => {
                (!SYSTEM_DATABASES.contains(&ns.db.as_str())).then(|| ns.clone())
            }
        }
    }
}

impl fmt::Display for NsMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsMapping::Collection { src, dst } if src == dst => write!(f, "{src}"),
            NsMapping::Collection { src, dst } => write!(f, "{src}:{dst}"),
            NsMapping::Database { src_db, dst_db } if src_db == dst_db => write!(f, "{src_db}.*"),
            NsMapping::Database { src_db, dst_db } => write!(f, "{src_db}.*:{dst_db}.*"),
            NsMapping::Everything => f.write_str("*"),
        }
    }
}

impl FromStr for NsMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "*" {
            return Ok(NsMapping::Everything);
        }
        if text.starts_with("*:") {
            return Err(format!(
                "namespace {text:?}: `*` keeps every database's name (rename with db.*:db2)"
            ));
        }
        let (src, dst) = match text.split_once(':') {
            Some((s, d)) => (s, Some(d)),
            None => (text, None),
        };
        let src = parse_ns(src, false).map_err(|e| format!("namespace {text:?}: {e}"))?;
        let dst = match dst {
            None => src.clone(),
            Some(d) => parse_ns(d, matches!(src, NsPattern::All(_)))
                .map_err(|e| format!("namespace {text:?}: {e}"))?,
        };
        match (src, dst) {
            (NsPattern::One(src), NsPattern::One(dst)) => Ok(NsMapping::Collection { src, dst }),
            (NsPattern::All(src_db), NsPattern::All(dst_db) | NsPattern::DbOnly(dst_db)) => {
                Ok(NsMapping::Database { src_db, dst_db })
            }
            (NsPattern::One(_), _) => Err(format!(
                "namespace {text:?}: a single collection maps to a single collection (db.coll)"
            )),
            (NsPattern::All(_), NsPattern::One(_)) => Err(format!(
                "namespace {text:?}: `db.*` maps to a database (`db2` or `db2.*`)"
            )),
            (NsPattern::DbOnly(_), _) => unreachable!("source patterns never parse as DbOnly"),
        }
    }
}

#[derive(Clone)]
enum NsPattern {
    One(Namespace),
    All(String),
    DbOnly(String),
}

fn parse_ns(text: &str, allow_db_only: bool) -> Result<NsPattern, String> {
    let Some((db, coll)) = text.split_once('.') else {
        if allow_db_only && !text.is_empty() {
            validate_db(text)?;
            return Ok(NsPattern::DbOnly(text.to_string()));
        }
        return Err("expected db.collection".into());
    };
    validate_db(db)?;
    if coll == "*" {
        return Ok(NsPattern::All(db.to_string()));
    }
    if coll.is_empty() {
        return Err("collection name is empty".into());
    }
    if coll.contains('$') || coll.contains('\0') {
        return Err(format!(
            "collection name {coll:?} may not contain '$' or NUL"
        ));
    }
    if coll.starts_with("system.") {
        return Err(format!("system collection {coll:?} cannot be copied"));
    }
    Ok(NsPattern::One(Namespace::new(db, coll)))
}

fn validate_db(db: &str) -> Result<(), String> {
    if db.is_empty() {
        return Err("database name is empty".into());
    }
    if let Some(bad) = db.chars().find(|c| "/\\. \"$*<>:|?\0".contains(*c)) {
        return Err(format!("database name {db:?} may not contain {bad:?}"));
    }
    if db.len() > 63 {
        return Err(format!("database name {db:?} is longer than 63 bytes"));
    }
    Ok(())
}

/// An `--exclude` pattern: `db.coll`, `db.*`, or a glob (`*` any run of characters, `?` one)
/// matched against a source namespace's whole `db.coll` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclude(String);

impl FromStr for Exclude {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || !text.contains('.') {
            return Err(format!(
                "exclude {text:?}: expected db.coll, db.* or a glob on db.coll names"
            ));
        }
        Ok(Exclude(text.to_string()))
    }
}

impl fmt::Display for Exclude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Exclude {
    pub fn matches(&self, ns: &Namespace) -> bool {
        glob(self.0.as_bytes(), ns.to_string().as_bytes())
    }
}

/// `*` matches any run of characters, `?` any one, everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// When a copy builds the source's indexes at the destination.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IndexMode {
    /// Once the documents are in (one build per index over the data, as mongorestore does).
    #[default]
    After,
    /// Before the documents: unique indexes then refuse duplicates as they arrive.
    Before,
    /// Not at all.
    None,
}

/// Which servers a sync job blocks writes on at its commit (`setUserWriteBlockMode`, mongod 6.0
/// and later), so that no application write lands after the commit point. A job asking for it is
/// refused when submitted if a server named lacks the command ([`crate::run::cutover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlockWrites {
    /// The source: the application can no longer write to the old cluster.
    Source,
    /// The destination: nothing writes to the new cluster until the operator lifts the block.
    Destination,
    /// Both.
    Both,
}

impl BlockWrites {
    /// The sides it blocks.
    pub fn sides(self) -> &'static [crate::mongo::Side] {
        use crate::mongo::Side;
        match self {
            BlockWrites::Source => &[Side::Source],
            BlockWrites::Destination => &[Side::Destination],
            BlockWrites::Both => &[Side::Source, Side::Destination],
        }
    }
}

impl fmt::Display for BlockWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockWrites::Source => "source",
            BlockWrites::Destination => "destination",
            BlockWrites::Both => "both",
        })
    }
}

/// What is wrong with a connection string, if anything. Its scheme's case and the spaces around
/// it do not matter ([`crate::mongo::read_uri`]); no problem quotes a secret of it.
pub fn uri_problem(field: &str, uri: &str) -> Option<String> {
    match crate::mongo::read_uri(uri) {
        UriText::Uri(_) => None,
        _ if uri.trim().is_empty() => Some(format!("{field}: a MongoDB URI is required")),
        UriText::Invalid(why) => Some(format!("{field}: {why}")),
        UriText::NotUri => Some(format!(
            "{field}: {} is not a mongodb:// or mongodb+srv:// URI",
            crate::mongo::redact_uri(uri)
        )),
    }
}

/// A copy job, validated: everything the engine needs and nothing it must re-check.
#[derive(Debug, Clone)]
pub struct CopySpec {
    pub from: String,
    pub to: String,
    pub namespaces: Vec<NsMapping>,
    pub filter: Option<Document>,
    pub workers: usize,
    /// Namespaces (or partitions) read at once.
    pub readers: usize,
    /// Documents per partition: larger namespaces are read in `_id` ranges (`None`: whole).
    pub partition_docs: Option<u64>,
    pub batch_size: usize,
    pub strategy: Strategy,
    pub mode: Mode,
    /// The memory budget in bytes (see `engine::budget`).
    pub memory_limit: usize,
    pub connect_timeout: std::time::Duration,
    pub limits: Limits,
    pub adaptive: Option<AdaptiveConfig>,
    /// Ignore the job's checkpoint and copy everything again.
    pub restart: bool,
    /// Refuse (as dead letters) documents larger than this, below the destination's own limit.
    pub max_document_bytes: Option<usize>,
    /// A copy or move: compare after the copy (`Report`). A sync: verify continuously,
    /// repairing (`Repair`) or only reporting (`Report`).
    pub verify: VerifyMode,
    /// A sync can commit while it lags the source by at most this many seconds.
    pub commit_max_lag_secs: f64,
    /// How long a sync watches the source for writes after its commit point.
    pub commit_watch: std::time::Duration,
    /// A move that deletes nothing from the source.
    pub keep_source: bool,
    pub journal: Option<JournalConfig>,
    /// Source namespaces left out.
    pub exclude: Vec<Exclude>,
    pub indexes: IndexMode,
    /// Drop the destination's namespaces of the job first.
    pub drop: bool,
    /// A sync job: the servers whose writes its commit blocks.
    pub block_writes: Option<BlockWrites>,
    /// A reconcile deletes the documents only the destination holds.
    pub delete_extra: bool,
    /// What a sync does when its saved position is gone from the source's history.
    pub on_history_lost: OnHistoryLost,
    /// What the load guard watches.
    pub guard: GuardSettings,
    /// What each namespace's documents go through on their way (`None`: nothing).
    pub transform: Option<TransformRules>,
    /// The key of the transform's `hmac` steps (never in a spec: from a file or the
    /// environment of the process that runs the job).
    pub transform_key: Option<HmacKey>,
}

/// What a sync does when its saved position is gone from the source's history.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnHistoryLost {
    /// Stop with an error: `--restart` copies everything again.
    #[default]
    Fail,
    /// Take a new position, reconcile every namespace (write only what differs, delete what
    /// the source no longer has), then follow the source from the new position.
    Reconcile,
}

impl CopySpec {
    /// The job's key and description: what it selects (excludes too, as `!pattern`) and how.
    pub fn job_key(&self) -> (JobKey, String) {
        let namespaces: Vec<String> = self
            .namespaces
            .iter()
            .map(|m| m.to_string())
            .chain(self.exclude.iter().map(|e| format!("!{e}")))
            // A sync keeps a position in the source's history that a copy of the same namespaces
            // must not share (nor take over a copy's finished checkpoint).
            .chain((self.mode != Mode::Copy).then(|| format!("({})", self.mode)))
            // A run with another transform (or key) writes other documents: it must not
            // continue this one's checkpoint, which would leave the two kinds mixed.
            .chain(
                self.transform
                    .as_ref()
                    .map(|t| format!("(transform {})", t.identity(self.transform_key.as_ref()))),
            )
            .collect();
        JobKey::of(&self.from, &self.to, &namespaces, self.filter.as_ref())
    }
}

/// A sync's `can_commit` holds while it lags the source by at most this many seconds.
pub const DEFAULT_COMMIT_MAX_LAG_SECS: f64 = 5.0;

/// How long a sync watches the source for writes after its commit point, by default.
pub const DEFAULT_COMMIT_WATCH_SECS: f64 = 10.0;

/// Every problem found in a job spec, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid job: {}", .0.join("; "))]
pub struct SpecError(pub Vec<String>);

/// A problem names the spec's fields as the API spells them; on the command line each is
/// the flag the user wrote. (API field or bound name, flag.)
const FLAGS: &[(&str, &str)] = &[
    ("from", "--from"),
    ("to", "--to"),
    ("namespaces", "--ns"),
    ("filter", "--filter"),
    ("exclude", "--exclude"),
    ("connect_timeout", "--connect-timeout"),
    ("workers", "--workers"),
    ("readers", "--readers"),
    ("partition_docs", "--partition-docs"),
    ("batch_size", "--batch-size"),
    ("strategy", "--strategy"),
    ("memory_limit", "--memory-limit"),
    ("rate", "--rate"),
    ("rate_bytes", "--rate-bytes"),
    ("adaptive.target_ms", "--adaptive-target-ms"),
    ("adaptive.max_workers", "--adaptive-max-workers"),
    ("adaptive.interval_ms", "--adaptive-interval-ms"),
    ("restart", "--restart"),
    ("max_document_bytes", "--max-document-bytes"),
    ("verify", "--verify"),
    ("commit_max_lag_secs", "--commit-max-lag-secs"),
    ("commit_watch_secs", "--commit-watch-secs"),
    ("keep_source", "--keep-source"),
    ("journal.dir", "--journal"),
    ("journal.segment_bytes", "--journal-segment-bytes"),
    ("indexes", "--indexes"),
    ("drop", "--drop"),
    ("block_writes", "--block-writes"),
    ("delete_extra", "--delete-extra"),
    ("on_history_lost", "--on-history-lost"),
    ("lease_seconds", "--lease-seconds"),
    ("shutdown_timeout", "--shutdown-timeout"),
    ("client_timeout", "--client-timeout"),
    ("max_event_streams", "--max-event-streams"),
    ("doc_size", "--doc-size"),
];

impl SpecError {
    /// The problems as the command line reports them: each field named by its flag, where a
    /// problem starts with it (`rate_bytes: …`) or quotes it (`` `keep_source` ``).
    pub fn for_command_line(&self) -> String {
        let problems: Vec<String> = self.0.iter().map(|p| with_flags(p)).collect();
        format!("invalid job: {}", problems.join("; "))
    }
}

fn with_flags(problem: &str) -> String {
    let mut text = problem.to_string();
    if let Some((field, rest)) = text.split_once(": ") {
        if let Some((_, flag)) = FLAGS.iter().find(|(name, _)| *name == field) {
            text = format!("{flag}: {rest}");
        }
    }
    for (name, flag) in FLAGS {
        text = text.replace(&format!("`{name}`"), &format!("`{flag}`"));
    }
    text
}

/// A query in MongoDB Extended JSON: a JSON object in a request, its text on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Filter(pub serde_json::Map<String, serde_json::Value>);

impl FromStr for Filter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => Ok(Filter(map)),
            Ok(_) => Err("filter must be a JSON object".into()),
            Err(e) => Err(format!("filter is not valid JSON: {e}")),
        }
    }
}

impl Filter {
    /// The filter as a BSON query (canonical or relaxed Extended JSON).
    pub fn to_document(&self) -> Result<Document, String> {
        Document::try_from(self.0.clone())
            .map_err(|e| format!("filter is not valid Extended JSON: {e}"))
    }
}

/// Where a job reads and writes, and which documents: what `copy` and `verify` (and a job of the
/// API) share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args, ToSchema)]
pub struct Endpoints {
    /// Source connection string (mongodb:// or mongodb+srv://).
    #[arg(long, env = "MONGOFERRY_FROM", hide_env_values = true)]
    pub from: String,
    /// Destination connection string.
    #[arg(long, env = "MONGOFERRY_TO", hide_env_values = true)]
    pub to: String,
    /// Namespace, `db.coll[:db2.coll2]` or `db.*[:db2]`; repeatable.
    #[arg(long = "ns", required = true, value_name = "SRC[:DST]")]
    pub namespaces: Vec<String>,
    /// Query in MongoDB Extended JSON selecting the source documents (on both sides for
    /// `verify`).
    #[arg(long, value_parser = Filter::from_str)]
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Filter>,
    /// Leave out the source namespaces matching this pattern: `db.coll`, `db.*`, or a glob on
    /// `db.coll` names (`*`, `?`); repeatable.
    #[arg(long, value_name = "PATTERN")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Seconds to wait for each server to answer before giving up [default: 10].
    #[arg(long = "connect-timeout", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<f64>,
}

/// A transform: namespace patterns (those of `--exclude`), each with its steps, in the order
/// written (a namespace several patterns match gets their steps one pattern after the other).
/// From `--transform FILE` or a spec's `"transform": {...}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransformConfig {
    pub patterns: Vec<(String, serde_json::Value)>,
    /// The file it was read from, for messages.
    pub file: Option<String>,
}

impl TransformConfig {
    /// Reads a transform file (the flag's parser: a file that cannot be read or is not a JSON
    /// object is refused, naming it).
    pub fn from_file(path: &str) -> Result<TransformConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("transform file {path}: cannot be read: {e}"))?;
        let mut config: TransformConfig =
            serde_json::from_str(&text).map_err(|e| format!("transform file {path}: {e}"))?;
        config.file = Some(path.to_string());
        Ok(config)
    }

    /// Each pattern with its steps checked; every problem, naming the file, the pattern and
    /// the step.
    pub fn rules(&self) -> Result<TransformRules, Vec<String>> {
        let whence = match &self.file {
            Some(file) => format!("transform file {file}"),
            None => "transform".to_string(),
        };
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (pattern, steps) in &self.patterns {
            let matcher = match pattern.parse::<Exclude>() {
                Ok(m) => m,
                Err(e) => {
                    problems.push(format!("{whence}: {e}"));
                    continue;
                }
            };
            let Some(list) = steps.as_array() else {
                problems.push(format!("{whence}: {pattern}: expected a list of steps"));
                continue;
            };
            let mut parsed = Vec::new();
            for (i, step) in list.iter().enumerate() {
                match Step::parse(step) {
                    Ok(step) => parsed.push(step),
                    Err(e) => {
                        problems.push(format!("{whence}: {pattern}, step {} {step}: {e}", i + 1))
                    }
                }
            }
            rules.push((pattern.clone(), matcher, parsed));
        }
        if self.patterns.is_empty() {
            problems.push(format!("{whence}: names no namespace pattern"));
        }
        match problems.is_empty() {
            true => Ok(TransformRules(rules)),
            false => Err(problems),
        }
    }
}

impl Serialize for TransformConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.patterns.len()))?;
        for (pattern, steps) in &self.patterns {
            map.serialize_entry(pattern, steps)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TransformConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> serde::de::Visitor<'de> for Ordered {
            type Value = TransformConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of namespace patterns, each with a list of steps")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut patterns = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    patterns.push(entry);
                }
                Ok(TransformConfig {
                    patterns,
                    file: None,
                })
            }
        }
        d.deserialize_map(Ordered)
    }
}

/// A transform's patterns, checked: which steps each source namespace's documents go through.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformRules(Vec<(String, Exclude, Vec<Step>)>);

impl TransformRules {
    /// The steps for documents of `source`: those of every pattern it matches, in order.
    pub fn steps_for(&self, source: &Namespace) -> Vec<Step> {
        self.0
            .iter()
            .filter(|(_, matcher, _)| matcher.matches(source))
            .flat_map(|(_, _, steps)| steps.iter().cloned())
            .collect()
    }

    /// The patterns as written, with their steps.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, &Exclude, &[Step])> {
        self.0.iter().map(|(p, m, s)| (p.as_str(), m, s.as_slice()))
    }

    /// What tells this transform apart in a job's key: a digest of its patterns and steps, and
    /// of which key its `hmac` steps use (never the key). A run with another transform, or
    /// another key, writes other documents: it is another job, not this one's continuation.
    pub fn identity(&self, key: Option<&HmacKey>) -> String {
        let mut text = String::new();
        for (pattern, _, steps) in &self.0 {
            text.push_str(pattern);
            for step in steps {
                text.push('\n');
                text.push_str(&step.canonical());
            }
            text.push_str("\n\n");
        }
        if let Some(key) = key.filter(|_| self.needs_key()) {
            text.push_str(&key.fingerprint());
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        crate::state::hex(&digest.as_ref()[..8])
    }

    /// Whether any step needs the key.
    pub fn needs_key(&self) -> bool {
        self.0
            .iter()
            .any(|(_, _, steps)| steps.iter().any(|s| matches!(s, Step::Hmac(_))))
    }
}

/// What the load guard watches: each signal optional, each changeable while the job runs
/// (`PATCH /api/jobs/{id}`). While any of them fires the job writes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args, ToSchema)]
pub struct GuardConfig {
    /// Hold the job while the destination's replication lag (its furthest secondary within the
    /// majority, from replSetGetStatus; the source's too during a move) is over this many ms.
    #[arg(long, value_name = "MS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<f64>,
    /// Hold the job while a serverStatus value is over its limit:
    /// `side:dotted.path>number`, comma-separated (`source:connections.current>500`).
    #[arg(long, value_name = "EXPR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_load: Option<String>,
    /// Stop the job (resumably, status 1) when a serverStatus value is over its limit (the
    /// syntax of --max-load).
    #[arg(long, value_name = "EXPR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_load: Option<String>,
    /// On a critical load, pause this many seconds and look again instead of stopping.
    #[arg(long, value_name = "SECS", requires = "critical_load")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_load_hibernate_secs: Option<f64>,
    /// Hold the job while this file exists.
    #[arg(long, value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_flag_file: Option<String>,
    /// Hold the job while an HTTP HEAD of this URL answers anything but 200 (or nothing).
    #[arg(long, value_name = "URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_url: Option<String>,
    /// A sync: warn when its oplog headroom (how much older than its saved position the
    /// source's oldest oplog entry may get) is under this many seconds, and hold it no more
    /// then [default: 3600].
    // The flag is shown by `sync` alone (`SyncArgs`); copy and move would refuse it.
    #[arg(long, value_name = "SECS", hide = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_oplog_headroom_secs: Option<f64>,
    /// A sync: its commit waits while this file exists.
    #[arg(long, value_name = "PATH", hide = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postpone_commit_flag_file: Option<String>,
    /// Milliseconds between the load guard's decisions [default: 1000].
    #[arg(long, value_name = "MS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_interval_ms: Option<u64>,
}

impl GuardConfig {
    /// The settings the guard runs with, or every problem of the config.
    pub fn settings(&self, mode: Mode) -> Result<GuardSettings, Vec<String>> {
        let mut problems = Vec::new();
        let mut thresholds = |text: &Option<String>, field: &str| match text {
            None => Vec::new(),
            Some(text) => Threshold::parse_list(text, field).unwrap_or_else(|e| {
                problems.push(e);
                Vec::new()
            }),
        };
        let max_load = thresholds(&self.max_load, "max_load");
        let critical_load = thresholds(&self.critical_load, "critical_load");
        problems.extend(bounds::MAX_LAG_MS.problem_opt(self.max_lag_ms));
        problems.extend(bounds::HIBERNATE_SECS.problem_opt(self.critical_load_hibernate_secs));
        problems.extend(bounds::MIN_OPLOG_HEADROOM_SECS.problem_opt(self.min_oplog_headroom_secs));
        problems.extend(bounds::GUARD_INTERVAL_MS.problem_opt(self.guard_interval_ms));
        if self.critical_load_hibernate_secs.is_some() && self.critical_load.is_none() {
            problems.push("critical_load_hibernate_secs: only with critical_load".into());
        }
        if let Some(url) = &self.throttle_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!(
                    "throttle_url: `{url}` is not an http:// or https:// URL"
                ));
            }
        }
        for (field, path) in [
            ("throttle_flag_file", &self.throttle_flag_file),
            ("postpone_commit_flag_file", &self.postpone_commit_flag_file),
        ] {
            if path.as_ref().is_some_and(|p| p.trim().is_empty()) {
                problems.push(format!("{field}: an empty path"));
            }
        }
        if mode != Mode::Sync {
            for (field, set) in [
                (
                    "min_oplog_headroom_secs",
                    self.min_oplog_headroom_secs.is_some(),
                ),
                (
                    "postpone_commit_flag_file",
                    self.postpone_commit_flag_file.is_some(),
                ),
            ] {
                if set {
                    problems.push(format!(
                        "{field}: only a sync follows the oplog and commits"
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(GuardSettings {
            max_lag_ms: self.max_lag_ms,
            max_load,
            critical_load,
            critical_load_hibernate_secs: self.critical_load_hibernate_secs,
            throttle_flag_file: self.throttle_flag_file.as_ref().map(PathBuf::from),
            throttle_url: self.throttle_url.clone(),
            min_oplog_headroom_secs: self.min_oplog_headroom_secs,
            postpone_commit_flag_file: self.postpone_commit_flag_file.as_ref().map(PathBuf::from),
            guard_interval_ms: self.guard_interval_ms,
        })
    }
}

/// What a job does once the documents are copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Copy what the source holds, and end.
    #[default]
    Copy,
    /// Copy, then apply the source's changes (change streams) until committed.
    Sync,
    /// Copy, verify, then delete from the source what the destination holds exactly.
    Move,
    /// Compare both sides and write only what differs: the destination made equal to the
    /// source (extras deleted only with `delete_extra`).
    Reconcile,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Copy => "copy",
            Mode::Sync => "sync",
            Mode::Move => "move",
            Mode::Reconcile => "reconcile",
        })
    }
}

/// Where a job sends each source namespace: its mappings less its excludes. A sync asks it of
/// every namespace its change stream names, collections created after the start included.
#[derive(Debug, Clone)]
pub struct Routes {
    mappings: Vec<NsMapping>,
    exclude: Vec<Exclude>,
}

impl Routes {
    pub fn new(mappings: &[NsMapping], exclude: &[Exclude]) -> Self {
        Routes {
            mappings: mappings.to_vec(),
            exclude: exclude.to_vec(),
        }
    }

    /// The destination of a source namespace, or `None` when the job does not select it (the
    /// server's own databases and `system.` collections never are).
    pub fn destination(&self, ns: &Namespace) -> Option<Namespace> {
        if ns.coll.is_empty()
            || ns.coll.starts_with("system.")
            || self.exclude.iter().any(|e| e.matches(ns))
        {
            return None;
        }
        self.mappings.iter().find_map(|m| m.destination(ns))
    }

    /// The source databases the job reads; `None`: every database but the server's own.
    /// The namespace mappings, in order.
    pub fn mappings(&self) -> &[NsMapping] {
        &self.mappings
    }

    /// The source namespaces left out.
    pub fn excludes(&self) -> &[Exclude] {
        &self.exclude
    }

    pub fn databases(&self) -> Option<Vec<String>> {
        let mut dbs = Vec::new();
        for m in &self.mappings {
            let db = match m {
                NsMapping::Collection { src, .. } => &src.db,
                NsMapping::Database { src_db, .. } => src_db,
                NsMapping::Everything => return None,
            };
            if !dbs.contains(db) {
                dbs.push(db.clone());
            }
        }
        Some(dbs)
    }
}

/// A job as an operator writes it: the flags of `copy`, the body of `POST /api/jobs`, and what
/// the job history keeps (redacted). One type for the three, turned into a [`CopySpec`] by
/// [`JobSpec::validate`], which reports every problem at once. A new option is a field here and
/// its use in `validate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args, ToSchema)]
pub struct JobSpec {
    #[command(flatten)]
    #[serde(flatten)]
    pub endpoints: Endpoints,
    /// Concurrent workers writing to the destination [default: 4].
    #[arg(long)]
    #[serde(default)]
    pub workers: Option<usize>,
    /// Namespaces read from the source at once, into the one queue the workers share
    /// [default: 1].
    #[arg(long)]
    #[serde(default)]
    pub readers: Option<usize>,
    /// Split collections larger than this many documents into `_id` ranges (partitions) that
    /// the readers read at once, each with its own checkpoint; 0 never splits [default: none
    /// with one reader, 1000000 with several].
    #[arg(long)]
    #[serde(default)]
    pub partition_docs: Option<u64>,
    /// Documents per batch [default: 500].
    #[arg(long)]
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// How documents reach the workers: `stream` (documents in `_id` order, the default) or
    /// `ids` (workers fetch each batch of `_id`s with `$in`).
    #[arg(long, value_enum)]
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Memory budget in bytes: cursor replies, the batches queued and being written and the
    /// largest batch are sized from it; peak memory stays near it plus a fixed overhead
    /// [default: 48 MiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(default)]
    pub memory_limit: Option<usize>,
    /// Write at most this many documents per second (`null`: unlimited).
    // The flag has no `null`: left out, the rate is unlimited.
    #[arg(
        long,
        value_name = "DOCS",
        help = "Write at most this many documents per second [default: unlimited]"
    )]
    #[serde(default)]
    pub rate: Option<f64>,
    /// Write at most this many bytes (of documents) per second (`null`: unlimited).
    #[arg(
        long,
        value_name = "BYTES",
        help = "Write at most this many bytes (of documents) per second [default: unlimited]"
    )]
    #[serde(default)]
    pub rate_bytes: Option<f64>,
    /// Adaptive mode: steer workers and rate to keep the mean batch latency under a target
    /// (`--workers` and `--rate` stay the upper bounds).
    #[command(flatten)]
    #[serde(default)]
    pub adaptive: Option<AdaptiveConfig>,
    /// The load guard: what holds the job while production servers are busy.
    #[command(flatten)]
    #[serde(flatten)]
    pub guard: GuardConfig,
    /// Ignore an earlier run's checkpoint (also a finished one) and copy everything again.
    #[arg(long)]
    #[serde(default, deserialize_with = "null_is_false")]
    pub restart: bool,
    /// Refuse documents larger than this many bytes (kept as dead letters), for destinations
    /// whose limit is below the source's [default: the destination's maxBsonObjectSize].
    #[arg(long, value_name = "BYTES")]
    #[serde(default)]
    pub max_document_bytes: Option<usize>,
    /// Compare source and destination document by document. A copy or move: `report` (also
    /// `true`, or the flag alone) compares once the documents are copied, as `verify` does. A
    /// sync verifies continuously while it follows the source: `repair` (its default) repairs
    /// what differs from the source, `report` only reports it, `off` does not verify.
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        default_missing_value = "report",
        value_name = "MODE",
        help = "Compare both sides document by document: after a copy (`report`, the flag \
                alone), continuously during a sync (`repair`, its default; `report`; `off`)"
    )]
    #[serde(
        default,
        deserialize_with = "verify_mode",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<VerifyMode>)]
    pub verify: Option<VerifyMode>,
    /// A sync's `can_commit` holds while it lags the source by at most this many seconds
    /// [default: 5].
    // The flag is `sync`'s own (`SyncArgs`): copy and move would refuse it.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_max_lag_secs: Option<f64>,
    /// After a sync's commit, watch the source this many seconds for writes past the commit
    /// point, reported as `writes_after_commit` [default: 10].
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_watch_secs: Option<f64>,
    /// A move that copies and verifies but deletes nothing from the source (a rehearsal).
    // Only `move` has the flag (`MoveArgs`); copy and sync would refuse it.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_source: bool,
    /// A move with a transform (the flag is `move`'s): the source's originals are deleted,
    /// their transformed copies kept.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_transform_move: bool,
    /// Journal every write (see `mongoferry journal`).
    #[command(flatten)]
    #[serde(default)]
    pub journal: Option<JournalConfig>,
    /// Transform each document on its way: a JSON file of namespace patterns, each with its
    /// steps (drop, rename, set, redact, hmac); see the README's Transforms.
    #[arg(long, value_name = "FILE", value_parser = TransformConfig::from_file)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub transform: Option<TransformConfig>,
    /// When to build the source's indexes at the destination: `after` the documents (the
    /// default), `before` them, or `none`.
    #[arg(long, value_enum)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexes: Option<IndexMode>,
    /// Drop the destination's collections and views of this job before copying (destructive:
    /// whatever they held is gone).
    #[arg(long)]
    #[serde(default, deserialize_with = "null_is_false")]
    pub drop: bool,
    /// A sync job (the flag is shown by `sync` alone): block writes at its commit on `source`,
    /// `destination` or `both`
    /// (`setUserWriteBlockMode`, mongod 6.0 and later). A server without it is refused when the
    /// job is submitted, before anything is written.
    #[arg(long, value_enum, value_name = "SIDE", hide = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_writes: Option<BlockWrites>,
    /// A reconcile (the flag is `reconcile`'s): delete the documents only the destination
    /// holds; without it they are kept and reported.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_extra: bool,
    /// A sync (the flag is `sync`'s): when its saved position is gone from the source's
    /// history, `fail` (the default: `--restart` copies again) or `reconcile` (a new position,
    /// every namespace reconciled, then followed from there).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_history_lost: Option<OnHistoryLost>,
    /// `copy` (the default) copies and ends; `sync` copies, then follows the source's changes
    /// until committed (`mongoferry sync`); `move` copies and deletes from the source;
    /// `reconcile` writes only what differs (`mongoferry reconcile`).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Fields of a request that no job has, reported by [`JobSpec::validate`].
    #[arg(skip)]
    #[serde(flatten, skip_serializing)]
    #[schema(ignore)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// The engine's [`Strategy`] as a value of `--strategy`: each variant's name and what it does.
impl clap::ValueEnum for Strategy {
    fn value_variants<'a>() -> &'a [Self] {
        &[Strategy::Ids, Strategy::Stream]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let (name, help) = match self {
            Strategy::Ids => (
                "ids",
                "The producer streams sorted `_id` batches; workers fetch each batch with `$in`",
            ),
            Strategy::Stream => (
                "stream",
                "The producer streams whole documents in `_id` order; workers only write",
            ),
        };
        debug_assert_eq!(name, self.to_string(), "the flag's value is the JSON one");
        Some(clap::builder::PossibleValue::new(name).help(help))
    }
}

/// The flags of the engine's [`AdaptiveConfig`], the command line's side of it: `JobSpec`
/// flattens the config, whose [`clap::Args`] these are.
#[derive(clap::Args)]
// The group's id is the config's, as when the config derived the flags.
#[group(id = "AdaptiveConfig")]
struct AdaptiveFlags {
    /// Adaptive mode: the mean batch latency (read by `_id` plus write) to stay under, in
    /// milliseconds.
    // Not required by itself: the whole group is optional; the other flags require this one.
    #[arg(
        long = "adaptive-target-ms",
        id = "adaptive_target_ms",
        value_name = "MS",
        required = false
    )]
    target_ms: f64,
    /// Most workers adaptive mode may use [default: the job's worker count].
    #[arg(
        long = "adaptive-max-workers",
        id = "adaptive_max_workers",
        value_name = "N",
        requires = "adaptive_target_ms"
    )]
    max_workers: Option<usize>,
    /// Milliseconds between adaptive decisions [default: 1000].
    #[arg(
        long = "adaptive-interval-ms",
        id = "adaptive_interval_ms",
        value_name = "MS",
        requires = "adaptive_target_ms"
    )]
    interval_ms: Option<u64>,
}

impl From<AdaptiveFlags> for AdaptiveConfig {
    fn from(flags: AdaptiveFlags) -> Self {
        let AdaptiveFlags {
            target_ms,
            max_workers,
            interval_ms,
        } = flags;
        AdaptiveConfig {
            target_ms,
            max_workers,
            interval_ms,
        }
    }
}

impl From<AdaptiveConfig> for AdaptiveFlags {
    fn from(config: AdaptiveConfig) -> Self {
        let AdaptiveConfig {
            target_ms,
            max_workers,
            interval_ms,
        } = config;
        AdaptiveFlags {
            target_ms,
            max_workers,
            interval_ms,
        }
    }
}

impl clap::FromArgMatches for AdaptiveConfig {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        AdaptiveFlags::from_arg_matches(matches).map(Into::into)
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        AdaptiveFlags::from_arg_matches_mut(matches).map(Into::into)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        let mut flags = AdaptiveFlags::from(*self);
        flags.update_from_arg_matches(matches)?;
        *self = flags.into();
        Ok(())
    }

    fn update_from_arg_matches_mut(
        &mut self,
        matches: &mut clap::ArgMatches,
    ) -> Result<(), clap::Error> {
        let mut flags = AdaptiveFlags::from(*self);
        flags.update_from_arg_matches_mut(matches)?;
        *self = flags.into();
        Ok(())
    }
}

impl clap::Args for AdaptiveConfig {
    fn group_id() -> Option<clap::Id> {
        AdaptiveFlags::group_id()
    }

    fn augment_args(cmd: clap::Command) -> clap::Command {
        AdaptiveFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        AdaptiveFlags::augment_args_for_update(cmd)
    }
}

/// How a job compares its two sides ([`JobSpec::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Compare nothing.
    Off,
    /// Compare, and report what differs.
    Report,
    /// Compare, and write again from the source what differs (a sync only).
    Repair,
}

/// `verify` as a mode, or as the boolean older clients and histories wrote: `true` reports,
/// `false` is off, `null` the mode's default.
fn verify_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<VerifyMode>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Flag(bool),
        Mode(VerifyMode),
    }
    Ok(match Option::<Written>::deserialize(d)? {
        None => None,
        Some(Written::Flag(true)) => Some(VerifyMode::Report),
        Some(Written::Flag(false)) => Some(VerifyMode::Off),
        Some(Written::Mode(mode)) => Some(mode),
    })
}

/// `null` reads as `false`: older histories and clients wrote `"verify": null`.
fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl From<Endpoints> for JobSpec {
    fn from(endpoints: Endpoints) -> Self {
        JobSpec {
            endpoints,
            ..JobSpec::default()
        }
    }
}

impl JobSpec {
    /// A job copying `namespaces` from `from` to `to`, every other setting at its default.
    pub fn new(from: &str, to: &str, namespaces: &[&str]) -> Self {
        JobSpec::from(Endpoints {
            from: from.to_string(),
            to: to.to_string(),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            ..Endpoints::default()
        })
    }

    /// The spec as shown and kept: secrets of the URIs replaced by `***`, and no `restart` (a
    /// job continued later must not start over).
    pub fn redacted(&self) -> JobSpec {
        let mut spec = self.clone();
        spec.endpoints.from = redact_uri(&spec.endpoints.from);
        spec.endpoints.to = redact_uri(&spec.endpoints.to);
        spec.restart = false;
        spec.unknown.clear();
        spec
    }

    /// True when a URI's secret was replaced by `***`: such a spec cannot run again.
    pub fn is_redacted(&self) -> bool {
        is_redacted(&self.endpoints.from) || is_redacted(&self.endpoints.to)
    }

    /// Checks the spec, reporting every problem at once.
    pub fn validate(&self) -> Result<CopySpec, SpecError> {
        let mut problems: Vec<String> = self
            .unknown
            .keys()
            .map(|k| format!("unknown field `{k}`"))
            .collect();
        let Endpoints {
            from,
            to,
            namespaces: texts,
            filter,
            exclude,
            connect_timeout_secs,
        } = &self.endpoints;
        // As the driver takes them (and as `from == to` compares them): `MONGODB://h` is
        // `mongodb://h`.
        let normalized = |uri: &String| crate::mongo::normalize_uri(uri).unwrap_or(uri.clone());
        let (from, to) = (&normalized(from), &normalized(to));
        for (field, uri) in [("from", from), ("to", to)] {
            problems.extend(uri_problem(field, uri));
        }
        let mode = self.mode.unwrap_or_default();
        let (namespaces, excludes) = parse_names(texts, exclude, mode, &mut problems);
        let filter = match filter.as_ref().map(Filter::to_document).transpose() {
            Ok(f) => f,
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let workers = self.workers.unwrap_or(DEFAULT_WORKERS);
        problems.extend(bounds::WORKERS.problem(workers));
        let readers = self.readers.unwrap_or(1);
        problems.extend(bounds::READERS.problem(readers));
        problems.extend(bounds::PARTITION_DOCS.problem_opt(self.partition_docs));
        // Partitions only pay with several readers to read them at once.
        let partition_docs = match self.partition_docs {
            Some(0) => None,
            Some(n) => Some(n),
            None => (readers > 1).then_some(crate::engine::partition::DEFAULT_PARTITION_DOCS),
        };
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        problems.extend(bounds::BATCH_SIZE.problem(batch_size));
        let memory_limit = self
            .memory_limit
            .unwrap_or(crate::engine::budget::DEFAULT_MEMORY_LIMIT);
        problems.extend(bounds::MEMORY_LIMIT.problem(memory_limit));
        let timeout = connect_timeout_secs.unwrap_or(10.0);
        problems.extend(bounds::CONNECT_TIMEOUT.problem(timeout));
        let limits = Limits {
            rate: self.rate,
            rate_bytes: self.rate_bytes,
        };
        problems.extend(limits.problems());
        if let Some(adaptive) = &self.adaptive {
            problems.extend(adaptive.problems());
        }
        problems.extend(bounds::MAX_DOCUMENT_BYTES.problem_opt(self.max_document_bytes));
        problems.extend(bounds::COMMIT_MAX_LAG_SECS.problem_opt(self.commit_max_lag_secs));
        problems.extend(bounds::COMMIT_WATCH_SECS.problem_opt(self.commit_watch_secs));
        problems.extend(self.mode_problems(mode));
        if let Some(journal) = &self.journal {
            problems.extend(journal.problems());
        }
        let guard = self.guard.settings(mode).unwrap_or_else(|e| {
            problems.extend(e);
            GuardSettings::default()
        });
        let transform = match self.transform.as_ref().map(TransformConfig::rules) {
            None => None,
            Some(Ok(rules)) => Some(rules),
            Some(Err(e)) => {
                problems.extend(e);
                None
            }
        };
        if !problems.is_empty() {
            return Err(SpecError(problems));
        }
        Ok(CopySpec {
            from: from.clone(),
            to: to.clone(),
            namespaces,
            filter,
            workers,
            readers,
            partition_docs,
            batch_size,
            strategy: self.strategy.unwrap_or_default(),
            mode,
            memory_limit,
            connect_timeout: std::time::Duration::from_secs_f64(timeout),
            limits,
            adaptive: self.adaptive,
            restart: self.restart,
            max_document_bytes: self.max_document_bytes,
            verify: self.verify.unwrap_or(match mode {
                Mode::Sync => VerifyMode::Repair,
                Mode::Copy | Mode::Move | Mode::Reconcile => VerifyMode::Off,
            }),
            commit_max_lag_secs: self
                .commit_max_lag_secs
                .unwrap_or(DEFAULT_COMMIT_MAX_LAG_SECS),
            commit_watch: std::time::Duration::from_secs_f64(
                self.commit_watch_secs.unwrap_or(DEFAULT_COMMIT_WATCH_SECS),
            ),
            keep_source: self.keep_source,
            journal: self.journal.clone(),
            exclude: excludes,
            indexes: self.indexes.unwrap_or_default(),
            drop: self.drop,
            block_writes: self.block_writes,
            delete_extra: self.delete_extra,
            on_history_lost: self.on_history_lost.unwrap_or_default(),
            guard,
            transform,
            transform_key: None,
        })
    }

    /// What the job's mode rules out among its other settings.
    fn mode_problems(&self, mode: Mode) -> Vec<String> {
        let mut problems = Vec::new();
        let verifies = self.verify.is_some_and(|v| v != VerifyMode::Off);
        if self.verify == Some(VerifyMode::Repair) && mode != Mode::Sync {
            problems.push(
                "verify: `repair` is for a sync, which repairs while it follows the source; a \
                 copy compares once, with `report`"
                    .into(),
            );
        }
        for (field, given) in [
            ("commit_max_lag_secs", self.commit_max_lag_secs),
            ("commit_watch_secs", self.commit_watch_secs),
        ] {
            if given.is_some() && mode != Mode::Sync {
                problems.push(format!("{field}: only a sync is committed"));
            }
        }
        if mode == Mode::Move && verifies && !self.keep_source {
            problems.push(
                "verify: after a move the source no longer holds what was moved, so there is \
                 nothing to compare; a move verifies each batch at the destination before it \
                 deletes (rehearse with `keep_source` and `verify`)"
                    .into(),
            );
        }
        if mode == Mode::Move && self.drop && self.restart {
            problems.push(
                "drop: a restarted move would drop its destination, which holds what earlier \
                 runs moved (and deleted from the source); run it again without `restart` to \
                 move what is left"
                    .into(),
            );
        }
        if self.block_writes.is_some() && mode != Mode::Sync {
            problems.push(
                "block_writes: only a sync job commits, so only a sync job blocks writes".into(),
            );
        }
        if mode == Mode::Move && self.transform.is_some() && !self.allow_transform_move {
            problems.push(
                "transform: a move deletes the source's originals, so only their transformed \
                 copies would be left; give --allow-transform-move (\"allow_transform_move\": \
                 true) if that is what you want"
                    .into(),
            );
        }
        if self.allow_transform_move && mode != Mode::Move {
            problems.push("allow_transform_move: only a move deletes from the source".into());
        }
        if self.keep_source && mode != Mode::Move {
            problems.push("keep_source: only a move deletes from the source".into());
        }
        if self.delete_extra && mode != Mode::Reconcile {
            problems.push(
                "delete_extra: only a reconcile deletes what the destination alone holds".into(),
            );
        }
        if self.on_history_lost.is_some() && mode != Mode::Sync {
            problems.push("on_history_lost: only a sync follows the source's history".into());
        }
        if mode == Mode::Reconcile && self.drop {
            problems.push(
                "drop: a reconcile keeps the destination and writes only what differs; copy \
                 with `drop` to replace it whole"
                    .into(),
            );
        }
        problems
    }
}

/// The namespaces and exclusions of a spec, parsed; what is wrong with them goes to `problems`.
fn parse_names(
    texts: &[String],
    exclude: &[String],
    mode: Mode,
    problems: &mut Vec<String>,
) -> (Vec<NsMapping>, Vec<Exclude>) {
    let mut excludes = Vec::new();
    for text in exclude {
        match text.parse::<Exclude>() {
            Ok(e) => excludes.push(e),
            Err(e) => problems.push(e),
        }
    }
    if texts.is_empty() {
        problems.push("namespaces: name at least one namespace (db.coll[:db2.coll2])".into());
    }
    let mut namespaces = Vec::new();
    for text in texts {
        match text.parse::<NsMapping>() {
            Ok(m) => namespaces.push(m),
            Err(e) => problems.push(e),
        }
    }
    problems.extend(mapping_problems(&namespaces, mode));
    (namespaces, excludes)
}

/// What the namespace mappings of a job in `mode` may not do: name one destination twice, write
/// into the server's own databases, or move out of them.
fn mapping_problems(namespaces: &[NsMapping], mode: Mode) -> Vec<String> {
    let mut problems = Vec::new();
    let mut destinations = std::collections::HashSet::new();
    for m in namespaces {
        let key = match m {
            NsMapping::Collection { dst, .. } => dst.to_string(),
            NsMapping::Database { dst_db, .. } => format!("{dst_db}.*"),
            NsMapping::Everything => "*".to_string(),
        };
        if !destinations.insert(key.clone()) {
            problems.push(format!("namespaces: destination {key} is named twice"));
        }
    }
    // Whether a job writes onto what it reads depends on the deployments, not on the URIs'
    // text: `run::overlap` asks the servers. The server's own databases are never written,
    // nor deleted from.
    for m in namespaces {
        let (src_db, dst_db) = match m {
            NsMapping::Collection { src, dst } => (&src.db, &dst.db),
            NsMapping::Database { src_db, dst_db } => (src_db, dst_db),
            NsMapping::Everything => continue,
        };
        if SYSTEM_DATABASES.contains(&dst_db.as_str()) {
            problems.push(format!(
                "namespaces: `{m}` writes into {dst_db}, the server's own database: it is \
                 never a destination"
            ));
        } else if mode == Mode::Move && SYSTEM_DATABASES.contains(&src_db.as_str()) {
            problems.push(format!(
                "namespaces: `{m}` would delete from {src_db}, the server's own database: \
                 a move never does"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(db: &str, c: &str) -> Namespace {
        Namespace::new(db, c)
    }

    #[test]
    fn the_command_line_names_each_field_by_its_flag() {
        let mut spec = JobSpec::new("mongodb://a", "mongodb://b", &["s.c"]);
        spec.mode = Some(Mode::Move);
        spec.verify = Some(VerifyMode::Report);
        spec.rate_bytes = Some(0.0);
        let error = spec.validate().unwrap_err();
        let line = error.for_command_line();
        assert!(line.contains("--rate-bytes: must be"), "{line}");
        assert!(line.contains("--verify: after a move"), "{line}");
        assert!(line.contains("`--keep-source` and `--verify`"), "{line}");
        // The API keeps its own names.
        assert!(error.to_string().contains("`keep_source`"), "{error}");
    }

    #[test]
    fn a_transform_and_its_key_are_part_of_the_jobs_key() {
        let rules = |steps: serde_json::Value| -> TransformRules {
            serde_json::from_value::<TransformConfig>(serde_json::json!({ "s.*": steps }))
                .unwrap()
                .rules()
                .unwrap()
        };
        let (one, two) = (HmacKey::new(b"one key"), HmacKey::new(b"two key"));
        let hashing = rules(serde_json::json!([{"hmac": "email"}]));
        let redacting = rules(serde_json::json!([{"redact": "email"}]));
        // The same transform and key: the same identity, each time.
        assert_eq!(hashing.identity(Some(&one)), hashing.identity(Some(&one)));
        assert_ne!(hashing.identity(Some(&one)), hashing.identity(Some(&two)));
        assert_ne!(hashing.identity(Some(&one)), redacting.identity(Some(&one)));
        // Without `hmac` steps the key changes nothing.
        assert_eq!(redacting.identity(Some(&one)), redacting.identity(None));
        // A constant's type counts: 1 and NumberLong(1) are other documents.
        let int = rules(serde_json::json!([{"set": "n", "value": 1}]));
        let long = rules(serde_json::json!([{"set": "n", "value": {"$numberLong": "1"}}]));
        assert_ne!(int.identity(None), long.identity(None));

        let mut spec = JobSpec::new("mongodb://a", "mongodb://b", &["s.c"])
            .validate()
            .unwrap();
        let (plain, _) = spec.job_key();
        spec.transform = Some(hashing);
        spec.transform_key = Some(one);
        let (masked, description) = spec.job_key();
        assert_ne!(plain, masked);
        assert!(description.contains("(transform "), "{description}");
        spec.transform_key = Some(two);
        assert_ne!(spec.job_key().0, masked);
    }

    #[test]
    fn parses_namespace_mappings() {
        assert_eq!(
            "shop.orders".parse::<NsMapping>().unwrap(),
            NsMapping::Collection {
                src: ns("shop", "orders"),
                dst: ns("shop", "orders")
            }
        );
        assert_eq!(
            "shop.customers:archive.customers"
                .parse::<NsMapping>()
                .unwrap(),
            NsMapping::Collection {
                src: ns("shop", "customers"),
                dst: ns("archive", "customers")
            }
        );
        // Collection names may contain dots.
        assert_eq!(
            "a.b.c:d.e.f".parse::<NsMapping>().unwrap(),
            NsMapping::Collection {
                src: ns("a", "b.c"),
                dst: ns("d", "e.f")
            }
        );
        for text in ["shop.*", "shop.*:shop", "shop.*:shop.*"] {
            assert_eq!(
                text.parse::<NsMapping>().unwrap(),
                NsMapping::Database {
                    src_db: "shop".into(),
                    dst_db: "shop".into()
                },
                "{text}"
            );
        }
    }

    #[test]
    fn everything_and_excludes() {
        assert_eq!("*".parse::<NsMapping>().unwrap(), NsMapping::Everything);
        assert!("*:other".parse::<NsMapping>().is_err());
        let ex = |p: &str| p.parse::<Exclude>().unwrap();
        let ns = |s: &str| {
            let (db, c) = s.split_once('.').unwrap();
            Namespace::new(db, c)
        };
        assert!(ex("shop.orders").matches(&ns("shop.orders")));
        assert!(!ex("shop.orders").matches(&ns("shop.orders_old")));
        assert!(ex("shop.*").matches(&ns("shop.orders")));
        assert!(!ex("shop.*").matches(&ns("shopping.orders")));
        assert!(ex("*.tmp_*").matches(&ns("a.tmp_1")));
        assert!(ex("s?op.*").matches(&ns("shop.x")));
        assert!("nodot".parse::<Exclude>().is_err());
    }

    #[test]
    fn rejects_bad_namespaces() {
        for text in [
            "",
            "shop",
            ".orders",
            "shop.",
            "sh op.orders",
            "shop.orders:archive",
            "shop.*:archive.orders",
            "shop.or$ders",
            "shop.system.users",
        ] {
            assert!(text.parse::<NsMapping>().is_err(), "{text:?} should fail");
        }
    }

    fn parse_filter(text: &str) -> Result<Document, String> {
        text.parse::<Filter>()?.to_document()
    }

    #[test]
    fn parses_extended_json_filters() {
        let f =
            parse_filter(r#"{"status": "closed", "n": {"$gt": {"$numberLong": "5"}}}"#).unwrap();
        assert_eq!(f.get_str("status").unwrap(), "closed");
        assert_eq!(
            f.get_document("n").unwrap().get_i64("$gt").unwrap(),
            5,
            "canonical Extended JSON keeps the type"
        );
        assert!(parse_filter("{status:").is_err());
        assert!(parse_filter("[1]").is_err());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "from": "http://x",
            "to": "",
            "namespaces": ["bad"],
            "filter": {"$bogus": {"$numberLong": "x"}},
            "workers": 0,
            "batch_size": 0,
            "journal": {"dir": "", "segment_bytes": 1},
            "colour": "blue",
        }))
        .unwrap();
        let err = spec.validate().unwrap_err();
        assert_eq!(err.0.len(), 9, "{err}");
        assert!(
            err.0.contains(&"unknown field `colour`".to_string()),
            "{err}"
        );
    }

    #[test]
    fn the_servers_own_databases_are_never_written() {
        for ns in ["db.c:admin.c", "db.*:local", "db.c:config.c"] {
            let err = JobSpec::new("mongodb://a", "mongodb://b", &[ns])
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("never a destination"), "{err}");
        }
        let mut moving = JobSpec::new("mongodb://a", "mongodb://b", &["admin.c:db.c"]);
        moving.mode = Some(Mode::Move);
        let err = moving.validate().unwrap_err();
        assert!(err.to_string().contains("a move never does"), "{err}");
        // Copying out of them is reading only.
        assert!(
            JobSpec::new("mongodb://a", "mongodb://b", &["admin.c:db.c"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn one_spec_from_the_command_line_the_api_and_the_history() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            spec: JobSpec,
        }
        let argv = [
            "copy",
            "--from",
            "mongodb://a",
            "--to",
            "mongodb://u:pw@b",
            "--ns",
            "s.c:d.c",
            "--filter",
            r#"{"n": {"$gt": 1}}"#,
            "--workers",
            "3",
            "--rate",
            "100",
            "--adaptive-target-ms",
            "250",
            "--journal",
            "j",
            "--verify",
            "--restart",
        ];
        let cli = <Args as clap::Parser>::try_parse_from(argv).unwrap().spec;
        let api: JobSpec = serde_json::from_value(serde_json::json!({
            "from": "mongodb://a", "to": "mongodb://u:pw@b", "namespaces": ["s.c:d.c"],
            "filter": {"n": {"$gt": 1}}, "workers": 3, "rate": 100.0,
            "adaptive": {"target_ms": 250.0}, "journal": {"dir": "j"}, "verify": true,
            "restart": true,
        }))
        .unwrap();
        assert_eq!(cli, api);
        let kept = serde_json::to_value(api.redacted()).unwrap();
        assert_eq!(kept["to"], "mongodb://u:***@b");
        assert_eq!(
            kept["restart"], false,
            "a continued job does not start over"
        );
        let back: JobSpec = serde_json::from_value(kept).unwrap();
        assert!(back.is_redacted());
        assert_eq!(back.workers, Some(3));
        // Without the adaptive and journal flags, no adaptive mode and no journal.
        let bare = [
            "copy",
            "--from",
            "mongodb://a",
            "--to",
            "mongodb://b",
            "--ns",
            "s.c",
        ];
        let bare = <Args as clap::Parser>::try_parse_from(bare).unwrap().spec;
        assert_eq!((bare.adaptive, bare.journal), (None, None));
        assert!(
            <Args as clap::Parser>::try_parse_from([
                "copy",
                "--from",
                "a",
                "--to",
                "b",
                "--ns",
                "s.c",
                "--journal-segment-bytes",
                "4096"
            ])
            .is_err(),
            "a segment size needs a journal"
        );
    }

    #[test]
    fn the_engines_strategy_and_adaptive_config_on_the_command_line() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            spec: JobSpec,
        }
        let parse = |extra: &[&str]| {
            let argv = ["copy", "--from", "a", "--to", "b", "--ns", "s.c"];
            <Args as clap::Parser>::try_parse_from(argv.iter().chain(extra)).map(|a| a.spec)
        };
        // Each strategy's flag value is its JSON value.
        for strategy in <Strategy as clap::ValueEnum>::value_variants() {
            let text = serde_json::to_value(strategy).unwrap();
            let spec = parse(&["--strategy", text.as_str().unwrap()]).unwrap();
            assert_eq!(spec.strategy, Some(*strategy));
        }
        assert!(parse(&["--strategy", "bogus"]).is_err());
        let spec = parse(&[
            "--adaptive-target-ms",
            "250",
            "--adaptive-max-workers",
            "6",
            "--adaptive-interval-ms",
            "500",
        ])
        .unwrap();
        assert_eq!(
            spec.adaptive,
            Some(AdaptiveConfig {
                target_ms: 250.0,
                max_workers: Some(6),
                interval_ms: Some(500),
            })
        );
        assert!(
            parse(&["--adaptive-max-workers", "6"]).is_err(),
            "the other adaptive flags need a target"
        );
    }
}
