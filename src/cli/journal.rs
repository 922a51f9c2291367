//! The `mongoferry journal` commands: `inspect`, `replay` and `export`.
//!
//! In: parsed arguments. Out: a report, a replay or an export, and an exit status through
//! [`Failure`] (mapped in `cli.rs`): 0 done, 1 failed or damaged, 2 invalid input, 130
//! interrupted. A torn tail is a warning for `replay` and `export` (the whole records before it
//! are used) and damage for `inspect`; corruption fails all three before anything is written.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::terminal::{human_bytes, run_in_terminal, transform_key, Failure, EXIT_DIFFERENT};
use crate::engine::control::throttle::Limits;
use crate::engine::{DEFAULT_BATCH_SIZE, DEFAULT_WORKERS};
use crate::journal::export::{self, ExportError, ExportFormat};
use crate::journal::reader::{Health, Scan};
use crate::journal::{format_utc, JournalError, JournalState};
use crate::run::replay::{self, ReplaySpec, ReplaySummary};
use crate::state::atomic::write_atomic;

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Show what a journal holds and verify every checksum (exit status 1 when it is damaged).
    Inspect(InspectArgs),
    /// Apply a journal's writes to a server again, idempotently, with a copy's throttle and
    /// progress.
    Replay(ReplayArgs),
    /// Write a journal's documents as canonical Extended JSON lines (for mongoimport) or as
    /// concatenated BSON (for mongorestore and bsondump).
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The journal directory.
    pub dir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The journal directory.
    pub dir: PathBuf,
    /// Destination connection string.
    #[arg(long, env = "MONGOFERRY_TO", hide_env_values = true)]
    pub to: String,
    /// Journal namespace to replay, `db.coll[:db2.coll2]` or `db.*[:db2]`; repeatable
    /// [default: every namespace of the journal, under its own name].
    #[arg(long = "ns", value_name = "SRC[:DST]")]
    pub namespaces: Vec<String>,
    /// Concurrent workers writing to the destination.
    #[arg(long, default_value_t = DEFAULT_WORKERS)]
    pub workers: usize,
    /// Documents per batch.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Seconds to wait for the server to answer before giving up.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Write at most this many documents per second.
    #[arg(long, value_name = "DOCS")]
    pub rate: Option<f64>,
    /// Write at most this many bytes (of documents) per second.
    #[arg(long, value_name = "BYTES")]
    pub rate_bytes: Option<f64>,
    /// Transform the journal's documents on their way (the copy's `--transform`; a journal
    /// of a transformed copy already holds the transformed documents).
    #[arg(long, value_name = "FILE", value_parser = crate::spec::TransformConfig::from_file)]
    pub transform: Option<crate::spec::TransformConfig>,
    /// The key of the transform's `hmac` steps (or MONGOFERRY_TRANSFORM_KEY).
    #[arg(long, value_name = "PATH")]
    pub transform_key_file: Option<PathBuf>,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The journal directory.
    pub dir: PathBuf,
    /// `ndjson`: canonical Extended JSON, one document per line; `bson`: concatenated BSON.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The namespace to export (required when the journal holds more than one).
    #[arg(long, value_name = "DB.COLL")]
    pub ns: Option<String>,
    /// Write to this file (replaced only once the export is complete) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn run(command: JournalCommand) -> Result<(), Failure> {
    match command {
        JournalCommand::Inspect(args) => inspect(args).await,
        JournalCommand::Replay(args) => run_replay(args).await,
        JournalCommand::Export(args) => run_export(args).await,
    }
}

async fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let scan = replay::verify(args.dir).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&scan).expect("a scan serialises")
        );
    } else {
        print!("{}", report(&scan));
    }
    match scan.health {
        Health::Intact => Ok(()),
        Health::Torn => Err(Failure::new(
            format!("{}", scan.torn_tail.as_ref().expect("torn")),
            1,
        )),
        Health::Corrupt => Err(scan.corruption_error().expect("corrupt").into()),
    }
}

