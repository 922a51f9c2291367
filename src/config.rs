//! Job specification: raw user input in, a validated [`CopySpec`] out.
//!
//! Every problem of a spec is collected and reported at once ([`SpecError`]), so an operator fixes
//! a command line or an API request in one go.

use std::fmt;
use std::str::FromStr;

use mongodb::bson::Document;
use serde::{Deserialize, Serialize};

use crate::adaptive::AdaptiveConfig;
use crate::journal::JournalConfig;
use crate::mongo::Namespace;
use crate::throttle::Limits;

/// How documents travel from the source to the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum Strategy {
    /// The producer streams sorted `_id` batches; workers fetch each batch with `$in`.
    Ids,
    /// The producer streams whole documents in `_id` order; workers only write.
    #[default]
    Stream,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Ids => "ids",
            Strategy::Stream => "stream",
        })
    }
}

/// One `--ns SRC[:DST]` argument. `db.*` names every collection of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsMapping {
    /// `db.coll[:db2.coll2]`
    Collection { src: Namespace, dst: Namespace },
    /// `db.*[:db2[.*]]`
    Database { src_db: String, dst_db: String },
}

impl fmt::Display for NsMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsMapping::Collection { src, dst } if src == dst => write!(f, "{src}"),
            NsMapping::Collection { src, dst } => write!(f, "{src}:{dst}"),
            NsMapping::Database { src_db, dst_db } if src_db == dst_db => write!(f, "{src_db}.*"),
            NsMapping::Database { src_db, dst_db } => write!(f, "{src_db}.*:{dst_db}.*"),
        }
    }
}

impl FromStr for NsMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
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

/// Parses a query in MongoDB Extended JSON (canonical or relaxed) into a BSON document.
pub fn parse_filter(text: &str) -> Result<Document, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("filter is not valid JSON: {e}"))?;
    match value {
        serde_json::Value::Object(map) => {
            Document::try_from(map).map_err(|e| format!("filter is not valid Extended JSON: {e}"))
        }
        _ => Err("filter must be a JSON object".into()),
    }
}

/// Defaults chosen by measurement (BENCHMARKS.md).
pub const DEFAULT_WORKERS: usize = 4;
pub const DEFAULT_BATCH_SIZE: usize = 500;
pub const MAX_WORKERS: usize = 256;
pub const MAX_BATCH_SIZE: usize = 100_000;

/// What is wrong with a connection string, if anything.
pub fn uri_problem(field: &str, uri: &str) -> Option<String> {
    if uri.is_empty() {
        Some(format!("{field}: a MongoDB URI is required"))
    } else if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
        Some(format!(
            "{field}: {} is not a mongodb:// or mongodb+srv:// URI",
            crate::mongo::redact_uri(uri)
        ))
    } else {
        None
    }
}

pub fn workers_problem(workers: usize) -> Option<String> {
    (workers == 0 || workers > MAX_WORKERS)
        .then(|| format!("workers: must be 1..={MAX_WORKERS}, got {workers}"))
}

pub fn batch_size_problem(batch_size: usize) -> Option<String> {
    (batch_size == 0 || batch_size > MAX_BATCH_SIZE)
        .then(|| format!("batch_size: must be 1..={MAX_BATCH_SIZE}, got {batch_size}"))
}

pub fn timeout_problem(secs: f64) -> Option<String> {
    (!(secs.is_finite() && secs > 0.0 && secs <= 3600.0))
        .then(|| format!("connect_timeout: must be between 0 and 3600 seconds, got {secs}"))
}

/// A copy job, validated: everything the engine needs and nothing it must re-check.
#[derive(Debug, Clone)]
pub struct CopySpec {
    pub from: String,
    pub to: String,
    pub namespaces: Vec<NsMapping>,
    pub filter: Option<Document>,
    pub workers: usize,
    pub batch_size: usize,
    pub strategy: Strategy,
    pub connect_timeout: std::time::Duration,
    pub limits: Limits,
    pub adaptive: Option<AdaptiveConfig>,
    /// Ignore the job's checkpoint and copy everything again.
    pub restart: bool,
    /// Refuse (as dead letters) documents larger than this, below the destination's own limit.
    pub max_document_bytes: Option<usize>,
    /// Compare source and destination document by document after the copy.
    pub verify: bool,
    pub journal: Option<JournalConfig>,
}

/// Every problem found in a job spec, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid job: {}", .0.join("; "))]
pub struct SpecError(pub Vec<String>);

