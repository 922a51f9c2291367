//! The load guard's readings: every interval, the signals a job's guard watches, read from the
//! servers, the file system and an HTTP endpoint, and the decision applied.
//!
//! In: the job's [`LoadGuard`] (settings, gate), both clients, what the job is (a sync reads
//! its oplog headroom against its saved position; a move reads the source's lag too, since its
//! deletes replicate there), its stats. Out: each interval a [`Reading`], its [`Judgement`]
//! applied to the gate, a sync's commit postponed while its flag file exists, and on a critical
//! threshold a hibernation or the job stopped with the reason ([`Watch::run`] returns it). What
//! each interval costs the servers: one `serverStatus` per side a threshold names, one
//! `replSetGetStatus` per side whose lag is watched, and for a sync one read of the oplog's
//! first entry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use tokio_util::sync::CancellationToken;

use crate::engine::control::guard::{
    decide, GuardSettings, Judgement, LoadGuard, Reading, Threshold,
};
use crate::engine::stats::JobStats;
use crate::engine::Ledger;
use crate::mongo::{describe, Side};
use crate::spec::{CopySpec, Mode};

/// The longest any one reading may take.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A job's guard at work, for as long as the job runs.
pub struct Watch {
    pub guard: Arc<LoadGuard>,
    pub source: Client,
    pub destination: Client,
    pub mode: Mode,
    pub ledger: Arc<Ledger>,
    pub stats: Arc<JobStats>,
}

impl Watch {
    /// Reads and decides every interval until `stop`; on a critical threshold (without
    /// hibernation) cancels `halt` and returns why. The gate is open when it returns.
    pub async fn run(self, stop: CancellationToken, halt: CancellationToken) -> Option<String> {
        let http = reqwest::Client::builder()
            .timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| tracing::warn!("load guard: no HTTP client ({e}); throttle_url unread"))
            .ok();
        let mut short_of_headroom = false;
        let critical = loop {
            let settings = self.guard.settings();
            let reading = self.read(&settings, http.as_ref()).await;
            self.note_headroom(&settings, &reading, &mut short_of_headroom);
            let judged = decide(&settings, &reading, self.mode == Mode::Sync);
            let now = crate::state::unix_now();
            let mut wait = settings.interval();
            if let Some(critical) = &judged.critical {
                let critical = format!("critical load: {critical}");
                let Some(secs) = settings.critical_load_hibernate_secs else {
                    let held = judged_with(&judged, &critical);
                    self.guard.apply(&held, &reading, now);
                    halt.cancel();
                    break Some(critical);
                };
                let held = judged_with(&judged, &format!("{critical}; hibernating {secs} s"));
                self.guard.apply(&held, &reading, now);
                wait = Duration::from_secs_f64(secs);
            } else {
                self.guard.apply(&judged, &reading, now);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break None,
            }
        };
        self.guard.release();
        self.guard.postpone_commit(None);
        critical
    }

    /// Every signal the settings name, each read apart: one that fails is reported, not fatal.
    async fn read(&self, settings: &GuardSettings, http: Option<&reqwest::Client>) -> Reading {
        let mut reading = Reading::default();
        for side in settings.status_sides() {
            match server_status(self.client(side)).await {
                Ok(status) => {
                    for t in settings.max_load.iter().chain(&settings.critical_load) {
                        if t.side != side {
                            continue;
                        }
                        match status_value(&status, &t.path) {
                            Some(value) => {
                                reading.status.insert(t.signal(), value);
                            }
                            None => reading
                                .unread
                                .push(format!("{}: not in the {side}'s serverStatus", t.signal())),
                        }
                    }
                }
                Err(why) => reading.unread.push(format!("{side} serverStatus: {why}")),
            }
        }
        if settings.max_lag_ms.is_some() {
            for side in lag_sides(self.mode) {
                match replication_lag(self.client(side)).await {
                    Ok(lag) => reading.lag_ms.push((side, lag)),
                    Err(why) => reading
                        .unread
                        .push(format!("{side} replication lag: {why}")),
                }
            }
        }
        if let Some(path) = &settings.throttle_flag_file {
            reading.flag_file = exists(path).await;
        }
        if let Some(path) = self.guard.service_flag_file() {
            reading.service_flag_file = exists(&path).await.then_some(path);
        }
        if let Some(url) = &settings.throttle_url {
            reading.url = Some(match http {
                Some(http) => head(http, url).await,
                None => Err("no HTTP client".into()),
            });
        }
        if self.mode == Mode::Sync {
            if let Some(position) = self.ledger.sync_position().filter(|p| !p.committed) {
                match oldest_oplog_secs(&self.source).await {
                    Ok(oldest) => {
                        reading.oplog_headroom_secs =
                            Some(oplog_headroom(position.applied_secs, oldest));
                    }
                    Err(why) => reading.unread.push(format!("oplog headroom: {why}")),
                }
            }
        }
        let postponed = match &settings.postpone_commit_flag_file {
            Some(path) if exists(path).await => Some(format!(
                "commit postponed while the flag file {} exists",
                path.display()
            )),
            _ => None,
        };
        self.stats.sync.set_commit_postponed(postponed.clone());
        self.guard.postpone_commit(postponed);
        reading
    }

    /// Warns once each time the headroom falls under the minimum.
    fn note_headroom(&self, settings: &GuardSettings, reading: &Reading, short: &mut bool) {
        let Some(headroom) = reading.oplog_headroom_secs else {
            return;
        };
        let now_short = headroom < settings.min_oplog_headroom_secs();
        if now_short && !*short {
            tracing::warn!(
                "oplog headroom {headroom:.0} s is under {:.0} s: the source's oldest oplog entry \
                 nears the sync's saved position (the load guard no longer holds the sync)",
                settings.min_oplog_headroom_secs()
            );
        }
        *short = now_short;
    }

    fn client(&self, side: Side) -> &Client {
        match side {
            Side::Source => &self.source,
            _ => &self.destination,
        }
    }
}

