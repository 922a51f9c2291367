//! The command line: `copy`, `verify`, `serve`, `sample` and `journal`. Parses arguments, runs the
//! job,
//! prints the outcome.
//!
//! In: argv. Out: progress on stderr, a summary (text, or one JSON object with `--json`) on stdout,
//! and an exit status: 0 on success, 1 when the job failed, 2 for invalid input, 3 when it
//! finished but the data differs (documents refused by the destination, or `verify` found
//! differences), 130 when interrupted. The error line never holds a secret of a URI given in
//! the arguments or the environment ([`without_input_secrets`]).

pub mod journal;
pub mod progress;
pub mod report;
pub mod terminal;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use journal::JournalCommand;
use progress::{Progress, ProgressMode};
use terminal::cancel_on_signal;
use terminal::{human_bytes, run_in_terminal, transform_key};
pub use terminal::{Failure, EXIT_DIFFERENT};

use crate::bounds;
use crate::engine::source::synthetic::SyntheticSource;
use crate::engine::stats::JobStats;
use crate::engine::{Control, CopyError, Engine, MongoSink, Strategy};
use crate::mongo::{self, Side};
use crate::run::copy::{self, CopySummary};
use crate::run::outcome::{Asked, Outcome, Surface};
use crate::run::schema;
use crate::run::verify::{verify_all, Comparison, VerifyReport};
use crate::service::api::guard::ApiToken;
use crate::service::api::server::Tls;
use crate::service::api::ApiOptions;
use crate::service::clusters::AllowList;
use crate::service::credentials::CredentialsKey;
use crate::service::manager::JobManager;
use crate::service::notify;
use crate::service::ServiceOptions;
use crate::spec::{Endpoints, JobSpec, Mode, NsMapping};
use crate::state::history::HistoryFile;
use crate::state::shared_history::SharedHistory;
use crate::state::{FileStore, MongoStore, StateStore, Store, StoreChoice};

#[derive(Parser, Debug)]
#[command(
    name = "mongoferry",
    version,
    about = "Copy MongoDB collections between databases and clusters"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Copy collections from one server to another (idempotent: safe to run again).
    Copy(CopyArgs),
    /// Copy, then follow the source's changes (change streams) until stopped: a migration
    /// without a maintenance window. Ctrl-C stops it resumably (status 130).
    Sync(SyncArgs),
    /// Copy, verify each batch at the destination, then delete it from the source (only
    /// documents unchanged since their copy): for archiving and rebalancing.
    Move(MoveArgs),
    /// Make the destination equal to the source by writing only what differs: both sides read
    /// in `_id` order, missing and different documents written, extras reported (deleted with
    /// --delete-extra). For refreshing a copy without copying it all again.
    Reconcile(ReconcileArgs),
    /// Show what a copy with these arguments would do, writing nothing (a dry run).
    Plan(PlanArgs),
    /// Run the HTTP API: start, watch and steer copy jobs.
    Serve(ServeArgs),
    /// Compare source and destination document by document (missing, extra, different).
    Verify(VerifyArgs),
    /// Write generated sample documents into a collection (for demos and benchmarks).
    Sample(SampleArgs),
    /// Write a job's report from the service's history: a self-contained HTML page (spec
    /// without credentials, timeline, figures, charts, dead letters, verification), or JSON.
    Report(report::ReportArgs),
    /// Inspect, replay or export a journal written by `copy --journal`.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the job history, checkpoints and dead letters live: a history file (checkpoints in
    /// `copy-state.db` beside it) or a MongoDB database (`mongodb://host/db`) that several
    /// service nodes share: each then shows every node's jobs, sends commands to the node that
    /// runs a job, helps copy partitioned jobs, and takes over the jobs of a node that is gone
    /// [default: $XDG_DATA_HOME/mongoferry/jobs.json or ~/.local/share/mongoferry/jobs.json].
    #[arg(
        long,
        value_name = "PATH|URI",
        conflicts_with = "no_state",
        env = "MONGOFERRY_STATE",
        hide_env_values = true
    )]
    pub state: Option<String>,
    /// With a MongoDB state: how long a node (and a job's or partition's claim) may stay silent
    /// before another node takes its jobs over.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// Keep no history on disk.
    #[arg(long)]
    pub no_state: bool,
    /// Directory under which jobs' journals are kept: a spec's `journal.dir` is a name inside
    /// it [default: `journals` beside the history; with --no-state, jobs cannot journal].
    #[arg(long, value_name = "DIR")]
    pub journal_root: Option<std::path::PathBuf>,
    /// Seconds to wait for running jobs to stop on SIGTERM / Ctrl-C.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub shutdown_timeout: f64,
    /// A file holding the API token: every /api/… request and /metrics then need
    /// `Authorization: Bearer <token>` (the dashboard asks for it). The environment variable
    /// MONGOFERRY_API_TOKEN may hold the token instead.
    #[arg(long, value_name = "PATH")]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// A file holding a key (at least 16 characters) that seals the passwords and other secrets
    /// of jobs' URIs in the history, so that a restarted service, or another node on the same
    /// MongoDB state with the same key, can continue those jobs (without it they stay
    /// interrupted until submitted again). MONGOFERRY_CREDENTIALS_KEY may hold the key instead.
    #[arg(long, value_name = "PATH")]
    pub credentials_key_file: Option<std::path::PathBuf>,
    /// Serve an address other than loopback without a token: anyone who reaches the port can then
    /// start jobs that read and write your databases.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// A name the service answers to besides localhost and IP addresses (the Host header, checked
    /// against DNS rebinding): the name it is reached by, e.g. behind a reverse proxy; repeatable.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// A cluster host jobs may read or write: HOST, HOST:PORT or *.example.com[:PORT] (IPv6 as
    /// [::1]:27017); repeatable. A spec naming any other host (a seed, a mongodb+srv name, a
    /// proxyHost) is refused before anything connects [default: any host].
    #[arg(long = "allow-cluster", value_name = "HOST[:PORT]")]
    pub allow_clusters: Vec<String>,
    /// Seconds a client may take to send a request (its head, its body, a TLS handshake).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub client_timeout: f64,
    /// Event streams (`/api/jobs/{id}/events`) open at once, for the whole service.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_event_streams: usize,
    /// While this file exists, no job of the service writes (each job's load guard holds it,
    /// beside the job's own --throttle-flag-file).
    #[arg(long, value_name = "PATH")]
    pub throttle_flag_file: Option<std::path::PathBuf>,
    /// A file holding the key of the jobs' transform `hmac` steps (MONGOFERRY_TRANSFORM_KEY
    /// may hold it instead): the same key gives the same results in every job.
    #[arg(long, value_name = "PATH")]
    pub transform_key_file: Option<std::path::PathBuf>,
    /// An http(s) URL to POST a JSON notice to on each state change of the jobs this node runs
    /// (job, mode, states, figures, sequence number); repeatable. Retried for a minute, then
    /// dropped: a receiver never holds a job up. With --allow-cluster, its host must be allowed.
    #[arg(long = "notify-url", value_name = "URL")]
    pub notify_urls: Vec<String>,
    /// A file holding the secret that signs each notice: header `X-Mongoferry-Signature:
    /// sha256=<hex HMAC-SHA256 of the body>`.
    #[arg(long, value_name = "PATH", requires = "notify_urls")]
    pub notify_secret_file: Option<std::path::PathBuf>,
    /// How long a notice is retried before it is dropped (for tests).
    #[arg(long, value_name = "SECS", default_value_t = 60.0, hide = true)]
    pub notify_retry_seconds: f64,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    #[command(flatten)]
    pub spec: JobSpec,
    /// The state store keeping this job's checkpoint (so a rerun continues where a crashed or
    /// stopped run left off) and the documents the destination refused: a file, or a MongoDB
    /// database (`mongodb://host/db`) that processes on several machines can share [default:
    /// $XDG_DATA_HOME/mongoferry/copy-state.db].
    #[arg(
        long,
        value_name = "PATH|URI",
        conflicts_with = "no_state",
        env = "MONGOFERRY_STATE",
        hide_env_values = true
    )]
    pub state: Option<String>,
    /// With a MongoDB state store: how long this run's claim on the job lasts without a
    /// heartbeat, so how soon another process takes over the job of one that died.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// With a MongoDB state store: when another process holds the job, wait and take it over
    /// when that process ends or dies (instead of stopping with an error); ends at once, status
    /// 0, if the job turns out complete. Run the same command on several machines, each with
    /// --standby, for a copy that fails over.
    #[arg(long)]
    pub standby: bool,
    /// Keep no checkpoint: a rerun starts from zero; refused documents are only listed.
    #[arg(long)]
    pub no_state: bool,
    /// A file holding the key of the transform's `hmac` steps (MONGOFERRY_TRANSFORM_KEY may
    /// hold the key instead); the same key gives the same results in every job and run.
    #[arg(long, value_name = "PATH")]
    pub transform_key_file: Option<std::path::PathBuf>,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
