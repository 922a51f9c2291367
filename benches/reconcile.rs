//! A reconcile against its alternatives, side by side in one run (issue 29).
//!
//! `cargo bench --bench reconcile -- [--docs 100000] [--doc-size 1024] [--rounds 2]`
//!
//! Each round starts a fresh SecantusDB source and destination (a server slows as its history
//! grows), seeds the source with `--docs` documents of `--doc-size` bytes, copies them, then
//! drifts the source as a day of use would: 1% of the documents changed, 0.5% deleted, 0.5%
//! added. On that drift it times, in one process with the same settings:
//!
//! - **verify** alone: both sides read and compared, nothing written (the floor);
//! - **reconcile** (`delete_extra`): the same reads, and only what differs written;
//! - after the same drift again, **copy --restart --drop**: everything copied again.
//!
//! The order of reconcile and copy alternates between rounds. It prints each time, what the
//! reconcile wrote and deleted, and the ratios: copy / reconcile (goal: at least 2) and
//! reconcile / verify. Every run's result is checked: both sides equal after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::Client;
use mongoferry::engine::source::synthetic::sample_document;
use mongoferry::mongo::{self, Namespace, Side};
use mongoferry::run::copy::{self, CopySummary};
use mongoferry::run::schema;
use mongoferry::run::verify::{verify_all, Comparison};
use mongoferry::spec::{JobSpec, Mode};
use mongoferry::state::MemoryStore;
use mongoferry::testkit::TestServer;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Measure a reconcile against verify and a full copy")]
struct Args {
    /// Passed by `cargo bench` to every benchmark program.
    #[arg(long, hide = true)]
    bench: bool,
    #[arg(long, default_value_t = 100_000)]
    docs: u64,
    #[arg(long, default_value_t = 1024)]
    doc_size: usize,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// What one round measured, in seconds, and what the reconcile did.
struct Round {
    verify: f64,
    reconcile: f64,
    copy: f64,
    written: u64,
    deleted: u64,
    drifted: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "reconcile: {} docs of {} B, drift 1% changed + 0.5% deleted + 0.5% added; {} rounds; \
         on {} cores",
        args.docs,
        args.doc_size,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let (source, destination) = (
            TestServer::start().context("start SecantusDB (run scripts/setup-test-env.sh)")?,
            TestServer::start()?,
        );
        let measured = runtime.block_on(one_round(
            &source.uri,
            &destination.uri,
            &args,
            round % 2 == 1,
        ))?;
        println!(
            "round {}: verify {:.2} s, reconcile {:.2} s ({} written, {} deleted of {} drifted), \
             copy --restart --drop {:.2} s",
            round + 1,
            measured.verify,
            measured.reconcile,
            measured.written,
            measured.deleted,
            measured.drifted,
            measured.copy
        );
        rounds.push(measured);
    }
    let median = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (verify, reconcile, copy) = (
        median(|r| r.verify),
        median(|r| r.reconcile),
        median(|r| r.copy),
    );
    let rate = |secs: f64| args.docs as f64 / secs;
    println!(
        "| figure (median of {} rounds) | seconds | docs/s |",
        rounds.len()
    );
    println!("|---|---:|---:|");
    println!(
        "| verify (reads both sides) | {verify:.2} | {:.0} |",
        rate(verify)
    );
    println!(
        "| reconcile --delete-extra | {reconcile:.2} | {:.0} |",
        rate(reconcile)
    );
    println!("| copy --restart --drop | {copy:.2} | {:.0} |", rate(copy));
    println!(
        "copy / reconcile: {:.2} (goal: at least 2); reconcile / verify: {:.2}",
        copy / reconcile,
        reconcile / verify
    );
    Ok(())
}

