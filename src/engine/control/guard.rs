//! The load guard: whether the job may write, decided once per interval from what the
//! production servers feel.
//!
//! In: the operator's [`GuardSettings`] (changeable while the job runs) and, every interval, a
//! [`Reading`] of the signals they name — replication lag, `serverStatus` values, flag files, an
//! HTTP endpoint, a sync's oplog headroom — taken by `run/guard.rs`. Out: one [`Judgement`]
//! (held or free, and why; a critical threshold crossed), applied to the job's [`Hold`], which
//! every write, move delete and verification read waits at ([`Throttle::acquire`]), and kept with
//! its time for the views. It sits beside the adaptive controller, which keeps steering workers
//! and rate on latency: the guard can hold everything, whatever the controller decided.
//!
//! [`Throttle::acquire`]: super::throttle::Throttle::acquire

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Serialize, Serializer};
use tokio::sync::watch;

use crate::mongo::Side;

/// Changes of the decision kept for display (each with its time).
const KEPT: usize = 100;

/// The oplog headroom under which a sync is not held, unless a job says otherwise (seconds).
pub const DEFAULT_MIN_OPLOG_HEADROOM_SECS: f64 = 3600.0;

/// How often the guard decides, unless a job says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// One threshold on a server's `serverStatus`: `source:connections.current>500`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub side: Side,
    /// A dotted path into `serverStatus` (names may hold spaces: `wiredTiger.cache.tracked
    /// dirty bytes in the cache`).
    pub path: String,
    pub limit: f64,
}

impl Threshold {
    /// Thresholds separated by commas, each `side:path>number` (`field` names the option in
    /// messages).
    pub fn parse_list(text: &str, field: &str) -> Result<Vec<Threshold>, String> {
        let bad = |part: &str, why: &str| {
            format!("{field}: `{part}` {why} (expected side:path>number, e.g. source:connections.current>500)")
        };
        let mut thresholds = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((side, rest)) = part.split_once(':') else {
                return Err(bad(part, "has no side"));
            };
            let side = match side.trim() {
                "source" => Side::Source,
                "destination" => Side::Destination,
                _ => return Err(bad(part, "names no side: use source or destination")),
            };
            let Some((path, limit)) = rest.rsplit_once('>') else {
                return Err(bad(part, "has no `>`"));
            };
            let path = path.trim();
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(bad(part, "has an empty path or path segment"));
            }
            let limit = match limit.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => n,
                _ => return Err(bad(part, "has no number after `>`")),
            };
            thresholds.push(Threshold {
                side,
                path: path.to_string(),
                limit,
            });
        }
        if thresholds.is_empty() {
            return Err(bad(text, "names no threshold"));
        }
        Ok(thresholds)
    }

    /// The signal's name in views and metrics: `source:connections.current`.
    pub fn signal(&self) -> String {
        format!("{}:{}", self.side, self.path)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}>{}", self.signal(), self.limit)
    }
}

/// Thresholds shown as the operator writes them.
fn as_text<S: Serializer>(thresholds: &[Threshold], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = thresholds.iter().map(Threshold::to_string).collect();
    s.serialize_str(&text.join(","))
}

/// What the guard watches, as checked from a job's spec (`None` / empty: that signal is off).
/// Its JSON has the names and forms of the spec's fields, so a change can be merged into it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GuardSettings {
    /// Replication lag allowed at the destination (and at the source of a move), in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<f64>,
    #[serde(serialize_with = "as_text", skip_serializing_if = "Vec::is_empty")]
    pub max_load: Vec<Threshold>,
    #[serde(serialize_with = "as_text", skip_serializing_if = "Vec::is_empty")]
    pub critical_load: Vec<Threshold>,
    /// On a critical threshold, pause this long and look again rather than stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_load_hibernate_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_flag_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_url: Option<String>,
    /// A sync is not held while its oplog headroom is under this [default:
    /// [`DEFAULT_MIN_OPLOG_HEADROOM_SECS`]].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_oplog_headroom_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postpone_commit_flag_file: Option<PathBuf>,
    /// Between two decisions [default: [`DEFAULT_INTERVAL`]].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_interval_ms: Option<u64>,
}

