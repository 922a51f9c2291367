//! Notifications (`serve --notify-url`): each state change of a job this node runs, POSTed as
//! JSON to every receiver.
//!
//! In: changes ([`Change`](super::job::Change)) from [`Job::apply`](super::job::Job::apply), through the notifier the manager
//! gives each job it runs (mirrors of other nodes' jobs and helping runs get none), in the order
//! the changes happen. Out: one [`Notice`] per change, numbered by a sequence of this service
//! instance, POSTed to each receiver by a delivery task of its own, one notice after the other;
//! signed with HMAC-SHA256 over the exact body (`X-Mongoferry-Signature: sha256=<hex>`) when a
//! secret is given; retried with exponential backoff for a bounded time, then dropped (a 4xx
//! other than 408, 425 or 429 is a refusal: dropped without retrying). Counts of
//! notices sent, attempts retried and notices dropped (by receiver and reason) for `/metrics`.
//!
//! Announcing never waits and never fails a job: each receiver has a bounded queue, and a notice
//! that finds it full is dropped and counted. At shutdown the deliveries get a short grace, then
//! stop; what is left is counted as dropped. Every task is joined. URLs are logged only
//! redacted ([`redact`]): no user, password or query.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ring::hmac;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::clusters::AllowList;
use crate::state::unix_now;

/// The header with the body's signature: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Mongoferry-Signature";
/// The header with the notice's sequence number (also in the body).
pub const SEQUENCE_HEADER: &str = "X-Mongoferry-Sequence";
/// How long a notice is retried for, by default (`serve --notify-retry-seconds`, hidden).
pub const RETRY_WINDOW: Duration = Duration::from_secs(60);
/// Notices waiting for one receiver; more are dropped (and counted).
const QUEUE: usize = 1024;
/// The longest one POST may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait before the first retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why notifications cannot be set up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    /// A `--notify-url` is not an http(s) URL, or its host is not allowed. The URL is quoted
    /// redacted, or only by its position when it does not parse.
    #[error("--notify-url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("--notify-secret-file {path}: {reason}")]
    Secret { path: String, reason: String },
    #[error("notifications: no HTTP client ({0})")]
    Client(String),
}

/// A `--notify-url`, checked: http or https, with a host, allowed by `clusters` (as a job's
/// `throttle_url` is, when `--allow-cluster` is given). `index` counts from 0.
pub fn parse_url(
    index: usize,
    text: &str,
    clusters: &AllowList,
) -> Result<reqwest::Url, NotifyError> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| NotifyError::Url {
        url: format!("(the {})", ordinal(index + 1)),
        reason: format!("not a URL ({e})"),
    })?;
    let refuse = |reason: String| NotifyError::Url {
        url: redact(&url),
        reason,
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(format!(
            "the scheme is {:?}: give an http:// or https:// URL",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("the URL names no host".into()));
    }
    // The field is named by the redacted URL, in front of the problem.
    let problems: Vec<String> = clusters
        .url_problems("notify", url.as_str())
        .into_iter()
        .map(|p| p.trim_start_matches("notify: ").to_string())
        .collect();
    if !problems.is_empty() {
        return Err(refuse(problems.join("; ")));
    }
    Ok(url)
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `url` as it may be logged: `scheme://host[:port]/path`, without user, password, query or
/// fragment.
pub fn redact(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// The secret notices are signed with (`--notify-secret-file`): never shown.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// The secret of a file's text, trimmed; an empty one is refused.
    pub fn new(text: &str) -> Option<Secret> {
        let text = text.trim();
        (!text.is_empty()).then(|| Secret(hmac::Key::new(hmac::HMAC_SHA256, text.as_bytes())))
    }

    /// The secret in the file at `path`.
    pub fn read(path: &std::path::Path) -> Result<Secret, NotifyError> {
        let refuse = |reason: String| NotifyError::Secret {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
        Secret::new(&text).ok_or_else(|| refuse("the file is empty".into()))
    }

    /// The value of [`SIGNATURE_HEADER`] for `body`: `sha256=<lowercase hex>`.
    pub fn sign(&self, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, body);
        format!("sha256={}", crate::state::hex(tag.as_ref()))
    }
}

/// What a receiver gets: a change (the job's [`Change`](super::job::Change)), numbered.
#[derive(Debug, Clone, Serialize)]
pub struct Notice<'a, C> {
    /// Always `job.state`.
    pub event: &'static str,
    /// This start of the service: the sequence counts from 1 in each.
    pub instance: String,
    pub sequence: u64,
    /// When the change happened (seconds since the epoch).
    pub time: f64,
    #[serde(flatten)]
    pub change: &'a C,
}

