//! The OpenAPI schemas of the engine's types that the API returns and accepts.
//!
//! In: the engine's views and settings ([`JobSnapshot`](crate::engine::stats::JobSnapshot)'s
//! parts, the adaptive state, [`Limits`], [`Strategy`]), which know serde and nothing of the API.
//! Out: their `utoipa::ToSchema`, implemented here. Each schema is derived from a mirror: a type
//! of this module with the engine type's name, fields, serde attributes and documentation (which
//! become the schema's descriptions). The mirrors serve nothing but their schema; the tests
//! prove each one reads and writes exactly the JSON of its engine type, and that its schema names
//! exactly the keys that JSON has, so a field added to the engine and not here fails them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::engine::control::{adaptive, guard, throttle};
use crate::engine::{source, stats};

/// The engine's type `$engine` has the schema of its mirror `$mirror` (of the same name).
macro_rules! schema_of {
    ($($engine:ty => $mirror:ty),* $(,)?) => {$(
        impl utoipa::PartialSchema for $engine {
            fn schema() -> RefOr<Schema> {
                <$mirror as utoipa::PartialSchema>::schema()
            }
        }

        impl ToSchema for $engine {
            fn name() -> Cow<'static, str> {
                <$mirror as ToSchema>::name()
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                <$mirror as ToSchema>::schemas(schemas)
            }
        }
    )*};
}

schema_of!(
    stats::PartState => PartState,
    stats::PartSnapshot => PartSnapshot,
    stats::WorkerState => WorkerState,
    stats::SchemaProgress => SchemaProgress,
    stats::IndexError => IndexError,
    stats::SyncPhase => SyncPhase,
    stats::EventCounts => EventCounts,
    stats::SyncProgress => SyncProgress,
    stats::VerificationPhase => VerificationPhase,
    stats::MismatchKind => MismatchKind,
    stats::Mismatch => Mismatch,
    stats::VerificationProgress => VerificationProgress,
    stats::CanCommit => CanCommit,
    stats::WritesAfterCommit => WritesAfterCommit,
    stats::MoveProgress => MoveProgress,
    stats::ReconcileProgress => ReconcileProgress,
    stats::HistoryLost => HistoryLost,
    stats::DeadLetterView => DeadLetterView,
    stats::DeadLetterSummary => DeadLetterSummary,
    stats::NsSnapshot => NsSnapshot,
    stats::WorkerSnapshot => WorkerSnapshot,
    stats::JobSnapshot => JobSnapshot,
    adaptive::AdaptiveConfig => AdaptiveConfig,
    adaptive::Action => Action,
    adaptive::Decision => Decision,
    adaptive::AdaptiveView => AdaptiveView,
    guard::GuardDecision => GuardDecision,
    guard::GuardView => GuardView,
    throttle::Limits => Limits,
    source::seam::Strategy => Strategy,
);

/// Where one partition of a namespace stands.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum PartState {
    /// Not read yet.
    Waiting,
    /// Being read and written.
    Reading,
    /// Every document of its range is written.
    Complete,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct PartSnapshot {
    index: u32,
    /// Documents written in the partition's range, earlier runs included.
    done: u64,
    state: PartState,
}

/// What a worker is doing right now.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum WorkerState {
    /// Waiting for a batch.
    Idle,
    /// Fetching or writing a batch.
    Busy,
    /// Held by the job's pause gate.
    Paused,
    /// Finished, retired or not started.
    Stopped,
}

/// What the schema step did so far.
#[derive(Serialize, Deserialize, ToSchema)]
struct SchemaProgress {
    /// What the job does to the schema now ("building indexes of shop.orders"), if anything.
    step: Option<String>,
    /// Destination namespaces dropped first (`--drop`).
    dropped: Vec<String>,
    /// Destination collections created with the source's options.
    created: Vec<String>,
    /// Indexes to build, and built so far.
    indexes_total: u64,
    indexes_built: u64,
    /// Indexes the destination refused, with its reason; the others are built anyway.
    index_errors: Vec<IndexError>,
    /// Views created after the collections.
    views: Vec<String>,
}