#[command(
    mut_arg("namespaces", |arg| arg.required(false)),
    mut_arg("block_writes", |arg| arg.hide(false)),
    mut_arg("min_oplog_headroom_secs", |arg| arg.hide(false)),
    mut_arg("postpone_commit_flag_file", |arg| arg.hide(false))
)]
pub struct SyncArgs {
    #[command(flatten)]
    pub copy: CopyArgs,
    /// End (status 0) the first time the destination is level with the source, as a commit
    /// would: for scripts.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Ready to commit (`can_commit`) while the lag is at most this many seconds [default: 5].
    #[arg(long, value_name = "SECS")]
    pub commit_max_lag_secs: Option<f64>,
    /// After the commit, watch the source this many seconds for writes past the commit point
    /// [default: 10].
    #[arg(long, value_name = "SECS")]
    pub commit_watch_secs: Option<f64>,
    /// When the saved position is gone from the source's history: `fail` (stop; --restart
    /// copies everything again) or `reconcile` (take a new position, write only what differs
    /// in every namespace and delete what the source lacks, then follow from there)
    /// [default: fail].
    #[arg(long, value_enum, value_name = "WHAT")]
    pub on_history_lost: Option<crate::spec::OnHistoryLost>,
    /// Fail back from the committed sync job KEY (the `job_key` its summary printed), kept in
    /// the same --state: a sync from its destination (--from) back to its source (--to), from
    /// the commit point, with the names mapped back and no initial copy. Its namespaces,
    /// excludes and filter are the job's (no --ns, --exclude or --filter).
    #[arg(long, value_name = "KEY")]
    pub reverse_of: Option<String>,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    #[command(flatten)]
    pub copy: CopyArgs,
    /// Show what would move (as `plan`), and move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A rehearsal: copy and verify, but delete nothing from the source.
    #[arg(long)]
    pub keep_source: bool,
    /// Move with a --transform: the source's originals are deleted and only their transformed
    /// copies kept.
    #[arg(long)]
    pub allow_transform_move: bool,
}

#[derive(Args, Debug)]
// A reconcile keeps the destination: `--drop` is refused with a reason, and not offered.
#[command(mut_arg("drop", |arg| arg.hide(true)))]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub copy: CopyArgs,
    /// Delete the documents only the destination holds (without it they are kept, counted
    /// and listed, and the exit status is 3).
    #[arg(long)]
    pub delete_extra: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: JobSpec,
    /// The state store the copy would use: a MongoDB one (`mongodb://host/db`) must not be
    /// among the destinations; a file store is not read.
    #[arg(long, env = "MONGOFERRY_STATE", hide_env_values = true)]
    pub state: Option<String>,
    /// The key of the transform's `hmac` steps (or MONGOFERRY_TRANSFORM_KEY): the plan says
    /// when it is missing.
    #[arg(long, value_name = "PATH")]
    pub transform_key_file: Option<std::path::PathBuf>,
    /// Print the plan as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// How many `_id`s of each kind of difference to list.
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    /// Compare the documents only, not the indexes, collection options and views.
    #[arg(long)]
    pub documents_only: bool,
    /// Compare the source's documents as this transform file makes them (the copy's
    /// `--transform`) with the destination's.
    #[arg(long, value_name = "FILE", value_parser = crate::spec::TransformConfig::from_file)]
    pub transform: Option<crate::spec::TransformConfig>,
    /// The key of the transform's `hmac` steps (or MONGOFERRY_TRANSFORM_KEY).
    #[arg(long, value_name = "PATH")]
    pub transform_key_file: Option<std::path::PathBuf>,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Destination connection string.
    #[arg(long, env = "MONGOFERRY_TO", hide_env_values = true)]
    pub to: String,
    /// Collection to fill, `db.coll`.
    #[arg(long)]
    pub ns: String,
    /// Number of documents (`_id` 0 to count-1; existing ones are replaced).
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Approximate size of each document in bytes.
    #[arg(long, default_value_t = 1024)]
    pub doc_size: usize,
    /// Drop the collection first.
    #[arg(long)]
    pub drop: bool,
    /// Concurrent workers writing the documents.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the command line and turns the outcome into an exit status.
