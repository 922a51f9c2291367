//! The write stage: where documents go, idempotently by `_id`.
//!
//! In: a destination namespace and raw documents. Out: the documents stored, acknowledged by the
//! destination, and the ones it refused ([`Refused`], with the reason). [`Sink`] is the seam; one
//! file per kind: [`mongo`] (a destination cluster), [`null`] (drops everything, to measure the
//! engine), [`journaling`] (a layer around another sink that journals what it acknowledged) and
//! [`transforming`] (a layer that transforms each document before the layers inside it).

pub mod journaling;
pub mod mongo;
pub mod null;
pub mod seam;
pub mod transforming;

pub use journaling::Journaled;
pub use mongo::MongoSink;
pub use null::NullSink;
pub use seam::{Refused, Sink, Write, MAX_DOCUMENT_BYTES};
pub use transforming::Transforming;