impl GuardSettings {
    /// What these settings read of the servers that `before` did not: thresholds on other
    /// paths, a lag not asked before. (A new limit on a path already read needs no new look.)
    pub fn reads_beyond(&self, before: &GuardSettings) -> GuardSettings {
        let read = |t: &&Threshold| {
            before
                .max_load
                .iter()
                .chain(&before.critical_load)
                .any(|b| b.side == t.side && b.path == t.path)
        };
        let unread = |list: &[Threshold]| list.iter().filter(|t| !read(t)).cloned().collect();
        GuardSettings {
            max_lag_ms: self.max_lag_ms.filter(|_| before.max_lag_ms.is_none()),
            max_load: unread(&self.max_load),
            critical_load: unread(&self.critical_load),
            ..GuardSettings::default()
        }
    }

    pub fn interval(&self) -> Duration {
        self.guard_interval_ms
            .map_or(DEFAULT_INTERVAL, Duration::from_millis)
    }

    pub fn min_oplog_headroom_secs(&self) -> f64 {
        self.min_oplog_headroom_secs
            .unwrap_or(DEFAULT_MIN_OPLOG_HEADROOM_SECS)
    }

    /// The sides whose `serverStatus` the thresholds read.
    pub fn status_sides(&self) -> Vec<Side> {
        let mut sides = Vec::new();
        for t in self.max_load.iter().chain(&self.critical_load) {
            if !sides.contains(&t.side) {
                sides.push(t.side);
            }
        }
        sides
    }
}

/// What the signals said this interval (a signal not asked for, or not read, is absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Replication lag of each side read (ms).
    pub lag_ms: Vec<(Side, f64)>,
    /// `serverStatus` values by signal name (`source:connections.current`).
    pub status: BTreeMap<String, f64>,
    /// The job's flag file exists.
    pub flag_file: bool,
    /// The service's flag file, which holds every job, exists (its path).
    pub service_flag_file: Option<PathBuf>,
    /// The throttle URL's answer: its HTTP status, or why there was none.
    pub url: Option<Result<u16, String>>,
    /// A sync's oplog headroom (seconds).
    pub oplog_headroom_secs: Option<f64>,
    /// Signals that could not be read, and why (they neither hold nor free the job).
    pub unread: Vec<String>,
}

impl Reading {
    /// The values for views and metrics, by signal name.
    pub fn signals(&self) -> BTreeMap<String, f64> {
        let mut signals = self.status.clone();
        for (side, lag) in &self.lag_ms {
            signals.insert(format!("{side}_lag_ms"), *lag);
        }
        if let Some(headroom) = self.oplog_headroom_secs {
            signals.insert("oplog_headroom_secs".into(), headroom);
        }
        if let Some(Ok(status)) = &self.url {
            signals.insert("throttle_url_status".into(), f64::from(*status));
        }
        signals
    }
}

/// The decision of one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judgement {
    /// Why the job is held (`None`: free).
    pub held: Option<String>,
    /// A critical threshold crossed, in words.
    pub critical: Option<String>,
    /// Held signals overruled, and why: a sync whose oplog headroom is short.
    pub overruled: Option<String>,
}

/// The rule. Pure, so it is tested on its own: every signal over its limit is a reason to
/// hold; a sync short of oplog headroom is not held, since a lost position costs a whole
/// reconcile or copy, more than any load.
pub fn decide(settings: &GuardSettings, reading: &Reading, sync: bool) -> Judgement {
    let over = |t: &Threshold| {
        let value = reading.status.get(&t.signal()).copied()?;
        (value > t.limit).then(|| format!("{} {} > {}", t.signal(), number(value), t.limit))
    };
    let critical = settings.critical_load.iter().find_map(over);
    let mut reasons = Vec::new();
    if reading.flag_file {
        if let Some(path) = &settings.throttle_flag_file {
            reasons.push(format!("flag file {} exists", path.display()));
        }
    }
    if let Some(path) = &reading.service_flag_file {
        reasons.push(format!("the service's flag file {} exists", path.display()));
    }
    match &reading.url {
        Some(Ok(200)) | None => {}
        Some(Ok(status)) => reasons.push(format!("throttle URL answered {status}")),
        Some(Err(why)) => reasons.push(format!("throttle URL unreachable ({why})")),
    }
    if let Some(max) = settings.max_lag_ms {
        for (side, lag) in &reading.lag_ms {
            if *lag > max {
                reasons.push(format!(
                    "{side} lag {} > {}",
                    seconds(lag / 1000.0),
                    seconds(max / 1000.0)
                ));
            }
        }
    }
    reasons.extend(settings.max_load.iter().filter_map(over));
    let mut judgement = Judgement {
        held: (!reasons.is_empty()).then(|| reasons.join("; ")),
        critical,
        overruled: None,
    };
    let short = reading
        .oplog_headroom_secs
        .filter(|h| sync && *h < settings.min_oplog_headroom_secs());
    if let (Some(headroom), Some(held)) = (short, &judgement.held) {
        judgement.overruled = Some(format!(
            "not held, oplog headroom {} < {}: {held}",
            seconds(headroom),
            seconds(settings.min_oplog_headroom_secs())
        ));
        judgement.held = None;
    }
    judgement
}

