//! Who may use the service: the checks every request passes before any handler runs.
//!
//! In: a request. Out: the same request (its body read, within a size and a time limit) for the
//! handlers, or a [`Refusal`] that becomes a 4xx answer (`ApiError`, `api/error.rs`) — so a refused
//! request changes nothing and starts nothing. Every request passes 1 to 3 ([`check`], before
//! routing, so that not even a 404 tells a stranger anything); a request a route takes passes 4
//! and 5 ([`check_body`]; a method no route takes gets its 405):
//!
//! 1. **Host** (DNS rebinding): the request's host must be `localhost`, an IP literal, or a name
//!    given with `--allowed-host`, else `421`. A rebinding page reaches the service under the
//!    page's own DNS name, which is none of these; an IP literal cannot be rebound.
//! 2. **Origin** (cross-site requests): a request with an `Origin` header must come from the
//!    service's own origin (the host and port it was addressed to), else `403`.
//! 3. **Token**: with `--auth-token-file` (or `MONGOFERRY_API_TOKEN`), everything but the
//!    dashboard's files (`/` and `/web/…`) needs `Authorization: Bearer <token>`, compared in
//!    constant time, else `401`.
//! 4. **Content type**: a request that may change something (POST, PUT, PATCH, DELETE) must say
//!    `Content-Type: application/json`, else `415`. A browser sends a cross-site request without
//!    a preflight only with a form content type (or none); with JSON it asks first, and this
//!    service never answers a preflight with a yes. The bodiless commands (pause, resume,
//!    cancel) carry the header too.
//! 5. **Body**: at most [`BODY_LIMIT`] (`413`), received within the client timeout (`408`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The largest request body the service reads.
pub const BODY_LIMIT: usize = 1 << 20;

/// Why a request was turned away. Each becomes its status in `ApiError` (`api/error.rs`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the request names no host")]
    NoHost,
    #[error(
        "host {0:?} is not served here: use localhost, an IP address, or start the service with \
         --allowed-host NAME"
    )]
    Host(String),
    #[error("cross-origin request refused: origin {0:?} is not this service")]
    Origin(String),
    #[error("authentication required: send Authorization: Bearer <token>")]
    NoToken,
    #[error("the bearer token is not valid")]
    WrongToken,
    #[error("a request that changes something must be sent with Content-Type: application/json")]
    ContentType,
    #[error("the request body is larger than {BODY_LIMIT} bytes")]
    TooLarge,
    #[error("the request body did not arrive within {0:?}")]
    SlowBody(Duration),
}

/// The secret of `--auth-token-file` / `MONGOFERRY_API_TOKEN`. Never shown: its `Debug` is
/// `ApiToken(***)` and it has no `Display`.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// Why a token cannot be used. The messages never quote the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is {0} characters long; use at least {MIN_TOKEN_LEN}")]
    TooShort(usize),
    #[error(
        "the token may hold only visible ASCII characters (no spaces), as HTTP headers carry it"
    )]
    Characters,
}

/// Shorter tokens are refused: a token is the only key to the databases the service reaches.
pub const MIN_TOKEN_LEN: usize = 16;

impl ApiToken {
    /// A token from the text of a token file or variable; surrounding whitespace (the file's
    /// final newline) is not part of it.
    pub fn new(text: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Characters);
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(token.len()));
        }
        Ok(ApiToken(token.into()))
    }

    /// Whether `given` is the token. The time taken depends on the token's length only, never on
    /// how much of `given` matches.
    pub fn matches(&self, given: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let same_length = given.len() == expected.len();
        // Compared with itself when the lengths differ, so both paths do the same work.
        let candidate = if same_length { given } else { expected };
        bool::from(expected.ct_eq(candidate)) & same_length
    }
}

/// What the guard lets in.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Names given with `--allowed-host`, lowercase.
    allowed_hosts: Vec<String>,
    token: Option<ApiToken>,
    /// How long a client may take to send its request body.
    client_timeout: Duration,
}

impl Guard {
    pub fn new(
        allowed_hosts: &[String],
        token: Option<ApiToken>,
        client_timeout: Duration,
    ) -> Self {
        Guard {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            token,
            client_timeout,
        }
    }