pub async fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Copy(args) => run_copy(args).await,
        Command::Sync(args) => run_sync(args).await,
        Command::Move(args) => run_move(args).await,
        Command::Reconcile(args) => run_reconcile(args).await,
        Command::Plan(args) => run_plan(args).await,
        Command::Sample(args) => run_sample(args).await,
        Command::Serve(args) => run_serve(args).await,
        Command::Verify(args) => run_verify(args).await,
        Command::Report(args) => run_report(args).await,
        Command::Journal { command } => crate::cli::journal::run(command).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", without_input_secrets(&failure.message));
            ExitCode::from(failure.status)
        }
    }
}

/// The environment variables that may hold a connection string.
const URI_VARIABLES: [&str; 3] = ["MONGOFERRY_FROM", "MONGOFERRY_TO", "MONGOFERRY_STATE"];

/// `message` without any password (or other secret) of the URIs given to this process, in its
/// arguments or its environment, whatever their shape and wherever the message quotes them:
/// the last guard before the terminal, behind each message's own redaction.
pub fn without_input_secrets(message: &str) -> String {
    let arguments = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let variables = URI_VARIABLES
        .iter()
        .filter_map(std::env::var_os)
        .map(|v| v.to_string_lossy().into_owned());
    let secrets: Vec<String> = arguments
        .chain(variables)
        .flat_map(|input| crate::mongo::secrets_in(&input))
        .collect();
    crate::mongo::without_secrets(message, &secrets)
}

async fn run_sync(mut args: SyncArgs) -> Result<(), Failure> {
    args.copy.spec.mode = Some(Mode::Sync);
    args.copy.spec.commit_max_lag_secs = args.commit_max_lag_secs;
    args.copy.spec.commit_watch_secs = args.commit_watch_secs;
    args.copy.spec.on_history_lost = args.on_history_lost;
    if let Some(key) = args.reverse_of.take() {
        return run_reverse(args, crate::state::JobKey(key)).await;
    }
    run_copy_or_sync(args.copy, args.until_caught_up).await
}

/// `sync --reverse-of KEY`: the committed sync KEY's checkpoint read from the store, checked,
/// its reverse seeded there ([`crate::run::reverse`]), then run as a sync that resumes.
async fn run_reverse(mut args: SyncArgs, key: crate::state::JobKey) -> Result<(), Failure> {
    use crate::run::reverse;
    let invalid = |problem: String| Failure::from(crate::spec::SpecError(vec![problem]));
    let endpoints = &args.copy.spec.endpoints;
    for (given, flag) in [
        (!endpoints.namespaces.is_empty(), "--ns"),
        (!endpoints.exclude.is_empty(), "--exclude"),
        (endpoints.filter.is_some(), "--filter"),
        (args.copy.spec.drop, "--drop"),
        (args.copy.spec.restart, "--restart"),
    ] {
        if given {
            return Err(invalid(format!(
                "{flag}: --reverse-of takes the namespaces of the job it reverses, mapped back, \
                 and copies nothing first"
            )));
        }
    }
    if args.copy.spec.transform.is_some() {
        return Err(invalid(
            "--transform: --reverse-of writes the destination's documents back to the source as \
             they are; transformed, they would overwrite the originals"
                .into(),
        ));
    }
    if args.copy.no_state {
        return Err(invalid(
            "--no-state: --reverse-of reads the job's checkpoint from its state store".into(),
        ));
    }
    // The store is opened as the run opens it; the spec's timeout before it is known.
    let timeout = Duration::from_secs_f64(endpoints.connect_timeout_secs.unwrap_or(10.0));
    let choice = store_choice(&args.copy.state, false)?;
    let store: Arc<dyn StateStore> = match choice
        .open(
            Duration::from_secs_f64(args.copy.lease_seconds),
            timeout,
            |path| match path {
                Some(path) => FileStore::new(path),
                None => FileStore::new(FileStore::default_path()),
            },
        )
        .await
        .map_err(CopyError::from)?
    {
        Store::Mongo(store) => Arc::new(store),
        store => store.shared(),
    };
    let outcome = async {
        let found = store.load(&key).await.map_err(CopyError::from)?;
        let checkpoint = found.ok_or_else(|| reverse::ReverseError::UnknownJob {
            key: key.clone(),
            location: store.location(),
        });
        let checkpoint = checkpoint.map_err(reverse_failure)?;
        let job = format!("job {key} ({})", checkpoint.description);
        let from = reverse::reversible(&job, &checkpoint).map_err(reverse_failure)?;
        // The forward job, as its key names it: --from and --to must be its destination and
        // source.
        let (namespaces, exclude) = (from.namespaces.clone(), from.exclude.clone());
        let mut forward = JobSpec::new(
            &args.copy.spec.endpoints.to,
            &args.copy.spec.endpoints.from,
            &[],
        );
        forward.endpoints.namespaces = namespaces;
        forward.endpoints.exclude = exclude;
        forward.mode = Some(Mode::Sync);
        let forward_key = forward.validate().ok().map(|s| s.job_key().0);
        if forward_key.as_ref() != Some(&key) {
            return Err(invalid(format!(
                "--from, --to: {job} ran from its source to its destination: give its \
                 destination as --from and its source as --to"
            )));
        }
        let spec = std::mem::take(&mut args.copy.spec);
        let spec = reverse::reverse_spec(spec, &from).map_err(reverse_failure)?;
        args.copy.spec = spec;
        let copy_spec = args.copy.spec.validate()?;
        reverse::seed(&store, &copy_spec, &from)
            .await
            .map_err(reverse_failure)?;
        if !args.copy.quiet {
            eprintln!("fail back from {job}: following its destination from the commit point");
        }
        copy_with_store(args.copy, args.until_caught_up, copy_spec, store.clone()).await
    }
    .await;
    store.close().await;
    outcome
}