/// `3.2 s`, `1 s`, `1200 s`.
fn seconds(secs: f64) -> String {
    format!("{} s", number(secs))
}

/// A value as people read it: whole numbers without decimals, others to one.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// The gate every write, move delete and verification read passes ([`super::throttle::Throttle`]):
/// closed while the guard holds the job.
#[derive(Debug, Clone)]
pub struct Hold(Arc<watch::Sender<bool>>);

impl Default for Hold {
    fn default() -> Self {
        Hold(Arc::new(watch::channel(false).0))
    }
}

impl Hold {
    pub fn set(&self, held: bool) {
        self.0
            .send_if_modified(|now| std::mem::replace(now, held) != held);
    }

    pub fn is_held(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once the gate is open.
    pub async fn wait_open(&self) {
        let mut open = self.0.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = open.wait_for(|held| !held).await;
    }
}

/// A change of the guard's decision, at its time.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GuardDecision {
    /// Unix seconds.
    pub at: f64,
    pub throttled: bool,
    pub reason: Option<String>,
}

/// The guard as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GuardView {
    pub throttled: bool,
    /// Why it is held, or why a hold was overruled.
    pub reason: Option<String>,
    /// The last value of each signal read.
    pub signals: BTreeMap<String, f64>,
    /// Signals that could not be read last time, and why.
    pub unread: Vec<String>,
    /// The changes of the decision, oldest first (at most 100).
    pub decisions: Vec<GuardDecision>,
    /// What the guard watches (`null`: nothing).
    pub settings: Option<serde_json::Value>,
    /// A sync's commit waits while this (its flag file) exists.
    pub commit_postponed: Option<String>,
}

#[derive(Debug, Default)]
struct Current {
    throttled: bool,
    reason: Option<String>,
    signals: BTreeMap<String, f64>,
    unread: Vec<String>,
    decisions: VecDeque<GuardDecision>,
}

/// A job's guard: its settings, its gate and what it decided.
#[derive(Debug)]
pub struct LoadGuard {
    settings: Mutex<GuardSettings>,
    /// The service's flag file, which holds all its jobs.
    service_flag_file: Mutex<Option<PathBuf>>,
    hold: Hold,
    current: Mutex<Current>,
    /// Why a sync's commit waits (`None`: it may go).
    postponed: watch::Sender<Option<String>>,
}

impl LoadGuard {
    pub fn new(settings: GuardSettings, hold: Hold) -> Self {
        LoadGuard {
            settings: Mutex::new(settings),
            service_flag_file: Mutex::new(None),
            hold,
            current: Mutex::default(),
            postponed: watch::channel(None).0,
        }
    }

    pub fn settings(&self) -> GuardSettings {
        self.settings.lock().clone()
    }

    /// New settings, read from the next interval on.
    pub fn set_settings(&self, settings: GuardSettings) {
        *self.settings.lock() = settings;
    }

    pub fn service_flag_file(&self) -> Option<PathBuf> {
        self.service_flag_file.lock().clone()
    }

    pub fn set_service_flag_file(&self, path: Option<PathBuf>) {
        *self.service_flag_file.lock() = path;
    }