/// The human-readable `inspect` report.
pub fn report(scan: &Scan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let state = match scan.state {
        JournalState::Open => "open (a writer is at work, or stopped without closing it)",
        JournalState::Closed => "closed",
    };
    let _ = writeln!(out, "journal {}: {state}", scan.dir.display());
    let _ = writeln!(out, "runs: {}", scan.runs);
    // Consecutive segments of one transform as one range: a long journal stays one line each.
    let mut ranges: Vec<(&str, &str, &str)> = Vec::new();
    let mut previous = None;
    for s in &scan.segments {
        let transform = s.transform.as_deref();
        match (ranges.last_mut(), transform) {
            (Some((_, last, _)), Some(_)) if previous == transform => *last = &s.file,
            (_, Some(transform)) => ranges.push((&s.file, &s.file, transform)),
            (_, None) => {}
        }
        previous = transform;
    }
    let transformed: Vec<String> = ranges
        .iter()
        .map(|(first, last, transform)| match first == last {
            true => format!("{first} by transform {transform}"),
            false => format!("{first} to {last} by transform {transform}"),
        })
        .collect();
    if !transformed.is_empty() {
        let _ = writeln!(
            out,
            "transformed (replay without --transform): {}",
            transformed.join(", ")
        );
    }
    let time = |ms: Option<i64>| ms.map_or("-".to_string(), format_utc);
    let _ = writeln!(
        out,
        "\n{:<20} {:>4} {:<7} {:>7} {:>10} {:>11}  {:<24}  {:<24}",
        "segment", "run", "state", "frames", "records", "bytes", "first write", "last write"
    );
    for s in &scan.segments {
        let _ = writeln!(
            out,
            "{:<20} {:>4} {:<7} {:>7} {:>10} {:>11}  {:<24}  {:<24}",
            s.file,
            s.run,
            format!("{:?}", s.state).to_lowercase(),
            s.frames,
            s.records,
            human_bytes(s.bytes),
            time(s.first_ms),
            time(s.last_ms)
        );
    }
    let _ = writeln!(out, "\nnamespaces:");
    if scan.namespaces.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (ns, n) in &scan.namespaces {
        let _ = writeln!(out, "  {ns:<40} {n:>10} records");
    }
    let per_record = if scan.records > 0 {
        format!(
            ", {:.1} bytes per record, {:.1}x smaller than the documents",
            scan.bytes as f64 / scan.records as f64,
            scan.document_bytes as f64 / scan.bytes.max(1) as f64
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\nrecords: {} in {} frames; {} on disk for {} of documents{per_record}",
        scan.records,
        scan.frames,
        human_bytes(scan.bytes),
        human_bytes(scan.document_bytes),
    );
    let _ = writeln!(
        out,
        "time span: {} .. {}",
        time(scan.first_ms),
        time(scan.last_ms)
    );
    let status = match scan.health {
        Health::Intact => format!("intact, all {} frames verified", scan.frames),
        Health::Torn => format!(
            "TORN TAIL: {}",
            scan.torn_tail.as_ref().expect("a torn scan has a tail")
        ),
        Health::Corrupt => format!(
            "CORRUPT: {} ({} frames before it verified)",
            scan.corruption.as_ref().expect("a corrupt scan").message,
            scan.frames
        ),
    };
    let _ = writeln!(out, "checksums: {status}");
    out
}

async fn run_replay(args: ReplayArgs) -> Result<(), Failure> {
    let mut spec = ReplaySpec::new(
        args.dir,
        args.to,
        &args.namespaces,
        args.workers,
        args.batch_size,
        args.connect_timeout,
        Limits {
            rate: args.rate,
            rate_bytes: args.rate_bytes,
        },
    )?;
    if let Some(transform) = &args.transform {
        let rules = transform.rules().map_err(crate::spec::SpecError)?;
        spec.transform = Some((rules, transform_key(&args.transform_key_file)?));
    }
    let prepared = replay::prepare(&spec).await?;
    if let Some(torn) = prepared.torn_tail() {
        eprintln!("warning: {torn}");
    }
    if !args.quiet {
        for (src, dst) in prepared.namespaces() {
            eprintln!("{src} -> {dst}");
        }
    }
    let stats = prepared.stats();
    let outcome = run_in_terminal((stats, None), args.quiet, |cancel| prepared.run(cancel)).await;
    let summary = outcome.map_err(|e| match e {
        crate::engine::CopyError::Stopped => Failure::new(
            "interrupted; the replay is incomplete (run it again to finish)".into(),
            130,
        ),
        other => other.into(),
    })?;
    print_replay_summary(&summary, args.json);
    if summary.failed > 0 {
        return Err(Failure::new(
            format!(
                "replayed with {} failed documents: the destination refused them (reasons in the log above; the journal still holds them)",
                summary.failed
            ),
            EXIT_DIFFERENT,
        ));
    }
    Ok(())
}

fn print_replay_summary(summary: &ReplaySummary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serialises")
        );
        return;
    }
    for ns in &summary.namespaces {
        println!(
            "{} -> {}: {} docs, {}",
            ns.source,
            ns.destination,
            ns.docs,
            human_bytes(ns.bytes)
        );
    }
    println!(
        "replayed {} docs ({}) in {:.1}s: {:.0} docs/s",
        summary.docs,
        human_bytes(summary.bytes),
        summary.seconds,
        summary.docs_per_sec
    );
}

