//! A collection's schema: its kind, options (`listCollections`) and indexes (`listIndexes`), read
//! from one cluster, made again on another, and compared.
//!
//! In: a client and a namespace. Out: a [`Schema`] — what a copy must create before or after the
//! documents so that the destination behaves like the source: validators, collations, capped
//! sizes, clustered and time-series layouts, `expireAfterSeconds`, pre- and post-images, view
//! definitions, and every secondary index with all its options. Comparisons ignore what a server
//! assigns by itself (`uuid`, index versions `v`, `ns`), so two clusters with the same schema
//! compare equal.

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use serde::Serialize;

use super::{describe, error_code, MongoError, Namespace, Side};

/// What a namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Collection,
    View,
    Timeseries,
}

/// The schema of one collection or view.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub kind: Kind,
    /// `listCollections` options: validator, collation, capped, clusteredIndex, timeseries,
    /// expireAfterSeconds, changeStreamPreAndPostImages, viewOn and pipeline, …
    pub options: Document,
    /// Secondary indexes as `listIndexes` describes them, without `v` and `ns`, in name order.
    /// The `_id` index and a clustered index are not listed: the collection makes them itself.
    pub indexes: Vec<Document>,
}

/// Index key values a server may refuse (code 67 on SecantusDB for text and hashed), named for
/// the plan's warnings.
pub const SPECIAL_INDEX_KINDS: [&str; 5] = ["text", "hashed", "2dsphere", "2d", "geoHaystack"];

impl Schema {
    /// True when the collection validates documents: the copy writes into it past the
    /// validator (`bypassDocumentValidation`), since the source already holds the documents.
    pub fn has_validator(&self) -> bool {
        self.options.contains_key("validator")
    }

    /// A view's definition with its source renamed (`viewOn` names a collection of its own
    /// database; `rename` maps a source collection name to the destination's).
    pub fn with_view_on(&self, rename: impl Fn(&str) -> String) -> Schema {
        let mut schema = self.clone();
        if let Ok(on) = self.options.get_str("viewOn") {
            schema.options.insert("viewOn", rename(on));
        }
        schema
    }

    /// What differs between `self` (the source) and `other` (the destination), one line each;
    /// empty when they match. Indexes are compared by name, key and options.
    pub fn differences(&self, other: &Schema, indexes: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.kind != other.kind {
            out.push(format!(
                "a {} at the source, a {} at the destination",
                kind_name(self.kind),
                kind_name(other.kind)
            ));
            return out;
        }
        out.extend(option_differences(&self.options, &other.options));
        if indexes {
            for index in &self.indexes {
                match other
                    .indexes
                    .iter()
                    .find(|i| index_name(i) == index_name(index))
                {
                    None => out.push(format!("index {} is missing", describe_index(index))),
                    Some(theirs) if theirs != index => out.push(format!(
                        "index {} differs: {}",
                        index_name(index),
                        differing_keys(index, theirs).join(", ")
                    )),
                    Some(_) => {}
                }
            }
            for index in &other.indexes {
                if !self
                    .indexes
                    .iter()
                    .any(|i| index_name(i) == index_name(index))
                {
                    out.push(format!(
                        "index {} exists only at the destination",
                        describe_index(index)
                    ));
                }
            }
        }
        out
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Collection => "collection",
        Kind::View => "view",
        Kind::Timeseries => "time-series collection",
    }
}

/// The options that differ between two option documents, by name and value.
pub fn option_differences(source: &Document, destination: &Document) -> Vec<String> {
    differing_keys(source, destination)
        .into_iter()
        .map(|key| {
            let show = |d: &Document| {
                d.get(&key)
                    .map(|v| v.clone().into_relaxed_extjson().to_string())
                    .unwrap_or_else(|| "(none)".into())
            };
            format!(
                "option {key}: {} at the source, {} at the destination",
                show(source),
                show(destination)
            )
        })
        .collect()
}

/// Top-level keys whose values differ (or are present on one side only), in order.
fn differing_keys(a: &Document, b: &Document) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
        .cloned()
        .collect()
}

pub fn index_name(index: &Document) -> &str {
    index.get_str("name").unwrap_or("")
}

/// `name {key}` for messages.
pub fn describe_index(index: &Document) -> String {
    let key = index
        .get_document("key")
        .map(|k| Bson::Document(k.clone()).into_relaxed_extjson().to_string())
        .unwrap_or_default();
    format!("{} {key}", index_name(index))
}

/// The index kinds (`text`, `hashed`, …) an index's key uses, if any.
pub fn special_kinds(index: &Document) -> Vec<String> {
    let Ok(key) = index.get_document("key") else {
        return vec![];
    };
    key.values()
        .filter_map(|v| v.as_str())
        .filter(|kind| SPECIAL_INDEX_KINDS.contains(kind))
        .map(str::to_string)
        .collect()
}

