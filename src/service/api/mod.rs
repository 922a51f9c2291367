//! The HTTP API of `mongoferry serve`, and its dashboard.
//!
//! In: HTTP requests. Out: JSON views of jobs, server-sent events, Prometheus metrics, the
//! OpenAPI description and the web dashboard ([`web`]: `/` and `/web/…`, embedded in the binary).
//! Every error becomes a JSON body with a 4xx status in one place ([`ApiError`]); no request can
//! panic the service or get a 500 for bad input. Before any handler, every request passes the
//! [`guard`] (host, origin, token, content type, body limits); refused, it changes nothing. No
//! error answer quotes a secret of a URI the request carried, wherever it was in the request
//! (`without_request_secrets`).
//!
//! Every route is registered through `utoipa_axum`'s `routes!`, which takes the path and the
//! method from the handler's `#[utoipa::path]` attribute: the router and the OpenAPI document
//! ([`openapi`]) are built from the same declarations, so they cannot drift apart.

mod error;
pub mod guard;
mod metrics;
mod openapi;
mod options;
mod schemas;
pub mod server;
mod web;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::control::throttle::Limits;
use crate::engine::CopyError;
use crate::mongo::{self, MongoError};
use crate::run::plan::Plan;
use crate::service::job::{Job, JobId, JobView};
use crate::service::manager::{Command, JobManager, PlanError, SubmitError};
use crate::service::report::{self, Report};
use crate::spec::{GuardConfig, JobSpec};
pub use error::{ApiError, ErrorBody};
use guard::Guard;
pub use options::ApiOptions;

/// How often the event stream sends a progress snapshot.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What every handler can reach.
#[derive(Clone)]
struct ApiState {
    manager: Arc<JobManager>,
    /// The OpenAPI document of this service, serialised once.
    openapi: Arc<str>,
    /// One permit per open event stream.
    streams: Arc<Semaphore>,
    max_streams: usize,
}

impl FromRef<ApiState> for Arc<JobManager> {
    fn from_ref(state: &ApiState) -> Self {
        state.manager.clone()
    }
}

/// Every route with its OpenAPI description; the one place routes are declared.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(list_jobs, create_job))
        .routes(routes!(plan_job))
        .routes(routes!(get_job, patch_job))
        .routes(routes!(pause_job))
        .routes(routes!(resume_job))
        .routes(routes!(cancel_job))
        .routes(routes!(commit_job))
        .routes(routes!(reverse_job))
        .routes(routes!(job_events))
        .routes(routes!(job_series))
        .routes(routes!(job_report))
        .routes(routes!(get_throttle, put_throttle))
        .routes(routes!(openapi_json))
        .routes(routes!(metrics::render))
        .routes(routes!(web::index))
        .routes(routes!(web::asset))
        .routes(routes!(web::vendor_asset))
}

/// The OpenAPI document of the API as a service with `options` answers `GET /api/openapi.json`.
pub fn document(options: &ApiOptions) -> utoipa::openapi::OpenApi {
    openapi::finish(routes().into_openapi(), options)
}