/// The namespace an export writes: the one asked for, or the journal's only one.
fn export_namespace(scan: &Scan, asked: Option<String>) -> Result<Option<String>, Failure> {
    match asked {
        Some(ns) if scan.namespaces.contains_key(&ns) => Ok(Some(ns)),
        Some(ns) => Err(JournalError::NamespaceNotFound {
            dir: scan.dir.clone(),
            ns,
            held: held(scan),
        }
        .into()),
        None if scan.namespaces.len() <= 1 => Ok(scan.namespaces.keys().next().cloned()),
        None => Err(Failure::new(
            format!(
                "--ns: the journal holds {} namespaces ({}); mongoimport and mongorestore read \
                 one collection per file, so name the one to export",
                scan.namespaces.len(),
                held(scan)
            ),
            2,
        )),
    }
}

fn held(scan: &Scan) -> String {
    scan.namespaces
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run_export(args: ExportArgs) -> Result<(), Failure> {
    let scan = replay::verify(args.dir.clone()).await?;
    if let Some(corrupt) = scan.corruption_error() {
        return Err(corrupt.into());
    }
    let Some(ns) = export_namespace(&scan, args.ns)? else {
        eprintln!("the journal holds no records; nothing to export");
        return Ok(());
    };
    if let Some(torn) = &scan.torn_tail {
        eprintln!("warning: {torn}");
    }
    let (dir, records, format, out) = (args.dir, scan.records, args.format, args.out);
    let exported = tokio::task::spawn_blocking(move || match out {
        Some(path) => export_to_file(&dir, &ns, records, format, &path),
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
            export::export(&dir, &ns, records, format, &mut out, "stdout")
        }
    })
    .await
    .map_err(|e| Failure::new(format!("export failed: {e}"), 1))?
    .map_err(|e| Failure::new(e.to_string(), 1))?;
    eprintln!("exported {exported} documents");
    Ok(())
}

/// Exports into a temporary file beside `path`, renamed over it once complete.
fn export_to_file(
    dir: &Path,
    ns: &str,
    records: u64,
    format: ExportFormat,
    path: &Path,
) -> Result<u64, ExportError> {
    let target = path.display().to_string();
    let failed = |source| ExportError::Write {
        target: target.clone(),
        source,
    };
    write_atomic(
        path,
        |out| export::export(dir, ns, records, format, out, &target),
        failed,
    )
}

impl From<JournalError> for Failure {
    fn from(e: JournalError) -> Self {
        Failure::new(e.to_string(), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::writer::SegmentWriter;
    use crate::journal::{reader::scan, test_batch, JournalConfig};

    /// A run of `frames` frames into the journal in `dir`, through `transform` if any.
    fn run(dir: &std::path::Path, transform: Option<&str>, frames: i64) {
        let config = JournalConfig {
            segment_bytes: Some(8 * 1024),
            transform: transform.map(str::to_string),
            ..JournalConfig::new(dir.to_str().unwrap())
        };
        let mut writer = SegmentWriter::open(&config).unwrap();
        for i in 0..frames {
            writer
                .write_frame(&[test_batch("a.x", i * 10..i * 10 + 10, 300)])
                .unwrap();
        }
        writer.close().unwrap();
    }

    #[test]
    fn inspect_lists_transformed_segments_as_ranges_broken_by_plain_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        run(&dir, Some("aaaa"), 6);
        run(&dir, None, 1);
        run(&dir, Some("aaaa"), 1);
        let scan = scan(&dir).unwrap();
        let last = scan.segments.len();
        let first_run = scan.segments.iter().filter(|s| s.run == 1).count();
        assert!(first_run >= 2, "{:?}", scan.segments);
        let text = report(&scan);
        let expected = format!(
            "transformed (replay without --transform): segment-000001.mfj to segment-{:06}.mfj by \
             transform aaaa, segment-{last:06}.mfj by transform aaaa\n",
            first_run
        );
        assert!(text.contains(&expected), "{text}");
    }
}