/// A reverse refused (status 2, as invalid input) or failed.
fn reverse_failure(e: crate::run::reverse::ReverseError) -> Failure {
    use crate::run::reverse::ReverseError;
    match e {
        ReverseError::Copy(e) => e.into(),
        ReverseError::State(e) => CopyError::from(e).into(),
        ReverseError::Invalid(e) => e.into(),
        refused => Failure {
            message: refused.to_string(),
            status: 2,
        },
    }
}

async fn run_move(mut args: MoveArgs) -> Result<(), Failure> {
    args.copy.spec.mode = Some(Mode::Move);
    args.copy.spec.keep_source = args.keep_source;
    args.copy.spec.allow_transform_move = args.allow_transform_move;
    if args.dry_run {
        return run_plan(PlanArgs {
            spec: args.copy.spec,
            state: args.copy.state,
            transform_key_file: args.copy.transform_key_file,
            json: args.copy.json,
        })
        .await;
    }
    run_copy_or_sync(args.copy, false).await
}

async fn run_reconcile(mut args: ReconcileArgs) -> Result<(), Failure> {
    args.copy.spec.mode = Some(Mode::Reconcile);
    args.copy.spec.delete_extra = args.delete_extra;
    run_copy_or_sync(args.copy, false).await
}

async fn run_copy(args: CopyArgs) -> Result<(), Failure> {
    run_copy_or_sync(args, false).await
}

async fn run_copy_or_sync(args: CopyArgs, until_caught_up: bool) -> Result<(), Failure> {
    let mut spec = args.spec.validate()?;
    spec.transform_key = transform_key(&args.transform_key_file)?;
    if let Some(problem) = bounds::LEASE.problem(args.lease_seconds) {
        return Err(crate::spec::SpecError(vec![problem]).into());
    }
    let choice = store_choice(&args.state, args.no_state)?;
    if args.standby && matches!(choice, StoreChoice::File(_)) {
        return Err(crate::spec::SpecError(vec![
            "--standby: needs a MongoDB state store (--state mongodb://host/db) that the \
             processes share"
                .into(),
        ])
        .into());
    }
    let lease = Duration::from_secs_f64(args.lease_seconds);
    let store: Arc<dyn StateStore> = match choice
        .open(lease, spec.connect_timeout, |path| match path {
            Some(path) => FileStore::new(path),
            // The default path changed with the store's format: an older default store is taken.
            None => FileStore::new(FileStore::default_path())
                .migrating_from(FileStore::first_format_default_path()),
        })
        .await
        .map_err(CopyError::from)?
    {
        Store::Mongo(store) => Arc::new(store.standby(args.standby)),
        store => store.shared(),
    };
    let outcome = copy_with_store(args, until_caught_up, spec, store.clone()).await;
    store.close().await;
    outcome
}

/// `mongoferry report`: the history `--state` names (a file's default path filled in).
async fn run_report(args: report::ReportArgs) -> Result<(), Failure> {
    let store = match store_choice(&args.state, false)? {
        StoreChoice::File(None) => StoreChoice::File(Some(default_state_path())),
        chosen => chosen,
    };
    report::run(args, store).await
}

/// The store `--state` (or `MONGOFERRY_STATE`) and `--no-state` name ([`StoreChoice`]). A value
/// shaped like a URI that is not a MongoDB one is invalid input.
fn store_choice(state: &Option<String>, no_state: bool) -> Result<StoreChoice, Failure> {
    StoreChoice::from_options(state.as_deref(), no_state).map_err(|e| Failure {
        message: format!("--state: {e}"),
        status: 2,
    })
}

async fn copy_with_store(
    args: CopyArgs,
    until_caught_up: bool,
    spec: crate::spec::CopySpec,
    store: Arc<dyn StateStore>,
) -> Result<(), Failure> {
    let mut prepared = copy::prepare(&spec, store).await?;
    if until_caught_up {
        prepared = prepared.until_caught_up();
    }
    if !args.quiet {
        for (src, dst) in prepared.namespaces() {
            eprintln!("{src} -> {dst}");
        }
        let skipped = prepared.stats().snapshot().skipped;
        if prepared.shared() {
            eprintln!(
                "the job's partitions are shared with any other process on the same state: \
                 each copies the partitions it claims"
            );
        } else if prepared.resumed() {
            eprintln!("resuming from the checkpoint: {skipped} docs already copied are skipped");
        }
    }
    let watched = (prepared.stats(), Some(prepared.control().guard().clone()));
    let result = run_in_terminal(watched, args.quiet, |cancel| prepared.run(cancel)).await;
    let outcome = Outcome::judge(&result, &Asked::of(&spec, Surface::CommandLine));
    if let Ok(summary) = &result {
        print_summary(summary, args.json);
        if let Some(note) = &outcome.note {
            eprintln!("{note}");
        }
        if let Some(report) = summary.verify.as_ref().filter(|_| !args.json) {
            print_verify(report, false);
        }
    }
    Failure::of(outcome)
}

async fn run_plan(args: PlanArgs) -> Result<(), Failure> {
    let mut spec = args.spec.validate()?;
    spec.transform_key = transform_key(&args.transform_key_file)?;
    // Only a MongoDB store is read (it must not be among the destinations).
    let state = match store_choice(&args.state, false)? {
        StoreChoice::Mongo(uri) => Some(
            MongoStore::open(&uri, Duration::from_secs(30), spec.connect_timeout)
                .await
                .map_err(CopyError::from)?,
        ),
        StoreChoice::Memory | StoreChoice::File(_) => None,
    };
    let plan = crate::run::plan::plan(&spec, state.as_ref().and_then(|s| s.database())).await;
    if let Some(state) = &state {
        state.close().await;
    }
    let plan = plan?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&plan).expect("a plan serialises")
        );
    } else {
        print_plan(&plan);
    }
    if plan.blocked {
        return Err(Failure {
            message: "the copy would not start: see the problems above".into(),
            status: EXIT_DIFFERENT,
        });
    }
    Ok(())
}