/// One notice, ready to POST.
struct Delivery {
    sequence: u64,
    body: Arc<[u8]>,
    signature: Option<String>,
}

/// A receiver's counts.
#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    retries: AtomicU64,
    queue_full: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    shutdown: AtomicU64,
}

/// A receiver's counts, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverCounts {
    /// Its position among the `--notify-url`s, from 0.
    pub receiver: usize,
    pub sent: u64,
    /// Attempts that failed and were tried again.
    pub retries: u64,
    /// Notices dropped, by reason: `queue_full`, `failed` (retries ran out), `refused` (the
    /// receiver answered a 4xx that retrying cannot change), `shutdown`.
    pub dropped: [(&'static str, u64); 4],
}

struct Sending {
    sequence: u64,
    /// One queue per receiver; `None` once the notifier stops.
    queues: Vec<Option<mpsc::Sender<Arc<Delivery>>>>,
}

/// Where and how notices go.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The receivers, checked by [`parse_url`].
    pub urls: Vec<reqwest::Url>,
    /// Signs each notice, when given.
    pub secret: Option<Secret>,
    /// How long a notice is retried for ([`RETRY_WINDOW`] by default).
    pub retry_window: Duration,
}

/// Sends the notices of the jobs' state changes to the receivers.
pub struct Notifier {
    instance: String,
    secret: Option<Secret>,
    sending: Mutex<Sending>,
    counts: Vec<Arc<Counts>>,
    tasks: TaskTracker,
    /// Stops the deliveries once the grace at shutdown is over.
    halt: CancellationToken,
}

