//! mongoferry copies MongoDB collections between databases and clusters.
//!
//! A producer streams the source in `_id` order into a bounded in-process queue; a pool of workers
//! takes batches off it (fetching documents by `_id` when the queue carries only ids) and writes
//! them to the destination idempotently. One client per cluster is reused for the whole run.
//!
//! # Layout
//!
//! Each module uses only those above it in this list (no cycles):
//!
//! - [`bounds`]: the accepted range of every number an operator gives, checked at every entry.
//! - [`mongo`]: clients, namespaces, credential redaction, error classes; BSON sort order and
//!   resume queries, retries, collection schemas.
//! - [`state`]: what outlives the process: checkpoints, dead letters, the job history; atomic
//!   file replacement.
//! - [`journal`]: the journal's format (spec, writer, reader, export); it knows nothing of the
//!   engine.
//! - [`engine`]: the pipeline — [`engine::source`] → [`engine::queue`] → [`engine::worker`] →
//!   [`engine::sink`], with control (pause, workers, throttle, adaptive mode), the ledger
//!   (checkpoint contract, dead letters) and stats.
//! - [`spec`]: the one job spec of the command line, the API and the history, validated.
//! - [`run`]: one job end to end per command: copy, journal replay, verify.
//! - [`service`]: `serve` as a library function: jobs and their state machine, the manager, the
//!   HTTP API with its guard, and the dashboard.
//! - [`cli`]: the command line, exit statuses, summaries, progress display.
//! - `testkit` (feature `testkit`, for the tests and the benchmark only): SecantusDB test
//!   servers and a fault-injecting proxy.

pub mod bounds;
pub mod cli;
pub mod engine;
pub mod journal;
pub mod mongo;
pub mod run;
pub mod service;
pub mod spec;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
