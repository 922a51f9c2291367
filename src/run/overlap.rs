//! The rule that keeps a job from destroying data that exists nowhere else.
//!
//! In: a job's spec, what its mappings selected on the source, and the clients of its source,
//! destination and (when it is a MongoDB database) state store. Out: `Ok`, or
//! [`CopyError::Unsafe`] naming every namespace at fault and why. Nothing is written.
//!
//! A job writes (and with `--drop` drops) its destination namespaces, and a move deletes its
//! source namespaces. It is refused when:
//! - two source namespaces would be written into one destination namespace (after `*` and
//!   `db.*` expansion), or one source namespace is selected by two mappings;
//! - on one deployment ([`Deployment::may_share_data`]: the servers' own identity, never the
//!   URIs' host names), a namespace the job writes is one it reads: a copy onto itself, a swap
//!   (`a:b` with `b:a`), a chain (`a:b` with `b:c`). Wildcards are compared as patterns, so a
//!   collection created later (which a sync follows) cannot slip in either;
//! - it writes into the database that keeps its own state (checkpoints, claims, the service's
//!   history), when that database is on the destination's deployment.
//!
//! Renaming within one deployment (`a.x:archive.x`) stays allowed. The check runs in `plan`, when
//! the service accepts a job, and again when each run starts, since a wildcard can expand
//! differently later.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::{Client, Database};

use super::schema::{self, Selection};
use crate::engine::CopyError;
use crate::mongo::identity::{identify, Deployment};
use crate::mongo::{self, Namespace, Side};
use crate::spec::{CopySpec, Exclude, NsMapping};

/// What the servers said about where the job reads, writes and keeps its state.
#[derive(Debug, Clone, Default)]
pub struct Deployments {
    /// The source and the destination may be one deployment.
    pub same: bool,
    /// The state database's name, when it is on the destination's deployment.
    pub state_db: Option<String>,
}

impl Deployments {
    /// Asks each side who it is.
    pub async fn identify(
        source: &Client,
        destination: &Client,
        state: Option<&Database>,
    ) -> Result<Deployments, CopyError> {
        let (src, dst) = tokio::try_join!(
            identify(source, Side::Source),
            identify(destination, Side::Destination)
        )?;
        let state_db = match state {
            None => None,
            Some(db) => {
                let there: Deployment = identify(db.client(), Side::State).await?;
                there.may_share_data(&dst).then(|| db.name().to_string())
            }
        };
        Ok(Deployments {
            same: src.may_share_data(&dst),
            state_db,
        })
    }
}

/// Refuses a job that would destroy data (see the module doc).
pub async fn check(
    spec: &CopySpec,
    selection: &Selection,
    source: &Client,
    destination: &Client,
    state: Option<&Database>,
) -> Result<(), CopyError> {
    let deployments = Deployments::identify(source, destination, state).await?;
    let problems = problems(spec, selection, &deployments);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CopyError::Unsafe(problems))
    }
}

/// The check made when a job is submitted, before it is accepted: one connection to each side,
/// each given at most `timeout`. Only a refusal is returned: a server that does not answer, or
/// a namespace that is not there, is for the job's run to report (it checks again anyway).
pub async fn probe(
    spec: &CopySpec,
    state: Option<&Database>,
    timeout: Duration,
) -> Result<(), CopyError> {
    let Ok((source, destination)) = mongo::connect_both(&spec.from, &spec.to, 1, timeout).await
    else {
        return Ok(());
    };
    let checked = async {
        let selection = schema::select(&source, &spec.namespaces, &spec.exclude).await?;
        check(spec, &selection, &source, &destination, state).await
    }
    .await;
    mongo::close(source).await;
    mongo::close(destination).await;
    match checked {
        Err(CopyError::Unsafe(problems)) => Err(CopyError::Unsafe(problems)),
        _ => Ok(()),
    }
}