fn print_plan(plan: &crate::run::plan::Plan) {
    let rows: Vec<[String; 6]> = plan
        .namespaces
        .iter()
        .map(|n| {
            [
                format!("{} -> {}", n.source, n.destination),
                match n.partitions {
                    0 | 1 => n.documents.to_string(),
                    parts => format!("{} in ~{parts} partitions", n.documents),
                },
                human_bytes(n.bytes),
                human_bytes(n.average_document_bytes),
                n.indexes.len().to_string(),
                n.destination_state.clone(),
            ]
        })
        .collect();
    let header = [
        "namespace",
        "documents",
        "size",
        "average",
        "indexes",
        "destination",
    ];
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| match i {
                // Numbers to the right, words to the left.
                1..=4 => format!("{c:>w$}"),
                _ => format!("{c:<w$}"),
            })
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    for n in plan.namespaces.iter().filter(|n| !n.indexes.is_empty()) {
        println!("indexes of {}: {}", n.destination, n.indexes.join(", "));
    }
    for n in plan.namespaces.iter().filter(|n| !n.transform.is_empty()) {
        println!("transform of {}: {}", n.source, n.transform.join(", "));
    }
    if plan.deletes_from_source {
        println!(
            "a move: these {} documents are DELETED from the source, each once the destination \
             holds it exactly (documents that change meanwhile stay)",
            plan.documents
        );
    }
    for v in &plan.views {
        println!(
            "view {} -> {} (on {}): {}",
            v.source, v.destination, v.view_on, v.destination_state
        );
    }
    println!(
        "in all: {} documents, {}; indexes built {}{}",
        plan.documents,
        human_bytes(plan.bytes),
        match plan.indexes {
            crate::spec::IndexMode::After => "after the documents",
            crate::spec::IndexMode::Before => "before the documents",
            crate::spec::IndexMode::None => "not at all",
        },
        if plan.drop {
            "; the destination's namespaces are DROPPED first (--drop)"
        } else {
            ""
        }
    );
    if let Some(e) = &plan.estimate {
        println!(
            "estimate: {} at {:.0} docs/s ({})",
            if e.seconds < 1.0 {
                "under a second".to_string()
            } else {
                format!("about {:.0} s", e.seconds)
            },
            e.docs_per_sec,
            e.basis
        );
    }
    for p in &plan.problems {
        println!(
            "{} {}",
            if p.blocks { "problem:" } else { "note:" },
            p.message
        );
    }
}

async fn run_verify(args: VerifyArgs) -> Result<(), Failure> {
    // The same validation as a copy's, so namespaces and filters mean the same.
    let mut spec = JobSpec::from(args.endpoints);
    spec.transform = args.transform;
    let mut spec = spec.validate()?;
    spec.transform_key = transform_key(&args.transform_key_file)?;
    // Ctrl-C or SIGTERM stops the comparison between documents, as they stop a copy.
    let stop = CancellationToken::new();
    let signals = cancel_on_signal(stop.clone());
    let outcome = verify(&spec, args.show, args.documents_only, &stop).await;
    stop.cancel();
    let _ = signals.await;
    let report = match outcome {
        Err(CopyError::Stopped) => {
            return Err(Failure {
                message: "interrupted; verify stopped before comparing everything".into(),
                status: 130,
            })
        }
        other => other?,
    };
    print_verify(&report, args.json);
    if report.identical {
        Ok(())
    } else {
        Err(Failure {
            message: format!(
                "the destination differs: {} missing, {} extra, {} different",
                report.missing, report.extra, report.different
            ),
            status: EXIT_DIFFERENT,
        })
    }
}

/// Connects to both sides and compares the spec's namespaces until done or `stop`.
async fn verify(
    spec: &crate::spec::CopySpec,
    show: usize,
    documents_only: bool,
    stop: &CancellationToken,
) -> Result<VerifyReport, CopyError> {
    let (src, dst) = mongo::connect_both(&spec.from, &spec.to, 2, spec.connect_timeout).await?;
    let outcome = async {
        if stop.is_cancelled() {
            return Err(CopyError::Stopped);
        }
        let selection = schema::select(&src, &spec.namespaces, &spec.exclude).await?;
        // A namespace compared with itself is always identical: no proof at all.
        crate::run::overlap::check(spec, &selection, &src, &dst, None).await?;
        let transforms = crate::run::copy::transforms(spec, &selection.pairs())?;
        let comparison = Comparison {
            selection: &selection,
            filter: spec.filter.as_ref(),
            show,
            schema: (!documents_only).then_some(true),
            transforms: &transforms,
        };
        verify_all(&src, &dst, &comparison, stop).await
    }
    .await;
    mongo::close(src).await;
    mongo::close(dst).await;
    outcome
}

fn print_verify(report: &VerifyReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).expect("report serialises")
        );
        return;
    }
    for ns in &report.namespaces {
        println!(
            "{} -> {}: source {} docs, destination {} docs: {} missing, {} extra, {} different",
            ns.source,
            ns.destination,
            ns.source_count,
            ns.destination_count,
            ns.missing,
            ns.extra,
            ns.different
        );
        for (kind, ids, total) in [
            ("missing", &ns.first_missing, ns.missing),
            ("extra", &ns.first_extra, ns.extra),
            ("different", &ns.first_different, ns.different),
        ] {
            if !ids.is_empty() {
                let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
                let more = if total > ids.len() as u64 {
                    ", …"
                } else {
                    ""
                };
                println!("  {kind} _id: {}{more}", list.join(", "));
            }
        }
    }
    for ns in &report.schema {
        println!(
            "{} -> {}: schema differs: {}",
            ns.source,
            ns.destination,
            ns.differences.join("; ")
        );
    }
    if report.identical {
        println!("identical: every document matches");
    }
}