/// The API's routes over a job manager, behind the [`guard`].
pub fn router(manager: Arc<JobManager>, options: ApiOptions) -> Router {
    let (routes, document) = routes().split_for_parts();
    let openapi = openapi::finish(document, &options)
        .to_json()
        .expect("the OpenAPI document serialises");
    let guard = Arc::new(Guard::new(
        &options.allowed_hosts,
        options.token.clone(),
        options.client_timeout,
    ));
    let max_streams = options.max_event_streams.max(1);
    routes
        // Inside the guard's body check: it reads the body the redaction looks into.
        .route_layer(middleware::from_fn(without_request_secrets))
        // Only on requests a route takes: a method no route takes gets its 405 whatever it sends.
        .route_layer(middleware::from_fn_with_state(
            guard.clone(),
            guard::check_body,
        ))
        .fallback(|| async { ApiError::NotFound("no such resource".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(ApiState {
            manager,
            openapi: openapi.into(),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
        })
        // Outermost, so it also covers the fallbacks: nothing is answered before it.
        .layer(middleware::from_fn_with_state(guard, guard::check))
        .layer(DefaultBodyLimit::max(guard::BODY_LIMIT))
}

/// The last guard of every error a route answers: it never quotes a secret of a URI that the
/// request carried, whatever the URI's shape and wherever it was (a URI field, a namespace, a
/// filter, a number's place, the path). Behind each message's own redaction; the body was read
/// by the guard already ([`guard::check_body`]).
async fn without_request_secrets(request: Request, next: Next) -> Response {
    let mut secrets = mongo::secrets_in(&request.uri().to_string());
    let request = if guard::changes_something(request.method()) {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, guard::BODY_LIMIT)
            .await
            .unwrap_or_default();
        secrets.extend(secrets_in_body(&bytes));
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    let response = next.run(request).await;
    let status = response.status();
    if secrets.is_empty() || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, guard::BODY_LIMIT).await else {
        let body = ErrorBody {
            error: "the answer could not be read".into(),
            problems: None,
        };
        return (status, Json(body)).into_response();
    };
    let text = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut value) => {
            redact_strings(&mut value, &secrets);
            value.to_string()
        }
        Err(_) => mongo::without_secrets(&String::from_utf8_lossy(&bytes), &secrets),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

/// The secrets of every string of a JSON body (names too), or of every word of another.
fn secrets_in_body(body: &[u8]) -> Vec<String> {
    fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => out.extend(mongo::secrets_in(text)),
            serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(members) => {
                for (name, v) in members {
                    out.extend(mongo::secrets_in(name));
                    strings(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => strings(&value, &mut out),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            for word in text.split(|c: char| c.is_whitespace() || "\"{}[],".contains(c)) {
                out.extend(mongo::secrets_in(word));
            }
        }
    }
    out
}

/// Every string of `value` without `secrets`.
fn redact_strings(value: &mut serde_json::Value, secrets: &[String]) {
    match value {
        serde_json::Value::String(text) => *text = mongo::without_secrets(text, secrets),
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(|v| redact_strings(v, secrets))
        }
        serde_json::Value::Object(members) => members
            .values_mut()
            .for_each(|v| redact_strings(v, secrets)),
        _ => {}
    }
}

type Api = State<Arc<JobManager>>;

fn parse_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map(JobId)
        .map_err(|_| ApiError::NotFound(format!("job {text} not found")))
}

fn find(manager: &JobManager, text: &str) -> Result<Arc<Job>, ApiError> {
    let id = parse_id(text)?;
    manager
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed request: {e}")))
}

/// A request body: a JSON object, as are its members named in `objects` when present. Serde
/// would also read a struct from an array of its fields' values (`[5, null]`), which no client
/// means and the OpenAPI document does not allow.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes, objects: &[&str]) -> Result<T, ApiError> {
    let value: serde_json::Value = parse_json(body)?;
    let Some(members) = value.as_object() else {
        return Err(ApiError::BadRequest(
            "malformed request: expected a JSON object".into(),
        ));
    };
    for name in objects {
        if members
            .get(*name)
            .is_some_and(|v| !(v.is_object() || v.is_null()))
        {
            return Err(ApiError::BadRequest(format!(
                "malformed request: {name} must be a JSON object or null"
            )));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("malformed request: {e}")))
}

/// `GET /api/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// Every job, with the history of earlier runs.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs",
    responses((status = 200, description = "Every job, oldest first", body = JobList)))]
async fn list_jobs(State(manager): Api) -> Json<JobList> {
    Json(JobList {
        jobs: manager.list().iter().map(|j| j.view()).collect(),
    })
}

