//! A dry run: what a copy would do, found by reading both clusters and writing nothing.
//!
//! In: a validated job spec. Out: a [`Plan`] — per namespace the source and destination names,
//! its estimated documents and bytes, the options and indexes the copy would create, and what
//! the destination holds now; the views; the problems found (options that differ block the copy
//! unless it drops; documents over the destination's size limit, index kinds some servers
//! refuse and views whose source is left out do not); and a time estimate from a short timed read
//! of the source, labelled as one.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::{Client, Database};
use serde::Serialize;

use super::copy::max_document_bytes;
use super::overlap::{self, Deployments};
use super::schema::{self, Selected, Selection};
use crate::engine::sink::MAX_DOCUMENT_BYTES;
use crate::engine::CopyError;
use crate::mongo::schema::{describe_index, estimated_count, special_kinds, Kind, Schema};
use crate::mongo::{self, describe, MongoError, Namespace, Side};
use crate::spec::{CopySpec, IndexMode, Mode};

/// What a copy of the spec would do.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub namespaces: Vec<NsPlan>,
    pub views: Vec<ViewPlan>,
    pub problems: Vec<Problem>,
    pub documents: u64,
    pub bytes: u64,
    /// How long the copy may take: an estimate, from a short read of the source.
    pub estimate: Option<Estimate>,
    /// The destination's namespaces are dropped first (`--drop`): what they hold is lost.
    pub drop: bool,
    /// When indexes are built.
    #[schema(value_type = String)]
    pub indexes: IndexMode,
    /// True when a problem stops the copy (it would refuse to start).
    pub blocked: bool,
    /// `copy`, `sync` or `move`.
    #[schema(value_type = String)]
    pub mode: Mode,
    /// A move (not a rehearsal): the documents are deleted from the source once verified.
    pub deletes_from_source: bool,
}

/// One collection the copy would copy.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NsPlan {
    pub source: String,
    pub destination: String,
    /// `collection` or `timeseries`.
    #[schema(value_type = String)]
    pub kind: Kind,
    /// Estimated documents (matching the filter) and their bytes.
    pub documents: u64,
    pub bytes: u64,
    pub average_document_bytes: u64,
    /// About how many `_id` ranges the collection would be read in (`--partition-docs`; 1:
    /// whole). The copy places them by a sample, so it may make a few more or fewer.
    pub partitions: usize,
    /// Options the destination collection is created with (canonical Extended JSON).
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Indexes to build (`name {key}`).
    pub indexes: Vec<String>,
    /// `absent`, `empty`, `holds N documents`, or what differs.
    pub destination_state: String,
    /// The transform's steps its documents go through, in order (`drop internal.notes`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<String>,
}

/// One view the copy would create after the collections.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ViewPlan {
    pub source: String,
    pub destination: String,
    pub view_on: String,
    pub destination_state: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub message: String,
    /// The copy would refuse to start because of it.
    pub blocks: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    pub seconds: f64,
    pub docs_per_sec: f64,
    /// What the estimate stands on.
    pub basis: String,
}

/// How long the source is read to time it.
const PROBE: Duration = Duration::from_secs(1);

/// Plans a copy of `spec`: connects to both sides, reads, writes nothing.
/// `state` is the database of the job's state store, when it is kept in MongoDB.
pub async fn plan(spec: &CopySpec, state: Option<&Database>) -> Result<Plan, CopyError> {
    let (src, dst) = mongo::connect_both(&spec.from, &spec.to, 2, spec.connect_timeout).await?;
    let planned = plan_with(&src, &dst, spec, state).await;
    mongo::close(src).await;
    mongo::close(dst).await;
    planned
}