/// An index the destination would not build.
#[derive(Serialize, Deserialize, ToSchema)]
struct IndexError {
    namespace: String,
    index: String,
    reason: String,
}

/// Where a sync job is in its life.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum SyncPhase {
    /// Copying what the source holds (its changes meanwhile wait in its history).
    InitialCopy,
    /// Applying the changes made since the sync started, not yet level with the source.
    CatchingUp,
    /// The saved position was gone from the source's history: the destination is being made
    /// equal to the source (a reconcile), after which the changes follow from a new position.
    Reconciling,
    /// Level with the source (at least once): every change applied as it comes.
    Live,
    /// Applying the last changes up to the commit's point in time.
    Committing,
    /// Every change up to the commit is applied; the job ends.
    Committed,
}

/// Changes applied, by kind of event.
#[derive(Serialize, Deserialize, ToSchema)]
struct EventCounts {
    insert: u64,
    update: u64,
    replace: u64,
    delete: u64,
    /// Schema changes: create, drop, rename, dropDatabase, createIndexes, dropIndexes, modify.
    ddl: u64,
}

/// Where a sync job stands, for the views.
#[derive(Serialize, Deserialize, ToSchema)]
struct SyncProgress {
    phase: SyncPhase,
    /// How long ago the source made the oldest change read and not yet applied (its wall time,
    /// else the second of its cluster time); 0 when nothing waits.
    lag_secs: f64,
    /// Level with the source right now.
    caught_up: bool,
    /// Change events applied (by this run), and by kind.
    events: u64,
    applied: EventCounts,
    events_per_sec: f64,
    /// The continuous verification (`null`: off).
    verification: Option<VerificationProgress>,
    can_commit: CanCommit,
    /// After the commit: writes the source took in the job's namespaces past the commit point
    /// (watched for `commit_watch_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writes_after_commit: Option<WritesAfterCommit>,
    /// The saved position was gone from the source's history (`on_history_lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history_lost: Option<HistoryLost>,
}

/// A sync whose saved position was gone from the source's history, and its recovery.
#[derive(Serialize, Deserialize, ToSchema)]
struct HistoryLost {
    /// When it was found (Unix seconds).
    at: f64,
    /// What the source said.
    reason: String,
    /// The reconcile that recovered from it is done (its counts are `progress.reconcile`).
    recovered: bool,
}

/// What a reconcile did, for the views and the summary.
#[derive(Serialize, Deserialize, ToSchema)]
struct ReconcileProgress {
    /// `_id`s compared (on either side), equal ones among them.
    compared: u64,
    equal: u64,
    /// Documents written (missing or different at the destination) and extras deleted, as
    /// acknowledged by the destination.
    written: u64,
    deleted: u64,
    /// What the comparison found: missing at the destination, different there, only there.
    missing: u64,
    different: u64,
    extra: u64,
    /// Of `equal`, the documents a digest of their range proved equal (not read).
    #[serde(default, skip_serializing_if = "is_zero")]
    digested: u64,
    /// Extras are deleted (`delete_extra`); otherwise kept and reported.
    delete_extra: bool,
    /// The first extras kept: `{"ns": …, "id": …}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    first_extra: Vec<serde_json::Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How far a sync's continuous verification is.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum VerificationPhase {
    /// Comparing every document once, in `_id` order, while changes are applied.
    Initial,
    /// Everything was compared once: comparing again what changes.
    Continuous,
    /// The commit compared what changed since the last proof.
    Committed,
}

/// How a document differed.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum MismatchKind {
    /// At the source, not at the destination.
    Missing,
    /// At the destination, not at the source.
    Extra,
    /// On both sides, not byte for byte the same.
    Different,
}