/// Every reason to refuse the job, each naming the namespaces at fault.
pub fn problems(spec: &CopySpec, selection: &Selection, deployments: &Deployments) -> Vec<String> {
    let mut problems = Vec::new();
    let mappings = &spec.namespaces;
    // What each source namespace was selected by, and what each destination is written from.
    let mut selected_by: BTreeMap<&Namespace, Vec<String>> = BTreeMap::new();
    let mut written_from: BTreeMap<&Namespace, Vec<&Namespace>> = BTreeMap::new();
    for selected in selection.all() {
        written_from
            .entry(&selected.destination)
            .or_default()
            .push(&selected.source);
        selected_by.entry(&selected.source).or_insert_with(|| {
            mappings
                .iter()
                .filter(|m| m.destination(&selected.source).is_some())
                .map(|m| format!("`{m}`"))
                .collect()
        });
    }
    for (source, by) in &selected_by {
        if by.len() > 1 {
            problems.push(format!(
                "namespaces: {source} is selected by {}: each source namespace may be copied by \
                 one mapping only",
                by.join(" and ")
            ));
        }
    }
    for (destination, sources) in &written_from {
        if sources.len() > 1 {
            let names: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            problems.push(format!(
                "namespaces: {} would all be written into {destination}: the documents of one \
                 would overwrite or mix with the other's",
                names.join(" and ")
            ));
        }
    }
    if deployments.same {
        for (i, writer) in mappings.iter().enumerate() {
            for reader in &mappings[i..] {
                for (w, r) in [(writer, reader), (reader, writer)] {
                    if let Some(overlap) = writes_into_read(w, r, &spec.exclude) {
                        let problem = if w == r {
                            format!(
                                "namespaces: `{w}` would copy onto itself: the source and the \
                                 destination are one deployment (whatever their URIs say), so \
                                 {overlap} is both read and written"
                            )
                        } else {
                            format!(
                                "namespaces: `{w}` writes into {overlap}, which `{r}` reads: the \
                                 source and the destination are one deployment (whatever their \
                                 URIs say), so the job would overwrite{} documents that exist \
                                 nowhere else",
                                if spec.mode == crate::spec::Mode::Move {
                                    " and then delete"
                                } else {
                                    ""
                                }
                            )
                        };
                        if !problems.contains(&problem) {
                            problems.push(problem);
                        }
                    }
                }
            }
        }
    }
    if let Some(state_db) = &deployments.state_db {
        let into_state: Vec<String> = mappings
            .iter()
            .filter(|m| match m {
                NsMapping::Collection { dst, .. } => dst.db == *state_db,
                NsMapping::Database { dst_db, .. } => dst_db == state_db,
                NsMapping::Everything => selection.all().any(|s| s.destination.db == *state_db),
            })
            .map(|m| format!("`{m}`"))
            .collect();
        if !into_state.is_empty() {
            problems.push(format!(
                "namespaces: {} would write into database {state_db}, which keeps this job's \
                 state (checkpoints, claims, the service's jobs) on the same deployment",
                into_state.join(" and ")
            ));
        }
    }
    problems
}