/// Starts a job (the answer comes at once); the same spec while its job is active answers with
/// that job.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    request_body = JobSpec,
    responses(
        (status = 202, description = "Job started", body = JobView,
            headers(("location" = String, description = "The job's URL"))),
        (status = 200, description = "An active job with the same spec: that job", body = JobView,
            headers(("location" = String, description = "The job's URL"))),
        (status = 400, description = "Malformed JSON, or an invalid spec with every problem",
            body = ErrorBody),
        (status = 503, description = "The shared state did not give the job an id", body = ErrorBody),
    ))]
async fn create_job(State(manager): Api, body: Bytes) -> Result<Response, ApiError> {
    let spec: JobSpec = parse_body(&body, &["adaptive", "journal"])?;
    // A field no job has is a malformed request, as a misspelt option would be.
    if let Some(field) = spec.unknown.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "malformed request: unknown field `{field}`"
        )));
    }
    let (job, created) = manager.submit(spec).await.map_err(|e| match e {
        SubmitError::Invalid(e) => ApiError::InvalidSpec(e.0),
        SubmitError::State(e) => ApiError::Unavailable(e.to_string()),
    })?;
    Ok(started(&job, created))
}

/// What a job of this spec would do, found by reading both clusters and writing nothing: per
/// namespace its documents and bytes, the options and indexes to create, the destination's
/// state; the views; the problems (`blocked` when the job would refuse to start); a time
/// estimate.
#[utoipa::path(post, path = "/api/plan", tag = "jobs",
    request_body = JobSpec,
    responses(
        (status = 200, description = "The plan", body = Plan),
        (status = 400, description = "Malformed JSON, an invalid spec with every problem, or a \
            namespace the source lacks", body = ErrorBody),
        (status = 502, description = "A cluster could not be reached or refused the service",
            body = ErrorBody),
    ))]
async fn plan_job(State(manager): Api, body: Bytes) -> Result<Json<Plan>, ApiError> {
    let spec: JobSpec = parse_body(&body, &["adaptive", "journal"])?;
    if let Some(field) = spec.unknown.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "malformed request: unknown field `{field}`"
        )));
    }
    manager.plan(&spec).await.map(Json).map_err(|e| match e {
        PlanError::Invalid(problems) => ApiError::InvalidSpec(problems.0),
        PlanError::Failed(CopyError::Mongo(
            e @ (MongoError::Unreachable { .. } | MongoError::Auth { .. }),
        )) => ApiError::Upstream(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    })
}

/// One job: its state, spec (without secrets), progress per namespace and per worker.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
async fn get_job(State(manager): Api, Path(id): Path<String>) -> Result<Json<JobView>, ApiError> {
    Ok(Json(find(&manager, &id)?.view()))
}

/// `PATCH /api/jobs/{id}`: live settings. A field left out stays as it is; a rate set to `null`
/// lifts that limit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JobPatch {
    /// Concurrent workers, 1 to 256.
    workers: Option<usize>,
    /// Documents per second (`null` lifts the limit).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    rate: Option<Option<f64>>,
    /// Bytes per second (`null` lifts the limit).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    rate_bytes: Option<Option<f64>>,
    /// The load guard's settings, as in a job spec (`null` turns that signal off).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    max_lag_ms: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    max_load: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    critical_load: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    critical_load_hibernate_secs: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    throttle_flag_file: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    throttle_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    min_oplog_headroom_secs: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    postpone_commit_flag_file: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    guard_interval_ms: Option<Option<u64>>,
}