fn print_summary(summary: &CopySummary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serialises")
        );
        return;
    }
    let extras = |skipped: u64, failed: u64| {
        let mut text = String::new();
        if skipped > 0 {
            text.push_str(&format!(", {skipped} skipped (copied before)"));
        }
        if failed > 0 {
            text.push_str(&format!(", {failed} failed"));
        }
        text
    };
    for ns in &summary.namespaces {
        let parts = match ns.partitions {
            0 => String::new(),
            n => format!(", in {n} partitions"),
        };
        println!(
            "{} -> {}: {} docs, {}{}{parts}",
            ns.source,
            ns.destination,
            ns.docs,
            human_bytes(ns.bytes),
            extras(ns.skipped, ns.failed)
        );
    }
    println!(
        "copied {} docs ({}) in {:.1}s: {:.0} docs/s{}{}",
        summary.docs,
        human_bytes(summary.bytes),
        summary.seconds,
        summary.docs_per_sec,
        extras(summary.skipped, summary.failed),
        if summary.retries > 0 {
            format!(", {} transient errors retried", summary.retries)
        } else {
            String::new()
        }
    );
    if summary.shared {
        println!(
            "shared job: this process copied {} of the job's {} docs; other processes (and \
             earlier runs) the rest",
            summary.docs,
            summary.docs + summary.skipped + summary.failed
        );
    }
    if let Some(sync) = &summary.sync {
        println!("sync: {}", progress::sync_line(sync));
    }
    if let Some(moves) = &summary.moves {
        println!("move: {}", progress::move_line(moves));
    }
    if let Some(reconcile) = &summary.reconcile {
        println!("reconcile: {}", progress::reconcile_line(reconcile));
        for extra in &reconcile.first_extra {
            println!("  extra (kept): {extra}");
        }
    }
    let schema = &summary.schema;
    for (what, names) in [
        ("dropped first", &schema.dropped),
        ("created", &schema.created),
        ("views created", &schema.views),
    ] {
        if !names.is_empty() {
            println!("{what}: {}", names.join(", "));
        }
    }
    if schema.indexes_total > 0 || !schema.index_errors.is_empty() {
        println!(
            "indexes built: {} of {}",
            schema.indexes_built, schema.indexes_total
        );
    }
    for e in &schema.index_errors {
        println!(
            "  index {} of {} refused: {}",
            e.index, e.namespace, e.reason
        );
    }
    if let Some(journal) = &summary.journal {
        println!(
            "journal {}: run {}, {} records, {} ({:.0} bytes per document)",
            journal.dir,
            journal.run,
            journal.records,
            human_bytes(journal.bytes),
            journal.bytes_per_doc
        );
    }
}

/// Where the job history lives when `--state` is not given.
fn default_state_path() -> std::path::PathBuf {
    crate::state::data_dir().join("mongoferry/jobs.json")
}

/// The environment variable that may hold the API token (instead of `--auth-token-file`).
pub const TOKEN_VARIABLE: &str = "MONGOFERRY_API_TOKEN";

/// The environment variable that may hold the credentials key (instead of
/// `--credentials-key-file`).
pub const CREDENTIALS_KEY_VARIABLE: &str = "MONGOFERRY_CREDENTIALS_KEY";

/// A secret given by a file (`flag`) or an environment variable, if any, and where it came
/// from. Errors never quote it.
fn secret_text(
    what: &str,
    flag: &str,
    file: Option<&std::path::Path>,
    variable: &str,
) -> Result<Option<(String, String)>, Failure> {
    let invalid = |message: String| Failure { message, status: 2 };
    let text = match (file, std::env::var_os(variable)) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "give the {what} either with {flag} or with {variable}, not both"
            )))
        }
        (None, None) => return Ok(None),
        (None, Some(value)) => value
            .into_string()
            .map_err(|_| invalid(format!("{variable}: the {what} is not valid text")))?,
        (Some(path), None) => {
            warn_if_others_can_read(what, path);
            std::fs::read_to_string(path).map_err(|e| {
                invalid(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))
            })?
        }
    };
    let source = match file {
        Some(path) => format!("{what} file {}", path.display()),
        None => variable.to_string(),
    };
    Ok(Some((text, source)))
}

/// The API token of `--auth-token-file` or [`TOKEN_VARIABLE`], if any. Errors never quote it.
fn api_token(file: Option<&std::path::Path>) -> Result<Option<ApiToken>, Failure> {
    let Some((text, source)) = secret_text("token", "--auth-token-file", file, TOKEN_VARIABLE)?
    else {
        return Ok(None);
    };
    ApiToken::new(&text).map(Some).map_err(|e| Failure {
        message: format!("{source}: {e}"),
        status: 2,
    })
}

/// The key of `--credentials-key-file` or [`CREDENTIALS_KEY_VARIABLE`], if any.
fn credentials_key(file: Option<&std::path::Path>) -> Result<Option<CredentialsKey>, Failure> {
    let found = secret_text(
        "credentials key",
        "--credentials-key-file",
        file,
        CREDENTIALS_KEY_VARIABLE,
    )?;
    let Some((text, source)) = found else {
        return Ok(None);
    };
    CredentialsKey::new(&text).map(Some).map_err(|e| Failure {
        message: format!("{source}: {e}"),
        status: 2,
    })
}

