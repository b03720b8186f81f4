//! Database sources: a dump started by its engine ([`crate::db::start_dump`]) and its output
//! chunked like a command's, so that a day's dump is stored as deltas against the previous
//! day's; when the dumper fails (or is killed), [`Item::Fatal`] and no snapshot; when it
//! succeeds, its completed record ([`Item::Database`]) follows the file's end.

#![forbid(unsafe_code)]

use crate::db::{DbSource, start_dump};
use crate::error::Error;
use crate::format::chunker::ChunkerSpec;
use crate::source::command::RunningCommands;
use crate::source::{Item, Sink, emit_chunks, warn_soft};

/// Dumps `db` and stores its output as one file: `start`, its chunks, its end, then its record.
pub(super) fn emit_database(
    db: &DbSource,
    start: Item,
    chunker: &ChunkerSpec,
    commands: &RunningCommands,
    sink: &mut Sink<'_>,
) -> bool {
    let mut dump = match start_dump(db) {
        Ok(d) => d,
        Err(e) => return sink(Item::Fatal(no_snapshot(e))),
    };
    if let Some(pid) = dump.pid() {
        commands.started(pid);
    }
    let ended = |dump: &crate::db::Dump| {
        if let Some(pid) = dump.pid() {
            commands.ended(pid);
        }
    };
    let Some(output) = dump.take_output() else {
        ended(&dump);
        dump.abort();
        return sink(Item::Fatal(Error::Database {
            what: format!("database source {}", db.path),
            reason: "the dump has no output".into(),
        }));
    };
    if !sink(start) {
        ended(&dump);
        dump.abort();
        return false;
    }
    let read = emit_chunks(output, chunker, sink);
    match read {
        Ok(true) => {}
        Ok(false) => {
            ended(&dump);
            dump.abort();
            return false;
        }
        Err(e) => {
            ended(&dump);
            dump.abort();
            return sink(Item::Fatal(Error::Database {
                what: format!("database source {}", db.path),
                reason: format!("its dump could not be read: {e}; no snapshot was written"),
            }));
        }
    }
    ended(&dump);
    match dump.finish() {
        Ok(done) => {
            if !sink(Item::FileEnd { error: None }) {
                return false;
            }
            for w in done.warnings {
                if !warn_soft(sink, w) {
                    return false;
                }
            }
            sink(Item::Database(done.record))
        }
        Err(e) => sink(Item::Fatal(no_snapshot(e))),
    }
}

/// A database source's failure, saying what it means for the backup.
fn no_snapshot(e: Error) -> Error {
    match e {
        Error::Database { what, reason } => Error::Database {
            what,
            reason: format!("{reason}; no snapshot was written"),
        },
        other => other,
    }
}