impl JobPatch {
    /// The load guard's fields sent, as JSON (`null`: turned off); empty when none was.
    fn guard_changes(&self) -> serde_json::Map<String, serde_json::Value> {
        fn sent<T: Serialize>(field: &Option<Option<T>>) -> Option<serde_json::Value> {
            field
                .as_ref()
                .map(|value| serde_json::to_value(value).unwrap_or_default())
        }
        [
            ("max_lag_ms", sent(&self.max_lag_ms)),
            ("max_load", sent(&self.max_load)),
            ("critical_load", sent(&self.critical_load)),
            (
                "critical_load_hibernate_secs",
                sent(&self.critical_load_hibernate_secs),
            ),
            ("throttle_flag_file", sent(&self.throttle_flag_file)),
            ("throttle_url", sent(&self.throttle_url)),
            (
                "min_oplog_headroom_secs",
                sent(&self.min_oplog_headroom_secs),
            ),
            (
                "postpone_commit_flag_file",
                sent(&self.postpone_commit_flag_file),
            ),
            ("guard_interval_ms", sent(&self.guard_interval_ms)),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_string(), value?)))
        .collect()
    }
}

/// Tells a field sent as `null` (`Some(None)`) from a field left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The guard's settings now (`view`'s) with `changes` merged in: a field set to `null` is
/// turned off.
fn merged_guard(
    view: &JobView,
    changes: serde_json::Map<String, serde_json::Value>,
) -> Result<GuardConfig, ApiError> {
    let now = view.load_guard.as_ref().and_then(|g| g.settings.clone());
    let mut config = match now {
        Some(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for (name, value) in changes {
        match value {
            serde_json::Value::Null => config.remove(&name),
            value => config.insert(name, value),
        };
    }
    serde_json::from_value(serde_json::Value::Object(config))
        .map_err(|e| ApiError::BadRequest(format!("load guard settings: {e}")))
}

/// Changes a running job's workers, rate limits or load guard, in force at once.
#[utoipa::path(patch, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    request_body = JobPatch,
    responses(
        (status = 200, description = "The job with its new settings", body = JobView),
        (status = 400, description = "Malformed JSON, nothing to change, a value out of range, \
            or a serverStatus path the job's servers do not report",
            body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has ended", body = ErrorBody),
        (status = 503, description = "Another service node runs the job and did not answer",
            body = ErrorBody),
    ))]
async fn patch_job(
    State(manager): Api,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    let mut job = find(&manager, &id)?;
    let patch: JobPatch = parse_body(&body, &[])?;
    let guard = patch.guard_changes();
    if patch.workers.is_none()
        && patch.rate.is_none()
        && patch.rate_bytes.is_none()
        && guard.is_empty()
    {
        return Err(ApiError::BadRequest(
            "nothing to change: send workers, rate, rate_bytes or a load guard setting".into(),
        ));
    }
    if !guard.is_empty() {
        let config = merged_guard(&job.view(), guard)?;
        job = manager.command(job.id, Command::SetGuard(config)).await?;
    }
    if patch.rate.is_some() || patch.rate_bytes.is_some() {
        // As the node running the job last said (this one, or another on a shared state).
        let now = job.view().limits;
        let limits = Limits {
            rate: patch.rate.unwrap_or(now.rate),
            rate_bytes: patch.rate_bytes.unwrap_or(now.rate_bytes),
        };
        job = manager.command(job.id, Command::SetLimits(limits)).await?;
    }
    if let Some(workers) = patch.workers {
        job = manager
            .command(job.id, Command::SetWorkers(workers))
            .await?;
    }
    Ok(Json(job.view()))
}

/// The budget all jobs of this service share.
#[utoipa::path(get, path = "/api/throttle", tag = "throttle",
    responses((status = 200, description = "The shared limits (`null`: unlimited)", body = Limits)))]
async fn get_throttle(State(manager): Api) -> Json<Limits> {
    Json(manager.global_limits())
}

/// `PUT /api/throttle`: the shared budget; a limit left out or `null` is lifted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ThrottleBody {
    /// Documents per second.
    rate: Option<f64>,
    /// Bytes per second.
    rate_bytes: Option<f64>,
}

/// Sets the budget all jobs share, on top of their own limits.
#[utoipa::path(put, path = "/api/throttle", tag = "throttle",
    request_body = ThrottleBody,
    responses(
        (status = 200, description = "The shared limits now", body = Limits),
        (status = 400, description = "Malformed JSON or a value out of range", body = ErrorBody),
    ))]
