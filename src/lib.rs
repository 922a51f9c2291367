//! mongoferry copies MongoDB collections between databases and clusters.
//!
//! A producer streams the source in `_id` order into a bounded in-process queue; a pool of workers
//! takes batches off it (fetching documents by `_id` when the queue carries only ids) and writes
//! them to the destination idempotently. One client per cluster is reused for the whole run.
//!
//! # Layout
//!
//! - [`bounds`]: the accepted range of every number an operator gives, checked at every entry.
//! - [`bson_order`]: the server's sort order of BSON values; the query that resumes after an `_id`.
//! - [`api`]: the HTTP API of `serve`: routes, errors to status codes, events, metrics, the
//!   guard in front of them (host, origin, token, content type, limits), the generated OpenAPI
//!   document, HTTP/HTTPS serving, and the web dashboard at `/` (the files of `web/`, embedded in
//!   the binary).
//! - [`job`]: service jobs (typed states, views), the job manager ("bus") and the history file.
//! - [`cli`]: the command line (`copy`, `verify`, `serve`, `sample`), exit statuses, summaries.
//! - [`clusters`]: `serve --allow-cluster`: the hosts a URI names, and which ones jobs may reach.
//! - [`config`]: user input to a validated [`config::CopySpec`], every problem reported at once.
//! - [`copy`]: one copy job end to end: connect, resolve namespaces, run the engine, summarise.
//! - [`mongo`]: clients, namespaces, credential redaction, error classification.
//! - [`pipeline`]: the engine — [`pipeline::source`] → [`pipeline::queue`] → [`pipeline::worker`]
//!   → [`pipeline::sink`], plus a synthetic source and null sink to measure the engine itself.
//! - [`retry`]: which errors are transient, and backoff with jitter for retrying them.
//! - [`state`]: the state store: checkpoints (low watermarks) and dead letters, on disk.
//! - [`stats`]: per-namespace and per-worker counters and their snapshots.
//! - [`progress`]: progress bars or log lines drawn from the stats.
//! - [`adaptive`]: adaptive mode, steering workers and a rate cap by write latency.
//! - [`journal`]: the journal of every write (format spec, writer, reader), its replay and export.
//! - [`throttle`]: live rate limits (docs/s, bytes/s) per job and for the whole service.
//! - [`verify`]: compares source and destination document by document, in `_id` order.
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