    /// Applies one interval's decision: the gate, the signals and, when it changed, a record.
    pub fn apply(&self, judgement: &Judgement, reading: &Reading, at: f64) {
        let throttled = judgement.held.is_some();
        self.hold.set(throttled);
        let reason = judgement.held.clone().or(judgement.overruled.clone());
        let mut current = self.current.lock();
        let changed = current.throttled != throttled || current.reason != reason;
        if changed {
            match (&reason, throttled) {
                (Some(why), true) => tracing::warn!("load guard: held: {why}"),
                (Some(why), false) => tracing::warn!("load guard: {why}"),
                (None, _) => tracing::info!("load guard: free to write"),
            }
            if current.decisions.len() == KEPT {
                current.decisions.pop_front();
            }
            current.decisions.push_back(GuardDecision {
                at,
                throttled,
                reason: reason.clone(),
            });
        }
        current.throttled = throttled;
        current.reason = reason;
        current.signals = reading.signals();
        current.unread = reading.unread.clone();
    }

    /// Closes the gate until the first decision when anything is watched: a job writes nothing
    /// before its guard has looked.
    pub fn hold_until_first_decision(&self) {
        let watched =
            self.settings() != GuardSettings::default() || self.service_flag_file().is_some();
        if watched {
            self.hold.set(true);
        }
    }

    /// Opens the gate for good: the guard stopped watching.
    pub fn release(&self) {
        self.hold.set(false);
    }

    pub fn is_held(&self) -> bool {
        self.hold.is_held()
    }

    /// Whether its last decision holds the job (the view's `throttled`, without the rest).
    pub fn throttled(&self) -> bool {
        self.current.lock().throttled
    }

    /// A sync's commit waits while `why` is `Some`.
    pub fn postpone_commit(&self, why: Option<String>) {
        self.postponed.send_if_modified(|now| {
            let changed = *now != why;
            *now = why;
            changed
        });
    }

    pub fn commit_postponed(&self) -> Option<String> {
        self.postponed.borrow().clone()
    }

    /// Returns once no flag postpones the commit.
    pub async fn wait_commit_allowed(&self) {
        let mut postponed = self.postponed.subscribe();
        let _ = postponed.wait_for(Option::is_none).await;
    }