#[cfg(unix)]
fn warn_if_others_can_read(what: &str, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: the {what} file {} can be read by other users (chmod 600 it)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_others_can_read(_what: &str, _path: &std::path::Path) {}

/// The receivers of `--notify-url`, checked (http or https, allowed by `clusters`), the secret
/// of `--notify-secret-file` and how long a notice is retried; `None` without a URL.
fn notify_settings(
    args: &ServeArgs,
    clusters: &AllowList,
) -> Result<Option<notify::Settings>, Failure> {
    let invalid = |message: String| Failure { message, status: 2 };
    if args.notify_urls.is_empty() {
        return Ok(None);
    }
    let urls = args
        .notify_urls
        .iter()
        .enumerate()
        .map(|(index, url)| notify::parse_url(index, url, clusters))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let secret = match &args.notify_secret_file {
        Some(path) => {
            warn_if_others_can_read("notification secret", path);
            Some(notify::Secret::read(path).map_err(|e| invalid(e.to_string()))?)
        }
        None => None,
    };
    let window = args.notify_retry_seconds;
    if !(window.is_finite() && window > 0.0 && window <= 86_400.0) {
        return Err(invalid(format!(
            "--notify-retry-seconds {window}: give between 0 and 86400 seconds"
        )));
    }
    Ok(Some(notify::Settings {
        urls,
        secret,
        retry_window: Duration::from_secs_f64(window),
    }))
}

/// What `serve` is told about who may use it, checked before anything starts.
fn api_options(args: &ServeArgs) -> Result<(ApiOptions, Option<Tls>), Failure> {
    let invalid = |message: String| Failure { message, status: 2 };
    let token = api_token(args.auth_token_file.as_deref())?;
    for name in &args.allowed_hosts {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(invalid(format!(
                "--allowed-host {name:?}: give a host name, such as ferry.example.com (no scheme, port or path)"
            )));
        }
    }
    let problems: Vec<String> = [
        bounds::CLIENT_TIMEOUT.problem(args.client_timeout),
        bounds::MAX_EVENT_STREAMS.problem(args.max_event_streams),
        bounds::SHUTDOWN_TIMEOUT.problem(args.shutdown_timeout),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(crate::spec::SpecError(problems).into());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Tls::from_pem_files(cert, key).map_err(|e| invalid(e.to_string()))?)
        }
        _ => None,
    };
    let options = ApiOptions {
        token,
        allowed_hosts: args.allowed_hosts.clone(),
        max_event_streams: args.max_event_streams,
        client_timeout: Duration::from_secs_f64(args.client_timeout),
    };
    Ok((options, tls))
}

/// What the operator is told when the service can be reached from other machines.
fn exposure_warnings(
    address: &std::net::SocketAddr,
    loopback: bool,
    token: bool,
    tls: bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if loopback {
        return warnings;
    }
    if !token {
        warnings.push(format!(
            "serving {address} without authentication (--insecure-no-auth): anyone who reaches \
             it can use every cluster this service can reach"
        ));
    }
    if !tls {
        warnings.push(format!(
            "serving {address} without TLS: the token and the jobs' URIs cross the network in \
             clear; use --tls-cert/--tls-key, or a reverse proxy that ends TLS"
        ));
    }
    warnings
}

async fn run_serve(args: ServeArgs) -> Result<(), Failure> {
    let prepared = prepare_serve(args).await?;
    let stop = CancellationToken::new();
    let signals = cancel_on_signal(stop.clone());
    let served = prepared.run(stop.clone()).await;
    stop.cancel();
    let _ = signals.await;
    served
}

/// A service ready to run: its flags checked, its history loaded, its port bound.
pub struct PreparedService {
    listener: std::net::TcpListener,
    manager: Arc<JobManager>,
    options: ServiceOptions,
    url: String,
}

impl PreparedService {
    /// `http://address:port` or `https://…`, as printed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves until `stop` (then stops the jobs and records them).
    pub async fn run(self, stop: CancellationToken) -> Result<(), Failure> {
        crate::service::serve(self.listener, self.manager, self.options, stop)
            .await
            .map_err(|e| Failure::new(format!("server error: {e}"), 1))
    }
}

/// What `serve` keeps: its jobs (the manager), their checkpoints, where their journals go, and
/// where the history is (`None`: not kept).
struct ServiceState {
    manager: Arc<JobManager>,
    state: Arc<dyn StateStore>,
    journal_root: Option<std::path::PathBuf>,
    history: Option<String>,
}

/// Opens the store `--state` names and the job manager on it: a MongoDB database the nodes
/// share (history, checkpoints, dead letters), or a history file with the checkpoints beside it.
async fn open_service_state(
    args: &ServeArgs,
    lease: Duration,
    clusters: AllowList,
) -> Result<ServiceState, Failure> {
    let fail = |message: String| Failure { message, status: 1 };
    let choice = store_choice(&args.state, args.no_state)?;
    // A file store's history is the file given (or the default), its checkpoints beside it.
    let history_file = match &choice {
        StoreChoice::File(path) => Some(HistoryFile::new(
            path.clone().unwrap_or_else(default_state_path),
        )),
        StoreChoice::Memory | StoreChoice::Mongo(_) => None,
    };
    let beside = history_file.as_ref().map(|h| h.path().to_path_buf());
    let store = choice
        .open(lease, Duration::from_secs(10), |_| {
            let history = beside.expect("a file store has its history file");
            FileStore::new(history.with_file_name("copy-state.db"))
                .migrating_from(history.with_file_name("copy-state.json"))
        })
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(match store {
        Store::Mongo(store) => {
            // Checkpoints, dead letters and the history in one database the nodes share.
            let shared = SharedHistory::open(&store);
            let history = format!("{} (shared by service nodes)", shared.location());
            let state: Arc<dyn StateStore> = Arc::new(store);
            let journal_root = args
                .journal_root
                .clone()
                .unwrap_or_else(|| crate::state::data_dir().join("mongoferry/journals"));
            let manager = JobManager::open_shared(
                shared,
                lease,
                state.clone(),
                Some(journal_root.clone()),
                clusters,
            );
            ServiceState {
                manager,
                state,
                journal_root: Some(journal_root),
                history: Some(history),
            }
        }
        store => {
            // Checkpoints and dead letters live beside the history (with it off, in memory).
            let state = store.shared();
            let journal_root = args.journal_root.clone().or_else(|| {
                history_file
                    .as_ref()
                    .map(|history| history.path().with_file_name("journals"))
            });
            let history = history_file
                .as_ref()
                .map(|s| s.path().display().to_string());
            let manager = JobManager::open_with_clusters(
                history_file,
                state.clone(),
                journal_root.clone(),
                clusters,
            )
            .map_err(|e| fail(e.to_string()))?;
            ServiceState {
                manager,
                state,
                journal_root,
                history,
            }
        }
    })
}