/// What `writer` may write that `reader` reads, as patterns (on one deployment): a namespace,
/// or `db.*` for a whole database; `None` when they cannot meet.
fn writes_into_read(writer: &NsMapping, reader: &NsMapping, exclude: &[Exclude]) -> Option<String> {
    let excluded = |ns: &Namespace| exclude.iter().any(|e| e.matches(ns));
    match (writer, reader) {
        (NsMapping::Everything, _) | (_, NsMapping::Everything) => Some("every database".into()),
        (NsMapping::Collection { dst, .. }, NsMapping::Collection { src, .. }) => {
            (dst == src && !excluded(src)).then(|| dst.to_string())
        }
        (NsMapping::Collection { dst, .. }, NsMapping::Database { src_db, .. }) => {
            (dst.db == *src_db && !excluded(dst)).then(|| dst.to_string())
        }
        (NsMapping::Database { src_db, dst_db }, NsMapping::Collection { src, .. }) => {
            // Only a collection of that name in the writer's source database would land there.
            (*dst_db == src.db && !excluded(&Namespace::new(src_db, &src.coll)))
                .then(|| src.to_string())
        }
        (NsMapping::Database { dst_db, .. }, NsMapping::Database { src_db, .. }) => {
            (dst_db == src_db).then(|| format!("{dst_db}.*"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongo::schema::{Kind, Schema};
    use crate::run::schema::Selected;
    use crate::spec::{JobSpec, Mode};

    /// The spec of `namespaces`, and a selection of `collections` of the source as the spec
    /// expands them (what `schema::select` would find).
    fn job(namespaces: &[&str], collections: &[&str], mode: Mode) -> (CopySpec, Selection) {
        let mut spec = JobSpec::new("mongodb://a", "mongodb://b", namespaces);
        spec.mode = Some(mode);
        let spec = spec.validate().expect("valid");
        let mut selection = Selection::default();
        for mapping in &spec.namespaces {
            for name in collections {
                let (db, coll) = name.split_once('.').expect("db.coll");
                let ns = Namespace::new(db, coll);
                if let Some(dst) = mapping.destination(&ns) {
                    selection.collections.push(Selected {
                        source: ns,
                        destination: dst,
                        schema: Schema {
                            kind: Kind::Collection,
                            options: Default::default(),
                            indexes: vec![],
                        },
                    });
                }
            }
        }
        (spec, selection)
    }

    fn refused(namespaces: &[&str], collections: &[&str], same: bool) -> Vec<String> {
        let (spec, selection) = job(namespaces, collections, Mode::Move);
        let deployments = Deployments {
            same,
            state_db: None,
        };
        problems(&spec, &selection, &deployments)
    }

    #[test]
    fn one_deployment_refuses_self_swaps_and_chains() {
        let cases: [(&[&str], &[&str]); 6] = [
            (&["a.x"], &["a.x"]),
            (&["a.s1:a.s2", "a.s2:a.s1"], &["a.s1", "a.s2"]),
            (&["a.a:a.b", "a.b:a.c"], &["a.a", "a.b"]),
            (&["p.*:q", "q.*:r"], &["p.x", "q.y"]),
            // A collection created later in p would be written into q.x while q.x is read.
            (&["p.*:q", "q.x:r.x"], &["q.x"]),
            (&["*"], &["a.x"]),
        ];
        for (namespaces, collections) in cases {
            let problems = refused(namespaces, collections, true);
            assert!(!problems.is_empty(), "{namespaces:?} was accepted");
            assert!(
                problems[0].contains("one deployment"),
                "{namespaces:?}: {problems:?}"
            );
            // Across deployments, the same mappings are fine.
            assert_eq!(
                refused(namespaces, collections, false),
                Vec::<String>::new()
            );
        }
    }

    #[test]
    fn renames_within_one_deployment_stay_allowed() {
        for (namespaces, collections) in [
            (&["a.x:archive.x"][..], &["a.x"][..]),
            (&["a.*:archive", "b.y:c.y"], &["a.x", "b.y"]),
        ] {
            assert_eq!(refused(namespaces, collections, true), Vec::<String>::new());
        }
    }

    #[test]
    fn two_sources_into_one_destination_are_refused_anywhere() {
        let problems = refused(&["p.*:q", "p.y:q.x"], &["p.x", "p.y"], false);
        let text = problems.join("; ");
        assert!(
            text.contains("p.x and p.y would all be written into q.x"),
            "{text}"
        );
        assert!(
            text.contains("p.y is selected by `p.*:q.*` and `p.y:q.x`"),
            "{text}"
        );
    }

    #[test]
    fn the_state_database_is_never_written() {
        let (spec, selection) = job(&["db.c:ferry.c"], &["db.c"], Mode::Copy);
        let deployments = Deployments {
            same: false,
            state_db: Some("ferry".into()),
        };
        let problems = problems(&spec, &selection, &deployments);
        assert!(
            problems[0].contains("keeps this job's state"),
            "{problems:?}"
        );
    }
}