async fn one_round(from: &str, to: &str, args: &Args, copy_first: bool) -> Result<Round> {
    let ns = Namespace::new("bench", "docs");
    let source = mongo::connect(Side::Source, from, 4, Duration::from_secs(10)).await?;
    let destination = mongo::connect(Side::Destination, to, 4, Duration::from_secs(10)).await?;
    seed(&source, &ns, args.docs, args.doc_size).await?;
    run(from, to, Mode::Copy, false).await?;
    let mut drift = Drift {
        next: args.docs,
        size: args.doc_size,
        round: 0,
    };
    let mut measured = Round {
        verify: 0.0,
        reconcile: 0.0,
        copy: 0.0,
        written: 0,
        deleted: 0,
        drifted: 0,
    };
    for step in 0..2 {
        measured.drifted = drift.apply(&source, &ns, args.docs).await?;
        if (step == 0) == copy_first {
            let started = Instant::now();
            run(from, to, Mode::Copy, true).await?;
            measured.copy = started.elapsed().as_secs_f64();
        } else {
            measured.verify = verify(&source, &destination, &ns).await?.0;
            let started = Instant::now();
            let summary = run(from, to, Mode::Reconcile, false).await?;
            measured.reconcile = started.elapsed().as_secs_f64();
            let done = summary.reconcile.context("a reconcile's counts")?;
            (measured.written, measured.deleted) = (done.written, done.deleted);
        }
        if !verify(&source, &destination, &ns).await?.1 {
            bail!("the sides differ after step {step}");
        }
    }
    mongo::close(source).await;
    mongo::close(destination).await;
    Ok(measured)
}

/// A job of `mode` over the bench's namespace; a copy with `again`: `--restart --drop`.
async fn run(from: &str, to: &str, mode: Mode, again: bool) -> Result<CopySummary> {
    let mut spec = JobSpec::new(from, to, &["bench.docs"]);
    spec.mode = Some(mode);
    spec.restart = again;
    spec.drop = again;
    spec.delete_extra = mode == Mode::Reconcile;
    let spec = spec.validate()?;
    let store = Arc::new(MemoryStore::default());
    Ok(copy::prepare(&spec, store)
        .await?
        .run(CancellationToken::new())
        .await?)
}

/// Seconds to compare both sides, and whether they are equal.
async fn verify(source: &Client, destination: &Client, ns: &Namespace) -> Result<(f64, bool)> {
    let started = Instant::now();
    let mapping = ns.to_string().parse().map_err(anyhow::Error::msg)?;
    let selection = schema::select(source, &[mapping], &[]).await?;
    let compared = Comparison {
        selection: &selection,
        filter: None,
        show: 3,
        schema: None,
        transforms: &Default::default(),
    };
    let report = verify_all(source, destination, &compared, &CancellationToken::new()).await?;
    Ok((started.elapsed().as_secs_f64(), report.identical))
}

async fn seed(client: &Client, ns: &Namespace, n: u64, size: usize) -> Result<()> {
    let coll = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    coll.drop().await?;
    let mut next = 0;
    while next < n {
        let end = (next + 5_000).min(n);
        let docs: Vec<RawDocumentBuf> = (next..end)
            .map(|i| sample_document(i as i64, size))
            .collect();
        coll.insert_many(docs).await?;
        next = end;
    }
    Ok(())
}

/// A day of use at the source: 1% of the documents changed, 0.5% deleted, 0.5% added.
struct Drift {
    next: u64,
    size: usize,
    round: i64,
}

impl Drift {
    /// Applies the drift; how many documents it touched.
    async fn apply(&mut self, client: &Client, ns: &Namespace, docs: u64) -> Result<u64> {
        self.round += 1;
        let coll = client.database(&ns.db).collection::<Document>(&ns.coll);
        let (changed, deleted, added) = (docs / 100, docs / 200, docs / 200);
        let mut rng = fastrand::Rng::with_seed(self.round as u64);
        let mut touched = 0;
        for _ in 0..changed {
            let id = rng.i64(0..self.next as i64);
            let hit = coll
                .update_one(doc! { "_id": id }, doc! { "$set": { "drift": self.round } })
                .await?;
            touched += hit.modified_count;
        }
        for _ in 0..deleted {
            let id = rng.i64(0..self.next as i64);
            touched += coll.delete_one(doc! { "_id": id }).await?.deleted_count;
        }
        let raw = client
            .database(&ns.db)
            .collection::<RawDocumentBuf>(&ns.coll);
        let new: Vec<RawDocumentBuf> = (self.next..self.next + added)
            .map(|i| sample_document(i as i64, self.size))
            .collect();
        raw.insert_many(new).await?;
        self.next += added;
        Ok(touched + added)
    }
}
