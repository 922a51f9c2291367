//! The benchmark: mongoferry against the servers' own capacity, measured side by side in one run.
//!
//! `cargo bench --bench bench -- [--docs N] [--doc-size B] [--workers W] [--batch-size S]`
//!
//! It starts two SecantusDB servers (source and destination) and prints:
//! - the roofline: the source's raw full-scan rate and the destination's raw bulk-insert rate for
//!   the same documents and batch size (a copy cannot beat the smaller of the two);
//! - the copy rate of each strategy and its ratio to the roofline;
//! - the peak memory of a `mongoferry copy` process for two collection sizes;
//! - the engine ceiling: the same pipeline from a synthetic source into a null sink.
//!
//! `--journal` measures only what journaling costs: the default strategy's copy without and with
//! a journal, in alternating rounds on fresh destinations, and the journal's bytes per document.
//!
//! `--sync` measures only live sync (`mongoferry sync`, in-process): the source's own rate for a
//! mixed write load from one client, then that load at rising paced rates while the sync follows
//! it (its lag, events applied, this process's memory), and the time to converge once the writes
//! stop, before a commit whose result is checked against the source.
//!
//! `--move` measures only move (`mode: move` with a filter, in-process): on collections of
//! `--move-docs` documents, half of them matching `{"old": true}`, a plain filtered copy of the
//! selection, a rehearsal (`keep_source`: copy and read-back verify, nothing deleted) and a move
//! (copy, verify, delete from the source in one transaction per batch), in `--rounds` rounds of
//! alternating order, each run on a freshly seeded source collection into a fresh destination:
//! documents per second and the ratio to the plain copy; then one move under `--move-rate`: the
//! delete rate it achieved against the limit. Every run's outcome is checked (the destination
//! holds the whole selection; after a move the source holds none of it and all the rest).
//!
//! `--seed-peer` measures only `--strategy ids` against the seed's design reproduced in Python
//! (`--peer-script`, run with `--peer-python`), in alternating rounds on fresh destinations.
//!
//! `--readers` measures only `--readers`: several collections copied with one reader and with
//! `--readers-n`, in alternating rounds on fresh destinations.
//!
//! `--partitions` measures only partitions: one collection of `--docs` documents copied with a
//! single cursor and in partitions of `--docs / (2 × --partitions-readers)` documents read by
//! `--partitions-readers` readers, in alternating rounds on fresh destinations.
//!
//! `--processes` measures only sharing a job: the same partitioned `mongoferry copy` command
//! run as one process and as `--processes-n` processes on one MongoDB state (a third server),
//! in alternating rounds on fresh destinations, from the first start to the last exit.
//!
//! `--state-store` measures only the embedded state store: a job of `--state-partitions`
//! partitions saved again and again with one partition moved each time (what the checkpointer
//! does every 0.1 s), in the SQLite store and in the first format (one JSON file read, parsed and
//! rewritten whole per save, as that store did), with no server.
//!
//! Results go to BENCHMARKS.md with the command that produced them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::TryStreamExt;
use mongodb::bson::{doc, rawdoc, RawDocumentBuf};
use mongodb::options::Hint;
use mongodb::Client;
use mongoferry::engine::control::adaptive::AdaptiveConfig;
use mongoferry::engine::control::throttle::{Limits, Throttle};
use mongoferry::engine::sink::{Journaled, NullSink};
use mongoferry::engine::source::synthetic::{sample_document, SyntheticSource};
use mongoferry::engine::stats::{JobStats, SyncPhase};
use mongoferry::engine::{
    Control, CopyError, Engine, MongoSink, MongoSource, Sink, Source, Strategy,
};
use mongoferry::journal::writer::JournalWriter;
use mongoferry::journal::{JournalConfig, JournalSummary};
use mongoferry::mongo::{self, Namespace, Side};
use mongoferry::run::copy;
use mongoferry::spec::{JobSpec, Mode};
use mongoferry::testkit::{FaultProxy, TestServer};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Measure mongoferry against the servers' own capacity")]
struct Args {
    /// Passed by `cargo bench` to every benchmark program; nothing to do with it here.
    #[arg(long, hide = true)]
    bench: bool,
    /// Documents in the copied collection.
    #[arg(long, default_value_t = 100_000)]
    docs: u64,
    /// Size of each document in bytes.
    #[arg(long, default_value_t = 1024)]
    doc_size: usize,
    /// Workers of the copy (and concurrent inserters of the raw insert measurement).
    #[arg(long, default_value_t = mongoferry::engine::DEFAULT_WORKERS)]
    workers: usize,
    /// Documents per batch, for the copy and the raw measurements alike.
    #[arg(long, default_value_t = mongoferry::engine::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Strategies to measure.
    #[arg(long, value_delimiter = ',', default_values = ["stream", "ids"])]
    strategies: Vec<Strategy>,
    /// Collection sizes whose copy's peak memory is measured (0 to skip).
    #[arg(long, value_delimiter = ',', default_values = ["100000", "400000"])]
    memory_docs: Vec<u64>,
    /// Memory budgets (`--memory-limit`, bytes) the memory measurement copies with: the first is
    /// the one whose growth is reported; the others show what a larger budget buys in speed.
    #[arg(long, value_delimiter = ',', default_values = ["50331648", "268435456"])]
    memory_limits: Vec<usize>,
    /// Documents pushed through the engine ceiling measurement.
    #[arg(long, default_value_t = 2_000_000)]
    ceiling_docs: u64,
    /// Measure only the throttle: limits held over 10 s windows, and how fast a change applies.
    #[arg(long)]
    throttle: bool,
    /// Trace only adaptive mode: a copy through a latency-injecting proxy, slowed then relieved.
    #[arg(long)]
    adaptive: bool,
    /// Measure only journaling: the copy with and without `--journal`, in alternating rounds.
    #[arg(long)]
    journal: bool,
    /// Measure only index builds: a copy of a collection with three secondary indexes with
    /// `--indexes after` against `--indexes before`, in alternating rounds.
    #[arg(long)]
    indexes: bool,
    /// Measure only live sync: the lag of a sync under a mixed write load at rising rates, and
    /// the time it takes to converge once the writes stop.
    #[arg(long)]
    sync: bool,
    /// Documents in the synced collection (before the load changes it).
    #[arg(long, default_value_t = 20_000)]
    sync_docs: u64,
    /// Target rates of the sync measurement's steps, as fractions of the single client's rate.
    #[arg(long, value_delimiter = ',', default_values = ["0.25", "0.5", "0.75", "1.0", "1.25", "1.5"])]
    sync_steps: Vec<f64>,
    /// Concurrent writing clients for the steps at or above the single client's rate (one client
    /// cannot reach its own rate once the sync shares the server).
    #[arg(long, default_value_t = 4)]
    sync_clients: usize,
    /// The sync measurement's load writes with retryable writes (the driver's default; on
    /// SecantusDB the source's rate then decays through the run).
    #[arg(long)]
    sync_retryable_writes: bool,
    /// Measure only move: a filtered move against a plain filtered copy of the same selection,
    /// and a move under a rate limit.
    #[arg(long = "move")]
    move_: bool,
    /// Documents in each collection the move measurement seeds; half of them (the even
    /// `_id`s) match its filter `{"old": true}`.
    #[arg(long, default_value_t = 20_000)]
    move_docs: u64,
    /// The rate limit (`rate`, docs/s) of the move measurement's limited move.
    #[arg(long, default_value_t = 500.0)]
    move_rate: f64,
    /// Measure only peak memory (both kinds of documents, every `--memory-docs` and
    /// `--memory-limits`) and the fixed overhead.
    #[arg(long)]
    memory_only: bool,
    /// Where the journal measurement writes its journals [default: the system's temp directory].
    #[arg(long, value_name = "DIR")]
    journal_dir: Option<std::path::PathBuf>,
    /// Padding of the journal measurement's documents: `x` (the sample documents' repeated
    /// byte, which compresses to almost nothing) or `random` (incompressible: the worst case).
    #[arg(long, value_enum, default_value = "x")]
    padding: Padding,
    /// Rate limits (docs/s) the throttle measurement holds.
    #[arg(long, value_delimiter = ',', default_values = ["500", "1000", "2000"])]
    throttle_rates: Vec<f64>,
    /// Rounds of the raw insert and the default strategy's copy (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Measure only the `ids` strategy against the seed's design reproduced in Python
    /// (`--peer-script`: 4 processes, one reused client each, 50 ids per queue message, `$in`
    /// fetch, upsert), in alternating rounds on fresh destinations.
    #[arg(long)]
    seed_peer: bool,
    /// Measure only `--readers`: `--readers-collections` collections of `--docs` documents
    /// copied whole with one reader and with `--readers-n`, in alternating rounds.
    #[arg(long)]
    readers: bool,
    #[arg(long, default_value_t = 4)]
    readers_n: usize,
    #[arg(long, default_value_t = 4)]
    readers_collections: usize,
    /// Measure only partitions: one collection read with a single cursor and in partitions by
    /// `--partitions-readers` readers, in alternating rounds.
    #[arg(long)]
    partitions: bool,
    #[arg(long, default_value_t = 4)]
    partitions_readers: usize,
    /// Measure only a job shared by `--processes-n` processes on one MongoDB state against the
    /// same command in one process, in alternating rounds.
    #[arg(long)]
    processes: bool,
    #[arg(long, default_value_t = 3)]
    processes_n: usize,
    /// Measure only the embedded state store's save of a job of `--state-partitions`
    /// partitions, against the first format's.
    #[arg(long)]
    state_store: bool,
    #[arg(long, default_value_t = 5000)]
    state_partitions: u32,
    /// The seed's design reproduced in Python.
    #[arg(long, default_value = "../shared/peers/seed_design.py")]
    peer_script: std::path::PathBuf,
    /// A Python with pymongo, for the peer.
    #[arg(long, default_value = ".venv/bin/python")]
    peer_python: std::path::PathBuf,
    /// Use these servers instead of starting SecantusDB (e.g. two real mongod).
    #[arg(long, requires = "to")]
    from: Option<String>,
    #[arg(long, requires = "from")]
    to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Padding {
    X,
    Random,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    // Servers die with the thread that started them: they are started here, on the main thread.
    let source_server = match &args.from {
        Some(_) => None,
        None => {
            Some(TestServer::start().context("start SecantusDB (run scripts/setup-test-env.sh)")?)
        }
    };
    let from = args
        .from
        .clone()
        .unwrap_or_else(|| source_server.as_ref().unwrap().uri.clone());
    let mut bench = Bench {
        args,
        runtime,
        from,
        destination: None,
    };
    let outcome = bench.run();
    drop(bench);
    drop(source_server);
    outcome
}

struct Bench {
    args: Args,
    runtime: tokio::runtime::Runtime,
    from: String,
    destination: Option<TestServer>,
}

impl Bench {
    /// A destination in the same state for every write measurement: a new test server (or, with
    /// `--to`, the given server with the bench's collections dropped). A test server that has
    /// written and dropped a collection before inserts markedly slower than a new one.
    fn fresh_destination(&mut self) -> Result<String> {
        if let Some(to) = self.args.to.clone() {
            self.runtime.block_on(async {
                let client = connect(Side::Destination, &to).await?;
                client.database("bench").drop().await?;
                mongo::close(client).await;
                anyhow::Ok(())
            })?;
            return Ok(to);
        }
        self.destination = None;
        let server = TestServer::start()?;
        let uri = server.uri.clone();
        self.destination = Some(server);
        Ok(uri)
    }

