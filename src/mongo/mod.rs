//! Talking to MongoDB: reading connection strings, namespaces, client building, credential
//! redaction and error classification.
//!
//! In: connection strings and namespace text. Out: what a connection string is ([`read_uri`]: a
//! MongoDB URI whatever its scheme's case and surrounding spaces, normalised; something else
//! shaped like a URI; or neither), one [`Client`] per cluster (a connection pool sized to the
//! workers, reused for the whole run), [`Namespace`] values, and [`MongoError`]s that say which
//! side failed and why, with credentials removed ([`redact_uri`], [`without_secrets`]: whatever
//! the shape of the URI that carried them).

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
    /// `hint`: "; did you mean …?" when a close name exists, or nothing.
    #[error("namespace {ns} not found on the {side}{hint}")]
    NamespaceNotFound {
        side: Side,
        ns: Namespace,
        hint: String,
    },
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
/// Used for every URI that reaches a log, an error or a summary. Any shape is read, since a
/// malformed URI is quoted in the message that refuses it: without a scheme (`user:pw@host`),
/// with one misspelt, with an unescaped `@`, `/` or `?` in the password (`password_span`).
pub fn redact_uri(uri: &str) -> String {
    let uri = &redact_secret_options(uri);
    match password_span(uri) {
        Some(password) => format!("{}***{}", &uri[..password.start], &uri[password.end..]),
        None => uri.to_string(),
    }
}

/// Where the password of a connection string is, whatever its shape: after the first `:` of
/// its user information, which runs from after its `://` (or its start, without one) to its
/// last `@`. The driver ends the user information at the last `@` before the first `?`; reading
/// on to the very last `@` only covers more, which is what a redaction needs when a password
/// holds an unescaped `?`.
fn password_span(text: &str) -> Option<std::ops::Range<usize>> {
    let at = text.rfind('@')?;
    let start = text[..at].find("://").map_or(0, |i| i + 3);
    let colon = text[start..at].find(':')?;
    Some(start + colon + 1..at)
}

/// The schemes of MongoDB connection strings.
const SCHEMES: [&str; 2] = ["mongodb", "mongodb+srv"];

/// `text` as the driver takes a connection string: surrounding spaces trimmed, the scheme in
/// lower case (`MONGODB://h` is `mongodb://h`). `None` when it starts with no MongoDB scheme.
pub fn normalize_uri(text: &str) -> Option<String> {
    let (scheme, rest) = text.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    SCHEMES
        .contains(&scheme.as_str())
        .then(|| format!("{scheme}://{rest}"))
}

