//! One job end to end, per command: [`copy`] (connect, select, make the schema, run the engine,
//! verify, summarise; for a sync, then [`sync`]: follow the source's changes until cutover),
//! [`replay`] (a journal into a database) and [`verify`] (compare two
//! clusters), [`plan`] (a dry run of a copy); [`schema`] is the schema part they share, and
//! [`overlap`] the rule that keeps each from writing what it reads.
//!
//! In: a validated spec. Out: a summary, or the first error. The command line and the service
//! both run jobs through here, so there is one set of rules per command.

pub mod copy;
pub mod outcome;
pub mod overlap;
pub mod plan;
pub mod replay;
pub mod schema;
pub mod sync;
pub mod verify;