/// A document found different, and still different once the changes in flight were applied.
#[derive(Serialize, Deserialize, ToSchema)]
struct Mismatch {
    /// The namespace pair, `"src.coll -> dst.coll"`.
    ns: String,
    /// The `_id`, canonical Extended JSON.
    #[schema(value_type = Object)]
    id: serde_json::Value,
    kind: MismatchKind,
    /// Written again from the source.
    repaired: bool,
}

/// Where a sync's continuous verification stands, for the views.
#[derive(Serialize, Deserialize, ToSchema)]
struct VerificationProgress {
    phase: VerificationPhase,
    /// Mismatches are repaired from the source (else only reported).
    repairs: bool,
    /// Documents compared by the scan, every run of the job together.
    verified_docs: u64,
    /// Of those, compared by this run (a run that resumed compares only what was left).
    compared_this_run: u64,
    /// Namespace pairs the scan finished, of all.
    namespaces_verified: usize,
    namespaces: usize,
    mismatches: u64,
    repaired: u64,
    /// Mismatches neither repaired nor gone since (`report` only reports).
    unrepaired: u64,
    /// `_id`s to compare again: changed since they were compared, or found different.
    recheck_pending: u64,
    /// Source time (Unix seconds) up to which everything is proven equal.
    through: Option<f64>,
    /// The latest mismatches (at most ten), newest last.
    recent: Vec<Mismatch>,
    /// Set by the commit: the source time it proved equality at, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verified_through: Option<f64>,
    /// Set by the commit: the `_id`s it compared (those changed since the last proof).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rechecked_at_commit: Option<u64>,
    /// Set by a commit that did not prove equality: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unproven: Option<String>,
}

/// Writes the source took in the job's namespaces after the commit point: the application was
/// not fully stopped, and the destination does not have them.
#[derive(Serialize, Deserialize, ToSchema)]
struct WritesAfterCommit {
    count: u64,
    /// Source namespaces written.
    namespaces: Vec<String>,
    /// The first `_id`s written (canonical Extended JSON), at most 20.
    #[schema(value_type = Vec<Object>)]
    ids: Vec<serde_json::Value>,
}

/// Whether a sync is ready for its cutover, and if not why.
#[derive(Serialize, Deserialize, ToSchema)]
struct CanCommit {
    ok: bool,
    reasons: Vec<String>,
}

