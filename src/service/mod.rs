//! The service (`mongoferry serve`): jobs with typed states, the manager that runs them, the HTTP
//! API and dashboard, and [`serve`], which runs it all on a listener until told to stop.
//!
//! In: a bound listener, a [`JobManager`] and [`ServiceOptions`]. Out: the API served until the
//! shutdown token fires; then every job stops after its batches in flight (recorded as
//! `interrupted`, to be continued by the next start), and [`serve`] returns. The command line
//! builds these from flags; tests build them in-process on port 0.
//!
//! - [`job`]: a job's spec, state machine and views.
//! - [`manager`]: starts jobs, carries commands to them, keeps the history.
//! - [`nodes`]: several service nodes on one MongoDB state: the same jobs on each, shared.
//! - [`clusters`]: `--allow-cluster`: which hosts jobs may reach.
//! - [`credentials`]: `--credentials-key-file`: jobs' credentials sealed in the history.
//! - [`notify`]: `--notify-url`: each state change of the jobs this node runs, POSTed (signed,
//!   retried, never holding a job up).
//! - [`report`]: a job's report, a self-contained HTML page (or JSON).
//! - [`api`]: routes, the guard in front of them, events, metrics, the OpenAPI document, the
//!   dashboard's files, and HTTP/HTTPS serving.

pub mod api;
pub mod clusters;
pub mod command;
pub mod credentials;
pub mod job;
pub mod manager;
pub mod nodes;
pub mod notify;
pub mod report;
pub mod series;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use api::server::{ServeOptions, Tls};
use api::ApiOptions;
pub use manager::JobManager;

/// How the service answers and stops.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The guard's settings: token, host names, event streams, client timeout.
    pub api: ApiOptions,
    /// HTTPS with this certificate; plain HTTP without.
    pub tls: Option<Tls>,
    /// How long jobs get to stop (after their batches in flight) once shutdown begins.
    pub shutdown_timeout: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            api: ApiOptions::default(),
            tls: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Continues the jobs an earlier run of the service left unfinished, then serves `manager`'s API
/// on `listener` until `shutdown` is cancelled (or the server fails). Then it stops accepting
/// connections, stops every job after its batches in flight (at most `shutdown_timeout`),
/// records their states, and returns. Every task it starts is joined.
pub async fn serve(
    listener: std::net::TcpListener,
    manager: Arc<JobManager>,
    options: ServiceOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    manager.resume().await;
    let deadline = options.shutdown_timeout;
    let serve_options = ServeOptions {
        tls: options.tls,
        client_timeout: options.api.client_timeout,
    };
    let app = api::router(manager.clone(), options.api);
    // Requests in flight may take as long as the jobs take to stop, and a little more.
    let grace = deadline + Duration::from_secs(5);
    let stop = shutdown.child_token();
    let mut server = tokio::spawn(api::server::serve(
        listener,
        app,
        serve_options,
        stop.clone(),
        grace,
    ));
    let served = tokio::select! {
        outcome = &mut server => Some(outcome),
        _ = stop.cancelled() => None,
    };
    // Stop accepting (the graceful shutdown), let running batches finish, record states.
    stop.cancel();
    manager.shutdown(deadline).await;
    let served = match served {
        Some(outcome) => outcome,
        None => match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(outcome) => outcome,
            // Event streams of finished jobs close by themselves; anything left is cut off.
            Err(_) => {
                server.abort();
                let _ = server.await;
                Ok(Ok(()))
            }
        },
    };
    match served {
        Ok(outcome) => outcome,
        Err(e) => Err(std::io::Error::other(format!(
            "the server task failed: {e}"
        ))),
    }
}
