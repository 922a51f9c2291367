//! Partitions: a namespace split into `_id` ranges that are read apart, by several readers of
//! one process or by several processes.
//!
//! In: a namespace of the source, the job's filter and a target number of documents per
//! partition. Out: split points `p1 < p2 < … < pk` and the [`Partition`]s between them, `(-∞, p1]`,
//! `(p1, p2]` … `(pk, +∞)`. A part's query is `after(lower) ∧ up_to(upper)`
//! ([`bson_order`]), two exact complements, so the parts cover the namespace once whatever the
//! types of its `_id`s. The split points come from `splitVector` where the server has it (on an
//! unfiltered namespace), else from a `$sample` of `_id`s; they only balance the parts, and
//! every set of points is correct. A job's parts are kept in its checkpoint, so a resumed job
//! reads the same ranges.

use mongodb::bson::{doc, Document, RawBson, RawDocumentBuf};
use mongodb::Client;

use futures::TryStreamExt;

use crate::mongo::{bson_order, describe, MongoError, Namespace, Side};
use crate::state::{id_from_json, id_to_json, PartCheckpoint};

/// Documents per partition when several readers are asked for and no size is given.
pub const DEFAULT_PARTITION_DOCS: u64 = 1_000_000;

/// Sampled `_id`s per partition: enough that the parts come out within about a quarter of
/// each other.
const SAMPLES_PER_PART: usize = 16;
/// The most `_id`s sampled for one namespace.
const MAX_SAMPLES: usize = 20_000;

/// One `_id` range of a namespace: after `lower`, up to and including `upper` (`None`: open).
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub index: u32,
    /// Parts of the namespace.
    pub of: u32,
    pub lower: Option<RawBson>,
    pub upper: Option<RawBson>,
}

impl Partition {
    /// The ranges between sorted, distinct split points: one more than the points.
    pub fn between(points: &[RawBson]) -> Vec<Partition> {
        let of = points.len() as u32 + 1;
        let bounds: Vec<Option<RawBson>> = std::iter::once(None)
            .chain(points.iter().cloned().map(Some))
            .chain(std::iter::once(None))
            .collect();
        bounds
            .windows(2)
            .enumerate()
            .map(|(index, pair)| Partition {
                index: index as u32,
                of,
                lower: pair[0].clone(),
                upper: pair[1].clone(),
            })
            .collect()
    }

    pub fn from_checkpoint(kept: &PartCheckpoint) -> Result<Partition, String> {
        let id = |value: &Option<serde_json::Value>| value.as_ref().map(id_from_json).transpose();
        Ok(Partition {
            index: kept.index,
            of: kept.of,
            lower: id(&kept.lower)?,
            upper: id(&kept.upper)?,
        })
    }

    pub fn checkpoint(&self) -> PartCheckpoint {
        PartCheckpoint {
            index: self.index,
            of: self.of,
            lower: self.lower.as_ref().and_then(id_to_json),
            upper: self.upper.as_ref().and_then(id_to_json),
        }
    }

    /// The checkpoint key of the part of the namespace keyed `namespace`.
    pub fn key(&self, namespace: &str) -> String {
        format!("{namespace} {}", Partition::suffix(self.index))
    }

    /// What follows a namespace's key in its parts' keys.
    fn suffix(index: u32) -> String {
        format!("#{index:05}")
    }

