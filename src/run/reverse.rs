//! Fail back: a sync from a committed sync's destination back to its source.
//!
//! In: a committed sync's checkpoint, whose [`ReverseFrom`] the sync recorded at its commit
//! ([`super::sync::reverse_point`]: where the destination's change history stood once the last
//! change was applied, and the job's mappings), and the state store. Out: the reverse job's spec
//! (source and destination swapped, each mapping turned around, [`reverse_spec`]) and its
//! checkpoint seeded under its own key ([`seed`]): every namespace complete, since the two sides
//! were equal at the commit point, and its sync position at that point. Its run is then an ordinary sync that
//! resumes: no initial copy, every change made at the destination since the commit applied to the
//! source, until it is committed in turn.
//!
//! Refused, with the reason ([`ReverseError`]), where the job cannot be turned around:
//! - not a sync, not committed, or committed without a reverse point (the destination's position
//!   could not be read at the commit, or an older version committed it);
//! - a filter: the destination holds only the documents it selected;
//! - a transform: the destination holds transformed documents, not the source's;
//! - documents the destination refused (dead letters): the sides were not equal at the commit;
//! - mappings that do not map back one to one: `*` with any other mapping, or a `db.*` mapping
//!   with another mapping of the same database on either side;
//! - excludes with a rename: an exclude names source namespaces, and under a rename the
//!   destination's names differ. Excludes are kept as they are when every mapping keeps its
//!   names (they then name the same namespaces on both sides).

use std::sync::Arc;

use super::schema;
use crate::engine::CopyError;
use crate::mongo::{self, Side};
use crate::spec::{CopySpec, Endpoints, JobSpec, Mode, NsMapping, SpecError};
use crate::state::{
    unix_now, Checkpoint, JobKey, NsCheckpoint, ReverseFrom, ScanCheckpoint, StateError,
    StateStore, SyncCheckpoint, VerificationCheckpoint,
};

