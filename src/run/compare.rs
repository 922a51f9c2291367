//! Both sides of a namespace pair read in `_id` order, a page at a time, and merged: what the
//! sync's verifier and a reconcile compare.
//!
//! In: both clients, a namespace pair and what to read of it (a [`Find`]: the job's filter and an
//! `_id` range). Out: [`Page`]s — the source's next documents and the destination's up to the
//! last of them — and, merged, the `_id`s that differ ([`Difference`]: missing at the
//! destination, different there, or only there) with the source's document, and how many were
//! equal. Each side is one cursor held open from page to page, so a namespace is read once,
//! whatever its size, and memory holds one page per side. Documents are compared byte for byte
//! (raw BSON: field order and types count).

use std::cmp::Ordering;
use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawBson, RawDocumentBuf};
use mongodb::options::Hint;
use mongodb::{Client, Cursor};

use crate::engine::source::seam::id_of;
use crate::engine::stats::MismatchKind;
use crate::engine::transform::Steps;
use crate::engine::CopyError;
use crate::mongo::bson_order::{self, IdKey};
use crate::mongo::{describe, MongoError, Namespace, Side};

/// What a read asks: the documents matching `filter`, by the `_id` index (`hint`).
#[derive(Clone, Debug)]
pub struct Find {
    pub filter: Document,
    pub hint: bool,
}

impl Find {
    /// The documents matching every one of `parts` (the job's filter, an `_id` range…).
    pub fn all_of(parts: Vec<Document>, hint: bool) -> Find {
        let mut parts = parts;
        let filter = match parts.len() {
            0 => Document::new(),
            1 => parts.remove(0),
            _ => doc! { "$and": parts },
        };
        Find { filter, hint }
    }
}

/// One side's documents in `_id` order, read a batch ahead.
pub struct ScanCursor {
    cursor: Cursor<RawDocumentBuf>,
    side: Side,
    ns: Namespace,
    /// What the reads are for, in messages (`verify`, `reconcile`).
    op: &'static str,
    /// The `_id` read last, to check that the server keeps MongoDB's order.
    last: Option<RawBson>,
}