async fn put_throttle(State(manager): Api, body: Bytes) -> Result<Json<Limits>, ApiError> {
    let body: ThrottleBody = parse_body(&body, &[])?;
    manager.set_global_limits(Limits {
        rate: body.rate,
        rate_bytes: body.rate_bytes,
    })?;
    Ok(Json(manager.global_limits()))
}

/// The body of the commands (pause, resume, cancel): nothing, or an empty JSON object. They carry
/// `Content-Type: application/json` all the same, as every request that changes something does.
#[derive(Debug, ToSchema)]
#[schema(max_properties = 0)]
struct NoParameters {}

/// A command's body: nothing, or `{}`.
fn no_parameters(body: &Bytes) -> Result<(), ApiError> {
    let empty = body.iter().all(u8::is_ascii_whitespace)
        || matches!(parse_json(body)?, serde_json::Value::Object(map) if map.is_empty());
    if !empty {
        return Err(ApiError::BadRequest(
            "this command takes no parameters: send no body or {}".into(),
        ));
    }
    Ok(())
}

async fn command(
    manager: &JobManager,
    id: &str,
    body: &Bytes,
    command: Command,
) -> Result<Json<JobView>, ApiError> {
    no_parameters(body)?;
    let job = manager.command(parse_id(id)?, command).await?;
    Ok(Json(job.view()))
}

/// Pauses a job after its batches in flight.
#[utoipa::path(post, path = "/api/jobs/{id}/pause", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    request_body(content = NoParameters, description = "{} (or nothing)"),
    responses(
        (status = 200, description = "The job, paused", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 400, description = "A body other than {}", body = ErrorBody),
        (status = 409, description = "The job has ended", body = ErrorBody),
        (status = 503, description = "Another service node runs the job and did not answer",
            body = ErrorBody),
    ))]
async fn pause_job(
    State(manager): Api,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    command(&manager, &id, &body, Command::Pause).await
}

/// Resumes a paused job.
#[utoipa::path(post, path = "/api/jobs/{id}/resume", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    request_body(content = NoParameters, description = "{} (or nothing)"),
    responses(
        (status = 200, description = "The job, running again", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 400, description = "A body other than {}", body = ErrorBody),
        (status = 409, description = "The job has ended", body = ErrorBody),
        (status = 503, description = "Another service node runs the job and did not answer",
            body = ErrorBody),
    ))]
async fn resume_job(
    State(manager): Api,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    command(&manager, &id, &body, Command::Resume).await
}

/// Cancels a job after its batches in flight (an interrupted job: for good).
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    request_body(content = NoParameters, description = "{} (or nothing)"),
    responses(
        (status = 200, description = "The job, cancelling", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 400, description = "A body other than {}", body = ErrorBody),
        (status = 409, description = "The job has ended", body = ErrorBody),
        (status = 503, description = "Another service node runs the job and did not answer",
            body = ErrorBody),
    ))]
async fn cancel_job(
    State(manager): Api,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    command(&manager, &id, &body, Command::Cancel).await
}

/// Commits a sync job: applies every change of the source up to now, verifies if the spec
/// asks for it, and ends the job `completed` (its sync phase `committed`).
#[utoipa::path(post, path = "/api/jobs/{id}/commit", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    request_body(content = NoParameters, description = "{} (or nothing)"),
    responses(
        (status = 200, description = "The job, committing", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 400, description = "A body other than {}", body = ErrorBody),
        (status = 409, description = "The job has ended, or is a copy", body = ErrorBody),
        (status = 503, description = "Another service node runs the job and did not answer",
            body = ErrorBody),
    ))]
async fn commit_job(
    State(manager): Api,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    command(&manager, &id, &body, Command::Commit).await
}