/// Whose replication lag counts: the destination's, and the source's during a move (whose
/// deletes replicate too).
fn lag_sides(mode: Mode) -> Vec<Side> {
    match mode {
        Mode::Move => vec![Side::Destination, Side::Source],
        _ => vec![Side::Destination],
    }
}

/// A judgement held for `reason` instead (a critical threshold), keeping what else it says.
fn judged_with(judged: &Judgement, reason: &str) -> Judgement {
    let mut held = judged.clone();
    held.held = Some(match &judged.held {
        Some(other) => format!("{reason}; {other}"),
        None => reason.to_string(),
    });
    held.overruled = None;
    held
}

async fn exists(path: &Path) -> bool {
    tokio::fs::try_exists(path).await.unwrap_or(false)
}

/// The status of a HEAD of `url`, or why there is none.
async fn head(http: &reqwest::Client, url: &str) -> Result<u16, String> {
    match http.head(url).send().await {
        Ok(answer) => Ok(answer.status().as_u16()),
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) if e.is_connect() => Err("cannot connect".into()),
        Err(e) => Err(e.without_url().to_string()),
    }
}

/// Runs `command` on `admin` within [`READ_TIMEOUT`].
async fn admin_command(client: &Client, command: Document) -> Result<Document, String> {
    let admin = client.database("admin");
    match tokio::time::timeout(READ_TIMEOUT, admin.run_command(command)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("no answer in 2 s".into()),
    }
}

async fn server_status(client: &Client) -> Result<Document, String> {
    admin_command(client, doc! { "serverStatus": 1 }).await
}