impl Notifier {
    /// Starts one delivery task per URL (on the current runtime).
    pub fn start(settings: Settings) -> Result<Arc<Notifier>, NotifyError> {
        let Settings {
            urls,
            secret,
            retry_window,
        } = settings;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT.min(retry_window.max(Duration::from_millis(100))))
            // A redirect could lead past --allow-cluster: none is followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mongoferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        let tasks = TaskTracker::new();
        let halt = CancellationToken::new();
        let mut queues = Vec::new();
        let mut counts = Vec::new();
        for (index, url) in urls.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(QUEUE);
            let count = Arc::new(Counts::default());
            let receiver = Receiver {
                index,
                shown: redact(&url),
                url,
                http: http.clone(),
                counts: count.clone(),
                retry_window,
                halt: halt.clone(),
            };
            tasks.spawn(receiver.deliver(rx));
            queues.push(Some(tx));
            counts.push(count);
        }
        Ok(Arc::new(Notifier {
            instance: format!("{:016x}", fastrand::u64(..)),
            secret,
            sending: Mutex::new(Sending {
                sequence: 0,
                queues,
            }),
            counts,
            tasks,
            halt,
        }))
    }

    /// This start of the service, as the notices name it.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Queues the notice of `change` for every receiver, without waiting: a full queue drops it
    /// (counted). Notices are numbered and queued under one lock, so every receiver gets them
    /// in the order of their numbers.
    pub fn announce<C: Serialize>(&self, change: &C) {
        let mut sending = self.sending.lock();
        sending.sequence += 1;
        let sequence = sending.sequence;
        let notice = Notice {
            event: "job.state",
            instance: self.instance.clone(),
            sequence,
            time: unix_now(),
            change,
        };
        let body: Arc<[u8]> = match serde_json::to_vec(&notice) {
            Ok(body) => body.into(),
            Err(e) => return tracing::error!("notification {sequence}: {e}"),
        };
        let delivery = Arc::new(Delivery {
            sequence,
            signature: self.secret.as_ref().map(|s| s.sign(&body)),
            body,
        });
        for (index, queue) in sending.queues.iter().enumerate() {
            let counts = &self.counts[index];
            let Some(queue) = queue else {
                counts.shutdown.fetch_add(1, Relaxed);
                continue;
            };
            match queue.try_send(delivery.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    counts.queue_full.fetch_add(1, Relaxed);
                    tracing::warn!(
                        "notification {sequence} dropped for receiver {index}: its queue is full"
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    counts.shutdown.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Each receiver's counts.
    pub fn counts(&self) -> Vec<ReceiverCounts> {
        self.counts
            .iter()
            .enumerate()
            .map(|(receiver, c)| ReceiverCounts {
                receiver,
                sent: c.sent.load(Relaxed),
                retries: c.retries.load(Relaxed),
                dropped: [
                    ("queue_full", c.queue_full.load(Relaxed)),
                    ("failed", c.failed.load(Relaxed)),
                    ("refused", c.refused.load(Relaxed)),
                    ("shutdown", c.shutdown.load(Relaxed)),
                ],
            })
            .collect()
    }

    /// Takes no more notices; the deliveries get `grace` to send what is queued, then stop
    /// (what is left is counted as dropped). Returns once every delivery task has ended.
    pub async fn shutdown(&self, grace: Duration) {
        // Closing the queues ends each delivery task once its queue is empty.
        for queue in self.sending.lock().queues.iter_mut() {
            *queue = None;
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("notifications still pending after {grace:?}: dropped");
            self.halt.cancel();
            self.tasks.wait().await;
        }
    }
}

/// One receiver's delivery task.
struct Receiver {
    index: usize,
    url: reqwest::Url,
    /// The URL as logged ([`redact`]).
    shown: String,
    http: reqwest::Client,
    counts: Arc<Counts>,
    retry_window: Duration,
    halt: CancellationToken,
}

impl Receiver {
    /// Sends the notices of `queue` one after the other until it closes (or the halt).
    async fn deliver(self, mut queue: mpsc::Receiver<Arc<Delivery>>) {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.halt.cancelled() => None,
                next = queue.recv() => next,
            };
            let Some(delivery) = next else { break };
            if !self.send(&delivery).await {
                // Halted: this notice and the queued ones are not sent.
                self.counts.shutdown.fetch_add(1, Relaxed);
                break;
            }
        }
        queue.close();
        while queue.try_recv().is_ok() {
            self.counts.shutdown.fetch_add(1, Relaxed);
        }
    }

    /// POSTs `delivery` until it is taken (2xx), refused (a 4xx other than 408, 425, 429) or
    /// the retry window is over (then it is dropped and counted); `false` when halted first.
    async fn send(&self, delivery: &Delivery) -> bool {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::select! {
                biased;
                _ = self.halt.cancelled() => return false,
                attempt = self.post(delivery) => attempt,
            };
            let why = match attempt {
                Ok(()) => {
                    self.counts.sent.fetch_add(1, Relaxed);
                    return true;
                }
                Err(NotTaken::Refused(why)) => {
                    self.counts.refused.fetch_add(1, Relaxed);
                    tracing::warn!(
                        "notification {} to {} dropped: {why} (a refusal that retrying cannot \
                         change: not retried)",
                        delivery.sequence,
                        self.shown
                    );
                    return true;
                }
                Err(NotTaken::Failed(why)) => why,
            };
            let left = self.retry_window.saturating_sub(started.elapsed());
            if left.is_zero() {
                self.counts.failed.fetch_add(1, Relaxed);
                tracing::warn!(
                    "notification {} to {} dropped after {:?} of retries: {why}",
                    delivery.sequence,
                    self.shown,
                    self.retry_window
                );
                return true;
            }
            self.counts.retries.fetch_add(1, Relaxed);
            tracing::debug!(
                "notification {} to {}: {why}; retried in {backoff:?}",
                delivery.sequence,
                self.shown
            );
            tokio::select! {
                biased;
                _ = self.halt.cancelled() => return false,
                _ = tokio::time::sleep(backoff.min(left)) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One POST; why it was not taken, never with the URL.
    async fn post(&self, delivery: &Delivery) -> Result<(), NotTaken> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SEQUENCE_HEADER, delivery.sequence.to_string())
            .body(reqwest::Body::from(delivery.body.to_vec()));
        if let Some(signature) = &delivery.signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let failed = |why: String| Err(NotTaken::Failed(why));
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => {
                let status = answer.status();
                let why = format!("receiver {} answered {status}", self.index);
                // A 4xx says the notice itself is refused (a wrong path, a bad signature),
                // except those that ask to come back later.
                match status.is_client_error() && !matches!(status.as_u16(), 408 | 425 | 429) {
                    true => Err(NotTaken::Refused(why)),
                    false => failed(why),
                }
            }
            Err(e) if e.is_timeout() => failed("timed out".into()),
            Err(e) if e.is_connect() => failed("cannot connect".into()),
            Err(e) => failed(e.without_url().to_string()),
        }
    }
}

/// Why a receiver did not take a notice.
enum NotTaken {
    /// Worth another attempt: no answer, a 3xx (redirects are not followed), a 5xx, a 408, 425
    /// or 429.
    Failed(String),
    /// Refused for good: any other 4xx.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_redacted() {
        let any = AllowList::default();
        let url = parse_url(
            0,
            "https://user:pw@hooks.example.com:8443/a/b?token=s3cret#x",
            &any,
        )
        .unwrap();
        assert_eq!(redact(&url), "https://hooks.example.com:8443/a/b");
        let url = parse_url(0, "http://127.0.0.1/hook", &any).unwrap();
        assert_eq!(redact(&url), "http://127.0.0.1/hook");
        let url = parse_url(0, "http://[::1]:9000", &any).unwrap();
        assert_eq!(redact(&url), "http://[::1]:9000/");