/// Fails back from a committed sync job: starts a new sync job from its destination back to
/// its source, from the commit point (no initial copy: the two sides were equal then), with the
/// namespaces mapped back. Refused, with the reason, for a job that is not a committed sync, has
/// a filter or a transform, has documents the destination refused, or whose names do not map
/// back one to one.
#[utoipa::path(post, path = "/api/jobs/{id}/reverse", tag = "jobs",
    params(("id" = u64, Path, description = "The committed sync job's id", example = 1)),
    request_body(content = NoParameters, description = "{} (or nothing)"),
    responses(
        (status = 202, description = "The reverse job, started", body = JobView,
            headers(("location" = String, description = "The reverse job's URL"))),
        (status = 200, description = "The reverse job, already active", body = JobView,
            headers(("location" = String, description = "The reverse job's URL"))),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 400, description = "A body other than {}, or a reverse spec refused",
            body = ErrorBody),
        (status = 409, description = "The job cannot be reversed: not a sync, not committed, \
            filtered, transformed, with refused documents, or names that do not map back",
            body = ErrorBody),
        (status = 502, description = "A cluster could not be reached to seed the reverse",
            body = ErrorBody),
        (status = 503, description = "The state store did not answer", body = ErrorBody),
    ))]
async fn reverse_job(
    State(manager): Api,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    no_parameters(&body)?;
    let (job, created) = manager.reverse(parse_id(&id)?).await?;
    Ok(started(&job, created))
}

/// The answer of a request that starts a job: 202 with a new job, 200 with the one that runs
/// already; where it lives, and its view.
fn started(job: &Job, created: bool) -> Response {
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/jobs/{}", job.id);
    (status, [(header::LOCATION, location)], Json(job.view())).into_response()
}

/// What an event of a job's stream says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum EventKind {
    /// The job's state: the stream's first event, one at every change, and its last.
    State,
    /// About once a second while the job is active.
    Progress,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Progress => "progress",
        }
    }
}

/// One server-sent event of `GET /api/jobs/{id}/events`: its `event` field, and as `data` the
/// job's view (`JobView`) as JSON.
struct JobEvent;

impl utoipa::PartialSchema for JobEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let mut data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some("The job's view (JobView), as JSON"))
            .build();
        // JSON Schema's contentSchema, which utoipa has no attribute for: the data's own schema.
        data.extensions.get_or_insert_with(Default::default).insert(
            "contentSchema".into(),
            serde_json::json!({ "$ref": "#/components/schemas/JobView" }),
        );
        ObjectBuilder::new()
            .property("event", utoipa::openapi::Ref::from_schema_name("EventKind"))
            .required("event")
            .property("data", data)
            .required("data")
            .build()
            .into()
    }
}

impl ToSchema for JobEvent {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "EventKind".into(),
            <EventKind as utoipa::PartialSchema>::schema(),
        ));
        schemas.push((
            "JobView".into(),
            <JobView as utoipa::PartialSchema>::schema(),
        ));
        <JobView as ToSchema>::schemas(schemas);
    }
}

/// Server-sent events: the job now, then a `progress` event about once a second and a `state`
/// event at every state change; the stream ends after the final state. Each event's data is the
/// job's view (`JobView`) as JSON.
#[utoipa::path(get, path = "/api/jobs/{id}/events", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    responses(
        (status = 200, description = "`state` and `progress` events, each a JobView",
            content_type = "text/event-stream", body = JobEvent),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Too many event streams open", body = ErrorBody,
            headers(("retry-after" = u32, description = "Seconds to wait"))),
    ))]