/// Why a job cannot be reversed (`job` names it: its id in the service, its key on the command
/// line).
#[derive(Debug, thiserror::Error)]
pub enum ReverseError {
    #[error(
        "no job {key} in the state store {location}: give the job_key that the forward sync's \
         summary printed, with the same --state"
    )]
    UnknownJob { key: JobKey, location: String },
    #[error("{job} is not a sync: only a committed sync can be reversed")]
    NotSync { job: String },
    #[error("{job} is not committed: only a committed sync can be reversed (commit it first)")]
    NotCommitted { job: String },
    #[error(
        "{job} was committed without a reverse point (where the destination's history stood at \
         the commit), so it cannot be reversed from there"
    )]
    NoReversePoint { job: String },
    #[error(
        "{job} has a filter: the destination holds only the documents it selected, so a filtered \
         sync cannot be reversed"
    )]
    Filtered { job: String },
    #[error(
        "{job} has a transform: the destination holds what the transform made of the source's \
         documents, and writing them back would overwrite the originals, so a transformed sync \
         cannot be reversed"
    )]
    Transformed { job: String },
    #[error(
        "{job} has {count} document(s) the destination refused (dead letters): the two sides \
         were not equal at the commit, so it cannot be reversed"
    )]
    DeadLetters { job: String, count: u64 },
    /// The reverse from this commit point ran and was committed: starting it again would
    /// replay the old destination's changes onto a source that has moved on since.
    #[error(
        "the reverse of this commit ({key}) ran and was committed: the source has moved on since, \
         so it is not started again from the commit point (to go back once more, reverse that \
         reverse job)"
    )]
    AlreadyReversed { key: JobKey },
    #[error("{job}: its namespaces cannot be mapped back: {reason}")]
    NotInvertible { job: String, reason: String },
    /// The reverse job's spec is refused (e.g. it would write into a server's own database).
    #[error("the reverse job is {0}")]
    Invalid(SpecError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The databases a mapping reads from and writes to (`None`: every database).
fn databases(mapping: &NsMapping) -> (Option<&str>, Option<&str>) {
    match mapping {
        NsMapping::Collection { src, dst } => (Some(&src.db), Some(&dst.db)),
        NsMapping::Database { src_db, dst_db } => (Some(src_db), Some(dst_db)),
        NsMapping::Everything => (None, None),
    }
}

/// The reverse's `--ns` and `--exclude`: each mapping turned around, the excludes kept; or why
/// the names do not map back one to one.
pub fn invert(from: &ReverseFrom) -> Result<(Vec<String>, Vec<String>), String> {
    let mut mappings = Vec::new();
    for text in &from.namespaces {
        mappings.push(text.parse::<NsMapping>()?);
    }
    let whole_db = |m: &NsMapping| !matches!(m, NsMapping::Collection { .. });
    for (i, a) in mappings.iter().enumerate() {
        for b in &mappings[i + 1..] {
            if !whole_db(a) && !whole_db(b) {
                continue;
            }
            let ((a_src, a_dst), (b_src, b_dst)) = (databases(a), databases(b));
            let overlap = |x: Option<&str>, y: Option<&str>| x.is_none() || y.is_none() || x == y;
            if overlap(a_src, b_src) || overlap(a_dst, b_dst) {
                return Err(format!(
                    "`{a}` and `{b}` share a database, so which one wrote a namespace is not \
                     known from its name"
                ));
            }
        }
    }
    let renames = mappings.iter().any(|m| match m {
        NsMapping::Collection { src, dst } => src != dst,
        NsMapping::Database { src_db, dst_db } => src_db != dst_db,
        NsMapping::Everything => false,
    });
    if renames && !from.exclude.is_empty() {
        return Err(
            "excludes with a rename: an exclude names source namespaces, and the destination's \
             names differ"
                .into(),
        );
    }
    Ok((
        mappings.iter().map(|m| m.turned().to_string()).collect(),
        from.exclude.clone(),
    ))
}

/// The reverse point of the job whose checkpoint is `checkpoint` (`job` names it in errors),
/// once it is found reversible.
pub fn reversible(job: &str, checkpoint: &Checkpoint) -> Result<ReverseFrom, ReverseError> {
    let job = job.to_string();
    let Some(sync) = &checkpoint.sync else {
        return Err(ReverseError::NotSync { job });
    };
    if !sync.committed {
        return Err(ReverseError::NotCommitted { job });
    }
    let Some(from) = &sync.reverse_from else {
        return Err(ReverseError::NoReversePoint { job });
    };
    if from.filtered {
        return Err(ReverseError::Filtered { job });
    }
    if from.transformed {
        return Err(ReverseError::Transformed { job });
    }
    let count: u64 = checkpoint.namespaces.values().map(|n| n.failed).sum();
    if count > 0 {
        return Err(ReverseError::DeadLetters { job, count });
    }
    invert(from).map_err(|reason| ReverseError::NotInvertible {
        job: job.clone(),
        reason,
    })?;
    Ok(from.clone())
}

/// Makes `spec` the reverse of the job reversed at `from`: its namespaces and excludes turned
/// around, a sync, with nothing of a first run (no filter, drop, restart, journal or writes
/// blocked). Its URIs are `spec`'s own: the forward job's destination as `from`.
pub fn reverse_spec(mut spec: JobSpec, from: &ReverseFrom) -> Result<JobSpec, ReverseError> {
    let (namespaces, exclude) = invert(from).map_err(|reason| ReverseError::NotInvertible {
        job: "the job".into(),
        reason,
    })?;
    spec.endpoints.namespaces = namespaces;
    spec.endpoints.exclude = exclude;
    spec.endpoints.filter = None;
    spec.mode = Some(Mode::Sync);
    spec.drop = false;
    spec.restart = false;
    spec.journal = None;
    spec.block_writes = None;
    spec.keep_source = false;
    Ok(spec)
}

/// The reverse of the service's job `forward` (its spec as submitted, with its credentials):
/// the same servers swapped, its workers, batch size, rates and timeout.
pub fn reverse_of_spec(forward: &JobSpec, from: &ReverseFrom) -> Result<JobSpec, ReverseError> {
    let spec = JobSpec {
        endpoints: Endpoints {
            from: forward.endpoints.to.clone(),
            to: forward.endpoints.from.clone(),
            connect_timeout_secs: forward.endpoints.connect_timeout_secs,
            ..Endpoints::default()
        },
        workers: forward.workers,
        batch_size: forward.batch_size,
        memory_limit: forward.memory_limit,
        rate: forward.rate,
        rate_bytes: forward.rate_bytes,
        verify: forward.verify,
        ..JobSpec::default()
    };
    reverse_spec(spec, from)
}

/// Seeds the reverse job `spec`'s checkpoint in `store`: every namespace it selects at its
/// source complete, and its sync position at `from`. A reverse already seeded from the same
/// point, not committed, is kept as it is (its run continues; `false`); one from the same point
/// that was committed is refused ([`ReverseError::AlreadyReversed`]); `true` when seeded here.
pub async fn seed(
    store: &Arc<dyn StateStore>,
    spec: &CopySpec,
    from: &ReverseFrom,
) -> Result<bool, ReverseError> {
    let (key, description) = spec.job_key();
    // Held while seeding: a run of the reverse that holds it makes this fail (JobBusy).
    let _claim = store.claim(&key).await?;
    let found = store.load(&key).await?;
    match found.as_ref().and_then(|c| c.sync.as_ref()) {
        Some(sync) if sync.start == from.start && sync.committed => {
            return Err(ReverseError::AlreadyReversed { key });
        }
        Some(sync) if sync.start == from.start => return Ok(false),
        // None yet, or an earlier job under this key (the forward job of a commit before, when
        // this reverse fails forward again): seeded afresh.
        _ => {}
    }
    let source = mongo::connect(Side::Source, &spec.from, 2, spec.connect_timeout)
        .await
        .map_err(CopyError::from)?;
    let selected = schema::select(&source, &spec.namespaces, &spec.exclude).await;
    mongo::close(source).await;
    let pairs: Vec<String> = selected?
        .pairs()
        .into_iter()
        .map(|(src, dst)| format!("{src} -> {dst}"))
        .collect();
    let namespaces = pairs
        .iter()
        .map(|pair| {
            let done = NsCheckpoint {
                complete: true,
                ..NsCheckpoint::default()
            };
            (pair.clone(), done)
        })
        .collect();
    // Proven equal at the commit point: the reverse's verification starts there, comparing
    // only what changes from then on.
    let verification = from.proven.then(|| VerificationCheckpoint {
        namespaces: pairs
            .iter()
            .map(|pair| {
                let scanned = ScanCheckpoint {
                    after: None,
                    complete: true,
                };
                (pair.clone(), scanned)
            })
            .collect(),
        through: Some(f64::from(from.secs)),
        ..VerificationCheckpoint::default()
    });
    let checkpoint = Checkpoint {
        description,
        updated_at: unix_now(),
        complete: false,
        namespaces,
        sync: Some(SyncCheckpoint {
            start: from.start.clone(),
            applied: None,
            applied_secs: from.secs,
            events: 0,
            committed: false,
            reverse_from: None,
            verification,
            reconciling: false,
        }),
        shared: None,
        recheck: Vec::new(),
    };
    store.save(&key, &checkpoint).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(namespaces: &[&str], exclude: &[&str]) -> ReverseFrom {
        ReverseFrom {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..ReverseFrom::default()
        }
    }

    #[test]
    fn mappings_turn_around() {
        let (ns, ex) = invert(&from(&["a.b:c.d", "e.*:f", "g.h"], &[])).unwrap();
        assert_eq!(ns, ["c.d:a.b", "f.*:e.*", "g.h"]);
        assert!(ex.is_empty());
        let (ns, ex) = invert(&from(&["*"], &["x.*", "*.tmp"])).unwrap();
        assert_eq!(
            (ns, ex),
            (vec!["*".to_string()], vec!["x.*".into(), "*.tmp".into()])
        );
        let (ns, _) = invert(&from(&["a.*", "b.c"], &["a.tmp"])).unwrap();
        assert_eq!(ns, ["a.*", "b.c"]);
    }

    #[test]
    fn what_does_not_map_back_is_refused() {
        for (namespaces, exclude) in [
            (&["*", "a.b"][..], &[][..]),
            (&["a.*:b", "a.c:x.y"], &[]),
            (&["a.*:b", "x.y:b.c"], &[]),
            (&["a.b:c.d"], &["a.e"]),
            (&["a.*:b"], &["a.tmp"]),
        ] {
            assert!(
                invert(&from(namespaces, exclude)).is_err(),
                "{namespaces:?} {exclude:?}"
            );
        }
    }

    #[test]
    fn only_a_committed_sync_without_filter_transform_or_dead_letters_is_reversible() {
        let mut cp = Checkpoint::default();
        assert!(matches!(
            reversible("j", &cp),
            Err(ReverseError::NotSync { .. })
        ));
        cp.sync = Some(SyncCheckpoint::default());
        assert!(matches!(
            reversible("j", &cp),
            Err(ReverseError::NotCommitted { .. })
        ));
        cp.sync.as_mut().unwrap().committed = true;
        assert!(matches!(
            reversible("j", &cp),
            Err(ReverseError::NoReversePoint { .. })
        ));
        cp.sync.as_mut().unwrap().reverse_from = Some(ReverseFrom {
            filtered: true,
            ..from(&["a.b"], &[])
        });
        assert!(matches!(
            reversible("j", &cp),
            Err(ReverseError::Filtered { .. })
        ));
        cp.sync.as_mut().unwrap().reverse_from = Some(ReverseFrom {
            transformed: true,
            ..from(&["a.b"], &[])
        });
        let refused = reversible("j", &cp).unwrap_err();
        assert!(
            matches!(refused, ReverseError::Transformed { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("overwrite the originals"));
        cp.sync.as_mut().unwrap().reverse_from = Some(from(&["a.b"], &[]));
        cp.namespaces.insert(
            "a.b -> a.b".into(),
            NsCheckpoint {
                failed: 2,
                ..NsCheckpoint::default()
            },
        );
        let refused = reversible("j", &cp).unwrap_err();
        assert!(
            matches!(refused, ReverseError::DeadLetters { count: 2, .. }),
            "{refused}"
        );
        cp.namespaces.clear();
        assert!(reversible("j", &cp).is_ok());
    }
}
