//! A copy job from start to end: connect, resolve namespaces, run the engine, summarise.
//!
//! In: a validated [`CopySpec`]. Out: a [`CopySummary`] (what was copied, how fast), or the first
//! error. The command line and (later) the service both run jobs through here, so there is one
//! engine and one set of rules.

use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::adaptive::Adaptive;
use crate::config::{CopySpec, NsMapping, Strategy};
use crate::journal::writer::{JournalWriter, SegmentWriter};
use crate::journal::{JournalSummary, Journaled};
use crate::mongo::{self, describe, MongoError, Namespace, Side};
use crate::pipeline::{self, Control, CopyError, EngineOptions, MongoSink, MongoSource, NsTask};
use crate::stats::JobStats;
use crate::throttle::Throttle;

/// A job that is connected and knows exactly which namespaces it copies.
pub struct PreparedCopy {
    clients: [Client; 2],
    source: Arc<MongoSource>,
    sink: Arc<MongoSink>,
    tasks: Vec<Arc<NsTask>>,
    stats: Arc<JobStats>,
    options: EngineOptions,
    control: Arc<Control>,
    adaptive: Option<Arc<Adaptive>>,
    /// The journal, opened (and locked) but not yet written.
    journal: Option<SegmentWriter>,
    from: String,
    to: String,
}

/// What a finished copy did, as printed by `copy` (and `copy --json`).
#[derive(Debug, Clone, Serialize)]
pub struct CopySummary {
    pub from: String,
    pub to: String,
    pub strategy: Strategy,
    pub workers: usize,
    pub batch_size: usize,
    pub namespaces: Vec<NsSummary>,
    pub docs: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub docs_per_sec: f64,
    /// Peak resident memory of this process, where the OS tells it.
    pub peak_rss_bytes: Option<u64>,
    /// What this copy added to its journal, when it kept one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NsSummary {
    pub source: Namespace,
    pub destination: Namespace,
    pub docs: u64,
    pub bytes: u64,
}

/// Connects to both clusters and resolves the namespaces; nothing is written yet.
pub async fn prepare(spec: &CopySpec) -> Result<PreparedCopy, CopyError> {
    // Workers plus the producer and the counter each hold at most one connection.
    let pool = spec.workers as u32 + 2;
    let (source, destination) = tokio::join!(
        mongo::connect(Side::Source, &spec.from, pool, spec.connect_timeout),
        mongo::connect(Side::Destination, &spec.to, pool, spec.connect_timeout),
    );
    let (source, destination) = match (source, destination) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), other) | (other, Err(e)) => {
            if let Ok(client) = other {
                mongo::close(client).await;
            }
            return Err(e.into());
        }
    };
    let pairs = match resolve(&source, &spec.namespaces).await {
        Ok(pairs) => pairs,
        Err(e) => {
            mongo::close(source).await;
            mongo::close(destination).await;
            return Err(e);
        }
    };
    // Opened last, so that a copy that cannot start leaves no run in the journal.
    let journal = match &spec.journal {
        None => None,
        Some(config) => match JournalWriter::open(config.clone()).await {
            Ok(writer) => Some(writer),
            Err(e) => {
                mongo::close(source).await;
                mongo::close(destination).await;
                return Err(e.into());
            }
        },
    };
    let stats = Arc::new(JobStats::new(pairs, spec.workers));
    let tasks = NsTask::for_stats(&stats);
    Ok(PreparedCopy {
        clients: [source.clone(), destination.clone()],
        source: Arc::new(MongoSource::new(source, spec.filter.clone())),
        sink: Arc::new(MongoSink::new(destination)),
        tasks,
        stats,
        options: EngineOptions {
            batch_size: spec.batch_size,
            strategy: spec.strategy,
        },
        control: Arc::new(Control::with_throttle(
            spec.workers,
            Throttle::new(spec.limits),
        )),
        adaptive: spec.adaptive.map(|c| Arc::new(Adaptive::new(c))),
        journal,
        from: mongo::redact_uri(&spec.from),
        to: mongo::redact_uri(&spec.to),
    })
}

impl PreparedCopy {
    /// Live counters, for a progress display while [`run`](Self::run) works.
    pub fn stats(&self) -> Arc<JobStats> {
        self.stats.clone()
    }

    /// Runs under `control` (e.g. a job's, which the API changes) instead of its own.
    pub fn with_control(mut self, control: Arc<Control>) -> Self {
        self.control = control;
        self
    }

