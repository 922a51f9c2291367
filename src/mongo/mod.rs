//! Talking to MongoDB: namespaces, client building, credential redaction and error classification.
//!
//! In: connection strings and namespace text. Out: one [`Client`] per cluster (a connection pool
//! sized to the workers, reused for the whole run), [`Namespace`] values, and [`MongoError`]s that
//! say which side failed and why, with credentials removed.

pub mod bson_order;
pub mod identity;
pub mod retry;
pub mod schema;

use std::fmt;
use std::time::Duration;

use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::Client;
use serde::Serialize;

/// Which cluster an operation talks to; errors name it so the operator knows where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Source,
    Destination,
    /// The database that keeps the jobs' state (`--state mongodb://…`).
    State,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
            Side::State => "state database",
        })
    }
}

/// A database and collection name pair, displayed as `db.collection`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(into = "String", from = "String")]
pub struct Namespace {
    pub db: String,
    pub coll: String,
}

impl Namespace {
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Self {
        Namespace {
            db: db.into(),
            coll: coll.into(),
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// `db.collection`: a database name holds no dot, so the first one ends it.
impl From<String> for Namespace {
    fn from(text: String) -> Namespace {
        match text.split_once('.') {
            Some((db, coll)) => Namespace::new(db, coll),
            None => Namespace::new(text, ""),
        }
    }
}

impl From<Namespace> for String {
    fn from(ns: Namespace) -> String {
        ns.to_string()
    }
}

/// Errors of the MongoDB layer. Every message names the side and carries a redacted URI at most.
#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("invalid {side} URI {uri}: {reason}")]
    InvalidUri {
        side: Side,
        uri: String,
        reason: String,
    },
    #[error("{side} server {uri} unreachable within {timeout:?}: {reason}")]
    Unreachable {
        side: Side,
        uri: String,
        timeout: Duration,
        reason: String,
    },
    #[error("authentication to the {side} server {uri} failed: {reason}")]
    Auth {
        side: Side,
        uri: String,
        reason: String,
    },
    #[error("namespace {ns} not found on the {side}")]
    NamespaceNotFound { side: Side, ns: Namespace },
    #[error("database {db} on the {side} has no collections")]
    EmptyDatabase { side: Side, db: String },
    #[error("bad filter for {ns}: {reason}")]
    BadFilter { ns: Namespace, reason: String },
    #[error("{op} on {side} {ns} failed: {reason}")]
    Command {
        side: Side,
        ns: Namespace,
        op: &'static str,
        reason: String,
    },
}

/// Replaces the secrets of a URI with `***`: the password of `mongodb://user:password@host` and
/// the values of secret options (see [`secret_spans`]); a URI without any comes back unchanged.
/// Used for every URI that reaches a log, an error or a summary.
pub fn redact_uri(uri: &str) -> String {
    let uri = &redact_secret_options(uri);
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let rest = &uri[scheme_end + 3..];
    // The authority ends at the first '/' or '?'; credentials end at its last '@'.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return uri.to_string();
    };
    let user = match authority[..at].find(':') {
        Some(colon) => format!("{}:***", &authority[..colon]),
        None => authority[..at].to_string(),
    };
    format!("{}{}@{}", &uri[..scheme_end + 3], user, &rest[at + 1..])
}

/// The URI with the values of its secret options replaced by `***`, user info left as it is.
pub fn redact_secret_options(uri: &str) -> String {
    let mut out = uri.to_string();
    for span in secret_spans(uri).into_iter().rev() {
        out.replace_range(span, "***");
    }
    out
}

/// True when a URI holds a secret already replaced by `***` (it cannot be used to connect).
pub fn is_redacted(uri: &str) -> bool {
    password_of(uri).as_deref() == Some("***")
        || secret_spans(uri)
            .into_iter()
            .any(|span| &uri[span] == "***")
}

/// Where the values of secret options are in the URI's query string: options whose name holds
/// `password` (`tlsCertificateKeyFilePassword`, `proxyPassword`, …; names are
/// case-insensitive), and the `TOKEN`, `SECRET` or `PASSWORD` entries of
/// `authMechanismProperties` (`AWS_SESSION_TOKEN:…`).
fn secret_spans(uri: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let Some(query) = uri.find('?') else {
        return spans;
    };
    let mut option_start = query + 1;
    for option in uri[query + 1..].split('&') {
        let start = option_start;
        option_start += option.len() + 1;
        let Some(eq) = option.find('=') else {
            continue;
        };
        let (name, value, value_start) = (&option[..eq], &option[eq + 1..], start + eq + 1);
        if name.to_ascii_lowercase().contains("password") {
            spans.push(value_start..value_start + value.len());
        } else if name.eq_ignore_ascii_case("authMechanismProperties") {
            let mut entry_start = value_start;
            for entry in value.split(',') {
                let start = entry_start;
                entry_start += entry.len() + 1;
                let Some(colon) = entry.find(':') else {
                    continue;
                };
                let key = entry[..colon].to_ascii_uppercase();
                if ["TOKEN", "SECRET", "PASSWORD"]
                    .iter()
                    .any(|k| key.contains(k))
                {
                    spans.push(start + colon + 1..start + entry.len());
                }
            }
        }
    }
    spans
}

/// Server error codes that mean "the server said no", as opposed to a transport failure.
pub const DUPLICATE_KEY: i32 = 11000;
const UNAUTHORIZED: i32 = 13;
const AUTHENTICATION_FAILED: i32 = 18;
const BAD_VALUE: i32 = 2;
const FAILED_TO_PARSE: i32 = 9;
const INVALID_OPTIONS: i32 = 72;
const NAMESPACE_EXISTS: i32 = 48;

/// The server's error code of a command failure, if the error carries one.
pub fn error_code(err: &mongodb::error::Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// True when the server rejected a query as malformed (a bad filter), not a transport failure.
pub fn is_bad_query(err: &mongodb::error::Error) -> bool {
    matches!(
        error_code(err),
        Some(BAD_VALUE | FAILED_TO_PARSE | INVALID_OPTIONS)
    )
}

/// True when a createCollection failed only because the collection already exists.
pub fn is_namespace_exists(err: &mongodb::error::Error) -> bool {
    error_code(err) == Some(NAMESPACE_EXISTS)
}

/// Builds one client for a cluster, sized for `pool_size` concurrent operations, and checks within
/// `timeout` that the server answers and accepts the credentials.
pub async fn connect(
    side: Side,
    uri: &str,
    pool_size: u32,
    timeout: Duration,
) -> Result<Client, MongoError> {
    let redacted = redact_uri(uri);
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| MongoError::InvalidUri {
            side,
            uri: redacted.clone(),
            reason: strip_uri(&describe(&e), uri),
        })?;
    options.app_name.get_or_insert_with(|| "mongoferry".into());
    options.max_pool_size = Some(pool_size.max(1));
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout.get_or_insert(timeout);
    let client = Client::with_options(options).map_err(|e| MongoError::InvalidUri {
        side,
        uri: redacted.clone(),
        reason: strip_uri(&describe(&e), uri),
    })?;
    // The ping runs in its own task so that a stuck server never leaves a dropped driver future.
    let ping_client = client.clone();
    let ping = tokio::spawn(async move {
        ping_client
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await
    });
    let outcome = tokio::time::timeout(timeout + Duration::from_secs(5), ping).await;
    let reason = match outcome {
        Ok(Ok(Ok(_))) => return Ok(client),
        Ok(Ok(Err(e))) => {
            if is_auth_failure(&e) {
                return Err(MongoError::Auth {
                    side,
                    uri: redacted,
                    reason: strip_uri(&describe(&e), uri),
                });
            }
            strip_uri(&describe(&e), uri)
        }
        Ok(Err(join)) => join.to_string(),
        Err(_) => "no answer to ping".to_string(),
    };
    close(client).await;
    Err(MongoError::Unreachable {
        side,
        uri: redacted,
        timeout,
        reason,
    })
}

/// Connects to a source and a destination at once; if either fails, the other is closed and
/// the first failure returned.
pub async fn connect_both(
    from: &str,
    to: &str,
    pool_size: u32,
    timeout: Duration,
) -> Result<(Client, Client), MongoError> {
    let (source, destination) = tokio::join!(
        connect(Side::Source, from, pool_size, timeout),
        connect(Side::Destination, to, pool_size, timeout),
    );
    match (source, destination) {
        (Ok(s), Ok(d)) => Ok((s, d)),
        (Err(e), other) | (other, Err(e)) => {
            if let Ok(client) = other {
                close(client).await;
            }
            Err(e)
        }
    }
}

/// Closes a client's pool. Call it before dropping the last handle: a client dropped while the
/// runtime stops would still try to end its sessions in a task of its own.
pub async fn close(client: Client) {
    let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown().immediate(true)).await;
}