async fn plan_with(
    src: &Client,
    dst: &Client,
    spec: &CopySpec,
    state: Option<&Database>,
) -> Result<Plan, CopyError> {
    let selection = schema::select(src, &spec.namespaces, &spec.exclude).await?;
    let existing = schema::destination(dst, &selection).await?;
    let deployments = Deployments::identify(src, dst, state).await?;
    let mut problems = refusals(spec, &selection, &existing, &deployments);
    let planner = Planner {
        src,
        dst,
        spec,
        limit: spec
            .max_document_bytes
            .unwrap_or(MAX_DOCUMENT_BYTES)
            .min(max_document_bytes(dst).await),
    };
    let mut namespaces = Vec::new();
    for (selected, existing) in selection.collections.iter().zip(&existing) {
        namespaces.push(
            planner
                .collection(selected, existing, &mut problems)
                .await?,
        );
    }
    let views = view_plans(&selection, &existing[selection.collections.len()..]);
    for orphan in schema::orphan_views(&selection) {
        problems.push(Problem {
            blocks: false,
            message: format!(
                "view {orphan} reads a collection the copy leaves out: at the destination it \
                 would show nothing until that collection is there"
            ),
        });
    }
    problems.extend(transform_notes(spec, &selection));
    let documents = namespaces.iter().map(|n| n.documents).sum();
    let bytes = namespaces.iter().map(|n| n.bytes).sum();
    let largest = selection
        .collections
        .iter()
        .zip(&namespaces)
        .max_by_key(|(_, n)| n.documents)
        .map(|(selected, _)| &selected.source);
    let estimate = match largest {
        Some(ns) => estimate(src, dst, ns, spec.filter.as_ref(), documents).await?,
        None => None,
    };
    Ok(Plan {
        blocked: problems.iter().any(|p| p.blocks),
        namespaces,
        views,
        problems,
        documents,
        bytes,
        estimate,
        drop: spec.drop,
        indexes: spec.indexes,
        mode: spec.mode,
        deletes_from_source: spec.mode == Mode::Move && !spec.keep_source,
    })
}

/// A transform pattern that matches no namespace of the job, and `hmac` steps with no key.
fn transform_notes(spec: &CopySpec, selection: &Selection) -> Vec<Problem> {
    let Some(rules) = &spec.transform else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for (pattern, matcher, _) in rules.patterns() {
        if !selection
            .collections
            .iter()
            .any(|c| matcher.matches(&c.source))
        {
            notes.push(Problem {
                blocks: false,
                message: format!("transform pattern {pattern} matches no namespace of the job"),
            });
        }
    }
    if rules.needs_key() && spec.transform_key.is_none() {
        notes.push(Problem {
            blocks: true,
            message: "the transform's hmac steps need a key: --transform-key-file or \
                      MONGOFERRY_TRANSFORM_KEY"
                .into(),
        });
    }
    notes
}

/// What would make the job refuse to start (or, with `--drop`, what it replaces).
fn refusals(
    spec: &CopySpec,
    selection: &Selection,
    existing: &[Option<Schema>],
    deployments: &Deployments,
) -> Vec<Problem> {
    let blocking = |message| Problem {
        blocks: true,
        message,
    };
    let mut problems: Vec<Problem> = overlap::problems(spec, selection, deployments)
        .into_iter()
        .map(blocking)
        .collect();
    if spec.mode == Mode::Move && !spec.keep_source {
        problems.extend(schema::unmovable(selection).into_iter().map(blocking));
    }
    if spec.mode == Mode::Reconcile {
        // A reconcile changes what `collMod` can in place; the rest stops it.
        let fixed = schema::fixed_conflicts(selection, existing);
        problems.extend(fixed.into_iter().map(blocking));
        return problems;
    }
    for conflict in schema::conflicts(selection, existing) {
        problems.push(Problem {
            blocks: !spec.drop,
            message: if spec.drop {
                format!("{conflict} (it is dropped first: --drop)")
            } else {
                format!("{conflict}: the copy refuses to start; --drop replaces it")
            },
        });
    }
    problems
}

/// Plans each collection of a job.
struct Planner<'a> {
    src: &'a Client,
    dst: &'a Client,
    spec: &'a CopySpec,
    /// The largest document the destination takes.
    limit: usize,
}