impl ScanCursor {
    pub async fn open(
        client: &Client,
        (side, ns): (Side, &Namespace),
        find: Find,
        (batch, op): (usize, &'static str),
    ) -> Result<ScanCursor, CopyError> {
        let collection = client
            .database(&ns.db)
            .collection::<RawDocumentBuf>(&ns.coll);
        let query = collection
            .find(find.filter)
            .sort(doc! { "_id": 1 })
            .batch_size(batch as u32);
        // A range of `_id`s across type brackets is an `$or`: without the hint a server may
        // scan the whole collection for it. Time-series collections have no `_id` index.
        let query = match find.hint {
            true => query.hint(Hint::Keys(doc! { "_id": 1 })),
            false => query,
        };
        let cursor = query.await.map_err(|e| failed(side, ns, op, &e))?;
        Ok(ScanCursor {
            cursor,
            side,
            ns: ns.clone(),
            op,
            last: None,
        })
    }

    pub async fn next(&mut self) -> Result<Option<(RawBson, RawDocumentBuf)>, CopyError> {
        let next = self.cursor.try_next().await;
        let Some(doc) = next.map_err(|e| failed(self.side, &self.ns, self.op, &e))? else {
            return Ok(None);
        };
        let id = id_of(&doc, &self.ns)?;
        // Pages end where our order says: a server that sorts `_id`s otherwise (a MongoDB-like
        // server ordering embedded documents by their bytes) would pair the wrong documents, and
        // a reconcile would delete ones the source has. Refuse rather than guess.
        if let Some(last) = self.last.replace(id.clone()) {
            if bson_order::compare(last.as_raw_bson_ref(), id.as_raw_bson_ref()).is_gt() {
                let shown = |id: RawBson| {
                    Bson::try_from(id)
                        .map_or("?".into(), |id| id.into_relaxed_extjson().to_string())
                };
                let reason = format!(
                    "the server returned _id {} after {}, which MongoDB sorts before it; comparing \
                     by pages needs MongoDB's order of _ids, so {} stops here",
                    shown(id),
                    shown(last),
                    self.op
                );
                return Err(MongoError::Command {
                    side: self.side,
                    ns: self.ns.clone(),
                    op: self.op,
                    reason,
                }
                .into());
            }
        }
        Ok(Some((id, doc)))
    }
}

fn failed(side: Side, ns: &Namespace, op: &'static str, e: &mongodb::error::Error) -> CopyError {
    MongoError::Command {
        side,
        ns: ns.clone(),
        op,
        reason: describe(e),
    }
    .into()
}

/// Every document of `ns` matching `find`, in `_id` order.
pub async fn read(
    client: &Client,
    (side, ns): (Side, &Namespace),
    find: Find,
    op: &'static str,
) -> Result<Vec<(RawBson, RawDocumentBuf)>, CopyError> {
    let mut cursor = ScanCursor::open(client, (side, ns), find, (PAGE_BATCH, op)).await?;
    let mut docs = Vec::new();
    while let Some(doc) = cursor.next().await? {
        docs.push(doc);
    }
    Ok(docs)
}

/// Documents per cursor reply of a whole read.
const PAGE_BATCH: usize = 1000;

/// A namespace pair read in `_id` order on both sides: one cursor each, the destination's first
/// document past the last page, and the source's next page, read while the destination's part
/// of this one is: the two servers work at once.
pub struct PairedScan {
    ours: ScanCursor,
    theirs: ScanCursor,
    held: Option<(RawBson, RawDocumentBuf)>,
    /// The source's next page, read ahead (and whether the source ended with it).
    ahead: Option<(Vec<(RawBson, RawDocumentBuf)>, bool)>,
    /// A page ends after this many source documents, or once they hold this many bytes.
    page: (usize, usize),
    /// What the job's transform makes of the source's documents: they are compared so.
    steps: Option<Arc<Steps>>,
}

/// One page of a [`PairedScan`].
pub struct Page {
    /// The last `_id` of the source's page; `None` once the source is read to its end (the
    /// destination's rest is then in the page too).
    pub upper: Option<RawBson>,
    pub ours: Vec<(RawBson, RawDocumentBuf)>,
    pub theirs: Vec<(RawBson, RawDocumentBuf)>,
    /// The transform the source's documents are compared through.
    steps: Option<Arc<Steps>>,
}

/// An `_id` whose document differs between the sides, and how.
#[derive(Debug)]
pub struct Difference {
    pub id: RawBson,
    pub kind: MismatchKind,
    /// The source's document (`None` for an extra one).
    pub source: Option<RawDocumentBuf>,
    /// A different document whose `_id` the destination holds as another type of the same
    /// value (`1` and `1.0`, one `_id` to the server): the destination's `_id`, whose document
    /// must go before the source's can be written.
    pub retyped: Option<RawBson>,
}

/// A page merged: what differs, in `_id` order, and how many `_id`s were equal.
pub struct Merged {
    pub differences: Vec<Difference>,
    pub equal: u64,
}

impl PairedScan {
    /// Opens both sides' cursors on `find`, pages of at most `page` source documents and
    /// `page_bytes` of them (at least one document).
    pub async fn open(
        (src, dst): (&Client, &Client),
        (source, destination): (&Namespace, &Namespace),
        find: Find,
        (page, page_bytes, op): (usize, usize, &'static str),
    ) -> Result<PairedScan, CopyError> {
        Ok(PairedScan {
            ours: ScanCursor::open(src, (Side::Source, source), find.clone(), (page, op)).await?,
            theirs: ScanCursor::open(dst, (Side::Destination, destination), find, (page, op))
                .await?,
            held: None,
            ahead: None,
            page: (page, page_bytes),
            steps: None,
        })
    }

    /// The source's documents compared as `steps` make them (a job's transform).
    pub fn comparing_through(mut self, steps: Option<Arc<Steps>>) -> Self {
        self.steps = steps;
        self
    }

    /// The source's next page of documents and the destination's up to the last of them.
    pub async fn next_page(&mut self) -> Result<Page, CopyError> {
        let (ours, ended) = match self.ahead.take() {
            Some(read) => read,
            None => source_page(&mut self.ours, self.page).await?,
        };
        let upper = match ours.last() {
            Some((last, _)) if !ended => Some(last.clone()),
            _ => None,
        };
        let theirs = destination_up_to(&mut self.theirs, &mut self.held, upper.as_ref());
        let theirs = if ended {
            theirs.await?
        } else {
            let (theirs, ahead) = tokio::join!(theirs, source_page(&mut self.ours, self.page));
            self.ahead = Some(ahead?);
            theirs?
        };
        Ok(Page {
            upper,
            ours,
            theirs,
            steps: self.steps.clone(),
        })
    }
}

/// The source's next documents, at most `most` and about `most_bytes` (at least one); `true`
/// when the source ended.
async fn source_page(
    cursor: &mut ScanCursor,
    (most, most_bytes): (usize, usize),
) -> Result<(Vec<(RawBson, RawDocumentBuf)>, bool), CopyError> {
    let mut ours = Vec::with_capacity(most);
    let mut bytes = 0;
    while ours.len() < most && bytes < most_bytes {
        match cursor.next().await? {
            Some((id, doc)) => {
                bytes += doc.as_bytes().len();
                ours.push((id, doc));
            }
            None => return Ok((ours, true)),
        }
    }
    Ok((ours, false))
}

/// The destination's documents up to `upper` (`None`: all that are left); the first one past
/// it is `held` for the next page.
async fn destination_up_to(
    cursor: &mut ScanCursor,
    held: &mut Option<(RawBson, RawDocumentBuf)>,
    upper: Option<&RawBson>,
) -> Result<Vec<(RawBson, RawDocumentBuf)>, CopyError> {
    let mut theirs = Vec::new();
    loop {
        let next = match held.take() {
            Some(doc) => Some(doc),
            None => cursor.next().await?,
        };
        let Some((id, doc)) = next else {
            return Ok(theirs);
        };
        let beyond = upper.is_some_and(|upper| {
            bson_order::compare(id.as_raw_bson_ref(), upper.as_raw_bson_ref()).is_gt()
        });
        if beyond {
            *held = Some((id, doc));
            return Ok(theirs);
        }
        theirs.push((id, doc));
    }
}

impl Page {
    /// Bytes of the documents read on both sides.
    pub fn bytes(&self) -> u64 {
        let side = |docs: &[(RawBson, RawDocumentBuf)]| -> u64 {
            docs.iter().map(|(_, d)| d.as_bytes().len() as u64).sum()
        };
        side(&self.ours) + side(&self.theirs)
    }

