//! The memory budget: one number (`--memory-limit`) from which every buffer of the engine that
//! holds documents is sized.
//!
//! In: the limit in bytes and the worker count. Out: the target size of a cursor reply, the
//! bytes of documents that may be read and not yet written, and the largest batch.
//!
//! Where the documents of a `stream` copy are, and the share of the budget `B` each place gets
//! (measured with a counting allocator, issue 14):
//!
//! ```text
//!  cursor reply     B/4   the reply target R = B/8 (shared by the cursors read at once,
//!                         `--readers`): while a reply is read the driver holds it twice (the
//!                         wire buffer and the reply document it copies out of it)
//!  read, unwritten  B/8   P: documents queued or being written, a byte semaphore from the
//!                         queue's send to the batch's acknowledgement
//!  driver encoding  3B/8  insert_many copies a batch three times while it writes it
//!                         (its owned documents, the command's, the message's sections): 3 P
//!  the rest         B/4   the batch being built (C), the duplicate-key path's update command,
//!                         journal frames, counters
//!
//!  batch bytes      C = P / (2W + W): a full queue (2 batches per worker) plus one batch being
//!                         written per worker fit in P
//! ```
//!
//! A reply can only be asked for as a number of documents (`batchSize`), so the producer sizes
//! each getMore from the average document of the reply before: `max(1, R / average)`. A
//! document larger than any share still goes through (the floor is one document per reply and
//! per batch; a batch larger than P waits until nothing else is queued or being written), so
//! with documents near 16 MiB the process holds about six copies of one document instead.

/// The default budget: peak RSS of a whole copy stays under 64 MiB with it (BENCHMARKS.md).
pub const DEFAULT_MEMORY_LIMIT: usize = 48 * 1024 * 1024;

/// The smallest budget accepted (below this the fixed overhead of the process dominates).
pub const MIN_MEMORY_LIMIT: usize = *crate::bounds::MEMORY_LIMIT.range.start();

/// Copies of a batch that exist while the driver writes it (ours and three of its own).
pub const WRITE_COPIES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The limit everything below is derived from.
    pub limit: usize,
    /// Target bytes of one cursor reply.
    pub reply_bytes: usize,
    /// Bytes of documents read and not yet acknowledged by the destination.
    pub pipeline_bytes: usize,
    /// Largest batch in bytes (a batch always takes at least one document).
    pub batch_bytes: usize,
}

impl Budget {
    pub fn new(limit: usize, workers: usize) -> Self {
        let limit = limit.max(MIN_MEMORY_LIMIT);
        let pipeline_bytes = limit / 8;
        Budget {
            limit,
            reply_bytes: limit / 8,
            pipeline_bytes,
            batch_bytes: (pipeline_bytes / (3 * workers.max(1))).max(1),
        }
    }

    /// The budget of `readers` cursors read at once: they share the reply bytes.
    pub fn shared_by(mut self, readers: usize) -> Self {
        self.reply_bytes = (self.reply_bytes / readers.max(1)).max(1);
        self
    }

    /// Documents to ask for in one reply when they average `avg_doc_bytes`.
    pub fn reply_docs(&self, avg_doc_bytes: usize) -> u32 {
        (self.reply_bytes / avg_doc_bytes.max(1)).clamp(1, i32::MAX as usize) as u32
    }

    /// Documents to ask for in a first reply, before any size is known: the server's own default
    /// of 101, fewer when that many 64 KiB documents would pass the reply target.
    pub fn first_reply_docs(&self) -> u32 {
        self.reply_docs(64 * 1024).min(101)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_MEMORY_LIMIT, super::control::DEFAULT_WORKERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn the_default_budget_splits_as_documented() {
        let b = Budget::new(48 * MIB, 4);
        assert_eq!(b.reply_bytes, 6 * MIB);
        assert_eq!(b.pipeline_bytes, 6 * MIB);
        assert_eq!(b.batch_bytes, MIB / 2);
        // 1 KiB documents: 6144 per reply.
        assert_eq!(b.reply_docs(1024), 6144);
        assert_eq!(b.first_reply_docs(), 96);
    }

    #[test]
    fn one_document_always_fits() {
        let b = Budget::new(0, 1000);
        assert_eq!(b.limit, MIN_MEMORY_LIMIT);
        assert_eq!(b.reply_docs(16 * MIB), 1);
        assert!(b.batch_bytes >= 1);
        assert_eq!(b.first_reply_docs(), 8);
    }
}
