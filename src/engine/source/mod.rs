//! The producer stage: where documents come from, read in `_id` order onto the queue.
//!
//! In: a namespace task. Out: sorted batches on the queue — `_id`s only ([`Strategy::Ids`],
//! workers fetch the documents) or whole raw documents ([`Strategy::Stream`]). Also the fetch
//! half of the id strategy: a batch of `_id`s in, their raw documents out.
//!
//! [`Source`] is the seam; one file per kind: [`mongo`] (a source cluster), [`synthetic`]
//! (generated documents, to measure the engine itself) and [`journal`] (a journal being
//! replayed). Batches a source queues must be sorted by `_id` within a namespace and cover it in
//! order: the [ledger](super::ledger)'s watermark relies on it.

pub mod change_stream;
pub mod fetch_sizer;
pub mod journal;
pub mod mongo;
pub mod seam;
pub mod synthetic;

pub use mongo::MongoSource;
pub use seam::{covered_up_to, current, id_of, BatchBuilder, Fetched, Source, Strategy};
