//! The HTTP API of `mongoferry serve`, and its dashboard.
//!
//! In: HTTP requests. Out: JSON views of jobs, server-sent events, Prometheus metrics, the
//! OpenAPI description and the web dashboard ([`web`]: `/` and `/web/…`, embedded in the binary). Every error becomes a JSON body with a 4xx status in one place
//! ([`ApiError`]); no request can panic the service or get a 500 for bad input.

mod metrics;
mod web;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::engine::control::throttle::Limits;
use crate::job::manager::{Command, CommandError, JobManager};
use crate::job::{Job, JobId, JobSpec};

/// How often the event stream sends a progress snapshot.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Errors of the API layer, each with its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid job")]
    InvalidSpec(Vec<String>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::InvalidSpec(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        };
        let body = match &self {
            ApiError::InvalidSpec(problems) => {
                json!({ "error": "invalid job", "problems": problems })
            }
            other => json!({ "error": other.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CommandError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            CommandError::Invalid(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

/// The API's routes over a job manager.
pub fn router(manager: Arc<JobManager>) -> Router {
    Router::new()
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route("/api/jobs/{id}", get(get_job).patch(patch_job))
        .route("/api/jobs/{id}/pause", post(pause_job))
        .route("/api/jobs/{id}/resume", post(resume_job))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/throttle", get(get_throttle).put(put_throttle))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics::render))
        .route("/", get(web::index))
        .route("/web/{*path}", get(web::asset))
        .fallback(|| async { ApiError::NotFound("no such resource".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(manager)
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

async fn list_jobs(State(manager): Api) -> Response {
    let jobs: Vec<_> = manager.list().iter().map(|j| j.view()).collect();
    Json(json!({ "jobs": jobs })).into_response()
}

async fn create_job(State(manager): Api, body: Bytes) -> Result<Response, ApiError> {
    let spec: JobSpec = parse_json(&body)?;
    let (job, created) = manager
        .submit(spec)
        .await
        .map_err(|e| ApiError::InvalidSpec(e.0))?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/jobs/{}", job.id);
    Ok((status, [(header::LOCATION, location)], Json(job.view())).into_response())
}

async fn get_job(State(manager): Api, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(find(&manager, &id)?.view()).into_response())
}

/// `PATCH /api/jobs/{id}`: live settings. A field left out stays as it is; a rate set to `null`
/// lifts that limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobPatch {
    workers: Option<usize>,
    #[serde(default, deserialize_with = "present")]
    rate: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    rate_bytes: Option<Option<f64>>,
}

/// Tells a field sent as `null` (`Some(None)`) from a field left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

async fn patch_job(
    State(manager): Api,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let job = find(&manager, &id)?;
    let patch: JobPatch = parse_json(&body)?;
    if patch.workers.is_none() && patch.rate.is_none() && patch.rate_bytes.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to change: send workers, rate or rate_bytes".into(),
        ));
    }
    if patch.rate.is_some() || patch.rate_bytes.is_some() {
        let now = job.control.throttle().job.limits();
        let limits = Limits {
            rate: patch.rate.unwrap_or(now.rate),
            rate_bytes: patch.rate_bytes.unwrap_or(now.rate_bytes),
        };
        manager.command(job.id, Command::SetLimits(limits)).await?;
    }
    if let Some(workers) = patch.workers {
        manager
            .command(job.id, Command::SetWorkers(workers))
            .await?;
    }
    Ok(Json(job.view()).into_response())
}

/// `GET /api/throttle`: the budget all jobs of this service share.
async fn get_throttle(State(manager): Api) -> Response {
    Json(manager.global_limits()).into_response()
}

/// `PUT /api/throttle`: sets the shared budget (`null` lifts a limit).
async fn put_throttle(State(manager): Api, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        rate: Option<f64>,
        rate_bytes: Option<f64>,
    }
    let body: Body = parse_json(&body)?;
    let limits = Limits {
        rate: body.rate,
        rate_bytes: body.rate_bytes,
    };
    manager.set_global_limits(limits)?;
    Ok(Json(manager.global_limits()).into_response())
}

async fn command(manager: &JobManager, id: &str, command: Command) -> Result<Response, ApiError> {
    let job = manager.command(parse_id(id)?, command).await?;
    Ok(Json(job.view()).into_response())
}

async fn pause_job(State(manager): Api, Path(id): Path<String>) -> Result<Response, ApiError> {
    command(&manager, &id, Command::Pause).await
}

async fn resume_job(State(manager): Api, Path(id): Path<String>) -> Result<Response, ApiError> {
    command(&manager, &id, Command::Resume).await
}

async fn cancel_job(State(manager): Api, Path(id): Path<String>) -> Result<Response, ApiError> {
    command(&manager, &id, Command::Cancel).await
}

/// Server-sent events: the job now, then a `progress` event about once a second and a `state`
/// event at every state change; the stream ends after the final state.
async fn job_events(
    State(manager): Api,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = find(&manager, &id)?;
    let states = job.watch_state();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(
        (job, states, tick, true, false),
        |(job, mut states, mut tick, first, done)| async move {
            if done {
                return None;
            }
            let kind = if first {
                "state"
            } else {
                tokio::select! {
                    changed = states.changed() => match changed {
                        Ok(()) => "state",
                        Err(_) => return None,
                    },
                    _ = tick.tick() => "progress",
                }
            };
            let state = *states.borrow_and_update();
            let view = job.view();
            let event = Event::default()
                .event(kind)
                .json_data(&view)
                .unwrap_or_else(|_| Event::default().comment("unserialisable"));
            let done = state.is_final() && kind == "state";
            Some((Ok(event), (job, states, tick, false, done)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}