    /// Whether `key` is the key of a part of the namespace keyed `namespace`.
    pub fn is_key_of(key: &str, namespace: &str) -> bool {
        key.strip_prefix(namespace)
            .and_then(|rest| rest.strip_prefix(" #"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// Parts for `docs` documents at about `target` each (one: not worth splitting).
pub fn parts_for(docs: u64, target: u64) -> usize {
    if target == 0 {
        return 1;
    }
    usize::try_from(docs.div_ceil(target))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Sorted, distinct points splitting `ns` (the documents `filter` selects) into about `parts`
/// ranges of equal size.
pub async fn split_points(
    client: &Client,
    ns: &Namespace,
    filter: &Document,
    parts: usize,
) -> Result<Vec<RawBson>, MongoError> {
    if parts <= 1 {
        return Ok(Vec::new());
    }
    let error = |op, e: mongodb::error::Error| MongoError::Command {
        side: Side::Source,
        ns: ns.clone(),
        op,
        reason: describe(&e),
    };
    if filter.is_empty() {
        match split_vector(client, ns, parts).await {
            Ok(points) if !points.is_empty() => return Ok(distinct(points)),
            Ok(_) => {}
            // Not there (SecantusDB, mongos) or not allowed: sample instead.
            Err(e) => tracing::debug!("{ns}: splitVector: {}; sampling instead", describe(&e)),
        }
    }
    let samples = (parts * SAMPLES_PER_PART).min(MAX_SAMPLES);
    let pipeline = [
        doc! { "$match": filter.clone() },
        doc! { "$sample": { "size": samples as i64 } },
        doc! { "$project": { "_id": 1 } },
    ];
    let ids: Vec<RawBson> = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.coll)
        .aggregate(pipeline)
        .with_type::<RawDocumentBuf>()
        .await
        .map_err(|e| error("sample", e))?
        .try_filter_map(|doc| async move { Ok(doc.get("_id")?.map(|id| id.to_raw_bson())) })
        .try_collect()
        .await
        .map_err(|e| error("sample", e))?;
    let ids = distinct(ids);
    // Every `len / parts`-th sampled `_id` splits.
    let points = (1..parts)
        .filter_map(|i| ids.get(i * ids.len() / parts).cloned())
        .collect();
    Ok(distinct(points))
}

/// `splitVector`'s split points for about `parts` ranges (the server walks the `_id` index).
async fn split_vector(
    client: &Client,
    ns: &Namespace,
    parts: usize,
) -> mongodb::error::Result<Vec<RawBson>> {
    let db = client.database(&ns.db);
    let count = db
        .collection::<Document>(&ns.coll)
        .estimated_document_count()
        .await?;
    let per_part = count.div_ceil(parts as u64).max(1);
    let reply = db
        .run_command(doc! {
            "splitVector": ns.to_string(),
            "keyPattern": { "_id": 1 },
            "maxChunkObjects": per_part as i64,
            // The object count decides; this only has to be larger than any part.
            "maxChunkSizeBytes": i64::MAX / 2,
        })
        .await?;
    let points = reply
        .get_array("splitKeys")
        .map_err(|e| mongodb::error::Error::custom(e.to_string()))?
        .iter()
        .filter_map(|key| key.as_document()?.get("_id").cloned())
        .filter_map(|id| RawBson::try_from(id).ok())
        .collect();
    Ok(points)
}

/// Sorted in the server's order, each `_id` once.
fn distinct(mut ids: Vec<RawBson>) -> Vec<RawBson> {
    ids.sort_by(|a, b| bson_order::compare(a.as_raw_bson_ref(), b.as_raw_bson_ref()));
    // Ranges are by value: two points of one value (`1`, `1.0`) bound the same range.
    ids.dedup_by(|a, b| {
        bson_order::compare(a.as_raw_bson_ref(), b.as_raw_bson_ref()) == std::cmp::Ordering::Equal
    });
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_between_points_cover_everything_once() {
        let parts = Partition::between(&[RawBson::Int32(10), RawBson::String("m".into())]);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            (parts[0].lower.clone(), parts[0].upper.clone()),
            (None, Some(RawBson::Int32(10)))
        );
        assert_eq!(parts[1].lower, Some(RawBson::Int32(10)));
        assert_eq!(parts[2].upper, None);
        assert!(parts.iter().all(|p| p.of == 3));
        assert_eq!(Partition::between(&[]).len(), 1);
    }

    #[test]
    fn a_part_survives_its_checkpoint_and_keys_name_their_namespace() {
        let part = Partition {
            index: 2,
            of: 4,
            lower: Some(RawBson::Int64(7)),
            upper: None,
        };
        assert_eq!(
            Partition::from_checkpoint(&part.checkpoint()).unwrap(),
            part
        );
        let key = part.key("a.b -> c.d");
        assert_eq!(key, "a.b -> c.d #00002");
        assert!(Partition::is_key_of(&key, "a.b -> c.d"));
        assert!(!Partition::is_key_of(&key, "a.b -> c"));
        assert!(!Partition::is_key_of("a.b -> c.d", "a.b -> c.d"));
    }

    #[test]
    fn sizes_round_up_and_zero_means_whole() {
        assert_eq!(parts_for(10, 3), 4);
        assert_eq!(parts_for(9, 3), 3);
        assert_eq!(parts_for(2, 3), 1);
        assert_eq!(parts_for(100, 0), 1);
    }

    #[test]
    fn points_sort_across_types_and_numbers_of_one_value_are_one() {
        let points = distinct(vec![
            RawBson::String("a".into()),
            RawBson::Int32(1),
            RawBson::Double(1.0),
            RawBson::Null,
        ]);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0], RawBson::Null);
        assert_eq!(points[2], RawBson::String("a".into()));
    }
}