/// Everything `serve` does before it serves: checks the flags (status 2), opens the history,
/// binds the port and says where it serves. Tests run services in-process through this.
pub async fn prepare_serve(args: ServeArgs) -> Result<PreparedService, Failure> {
    let fail = |message: String| Failure { message, status: 1 };
    // Everything that can refuse the command line is checked before jobs are continued or a port
    // is opened.
    let (options, tls) = api_options(&args)?;
    let credentials = credentials_key(args.credentials_key_file.as_deref())?;
    let clusters = AllowList::new(&args.allow_clusters).map_err(|e| Failure {
        message: e.to_string(),
        status: 2,
    })?;
    let notify = notify_settings(&args, &clusters)?;
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&args.listen)
        .await
        .map_err(|e| fail(format!("cannot listen on {}: {e}", args.listen)))?
        .collect();
    let loopback = !addresses.is_empty()
        && addresses
            .iter()
            .all(|a| a.ip().to_canonical().is_loopback());
    if !loopback && options.token.is_none() && !args.insecure_no_auth {
        return Err(Failure {
            message: format!(
                "refusing to serve {} without authentication: it is not a loopback address, so \
                 anyone who reaches it could start jobs that read and write your databases; \
                 give a token with --auth-token-file PATH (or {TOKEN_VARIABLE}), or pass \
                 --insecure-no-auth to serve without one",
                args.listen
            ),
            status: 2,
        });
    }
    if let Some(problem) = bounds::LEASE.problem(args.lease_seconds) {
        return Err(Failure {
            message: problem,
            status: 2,
        });
    }
    let lease = Duration::from_secs_f64(args.lease_seconds);
    let ServiceState {
        manager,
        state,
        journal_root,
        history,
    } = open_service_state(&args, lease, clusters).await?;
    let sealing = credentials.is_some();
    if let Some(key) = credentials {
        manager.set_credentials_key(key);
    }
    if let Some(path) = &args.throttle_flag_file {
        manager.set_throttle_flag_file(path.clone());
    }
    if let Some(key) = transform_key(&args.transform_key_file)? {
        manager.set_transform_key(key);
    }
    if let Some(settings) = notify {
        let shown: Vec<String> = settings.urls.iter().map(notify::redact).collect();
        let signed = settings.secret.is_some();
        let notifier = notify::Notifier::start(settings).map_err(|e| fail(e.to_string()))?;
        manager.set_notifier(notifier);
        for (index, url) in shown.iter().enumerate() {
            eprintln!("notifications: receiver {index} at {url}");
        }
        if signed {
            eprintln!("notifications: signed with the secret of --notify-secret-file");
        }
    }
    let listener = std::net::TcpListener::bind(&addresses[..])
        .map_err(|e| fail(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| fail(format!("cannot listen on {}: {e}", args.listen)))?;
    for warning in exposure_warnings(&address, loopback, options.token.is_some(), tls.is_some()) {
        eprintln!("warning: {warning}");
    }
    match &history {
        Some(history) => eprintln!(
            "job history: {history}; checkpoints and dead letters: {}",
            state.location()
        ),
        None => eprintln!("job history: not kept (--no-state)"),
    }
    if args.allow_clusters.is_empty() {
        eprintln!("clusters jobs may reach: any (no --allow-cluster)");
    } else {
        eprintln!(
            "clusters jobs may reach: {}",
            args.allow_clusters.join(", ")
        );
    }
    match &journal_root {
        Some(root) => eprintln!("journals of jobs: under {}", root.display()),
        None => eprintln!("journals of jobs: none (no --journal-root)"),
    }
    if options.token.is_some() {
        eprintln!("authentication: a bearer token is required for /api/… and /metrics");
    }
    if sealing {
        eprintln!("credentials of jobs' URIs: sealed in the history with the credentials key");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{address}");
    eprintln!("mongoferry serving on {url}");
    Ok(PreparedService {
        listener,
        manager,
        options: ServiceOptions {
            api: options,
            tls,
            shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        },
        url,
    })
}

async fn run_sample(args: SampleArgs) -> Result<(), Failure> {
    let ns = match args.ns.parse::<NsMapping>() {
        Ok(NsMapping::Collection { src, .. })
            if crate::spec::SYSTEM_DATABASES.contains(&src.db.as_str()) =>
        {
            return Err(crate::spec::SpecError(vec![format!(
                "--ns: {} is the server's own database: sample data never goes there",
                src.db
            )])
            .into())
        }
        Ok(NsMapping::Collection { src, .. }) => src,
        Ok(_) => {
            return Err(crate::spec::SpecError(vec!["--ns: name one collection".into()]).into())
        }
        Err(e) => return Err(crate::spec::SpecError(vec![e]).into()),
    };
    let problems: Vec<String> = [
        crate::spec::uri_problem("to", &args.to),
        bounds::WORKERS.problem(args.workers),
        bounds::SAMPLE_DOC_SIZE.problem(args.doc_size),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(crate::spec::SpecError(problems).into());
    }
    let client = mongo::connect(
        Side::Destination,
        &args.to,
        args.workers as u32 + 1,
        Duration::from_secs(10),
    )
    .await?;
    if args.drop {
        client
            .database(&ns.db)
            .collection::<mongodb::bson::Document>(&ns.coll)
            .drop()
            .await
            .map_err(|e| Failure {
                message: format!("cannot drop {ns}: {e}"),
                status: 1,
            })?;
    }
    let stats = Arc::new(JobStats::new([(ns.clone(), ns.clone())], args.workers));
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::detect()
    };
    let progress = Progress::start((stats.clone(), None), mode, Duration::from_secs(5));
    let source = SyntheticSource {
        docs: args.count,
        doc_size: args.doc_size,
        strategy: Strategy::Stream,
    };
    let outcome = Engine::new(
        Arc::new(source),
        Arc::new(MongoSink::new(client.clone())),
        stats.clone(),
    )
    .with_batch_size(1000)
    .with_control(Arc::new(Control::new(args.workers)))
    .run(CancellationToken::new())
    .await;
    progress.finish().await;
    // Closed before the runtime stops: a client dropped then ends its sessions in a task that
    // can no longer run.
    mongo::close(client).await;
    outcome?;
    let snap = stats.snapshot();
    println!(
        "wrote {} sample docs to {ns} in {:.1}s",
        snap.docs, snap.seconds
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_the_operator_is_warned_of_what_is_missing() {
        let address: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(exposure_warnings(&address, true, false, false).is_empty());
        assert!(exposure_warnings(&address, false, true, true).is_empty());
        let warnings = exposure_warnings(&address, false, true, false);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("without TLS"), "{warnings:?}");
        let warnings = exposure_warnings(&address, false, false, false);
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].contains("without authentication"),
            "{warnings:?}"
        );
    }
}