impl Planner<'_> {
    /// One collection's plan; what may go wrong with it is added to `problems`.
    async fn collection(
        &self,
        selected: &Selected,
        existing: &Option<Schema>,
        problems: &mut Vec<Problem>,
    ) -> Result<NsPlan, CopyError> {
        let (src, dst, spec) = (self.src, self.dst, self.spec);
        let (documents, bytes) = size(src, &selected.source, spec.filter.as_ref()).await?;
        let dst_count = match existing {
            Some(_) => Some(estimated_count(dst, Side::Destination, &selected.destination).await?),
            None => None,
        };
        let differs = existing
            .as_ref()
            .map(|there| selected.schema.differences(there, false))
            .filter(|d| !d.is_empty());
        let destination_state = match (existing, dst_count, differs) {
            (None, _, _) => "absent".to_string(),
            (Some(_), _, Some(d)) => format!("options differ: {}", d.join("; ")),
            (Some(_), Some(0), None) => "empty".to_string(),
            (Some(_), Some(n), None) => format!("holds {n} documents"),
            (Some(_), None, None) => unreachable!("counted when it exists"),
        };
        let indexes = match spec.indexes {
            IndexMode::None => vec![],
            _ => to_build(&selected.schema, existing.as_ref()),
        };
        problems.extend(special_index_notes(selected));
        if let Some(problem) = self.oversized(selected).await {
            problems.push(problem);
        }
        Ok(NsPlan {
            source: selected.source.to_string(),
            destination: selected.destination.to_string(),
            kind: selected.schema.kind,
            documents,
            bytes,
            average_document_bytes: bytes.checked_div(documents).unwrap_or(0),
            partitions: spec.partition_docs.map_or(1, |target| {
                crate::engine::partition::parts_for(documents, target)
            }),
            options: Bson::Document(selected.schema.options.clone()).into_canonical_extjson(),
            indexes,
            destination_state,
            transform: spec.transform.as_ref().map_or(Vec::new(), |rules| {
                rules
                    .steps_for(&selected.source)
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            }),
        })
    }

    /// Documents too large for the destination, which would be kept as dead letters.
    async fn oversized(&self, selected: &Selected) -> Option<Problem> {
        let limit = self.limit;
        if limit >= MAX_DOCUMENT_BYTES {
            return None;
        }
        let over = oversized(self.src, &selected.source, self.spec.filter.as_ref(), limit).await;
        let message = match over {
            Some(0) => return None,
            Some(n) => format!(
                "{n} documents of {} are larger than {limit} bytes: they would be kept as dead \
                 letters",
                selected.source
            ),
            None => format!(
                "documents of {} larger than {limit} bytes cannot be counted here; any would be \
                 kept as dead letters",
                selected.source
            ),
        };
        Some(Problem {
            blocks: false,
            message,
        })
    }
}

/// Indexes of kinds some servers refuse.
fn special_index_notes(selected: &Selected) -> Vec<Problem> {
    let mut notes = Vec::new();
    for index in &selected.schema.indexes {
        for kind in special_kinds(index) {
            if matches!(kind.as_str(), "text" | "hashed") {
                notes.push(Problem {
                    blocks: false,
                    message: format!(
                        "index {} of {} is a {kind} index, which some servers refuse \
                         (SecantusDB does); the copy then notes it and builds the others",
                        describe_index(index),
                        selected.source
                    ),
                });
            }
        }
    }
    notes
}

/// The views of a job, and what the destination holds of each.
fn view_plans(selection: &Selection, existing: &[Option<Schema>]) -> Vec<ViewPlan> {
    selection
        .views
        .iter()
        .zip(existing)
        .map(|(view, existing)| ViewPlan {
            source: view.source.to_string(),
            destination: view.destination.to_string(),
            view_on: view
                .schema
                .options
                .get_str("viewOn")
                .unwrap_or_default()
                .to_string(),
            destination_state: match existing {
                None => "absent".to_string(),
                Some(there) if there.differences(&view.schema, false).is_empty() => {
                    "exists, the same".to_string()
                }
                Some(_) => "exists, another definition".to_string(),
            },
        })
        .collect()
}

