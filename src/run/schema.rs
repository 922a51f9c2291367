//! The schema part of a job: what it selects on the source, what the destination already holds
//! of it, and making the destination like the source.
//!
//! In: the job's namespace mappings and excludes, and both clusters. Out: a [`Selection`] — the
//! collections to copy and the views to recreate, each with the source's [`Schema`] and its
//! destination name — and, when the job runs: destination namespaces dropped (`--drop`),
//! collections created with the source's options before any document, the source's indexes
//! built before or after the documents (one at a time; a refused index is noted and the others
//! are built), and the views created last, once their sources exist. What it did is in the job's
//! [`SchemaLog`].
//!
//! Validators: a collection is created with its validator, and the copy writes into it past the
//! validator (`bypassDocumentValidation`), because the documents are the source's, which its own
//! validator already let in (or predate it); applying the validator after the data instead would
//! leave the destination without one while a sync follows the source, and cost a `collMod`.

use std::collections::BTreeSet;

use mongodb::bson::Document;
use mongodb::Client;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::stats::{IndexError, SchemaLog};
use crate::engine::{Control, CopyError};
use crate::mongo::schema::{self, describe_index, index_name, Kind, Schema, MODIFIABLE_OPTIONS};
use crate::mongo::{MongoError, Namespace, Side};
use crate::spec::{Exclude, NsMapping};

/// One source namespace a job selected, and where it goes.
#[derive(Debug, Clone)]
pub struct Selected {
    pub source: Namespace,
    pub destination: Namespace,
    /// The source's schema; for a view, its `viewOn` already names the destination's collection.
    pub schema: Schema,
}

/// Everything a job selected on the source.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Collections (time-series ones included), whose documents are copied.
    pub collections: Vec<Selected>,
    /// Views, created after the collections.
    pub views: Vec<Selected>,
}

