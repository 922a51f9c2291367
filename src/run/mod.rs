//! One job end to end, one driver per mode: [`copy`] (connect, select, make the schema, run the
//! engine, verify, summarise; the mode's driver in between), [`moving`] (a move's passes and its
//! deletes at the source), [`sync`] (a sync's start position, then the source's changes until
//! cutover), [`share`] (a job's partitions shared between processes); [`replay`] (a journal into
//! a database), [`verify`] (compare two clusters) and [`plan`] (a dry run of a copy).
//! [`cutover`] is what a sync's commit does on the servers (writes blocked), [`reverse`] a
//! committed sync's fail back (a sync from its destination back to its source).
//! [`guard`] reads the load guard's signals for every job while it runs.
//! [`schema`] is the schema part they share, [`overlap`] the rule that keeps each from writing
//! what it reads, and [`outcome`] how a finished job is judged, for the command line and the
//! service alike.
//!
//! In: a validated spec. Out: a summary, or the first error. The command line and the service
//! both run jobs through here, so there is one set of rules per command.

pub mod compare;
pub mod copy;
pub mod cutover;
pub mod digest;
pub mod guard;
pub mod moving;
pub mod outcome;
pub mod overlap;
pub mod plan;
pub mod reconcile;
pub mod replay;
pub mod reverse;
pub mod schema;
pub mod share;
pub mod sync;
pub mod verifier;
pub mod verify;