async fn job_events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = find(&state.manager, &id)?;
    // Held by the stream, so it is given back when the stream ends or its client goes away.
    let permit: OwnedSemaphorePermit = state
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams(state.max_streams))?;
    let states = job.watch_state();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let manager = state.manager.clone();
    let stream = futures::stream::unfold(
        (job, states, tick, true, false, permit),
        move |(mut job, mut states, mut tick, first, done, permit)| {
            let manager = manager.clone();
            async move {
                if done {
                    return None;
                }
                let mut kind = if first {
                    EventKind::State
                } else {
                    tokio::select! {
                        changed = states.changed() => match changed {
                            Ok(()) => EventKind::State,
                            Err(_) => return None,
                        },
                        _ = tick.tick() => EventKind::Progress,
                    }
                };
                // The stream follows the job, not one run of it: with several service nodes, the
                // job's run here may start (a node took it over) or stop (another took it from
                // this one) while it goes on.
                if let Some(now) = manager.get(job.id).filter(|now| !Arc::ptr_eq(now, &job)) {
                    job = now;
                    states = job.watch_state();
                    kind = EventKind::State;
                }
                let state = *states.borrow_and_update();
                let view = job.view();
                let event = Event::default()
                    .event(kind.as_str())
                    .json_data(&view)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable"));
                let done = state.is_final() && kind == EventKind::State;
                Some((Ok(event), (job, states, tick, false, done, permit)))
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A job's chart series (`GET /api/jobs/{id}/series`).
#[derive(Debug, Serialize, ToSchema)]
struct SeriesView {
    /// Each measure that has values, as `[unix_seconds, value]` pairs, oldest first:
    /// `docs_per_sec`, `bytes_per_sec`, `workers`, `rate_limit` (documents per second),
    /// `batch_latency_ms`, `sync_lag_secs`, `events_per_sec`, `deletes_per_sec`, `held` (1: the
    /// load guard held the job; a merged point is the share of its time held). At most 1,000
    /// points each: one a second while the job runs, the older half merged into coarser points as
    /// it grows.
    #[schema(value_type = Object, example = json!({"docs_per_sec": [[1765000000.0, 5120.5]]}))]
    series: std::collections::BTreeMap<String, Vec<[f64; 2]>>,
}

/// A job's charts over its whole life: what its run sampled once a second, saved with the
/// history (so a restarted service, or another node on a shared state, has them too).
#[utoipa::path(get, path = "/api/jobs/{id}/series", tag = "jobs",
    params(("id" = u64, Path, description = "The job's id", example = 1)),
    responses(
        (status = 200, description = "The job's series", body = SeriesView),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
async fn job_series(
    State(manager): Api,
    Path(id): Path<String>,
) -> Result<Json<SeriesView>, ApiError> {
    let job = find(&manager, &id)?;
    let series = manager.series(&job).await.by_measure();
    Ok(Json(SeriesView { series }))
}

/// `GET /api/jobs/{id}/report`'s parameters.
#[derive(Debug, Deserialize)]
struct ReportQuery {
    format: Option<String>,
}

/// The job's report: one self-contained HTML page (inline CSS, charts as inline SVG, no script,
/// nothing fetched from the network) with its spec (no credentials), timeline, figures, charts,
/// dead letters, verification and nodes; `?format=json`: the same as JSON.
#[utoipa::path(get, path = "/api/jobs/{id}/report", tag = "jobs",
    params(
        ("id" = u64, Path, description = "The job's id", example = 1),
        ("format" = Option<String>, Query, description = "`html` (the default) or `json`"),
    ),
    responses(
        (status = 200, description = "The report: an HTML page, or with `format=json` its content",
            content(
                (String = "text/html"),
                (Report = "application/json"),
            )),
        (status = 400, description = "An unknown format", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
async fn job_report(
    State(manager): Api,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let json = match query.format.as_deref() {
        None | Some("html") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown report format {other:?}: html or json"
            )))
        }
    };
    let job = find(&manager, &id)?;
    let report = Report::of(&job, manager.series(&job).await.by_measure());
    if json {
        return Ok(Json(report).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                report::CONTENT_SECURITY_POLICY,
            ),
        ],
        report.html(),
    )
        .into_response())
}