    /// Live controls: pause, resume, worker count.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&Namespace, &Namespace)> {
        self.tasks.iter().map(|t| (&t.source, &t.destination))
    }

    /// The adaptive mode's state, when the job asked for it.
    pub fn adaptive(&self) -> Option<Arc<Adaptive>> {
        self.adaptive.clone()
    }

    pub async fn run(self, cancel: CancellationToken) -> Result<CopySummary, CopyError> {
        // The adaptive controller watches the engine for as long as it runs, and is joined.
        let steering = CancellationToken::new();
        let controller = self.adaptive.clone().map(|adaptive| {
            tokio::spawn(adaptive.run(self.control.clone(), self.stats.clone(), steering.clone()))
        });
        let journal = self.journal.map(JournalWriter::start);
        let outcome = match &journal {
            // The journal sees every batch the destination acknowledged; the engine does not know.
            Some(journal) => {
                let sink = Arc::new(Journaled::new(self.sink, journal.sender()));
                pipeline::run(
                    self.source,
                    sink,
                    self.tasks,
                    self.options,
                    self.control.clone(),
                    self.stats.clone(),
                    cancel,
                )
                .await
            }
            None => {
                pipeline::run(
                    self.source,
                    self.sink,
                    self.tasks,
                    self.options,
                    self.control.clone(),
                    self.stats.clone(),
                    cancel,
                )
                .await
            }
        };
        steering.cancel();
        if let Some(controller) = controller {
            let _ = controller.await;
        }
        // Whatever the outcome, what was acknowledged is written out and the journal closed.
        let journal = match journal {
            None => Ok(None),
            Some(journal) => journal.finish().await.map(Some),
        };
        // Every task is joined, so these are the last handles of the clients.
        for client in self.clients {
            mongo::close(client).await;
        }
        if let (Err(copy), Err(journal)) = (&outcome, &journal) {
            // The copy's own error is the one reported; this one may say more about the journal.
            tracing::warn!("{journal} (the copy failed: {copy})");
        }
        outcome?;
        let journal = journal?;
        let snap = self.stats.snapshot();
        Ok(CopySummary {
            from: self.from,
            to: self.to,
            strategy: self.options.strategy,
            workers: self.control.workers(),
            batch_size: self.options.batch_size,
            namespaces: snap
                .namespaces
                .iter()
                .map(|n| NsSummary {
                    source: n.source.clone(),
                    destination: n.destination.clone(),
                    docs: n.docs,
                    bytes: n.bytes,
                })
                .collect(),
            docs: snap.docs,
            bytes: snap.bytes,
            seconds: snap.seconds,
            docs_per_sec: snap.docs_per_sec,
            peak_rss_bytes: peak_rss_bytes(),
            journal,
        })
    }
}

/// Turns `--ns` mappings into concrete (source, destination) pairs, checking the sources exist.
async fn resolve(
    source: &Client,
    mappings: &[NsMapping],
) -> Result<Vec<(Namespace, Namespace)>, CopyError> {
    let mut pairs = Vec::new();
    for mapping in mappings {
        match mapping {
            NsMapping::Collection { src, dst } => {
                let found = list_collections(source, &src.db, doc! { "name": &src.coll }).await?;
                match found.first() {
                    None => {
                        return Err(MongoError::NamespaceNotFound {
                            side: Side::Source,
                            ns: src.clone(),
                        }
                        .into())
                    }
                    Some((_, kind)) if kind != "collection" => {
                        return Err(CopyError::Mongo(MongoError::Command {
                            side: Side::Source,
                            ns: src.clone(),
                            op: "copy",
                            reason: format!("{src} is a {kind}, not a collection"),
                        }))
                    }
                    Some(_) => pairs.push((src.clone(), dst.clone())),
                }
            }
            NsMapping::Database { src_db, dst_db } => {
                let mut names: Vec<String> =
                    list_collections(source, src_db, doc! { "type": "collection" })
                        .await?
                        .into_iter()
                        .map(|(name, _)| name)
                        .filter(|name| !name.starts_with("system."))
                        .collect();
                if names.is_empty() {
                    return Err(MongoError::EmptyDatabase {
                        side: Side::Source,
                        db: src_db.clone(),
                    }
                    .into());
                }
                names.sort();
                pairs.extend(
                    names
                        .into_iter()
                        .map(|c| (Namespace::new(src_db, &c), Namespace::new(dst_db, c))),
                );
            }
        }
    }
    Ok(pairs)
}

/// (name, type) of the collections of `db` matching `filter`.
async fn list_collections(
    client: &Client,
    db: &str,
    filter: Document,
) -> Result<Vec<(String, String)>, CopyError> {
    let failed = |e: mongodb::error::Error| {
        CopyError::Mongo(MongoError::Command {
            side: Side::Source,
            ns: Namespace::new(db, "*"),
            op: "listCollections",
            reason: describe(&e),
        })
    };
    let specs: Vec<_> = client
        .database(db)
        .list_collections()
        .filter(filter)
        .await
        .map_err(failed)?
        .try_collect()
        .await
        .map_err(failed)?;
    Ok(specs
        .into_iter()
        .map(|s| {
            let kind = match s.collection_type {
                mongodb::results::CollectionType::Collection => "collection",
                mongodb::results::CollectionType::View => "view",
                mongodb::results::CollectionType::Timeseries => "timeseries collection",
                _ => "special collection",
            };
            (s.name, kind.to_string())
        })
        .collect())
}

/// The process's peak resident set size (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