/// The source's indexes the destination lacks (by name).
fn to_build(source: &Schema, existing: Option<&Schema>) -> Vec<String> {
    source
        .indexes
        .iter()
        .filter(|index| {
            !existing.is_some_and(|there| {
                there
                    .indexes
                    .iter()
                    .any(|i| i.get_str("name").ok() == index.get_str("name").ok())
            })
        })
        .map(describe_index)
        .collect()
}

fn failed(side: Side, ns: &Namespace, op: &'static str, e: &mongodb::error::Error) -> MongoError {
    MongoError::Command {
        side,
        ns: ns.clone(),
        op,
        reason: describe(e),
    }
}

/// Documents (matching `filter`) and their bytes, estimated from the collection's statistics.
async fn size(
    client: &Client,
    ns: &Namespace,
    filter: Option<&Document>,
) -> Result<(u64, u64), MongoError> {
    let stats = client
        .database(&ns.db)
        .run_command(doc! { "collStats": &ns.coll })
        .await
        .ok();
    let number = |d: &Document, key: &str| -> Option<u64> {
        match d.get(key)? {
            Bson::Int32(n) => u64::try_from(*n).ok(),
            Bson::Int64(n) => u64::try_from(*n).ok(),
            Bson::Double(n) => Some(*n as u64),
            _ => None,
        }
    };
    let average = stats.as_ref().and_then(|s| number(s, "avgObjSize"));
    let documents = match filter {
        Some(filter) => client
            .database(&ns.db)
            .collection::<Document>(&ns.coll)
            .count_documents(filter.clone())
            .await
            .map_err(|e| failed(Side::Source, ns, "count", &e))?,
        None => match stats.as_ref().and_then(|s| number(s, "count")) {
            Some(n) => n,
            None => estimated_count(client, Side::Source, ns).await?,
        },
    };
    Ok((documents, documents * average.unwrap_or(0)))
}

/// Documents over `limit` bytes, where the server can count them (`$bsonSize`).
async fn oversized(
    client: &Client,
    ns: &Namespace,
    filter: Option<&Document>,
    limit: usize,
) -> Option<u64> {
    let pipeline = vec![
        doc! { "$match": filter.cloned().unwrap_or_default() },
        doc! { "$match": { "$expr": { "$gt": [{ "$bsonSize": "$$ROOT" }, limit as i64] } } },
        doc! { "$count": "n" },
    ];
    let mut cursor = client
        .database(&ns.db)
        .collection::<Document>(&ns.coll)
        .aggregate(pipeline)
        .await
        .ok()?;
    match cursor.try_next().await.ok()? {
        Some(found) => found.get_i32("n").ok().map(|n| n as u64),
        None => Some(0),
    }
}

/// Times a short read of `ns` (the job's largest collection), in `_id` order as the copy reads
/// it, and the destination's round trip; the copy cannot be faster than that read.
async fn estimate(
    src: &Client,
    dst: &Client,
    ns: &Namespace,
    filter: Option<&Document>,
    documents: u64,
) -> Result<Option<Estimate>, MongoError> {
    let started = Instant::now();
    let mut cursor = src
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll)
        .find(filter.cloned().unwrap_or_default())
        .sort(doc! { "_id": 1 })
        .await
        .map_err(|e| failed(Side::Source, ns, "find", &e))?;
    let mut read = 0u64;
    while started.elapsed() < PROBE {
        match cursor.try_next().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => break,
            Err(e) => return Err(failed(Side::Source, ns, "find", &e)),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let round_trip = {
        let at = Instant::now();
        let _ = dst.database("admin").run_command(doc! { "ping": 1 }).await;
        at.elapsed()
    };
    if read == 0 || secs <= 0.0 {
        return Ok(None);
    }
    let rate = read as f64 / secs;
    Ok(Some(Estimate {
        seconds: documents as f64 / rate,
        docs_per_sec: rate,
        basis: format!(
            "an estimate: {read} documents of {ns} read in {secs:.2} s (the first reply \
             included); the destination answers a ping in {:.1} ms; its writes are not measured \
             (a plan writes nothing)",
            round_trip.as_secs_f64() * 1000.0
        ),
    }))
}
