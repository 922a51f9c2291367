//! A replay from start to end: verify the journal, resolve namespaces, connect, run the engine.
//!
//! In: a validated [`ReplaySpec`]. Out: a [`ReplaySummary`], or the first error. The journal is
//! read and verified whole before anything is written: a corrupt journal fails here, naming the
//! file and byte offset; a torn tail is reported and the whole records before it are replayed.
//! The writes go through the copy engine and the same idempotent sink, so a replay can run again
//! at any time, under the same throttle and with the same progress display.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mongodb::Client;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::copy::{self, peak_rss_bytes, NsSummary};
use crate::bounds;
use crate::engine::control::throttle::{Limits, Throttle};
use crate::engine::source::journal::JournalSource;
use crate::engine::stats::JobStats;
use crate::engine::transform::HmacKey;
use crate::engine::{Control, CopyError, Engine, MongoSink};
use crate::journal::reader::{scan, Scan, TornTail};
use crate::journal::JournalError;
use crate::mongo::retry::{Retry, RetryPolicy};
use crate::mongo::{self, Namespace, Side};
use crate::spec::{self, NsMapping, SpecError, TransformRules};

/// A replay, validated.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    pub dir: PathBuf,
    pub to: String,
    /// Journal namespaces to replay and where to; empty: every namespace, under its own name.
    pub namespaces: Vec<NsMapping>,
    pub workers: usize,
    pub batch_size: usize,
    pub connect_timeout: Duration,
    pub limits: Limits,
    /// A transform the journal's documents go through on their way (`--transform`), and the
    /// key of its `hmac` steps. A journal of a transformed copy already holds what was written.
    pub transform: Option<(TransformRules, Option<HmacKey>)>,
}

impl ReplaySpec {
    /// Checks the user's input, reporting every problem at once.
    pub fn new(
        dir: PathBuf,
        to: String,
        namespaces: &[String],
        workers: usize,
        batch_size: usize,
        connect_timeout_secs: f64,
        limits: Limits,
    ) -> Result<ReplaySpec, SpecError> {
        let mut problems = Vec::new();
        problems.extend(spec::uri_problem("to", &to));
        let mut mappings = Vec::new();
        for text in namespaces {
            match text.parse::<NsMapping>() {
                Ok(m) => mappings.push(m),
                Err(e) => problems.push(e),
            }
        }
        problems.extend(bounds::WORKERS.problem(workers));
        problems.extend(bounds::BATCH_SIZE.problem(batch_size));
        problems.extend(bounds::CONNECT_TIMEOUT.problem(connect_timeout_secs));
        problems.extend(limits.problems());
        if !problems.is_empty() {
            return Err(SpecError(problems));
        }
        Ok(ReplaySpec {
            dir,
            to,
            namespaces: mappings,
            workers,
            batch_size,
            connect_timeout: Duration::from_secs_f64(connect_timeout_secs),
            limits,
            transform: None,
        })
    }
}

/// What a finished replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    pub journal: String,
    pub to: String,
    pub workers: usize,
    pub batch_size: usize,
    pub namespaces: Vec<NsSummary>,
    pub docs: u64,
    /// Documents the destination refused (logged with their reasons; the journal keeps them).
    pub failed: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub docs_per_sec: f64,
    /// Where the journal was torn, when it was: its records after that point were not replayed.
    pub torn_tail: Option<TornTail>,
    pub peak_rss_bytes: Option<u64>,
}

/// A replay that has verified its journal and is connected to the destination.
pub struct PreparedReplay {
    client: Client,
    /// The journal into the destination. Documents the destination refuses are counted and
    /// logged (its ledger keeps nothing); the journal still holds them.
    engine: Engine,
    /// The sink's retries, stopped when the replay is cancelled.
    retry: Retry,
    journal: String,
    to: String,
    torn_tail: Option<TornTail>,
}

/// Reads and verifies the whole journal off the async threads.
pub async fn verify(dir: PathBuf) -> Result<Scan, JournalError> {
    tokio::task::spawn_blocking(move || scan(&dir))
        .await
        .map_err(|e| JournalError::TaskFailed(format!("journal reader: {e}")))?
}