    pub fn view(&self) -> GuardView {
        let settings = self.settings();
        let watched = settings != GuardSettings::default() || self.service_flag_file().is_some();
        let current = self.current.lock();
        GuardView {
            throttled: current.throttled,
            reason: current.reason.clone(),
            signals: current.signals.clone(),
            unread: current.unread.clone(),
            decisions: current.decisions.iter().cloned().collect(),
            settings: watched.then(|| serde_json::to_value(&settings).unwrap_or_default()),
            commit_postponed: self.commit_postponed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings {
            max_lag_ms: Some(1000.0),
            max_load: Threshold::parse_list("source:connections.current>500", "max_load").unwrap(),
            critical_load: Threshold::parse_list(
                "destination:wiredTiger.cache.tracked dirty bytes in the cache>1e9",
                "critical_load",
            )
            .unwrap(),
            throttle_flag_file: Some("/tmp/hold".into()),
            ..GuardSettings::default()
        }
    }

    #[test]
    fn only_what_was_not_read_before_is_asked_of_the_servers() {
        let before = settings();
        let nothing_new = before.reads_beyond(&before);
        assert_eq!(nothing_new, GuardSettings::default());
        // A new limit on a path already read, or a moved threshold: nothing to ask.
        let mut after = before.clone();
        after.max_load = Threshold::parse_list(
            "source:connections.current>10,destination:wiredTiger.cache.tracked dirty bytes in the cache>5",
            "max_load",
        )
        .unwrap();
        assert_eq!(after.reads_beyond(&before), GuardSettings::default());
        // A new path and a lag not asked before are.
        after
            .max_load
            .extend(Threshold::parse_list("source:opcounters.insert>9", "max_load").unwrap());
        let mut without_lag = before.clone();
        without_lag.max_lag_ms = None;
        let asked = after.reads_beyond(&without_lag);
        assert_eq!(asked.max_load.len(), 1);
        assert_eq!(asked.max_load[0].path, "opcounters.insert");
        assert_eq!(asked.max_lag_ms, Some(1000.0));
        assert!(asked.critical_load.is_empty());
    }

    #[test]
    fn thresholds_parse_with_spaces_and_exponents_and_bad_ones_are_named() {
        let list = Threshold::parse_list(
            "source:connections.current>500, destination:wiredTiger.cache.tracked dirty bytes in the cache>1e9",
            "max_load",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].side, Side::Destination);
        assert_eq!(
            list[1].path,
            "wiredTiger.cache.tracked dirty bytes in the cache"
        );
        assert_eq!(list[1].limit, 1e9);
        assert_eq!(list[0].to_string(), "source:connections.current>500");
        for bad in [
            "connections.current>5",
            "src:a>5",
            "source:a",
            "source:a>x",
            "source:a..b>1",
            "",
        ] {
            let e = Threshold::parse_list(bad, "max_load").unwrap_err();
            assert!(e.starts_with("max_load: `"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_signal_over_its_limit_holds_and_says_why() {
        let s = settings();
        assert_eq!(decide(&s, &Reading::default(), false), Judgement::default());
        let reading = Reading {
            lag_ms: vec![(Side::Destination, 3200.0)],
            status: [("source:connections.current".to_string(), 612.0)].into(),
            flag_file: true,
            url: Some(Ok(503)),
            ..Reading::default()
        };
        let judged = decide(&s, &reading, false);
        assert_eq!(
            judged.held.as_deref(),
            Some(
                "flag file /tmp/hold exists; throttle URL answered 503; destination lag 3.2 s > 1 s; \
                 source:connections.current 612 > 500"
            )
        );
        assert_eq!(judged.critical, None);
        let calm = Reading {
            lag_ms: vec![(Side::Destination, 999.0)],
            status: [("source:connections.current".to_string(), 500.0)].into(),
            url: Some(Ok(200)),
            ..Reading::default()
        };
        assert_eq!(decide(&s, &calm, false).held, None);
        let unreachable = Reading {
            url: Some(Err("timed out".into())),
            ..Reading::default()
        };
        assert_eq!(
            decide(&s, &unreachable, false).held.as_deref(),
            Some("throttle URL unreachable (timed out)")
        );
    }

    #[test]
    fn a_critical_threshold_is_named_with_its_value() {
        let reading = Reading {
            status: [(
                "destination:wiredTiger.cache.tracked dirty bytes in the cache".to_string(),
                2.5e9,
            )]
            .into(),
            ..Reading::default()
        };
        let judged = decide(&settings(), &reading, false);
        assert_eq!(
            judged.critical.as_deref(),
            Some("destination:wiredTiger.cache.tracked dirty bytes in the cache 2500000000 > 1000000000")
        );
    }

    #[test]
    fn a_sync_short_of_oplog_headroom_is_not_held() {
        let reading = Reading {
            flag_file: true,
            oplog_headroom_secs: Some(1200.0),
            ..Reading::default()
        };
        let s = settings();
        let judged = decide(&s, &reading, true);
        assert_eq!(judged.held, None);
        assert_eq!(
            judged.overruled.as_deref(),
            Some("not held, oplog headroom 1200 s < 3600 s: flag file /tmp/hold exists")
        );
        // A copy has no position to lose; a sync with headroom enough is held.
        assert!(decide(&s, &reading, false).held.is_some());
        let roomy = Reading {
            oplog_headroom_secs: Some(7200.0),
            ..reading
        };
        assert!(decide(&s, &roomy, true).held.is_some());
    }

    #[test]
    fn the_view_keeps_changes_of_the_decision_with_their_times() {
        let guard = LoadGuard::new(settings(), Hold::default());
        let held = Judgement {
            held: Some("flag file /tmp/hold exists".into()),
            ..Judgement::default()
        };
        let reading = Reading::default();
        guard.apply(&held, &reading, 10.0);
        guard.apply(&held, &reading, 11.0);
        assert!(guard.is_held());
        guard.apply(&Judgement::default(), &reading, 12.0);
        assert!(!guard.is_held());
        let view = guard.view();
        let times: Vec<(f64, bool)> = view.decisions.iter().map(|d| (d.at, d.throttled)).collect();
        assert_eq!(times, vec![(10.0, true), (12.0, false)]);
        assert_eq!(
            view.settings.unwrap()["max_load"],
            "source:connections.current>500"
        );
    }
}
