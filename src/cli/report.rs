//! `mongoferry report`: a job's report from the service's history, without a running service.
//!
//! In: `--state` as `serve` takes it (a history file, or a MongoDB database several nodes
//! share), a job id, `--format` and `--out`. Out: the job's report
//! ([`crate::service::report`]) as a self-contained HTML page or as JSON, on stdout or in a file;
//! exit status 2 for an unknown job or bad input, 1 when the history cannot be read. The history
//! keeps specs redacted, so no credential can reach the report.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::terminal::Failure;
use crate::service::job::{Job, JobRecord, JobView};
use crate::service::report::Report;
use crate::service::series::Series;
use crate::state::history::HistoryFile;
use crate::state::shared_history::SharedHistory;
use crate::state::{MongoStore, StoreChoice};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The job's id.
    pub job: u64,
    /// Where `serve` keeps its job history: a history file or a MongoDB database
    /// (`mongodb://host/db`) [default: $XDG_DATA_HOME/mongoferry/jobs.json or
    /// ~/.local/share/mongoferry/jobs.json].
    #[arg(
        long,
        value_name = "PATH|URI",
        env = "MONGOFERRY_STATE",
        hide_env_values = true
    )]
    pub state: Option<String>,
    /// `html`: a self-contained page (no network needed); `json`: the same content as JSON.
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
    /// Write the report to this file [default: stdout].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Html,
    Json,
}

/// Writes the report of `args.job`, from the history in `store` (`args.state` read, a file's
/// default path filled in).
pub async fn run(args: ReportArgs, store: StoreChoice) -> Result<(), Failure> {
    let (job, series) = find(&args, store).await?;
    let report = Report::of(&job, series.by_measure());
    let text = match args.format {
        ReportFormat::Html => report.html(),
        ReportFormat::Json => {
            let mut text = serde_json::to_string_pretty(&report).expect("a report serialises");
            text.push('\n');
            text
        }
    };
    match &args.out {
        Some(path) => crate::state::atomic::write_bytes_atomic(path, text.as_bytes())
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display()), 1)),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| Failure::new(format!("cannot write the report: {e}"), 1))
        }
    }
}

/// The job `args.job` of the history `args.state` names, and its saved series (none: empty).
async fn find(args: &ReportArgs, store: StoreChoice) -> Result<(Job, Series), Failure> {
    let unknown = |history: &str| {
        Failure::new(
            format!("job {} is not in the job history {history}", args.job),
            2,
        )
    };
    match store {
        StoreChoice::Mongo(uri) => {
            let store = MongoStore::open(&uri, Duration::from_secs(30), Duration::from_secs(10))
                .await
                .map_err(|e| Failure::new(e.to_string(), 1))?;
            let shared = SharedHistory::open(&store);
            let stored = shared
                .job::<JobRecord, JobView>(args.job)
                .await
                .map_err(|e| Failure::new(e.to_string(), 1))?
                .ok_or_else(|| unknown(shared.location()))?;
            let series = shared
                .series(args.job)
                .await
                .map_err(|e| Failure::new(e.to_string(), 1))?;
            let job = Job::elsewhere(stored.record, stored.node, stored.view);
            Ok((job, series.unwrap_or_default()))
        }
        StoreChoice::File(path) => {
            let Some(path) = path else {
                return Err(Failure::new("no job history named (see --state)".into(), 2));
            };
            let file = HistoryFile::new(path);
            let location = file.path().display().to_string();
            if !file.path().exists() {
                return Err(Failure::new(
                    format!("no job history at {location} (see --state)"),
                    2,
                ));
            }
            let records: Vec<JobRecord> =
                file.load().map_err(|e| Failure::new(e.to_string(), 1))?;
            let record = records
                .into_iter()
                .find(|r| r.id.0 == args.job)
                .ok_or_else(|| unknown(&location))?;
            let series = file
                .load_series(args.job)
                .map_err(|e| Failure::new(e.to_string(), 1))?;
            Ok((Job::restored(record), series.unwrap_or_default()))
        }
        StoreChoice::Memory => unreachable!("report has no --no-state"),
    }
}