        let err = parse_url(1, "not a url?token=s3cret", &any).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--notify-url (the 2nd): not a URL (relative URL without a base)"
        );
        let err = parse_url(0, "ftp://u:pw@example.com/x?k=v", &any).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--notify-url ftp://example.com/x: the scheme is \"ftp\": give an http:// or https:// URL"
        );
        let refused = err.to_string();
        assert!(
            !refused.contains("pw") && !refused.contains("k=v"),
            "{refused}"
        );

        // With --allow-cluster, the host must be allowed, as a job's throttle_url.
        let allow = AllowList::new(&["hooks.example.com".into(), "127.0.0.1:9000".into()]).unwrap();
        assert!(parse_url(0, "https://hooks.example.com/x", &allow).is_ok());
        assert!(parse_url(0, "http://127.0.0.1:9000/x", &allow).is_ok());
        let err = parse_url(0, "http://127.0.0.1:9001/x?t=s3cret", &allow).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--notify-url http://127.0.0.1:9001/x: host 127.0.0.1:9001 is not in --allow-cluster"
        );
        let err = parse_url(0, "https://evil.example.org/", &allow).unwrap_err();
        assert!(err.to_string().contains("not in --allow-cluster"), "{err}");
    }

    #[test]
    fn the_signature_is_an_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let secret = Secret::new("Jefe\n").unwrap();
        assert_eq!(
            secret.sign(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(Secret::new(" \n").is_none());
        assert_eq!(format!("{secret:?}"), "Secret(***)");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = Secret::read(&empty).unwrap_err();
        assert!(err.to_string().ends_with("the file is empty"), "{err}");
        let err = Secret::read(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.to_string().starts_with("--notify-secret-file "),
            "{err}"
        );
    }

    fn change(state: &str) -> serde_json::Value {
        serde_json::json!({"job": 7, "mode": "copy", "state": state})
    }

    #[tokio::test]
    async fn a_receiver_that_is_down_never_holds_the_announcer() {
        // A closed port: every attempt fails at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        let url = parse_url(0, &url, &AllowList::default()).unwrap();
        let notifier = Notifier::start(Settings {
            urls: vec![url],
            secret: None,
            retry_window: Duration::from_millis(300),
        })
        .unwrap();
        let started = Instant::now();
        for _ in 0..(QUEUE + 10) {
            notifier.announce(&change("running"));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let counts = &notifier.counts()[0];
        assert!(counts.dropped[0].1 >= 9, "{counts:?}");
        notifier.shutdown(Duration::from_millis(500)).await;
        let counts = &notifier.counts()[0];
        let dropped: u64 = counts.dropped.iter().map(|(_, n)| n).sum();
        assert_eq!((counts.sent, dropped), (0, QUEUE as u64 + 10), "{counts:?}");
        // After the shutdown, a notice is dropped at once.
        assert_eq!(counts.dropped[3].0, "shutdown");
        let before = counts.dropped[3].1;
        notifier.announce(&change("completed"));
        assert_eq!(notifier.counts()[0].dropped[3].1, before + 1);
    }

    /// A receiver on a free loopback port answering every POST with `status`; how many it got.
    async fn answering(status: u16) -> (String, Arc<AtomicU64>) {
        let got = Arc::new(AtomicU64::new(0));
        let counted = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                counted.fetch_add(1, Relaxed);
                async move { axum::http::StatusCode::from_u16(status).unwrap() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, got)
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried_and_a_request_to_come_back_later_is() {
        let (refusing, refused_posts) = answering(404).await;
        let (busy, busy_posts) = answering(429).await;
        let any = AllowList::default();
        let notifier = Notifier::start(Settings {
            urls: vec![
                parse_url(0, &refusing, &any).unwrap(),
                parse_url(1, &busy, &any).unwrap(),
            ],
            secret: None,
            retry_window: Duration::from_secs(1),
        })
        .unwrap();
        notifier.announce(&change("running"));
        notifier.shutdown(Duration::from_secs(5)).await;
        let counts = notifier.counts();
        assert_eq!(refused_posts.load(Relaxed), 1, "a 404 is asked once");
        assert_eq!(counts[0].retries, 0, "{counts:?}");
        assert_eq!(counts[0].dropped[2], ("refused", 1), "{counts:?}");
        assert!(busy_posts.load(Relaxed) >= 2, "a 429 is asked again");
        assert!(counts[1].retries >= 1, "{counts:?}");
        assert_eq!(counts[1].dropped[1], ("failed", 1), "{counts:?}");
    }
}