    /// The destination's raw bulk-insert rate for these documents, on a fresh destination.
    fn raw_insert_rate(&mut self, docs: &[RawDocumentBuf]) -> Result<f64> {
        let to = self.fresh_destination()?;
        let (batch_size, workers) = (self.args.batch_size, self.args.workers);
        self.runtime.block_on(async {
            let dst = connect(Side::Destination, &to).await?;
            let rate = raw_insert(&dst, docs, batch_size, workers).await;
            mongo::close(dst).await;
            rate
        })
    }

    /// The engine's copy rate of `data` with `strategy`, into a fresh destination.
    fn copy_rate(&mut self, src: &Client, data: &Namespace, strategy: Strategy) -> Result<f64> {
        let to = self.fresh_destination()?;
        let args = &self.args;
        let (docs, workers, batch_size) = (args.docs, args.workers, args.batch_size);
        self.runtime.block_on(async {
            let dst = connect(Side::Destination, &to).await?;
            let rate = copy_rate(src, &dst, data, docs, workers, batch_size, strategy).await;
            mongo::close(dst).await;
            rate
        })
    }

    fn run(&mut self) -> Result<()> {
        if self.args.throttle {
            return self.run_throttle();
        }
        if self.args.adaptive {
            return self.run_adaptive();
        }
        if self.args.journal {
            return self.run_journal();
        }
        if self.args.indexes {
            return self.run_indexes();
        }
        if self.args.sync {
            return self.run_sync();
        }
        if self.args.seed_peer {
            return self.run_seed_peer();
        }
        if self.args.readers {
            return self.run_readers();
        }
        if self.args.partitions {
            return self.run_partitions();
        }
        if self.args.state_store {
            return self.run_state_store();
        }
        if self.args.processes {
            return self.run_processes();
        }
        if self.args.move_ {
            return self.run_move();
        }
        if self.args.memory_only {
            let from = self.from.clone();
            let src = self.runtime.block_on(connect(Side::Source, &from))?;
            let outcome = self.memory(&src, &from);
            self.runtime.block_on(mongo::close(src));
            return outcome;
        }
        let args = &self.args;
        println!(
            "mongoferry bench: {} docs of {} B, {} workers, batch {}, on {} cores",
            args.docs,
            args.doc_size,
            args.workers,
            args.batch_size,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let (workers, batch_size, docs_n, doc_size) =
            (args.workers, args.batch_size, args.docs, args.doc_size);
        let from = self.from.clone();
        let data = Namespace::new("bench", "docs");
        let src = self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            seed(&src, &data, docs_n, doc_size).await?;
            anyhow::Ok(src)
        })?;

        // Roofline, measured on the same documents and batch size as the copy.
        let (scan_rate, docs) = self.runtime.block_on(raw_scan(&src, &data, batch_size))?;
        // The raw insert and the default strategy's copy are measured in rounds, alternating
        // which goes first, so that this noisy machine's drift hits both alike; medians count.
        let default_strategy = Strategy::default();
        let mut rounds = Vec::new();
        for round in 1..=self.args.rounds {
            let (mut insert, mut copy) = (0.0, 0.0);
            for insert_now in [round % 2 == 1, round % 2 == 0] {
                if insert_now {
                    insert = self.raw_insert_rate(&docs)?;
                } else {
                    copy = self.copy_rate(&src, &data, default_strategy)?;
                }
            }
            let ratio = copy / scan_rate.min(insert);
            println!("round {round}: raw insert {insert:.0} docs/s, copy ({default_strategy}) {copy:.0} docs/s, ratio {ratio:.2}");
            rounds.push((insert, copy, ratio));
        }
        let insert_rate = median(rounds.iter().map(|r| r.0));
        let default_copy = median(rounds.iter().map(|r| r.1));
        let default_ratio = median(rounds.iter().map(|r| r.2));
        let roofline = scan_rate.min(insert_rate);
        // Both servers share this machine's cores during a copy: their capacity when both
        // work at once (the scan and an insert of the same documents, side by side).
        let to = self.fresh_destination()?;
        let concurrent = self.runtime.block_on(async {
            let dst = connect(Side::Destination, &to).await?;
            let (scan, insert) = tokio::join!(
                raw_scan(&src, &data, batch_size),
                raw_insert(&dst, &docs, batch_size, workers)
            );
            anyhow::Ok(scan?.0.min(insert?))
        })?;
        drop(docs);
        println!();
        println!("| measurement | docs/s | ratio to roofline |");
        println!("|---|---:|---:|");
        println!("| source raw full scan | {scan_rate:.0} | |");
        let n_rounds = rounds.len();
        println!("| destination raw bulk insert ({workers} inserters), median of {n_rounds} rounds | {insert_rate:.0} | |");
        println!("| roofline = min of the two | {roofline:.0} | 1.00 |");
        println!(
            "| both at once: scan and insert side by side (slower of the two) | {concurrent:.0} | {:.2} |",
            concurrent / roofline
        );

        // Each half of the pipeline alone, to show which side limits the copy.
        let read_half = self.runtime.block_on(timed(run_engine(
            MongoSource::new(src.clone(), None, Strategy::Stream),
            NullSink,
            &data,
            workers,
            batch_size,
        )))?;
        println!("| read half: source `stream` producer -> null sink | {read_half:.0} | |");
        let to = self.fresh_destination()?;
        let write_half = self.runtime.block_on(async {
            let dst = connect(Side::Destination, &to).await?;
            timed(run_engine(
                SyntheticSource {
                    docs: docs_n,
                    doc_size,
                    strategy: Strategy::Stream,
                },
                MongoSink::new(dst),
                &data,
                workers,
                batch_size,
            ))
            .await
        })?;
        println!("| write half: synthetic source -> destination sink | {write_half:.0} | |");
        // Nothing can be written before the source's first reply to the sorted read.
        let first_reply = self
            .runtime
            .block_on(first_reply_secs(&src, &data, batch_size))?;
        let bound = docs_n as f64 / (first_reply + docs_n as f64 / write_half);
        println!(
            "| pipeline bound: {first_reply:.2} s to the source's first sorted batch, then the write half | {bound:.0} | {:.2} |",
            bound / roofline
        );

        println!(
            "| mongoferry copy, strategy `{default_strategy}` (default), median of {n_rounds} rounds; ratio = median of the rounds' ratios | {default_copy:.0} | {default_ratio:.2} |"
        );
        for strategy in self.args.strategies.clone() {
            if strategy == default_strategy {
                continue;
            }
            let rate = self.copy_rate(&src, &data, strategy)?;
            println!(
                "| mongoferry copy, strategy `{strategy}` (one run) | {rate:.0} | {:.2} |",
                rate / roofline
            );
        }

        let ceiling_docs = self.args.ceiling_docs;
        for strategy in [Strategy::Stream, Strategy::Ids] {
            let rate = self.runtime.block_on(timed(run_engine(
                SyntheticSource {
                    docs: ceiling_docs,
                    doc_size: 1024,
                    strategy,
                },
                NullSink,
                &Namespace::new("synthetic", "docs"),
                workers,
                batch_size,
            )))?;
            println!("| engine ceiling, synthetic source -> null sink, `{strategy}`, 1 KiB docs | {rate:.0} | |");
        }

        self.memory(&src, &from)?;
        self.runtime.block_on(mongo::close(src));
        Ok(())
    }

    /// Peak RSS of whole `mongoferry copy` processes: both kinds of documents (issue 14), every
    /// `--memory-docs` size, every `--memory-limits` budget (alternating which budget goes first),
    /// and the fixed overhead (a copy of 10 documents).
    fn memory(&mut self, src: &Client, from: &str) -> Result<()> {
        let args = &self.args;
        let sizes: Vec<u64> = args
            .memory_docs
            .iter()
            .copied()
            .filter(|&n| n > 0)
            .collect();
        if sizes.is_empty() {
            return Ok(());
        }
        let (workers, batch_size, doc_size) = (args.workers, args.batch_size, args.doc_size);
        let limits = args.memory_limits.clone();
        let default = *limits.first().context("--memory-limits is empty")?;
        let mib = |b: u64| b as f64 / 1048576.0;
        println!();
        println!("| documents | copy of (docs) | --memory-limit (MiB) | peak RSS (MiB) | docs/s |");
        println!("|---|---:|---:|---:|---:|");
        let overhead = Namespace::new("bench", "mem_overhead");
        self.runtime.block_on(seed(src, &overhead, 10, doc_size))?;
        let to = self.fresh_destination()?;
        let (peak, _) = self.runtime.block_on(copy_process_memory(
            from, &to, &overhead, workers, batch_size, default,
        ))?;
        println!(
            "| sample | 10 | {:.0} | {:.1} | – |",
            mib(default as u64),
            mib(peak)
        );
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); limits.len()];
        let mut round = 0;
        for kind in [DocKind::Sample, DocKind::Pymongo] {
            let mut peaks = Vec::new();
            for &n in &sizes {
                let ns = Namespace::new("bench", format!("mem_{}_{n}", kind.name()));
                match kind {
                    DocKind::Sample => self.runtime.block_on(seed(src, &ns, n, doc_size))?,
                    DocKind::Pymongo => self.runtime.block_on(seed_pymongo_shape(src, &ns, n))?,
                }
                let mut order: Vec<usize> = (0..limits.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                round += 1;
                for i in order {
                    let to = self.fresh_destination()?;
                    let (peak, rate) = self.runtime.block_on(copy_process_memory(
                        from, &to, &ns, workers, batch_size, limits[i],
                    ))?;
                    println!(
                        "| {} | {n} | {:.0} | {:.1} | {rate:.0} |",
                        kind.name(),
                        mib(limits[i] as u64),
                        mib(peak)
                    );
                    rates[i].push(rate);
                    if i == 0 {
                        peaks.push(peak);
                    }
                }
            }
            if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
                println!(
                    "\n{} documents: peak memory growth {} -> {} docs at {:.0} MiB: {:.2}x\n",
                    kind.name(),
                    sizes[0],
                    sizes[sizes.len() - 1],
                    mib(default as u64),
                    *last as f64 / *first as f64
                );
            }
        }
        for (limit, rates) in limits.iter().zip(rates) {
            println!(
                "median copy rate at --memory-limit {:.0} MiB: {:.0} docs/s (of {} copies)",
                mib(*limit as u64),
                median(rates.iter().copied()),
                rates.len()
            );
        }
        Ok(())
    }
}

