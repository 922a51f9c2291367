//! The OpenAPI document of the service, generated from the code.
//!
//! In: the paths and schemas `utoipa` derives from the handlers' `#[utoipa::path]` attributes and
//! the request and view types' `ToSchema` derives (collected by the router in `super::routes`;
//! the engine's types have theirs in [`schemas`](super::schemas)), and the service's
//! [`ApiOptions`]. Out: one OpenAPI 3.1 document, served at
//! `/api/openapi.json`. Nothing here is written by hand but the title, the tags, and the answers
//! of the [`guard`](super::guard), which every route shares: they are added here to every
//! operation, from the same rules the guard applies.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref};
use utoipa::OpenApi as _;

use super::error::ErrorBody;
use super::guard::{self, BODY_LIMIT};
use super::options::ApiOptions;

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
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document before the routes are added.
pub(super) fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// The name of the bearer token's security scheme.
const BEARER: &str = "bearer";

/// The document once every route is in: the guard's answers added to each operation, and the
/// bearer token required where the guard requires it.
pub(super) fn finish(mut document: OpenApi, options: &ApiOptions) -> OpenApi {
    let token = options.token.is_some();
    for (path, item) in document.paths.paths.iter_mut() {
        let with_token = token && guard::needs_token(path);
        let reads = [&mut item.get];
        let changes = [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in reads.into_iter().flatten() {
            add_refusals(operation, with_token, false);
        }
        for operation in changes.into_iter().flatten() {
            add_refusals(operation, with_token, true);
        }
    }
    if token {
        let components = document.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            BEARER.into(),
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)).into(),
        );
    }
    document
}

fn add_refusals(operation: &mut Operation, with_token: bool, changes: bool) {
    let mut refusals = vec![
        (
            "421",
            "The request's host is not one this service answers to (DNS rebinding)",
        ),
        (
            "403",
            "The request comes from a foreign origin (a cross-site request)",
        ),
    ];
    if with_token {
        refusals.push(("401", "No bearer token, or a wrong one"));
        operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
    if changes {
        refusals.extend([
            ("415", "The request is not Content-Type: application/json"),
            ("413", "The request body is larger than 1 MiB"),
            ("408", "The request body did not arrive in time"),
        ]);
    }
    debug_assert_eq!(BODY_LIMIT, 1 << 20, "the 413 description says 1 MiB");
    for (status, description) in refusals {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
        if status == "401" {
            response = response.header("www-authenticate", Header::default());
        }
        operation
            .responses
            .responses
            .entry(status.into())
            .or_insert_with(|| response.build().into());
    }
}