    /// Checks who sends a request: its host, its origin, its token.
    fn check_access(
        &self,
        path: &str,
        authority: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let authority = authority.ok_or(Refusal::NoHost)?;
        let (host, port) = split_authority(authority).ok_or(Refusal::NoHost)?;
        if !self.host_allowed(&host) {
            return Err(Refusal::Host(authority.to_string()));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            if !same_origin(&text, &host, port) {
                return Err(Refusal::Origin(text));
            }
        }
        if let Some(token) = &self.token {
            if needs_token(path) {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| bearer(v.as_bytes()))
                    .ok_or(Refusal::NoToken)?;
                if !token.matches(given) {
                    return Err(Refusal::WrongToken);
                }
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        host == "localhost"
            || host.parse::<IpAddr>().is_ok()
            || self.allowed_hosts.iter().any(|allowed| allowed == host)
    }

    /// Checks the content type of a request that may change something and reads its body,
    /// within the size and time limits, so that no handler ever waits on a slow client.
    async fn read_body(&self, request: Request) -> Result<Request, Refusal> {
        if !changes_something(request.method()) {
            return Ok(request);
        }
        if !is_json(request.headers()) {
            return Err(Refusal::ContentType);
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(Refusal::TooLarge);
        }
        let (parts, body) = request.into_parts();
        let bytes =
            tokio::time::timeout(self.client_timeout, axum::body::to_bytes(body, BODY_LIMIT))
                .await
                .map_err(|_| Refusal::SlowBody(self.client_timeout))?
                // The only error that is the client's own doing is a body over the limit; a body cut
                // off mid-way has nobody left to answer.
                .map_err(|_| Refusal::TooLarge)?;
        Ok(Request::from_parts(parts, Body::from(bytes)))
    }
}

/// The middleware before routing: host, origin and token of every request.
pub(super) async fn check(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    // HTTP/2 carries the host in the request's URI; HTTP/1.1 in the Host header (an absolute URI
    // in the request line takes precedence, as RFC 9112 says).
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        });
    match guard.check_access(
        request.uri().path(),
        authority.as_deref(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// The middleware of the routes: the content type and the body of a request that changes
/// something.
pub(super) async fn check_body(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.read_body(request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// POST, PUT, PATCH and DELETE: the methods this service changes anything with. Any other
/// method changes nothing here (no route takes it: it gets 405).
pub(super) fn changes_something(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The dashboard's page and files load without the token: the page asks for it.
pub(super) fn needs_token(path: &str) -> bool {
    !(path == "/" || path.starts_with("/web/"))
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The credentials of `Authorization: Bearer <token>` (the scheme's case does not matter).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

/// Host (lowercase, without the brackets of an IPv6 literal or a final dot) and port of
/// `host[:port]`.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    // User information has no place in a Host or an Origin header.
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// Whether `origin` (`scheme://host[:port]`) is the origin the request was addressed to. The
/// scheme itself is not compared: behind a proxy that ends TLS the service speaks HTTP to a
/// page loaded over HTTPS. A port left out is the scheme's default, on both sides.
fn same_origin(origin: &str, host: &str, port: Option<u16>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" (a sandboxed frame, a file:// page) and anything malformed
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some((origin_host, origin_port)) = split_authority(authority) else {
        return false;
    };
    origin_host == host && origin_port.unwrap_or(default_port) == port.unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "correct-horse-battery-staple";

    fn guard(token: bool) -> Guard {
        let token = token.then(|| ApiToken::new(TOKEN).unwrap());
        Guard::new(&["ferry.example.com".into()], token, Duration::from_secs(1))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn head(
        guard: &Guard,
        method: Method,
        path: &str,
        host: &str,
        pairs: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        let headers = headers(pairs);
        guard.check_access(path, Some(host), &headers)?;
        if changes_something(&method) && !is_json(&headers) {
            return Err(Refusal::ContentType);
        }
        Ok(())
    }

    #[test]
    fn hosts_loopback_names_ip_literals_and_allowed_names_pass() {
        let g = guard(false);
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "10.1.2.3:80",
            "ferry.example.com",
            "Ferry.Example.Com.:443",
        ] {
            assert_eq!(
                head(&g, Method::GET, "/api/jobs", host, &[]),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "attacker.example:8080",
            "localhost.attacker.example",
            "example.com",
            "sub.ferry.example.com",
        ] {
            assert_eq!(
                head(&g, Method::GET, "/api/jobs", host, &[]),
                Err(Refusal::Host(host.into())),
                "{host}"
            );
        }
        assert_eq!(
            g.check_access("/", None, &HeaderMap::new()),
            Err(Refusal::NoHost)
        );
        assert_eq!(
            head(&g, Method::GET, "/", ":8080", &[]),
            Err(Refusal::NoHost)
        );
    }

    #[test]
    fn only_the_services_own_origin_passes() {
        let g = guard(false);
        let json = ("content-type", "application/json");
        for (host, origin) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("localhost:8080", "http://LOCALHOST:8080"),
            ("[::1]:9000", "http://[::1]:9000"),
            // Behind a proxy that ends TLS: the page is https, the service hears http.
            ("ferry.example.com", "https://ferry.example.com"),
            ("ferry.example.com:8443", "https://ferry.example.com:8443"),
        ] {
            assert_eq!(
                head(
                    &g,
                    Method::POST,
                    "/api/jobs",
                    host,
                    &[("origin", origin), json]
                ),
                Ok(()),
                "{origin}"
            );
        }
        for (host, origin) in [
            ("127.0.0.1:8080", "http://evil.example"),
            ("127.0.0.1:8080", "http://127.0.0.1:3000"),
            ("127.0.0.1:8080", "http://127.0.0.1"),
            ("localhost:8080", "http://127.0.0.1:8080"),
            ("ferry.example.com", "https://ferry.example.com:8443"),
            ("127.0.0.1:8080", "null"),
            ("127.0.0.1:8080", "file://"),
        ] {
            assert_eq!(
                head(
                    &g,
                    Method::POST,
                    "/api/jobs",
                    host,
                    &[("origin", origin), json]
                ),
                Err(Refusal::Origin(origin.into())),
                "{origin}"
            );
            // Reads too: a foreign page learns nothing.
            assert!(head(&g, Method::GET, "/api/jobs", host, &[("origin", origin)]).is_err());
        }
    }

    #[test]
    fn changes_need_a_json_content_type() {
        let g = guard(false);
        let host = "127.0.0.1:8080";
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            for content_type in [
                None,
                Some("text/plain"),
                Some("application/x-www-form-urlencoded"),
                Some("multipart/form-data; boundary=x"),
                Some("application/jsonx"),
            ] {
                let pairs: Vec<_> = content_type
                    .map(|c| ("content-type", c))
                    .into_iter()
                    .collect();
                assert_eq!(
                    head(&g, method.clone(), "/api/jobs/1/cancel", host, &pairs),
                    Err(Refusal::ContentType),
                    "{method} {content_type:?}"
                );
            }
            for content_type in ["application/json", "Application/JSON; charset=utf-8"] {
                assert_eq!(
                    head(
                        &g,
                        method.clone(),
                        "/api/jobs/1/cancel",
                        host,
                        &[("content-type", content_type)]
                    ),
                    Ok(())
                );
            }
        }
        assert_eq!(head(&g, Method::GET, "/api/jobs", host, &[]), Ok(()));
        // A method no route takes is left to the router's 405.
        let query = Method::from_bytes(b"QUERY").unwrap();
        assert_eq!(head(&g, query, "/api/jobs", host, &[]), Ok(()));
    }

    #[test]
    fn with_a_token_everything_but_the_page_needs_it() {
        let g = guard(true);
        let host = "127.0.0.1:8080";
        let good = format!("Bearer {TOKEN}");
        for path in [
            "/api/jobs",
            "/metrics",
            "/api/openapi.json",
            "/nowhere",
            "/api",
        ] {
            assert_eq!(
                head(&g, Method::GET, path, host, &[]),
                Err(Refusal::NoToken),
                "{path}"
            );
            assert_eq!(
                head(
                    &g,
                    Method::GET,
                    path,
                    host,
                    &[("authorization", "Bearer wrong-token-but-long")]
                ),
                Err(Refusal::WrongToken)
            );
            assert_eq!(
                head(
                    &g,
                    Method::GET,
                    path,
                    host,
                    &[("authorization", &format!("Basic {TOKEN}"))]
                ),
                Err(Refusal::NoToken)
            );
            assert_eq!(
                head(&g, Method::GET, path, host, &[("authorization", &good)]),
                Ok(())
            );
            assert_eq!(
                head(
                    &g,
                    Method::GET,
                    path,
                    host,
                    &[("authorization", &format!("bearer  {TOKEN} "))]
                ),
                Ok(())
            );
        }
        for path in ["/", "/web/app.mjs", "/web/vendor/uPlot.min.css"] {
            assert_eq!(head(&g, Method::GET, path, host, &[]), Ok(()), "{path}");
        }
        // The host and origin come first: a rebinding page learns nothing, not even that a token is needed.
        assert!(matches!(
            head(&g, Method::GET, "/api/jobs", "evil.example", &[]),
            Err(Refusal::Host(_))
        ));
    }

    #[test]
    fn tokens_compare_by_value_and_are_never_shown() {
        let token = ApiToken::new(&format!("  {TOKEN}\n")).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        for wrong in [
            "",
            "correct-horse-battery-stapl",
            "correct-horse-battery-staplf",
            "correct-horse-battery-staple-",
            "x",
        ] {
            assert!(!token.matches(wrong.as_bytes()), "{wrong}");
        }
        assert_eq!(format!("{token:?}"), "ApiToken(***)");
        assert_eq!(ApiToken::new(" \n").unwrap_err(), TokenError::Empty);
        assert_eq!(ApiToken::new("short").unwrap_err(), TokenError::TooShort(5));
        assert_eq!(
            ApiToken::new("has a space in the middle").unwrap_err(),
            TokenError::Characters
        );
        assert_eq!(
            ApiToken::new("ünïcode-is-not-allowed-here").unwrap_err(),
            TokenError::Characters
        );
        for e in [
            TokenError::Empty,
            TokenError::TooShort(5),
            TokenError::Characters,
        ] {
            assert!(!e.to_string().contains(TOKEN));
        }
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("Example.COM:80"),
            Some(("example.com".into(), Some(80)))
        );
        assert_eq!(split_authority("[::1]"), Some(("::1".into(), None)));
        assert_eq!(split_authority("[::1]:x"), None);
        assert_eq!(split_authority("host:99999"), None);
        assert_eq!(split_authority("evil.example@127.0.0.1"), None);
    }
}