fn is_auth_failure(err: &mongodb::error::Error) -> bool {
    matches!(err.kind.as_ref(), ErrorKind::Authentication { .. })
        || matches!(error_code(err), Some(UNAUTHORIZED | AUTHENTICATION_FAILED))
}

/// Driver errors can quote the URI they were given; never let its password through.
pub fn strip_uri(message: &str, uri: &str) -> String {
    let mut out = message.replace(uri, &redact_uri(uri));
    let secrets = password_of(uri).into_iter().chain(
        secret_spans(uri)
            .into_iter()
            .map(|span| uri[span].to_string()),
    );
    for secret in secrets {
        if secret.is_empty() || secret == "***" {
            continue;
        }
        // Messages may quote the value as written or percent-decoded.
        let decoded = percent_decoded(&secret);
        out = out.replace(&secret, "***").replace(&decoded, "***");
    }
    out
}

/// `%XX` sequences decoded (as the driver does for URI values); anything else kept.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn password_of(uri: &str) -> Option<String> {
    let rest = &uri[uri.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(userinfo[userinfo.find(':')? + 1..].to_string())
}

/// One line an operator can act on, from a driver error (whose `Display` carries debug dumps).
pub fn describe(err: &mongodb::error::Error) -> String {
    let text = match err.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} ({} {})", c.message, c.code_name, c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("{} (code {})", w.message, w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("write concern error: {} (code {})", w.message, w.code)
        }
        ErrorKind::Authentication { message, .. } => {
            let inner = std::error::Error::source(err)
                .and_then(|e| e.downcast_ref::<mongodb::error::Error>());
            match inner {
                Some(inner) => format!("{message}: {}", describe(inner)),
                None => message.clone(),
            }
        }
        ErrorKind::InvalidArgument { message, .. } => message.clone(),
        ErrorKind::ServerSelection { message, .. } => {
            // The message dumps the topology; the per-server error inside is what matters.
            match message.split_once("Error: Kind: ") {
                Some((_, inner)) => format!(
                    "no server available ({})",
                    inner.split(", labels").next().unwrap_or(inner)
                ),
                None => "no server available".to_string(),
            }
        }
        ErrorKind::Io(e) => format!("I/O error: {e}"),
        _ => err.to_string(),
    };
    first_line(text.split(", labels: ").next().unwrap_or(&text))
}