/// This document: the API in OpenAPI 3.1.
#[utoipa::path(get, path = "/api/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];

    fn app() -> Router {
        let state = Arc::new(crate::state::MemoryStore::default());
        router(
            JobManager::open(None, state, None).expect("a manager without history"),
            ApiOptions::default(),
        )
    }

    /// The status and the `error` text of one request to the router, in-process.
    async fn send(app: &Router, method: Method, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_default();
        (status, error)
    }

    /// A concrete path for a documented template.
    fn concrete(template: &str) -> String {
        template
            .replace("{id}", "1")
            .replace("{file}", "no-such-file")
    }

    #[tokio::test]
    async fn every_route_is_in_the_document_and_nothing_else() {
        let app = app();
        let document = document(&ApiOptions::default());
        let paths = &document.paths.paths;
        assert!(paths.len() >= 12, "{:?}", paths.keys());
        for (template, item) in paths {
            let documented: Vec<Method> = METHODS
                .into_iter()
                .filter(|m| {
                    let operation = match *m {
                        Method::GET => &item.get,
                        Method::POST => &item.post,
                        Method::PUT => &item.put,
                        Method::PATCH => &item.patch,
                        _ => &item.delete,
                    };
                    operation.is_some()
                })
                .collect();
            assert!(!documented.is_empty(), "{template} has no operation");
            let path = concrete(template);
            for method in METHODS {
                let (status, error) = send(&app, method.clone(), &path).await;
                if documented.contains(&method) {
                    // Served by a route (a handler's own 404 names what is missing).
                    assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                    assert_ne!(error, "no such resource", "{method} {path}");
                } else {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                }
            }
        }
        // The routes the README and the dashboard use are all documented.
        for (method, path) in [
            ("get", "/api/jobs"),
            ("post", "/api/jobs"),
            ("get", "/api/jobs/{id}"),
            ("patch", "/api/jobs/{id}"),
            ("get", "/api/jobs/{id}/events"),
            ("get", "/api/jobs/{id}/report"),
            ("post", "/api/jobs/{id}/pause"),
            ("post", "/api/jobs/{id}/resume"),
            ("post", "/api/jobs/{id}/cancel"),
            ("get", "/api/throttle"),
            ("put", "/api/throttle"),
            ("get", "/api/openapi.json"),
            ("get", "/metrics"),
            ("get", "/"),
            ("get", "/web/{file}"),
            ("get", "/web/vendor/{file}"),
        ] {
            let json = serde_json::to_value(&paths[path]).unwrap();
            assert!(
                json[method].is_object(),
                "{method} {path} is not documented"
            );
        }
        // Anything else is the router's fallback.
        for path in ["/api", "/api/jobs/1/nope", "/web/a/b/c", "/metrics/x"] {
            let (status, error) = send(&app, Method::GET, path).await;
            assert_eq!(
                (status, error.as_str()),
                (StatusCode::NOT_FOUND, "no such resource")
            );
        }
    }

    #[tokio::test]
    async fn report_refuses_an_unknown_format_and_an_unknown_job() {
        let app = app();
        let (status, error) = send(&app, Method::GET, "/api/jobs/1/report?format=pdf").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert!(error.contains("unknown report format"), "{error}");
        for path in ["/api/jobs/9/report", "/api/jobs/9/report?format=json"] {
            let (status, error) = send(&app, Method::GET, path).await;
            assert_eq!(
                (status, error.as_str()),
                (StatusCode::NOT_FOUND, "job 9 not found")
            );
        }
    }

    /// Routes are added only through `routes()`, where `routes!` documents each one: a plain
    /// axum route here would be served without being in the document.
    #[test]
    fn no_route_bypasses_the_document() {
        let source = include_str!("mod.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        for bypass in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".merge(",
            ".nest_service(",
        ] {
            assert!(
                !code.contains(bypass),
                "src/service/api/mod.rs calls {bypass}"
            );
        }
    }

    #[test]
    fn the_document_names_every_schema_it_uses() {
        let text = document(&ApiOptions::default()).to_json().unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schemas = json["components"]["schemas"].as_object().unwrap();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(schemas.contains_key(name), "{name} is used but not defined");
        }
    }
}