/// A collection's document count from its metadata (no scan).
pub async fn estimated_count(
    client: &Client,
    side: Side,
    ns: &Namespace,
) -> Result<u64, MongoError> {
    client
        .database(&ns.db)
        .collection::<Document>(&ns.coll)
        .estimated_document_count()
        .await
        .map_err(|e| MongoError::Command {
            side,
            ns: ns.clone(),
            op: "count",
            reason: describe(&e),
        })
}

/// Reads the schema of `ns`; `None` when it does not exist.
pub async fn read(
    client: &Client,
    side: Side,
    ns: &Namespace,
) -> Result<Option<Schema>, MongoError> {
    let found = list(client, side, &ns.db, doc! { "name": &ns.coll }).await?;
    Ok(found.into_iter().next().map(|(_, schema)| schema))
}

/// Every collection and view of database `db` but the `system.` ones, by name.
pub async fn read_database(
    client: &Client,
    side: Side,
    db: &str,
) -> Result<Vec<(String, Schema)>, MongoError> {
    let mut found = list(client, side, db, doc! {}).await?;
    found.retain(|(name, _)| !name.starts_with("system."));
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The databases of a cluster, the server's own (`admin`, `local`, `config`) left out.
pub async fn databases(client: &Client, side: Side) -> Result<Vec<String>, MongoError> {
    let names = client
        .list_database_names()
        .await
        .map_err(|e| MongoError::Command {
            side,
            ns: Namespace::new("admin", "*"),
            op: "listDatabases",
            reason: describe(&e),
        })?;
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| !["admin", "local", "config"].contains(&n.as_str()))
        .collect();
    names.sort();
    Ok(names)
}

/// `listCollections` of `db` with `filter`, each with its indexes.
async fn list(
    client: &Client,
    side: Side,
    db: &str,
    filter: Document,
) -> Result<Vec<(String, Schema)>, MongoError> {
    let failed = |op: &'static str, ns: Namespace| {
        move |e: mongodb::error::Error| MongoError::Command {
            side,
            ns,
            op,
            reason: describe(&e),
        }
    };
    let database = client.database(db);
    let specs: Vec<Document> = database
        .run_cursor_command(doc! { "listCollections": 1, "filter": filter })
        .await
        .map_err(failed("listCollections", Namespace::new(db, "*")))?
        .try_collect()
        .await
        .map_err(failed("listCollections", Namespace::new(db, "*")))?;
    let mut found = Vec::new();
    for spec in specs {
        let Ok(name) = spec.get_str("name") else {
            continue;
        };
        let ns = Namespace::new(db, name);
        let mut options = spec.get_document("options").cloned().unwrap_or_default();
        let kind = match spec.get_str("type").unwrap_or("collection") {
            "view" => Kind::View,
            "timeseries" => Kind::Timeseries,
            // Some servers report a time-series collection as a collection with its options.
            _ if options.contains_key("timeseries") => Kind::Timeseries,
            _ => Kind::Collection,
        };
        if let Ok(clustered) = options.get_document_mut("clusteredIndex") {
            clustered.remove("v");
        }
        let indexes = if kind == Kind::View {
            vec![]
        } else {
            list_indexes(client, &ns)
                .await
                .map_err(failed("listIndexes", ns.clone()))?
        };
        found.push((
            name.to_string(),
            Schema {
                kind,
                options,
                indexes,
            },
        ));
    }
    Ok(found)
}

/// Secondary indexes of a collection, normalised (see [`Schema::indexes`]).
async fn list_indexes(
    client: &Client,
    ns: &Namespace,
) -> Result<Vec<Document>, mongodb::error::Error> {
    let collection = client.database(&ns.db).collection::<Document>(&ns.coll);
    let listed = collection.list_indexes().await;
    let listed: Vec<mongodb::IndexModel> = match listed {
        Ok(cursor) => cursor.try_collect().await?,
        // Time-series collections on some servers have none to list.
        Err(e) if error_code(&e) == Some(NAMESPACE_NOT_FOUND) => vec![],
        Err(e) => return Err(e),
    };
    let mut indexes: Vec<Document> = listed
        .into_iter()
        .filter_map(|model| {
            let mut index = doc! { "key": model.keys };
            let options = model
                .options
                .map(|o| mongodb::bson::to_document(&o).unwrap_or_default())
                .unwrap_or_default();
            for (key, value) in options {
                if !matches!(key.as_str(), "v" | "ns" | "version") && value != Bson::Null {
                    index.insert(key, value);
                }
            }
            let is_id = index.get_document("key").ok() == Some(&doc! { "_id": 1 });
            let clustered = index.get_bool("clustered").unwrap_or(false);
            (!is_id && !clustered).then_some(index)
        })
        .collect();
    indexes.sort_by(|a, b| index_name(a).cmp(index_name(b)));
    Ok(indexes)
}

