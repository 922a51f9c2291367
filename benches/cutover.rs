//! The verified cutover of a sync (issue 28), measured side by side in one run.
//!
//! `cargo bench --bench cutover -- [--small 20000] [--large 200000] [--doc-size 200]`
//!
//! It starts a SecantusDB source, and a fresh destination server for each sync, and prints:
//! - **commit time against the data's size**: for `--small` and `--large` documents, a sync
//!   (in-process, continuous verification on) waits for `can_commit`, takes a write load for
//!   `--load-secs`, and is committed the moment the load stops; the time from the commit to a
//!   verified `committed` state, and the ratio of the two (goal: at most 1.3);
//! - **the verifier's cost**: the sync's apply capacity (paused while one client writes alone
//!   for 5 s, then resumed and timed until that backlog is applied), with `verify: "off"` and
//!   `"repair"`, in rounds of alternating order, each on new servers; the ratio (goal: at least
//!   0.85);
//! - **peak memory** through the large run, with a burst of `--recheck` updates applied at once
//!   (a recheck list of that many `_id`s): this process's peak RSS against the memory budget.
//!
//! Every commit's result is checked: both sides hold the same documents, byte for byte.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::TryStreamExt;
use mongodb::bson::{doc, rawdoc, RawDocumentBuf};
use mongodb::Client;
use mongoferry::engine::stats::{JobStats, SyncPhase};
use mongoferry::engine::{Control, CopyError};
use mongoferry::mongo::{self, Namespace, Side};
use mongoferry::run::copy::{self, CopySummary};
use mongoferry::spec::{JobSpec, Mode, VerifyMode};
use mongoferry::state::{FileStore, StateStore};
use mongoferry::testkit::TestServer;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Measure a sync's verified cutover")]
struct Args {
    /// Passed by `cargo bench` to every benchmark program.
    #[arg(long, hide = true)]
    bench: bool,
    #[arg(long, default_value_t = 20_000)]
    small: u64,
    #[arg(long, default_value_t = 200_000)]
    large: u64,
    #[arg(long, default_value_t = 200)]
    doc_size: usize,
    /// Seconds of write load before each commit.
    #[arg(long, default_value_t = 5)]
    load_secs: u64,
    /// `_id`s updated at once in the large run (the recheck list's length).
    #[arg(long, default_value_t = 50_000)]
    recheck: u64,
    /// Rounds of the verifier's cost (each: off and on, in alternating order).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Measure only the verifier's cost.
    #[arg(long)]
    capacity_only: bool,
}

const LIMIT: Duration = Duration::from_secs(600);

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let source = TestServer::start().context("start SecantusDB (run scripts/setup-test-env.sh)")?;
    println!(
        "cutover: {} and {} docs of {} B; load {} s; recheck burst {}; on {} cores",
        args.small,
        args.large,
        args.doc_size,
        args.load_secs,
        args.recheck,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let budget = mongoferry::engine::budget::DEFAULT_MEMORY_LIMIT;
    let mut commits = Vec::new();
    let sizes = match args.capacity_only {
        true => vec![],
        false => vec![(args.small, 0), (args.large, args.recheck)],
    };
    for (n, burst) in sizes {
        let destination = TestServer::start()?;
        let run = runtime.block_on(commit_run(&source.uri, &destination.uri, n, &args, burst))?;
        println!(
            "{n} docs: ready to commit {:.1} s after the start; load {} writes; commit -> verified \
             committed in {:.2} s ({} _ids compared again at the commit); peak recheck list {}; \
             peak RSS {:.1} MiB (before the sync {:.1} MiB; budget {:.0} MiB)",
            run.ready_secs,
            run.writes,
            run.commit_secs,
            run.rechecked,
            run.peak_recheck,
            mib(run.peak_rss),
            mib(run.rss_before),
            mib(budget as u64)
        );
        if burst > 0 {
            println!(
                "{n} docs: a burst of {burst} updates applied and every _id compared again in \
                 {:.1} s",
                run.drained_secs
            );
        }
        commits.push(run);
    }
    if let [small, large] = &commits[..] {
        commit_figures(&args, small, large, budget);
    }
    capacities(&runtime, &args)
}

fn commit_figures(args: &Args, small: &CommitRun, large: &CommitRun, budget: usize) {
    println!(
        "commit time, {} docs / {} docs: {:.2} (goal <= 1.3)",
        args.large,
        args.small,
        large.commit_secs / small.commit_secs
    );
    println!(
        "peak RSS growth through the {}-doc run with a recheck burst of {}: {:.1} MiB (budget {:.0} MiB)",
        args.large,
        args.recheck,
        mib(large.peak_rss.saturating_sub(large.rss_before)),
        mib(budget as u64)
    );
}