/// The (journal namespace, destination) pairs a replay writes.
pub fn resolve(
    scan: &Scan,
    mappings: &[NsMapping],
) -> Result<Vec<(Namespace, Namespace)>, JournalError> {
    let held: Vec<Namespace> = scan
        .namespaces
        .keys()
        .filter_map(|ns| {
            ns.split_once('.')
                .map(|(db, coll)| Namespace::new(db, coll))
        })
        .collect();
    if mappings.is_empty() {
        return Ok(held.into_iter().map(|ns| (ns.clone(), ns)).collect());
    }
    let not_found = |ns: String| JournalError::NamespaceNotFound {
        dir: scan.dir.clone(),
        ns,
        held: if held.is_empty() {
            "no records".to_string()
        } else {
            held.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    };
    let mut pairs = Vec::new();
    for mapping in mappings {
        match mapping {
            NsMapping::Collection { src, dst } => {
                if !held.contains(src) {
                    return Err(not_found(src.to_string()));
                }
                pairs.push((src.clone(), dst.clone()));
            }
            NsMapping::Everything => {
                pairs.extend(held.iter().map(|ns| (ns.clone(), ns.clone())));
            }
            NsMapping::Database { src_db, dst_db } => {
                let before = pairs.len();
                pairs.extend(
                    held.iter()
                        .filter(|ns| &ns.db == src_db)
                        .map(|ns| (ns.clone(), Namespace::new(dst_db, &ns.coll))),
                );
                if pairs.len() == before {
                    return Err(not_found(format!("{src_db}.*")));
                }
            }
        }
    }
    Ok(pairs)
}

/// Verifies the journal, resolves the namespaces and connects; nothing is written yet.
pub async fn prepare(spec: &ReplaySpec) -> Result<PreparedReplay, CopyError> {
    let scan = verify(spec.dir.clone()).await?;
    if let Some(corrupt) = scan.corruption_error() {
        return Err(corrupt.into());
    }
    let pairs = resolve(&scan, &spec.namespaces)?;
    let (rules, key) = match &spec.transform {
        Some((rules, key)) => (Some(rules), key.as_ref()),
        None => (None, None),
    };
    let transforms = copy::steps_by_destination(rules, key, &pairs)?;
    if !transforms.is_empty() {
        // Input to refuse (status 2), not a journal that failed.
        scan.refuse_transform_again()
            .map_err(|e| CopyError::Refused(vec![e.to_string()]))?;
    }
    let client = mongo::connect(
        Side::Destination,
        &spec.to,
        spec.workers as u32 + 2,
        spec.connect_timeout,
    )
    .await?;
    let stats = Arc::new(JobStats::new(pairs, spec.workers));
    let retry = Retry::new(RetryPolicy::default(), stats.retry.clone());
    let source = JournalSource::new(spec.dir.clone(), scan.namespaces.clone(), scan.records);
    let sink = MongoSink::new(client.clone()).with_retry(retry.clone());
    let sink = copy::sink_stack(Arc::new(sink), None, &transforms);
    let control = Control::with_throttle(spec.workers, Throttle::new(spec.limits));
    Ok(PreparedReplay {
        engine: Engine::new(Arc::new(source), sink, stats)
            .with_batch_size(spec.batch_size)
            .with_control(Arc::new(control)),
        retry,
        client,
        journal: spec.dir.display().to_string(),
        to: mongo::redact_uri(&spec.to),
        torn_tail: scan.torn_tail,
    })
}

impl PreparedReplay {
    pub fn stats(&self) -> Arc<JobStats> {
        self.engine.stats().clone()
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&Namespace, &Namespace)> {
        self.engine
            .tasks()
            .iter()
            .map(|t| (&t.source, &t.destination))
    }

    /// Set when the journal ends in a torn frame (its whole records are replayed).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    pub async fn run(self, cancel: CancellationToken) -> Result<ReplaySummary, CopyError> {
        let (stats, control) = (self.stats(), self.engine.control().clone());
        let batch_size = self.engine.batch_size();
        let engine = self.engine.run(cancel.clone());
        let outcome = self.retry.stopping_on(&cancel, engine).await;
        mongo::close(self.client).await;
        outcome?;
        let snap = stats.snapshot();
        Ok(ReplaySummary {
            docs_per_sec: snap.average_docs_per_sec(),
            journal: self.journal,
            to: self.to,
            workers: control.workers(),
            batch_size,
            namespaces: snap.namespaces.iter().map(NsSummary::from).collect(),
            docs: snap.docs,
            failed: snap.failed,
            bytes: snap.bytes,
            seconds: snap.seconds,
            torn_tail: self.torn_tail,
            peak_rss_bytes: peak_rss_bytes(),
        })
    }
}
