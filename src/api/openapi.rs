//! The OpenAPI document of the service, generated from the code.
//!
//! In: the paths and schemas `utoipa` derives from the handlers' `#[utoipa::path]` attributes and
//! the request and view types' `ToSchema` derives (collected by the router in `super::routes`).
//! Out: one OpenAPI 3.1 document, served at `/api/openapi.json`. Nothing here is written by hand
//! but the title, the tags and the answers every route shares.

use utoipa::openapi::OpenApi;
use utoipa::OpenApi as _;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "mongoferry",
        description = "Start, watch and steer MongoDB copy jobs. Credentials in URIs are never returned."
    ),
    tags(
        (name = "jobs", description = "Copy jobs: start, watch, steer"),
        (name = "throttle", description = "The budget all jobs share"),
        (name = "service", description = "The service itself: this document, metrics"),
        (name = "dashboard", description = "The web dashboard's page and files"),
    ),
    components(schemas(super::ErrorBody))
)]
struct ApiDoc;

/// The document before the routes are added.
pub(super) fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// The document once every route is in.
pub(super) fn finish(document: OpenApi) -> OpenApi {
    document
}