const NAMESPACE_NOT_FOUND: i32 = 26;

/// Creates `ns` with `options` (a collection, a time-series collection or a view).
pub async fn create(client: &Client, ns: &Namespace, options: &Document) -> Result<(), MongoError> {
    let mut command = doc! { "create": &ns.coll };
    command.extend(options.clone());
    client
        .database(&ns.db)
        .run_command(command)
        .await
        .map(|_| ())
        .map_err(|e| MongoError::Command {
            side: Side::Destination,
            ns: ns.clone(),
            op: "create",
            reason: describe(&e),
        })
}

/// Builds one index; the server's refusal comes back as its message.
pub async fn build_index(client: &Client, ns: &Namespace, index: &Document) -> Result<(), String> {
    client
        .database(&ns.db)
        .run_command(doc! { "createIndexes": &ns.coll, "indexes": [index.clone()] })
        .await
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Drops one index by name.
pub async fn drop_index(client: &Client, ns: &Namespace, name: &str) -> Result<(), MongoError> {
    client
        .database(&ns.db)
        .run_command(doc! { "dropIndexes": &ns.coll, "index": name })
        .await
        .map(|_| ())
        .map_err(|e| MongoError::Command {
            side: Side::Destination,
            ns: ns.clone(),
            op: "dropIndexes",
            reason: describe(&e),
        })
}

/// Options `collMod` can change on an existing collection or view.
pub const MODIFIABLE_OPTIONS: [&str; 7] = [
    "validator",
    "validationLevel",
    "validationAction",
    "expireAfterSeconds",
    "changeStreamPreAndPostImages",
    "viewOn",
    "pipeline",
];

/// Sets options of an existing collection or view (`collMod`).
pub async fn modify(client: &Client, ns: &Namespace, options: Document) -> Result<(), MongoError> {
    let mut command = doc! { "collMod": &ns.coll };
    command.extend(options);
    client
        .database(&ns.db)
        .run_command(command)
        .await
        .map(|_| ())
        .map_err(|e| MongoError::Command {
            side: Side::Destination,
            ns: ns.clone(),
            op: "collMod",
            reason: describe(&e),
        })
}

/// Renames a collection, replacing whatever holds the new name.
pub async fn rename(client: &Client, from: &Namespace, to: &Namespace) -> Result<(), MongoError> {
    client
        .database("admin")
        .run_command(doc! {
            "renameCollection": from.to_string(),
            "to": to.to_string(),
            "dropTarget": true,
        })
        .await
        .map(|_| ())
        .map_err(|e| MongoError::Command {
            side: Side::Destination,
            ns: from.clone(),
            op: "renameCollection",
            reason: describe(&e),
        })
}

/// Drops a collection or view (nothing happens if it does not exist).
pub async fn drop(client: &Client, ns: &Namespace) -> Result<(), MongoError> {
    client
        .database(&ns.db)
        .collection::<Document>(&ns.coll)
        .drop()
        .await
        .map_err(|e| MongoError::Command {
            side: Side::Destination,
            ns: ns.clone(),
            op: "drop",
            reason: describe(&e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(options: Document, indexes: Vec<Document>) -> Schema {
        Schema {
            kind: Kind::Collection,
            options,
            indexes,
        }
    }

    #[test]
    fn differences_name_options_and_indexes() {
        let a = schema(
            doc! { "collation": { "locale": "en", "strength": 2 } },
            vec![doc! { "key": { "a": 1 }, "name": "a_1", "unique": true }],
        );
        assert!(a.differences(&a, true).is_empty());
        let b = schema(
            doc! { "collation": { "locale": "fr" } },
            vec![
                doc! { "key": { "a": 1 }, "name": "a_1" },
                doc! { "key": { "b": 1 }, "name": "b_1" },
            ],
        );
        let found = a.differences(&b, true);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("option collation:"), "{found:?}");
        assert_eq!(found[1], "index a_1 differs: unique");
        assert!(found[2].contains("b_1") && found[2].contains("only at the destination"));
        assert_eq!(a.differences(&b, false).len(), 1, "options only");
    }

    #[test]
    fn validators_are_seen_and_views_are_renamed() {
        let s = schema(doc! { "validator": { "a": { "$exists": true } } }, vec![]);
        assert!(s.has_validator());
        assert!(!schema(doc! {}, vec![]).has_validator());
        let view = Schema {
            kind: Kind::View,
            options: doc! { "viewOn": "orders", "pipeline": [] },
            indexes: vec![],
        };
        let renamed = view.with_view_on(|c| format!("{c}_archive"));
        assert_eq!(renamed.options.get_str("viewOn").unwrap(), "orders_archive");
        assert_eq!(
            special_kinds(&doc! { "key": { "t": "text", "x": 1 } }),
            vec!["text".to_string()]
        );
    }
}