impl Selection {
    /// (source, destination) of each collection, in order.
    pub fn pairs(&self) -> Vec<(Namespace, Namespace)> {
        self.collections
            .iter()
            .map(|s| (s.source.clone(), s.destination.clone()))
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Selected> {
        self.collections.iter().chain(&self.views)
    }

    /// Destination namespaces whose collection validates documents (written past it).
    pub fn validated(&self) -> BTreeSet<Namespace> {
        self.collections
            .iter()
            .filter(|s| s.schema.has_validator())
            .map(|s| s.destination.clone())
            .collect()
    }

    /// Source namespaces that are time-series collections (read without an `_id` index hint).
    pub fn time_series(&self) -> BTreeSet<Namespace> {
        self.collections
            .iter()
            .filter(|s| s.schema.kind == Kind::Timeseries)
            .map(|s| s.source.clone())
            .collect()
    }
}

/// "; did you mean db.coll?" naming the source's closest namespace to a missing `ns`: a
/// collection of its database, or, when that database holds none, the same collection in the
/// closest database. Empty when nothing is close (or the source cannot say).
async fn did_you_mean(source: &Client, ns: &Namespace) -> String {
    let collections = schema::read_database(source, Side::Source, &ns.db)
        .await
        .unwrap_or_default();
    let closest = if collections.is_empty() {
        let databases = schema::databases(source, Side::Source)
            .await
            .unwrap_or_default();
        closest(&ns.db, databases.iter().map(String::as_str)).map(|db| Namespace::new(db, &ns.coll))
    } else {
        closest(&ns.coll, collections.iter().map(|(name, _)| name.as_str()))
            .map(|coll| Namespace::new(&ns.db, coll))
    };
    closest.map_or(String::new(), |ns| format!("; did you mean {ns}?"))
}

/// The candidate nearest to `name` by edit distance, if it is near enough to be a typo: at
/// most a third of the name's characters (and at least one) differ.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let most = (name.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// Resolves the job's mappings on the source: which collections and views, with their schemas.
pub async fn select(
    source: &Client,
    mappings: &[NsMapping],
    exclude: &[Exclude],
) -> Result<Selection, CopyError> {
    let mut found: Vec<(Namespace, Namespace, Schema)> = Vec::new();
    for mapping in mappings {
        match mapping {
            NsMapping::Collection { src, dst } => {
                let Some(schema) = schema::read(source, Side::Source, src).await? else {
                    return Err(MongoError::NamespaceNotFound {
                        side: Side::Source,
                        ns: src.clone(),
                        hint: did_you_mean(source, src).await,
                    }
                    .into());
                };
                found.push((src.clone(), dst.clone(), schema));
            }
            NsMapping::Database { src_db, dst_db } => {
                let all = schema::read_database(source, Side::Source, src_db).await?;
                if all.is_empty() {
                    return Err(MongoError::EmptyDatabase {
                        side: Side::Source,
                        db: src_db.clone(),
                    }
                    .into());
                }
                found.extend(all.into_iter().map(|(name, schema)| {
                    (
                        Namespace::new(src_db, &name),
                        Namespace::new(dst_db, name),
                        schema,
                    )
                }));
            }
            NsMapping::Everything => {
                for db in schema::databases(source, Side::Source).await? {
                    let all = schema::read_database(source, Side::Source, &db).await?;
                    found.extend(all.into_iter().map(|(name, schema)| {
                        (
                            Namespace::new(&db, &name),
                            Namespace::new(&db, name),
                            schema,
                        )
                    }));
                }
            }
        }
    }
    found.retain(|(src, _, _)| !exclude.iter().any(|e| e.matches(src)));
    if found.is_empty() {
        return Err(CopyError::Schema(
            "nothing to copy: no namespace is left once the excludes are applied".into(),
        ));
    }
    // A view's source is renamed as the job renames it (a view names a collection of its own
    // database); one the job does not select keeps its name.
    let renamed = |db: &Namespace, on: &str| -> String {
        let target = Namespace::new(&db.db, on);
        found
            .iter()
            .find(|(src, _, _)| *src == target)
            .map(|(_, dst, _)| dst.coll.clone())
            .unwrap_or_else(|| on.to_string())
    };
    let mut selection = Selection::default();
    for (src, dst, schema) in &found {
        let selected = Selected {
            source: src.clone(),
            destination: dst.clone(),
            schema: match schema.kind {
                Kind::View => schema.with_view_on(|on| renamed(src, on)),
                _ => schema.clone(),
            },
        };
        match schema.kind {
            Kind::View => selection.views.push(selected),
            _ => selection.collections.push(selected),
        }
    }
    Ok(selection)
}

/// Why a move could not delete what it copies, one line per collection: a capped collection's
/// documents cannot be deleted, so a move would copy them and then fail at its first delete.
pub fn unmovable(selection: &Selection) -> Vec<String> {
    selection
        .collections
        .iter()
        .filter(|s| s.schema.options.get_bool("capped") == Ok(true))
        .map(|s| {
            format!(
                "{} is a capped collection, whose documents cannot be deleted: a move would copy \
                 them and fail at its first delete (copy it instead, or rehearse with \
                 --keep-source)",
                s.source
            )
        })
        .collect()
}

/// The source namespaces of views whose own source the job does not copy.
pub fn orphan_views(selection: &Selection) -> Vec<String> {
    let copied: BTreeSet<&Namespace> = selection.all().map(|s| &s.destination).collect();
    selection
        .views
        .iter()
        .filter(|v| {
            let on = v.schema.options.get_str("viewOn").unwrap_or_default();
            !copied.contains(&Namespace::new(&v.destination.db, on))
        })
        .map(|v| v.source.to_string())
        .collect()
}

/// What the destination holds of each selected namespace (collections, then views).
pub async fn destination(
    destination: &Client,
    selection: &Selection,
) -> Result<Vec<Option<Schema>>, CopyError> {
    let mut found = Vec::new();
    for selected in selection.all() {
        found.push(schema::read(destination, Side::Destination, &selected.destination).await?);
    }
    Ok(found)
}

/// Where the destination's options differ from the source's, one line per namespace; a copy
/// stops on any (unless it drops the destination first). Indexes are not options: missing ones
/// are built, extra ones stay.
pub fn conflicts(selection: &Selection, existing: &[Option<Schema>]) -> Vec<String> {
    selection
        .all()
        .zip(existing)
        .filter_map(|(selected, existing)| {
            let differences = selected.schema.differences(existing.as_ref()?, false);
            (!differences.is_empty()).then(|| {
                format!(
                    "{} exists with other options than {}'s: {}",
                    selected.destination,
                    selected.source,
                    differences.join("; ")
                )
            })
        })
        .collect()
}

/// Where the destination's options differ from the source's in ways `collMod` cannot change,
/// one line per namespace: a reconcile, which makes the rest equal in place, stops on these.
pub fn fixed_conflicts(selection: &Selection, existing: &[Option<Schema>]) -> Vec<String> {
    let fixed = |schema: &Schema| {
        let mut schema = schema.clone();
        for key in MODIFIABLE_OPTIONS {
            schema.options.remove(key);
        }
        schema
    };
    selection
        .all()
        .zip(existing)
        .filter_map(|(selected, existing)| {
            let differences =
                fixed(&selected.schema).differences(&fixed(existing.as_ref()?), false);
            (!differences.is_empty()).then(|| {
                format!(
                    "{} exists with options that cannot be changed in place and differ from {}'s: \
                     {}",
                    selected.destination,
                    selected.source,
                    differences.join("; ")
                )
            })
        })
        .collect()
}

/// Makes the destination's `dst` like `wanted` (the source's schema, a view's source renamed):
/// created if missing, the options `collMod` changes set, and with `indexes` the indexes built
/// or dropped. What still differs after is an error.
pub async fn make_like(
    destination: &Client,
    dst: &Namespace,
    wanted: &Schema,
    log: &SchemaLog,
    indexes: bool,
) -> Result<(), CopyError> {
    let Some(there) = schema::read(destination, Side::Destination, dst).await? else {
        schema::create(destination, dst, &wanted.options).await?;
        log.update(|p| p.created.push(dst.to_string()));
        if indexes {
            for index in &wanted.indexes {
                build(destination, dst, index).await?;
            }
        }
        return Ok(());
    };
    let mut changed = Document::new();
    for key in MODIFIABLE_OPTIONS {
        if wanted.options.get(key) != there.options.get(key) {
            if let Some(value) = wanted.options.get(key) {
                changed.insert(key, value.clone());
            }
        }
    }
    if !changed.is_empty() {
        schema::modify(destination, dst, changed).await?;
    }
    if indexes {
        for index in &there.indexes {
            if !wanted.indexes.contains(index) {
                schema::drop_index(destination, dst, index_name(index)).await?;
            }
        }
        for index in &wanted.indexes {
            if !there.indexes.contains(index) {
                build(destination, dst, index).await?;
            }
        }
    }
    let now = schema::read(destination, Side::Destination, dst).await?;
    let left = match &now {
        Some(now) => wanted.differences(now, indexes),
        None => vec!["the destination's collection vanished".into()],
    };
    if left.is_empty() {
        Ok(())
    } else {
        Err(CopyError::Schema(format!("{dst}: {}", left.join("; "))))
    }
}

async fn build(destination: &Client, dst: &Namespace, index: &Document) -> Result<(), CopyError> {
    schema::build_index(destination, dst, index)
        .await
        .map_err(|reason| {
            MongoError::Command {
                side: Side::Destination,
                ns: dst.clone(),
                op: "createIndexes",
                reason: format!("index {}: {reason}", index_name(index)),
            }
            .into()
        })
}

/// Making the destination's schema, for one job: where, what, and under which controls.
pub struct SchemaWork<'a> {
    pub destination: &'a Client,
    pub selection: &'a Selection,
    /// Where progress and refusals are noted.
    pub log: &'a SchemaLog,
    /// Index builds wait while the job is paused and stop when it is cancelled.
    pub control: &'a Control,
    pub cancel: &'a CancellationToken,
}