impl Bench {
    /// Writes synthetic documents into the destination under a rate limit and samples the count
    /// every 50 ms: the rate of every 10 s window, and how soon a changed limit shows.
    fn run_throttle(&mut self) -> Result<()> {
        let to = self.fresh_destination()?;
        let workers = self.args.workers;
        let rates = self.args.throttle_rates.clone();
        println!("throttle: {workers} workers, batches of 100 docs of 1 KiB, into a SecantusDB destination");
        println!();
        println!("| limit (docs/s) | 10 s windows | min | max | worst deviation |");
        println!("|---:|---:|---:|---:|---:|");
        self.runtime.block_on(async {
            let dst = connect(Side::Destination, &to).await?;
            for rate in rates {
                let run = LimitedRun::start(&dst, workers, rate, (rate * 40.0) as u64);
                // Warm up, then 25 s of samples: 16 windows of 10 s, one every second.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let samples = run.sample(Duration::from_secs(25)).await;
                run.stop().await?;
                let windows: Vec<f64> = (0..=15)
                    .map(|start| {
                        let at = |secs: usize| samples[(secs * 20).min(samples.len() - 1)];
                        (at(start + 10) - at(start)) as f64 / 10.0
                    })
                    .collect();
                let min = windows.iter().copied().fold(f64::MAX, f64::min);
                let max = windows.iter().copied().fold(0.0, f64::max);
                let worst = windows.iter().map(|w| (w - rate).abs() / rate).fold(0.0, f64::max);
                println!(
                    "| {rate:.0} | {} | {min:.0} | {max:.0} | {:.1}% |",
                    windows.len(),
                    worst * 100.0
                );
            }
            // A limit raised from 500 to 2000 docs/s, and lowered back.
            println!();
            println!("| change | rate in the 1st second after | in the 2nd second | first write after the change |");
            println!("|---|---:|---:|---:|");
            let run = LimitedRun::start(&dst, workers, 500.0, 200_000);
            tokio::time::sleep(Duration::from_secs(3)).await;
            for (from, to) in [(500.0, 2000.0), (2000.0, 500.0)] {
                let before = run.docs();
                run.control.throttle().job.set(Limits { rate: Some(to), rate_bytes: None });
                let changed = Instant::now();
                let mut first_write = None;
                let mut marks = vec![];
                while changed.elapsed() < Duration::from_secs(2) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let n = run.docs();
                    if first_write.is_none() && n > before {
                        first_write = Some(changed.elapsed());
                    }
                    if marks.len() < 2 && changed.elapsed() >= Duration::from_secs(marks.len() as u64 + 1) {
                        marks.push(n);
                    }
                }
                let first = (marks[0] - before) as f64;
                let second = (marks[1] - marks[0]) as f64;
                println!(
                    "| {from:.0} -> {to:.0} docs/s | {first:.0} | {second:.0} | {} ms |",
                    first_write.map_or("-".to_string(), |d| d.as_millis().to_string())
                );
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            run.stop().await?;
            mongo::close(dst).await;
            anyhow::Ok(())
        })
    }
}

impl Bench {
    /// A copy in adaptive mode through a proxy that adds latency for a while: prints what the
    /// job measured and decided, every half second.
    fn run_adaptive(&mut self) -> Result<()> {
        let to = self.fresh_destination()?;
        let from = self.from.clone();
        let port: u16 = to
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .context("the destination URI has no port to proxy")?;
        let target_ms = 150.0;
        self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            let data = Namespace::new("bench", "adaptive");
            seed(&src, &data, 150_000, 256).await?;
            mongo::close(src).await;
            let proxy = FaultProxy::start(port).await?;
            let spec = JobSpec {
                workers: Some(4),
                batch_size: Some(100),
                rate: Some(3000.0),
                adaptive: Some(AdaptiveConfig { target_ms, max_workers: None, interval_ms: Some(500) }),
                ..JobSpec::new(&from, &proxy.uri(), &[&data.to_string()])
            }
            .validate()
            .map_err(|e| anyhow::anyhow!(e))?;
            let prepared = copy::prepare(&spec, Arc::new(mongoferry::state::MemoryStore::default())).await?;
            let adaptive = prepared.adaptive().context("adaptive mode")?;
            let cancel = CancellationToken::new();
            let job = tokio::spawn(prepared.run(cancel.clone()));
            while adaptive.last().and_then(|d| d.latency_ms).is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let started = Instant::now();
            let phases = [
                ("calm", Duration::ZERO, 4),
                ("pressure: +50 ms per request, one at a time", Duration::from_millis(50), 8),
                ("relief", Duration::ZERO, 8),
            ];
            let mut marks = vec![];
            for (name, delay, secs) in phases {
                proxy.set_delay(delay);
                marks.push((adaptive.view().decisions.last().map_or(0.0, |d| d.at_secs), name));
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            cancel.cancel();
            let _ = job.await?;
            proxy.stop().await;
            println!("adaptive mode: target {target_ms} ms mean batch latency, operator limit 3000 docs/s, 4 workers");
            println!();
            println!("| t (s) | phase | docs/s | latency (ms) | decision | workers | rate cap | why |");
            println!("|---:|---|---:|---:|---|---:|---:|---|");
            let first = marks[0].0;
            for d in adaptive.view().decisions.iter().filter(|d| d.at_secs >= first) {
                let phase = marks.iter().rev().find(|(at, _)| d.at_secs > *at).map_or("", |m| m.1);
                println!(
                    "| {:.1} | {phase} | {:.0} | {} | {:?} | {} | {} | {} |",
                    d.at_secs - first,
                    d.docs_per_sec,
                    d.latency_ms.map_or("-".into(), |l| format!("{l:.0}")),
                    d.action,
                    d.workers,
                    d.rate_cap.map_or("none".into(), |c| format!("{c:.0}")),
                    d.reason
                );
            }
            eprintln!("traced {:.0} s", started.elapsed().as_secs_f64());
            anyhow::Ok(())
        })
    }
}

impl Bench {
    /// A whole copy (collection, documents, its indexes) with the indexes built after the
    /// documents and before them, alternating which goes first, each into a fresh destination.
    fn run_indexes(&mut self) -> Result<()> {
        let (docs_n, doc_size) = (self.args.docs, self.args.doc_size);
        println!(
            "indexes: {docs_n} docs of {doc_size} B with 3 secondary indexes, {} workers, batch {}, on {} cores",
            self.args.workers,
            self.args.batch_size,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let from = self.from.clone();
        let data = Namespace::new("bench", "indexed");
        self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            seed(&src, &data, docs_n, doc_size).await?;
            src.database(&data.db)
                .run_command(doc! { "createIndexes": &data.coll, "indexes": [
                    { "key": { "qty": 1 }, "name": "qty_1" },
                    { "key": { "status": 1, "price": -1 }, "name": "status_price" },
                    { "key": { "name": 1 }, "name": "name_unique", "unique": true },
                ] })
                .await?;
            mongo::close(src).await;
            anyhow::Ok(())
        })?;
        self.ab_rounds(
            "copy with its indexes",
            [
                "`--indexes after` (default)",
                "`--indexes before`",
                "after / before",
            ],
            |bench, after| {
                let mode = if after { "after" } else { "before" };
                let (rate, summary) = bench.timed_copy(
                    serde_json::json!({ "namespaces": [data.to_string()], "indexes": mode }),
                    bench.args.docs,
                )?;
                if summary.schema.indexes_built != 3 {
                    bail!(
                        "indexes {mode}: {} indexes built",
                        summary.schema.indexes_built
                    );
                }
                Ok(rate)
            },
        )
    }

    /// The default strategy's copy without and with a journal, alternating which goes first in
    /// each round, each into a fresh destination; medians count.
    fn run_journal(&mut self) -> Result<()> {
        let args = &self.args;
        let (docs_n, doc_size, workers, batch_size) =
            (args.docs, args.doc_size, args.workers, args.batch_size);
        let base = args.journal_dir.clone().unwrap_or_else(std::env::temp_dir);
        let padding = args.padding;
        println!(
            "journal: {docs_n} docs of {doc_size} B ({padding:?} padding), {workers} workers, batch {batch_size}, journals in {}, on {} cores",
            base.display(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let from = self.from.clone();
        let data = Namespace::new("bench", "docs");
        let src = self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            match padding {
                Padding::X => seed(&src, &data, docs_n, doc_size).await?,
                Padding::Random => seed_random(&src, &data, docs_n, doc_size).await?,
            }
            anyhow::Ok(src)
        })?;
        let strategy = Strategy::default();
        let mut rounds = Vec::new();
        for round in 1..=self.args.rounds {
            let (mut plain, mut journaled) = (0.0, None);
            for journal_now in [round % 2 == 0, round % 2 == 1] {
                if journal_now {
                    journaled = Some(self.journaled_copy_rate(&src, &data, &base)?);
                } else {
                    plain = self.copy_rate(&src, &data, strategy)?;
                }
            }
            let (rate, journal) = journaled.expect("measured");
            let ratio = rate / plain;
            println!(
                "round {round}: copy {plain:.0} docs/s, with journal {rate:.0} docs/s, ratio {ratio:.3}, journal {:.1} B/doc ({} for {} records)",
                journal.bytes_per_doc, journal.bytes, journal.records
            );
            rounds.push((plain, rate, ratio, journal));
        }
        let plain = median(rounds.iter().map(|r| r.0));
        let journaled = median(rounds.iter().map(|r| r.1));
        let ratio = median(rounds.iter().map(|r| r.2));
        let per_doc = median(rounds.iter().map(|r| r.3.bytes_per_doc));
        let shrink = median(
            rounds
                .iter()
                .map(|r| r.3.document_bytes as f64 / r.3.bytes.max(1) as f64),
        );
        let n = rounds.len();
        println!();
        println!("| measurement (median of {n} rounds) | value |");
        println!("|---|---:|");
        println!("| copy, strategy `{strategy}`, no journal | {plain:.0} docs/s |");
        println!("| copy, strategy `{strategy}`, with journal | {journaled:.0} docs/s |");
        println!("| ratio with / without (median of the rounds' ratios) | {ratio:.3} |");
        println!("| journal bytes per document ({doc_size} B documents) | {per_doc:.1} |");
        println!("| documents' bytes / journal bytes | {shrink:.1}x |");
        self.runtime.block_on(mongo::close(src));
        Ok(())
    }

    /// The default strategy's copy of `data` into a fresh destination, journaled into a new
    /// journal under `base`; the time includes closing the journal.
    fn journaled_copy_rate(
        &mut self,
        src: &Client,
        data: &Namespace,
        base: &std::path::Path,
    ) -> Result<(f64, JournalSummary)> {
        let to = self.fresh_destination()?;
        let (docs, workers, batch_size) = (self.args.docs, self.args.workers, self.args.batch_size);
        let dir = tempfile::Builder::new()
            .prefix("mongoferry-bench-journal-")
            .tempdir_in(base)?;
        let config = JournalConfig::new(dir.path().to_str().context("journal path")?);
        self.runtime.block_on(async {
            let dst = connect(Side::Destination, &to).await?;
            let started = Instant::now();
            let journal = JournalWriter::start(JournalWriter::open(config).await?);
            let copied = run_engine(
                MongoSource::new(src.clone(), None, Strategy::default()),
                Journaled::new(Arc::new(MongoSink::new(dst.clone())), journal.sender()),
                data,
                workers,
                batch_size,
            )
            .await;
            let summary = journal.finish().await?;
            let copied = copied?;
            let rate = copied as f64 / started.elapsed().as_secs_f64();
            let count = dst
                .database(&data.db)
                .collection::<RawDocumentBuf>(&data.coll)
                .count_documents(doc! {})
                .await?;
            mongo::close(dst).await;
            if count != docs || copied != docs || summary.records != docs {
                bail!("journaled copy: {copied} copied, {count} at the destination, {} journaled, {docs} expected", summary.records);
            }
            eprintln!(
                "copy with journal: {copied} docs in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            anyhow::Ok((rate, summary))
        })
    }
}