/// What a move job did, for the views.
#[derive(Serialize, Deserialize, ToSchema)]
struct MoveProgress {
    pass: u64,
    /// Documents found at the destination exactly as written.
    verified: u64,
    /// Documents deleted from the source: moved.
    deleted: u64,
    /// Documents kept at the source because they changed after their copy (copied again by
    /// a later pass).
    changed: u64,
    /// Documents deleted from the source by another client during the move.
    gone: u64,
    conflicts: u64,
    /// Documents of the selection still at the source after the last pass.
    left: u64,
    deletes_per_sec: f64,
    /// A rehearsal (`keep_source`): the source keeps every document, `verified` among them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rehearsal: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct DeadLetterView {
    ns: String,
    /// The `_id`, canonical Extended JSON.
    #[schema(value_type = Value)]
    id: serde_json::Value,
    reason: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct DeadLetterSummary {
    count: u64,
    recent: Vec<DeadLetterView>,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct NsSnapshot {
    // `db.collection`: the engine's `Namespace` serialises as its text.
    source: String,
    destination: String,
    expected: Option<u64>,
    /// Written by this run.
    docs: u64,
    /// Written by earlier runs (below the checkpoint the run resumed from).
    skipped: u64,
    /// Refused by the destination, kept as dead letters.
    failed: u64,
    /// A reconcile: found equal at the destination, so not written.
    #[serde(default, skip_serializing_if = "is_zero")]
    equal: u64,
    /// Of `docs`, the deletes (a sync's, a reconcile's extras).
    #[serde(default, skip_serializing_if = "is_zero")]
    deleted: u64,
    bytes: u64,
    finished: bool,
    docs_per_sec: f64,
    /// The namespace's `_id` ranges, when it is read in partitions (empty: read whole).
    partitions: Vec<PartSnapshot>,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct WorkerSnapshot {
    id: usize,
    state: WorkerState,
    docs: u64,
    batches: u64,
    mean_fetch_ms: f64,
    mean_write_ms: f64,
}

/// What a job did so far: its progress as the API shows it.
#[derive(Serialize, Deserialize, ToSchema)]
struct JobSnapshot {
    /// Written by this run.
    docs: u64,
    bytes: u64,
    /// Written by earlier runs (below the checkpoint this run continued from).
    skipped: u64,
    /// Refused by the destination (see `dead_letters`).
    failed: u64,
    /// Transient errors retried, and the latest of them.
    retries: u64,
    last_retry: Option<String>,
    expected: Option<u64>,
    /// Documents per second over the last few seconds.
    docs_per_sec: f64,
    /// Time left at that rate, when the total is known.
    eta_secs: Option<f64>,
    /// Seconds since the run started.
    seconds: f64,
    queue_depth: u64,
    namespaces: Vec<NsSnapshot>,
    workers: Vec<WorkerSnapshot>,
    /// Collections dropped and created, index builds (done, to do, refused), views.
    schema: SchemaProgress,
    /// A sync job's phase, lag and changes applied (`null` for a copy).
    sync: Option<SyncProgress>,
    /// A move job's documents verified, deleted from the source, kept there (`null` for a copy).
    moves: Option<MoveProgress>,
    /// A reconcile's documents compared, equal, written, deleted (absent for a copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconcile: Option<ReconcileProgress>,
}

/// What the operator asks of adaptive mode.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdaptiveConfig {
    /// Adaptive mode: the mean batch latency (read by `_id` plus write) to stay under, in
    /// milliseconds.
    target_ms: f64,
    /// Most workers adaptive mode may use [default: the job's worker count].
    #[serde(default)]
    max_workers: Option<usize>,
    /// Milliseconds between adaptive decisions [default: 1000].
    #[serde(default)]
    interval_ms: Option<u64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Action {
    Increase,
    Decrease,
    Hold,
}

/// One adaptive decision and why it was taken.
#[derive(Serialize, Deserialize, ToSchema)]
struct Decision {
    /// Seconds since the job started.
    at_secs: f64,
    action: Action,
    /// Mean latency (read by `_id` plus write) of the batches of the last interval.
    latency_ms: Option<f64>,
    docs_per_sec: f64,
    /// Workers and rate cap from now on (`None`: no adaptive cap).
    workers: usize,
    rate_cap: Option<f64>,
    reason: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
struct AdaptiveView {
    config: AdaptiveConfig,
    /// Most recent last.
    decisions: Vec<Decision>,
}

/// A change of the guard's decision, at its time.
#[derive(Serialize, Deserialize, ToSchema)]
struct GuardDecision {
    /// Unix seconds.
    at: f64,
    throttled: bool,
    reason: Option<String>,
}

/// The guard as the views show it.
#[derive(Serialize, Deserialize, ToSchema)]
struct GuardView {
    throttled: bool,
    /// Why it is held, or why a hold was overruled.
    reason: Option<String>,
    /// The last value of each signal read.
    signals: std::collections::BTreeMap<String, f64>,
    /// Signals that could not be read last time, and why.
    unread: Vec<String>,
    /// The changes of the decision, oldest first (at most 100).
    decisions: Vec<GuardDecision>,
    /// What the guard watches (`null`: nothing).
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
    /// A sync's commit waits while this (its flag file) exists.
    commit_postponed: Option<String>,
}

/// Limits as the operator sets them; `None` means unlimited.
#[derive(Serialize, Deserialize, ToSchema)]
struct Limits {
    /// Documents per second.
    rate: Option<f64>,
    /// Bytes per second.
    rate_bytes: Option<f64>,
}

/// How documents travel from the source to the workers.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Strategy {
    /// The producer streams sorted `_id` batches; workers fetch each batch with `$in`.
    Ids,
    /// The producer streams whole documents in `_id` order; workers only write.
    Stream,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};
    use utoipa::PartialSchema;

    use super::*;
    use crate::mongo::Namespace;

    /// Every variant of an engine enum: the `match` fails to compile when the engine gains one
    /// that the list (and so the test) leaves out.
    macro_rules! every {
        ($m:ident :: $t:ident { $($v:ident),* $(,)? }) => {{
            let _exhaustive = |v: $m::$t| match v {
                $($m::$t::$v)|* => (),
            };
            vec![$($m::$t::$v),*]
        }};
    }

    /// The JSON type names a schema's `type` allows a value of.
    fn json_type(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// The engine type `E` and its mirror `M` agree on `samples`: the same name; the mirror reads
    /// each sample's JSON and writes it back unchanged; each key of that JSON is a property of
    /// the schema, with a value of a type the schema allows, each required property is there,
    /// and the samples together have every property (an enum's values are the samples' values,
    /// all of them when the samples are every variant).
    fn agree<E, M>(samples: impl IntoIterator<Item = E>)
    where
        E: Serialize + ToSchema,
        M: Serialize + DeserializeOwned + ToSchema,
    {
        let name = E::name();
        assert_eq!(name, M::name());
        let schema = serde_json::to_value(<E as PartialSchema>::schema()).unwrap();
        // The keys the samples have, and the values (of an enum).
        let (mut keys, mut values) = (BTreeSet::new(), BTreeSet::new());
        for sample in samples {
            let json = serde_json::to_value(&sample).unwrap();
            let mirrored: M = serde_json::from_value(json.clone())
                .unwrap_or_else(|e| panic!("{name}: the mirror does not read {json}: {e}"));
            assert_eq!(serde_json::to_value(mirrored).unwrap(), json, "{name}");
            match &json {
                Value::Object(fields) => {
                    let properties = schema["properties"]
                        .as_object()
                        .unwrap_or_else(|| panic!("{name}: no properties in {schema}"));
                    for required in schema["required"].as_array().into_iter().flatten() {
                        let required = required.as_str().unwrap();
                        assert!(
                            fields.contains_key(required),
                            "{name}: no {required} in {json}"
                        );
                    }
                    for (key, value) in fields {
                        keys.insert(key.clone());
                        let Some(property) = properties.get(key) else {
                            panic!("{name}: {key} is not in the schema");
                        };
                        let allowed = match &property["type"] {
                            Value::String(one) => vec![one.as_str()],
                            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                            // A reference to another schema, or any value: checked elsewhere.
                            _ => continue,
                        };
                        let kind = json_type(value);
                        assert!(
                            allowed.contains(&kind)
                                || (kind == "integer" && allowed.contains(&"number")),
                            "{name}.{key}: {value} is not {allowed:?}"
                        );
                    }
                }
                Value::String(value) => {
                    values.insert(value.clone());
                }
                other => panic!("{name}: neither an object nor a string: {other}"),
            }
        }
        assert!(!keys.is_empty() || !values.is_empty(), "{name}: no sample");
        if !keys.is_empty() {
            let properties: BTreeSet<String> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(keys, properties, "{name}: the samples have every key");
        }
        if !values.is_empty() {
            let listed: BTreeSet<String> = schema["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            assert_eq!(values, listed, "{name}: the samples are every variant");
        }
    }

    #[test]
    fn each_schema_is_its_engine_types_json() {
        agree::<stats::PartState, PartState>(every!(stats::PartState {
            Waiting,
            Reading,
            Complete
        }));
        let part = stats::PartSnapshot {
            index: 2,
            done: 10,
            state: stats::PartState::Reading,
        };
        agree::<_, PartSnapshot>([part.clone()]);
        agree::<stats::WorkerState, WorkerState>(every!(stats::WorkerState {
            Idle,
            Busy,
            Paused,
            Stopped
        }));
        let index_error = stats::IndexError {
            namespace: "a.b".into(),
            index: "x_1".into(),
            reason: "too long".into(),
        };
        agree::<_, IndexError>([index_error.clone()]);
        agree::<_, SchemaProgress>([
            stats::SchemaProgress {
                step: Some("building indexes of a.b".into()),
                dropped: vec!["a.b".into()],
                created: vec!["a.c".into()],
                indexes_total: 3,
                indexes_built: 1,
                index_errors: vec![index_error],
                views: vec!["a.v".into()],
            },
            stats::SchemaProgress::default(),
        ]);
        agree::<stats::SyncPhase, SyncPhase>(every!(stats::SyncPhase {
            InitialCopy,
            CatchingUp,
            Reconciling,
            Live,
            Committing,
            Committed
        }));
        let applied = stats::EventCounts {
            insert: 1,
            update: 2,
            replace: 3,
            delete: 4,
            ddl: 5,
        };
        agree::<_, EventCounts>([applied]);
        let sync = stats::SyncProgress {
            phase: stats::SyncPhase::Live,
            lag_secs: 0.5,
            caught_up: true,
            events: 15,
            applied,
            events_per_sec: 2.5,
            verification: None,
            can_commit: stats::CanCommit {
                ok: true,
                reasons: vec![],
            },
            writes_after_commit: None,
            history_lost: None,
        };
        agree::<stats::VerificationPhase, VerificationPhase>(every!(stats::VerificationPhase {
            Initial,
            Continuous,
            Committed
        }));
        agree::<stats::MismatchKind, MismatchKind>(every!(stats::MismatchKind {
            Missing,
            Extra,
            Different
        }));
        let mismatch = stats::Mismatch {
            ns: "a.b -> c.d".into(),
            id: serde_json::json!({"$numberInt": "7"}),
            kind: stats::MismatchKind::Extra,
            repaired: true,
        };
        agree::<_, Mismatch>([mismatch.clone()]);
        let verification = stats::VerificationProgress {
            phase: stats::VerificationPhase::Committed,
            repairs: true,
            verified_docs: 10,
            compared_this_run: 4,
            namespaces_verified: 1,
            namespaces: 2,
            mismatches: 3,
            repaired: 2,
            unrepaired: 1,
            recheck_pending: 5,
            through: Some(1.5),
            recent: vec![mismatch],
            verified_through: Some(2.5),
            rechecked_at_commit: Some(6),
            unproven: Some("why".into()),
        };
        agree::<_, VerificationProgress>([verification.clone()]);
        let not_yet = stats::CanCommit {
            ok: false,
            reasons: vec!["the lag".into()],
        };
        agree::<_, CanCommit>([not_yet.clone()]);
        let writes = stats::WritesAfterCommit {
            count: 2,
            namespaces: vec!["a.b".into()],
            ids: vec![serde_json::json!("x")],
        };
        agree::<_, WritesAfterCommit>([writes.clone()]);
        let lost = stats::HistoryLost {
            at: 1.5,
            reason: "gone".into(),
            recovered: true,
        };
        agree::<_, HistoryLost>([lost.clone()]);
        let verifying = stats::SyncProgress {
            verification: Some(verification),
            can_commit: not_yet,
            writes_after_commit: Some(writes),
            history_lost: Some(lost),
            ..sync.clone()
        };
        agree::<_, SyncProgress>([sync.clone(), verifying]);
        let moves = |rehearsal| stats::MoveProgress {
            pass: 1,
            verified: 2,
            deleted: 3,
            changed: 4,
            gone: 5,
            conflicts: 6,
            left: 7,
            deletes_per_sec: 8.5,
            rehearsal,
        };
        agree::<_, MoveProgress>([moves(false), moves(true)]);
        let dead_letter = stats::DeadLetterView {
            ns: "a.b".into(),
            id: json!({"$oid": "65a1b2c3d4e5f60718293a4b"}),
            reason: "too large".into(),
        };
        agree::<_, DeadLetterView>([dead_letter.clone()]);
        agree::<_, DeadLetterSummary>([stats::DeadLetterSummary {
            count: 1,
            recent: vec![dead_letter],
        }]);
        let ns = |expected| stats::NsSnapshot {
            source: Namespace::new("a", "b"),
            destination: Namespace::new("c", "d"),
            expected,
            docs: 1,
            skipped: 2,
            failed: 3,
            equal: expected.unwrap_or(0),
            deleted: expected.unwrap_or(0),
            bytes: 4,
            finished: true,
            docs_per_sec: 5.5,
            partitions: vec![part.clone()],
        };
        agree::<_, NsSnapshot>([ns(Some(10)), ns(None)]);
        let reconciled = stats::ReconcileProgress {
            compared: 1,
            equal: 2,
            written: 3,
            deleted: 4,
            missing: 5,
            different: 6,
            extra: 7,
            digested: 8,
            delete_extra: true,
            first_extra: vec![json!({"ns": "a.b", "id": 1})],
        };
        agree::<_, ReconcileProgress>([reconciled.clone()]);
        let worker = stats::WorkerSnapshot {
            id: 0,
            state: stats::WorkerState::Busy,
            docs: 1,
            batches: 2,
            mean_fetch_ms: 3.5,
            mean_write_ms: 4.5,
        };
        agree::<_, WorkerSnapshot>([worker.clone()]);
        let live = stats::JobSnapshot {
            retries: 1,
            last_retry: Some("a reset connection".into()),
            queue_depth: 2,
            seconds: 3.5,
            namespaces: vec![ns(Some(10))],
            workers: vec![worker],
            sync: Some(sync),
            moves: Some(moves(false)),
            reconcile: Some(reconciled.clone()),
            ..stats::JobSnapshot::final_counts(1, 2, 3, 4)
        }
        .at_rate(2.5);
        agree::<_, JobSnapshot>([live, stats::JobSnapshot::final_counts(1, 2, 3, 4)]);
        let config = adaptive::AdaptiveConfig {
            target_ms: 250.0,
            max_workers: Some(8),
            interval_ms: Some(500),
        };
        agree::<_, AdaptiveConfig>([
            config,
            adaptive::AdaptiveConfig {
                max_workers: None,
                interval_ms: None,
                ..config
            },
        ]);
        agree::<adaptive::Action, Action>(every!(adaptive::Action {
            Increase,
            Decrease,
            Hold
        }));
        let decision = adaptive::Decision {
            at_secs: 1.5,
            action: adaptive::Action::Decrease,
            latency_ms: Some(300.5),
            docs_per_sec: 1000.5,
            workers: 2,
            rate_cap: Some(700.5),
            reason: "over the target".into(),
        };
        agree::<_, Decision>([decision.clone()]);
        agree::<_, AdaptiveView>([adaptive::AdaptiveView {
            config,
            decisions: vec![decision],
        }]);
        let decision = guard::GuardDecision {
            at: 1.5,
            throttled: true,
            reason: Some("flag file /f exists".into()),
        };
        agree::<_, GuardDecision>([decision.clone()]);
        agree::<_, GuardView>([guard::GuardView {
            throttled: true,
            reason: Some("flag file /f exists".into()),
            signals: [("destination_lag_ms".to_string(), 1.5)].into(),
            unread: vec!["source serverStatus: down".into()],
            decisions: vec![decision],
            settings: Some(serde_json::json!({ "max_lag_ms": 1000.5 })),
            commit_postponed: Some("commit postponed".into()),
        }]);
        agree::<_, Limits>([
            throttle::Limits {
                rate: Some(10.5),
                rate_bytes: Some(1000.5),
            },
            throttle::Limits::default(),
        ]);
        let strategies = {
            use source::seam;
            every!(seam::Strategy { Ids, Stream })
        };
        agree::<source::seam::Strategy, Strategy>(strategies);
    }
}
