//! The dashboard: the files of `web/`, compiled into the binary and served at `/` and `/web/…`.
//!
//! In: `GET /`, `GET /web/{file}` and `GET /web/vendor/{file}`. Out: the embedded file with its content type. Nothing is
//! read from disk and nothing is fetched from elsewhere: the page's Content-Security-Policy allows
//! only this service as a source, so the dashboard works offline and cannot load a CDN by mistake.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../../web/", $path)),
        }
    };
}

/// Every file the page uses. The browser tests (`web/tests/`) load each of them, and
/// `tests/web.rs` checks that every file the page names is here.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.mjs", "text/javascript; charset=utf-8"),
    asset!("render.mjs", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
];

/// Only this service: no CDN, no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn serve(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // The files change with the binary; a revalidation is cheap next to a stale page.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        asset.body,
    )
        .into_response()
}

/// The dashboard page.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The dashboard", content_type = "text/html", body = String)))]
pub(super) async fn index() -> Response {
    serve(&ASSETS[0])
}

fn find(path: &str) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.path == path)
        .map(serve)
        .ok_or_else(|| ApiError::NotFound(format!("no such file: /web/{path}")))
}

/// The page's scripts, styles and icon.
#[utoipa::path(get, path = "/web/{file}", tag = "dashboard",
    params(("file" = String, Path, description = "A file of the dashboard", example = "app.mjs")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub(super) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    find(&file)
}

/// The chart library the page uses, and its licence.
#[utoipa::path(get, path = "/web/vendor/{file}", tag = "dashboard",
    params(("file" = String, Path, description = "A file of the chart library", example = "uPlot.min.css")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"), (String = "text/css"), (String = "text/plain"))),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub(super) async fn vendor_asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    find(&format!("vendor/{file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_the_first_asset_and_paths_are_unique() {
        assert_eq!(ASSETS[0].path, "index.html");
        let mut paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
    }
}
