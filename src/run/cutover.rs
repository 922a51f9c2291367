//! A sync's commit, on the servers: blocking the application's writes there.
//!
//! In: a sync job's `block_writes` (`source`, `destination` or `both`) and the clients of the
//! servers it names. Out: at submit, the job refused ([`check`]) when a server named cannot block
//! writes (`setUserWriteBlockMode` exists in mongod 6.0 and later; SecantusDB has no such
//! command), naming the server by its redacted URI and what it lacks, before anything is written:
//! a job must never fail at its commit for it. At commit, [`block_writes`] turns the block on
//! (or off, to lift it after a fail back) on one server, and [`block_at_commit`] on each side the
//! job names, at its moment: the source as the commit is asked for, the destination once every
//! change up to the commit point is applied.
//!
//! A server's support is read from `listCommands`; a server without `listCommands` (not a mongod)
//! is asked `setUserWriteBlockMode` without its required `global` field, which changes nothing
//! anywhere: "no such command" (code 59) means it lacks it, any other answer that it has it.

use mongodb::bson::doc;
use mongodb::Client;

use crate::mongo::{describe, error_code, redact_uri, Side};
use crate::spec::{BlockWrites, CopySpec};

/// The server command that blocks user writes.
pub const COMMAND: &str = "setUserWriteBlockMode";

/// MongoDB's "no such command".
const COMMAND_NOT_FOUND: i32 = 59;

/// Why writes cannot be (or were not) blocked.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    /// A server named by `block_writes` has no `setUserWriteBlockMode`.
    #[error(
        "block_writes: the {side} {uri} cannot block writes: it lacks the \
         `setUserWriteBlockMode` command (mongod 6.0 and later has it; {detail}); run the job \
         without block_writes (`--block-writes`) and stop the application's writes yourself \
         before the commit"
    )]
    Unsupported {
        side: Side,
        /// Redacted.
        uri: String,
        detail: String,
    },
    /// A server named by `block_writes` could not be asked.
    #[error("block_writes: cannot ask the {side} {uri} whether it can block writes: {reason}")]
    Unanswered {
        side: Side,
        uri: String,
        reason: String,
    },
    /// The server refused to turn the block on or off.
    #[error("the {side} {uri} did not {what} its writes: {reason}")]
    Failed {
        side: Side,
        uri: String,
        what: &'static str,
        reason: String,
    },
}

/// Whether the server behind `client` has `setUserWriteBlockMode`: `Err` with what it lacks
/// (as the server said it), or a failure to ask.
async fn supports(client: &Client) -> Result<Result<(), String>, String> {
    let admin = client.database("admin");
    match admin.run_command(doc! { "listCommands": 1 }).await {
        Ok(reply) => {
            let has = reply
                .get_document("commands")
                .is_ok_and(|commands| commands.contains_key(COMMAND));
            return Ok(if has {
                Ok(())
            } else {
                Err("listCommands does not list it".into())
            });
        }
        Err(e) if error_code(&e) == Some(COMMAND_NOT_FOUND) => {}
        Err(e) => return Err(describe(&e)),
    }
    // No listCommands: asked without its required field, which changes nothing.
    match admin.run_command(doc! { COMMAND: 1 }).await {
        Err(e) if error_code(&e) == Some(COMMAND_NOT_FOUND) => {
            Ok(Err(format!("it answers: {}", describe(&e))))
        }
        // The server answered otherwise (its field is missing): it has the command.
        Ok(_) => Ok(Ok(())),
        Err(e) if error_code(&e).is_some() => Ok(Ok(())),
        Err(e) => Err(describe(&e)),
    }
}

/// Refuses a job whose `block_writes` names a server that cannot block writes. `clients` are
/// the job's (source, destination), with their URIs for messages (redacted here).
pub async fn check(
    spec: &CopySpec,
    source: &Client,
    destination: &Client,
) -> Result<(), CutoverError> {
    let Some(block) = spec.block_writes else {
        return Ok(());
    };
    for side in block.sides() {
        let (client, uri) = match side {
            Side::Destination => (destination, &spec.to),
            _ => (source, &spec.from),
        };
        let uri = redact_uri(uri);
        match supports(client).await {
            Ok(Ok(())) => {}
            Ok(Err(detail)) => {
                return Err(CutoverError::Unsupported {
                    side: *side,
                    uri,
                    detail,
                })
            }
            Err(reason) => {
                return Err(CutoverError::Unanswered {
                    side: *side,
                    uri,
                    reason,
                })
            }
        }
    }
    Ok(())
}

/// Turns the block on user writes on (`on`) or off on the server of `client` (`side` and its
/// redacted `uri` name it in an error). Only for a server that [`check`] accepted.
pub async fn block_writes(
    client: &Client,
    side: Side,
    uri: &str,
    on: bool,
) -> Result<(), CutoverError> {
    client
        .database("admin")
        .run_command(doc! { COMMAND: 1, "global": on })
        .await
        .map(|_| ())
        .map_err(|e| CutoverError::Failed {
            side,
            uri: redact_uri(uri),
            what: if on { "block" } else { "unblock" },
            reason: describe(&e),
        })
}

/// The commit's block on one side, if `block` names it (`Ok(true)`: blocked; `Ok(false)`: not
/// asked). For the sync's commit path, in this order:
///
/// 1. `Side::Source` as the commit is asked for, before the source's end time is read: no
///    application write lands after the commit point;
/// 2. `Side::Destination` once every change up to the commit point is applied: the sync's own
///    writes are user writes too, and a block would refuse them.
///
/// `uri` is the side's connection string (redacted here for messages and the log).
pub async fn block_at_commit(
    block: Option<BlockWrites>,
    side: Side,
    client: &Client,
    uri: &str,
) -> Result<bool, CutoverError> {
    let Some(block) = block else {
        return Ok(false);
    };
    if !block.sides().contains(&side) {
        return Ok(false);
    }
    tracing::info!("commit: blocking writes on the {side} {}", redact_uri(uri));
    block_writes(client, side, uri, true).await?;
    Ok(true)
}

/// [`check`] at submit: connects to the servers `block_writes` names within `timeout`. A server
/// that does not answer in time is checked again by the job's run, before anything is written.
pub async fn probe(spec: &CopySpec, timeout: std::time::Duration) -> Result<(), CutoverError> {
    if spec.block_writes.is_none() {
        return Ok(());
    }
    let Ok((source, destination)) =
        crate::mongo::connect_both(&spec.from, &spec.to, 1, timeout).await
    else {
        return Ok(());
    };
    let checked = check(spec, &source, &destination).await;
    crate::mongo::close(source).await;
    crate::mongo::close(destination).await;
    match checked {
        Err(CutoverError::Unanswered { .. }) => Ok(()),
        other => other,
    }
}