/// The verifier's cost: the sync's apply capacity with and without it.
fn capacities(runtime: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    // Each run on two new servers (a test server slows as its history grows), in the order
    // off, on, on, off, … so that a drift through the run weighs on both alike.
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        let order = match round % 2 {
            0 => [VerifyMode::Off, VerifyMode::Repair],
            _ => [VerifyMode::Repair, VerifyMode::Off],
        };
        for verify in order {
            let i = usize::from(verify != VerifyMode::Off);
            let (source, destination) = (TestServer::start()?, TestServer::start()?);
            let rate = runtime.block_on(capacity(
                &source.uri,
                &destination.uri,
                args.small,
                verify,
                args,
            ))?;
            println!(
                "round {}: verify {verify:?}: apply capacity {rate:.0} events/s",
                round + 1
            );
            rates[i].push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (off, on) = (mean(&rates[0]), mean(&rates[1]));
    println!(
        "apply capacity: verify off {off:.0} events/s, repair {on:.0} events/s: {:.2} (goal >= 0.85)",
        on / off
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

struct CommitRun {
    /// From the burst to its last `_id` compared again (0: no burst).
    drained_secs: f64,
    ready_secs: f64,
    writes: u64,
    commit_secs: f64,
    rechecked: u64,
    peak_recheck: u64,
    peak_rss: u64,
    rss_before: u64,
}

/// A sync of `n` documents: ready to commit, a write load (and a burst of `burst` updates), then
/// the commit the moment the load stops.
async fn commit_run(from: &str, to: &str, n: u64, args: &Args, burst: u64) -> Result<CommitRun> {
    let data = Namespace::new("bench", format!("cut{n}"));
    let src = connect(Side::Source, from).await?;
    seed(&src, &data, n, args.doc_size).await?;
    let state = tempfile::tempdir()?;
    let rss_before = rss_bytes();
    let started = Instant::now();
    let (job, stats, _control, commit) =
        start_sync(from, to, &data, VerifyMode::Repair, state.path()).await?;
    let mut job = Some(job);
    let sampler = Sampler::start(stats.clone());
    wait_ready(&stats, job.as_mut().unwrap()).await?;
    let ready_secs = started.elapsed().as_secs_f64();
    let coll = src
        .database(&data.db)
        .collection::<RawDocumentBuf>(&data.coll);
    let mut drained_secs = 0.0;
    if burst > 0 {
        let burst_at = Instant::now();
        coll.update_many(
            doc! { "_id": { "$lt": burst as i64 } },
            doc! { "$inc": { "burst": 1 } },
        )
        .await?;
        // The burst applied and every `_id` of it compared again: the list is empty once more.
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_drained(&stats, job.as_mut().unwrap()).await?;
        drained_secs = burst_at.elapsed().as_secs_f64();
    }
    let writes = load(&coll, n as i64, Duration::from_secs(args.load_secs)).await?;
    commit.cancel();
    let asked = Instant::now();
    let summary = finish(job.take().unwrap()).await?;
    let commit_secs = asked.elapsed().as_secs_f64();
    let (peak_recheck, peak_rss) = sampler.stop().await;
    let sync = summary
        .sync
        .context("a sync's summary without its progress")?;
    let verification = sync.verification.context("no verification")?;
    if sync.phase != SyncPhase::Committed || verification.verified_through.is_none() {
        bail!(
            "not a verified commit: {:?}, {:?}",
            sync.phase,
            verification.unproven
        );
    }
    let dst = connect(Side::Destination, to).await?;
    let (a, b) = tokio::try_join!(dump(&src, &data), dump(&dst, &data))?;
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.as_bytes() != y.as_bytes()) {
        bail!(
            "committed, but the sides differ: {} and {} documents",
            a.len(),
            b.len()
        );
    }
    mongo::close(src).await;
    mongo::close(dst).await;
    Ok(CommitRun {
        drained_secs,
        ready_secs,
        writes,
        commit_secs,
        rechecked: verification.rechecked_at_commit.unwrap_or(0),
        peak_recheck,
        peak_rss,
        rss_before: rss_before.unwrap_or(0),
    })
}

/// The sync's apply capacity: paused while one client writes alone for 5 s, then resumed and
/// timed until that backlog is applied.
async fn capacity(from: &str, to: &str, n: u64, verify: VerifyMode, args: &Args) -> Result<f64> {
    let data = Namespace::new("bench", "capacity");
    let src = connect(Side::Source, from).await?;
    seed(&src, &data, n, args.doc_size).await?;
    let state = tempfile::tempdir()?;
    let (mut job, stats, control, commit) =
        start_sync(from, to, &data, verify, state.path()).await?;
    wait_ready(&stats, &mut job).await?;
    control.pause();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = |stats: &JobStats| stats.sync.snapshot().map_or(0, |s| s.events);
    let before = events(&stats);
    let coll = src
        .database(&data.db)
        .collection::<RawDocumentBuf>(&data.coll);
    let writes = load(&coll, n as i64, Duration::from_secs(5)).await?;
    control.resume();
    let resumed = Instant::now();
    while events(&stats) < before + writes {
        if resumed.elapsed() > LIMIT || job.is_finished() {
            bail!("the backlog was not applied");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = writes as f64 / resumed.elapsed().as_secs_f64();
    commit.cancel();
    finish(job).await?;
    mongo::close(src).await;
    Ok(rate)
}

type SyncJob = tokio::task::JoinHandle<Result<CopySummary, CopyError>>;

async fn start_sync(
    from: &str,
    to: &str,
    data: &Namespace,
    verify: VerifyMode,
    state: &Path,
) -> Result<(SyncJob, Arc<JobStats>, Arc<Control>, CancellationToken)> {
    let spec = JobSpec {
        mode: Some(Mode::Sync),
        verify: Some(verify),
        commit_watch_secs: Some(0.0),
        ..JobSpec::new(from, to, &[&data.to_string()])
    }
    .validate()
    .map_err(|e| anyhow::anyhow!(e))?;
    let store: Arc<dyn StateStore> = Arc::new(FileStore::new(state.join("state.db")));
    let commit = CancellationToken::new();
    let prepared = copy::prepare(&spec, store)
        .await?
        .with_commit(commit.clone());
    let (stats, control) = (prepared.stats(), prepared.control());
    let job = tokio::spawn(prepared.run(CancellationToken::new()));
    Ok((job, stats, control, commit))
}

/// Until nothing waits to be compared again, and the sync is ready to commit.
async fn wait_drained(stats: &JobStats, job: &mut SyncJob) -> Result<()> {
    let started = Instant::now();
    loop {
        let sync = stats.sync.snapshot();
        let pending = sync
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .map_or(u64::MAX, |v| v.recheck_pending);
        if pending == 0 && sync.as_ref().is_some_and(|s| s.can_commit.ok) {
            return Ok(());
        }
        if job.is_finished() || started.elapsed() > LIMIT {
            bail!("the recheck list did not drain: {sync:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Until the sync is ready to commit (verify off: live).
async fn wait_ready(stats: &JobStats, job: &mut SyncJob) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(sync) = stats.sync.snapshot() {
            if sync.can_commit.ok {
                return Ok(());
            }
        }
        if job.is_finished() || started.elapsed() > LIMIT {
            bail!(
                "the sync was not ready to commit: {:?}",
                stats.sync.snapshot()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn finish(job: SyncJob) -> Result<CopySummary> {
    match tokio::time::timeout(LIMIT, job).await {
        Err(_) => bail!("the sync did not end within {LIMIT:?}"),
        Ok(Err(e)) => bail!("the sync panicked: {e}"),
        Ok(Ok(Err(e))) => bail!("the sync failed: {e}"),
        Ok(Ok(Ok(summary))) => Ok(summary),
    }
}

/// One client writing for `length`: an update of a random existing `_id` or an insert of a new
/// one (each changes exactly one document: one event); how many writes.
async fn load(coll: &mongodb::Collection<RawDocumentBuf>, n: i64, length: Duration) -> Result<u64> {
    let started = Instant::now();
    let (mut writes, mut next) = (0u64, n + 1_000_000);
    while started.elapsed() < length {
        if fastrand::u8(0..10) < 7 {
            let id = fastrand::i64(0..n);
            coll.update_one(doc! { "_id": id }, doc! { "$inc": { "n": 1 } })
                .await?;
        } else {
            next += 1;
            coll.insert_one(rawdoc! { "_id": next, "n": 0 }).await?;
        }
        writes += 1;
    }
    Ok(writes)
}

/// `n` documents of about `size` bytes, `_id` 0..n.
async fn seed(client: &Client, ns: &Namespace, n: u64, size: usize) -> Result<()> {
    let coll = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll);
    coll.drop().await?;
    let pad = "x".repeat(size.saturating_sub(40));
    let mut next = 0u64;
    while next < n {
        let end = (next + 5_000).min(n);
        let docs: Vec<RawDocumentBuf> = (next..end)
            .map(|i| rawdoc! { "_id": i as i64, "n": 0_i64, "pad": pad.as_str() })
            .collect();
        coll.insert_many(docs).await?;
        next = end;
    }
    Ok(())
}

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

async fn connect(side: Side, uri: &str) -> Result<Client> {
    Ok(mongo::connect(side, uri, 16, Duration::from_secs(30)).await?)
}

/// This process's resident memory now (Linux `VmRSS`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples the recheck list's length and this process's RSS every 50 ms; their peaks.
struct Sampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(stats: Arc<JobStats>) -> Sampler {
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let (mut recheck, mut rss) = (0, 0);
            while !until.is_cancelled() {
                let pending = stats
                    .sync
                    .snapshot()
                    .and_then(|s| s.verification)
                    .map_or(0, |v| v.recheck_pending);
                recheck = recheck.max(pending);
                rss = rss.max(rss_bytes().unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (recheck, rss)
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.cancel();
        self.task.await.unwrap_or((0, 0))
    }
}