    /// The last `_id` read on either side (`None`: the page is empty).
    pub fn last_id(&self) -> Option<RawBson> {
        let last = |docs: &[(RawBson, RawDocumentBuf)]| docs.last().map(|(id, _)| id.clone());
        match (last(&self.ours), last(&self.theirs)) {
            (Some(a), Some(b)) => Some(
                match bson_order::compare(a.as_raw_bson_ref(), b.as_raw_bson_ref()) {
                    Ordering::Less => b,
                    _ => a,
                },
            ),
            (a, b) => a.or(b),
        }
    }

    /// The two sides merged in `_id` order.
    pub fn merge(self) -> Merged {
        merge(self.ours, self.theirs, self.steps.as_deref())
    }
}

/// Merges two lists in `_id` order into the `_id`s that differ, and how; the source's
/// documents compared as `steps` make them, when given.
pub fn merge(
    ours: Vec<(RawBson, RawDocumentBuf)>,
    theirs: Vec<(RawBson, RawDocumentBuf)>,
    steps: Option<&Steps>,
) -> Merged {
    let mut merged = Merged {
        differences: Vec::new(),
        equal: 0,
    };
    let (mut a, mut b) = (ours.into_iter().peekable(), theirs.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return merged,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((x, _)), Some((y, _))) => {
                bson_order::compare(x.as_raw_bson_ref(), y.as_raw_bson_ref())
            }
        };
        let difference = match order {
            Ordering::Less => {
                let (id, doc) = a.next().expect("peeked");
                (id, MismatchKind::Missing, Some(doc), None)
            }
            Ordering::Greater => {
                let (id, _) = b.next().expect("peeked");
                (id, MismatchKind::Extra, None, None)
            }
            Ordering::Equal => {
                let ((id, x), (theirs, y)) = (a.next().expect("peeked"), b.next().expect("peeked"));
                if same(&x, &y, steps) {
                    merged.equal += 1;
                    continue;
                }
                let retyped = (IdKey::of(&id) != IdKey::of(&theirs)).then_some(theirs);
                (id, MismatchKind::Different, Some(x), retyped)
            }
        };
        let (id, kind, source, retyped) = difference;
        merged.differences.push(Difference {
            id,
            kind,
            source,
            retyped,
        });
    }
}

/// The source's document `ours` is what the destination holds, once through `steps` if given
/// (a document the steps cannot read is not).
pub fn same(ours: &RawDocumentBuf, theirs: &RawDocumentBuf, steps: Option<&Steps>) -> bool {
    match steps {
        None => ours.as_bytes() == theirs.as_bytes(),
        Some(steps) => steps
            .apply(ours.clone())
            .is_ok_and(|written| written.as_bytes() == theirs.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::rawdoc;

    use super::*;

    fn side(docs: &[(i32, i32)]) -> Vec<(RawBson, RawDocumentBuf)> {
        docs.iter()
            .map(|&(id, v)| (RawBson::Int32(id), rawdoc! { "_id": id, "v": v }))
            .collect()
    }

    #[test]
    fn a_merge_finds_each_kind_of_difference_in_id_order() {
        let merged = merge(
            side(&[(1, 0), (2, 0), (4, 0), (5, 1)]),
            side(&[(2, 0), (3, 0), (4, 9), (5, 1), (6, 0)]),
            None,
        );
        let found: Vec<(RawBson, MismatchKind, bool)> = merged
            .differences
            .into_iter()
            .map(|d| (d.id, d.kind, d.source.is_some()))
            .collect();
        assert_eq!(
            found,
            vec![
                (RawBson::Int32(1), MismatchKind::Missing, true),
                (RawBson::Int32(3), MismatchKind::Extra, false),
                (RawBson::Int32(4), MismatchKind::Different, true),
                (RawBson::Int32(6), MismatchKind::Extra, false),
            ]
        );
        assert_eq!(merged.equal, 2);
    }
}