/// A number at a dotted path of `status` (`connections.current`).
pub fn status_value(status: &Document, path: &str) -> Option<f64> {
    let mut parts = path.split('.');
    let mut value = status.get(parts.next()?)?;
    for part in parts {
        value = value.as_document()?.get(part)?;
    }
    match value {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        Bson::Boolean(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

async fn replication_lag(client: &Client) -> Result<f64, String> {
    let status = admin_command(client, doc! { "replSetGetStatus": 1 }).await?;
    majority_lag_ms(&status).ok_or_else(|| "replSetGetStatus names no primary".into())
}

/// How far the furthest member of the write majority is behind the primary (ms), from a
/// `replSetGetStatus` answer: the data-bearing members' lags, smallest first (the primary's is
/// 0), and the one that completes the majority (`writeMajorityCount`, else a majority of
/// them). A secondary that is down counts at its last optime, as lagging.
pub fn majority_lag_ms(status: &Document) -> Option<f64> {
    let members = status.get_array("members").ok()?;
    let optime = |m: &Document| {
        m.get_datetime("optimeDate")
            .ok()
            .map(|d| d.timestamp_millis())
    };
    let (mut primary, mut others) = (None, Vec::new());
    for member in members.iter().filter_map(Bson::as_document) {
        // 1 primary, 2 secondary; arbiters (7) and members starting up hold no data to lag.
        match member.get_i32("state").ok() {
            Some(1) => primary = optime(member),
            Some(2) | Some(8) => others.push(optime(member).unwrap_or(0)),
            _ => {}
        }
    }
    let primary = primary?;
    let mut lags: Vec<f64> = std::iter::once(0.0)
        .chain(others.iter().map(|o| (primary - o).max(0) as f64))
        .collect();
    lags.sort_by(f64::total_cmp);
    let majority = match status.get("writeMajorityCount") {
        Some(Bson::Int32(n)) if *n > 0 => *n as usize,
        Some(Bson::Int64(n)) if *n > 0 => *n as usize,
        _ => lags.len() / 2 + 1,
    };
    Some(lags[majority.min(lags.len()) - 1])
}

/// The cluster time (seconds) of the source's oldest oplog entry.
async fn oldest_oplog_secs(source: &Client) -> Result<u32, String> {
    let oplog = source.database("local").collection::<Document>("oplog.rs");
    let first = oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": 1 })
        .projection(doc! { "ts": 1 });
    match tokio::time::timeout(READ_TIMEOUT, first).await {
        Ok(Ok(Some(entry))) => entry
            .get_timestamp("ts")
            .map(|ts| ts.time)
            .map_err(|_| "the oldest oplog entry has no timestamp".into()),
        Ok(Ok(None)) => Err("the oplog is empty".into()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("no answer in 2 s".into()),
    }
}

/// How much older than the saved position (its cluster time, seconds) the source's oldest
/// oplog entry may get before the position is lost: their distance. At 0 or below the position
/// is gone, or about to be.
pub fn oplog_headroom(position_secs: u32, oldest_secs: u32) -> f64 {
    f64::from(position_secs) - f64::from(oldest_secs)
}

/// What the servers cannot give `settings`: a threshold's path their `serverStatus` does not
/// report, a lag asked of a server that is not in a replica set. Checked before anything is
/// written.
pub async fn problems(
    settings: &GuardSettings,
    (source, destination): (&Client, &Client),
    mode: Mode,
) -> Vec<String> {
    let mut problems = Vec::new();
    let client = |side| match side {
        Side::Source => source,
        _ => destination,
    };
    for side in settings.status_sides() {
        let status = match server_status(client(side)).await {
            Ok(status) => status,
            Err(why) => {
                problems.push(format!(
                    "max_load: the {side} answers no serverStatus ({why})"
                ));
                continue;
            }
        };
        let named = [
            ("max_load", &settings.max_load),
            ("critical_load", &settings.critical_load),
        ];
        for (field, thresholds) in named {
            for t in thresholds.iter().filter(|t| t.side == side) {
                if status_value(&status, &t.path).is_none() {
                    problems.push(missing(field, t));
                }
            }
        }
    }
    if settings.max_lag_ms.is_some() {
        for side in lag_sides(mode) {
            if let Err(why) = replication_lag(client(side)).await {
                problems.push(format!(
                    "max_lag_ms: the {side} reports no replication lag ({why}); is it a replica \
                     set member?"
                ));
            }
        }
    }
    problems
}

fn missing(field: &str, t: &Threshold) -> String {
    format!(
        "{field}: the {}'s serverStatus has no number at `{}`",
        t.side, t.path
    )
}

/// [`problems`] for a job about to be submitted, on clients of its own; servers that do not
/// answer within `timeout` are the run's to report.
pub async fn probe(spec: &CopySpec, timeout: Duration) -> Vec<String> {
    let settings = &spec.guard;
    if settings.status_sides().is_empty() && settings.max_lag_ms.is_none() {
        return Vec::new();
    }
    let Ok((source, destination)) =
        crate::mongo::connect_both(&spec.from, &spec.to, 1, timeout).await
    else {
        return Vec::new();
    };
    let found = problems(settings, (&source, &destination), spec.mode).await;
    crate::mongo::close(source).await;
    crate::mongo::close(destination).await;
    found
}

#[cfg(test)]
mod tests {
    use mongodb::bson::DateTime;

    use super::*;

    fn member(state: i32, optime_ms: i64) -> Document {
        doc! {
            "_id": state, "name": "h:27017", "health": 1.0, "state": state,
            "stateStr": if state == 1 { "PRIMARY" } else { "SECONDARY" },
            "optime": { "ts": mongodb::bson::Timestamp { time: 1, increment: 1 }, "t": 3_i64 },
            "optimeDate": DateTime::from_millis(optime_ms),
        }
    }

    #[test]
    fn the_lag_is_the_furthest_member_of_the_write_majority() {
        // Five members, majority 3: the primary, the secondary 0.5 s behind and the one 3.2 s
        // behind; the ones 60 s and 600 s behind are outside the majority.
        let status = doc! {
            "set": "rs0", "myState": 1, "writeMajorityCount": 3, "majorityVoteCount": 3,
            "members": [
                member(2, 1_000_000 - 3_200),
                member(1, 1_000_000),
                member(2, 1_000_000 - 600_000),
                member(2, 1_000_000 - 500),
                member(2, 1_000_000 - 60_000),
            ],
        };
        assert_eq!(majority_lag_ms(&status), Some(3_200.0));
        // Three members, an arbiter among them: the primary and the one data-bearing secondary.
        let mut arbiter = member(7, 0);
        arbiter.remove("optimeDate");
        let status = doc! {
            "writeMajorityCount": 2,
            "members": [member(1, 50_000), member(2, 48_000), arbiter],
        };
        assert_eq!(majority_lag_ms(&status), Some(2_000.0));
        // One member (the test server): never behind. No primary: nothing to say.
        assert_eq!(
            majority_lag_ms(&doc! { "members": [member(1, 5)] }),
            Some(0.0)
        );
        assert_eq!(majority_lag_ms(&doc! { "members": [member(2, 5)] }), None);
    }

    #[test]
    fn the_headroom_is_the_distance_from_the_oldest_entry_to_the_position() {
        assert_eq!(oplog_headroom(10_000, 6_400), 3_600.0);
        // The oldest entry is past the position: it is gone.
        assert_eq!(oplog_headroom(10_000, 10_005), -5.0);
    }

    #[test]
    fn status_values_are_found_by_dotted_paths_with_spaces() {
        let status = doc! {
            "connections": { "current": 12, "available": 51_188_i64 },
            "wiredTiger": { "cache": { "tracked dirty bytes in the cache": 1.5e9 } },
            "host": "h",
        };
        assert_eq!(status_value(&status, "connections.current"), Some(12.0));
        assert_eq!(
            status_value(&status, "wiredTiger.cache.tracked dirty bytes in the cache"),
            Some(1.5e9)
        );
        assert_eq!(status_value(&status, "connections.nope"), None);
        assert_eq!(status_value(&status, "host"), None);
    }
}