/// The move measurement's filter: the even `_id`s of [`seed_selection`].
const MOVE_FILTER: &str = r#"{"old": true}"#;

/// What one run of the move measurement does with the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MoveKind {
    /// A plain copy of the selection (the filter, mode `copy`).
    Copy,
    /// A move that deletes nothing (`keep_source`): the copy and each batch's read-back.
    Rehearsal,
    /// A move: copy, read back, delete from the source in one transaction per batch.
    Move,
}

impl MoveKind {
    fn name(self) -> &'static str {
        match self {
            MoveKind::Copy => "copy",
            MoveKind::Rehearsal => "rehearsal",
            MoveKind::Move => "move",
        }
    }
}

/// One run of the move measurement, checked.
struct MoveRun {
    /// From the job's preparation (connect, count) to its end.
    secs: f64,
    /// Documents written to the destination (the selection).
    docs: u64,
    /// Documents deleted from the source (0 for a copy or a rehearsal).
    deleted: u64,
}

impl MoveRun {
    /// The selection's documents per second: copied, or for a move, moved.
    fn per_sec(&self) -> f64 {
        self.docs as f64 / self.secs
    }
}

impl Bench {
    /// A filtered move against a plain filtered copy of the same selection, in rounds that
    /// alternate the order, each run on a freshly seeded source collection into a fresh
    /// destination; then one move under `--move-rate`.
    fn run_move(&mut self) -> Result<()> {
        let args = &self.args;
        let (docs_n, doc_size, workers, batch_size, limit) = (
            args.move_docs,
            args.doc_size,
            args.workers,
            args.batch_size,
            args.move_rate,
        );
        let selected = docs_n.div_ceil(2);
        println!(
            "move: collections of {docs_n} docs of {doc_size} B, {selected} of them matching \
             {MOVE_FILTER} (no index on it); {workers} workers, batch {batch_size}; every run on \
             a freshly seeded source collection into a fresh destination; on {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let kinds = [MoveKind::Copy, MoveKind::Rehearsal, MoveKind::Move];
        let mut rounds = Vec::new();
        for round in 1..=self.args.rounds {
            let mut order = kinds;
            if round % 2 == 0 {
                order.reverse();
            }
            let mut rates = [0.0; 3];
            for kind in order {
                let run = self.move_run(kind, &format!("{}_{round}", kind.name()), None)?;
                rates[kinds.iter().position(|k| *k == kind).unwrap_or(0)] = run.per_sec();
            }
            let [copy, rehearsal, moved] = rates;
            println!(
                "round {round}: copy {copy:.0} docs/s, rehearsal {rehearsal:.0} docs/s, move \
                 {moved:.0} docs/s, move / copy {:.2}",
                moved / copy
            );
            rounds.push(rates);
        }
        let limited = self.move_run(MoveKind::Move, "limited", Some(limit))?;

        let n = rounds.len();
        let column = |i: usize| median(rounds.iter().map(|r| r[i]));
        let ratio = |i: usize| median(rounds.iter().map(|r| r[i] / r[0]));
        println!();
        println!("| {selected} of {docs_n} docs selected by {MOVE_FILTER}, median of {n} rounds | docs/s | ratio to the plain copy (median of the rounds' ratios) |");
        println!("|---|---:|---:|");
        println!(
            "| plain filtered copy of the selection | {:.0} | 1.00 |",
            column(0)
        );
        println!(
            "| move rehearsal (`keep_source`): copy and read-back verify, nothing deleted | {:.0} | {:.2} |",
            column(1),
            ratio(1)
        );
        println!(
            "| move: copy, verify, delete (one transaction per batch); documents moved (deleted from the source) per second | {:.0} | {:.2} |",
            column(2),
            ratio(2)
        );
        let secs = limited.secs;
        let deleted = limited.deleted as f64 / secs;
        let counted = (limited.docs + limited.deleted) as f64 / secs;
        println!();
        println!("| move under `rate` {limit:.0} docs/s (one run of {selected} docs) | value |");
        println!("|---|---:|");
        println!("| documents moved (deleted from the source) per second, whole run | {deleted:.0} ({:.2} of the limit) |", deleted / limit);
        println!(
            "| documents written + deleted per second (the limit counts both) | {counted:.0} ({:.2} of the limit) |",
            counted / limit
        );
        println!("| seconds | {secs:.1} |");
        Ok(())
    }

    /// Seeds `bench.move_{name}` afresh, runs `kind` on its selection into a fresh destination
    /// (under `rate` if given) and checks the outcome: the destination holds the whole
    /// selection; after a move the source holds none of it and all the rest.
    fn move_run(&mut self, kind: MoveKind, name: &str, rate: Option<f64>) -> Result<MoveRun> {
        let to = self.fresh_destination()?;
        let from = self.from.clone();
        let (docs_n, doc_size) = (self.args.move_docs, self.args.doc_size);
        let selected = docs_n.div_ceil(2);
        let ns = Namespace::new("bench", format!("move_{name}"));
        let mut spec = JobSpec {
            mode: (kind != MoveKind::Copy).then_some(Mode::Move),
            keep_source: kind == MoveKind::Rehearsal,
            workers: Some(self.args.workers),
            batch_size: Some(self.args.batch_size),
            rate,
            ..JobSpec::new(&from, &to, &[&ns.to_string()])
        };
        spec.endpoints.filter = Some(
            MOVE_FILTER
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?,
        );
        let spec = spec.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            let dst = connect(Side::Destination, &to).await?;
            seed_selection(&src, &ns, docs_n, doc_size).await?;
            let started = Instant::now();
            let store = Arc::new(mongoferry::state::MemoryStore::default());
            let summary = copy::prepare(&spec, store)
                .await?
                .run(CancellationToken::new())
                .await?;
            let secs = started.elapsed().as_secs_f64();
            let count = |client: &Client, filter| {
                let coll = client
                    .database(&ns.db)
                    .collection::<RawDocumentBuf>(&ns.coll);
                async move { coll.count_documents(filter).await }
            };
            let (source_selected, source_all, destination_selected, destination_all) = tokio::try_join!(
                count(&src, doc! { "old": true }),
                count(&src, doc! {}),
                count(&dst, doc! { "old": true }),
                count(&dst, doc! {}),
            )?;
            mongo::close(src).await;
            mongo::close(dst).await;
            let moves = summary.moves.clone();
            let deleted = moves.as_ref().map_or(0, |m| m.deleted);
            let verified = moves.as_ref().map_or(0, |m| m.verified);
            let left = moves.as_ref().map_or(0, |m| m.left);
            let moved = kind == MoveKind::Move;
            let kept = if moved { 0 } else { selected };
            let right = summary.docs == selected
                && destination_selected == selected
                && destination_all == selected
                && source_selected == kept
                && source_all == docs_n - selected + kept
                && deleted == if moved { selected } else { 0 }
                && (kind == MoveKind::Copy || verified == selected)
                && left == 0;
            let what = format!(
                "{} of {selected} docs ({}): {} written, {verified} verified, {deleted} deleted, {left} left in {secs:.1} s; source holds {source_selected} selected of {source_all}, destination {destination_selected} selected of {destination_all}",
                kind.name(),
                rate.map_or("no limit".into(), |r| format!("rate {r:.0}")),
                summary.docs,
            );
            if !right {
                bail!("wrong outcome: {what} (moves: {moves:?})");
            }
            eprintln!("{what}");
            Ok(MoveRun {
                secs,
                docs: summary.docs,
                deleted,
            })
        })
    }
}

/// The longest one copy of the seed comparison may take.
const PEER_LIMIT: Duration = Duration::from_secs(600);