/// Whether `text` looks like a connection string rather than a file path or a name: it holds
/// `://`, starts with a scheme (`word:`, of two characters or more: `C:` is a drive), or has an
/// `@` in its first path segment (`user:password@host/db`).
pub fn looks_like_uri(text: &str) -> bool {
    let text = text.trim();
    let first_segment = text.split(['/', '\\']).next().unwrap_or_default();
    let scheme = text.split_once(':').is_some_and(|(word, _)| {
        word.len() >= 2
            && word.starts_with(|c: char| c.is_ascii_alphabetic())
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    text.contains("://") || first_segment.contains('@') || scheme
}

/// What a value given for a connection string is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriText {
    /// A MongoDB URI the driver reads, normalised ([`normalize_uri`]).
    Uri(String),
    /// Nothing like a URI: a file path, where one may be given (`--state`).
    NotUri,
    /// Shaped like a URI, but not one the driver takes: why, without the URI's secrets.
    Invalid(String),
}

/// Reads a value given for a connection string, without connecting or looking a name up: a
/// MongoDB URI (whatever its scheme's case and the spaces around it), something else shaped
/// like a URI (refused, never taken for a path), or neither.
pub fn read_uri(text: &str) -> UriText {
    if let Some(uri) = normalize_uri(text) {
        return match mongodb::options::ConnectionString::parse(&uri) {
            Ok(_) => UriText::Uri(uri),
            Err(e) => UriText::Invalid(format!(
                "{} is not a valid MongoDB URI: {}",
                redact_uri(&uri),
                strip_uri(&describe(&e), &uri)
            )),
        };
    }
    if looks_like_uri(text) {
        UriText::Invalid(format!(
            "{} is not a mongodb:// or mongodb+srv:// URI",
            redact_uri(text.trim())
        ))
    } else {
        UriText::NotUri
    }
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
    // `MONGODB://h` or ` mongodb://h` as the driver takes it.
    let normalized = normalize_uri(uri);
    let uri = normalized.as_deref().unwrap_or(uri);
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
    without_secrets(&message.replace(uri, &redact_uri(uri)), &secrets_in(uri))
}

/// The secrets `text` may carry if it is (or holds) a connection string, whatever its shape:
/// its password (`password_span`) and the values of its secret options.
pub fn secrets_in(text: &str) -> Vec<String> {
    password_of(text)
        .into_iter()
        .chain(
            secret_spans(text)
                .into_iter()
                .map(|span| text[span].to_string()),
        )
        .filter(|secret| !secret.is_empty() && secret != "***")
        .collect()
}

/// `message` with every one of `secrets` replaced by `***`: as written, percent-decoded (as the
/// driver reads URI values), and escaped as a Rust or JSON string quotes it (`{:?}`).
pub fn without_secrets(message: &str, secrets: &[String]) -> String {
    let mut forms: Vec<String> = secrets
        .iter()
        .flat_map(|secret| [secret.clone(), percent_decoded(secret)])
        .flat_map(|form| {
            let quoted = format!("{form:?}");
            [form, quoted[1..quoted.len() - 1].to_string()]
        })
        .filter(|form| !form.is_empty() && form != "***")
        .collect();
    // The longest first: a secret inside another must not leave the rest of the other behind.
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms.dedup();
    forms.iter().fold(message.to_string(), |out, form| {
        out.replace(form.as_str(), "***")
    })
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
    password_span(uri).map(|password| uri[password].to_string())
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
    fn redacts_passwords_of_uris_of_any_shape() {
        for (uri, redacted) in [
            ("u:S3cretPw!x@h:27017", "u:***@h:27017"),
            ("MONGODB://u:S3cretPw!x@h/db", "MONGODB://u:***@h/db"),
            ("mongdb://u:S3cretPw!x@h", "mongdb://u:***@h"),
            ("mongodb://u:S3c/ret?Pw@x@h/db", "mongodb://u:***@h/db"),
            ("mongodb://u:S3cretPw!x%zz@h", "mongodb://u:***@h"),
            (":S3cretPw!x@h", ":***@h"),
            ("u:S3cretPw!x@h/?x=http://y", "u:***@h/?x=http://y"),
        ] {
            assert_eq!(redact_uri(uri), redacted, "{uri}");
        }
    }

    #[test]
    fn reads_uris_whatever_the_case_of_their_scheme_and_the_spaces_around() {
        assert_eq!(
            read_uri(" MONGODB://u:pw@h:1/db "),
            UriText::Uri("mongodb://u:pw@h:1/db".into())
        );
        assert_eq!(
            read_uri("\tMongoDB+SRV://cluster.example.net"),
            UriText::Uri("mongodb+srv://cluster.example.net".into())
        );
        for path in [
            "state.db",
            "/var/lib/mongoferry/jobs.json",
            "./u:pw@h/x",
            "C:\\state",
        ] {
            assert_eq!(read_uri(path), UriText::NotUri, "{path}");
        }
        for shaped in [
            "MONGODB:/u:S3cretPw!x@h/db",
            "mongdb://u:S3cretPw!x@h",
            "u:S3cretPw!x@h:27017/db",
            "mongodb://u:S3cretPw!x@",
            "mongodb://u:S3cretPw!x%zz@h",
            "http://h",
        ] {
            let UriText::Invalid(why) = read_uri(shaped) else {
                panic!("{shaped} is read as a URI or a path");
            };
            assert!(!why.contains("S3cretPw"), "{why}");
        }
    }

    #[test]
    fn secrets_are_stripped_as_written_decoded_and_quoted() {
        let secrets = secrets_in(r#"u:S3c"ret%21@h"#);
        assert_eq!(secrets, [r#"S3c"ret%21"#]);
        let message = r#"bad "u:S3c\"ret%21@h" (S3c"ret!)"#;
        let out = without_secrets(message, &secrets);
        assert!(!out.contains("S3c"), "{out}");
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
