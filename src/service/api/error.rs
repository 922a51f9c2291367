//! Every error of the API, and the one place it becomes an answer: a status code and a JSON
//! [`ErrorBody`]. A leaf of `api/`: the handlers' files import it, it imports only the guard's
//! [`Refusal`] (which it answers too: `impl IntoResponse for Refusal`).
//!
//! In: an [`ApiError`] (or a refusal of the guard, or a manager's [`CommandError`]). Out: its
//! response (4xx or 502/503, with `WWW-Authenticate` or `Retry-After` where they apply).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::guard::Refusal;
use crate::engine::CopyError;
use crate::mongo::MongoError;
use crate::run::reverse::ReverseError;
use crate::service::manager::{CommandError, ReverseJobError, SubmitError};
use crate::state::StateError;

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
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("too many event streams open (at most {0}); close one, or try again later")]
    TooManyStreams(usize),
    /// A cluster the request named could not be reached or would not let the service in.
    #[error("{0}")]
    Upstream(String),
    /// The shared state, or the node that runs a job, did not answer: try again.
    #[error("{0}")]
    Unavailable(String),
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// Every problem of an invalid job spec (only on `400 invalid job`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidSpec(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Refused(refusal) => match refusal {
                Refusal::NoHost | Refusal::Host(_) => StatusCode::MISDIRECTED_REQUEST,
                Refusal::Origin(_) => StatusCode::FORBIDDEN,
                Refusal::NoToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
                Refusal::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                Refusal::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let extra = match &self {
            ApiError::Refused(Refusal::NoToken | Refusal::WrongToken) => {
                Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
            }
            ApiError::TooManyStreams(_) | ApiError::Unavailable(_) => {
                Some((header::RETRY_AFTER, HeaderValue::from_static("5")))
            }
            _ => None,
        };
        let body = match self {
            ApiError::InvalidSpec(problems) => ErrorBody {
                error: "invalid job".into(),
                problems: Some(problems),
            },
            other => ErrorBody {
                error: other.to_string(),
                problems: None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some((name, value)) = extra {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CommandError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            CommandError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            CommandError::NotSync(_) => ApiError::Conflict(e.to_string()),
            CommandError::RefusedElsewhere { conflict: true, .. } => {
                ApiError::Conflict(e.to_string())
            }
            CommandError::RefusedElsewhere { .. } => ApiError::BadRequest(e.to_string()),
            CommandError::Unanswered { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<ReverseJobError> for ApiError {
    fn from(e: ReverseJobError) -> Self {
        let message = e.to_string();
        match e {
            ReverseJobError::NotFound(_) => ApiError::NotFound(message),
            ReverseJobError::NoSpec { .. } => ApiError::Conflict(message),
            ReverseJobError::Submit(SubmitError::Invalid(e)) => ApiError::InvalidSpec(e.0),
            ReverseJobError::Submit(SubmitError::State(_)) => ApiError::Unavailable(message),
            ReverseJobError::Reverse(e) => match e {
                ReverseError::Invalid(e) => ApiError::InvalidSpec(e.0),
                // A cluster that could not be reached, or let the service in, to seed the
                // reverse; what it answered otherwise (a namespace gone since) is a conflict.
                ReverseError::Copy(CopyError::Mongo(
                    MongoError::Unreachable { .. } | MongoError::Auth { .. },
                )) => ApiError::Upstream(message),
                ReverseError::State(StateError::JobBusy { .. }) => ApiError::Conflict(message),
                ReverseError::State(_) => ApiError::Unavailable(message),
                ReverseError::UnknownJob { .. } => ApiError::NotFound(message),
                ReverseError::NotSync { .. }
                | ReverseError::NotCommitted { .. }
                | ReverseError::NoReversePoint { .. }
                | ReverseError::Filtered { .. }
                | ReverseError::Transformed { .. }
                | ReverseError::DeadLetters { .. }
                | ReverseError::NotInvertible { .. }
                | ReverseError::AlreadyReversed { .. }
                | ReverseError::Copy(_) => ApiError::Conflict(message),
            },
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        ApiError::Refused(self).into_response()
    }
}