impl SchemaWork<'_> {
    /// Before the documents: drops the destination's namespaces (`drop`), creates the
    /// collections the destination lacks with the source's options, and builds the indexes
    /// first when asked to. `existing` is what the destination held (collections, then views).
    pub async fn before_documents(
        &self,
        existing: &[Option<Schema>],
        drop: bool,
        indexes_first: bool,
    ) -> Result<(), CopyError> {
        let (destination, log) = (self.destination, self.log);
        let count = self.selection.collections.len();
        for (selected, existing) in self.selection.all().zip(existing) {
            if drop && existing.is_some() {
                log.update(|p| p.step = Some(format!("dropping {}", selected.destination)));
                schema::drop(destination, &selected.destination).await?;
                log.update(|p| p.dropped.push(selected.destination.to_string()));
            }
        }
        for (selected, existing) in self.selection.collections.iter().zip(&existing[..count]) {
            if existing.is_some() && !drop {
                continue;
            }
            log.update(|p| p.step = Some(format!("creating {}", selected.destination)));
            schema::create(destination, &selected.destination, &selected.schema.options).await?;
            log.update(|p| p.created.push(selected.destination.to_string()));
        }
        log.update(|p| p.step = None);
        if indexes_first {
            let existing = if drop { &[][..] } else { &existing[..count] };
            self.build_indexes(existing).await?;
        }
        Ok(())
    }

    /// After the documents: builds the indexes (unless they came first), then creates the
    /// views.
    pub async fn after_documents(&self, build: bool) -> Result<(), CopyError> {
        let (destination, log) = (self.destination, self.log);
        if build {
            // Read again: a collection may have been created by the copy since.
            let mut existing = Vec::new();
            for selected in &self.selection.collections {
                existing.push(
                    schema::read(destination, Side::Destination, &selected.destination).await?,
                );
            }
            self.build_indexes(&existing).await?;
        }
        for view in &self.selection.views {
            let there = schema::read(destination, Side::Destination, &view.destination).await?;
            if there.is_none() {
                log.update(|p| p.step = Some(format!("creating view {}", view.destination)));
                schema::create(destination, &view.destination, &view.schema.options).await?;
                log.update(|p| p.views.push(view.destination.to_string()));
            }
        }
        log.update(|p| p.step = None);
        Ok(())
    }

    /// A reconcile's schema step: each of `selected` made like the source's in place
    /// ([`make_like`]), its indexes too with `indexes`; nothing is dropped whole.
    pub async fn make_equal(&self, selected: &[Selected], indexes: bool) -> Result<(), CopyError> {
        for s in selected {
            self.control.wait_while_paused(self.cancel).await;
            if self.cancel.is_cancelled() {
                return Err(CopyError::Stopped);
            }
            let step = format!("making {} like {}", s.destination, s.source);
            self.log.update(|p| p.step = Some(step));
            make_like(
                self.destination,
                &s.destination,
                &s.schema,
                self.log,
                indexes,
            )
            .await?;
        }
        self.log.update(|p| p.step = None);
        Ok(())
    }

    /// Builds the indexes each collection lacks, one collection and one index at a time (a
    /// build is the heaviest thing a copy asks of the destination), waiting while the job is
    /// paused. `existing` is what the destination holds (empty: nothing yet).
    async fn build_indexes(&self, existing: &[Option<Schema>]) -> Result<(), CopyError> {
        let log = self.log;
        let mut work: Vec<(&Selected, &Document)> = Vec::new();
        for (i, selected) in self.selection.collections.iter().enumerate() {
            let there = existing.get(i).and_then(Option::as_ref);
            for index in &selected.schema.indexes {
                let same_name = there.and_then(|s| {
                    s.indexes
                        .iter()
                        .find(|i| index_name(i) == index_name(index))
                });
                match same_name {
                    Some(same) if same == index => {}
                    Some(_) => log.update(|p| {
                        p.index_errors.push(IndexError {
                            namespace: selected.destination.to_string(),
                            index: index_name(index).to_string(),
                            reason: "an index of this name exists at the destination with \
                                     other options; it is left as it is"
                                .into(),
                        })
                    }),
                    None => work.push((selected, index)),
                }
            }
        }
        log.update(|p| p.indexes_total += work.len() as u64);
        for (n, (selected, index)) in work.iter().enumerate() {
            self.control.wait_while_paused(self.cancel).await;
            if self.cancel.is_cancelled() {
                return Err(CopyError::Stopped);
            }
            log.update(|p| {
                p.step = Some(format!(
                    "building index {} of {} ({} of {})",
                    index_name(index),
                    selected.destination,
                    n + 1,
                    work.len()
                ))
            });
            let built = schema::build_index(self.destination, &selected.destination, index).await;
            log.update(|p| match built {
                Ok(()) => p.indexes_built += 1,
                Err(reason) => {
                    tracing::warn!(
                        "{}: index {} refused: {reason}",
                        selected.destination,
                        describe_index(index)
                    );
                    p.index_errors.push(IndexError {
                        namespace: selected.destination.to_string(),
                        index: index_name(index).to_string(),
                        reason,
                    })
                }
            });
        }
        log.update(|p| p.step = None);
        Ok(())
    }
}

/// How the schemas of both sides compare, for `verify`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SchemaDifference {
    pub source: String,
    pub destination: String,
    pub differences: Vec<String>,
}

/// Compares each selected namespace's schema (options, indexes unless `indexes` is false, view
/// definitions) with the destination's.
pub async fn compare(
    destination: &Client,
    selection: &Selection,
    indexes: bool,
) -> Result<Vec<SchemaDifference>, CopyError> {
    let mut found = Vec::new();
    for selected in selection.all() {
        let differences =
            match schema::read(destination, Side::Destination, &selected.destination).await? {
                None => vec!["missing at the destination".to_string()],
                Some(there) => selected.schema.differences(&there, indexes),
            };
        if !differences.is_empty() {
            found.push(SchemaDifference {
                source: selected.source.to_string(),
                destination: selected.destination.to_string(),
                differences,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_the_closest_name_and_a_stranger_none() {
        let names = ["orders", "customers", "order_items"];
        assert_eq!(closest("ordres", names.into_iter()), Some("orders"));
        assert_eq!(closest("customer", names.into_iter()), Some("customers"));
        assert_eq!(closest("missing", names.into_iter()), None);
        assert_eq!(closest("c", ["d"].into_iter()), Some("d"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