impl Bench {
    /// `--strategy ids` against the seed's design in Python, on the same servers and documents:
    /// `--rounds` rounds, each running both (in alternating order) into fresh destinations, both
    /// with `--workers` copiers.
    fn run_seed_peer(&mut self) -> Result<()> {
        let (docs_n, doc_size, workers) = (self.args.docs, self.args.doc_size, self.args.workers);
        if !self.args.peer_script.exists() || !self.args.peer_python.exists() {
            bail!(
                "the peer needs {} and {} (see --peer-script, --peer-python)",
                self.args.peer_script.display(),
                self.args.peer_python.display()
            );
        }
        println!(
            "seed peer: {docs_n} docs of {doc_size} B; mongoferry --strategy ids with {workers} workers, batch {}; the peer with {workers} processes, 50 ids per message; on {} cores",
            self.args.batch_size,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let from = self.from.clone();
        let data = Namespace::new("bench", "peer");
        self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            seed(&src, &data, docs_n, doc_size).await?;
            mongo::close(src).await;
            anyhow::Ok(())
        })?;
        self.ab_rounds(
            "copier",
            [
                "`mongoferry copy --strategy ids`",
                "the seed's design in Python",
                "ids / seed (goal >= 1.5)",
            ],
            |bench, ours| {
                if ours {
                    let spec =
                        serde_json::json!({ "namespaces": [data.to_string()], "strategy": "ids" });
                    Ok(bench.timed_copy(spec, bench.args.docs)?.0)
                } else {
                    bench.peer_copy_rate(&data)
                }
            },
        )
    }

    /// One reader against `--readers-n`, copying `--readers-collections` collections.
    fn run_readers(&mut self) -> Result<()> {
        let (docs_n, doc_size, n, colls) = (
            self.args.docs,
            self.args.doc_size,
            self.args.readers_n,
            self.args.readers_collections,
        );
        println!(
            "readers: {colls} collections of {docs_n} docs of {doc_size} B; {} workers, batch {}; on {} cores",
            self.args.workers,
            self.args.batch_size,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let from = self.from.clone();
        self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            for i in 0..colls {
                seed(
                    &src,
                    &Namespace::new("bench", format!("multi{i}")),
                    docs_n,
                    doc_size,
                )
                .await?;
            }
            mongo::close(src).await;
            anyhow::Ok(())
        })?;
        let namespaces: Vec<String> = (0..colls).map(|i| format!("bench.multi{i}")).collect();
        self.ab_rounds(
            &format!("{colls} collections copied whole"),
            [
                &format!("`--readers {n}`"),
                "`--readers 1` (default)",
                &format!("{n} readers / 1"),
            ],
            |bench, many| {
                let readers = if many { n } else { 1 };
                let spec = serde_json::json!({ "namespaces": namespaces, "readers": readers });
                Ok(bench.timed_copy(spec, bench.args.docs * colls as u64)?.0)
            },
        )
    }

    /// Saves of a job of many partitions, one moved per save: the SQLite store against the first
    /// format (read, parse, rewrite the whole JSON file atomically).
    fn run_state_store(&mut self) -> Result<()> {
        use mongoferry::state::{Checkpoint, FileStore, JobKey, NsCheckpoint, StateStore};
        const SAVES: u32 = 200;
        let parts = self.args.state_partitions;
        let dir = tempfile::tempdir()?;
        let key = JobKey("bench".into());
        let mut checkpoint = Checkpoint {
            description: "bench".into(),
            ..Default::default()
        };
        for i in 0..parts {
            checkpoint.namespaces.insert(
                format!("bench.c -> bench.c #{i:05}"),
                NsCheckpoint::new(Some(&mongodb::bson::RawBson::Int64(i.into())), 1, false),
            );
        }
        let moved = |checkpoint: &mut Checkpoint, save: u32| {
            let entry = format!("bench.c -> bench.c #{:05}", save % parts);
            checkpoint
                .namespaces
                .get_mut(&entry)
                .expect("an entry")
                .done += 1;
        };
        println!(
            "state store: a job of {parts} partitions, {SAVES} saves, one partition moved per save"
        );
        let sqlite = {
            let store = FileStore::new(dir.path().join("state.db"));
            let mut checkpoint = checkpoint.clone();
            self.runtime.block_on(async {
                store.save(&key, &checkpoint).await?;
                let started = Instant::now();
                for save in 0..SAVES {
                    moved(&mut checkpoint, save);
                    store.save(&key, &checkpoint).await?;
                }
                anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0 / f64::from(SAVES))
            })?
        };
        let first_format = {
            let path = dir.path().join("state.json");
            let mut checkpoint = checkpoint.clone();
            let write = |checkpoint: &Checkpoint| -> Result<()> {
                let jobs = std::collections::BTreeMap::from([(key.clone(), checkpoint.clone())]);
                let text =
                    serde_json::to_vec_pretty(&serde_json::json!({ "version": 1, "jobs": jobs }))?;
                mongoferry::state::atomic::write_bytes_atomic(&path, &text)?;
                Ok(())
            };
            write(&checkpoint)?;
            let started = Instant::now();
            for save in 0..SAVES {
                // As that store did: read and parse the whole file, change the job, write it all.
                let text = std::fs::read_to_string(&path)?;
                let _all: serde_json::Value = serde_json::from_str(&text)?;
                moved(&mut checkpoint, save);
                write(&checkpoint)?;
            }
            started.elapsed().as_secs_f64() * 1000.0 / f64::from(SAVES)
        };
        println!();
        println!("| a save of a job of {parts} partitions, one moved | ms per save |");
        println!("|---|---:|");
        println!("| first format (one JSON file, rewritten whole) | {first_format:.2} |");
        println!("| SQLite store (the rows that moved) | {sqlite:.2} |");
        println!("| first format / SQLite | {:.1} |", first_format / sqlite);
        Ok(())
    }

    /// One collection read with a single cursor against partitions read by several readers.
    fn run_partitions(&mut self) -> Result<()> {
        let (docs, n) = (self.args.docs, self.args.partitions_readers);
        let partition_docs = docs.div_ceil(2 * n as u64).max(1);
        println!(
            "partitions: {docs} docs of {} B in one collection, partitions of {partition_docs} docs \
             read by {n} readers; {} workers, batch {}; on {} cores",
            self.args.doc_size,
            self.args.workers,
            self.args.batch_size,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let data = self.seed_one("parted")?;
        self.ab_rounds(
            "one collection",
            [
                &format!("{n} readers over partitions"),
                "one cursor (default)",
                "partitions / one cursor",
            ],
            |bench, parted| {
                let spec = if parted {
                    serde_json::json!({
                        "namespaces": [data.to_string()],
                        "readers": n,
                        "partition_docs": partition_docs,
                    })
                } else {
                    serde_json::json!({ "namespaces": [data.to_string()] })
                };
                Ok(bench.timed_copy(spec, docs)?.0)
            },
        )
    }

    /// The same partitioned command in one process against `--processes-n` sharing the job.
    fn run_processes(&mut self) -> Result<()> {
        let (docs, n) = (self.args.docs, self.args.processes_n);
        let partition_docs = docs.div_ceil(4 * n as u64).max(1);
        println!(
            "processes: {docs} docs of {} B in one collection, partitions of {partition_docs} docs, \
             state in a MongoDB database on a third server; each process {} workers, batch {}; on \
             {} cores",
            self.args.doc_size,
            self.args.workers,
            self.args.batch_size,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let data = self.seed_one("shared")?;
        self.ab_rounds(
            "one collection, one job",
            [
                &format!("{n} processes"),
                "1 process",
                &format!("{n} processes / 1"),
            ],
            |bench, many| bench.processes_copy(if many { n } else { 1 }, &data, partition_docs),
        )
    }

    /// `--docs` documents seeded into `bench.{name}` at the source.
    fn seed_one(&mut self, name: &str) -> Result<Namespace> {
        let data = Namespace::new("bench", name);
        let (from, docs, size) = (self.from.clone(), self.args.docs, self.args.doc_size);
        self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            seed(&src, &data, docs, size).await?;
            mongo::close(src).await;
            anyhow::Ok(())
        })?;
        Ok(data)
    }

    /// docs/s of `processes` copies of one command on one MongoDB state, from the first start
    /// to the last exit; every process must succeed and the destination hold every document.
    fn processes_copy(
        &mut self,
        processes: usize,
        data: &Namespace,
        partition_docs: u64,
    ) -> Result<f64> {
        let to = self.fresh_destination()?;
        let state_server = TestServer::start()?;
        let state = state_server.uri.replacen("/?", "/ferry_state?", 1);
        let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_mongoferry"));
        let ns = data.to_string();
        let args: Vec<String> = [
            "copy",
            "--from",
            &self.from,
            "--to",
            &to,
            "--ns",
            &ns,
            "--state",
            &state,
            "--partition-docs",
            &partition_docs.to_string(),
            "--workers",
            &self.args.workers.to_string(),
            "--batch-size",
            &self.args.batch_size.to_string(),
            "--json",
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        let docs = self.args.docs;
        self.runtime.block_on(async {
            let started = Instant::now();
            let runs = (0..processes).map(|_| {
                tokio::process::Command::new(&exe)
                    .args(&args)
                    .kill_on_drop(true)
                    .output()
            });
            let outputs = tokio::time::timeout(PEER_LIMIT, futures::future::try_join_all(runs))
                .await
                .context("the processes did not finish in time")??;
            let secs = started.elapsed().as_secs_f64();
            let mut own = Vec::new();
            for output in &outputs {
                if !output.status.success() {
                    bail!(
                        "mongoferry copy failed: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
                own.push(summary["docs"].as_u64().unwrap_or_default());
            }
            let dst = connect(Side::Destination, &to).await?;
            let count = dst
                .database(&data.db)
                .collection::<RawDocumentBuf>(&data.coll)
                .count_documents(doc! {})
                .await?;
            mongo::close(dst).await;
            if count != docs {
                bail!("the destination holds {count} of {docs} docs");
            }
            println!("  {processes} process(es): each copied {own:?} docs, {secs:.1} s");
            Ok(docs as f64 / secs)
        })
    }

    /// `--rounds` rounds of two measurements in docs/s, `a` (`measure(bench, true)`) and `b`,
    /// alternating which goes first; prints each round, then a table of the medians: `labels`
    /// names `a`, `b` and their ratio `a / b` (the median of the rounds' ratios).
    fn ab_rounds(
        &mut self,
        title: &str,
        labels: [&str; 3],
        mut measure: impl FnMut(&mut Self, bool) -> Result<f64>,
    ) -> Result<()> {
        let [a_label, b_label, ratio_label] = labels;
        let mut rounds = Vec::new();
        for round in 1..=self.args.rounds {
            let (mut a, mut b) = (0.0, 0.0);
            for first in [round % 2 == 1, round % 2 == 0] {
                if first {
                    a = measure(self, true)?;
                } else {
                    b = measure(self, false)?;
                }
            }
            println!(
                "round {round}: {a_label} {a:.0} docs/s, {b_label} {b:.0} docs/s, {ratio_label} {:.2}",
                a / b
            );
            rounds.push((a, b, a / b));
        }
        let n = rounds.len();
        println!();
        println!("| {title} (median of {n} rounds) | docs/s |");
        println!("|---|---:|");
        println!("| {a_label} | {:.0} |", median(rounds.iter().map(|r| r.0)));
        println!("| {b_label} | {:.0} |", median(rounds.iter().map(|r| r.1)));
        println!(
            "| {ratio_label} (median of the rounds' ratios) | {:.2} |",
            median(rounds.iter().map(|r| r.2))
        );
        Ok(())
    }

    /// docs/s of an in-process copy into a fresh destination of the spec `fields` give (with
    /// the bench's workers and batch size), which must copy `expected` documents; and its
    /// summary.
    fn timed_copy(
        &mut self,
        fields: serde_json::Value,
        expected: u64,
    ) -> Result<(f64, copy::CopySummary)> {
        let to = self.fresh_destination()?;
        let mut spec = serde_json::json!({
            "from": self.from, "to": to,
            "workers": self.args.workers, "batch_size": self.args.batch_size,
        });
        spec.as_object_mut()
            .context("a spec object")?
            .extend(fields.as_object().context("spec fields")?.clone());
        let spec: JobSpec = serde_json::from_value(spec)?;
        let spec = spec.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.runtime.block_on(async {
            let started = Instant::now();
            let store = Arc::new(mongoferry::state::MemoryStore::default());
            let summary = copy::prepare(&spec, store)
                .await?
                .run(CancellationToken::new())
                .await?;
            let secs = started.elapsed().as_secs_f64();
            if summary.docs != expected {
                bail!("copied {} of {expected} docs", summary.docs);
            }
            Ok((expected as f64 / secs, summary))
        })
    }

    /// docs/s of the seed's design copying `data` into a fresh destination (its own clock, from
    /// its start to its last write), checked by counting the destination.
    fn peer_copy_rate(&mut self, data: &Namespace) -> Result<f64> {
        let to = self.fresh_destination()?;
        let mut child = std::process::Command::new(&self.args.peer_python)
            .arg(&self.args.peer_script)
            .args([&self.from, &to, &data.to_string(), &data.to_string()])
            .args([self.args.workers.to_string(), "50".into()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let deadline = Instant::now() + PEER_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the seed peer did not finish within {PEER_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().context("its output")?, &mut out)?;
        if !status.success() {
            bail!("the seed peer failed ({status}): {out}");
        }
        let report: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("the seed peer's report: {out}"))?;
        let (docs, secs) = (report["docs"].as_u64(), report["seconds"].as_f64());
        let (Some(docs), Some(secs)) = (docs, secs) else {
            bail!("the seed peer's report: {out}");
        };
        let counted = self.runtime.block_on(async {
            let dst = connect(Side::Destination, &to).await?;
            let n = dst
                .database(&data.db)
                .collection::<RawDocumentBuf>(&data.coll)
                .count_documents(doc! {})
                .await?;
            mongo::close(dst).await;
            anyhow::Ok(n)
        })?;
        if docs != self.args.docs || counted != self.args.docs {
            bail!(
                "the seed peer copied {docs} (counted {counted}) of {} docs",
                self.args.docs
            );
        }
        Ok(docs as f64 / secs)
    }
}

/// How long each unpaced load of the sync measurement runs (the source's own rate).
const SOLO_LENGTH: Duration = Duration::from_secs(5);
/// How long each paced step of the sync measurement runs.
const STEP_LENGTH: Duration = Duration::from_secs(10);
/// A step counts as kept up with when the lag stayed under this.
const LAG_LIMIT_SECS: f64 = 2.0;
/// The longest the sync may take to go live, converge or commit before the measurement fails.
const SYNC_LIMIT: Duration = Duration::from_secs(600);
/// How far a paced client that fell behind may catch up at once (the token bucket's depth).
const PACER_BURST: Duration = Duration::from_millis(100);

/// A sync job running in the background.
type SyncJob = tokio::task::JoinHandle<Result<copy::CopySummary, CopyError>>;

impl Bench {
    /// Live sync against the source's own write rate, in one run on fresh servers:
    /// 1. the source's rate for the mixed load ([`MixedLoad`]) from one client, and from
    ///    `--sync-clients` clients, with no sync running;
    /// 2. a sync of the collection and, once it is live, the load paced at each `--sync-steps`
    ///    fraction of the single client's rate for [`STEP_LENGTH`] ([`sync_step`]);
    /// 3. once the writes stop, the time until the sync has applied every change, until it says
    ///    it is caught up and, apart, until the destination's documents equal the source's;
    ///    then the commit, whose result is checked against the source; then the single
    ///    client's rate again (how much the source drifted through the run).
    fn run_sync(&mut self) -> Result<()> {
        let to = self.fresh_destination()?;
        let from = self.from.clone();
        let args = &self.args;
        let (docs_n, doc_size) = (args.sync_docs, args.doc_size);
        let (fractions, many) = (args.sync_steps.clone(), args.sync_clients);
        let (retryable, workers, batch_size) =
            (args.sync_retryable_writes, args.workers, args.batch_size);
        println!(
            "sync: {docs_n} docs of {doc_size} B; writes 30% inserts, 30% updates, 20% replaces, \
             20% deletes, retryable writes {}; sync with {workers} workers, batch {batch_size}; \
             steps of {} s; on {} cores",
            if retryable { "on" } else { "off" },
            STEP_LENGTH.as_secs(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let data = Namespace::new("bench", "sync");
        self.runtime.block_on(async {
            let src = connect(Side::Source, &from).await?;
            let dst = connect(Side::Destination, &to).await?;
            seed(&src, &data, docs_n, doc_size).await?;
            let load = MixedLoad::new(&from, retryable, &data, docs_n as i64, doc_size).await?;

            // 1. The source's own rate, nothing else running.
            let single = load.run(1, None, SOLO_LENGTH).await?.per_sec();
            let several = load.run(many, None, SOLO_LENGTH).await?.per_sec();
            eprintln!("source alone: 1 client {single:.0} writes/s, {many} clients {several:.0}");

            // 2. The sync, live, under the load at rising rates.
            let spec = JobSpec {
                mode: Some(Mode::Sync),
                workers: Some(workers),
                batch_size: Some(batch_size),
                ..JobSpec::new(&from, &to, &[&data.to_string()])
            }
            .validate()
            .map_err(|e| anyhow::anyhow!(e))?;
            let commit = CancellationToken::new();
            let store = Arc::new(mongoferry::state::MemoryStore::default());
            let prepared = copy::prepare(&spec, store)
                .await?
                .with_commit(commit.clone());
            let stats = prepared.stats();
            let control = prepared.control();
            let rss_before = rss_bytes();
            let started = Instant::now();
            let mut job: SyncJob = tokio::spawn(prepared.run(CancellationToken::new()));
            while stats.sync.phase() != Some(SyncPhase::Live) {
                if job.is_finished() {
                    return Err(ended_early(&mut job).await);
                }
                if started.elapsed() > SYNC_LIMIT {
                    bail!("the sync was not live after {SYNC_LIMIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let live_after = started.elapsed().as_secs_f64();
            let rss_live = rss_bytes();
            eprintln!("sync live after {live_after:.1} s");
            let mut timeline = Timeline::new(&load, &stats);
            let mut steps = Vec::new();
            for fraction in fractions {
                let clients = if fraction < 1.0 { 1 } else { many };
                let target = fraction * single;
                let step = sync_step(&load, &stats, &mut timeline, target, clients).await?;
                if job.is_finished() {
                    return Err(ended_early(&mut job).await);
                }
                eprintln!(
                    "step {:.0}%: {:.0} writes/s, max lag_secs {:.1} s, max measured delay {:.1} s",
                    fraction * 100.0,
                    step.written.per_sec(),
                    step.max_lag,
                    step.max_delay
                );
                steps.push((fraction, step));
            }

            // 3. The writes are over (every one acknowledged): the time to converge.
            let stopped = Instant::now();
            let (settled, equal) = tokio::join!(
                settled_after(&load, &stats, &timeline, stopped),
                equal_after(&src, &dst, &data, stopped)
            );
            let (settled, equal) = (settled?, equal?);

            // 4. The sync's capacity: paused, while one client writes alone for SOLO_LENGTH;
            // then resumed, and timed until it has applied that backlog.
            control.pause();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let backlog = load.run(1, None, SOLO_LENGTH).await?;
            control.resume();
            let resumed = Instant::now();
            let applied_before = timeline.now(&load, &stats);
            let caught_up_in = loop {
                let now = timeline.now(&load, &stats);
                if now.events >= now.changes {
                    break resumed.elapsed().as_secs_f64();
                }
                if resumed.elapsed() > SYNC_LIMIT {
                    bail!("the backlog was not applied within {SYNC_LIMIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let backlog_events = timeline.now(&load, &stats).events - applied_before.events;
            let apply_rate = backlog_events as f64 / caught_up_in;

            let totals = timeline.now(&load, &stats);
            commit.cancel();
            let asked = Instant::now();
            let summary = match tokio::time::timeout(SYNC_LIMIT, &mut job).await {
                Err(_) => bail!("the commit did not finish within {SYNC_LIMIT:?}"),
                Ok(Err(e)) => bail!("the sync panicked: {e}"),
                Ok(Ok(Err(e))) => bail!("the commit failed: {e}"),
                Ok(Ok(Ok(summary))) => summary,
            };
            let committed_in = asked.elapsed().as_secs_f64();
            let progress = summary.sync.context("a sync's summary without its progress")?;
            if progress.phase != SyncPhase::Committed {
                bail!("the sync returned in phase {:?}", progress.phase);
            }
            let (source_docs, destination_docs) =
                tokio::try_join!(dump(&src, &data), dump(&dst, &data))?;
            if !same(&source_docs, &destination_docs) {
                bail!(
                    "committed, but the destination differs: {} documents at the source, {} at \
                     the destination",
                    source_docs.len(),
                    destination_docs.len()
                );
            }
            let after = load.run(1, None, SOLO_LENGTH).await?.per_sec();
            mongo::close(load.coll.client().clone()).await;
            mongo::close(src).await;
            mongo::close(dst).await;

            let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
            println!();
            println!("| step | target (writes/s) | clients | achieved (writes/s) | achieved / single client | events applied/s | lag_secs max | lag_secs mean | measured delay max (s) | measured delay mean (s) | samples: lag_secs < 2 s, delay > 2 s | RSS (MiB) |");
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for (fraction, s) in &steps {
                println!(
                    "| {:.0}% | {:.0} | {} | {:.0} | {:.2} | {:.0} | {:.1} | {:.2} | {:.1} | {:.2} | {} of {} | {} |",
                    fraction * 100.0,
                    s.target,
                    s.clients,
                    s.written.per_sec(),
                    s.written.per_sec() / single,
                    s.events_per_sec,
                    s.max_lag,
                    s.mean_lag,
                    s.max_delay,
                    s.mean_delay,
                    s.hidden,
                    s.samples,
                    mib(s.rss)
                );
            }
            println!();
            println!("source alone, 1 client, no sync: {single:.0} writes/s (the reference)");
            println!(
                "source alone, {many} clients, no sync: {several:.0} writes/s ({:.2}x)",
                several / single
            );
            println!(
                "source alone, 1 client, after the commit (drift): {after:.0} writes/s ({:.2}x)",
                after / single
            );
            println!("initial copy of {docs_n} docs: live after {live_after:.1} s");
            // The figure: both the sync's own lag and the measured delay under the limit (the
            // sync's lag_secs alone can read 0 while changes wait, see the table).
            for (name, lag) in [
                ("max lag_secs", (|s: &SyncStep| s.max_lag) as fn(&SyncStep) -> f64),
                ("max measured delay", |s: &SyncStep| s.max_delay),
                ("the larger of the two", |s: &SyncStep| s.max_lag.max(s.max_delay)),
            ] {
                let kept = steps.iter().map(|(_, s)| s).filter(|s| lag(s) < LAG_LIMIT_SECS);
                match kept.map(|s| s.written.per_sec()).max_by(f64::total_cmp) {
                    Some(best) => println!(
                        "highest achieved rate with {name} under {LAG_LIMIT_SECS} s: {best:.0} writes/s = {:.2} x the single client (goal >= 1)",
                        best / single
                    ),
                    None => println!("no step kept {name} under {LAG_LIMIT_SECS} s"),
                }
            }
            println!(
                "after the writes stopped: every change applied after {:.2} s; caught up (caught_up, lag 0) after {:.2} s; destination equal to the source after {:.2} s ({} docs; one read of the destination takes {:.2} s)",
                settled.applied, settled.caught_up, equal.secs, equal.docs, equal.read_secs
            );
            let writes: u64 = steps.iter().map(|(_, s)| s.written.writes).sum();
            println!(
                "commit: Ok after {committed_in:.2} s, phase {:?}; both sides equal ({} docs); {} events applied for the {} changes of the steps' {writes} writes (a write to a deleted _id changes nothing)",
                progress.phase,
                source_docs.len(),
                totals.events,
                totals.changes
            );
            println!(
                "capacity: paused, one client wrote {} writes in {:.1} s alone ({:.0} writes/s); resumed, the sync applied the backlog's {backlog_events} events in {caught_up_in:.2} s: {apply_rate:.0} events/s = {:.2} x that client's rate",
                backlog.writes,
                backlog.secs,
                backlog.per_sec(),
                apply_rate / backlog.per_sec()
            );
            println!(
                "RSS: {} MiB before the sync, {} MiB when live (includes the load generator)",
                mib(rss_before),
                mib(rss_live)
            );
            anyhow::Ok(())
        })
    }
}

/// An error saying how a sync job that should still be running ended.
async fn ended_early(job: &mut SyncJob) -> anyhow::Error {
    match job.await {
        Ok(Ok(_)) => anyhow::anyhow!("the sync ended by itself"),
        Ok(Err(e)) => anyhow::anyhow!("the sync failed: {e}"),
        Err(e) => anyhow::anyhow!("the sync panicked: {e}"),
    }
}

/// The write load of the sync measurement, on one collection: 30% inserts of new `_id`s, 30%
/// updates (`$inc` and `$set`), 20% replaces (a whole document of the same size) and 20%
/// deletes, each of a random `_id` among all ever inserted (one deleted before changes nothing
/// and makes no event). Each client awaits every write before its next.
#[derive(Clone)]
struct MixedLoad {
    coll: mongodb::Collection<RawDocumentBuf>,
    /// The next new `_id`: every `_id` below it was inserted once.
    next_id: Arc<AtomicI64>,
    /// Acknowledged writes that changed a document: each made one change event at the source.
    changes: Arc<AtomicU64>,
    doc_size: usize,
    /// The next client's random seed (the same sequence in every run).
    seeds: Arc<AtomicU64>,
}

/// Writes made by a load and how long it took.
#[derive(Debug, Clone, Copy)]
struct Written {
    writes: u64,
    secs: f64,
}

impl Written {
    fn per_sec(self) -> f64 {
        self.writes as f64 / self.secs
    }
}

impl MixedLoad {
    /// A load on `ns` with a client of its own. Without `retryable`, its writes are not
    /// retryable writes: SecantusDB 0.7.0b3 makes every retryable write slower than the last
    /// (about 1,000 single inserts/s on a new server, 100-180/s after 10,000 of them, for good),
    /// which would make the source's own rate drift through the run.
    async fn new(
        uri: &str,
        retryable: bool,
        ns: &Namespace,
        first_new: i64,
        doc_size: usize,
    ) -> Result<Self> {
        let mut options = mongodb::options::ClientOptions::parse(uri).await?;
        options.retry_writes = Some(retryable);
        let client = Client::with_options(options)?;
        Ok(MixedLoad {
            coll: client.database(&ns.db).collection(&ns.coll),
            next_id: Arc::new(AtomicI64::new(first_new)),
            changes: Arc::new(AtomicU64::new(0)),
            doc_size,
            seeds: Arc::new(AtomicU64::new(1)),
        })
    }

    /// One write of the mix.
    async fn write(&self, rng: &mut fastrand::Rng) -> Result<()> {
        let id = rng.i64(0..self.next_id.load(Ordering::Relaxed));
        let changed = match rng.u8(0..10) {
            0..=2 => {
                let new = self.next_id.fetch_add(1, Ordering::Relaxed);
                self.coll
                    .insert_one(sample_document(new, self.doc_size))
                    .await?;
                1
            }
            3..=5 => {
                let change = doc! { "$inc": { "qty": 1 }, "$set": { "touched": rng.i64(..) } };
                let done = self.coll.update_one(doc! { "_id": id }, change).await?;
                done.matched_count
            }
            6..=7 => {
                let mut replacement = sample_document(id, self.doc_size);
                replacement.append("version", rng.i64(..));
                let done = self
                    .coll
                    .replace_one(doc! { "_id": id }, replacement)
                    .await?;
                done.matched_count
            }
            _ => {
                self.coll
                    .delete_one(doc! { "_id": id })
                    .await?
                    .deleted_count
            }
        };
        self.changes.fetch_add(changed, Ordering::Relaxed);
        Ok(())
    }

    /// `clients` clients write for `length`, each as fast as the server answers, or together at
    /// most `rate` writes/s ([`Pacer`]); returns once every write is acknowledged.
    async fn run(&self, clients: usize, rate: Option<f64>, length: Duration) -> Result<Written> {
        let started = Instant::now();
        let deadline = started + length;
        let pacer = rate.map(|rate| Arc::new(Pacer::new(rate)));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (load, pacer) = (self.clone(), pacer.clone());
            let mut rng = fastrand::Rng::with_seed(self.seeds.fetch_add(1, Ordering::Relaxed));
            set.spawn(async move {
                let mut writes = 0u64;
                while Instant::now() < deadline {
                    if let Some(pacer) = &pacer {
                        if !pacer.wait(deadline).await {
                            break;
                        }
                    }
                    load.write(&mut rng).await?;
                    writes += 1;
                }
                anyhow::Ok(writes)
            });
        }
        let mut writes = 0;
        while let Some(done) = set.join_next().await {
            writes += done??;
        }
        Ok(Written {
            writes,
            secs: started.elapsed().as_secs_f64(),
        })
    }
}

/// Paces writes to a rate, token-bucket style: each write takes the slot `1/rate` after the
/// one before, and clients that fell behind catch up by at most [`PACER_BURST`] of writes.
struct Pacer {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next slot; `false` (at once) if it comes after `deadline`.
    async fn wait(&self, deadline: Instant) -> bool {
        let slot = {
            let mut next = self.next.lock().unwrap();
            let now = Instant::now();
            let slot = (*next).max(now.checked_sub(PACER_BURST).unwrap_or(now));
            *next = slot + self.interval;
            slot
        };
        if slot >= deadline {
            return false;
        }
        tokio::time::sleep_until(slot.into()).await;
        true
    }
}

/// The load's changes and the sync's applied events side by side, sampled through the steps.
struct Timeline {
    /// The counters when the timeline began (changes made and events applied before).
    base: (u64, u64),
    samples: Vec<Sample>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Changes the load made since the timeline began.
    changes: u64,
    /// Change events the sync applied since the timeline began.
    events: u64,
    /// The sync's own `lag_secs`.
    lag: f64,
}

impl Timeline {
    fn new(load: &MixedLoad, stats: &JobStats) -> Self {
        let base = (
            load.changes.load(Ordering::Relaxed),
            stats.sync.snapshot().map_or(0, |s| s.events),
        );
        Timeline {
            base,
            samples: Vec::new(),
        }
    }

    fn now(&self, load: &MixedLoad, stats: &JobStats) -> Sample {
        let sync = stats.sync.snapshot();
        Sample {
            at: Instant::now(),
            changes: load.changes.load(Ordering::Relaxed) - self.base.0,
            events: sync.as_ref().map_or(0, |s| s.events) - self.base.1,
            lag: sync.map_or(0.0, |s| s.lag_secs),
        }
    }

    /// How far behind the destination was at sample `i`, measured rather than reported: the
    /// seconds since the load had made as many changes as the sync had applied then (0 when it
    /// had applied them all). Up to one sampling interval short.
    fn delay(&self, i: usize) -> f64 {
        let s = self.samples[i];
        if s.events >= s.changes {
            return 0.0;
        }
        let reached = self.samples[..=i].partition_point(|p| p.changes < s.events);
        (s.at - self.samples[reached].at).as_secs_f64()
    }
}

/// What one step of the sync measurement saw.
struct SyncStep {
    target: f64,
    clients: usize,
    written: Written,
    /// Events the sync applied per second during the step (its backlog's too).
    events_per_sec: f64,
    /// The sync's own `lag_secs`, sampled every 100 ms.
    max_lag: f64,
    mean_lag: f64,
    /// [`Timeline::delay`] at the same samples.
    max_delay: f64,
    mean_delay: f64,
    /// Samples at which the sync's `lag_secs` was under [`LAG_LIMIT_SECS`] while the measured
    /// delay was over it (the sync said it was level while changes waited), of `samples`.
    hidden: usize,
    samples: usize,
    /// This process's resident memory at the step's end (sync and load generator).
    rss: Option<u64>,
}

/// One step: `clients` clients write the mixed load paced to `target` writes/s for
/// [`STEP_LENGTH`], while the sync's `lag_secs` and its progress against the load's changes
/// are sampled every 100 ms into `timeline`; also the events applied per second and this
/// process's memory at the end.
async fn sync_step(
    load: &MixedLoad,
    stats: &JobStats,
    timeline: &mut Timeline,
    target: f64,
    clients: usize,
) -> Result<SyncStep> {
    let first = timeline.samples.len();
    let before = timeline.now(load, stats).events;
    let started = Instant::now();
    let sampling = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while started.elapsed() < STEP_LENGTH {
            tick.tick().await;
            let sample = timeline.now(load, stats);
            timeline.samples.push(sample);
        }
    };
    let (written, ()) = tokio::join!(load.run(clients, Some(target), STEP_LENGTH), sampling);
    let written = written?;
    let secs = started.elapsed().as_secs_f64();
    let applied = timeline.now(load, stats).events - before;
    let range = first..timeline.samples.len();
    let lags: Vec<f64> = timeline.samples[range.clone()]
        .iter()
        .map(|s| s.lag)
        .collect();
    let delays: Vec<f64> = range.map(|i| timeline.delay(i)).collect();
    let hidden = lags
        .iter()
        .zip(&delays)
        .filter(|(lag, delay)| **lag < LAG_LIMIT_SECS && **delay > LAG_LIMIT_SECS)
        .count();
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(SyncStep {
        target,
        clients,
        written,
        events_per_sec: applied as f64 / secs,
        max_lag: max(&lags),
        mean_lag: mean(&lags),
        max_delay: max(&delays),
        mean_delay: mean(&delays),
        hidden,
        samples: delays.len(),
        rss: rss_bytes(),
    })
}

/// Seconds from the writes' end to two moments of the sync.
struct Settled {
    /// It has applied as many events as the load made changes.
    applied: f64,
    /// It says it is level with the source: `caught_up` and a `lag_secs` of 0.
    caught_up: f64,
}

/// The times from `stopped` (the last write acknowledged) until the sync applied every change
/// and until it said it was caught up (polled every 10 ms).
async fn settled_after(
    load: &MixedLoad,
    stats: &JobStats,
    timeline: &Timeline,
    stopped: Instant,
) -> Result<Settled> {
    let (mut applied, mut caught_up) = (None, None);
    loop {
        let secs = stopped.elapsed().as_secs_f64();
        let now = timeline.now(load, stats);
        if applied.is_none() && now.events >= now.changes {
            applied = Some(secs);
        }
        let level = stats
            .sync
            .snapshot()
            .is_some_and(|s| s.caught_up && s.lag_secs == 0.0);
        if caught_up.is_none() && level {
            caught_up = Some(secs);
        }
        if let (Some(applied), Some(caught_up)) = (applied, caught_up) {
            return Ok(Settled { applied, caught_up });
        }
        if stopped.elapsed() > SYNC_LIMIT {
            bail!(
                "{} of {} changes applied, caught up: {caught_up:?}, {SYNC_LIMIT:?} after the writes stopped",
                now.events,
                now.changes
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the destination first equalled the source after the writes stopped.
struct Converged {
    /// Seconds from the writes' end to the end of the first equal read of the destination (an
    /// upper bound: late by up to one read and one pause).
    secs: f64,
    docs: usize,
    /// How long that read of the destination took.
    read_secs: f64,
}

/// The time from `stopped` until the destination's documents equal the source's, byte for
/// byte in `_id` order. The source no longer changes, so it is read once; the destination is
/// read again half a second after each read that differed.
async fn equal_after(
    src: &Client,
    dst: &Client,
    ns: &Namespace,
    stopped: Instant,
) -> Result<Converged> {
    let want = dump(src, ns).await?;
    loop {
        let reading = Instant::now();
        let have = dump(dst, ns).await?;
        if same(&want, &have) {
            return Ok(Converged {
                secs: stopped.elapsed().as_secs_f64(),
                docs: want.len(),
                read_secs: reading.elapsed().as_secs_f64(),
            });
        }
        if stopped.elapsed() > SYNC_LIMIT {
            bail!(
                "{} documents at the source, {} at the destination: not equal {SYNC_LIMIT:?} after the writes stopped",
                want.len(),
                have.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every document of `ns`, raw, in `_id` order.
async fn dump(client: &Client, ns: &Namespace) -> Result<Vec<RawDocumentBuf>> {
    Ok(client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?)
}

/// The same documents, byte for byte, in the same order.
fn same(a: &[RawDocumentBuf], b: &[RawDocumentBuf]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_bytes() == y.as_bytes())
}

/// This process's resident memory now (Linux `VmRSS`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A synthetic load written to the destination under a live rate limit.
struct LimitedRun {
    control: Arc<Control>,
    stats: Arc<JobStats>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), CopyError>>,
}

impl LimitedRun {
    fn start(dst: &Client, workers: usize, rate: f64, docs: u64) -> Self {
        let ns = Namespace::new("bench", format!("throttle{rate}"));
        let stats = Arc::new(JobStats::new([(ns.clone(), ns)], workers));
        let limits = Limits {
            rate: Some(rate),
            rate_bytes: None,
        };
        let control = Arc::new(Control::with_throttle(workers, Throttle::new(limits)));
        let cancel = CancellationToken::new();
        let source = SyntheticSource {
            docs,
            doc_size: 1024,
            strategy: Strategy::Stream,
        };
        let engine = Engine::new(
            Arc::new(source),
            Arc::new(MongoSink::new(dst.clone())),
            stats.clone(),
        )
        .with_batch_size(100)
        .with_control(control.clone());
        let task = tokio::spawn(engine.run(cancel.clone()));
        LimitedRun {
            control,
            stats,
            cancel,
            task,
        }
    }

    fn docs(&self) -> u64 {
        self.stats.snapshot().docs
    }

    /// The document count every 50 ms for `length`.
    async fn sample(&self, length: Duration) -> Vec<u64> {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut samples = vec![];
        for _ in 0..=(length.as_millis() / 50) {
            tick.tick().await;
            samples.push(self.docs());
        }
        samples
    }

    async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        match self.task.await? {
            Ok(()) | Err(CopyError::Stopped) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn connect(side: Side, uri: &str) -> Result<Client> {
    Ok(mongo::connect(side, uri, 64, Duration::from_secs(30)).await?)
}

/// Docs per second of an engine run.
async fn timed(run: impl std::future::Future<Output = Result<u64>>) -> Result<f64> {
    let started = Instant::now();
    let n = run.await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Fills `ns` with `n` sample documents (through the engine, from the synthetic source).
/// The two kinds of documents of issue 14, both about 1 KiB.
#[derive(Debug, Clone, Copy)]
enum DocKind {
    /// `mongoferry sample` documents: `i64` `_id`, typed fields, binary padding.
    Sample,
    /// What pymongo writes for `{_id: i, n: i, pad: "x" * 1000}`: `i32` numbers, string padding.
    Pymongo,
}

impl DocKind {
    fn name(self) -> &'static str {
        match self {
            DocKind::Sample => "sample",
            DocKind::Pymongo => "pymongo",
        }
    }
}

/// Fills `ns` with `n` documents of the shape pymongo writes for `{_id: i, n: i, pad: "x"*1000}`
/// (byte for byte: pymongo encodes ints that fit as `int32`).
async fn seed_pymongo_shape(client: &Client, ns: &Namespace, n: u64) -> Result<()> {
    let coll = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    coll.drop().await?;
    let started = Instant::now();
    let pad = "x".repeat(1000);
    let mut next = 0u64;
    while next < n {
        let end = (next + 5000).min(n);
        let docs: Vec<RawDocumentBuf> = (next..end)
            .map(|i| rawdoc! { "_id": i as i32, "n": i as i32, "pad": pad.as_str() })
            .collect();
        coll.insert_many(docs).ordered(false).await?;
        next = end;
    }
    eprintln!(
        "seeded {ns} with {n} pymongo-shaped docs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn seed(client: &Client, ns: &Namespace, n: u64, doc_size: usize) -> Result<()> {
    let coll = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    coll.drop().await?;
    let started = Instant::now();
    run_engine(
        SyntheticSource {
            docs: n,
            doc_size,
            strategy: Strategy::Stream,
        },
        MongoSink::new(client.clone()),
        ns,
        4,
        1000,
    )
    .await?;
    let count = coll.count_documents(doc! {}).await?;
    if count != n {
        bail!("seeding {ns}: expected {n} documents, found {count}");
    }
    eprintln!(
        "seeded {ns} with {n} docs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fills `ns` with `n` sample documents of `doc_size` bytes with a field `old`: `true` for
/// the even `_id`s (the move measurement's selection), `false` for the others.
async fn seed_selection(client: &Client, ns: &Namespace, n: u64, doc_size: usize) -> Result<()> {
    let coll = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    coll.drop().await?;
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        let end = (next + 1000).min(n);
        let docs: Vec<RawDocumentBuf> = (next..end)
            .map(|i| {
                // `old` and its boolean take 6 bytes: the document stays `doc_size` long.
                let mut doc = sample_document(i as i64, doc_size.saturating_sub(6));
                doc.append("old", i % 2 == 0);
                doc
            })
            .collect();
        coll.insert_many(docs).ordered(false).await?;
        next = end;
    }
    let count = coll.count_documents(doc! {}).await?;
    if count != n {
        bail!("seeding {ns}: expected {n} documents, found {count}");
    }
    eprintln!(
        "seeded {ns} with {n} docs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fills `ns` with `n` sample documents whose padding is pseudo-random (incompressible).
async fn seed_random(client: &Client, ns: &Namespace, n: u64, doc_size: usize) -> Result<()> {
    let coll = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    coll.drop().await?;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut batch = Vec::with_capacity(1000);
    for id in 0..n as i64 {
        let mut doc = mongoferry::engine::source::synthetic::sample_document(id, 0);
        let overhead = doc.as_bytes().len() + 1 + "pad".len() + 1 + 4 + 1;
        let bytes = (0..doc_size.saturating_sub(overhead))
            .map(|_| {
                // xorshift64: cheap bytes no compressor can shrink.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        doc.append(
            "pad",
            mongodb::bson::Binary {
                subtype: mongodb::bson::spec::BinarySubtype::Generic,
                bytes,
            },
        );
        batch.push(doc);
        if batch.len() == 1000 {
            coll.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        coll.insert_many(batch).await?;
    }
    eprintln!("seeded {ns} with {n} docs of random padding");
    Ok(())
}

/// Reads the whole collection as fast as the server serves it; returns (docs/s, the documents).
async fn raw_scan(
    client: &Client,
    ns: &Namespace,
    batch_size: usize,
) -> Result<(f64, Vec<RawDocumentBuf>)> {
    let coll = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    let started = Instant::now();
    let docs: Vec<RawDocumentBuf> = coll
        .find(doc! {})
        .batch_size(batch_size as u32)
        .await?
        .try_collect()
        .await?;
    Ok((docs.len() as f64 / started.elapsed().as_secs_f64(), docs))
}

/// Seconds until the first batch of the sorted read arrives, for the same query the `stream`
/// producer sends (a server may build the whole result first).
async fn first_reply_secs(client: &Client, ns: &Namespace, batch_size: usize) -> Result<f64> {
    let started = Instant::now();
    let mut cursor = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .hint(Hint::Keys(doc! { "_id": 1 }))
        .batch_size(batch_size as u32)
        .await?;
    cursor.try_next().await?;
    let secs = started.elapsed().as_secs_f64();
    drop(cursor);
    Ok(secs)
}

/// Inserts the documents into a fresh collection with `workers` concurrent unordered inserts.
async fn raw_insert(
    client: &Client,
    docs: &[RawDocumentBuf],
    batch_size: usize,
    workers: usize,
) -> Result<f64> {
    let coll = client
        .database("bench")
        .collection::<RawDocumentBuf>("raw_insert");
    coll.drop().await?;
    client
        .database("bench")
        .create_collection("raw_insert")
        .await?;
    let n = docs.len();
    let batches: Vec<Vec<RawDocumentBuf>> = docs.chunks(batch_size).map(<[_]>::to_vec).collect();
    let queue = Arc::new(std::sync::Mutex::new(batches.into_iter()));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (coll, queue) = (coll.clone(), queue.clone());
        set.spawn(async move {
            loop {
                let next = queue.lock().unwrap().next();
                let Some(batch) = next else {
                    return Ok::<_, mongodb::error::Error>(());
                };
                coll.insert_many(batch).ordered(false).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    coll.drop().await?;
    Ok(rate)
}

/// Copies `ns` into an empty destination collection with the engine; returns docs/s.
async fn copy_rate(
    src: &Client,
    dst: &Client,
    ns: &Namespace,
    expected: u64,
    workers: usize,
    batch_size: usize,
    strategy: Strategy,
) -> Result<f64> {
    let started = Instant::now();
    let EngineRun {
        docs: copied,
        first_write,
    } = run_engine_observed(
        MongoSource::new(src.clone(), None, strategy),
        MongoSink::new(dst.clone()),
        ns,
        workers,
        batch_size,
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = copied as f64 / secs;
    let count = dst
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll)
        .count_documents(doc! {})
        .await?;
    if count != expected || copied != expected {
        bail!(
            "copy with {strategy}: {copied} copied, {count} at the destination, {expected} expected"
        );
    }
    let first = first_write.map_or(secs, |at| at.as_secs_f64());
    eprintln!(
        "copy ({strategy}): {copied} docs in {secs:.1}s: first write after {first:.2}s, then {:.0} docs/s",
        copied as f64 / (secs - first).max(1e-3)
    );
    Ok(rate)
}

async fn run_engine(
    source: impl Source + 'static,
    sink: impl Sink + 'static,
    ns: &Namespace,
    workers: usize,
    batch_size: usize,
) -> Result<u64> {
    Ok(run_engine_observed(source, sink, ns, workers, batch_size)
        .await?
        .docs)
}

/// What an engine run did: documents written, and when the first of them was acknowledged.
struct EngineRun {
    docs: u64,
    first_write: Option<Duration>,
}

async fn run_engine_observed(
    source: impl Source + 'static,
    sink: impl Sink + 'static,
    ns: &Namespace,
    workers: usize,
    batch_size: usize,
) -> Result<EngineRun> {
    let started = Instant::now();
    let stats = Arc::new(JobStats::new([(ns.clone(), ns.clone())], workers));
    let run = Engine::new(Arc::new(source), Arc::new(sink), stats.clone())
        .with_batch_size(batch_size)
        .with_control(Arc::new(Control::new(workers)))
        .run(CancellationToken::new());
    // Polled beside the run, so the time to the first write is split from the writing itself.
    let first_write = async {
        while stats.snapshot().docs == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed()
    };
    tokio::pin!(run, first_write);
    let mut seen = None;
    loop {
        tokio::select! {
            outcome = &mut run => {
                outcome?;
                break;
            }
            at = &mut first_write, if seen.is_none() => seen = Some(at),
        }
    }
    Ok(EngineRun {
        docs: stats.snapshot().docs,
        first_write: seen,
    })
}

/// Runs `mongoferry copy` as its own process and reads its peak memory from the JSON summary.
async fn copy_process_memory(
    from: &str,
    to: &str,
    ns: &Namespace,
    workers: usize,
    batch_size: usize,
    memory_limit: usize,
) -> Result<(u64, f64)> {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_mongoferry"));
    if !exe.exists() {
        bail!(
            "{} not found: build it with `cargo build --release`",
            exe.display()
        );
    }
    let dst_ns = format!("{}.{}_copy", ns.db, ns.coll);
    let output = tokio::process::Command::new(&exe)
        .args([
            "copy",
            "--from",
            from,
            "--to",
            to,
            "--json",
            "--quiet",
            "--no-state",
        ])
        .args(["--ns", &format!("{ns}:{dst_ns}")])
        .args([
            "--workers",
            &workers.to_string(),
            "--batch-size",
            &batch_size.to_string(),
            "--memory-limit",
            &memory_limit.to_string(),
        ])
        .kill_on_drop(true)
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "mongoferry copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let peak = summary["peak_rss_bytes"]
        .as_u64()
        .context("no peak_rss_bytes in summary")?;
    Ok((peak, summary["docs_per_sec"].as_f64().unwrap_or_default()))
}

/// The median of some measurements (the upper middle one for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
