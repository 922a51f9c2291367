//! The low watermark of one namespace task (points 1 and 3 of the checkpoint contract in
//! [`ledger`](super::ledger)).
//!
//! In: batches numbered as they are queued, and their acknowledgements in any order. Out: the
//! last `_id` below which every batch is acknowledged, and the documents counted below it.

use std::collections::BTreeMap;

use mongodb::bson::RawBson;

use crate::state::NsCheckpoint;

/// The low watermark of one namespace (points 1 and 3 of the contract).
#[derive(Debug, Default)]
pub struct Watermark {
    /// Number of the next batch queued.
    next_seq: u64,
    /// Every batch numbered below this one is acknowledged.
    acked_below: u64,
    /// Acknowledged batches above a gap: number -> (last `_id`, documents, refused documents).
    waiting: BTreeMap<u64, (RawBson, u64, u64)>,
    /// The watermark: every document up to this `_id` is acknowledged.
    after: Option<RawBson>,
    /// Documents below the watermark, earlier runs included, and those of them refused.
    done: u64,
    failed: u64,
}

impl Watermark {
    /// Continues from an earlier run's watermark.
    pub fn resume_at(&mut self, after: Option<RawBson>) {
        self.after = after;
    }

    /// Counts what earlier runs did below their watermark.
    pub fn carry(&mut self, done: u64, failed: u64) {
        self.done = done;
        self.failed = failed;
    }

    /// The number of the batch being queued now.
    pub fn number_next(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Batch `seq`, ending at `last_id`, is acknowledged: the watermark moves over every batch
    /// now acknowledged without a gap.
    pub fn acknowledge(&mut self, seq: u64, last_id: RawBson, docs: u64, failed: u64) {
        self.waiting.insert(seq, (last_id, docs, failed));
        while let Some((id, n, refused)) = self.waiting.remove(&self.acked_below) {
            self.after = Some(id);
            self.done += n;
            self.failed += refused;
            self.acked_below += 1;
        }
    }

    /// Documents below the watermark, earlier runs included.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Documents below the watermark and those of them refused.
    pub fn carried(&self) -> (u64, u64) {
        (self.done, self.failed)
    }

    /// The namespace's checkpoint as of now.
    pub fn checkpoint(&self, complete: bool) -> NsCheckpoint {
        NsCheckpoint {
            failed: self.failed,
            ..NsCheckpoint::new(self.after.as_ref(), self.done, complete)
        }
    }
}