/// The unvalidated job as a user wrote it (command line or JSON).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub from: String,
    pub to: String,
    pub namespaces: Vec<String>,
    pub filter: Option<String>,
    pub workers: Option<usize>,
    pub batch_size: Option<usize>,
    pub strategy: Option<Strategy>,
    pub connect_timeout_secs: Option<f64>,
    /// Documents per second, at most.
    pub rate: Option<f64>,
    /// Bytes per second, at most.
    pub rate_bytes: Option<f64>,
    /// Steer the load by write latency.
    pub adaptive: Option<AdaptiveConfig>,
    /// Ignore an earlier run's checkpoint and copy everything again.
    pub restart: Option<bool>,
    /// Documents larger than this (bytes) are kept as dead letters instead of written.
    pub max_document_bytes: Option<usize>,
    /// Verify the copy document by document when it is done.
    pub verify: Option<bool>,
    /// Journal every write to this directory.
    pub journal: Option<JournalConfig>,
}

impl RawSpec {
    pub fn validate(self) -> Result<CopySpec, SpecError> {
        let mut problems = Vec::new();
        for (field, uri) in [("from", &self.from), ("to", &self.to)] {
            problems.extend(uri_problem(field, uri));
        }
        if self.namespaces.is_empty() {
            problems.push("namespaces: name at least one namespace (db.coll[:db2.coll2])".into());
        }
        let mut namespaces = Vec::new();
        for text in &self.namespaces {
            match text.parse::<NsMapping>() {
                Ok(m) => namespaces.push(m),
                Err(e) => problems.push(e),
            }
        }
        let mut destinations = std::collections::HashSet::new();
        for m in &namespaces {
            let key = match m {
                NsMapping::Collection { dst, .. } => dst.to_string(),
                NsMapping::Database { dst_db, .. } => format!("{dst_db}.*"),
            };
            if !destinations.insert(key.clone()) {
                problems.push(format!("namespaces: destination {key} is named twice"));
            }
        }
        if self.from == self.to {
            for m in &namespaces {
                let same = match m {
                    NsMapping::Collection { src, dst } => src == dst,
                    NsMapping::Database { src_db, dst_db } => src_db == dst_db,
                };
                if same {
                    problems.push(format!(
                        "namespaces: {m} would copy onto itself (same server, same namespace)"
                    ));
                }
            }
        }
        let filter = match self.filter.as_deref().map(parse_filter).transpose() {
            Ok(f) => f,
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let workers = self.workers.unwrap_or(DEFAULT_WORKERS);
        problems.extend(workers_problem(workers));
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        problems.extend(batch_size_problem(batch_size));
        let timeout = self.connect_timeout_secs.unwrap_or(10.0);
        problems.extend(timeout_problem(timeout));
        let limits = Limits {
            rate: self.rate,
            rate_bytes: self.rate_bytes,
        };
        problems.extend(limits.problems());
        if let Some(adaptive) = &self.adaptive {
            problems.extend(adaptive.problems());
        }
        if self.max_document_bytes == Some(0) {
            problems.push("max_document_bytes: must be at least 1".into());
        }
        if let Some(journal) = &self.journal {
            problems.extend(journal.problems());
        }
        if !problems.is_empty() {
            return Err(SpecError(problems));
        }
        Ok(CopySpec {
            from: self.from,
            to: self.to,
            namespaces,
            filter,
            workers,
            batch_size,
            strategy: self.strategy.unwrap_or_default(),
            connect_timeout: std::time::Duration::from_secs_f64(timeout),
            limits,
            adaptive: self.adaptive,
            restart: self.restart.unwrap_or(false),
            max_document_bytes: self.max_document_bytes,
            verify: self.verify.unwrap_or(false),
            journal: self.journal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(db: &str, c: &str) -> Namespace {
        Namespace::new(db, c)
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
        let err = RawSpec {
            from: "http://x".into(),
            to: String::new(),
            namespaces: vec!["bad".into()],
            filter: Some("{".into()),
            workers: Some(0),
            batch_size: Some(0),
            journal: Some(JournalConfig {
                dir: String::new(),
                segment_bytes: Some(1),
            }),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.0.len(), 8, "{err}");
    }

    #[test]
    fn refuses_copy_onto_itself() {
        let err = RawSpec {
            from: "mongodb://h".into(),
            to: "mongodb://h".into(),
            namespaces: vec!["a.b".into()],
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("onto itself"), "{err}");
    }
}