/// Driver errors are long; the first line (and a bounded length) is what an operator needs.
pub fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    if line.len() > 400 {
        let mut end = 400;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &line[..end])
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_uri("mongodb://alice:s3cret@db1:27017,db2/admin?tls=true"),
            "mongodb://alice:***@db1:27017,db2/admin?tls=true"
        );
        assert_eq!(
            redact_uri("mongodb+srv://bob:p%40ss@cluster.example.net"),
            "mongodb+srv://bob:***@cluster.example.net"
        );
        assert_eq!(redact_uri("mongodb://h:1/?x=1"), "mongodb://h:1/?x=1");
        assert_eq!(redact_uri("mongodb://carol@h"), "mongodb://carol@h");
        assert_eq!(redact_uri("not a uri"), "not a uri");
    }

    #[test]
    fn redacts_secret_options() {
        let uri =
            "mongodb://u:pw@h/?tls=true&tlsCertificateKeyFilePassword=k3y&PROXYPASSWORD=pr0xy\
                   &authMechanism=MONGODB-AWS\
                   &authMechanismProperties=SERVICE_NAME:mongodb,AWS_SESSION_TOKEN:t0ken";
        let redacted = redact_uri(uri);
        assert_eq!(
            redacted,
            "mongodb://u:***@h/?tls=true&tlsCertificateKeyFilePassword=***&PROXYPASSWORD=***\
             &authMechanism=MONGODB-AWS\
             &authMechanismProperties=SERVICE_NAME:mongodb,AWS_SESSION_TOKEN:***"
        );
        assert!(is_redacted(&redacted));
        assert!(!is_redacted(uri));
        assert!(is_redacted("mongodb://h/?proxyPassword=***"));
        assert!(!is_redacted("mongodb://h/?appName=***"));
        let message = format!("cannot use {uri}: key k3y and token t0ken, proxy pr%30xy");
        let out = strip_uri(&message, "mongodb://h/?proxyPassword=pr%30xy&x=1");
        assert!(!out.contains("pr0xy") && !out.contains("pr%30xy"), "{out}");
        let out = strip_uri(&message, uri);
        for secret in ["pw", "k3y", "t0ken", "pr0xy"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("SERVICE_NAME:mongodb"), "{out}");
    }

    #[test]
    fn strips_password_from_messages() {
        let uri = "mongodb://alice:s3cret@h:1";
        let msg = format!("failed to parse {uri}; password s3cret rejected");
        let out = strip_uri(&msg, uri);
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("alice:***@h:1"));
    }
}
