//! Streams: standard input and `--command` output, each stored as one file at the snapshot
//! root with the metadata of a stream (database dumps too, at their nested paths). Standard input is read here, chunked from a mapping
//! when it is a regular file (`mmap.rs`) and read otherwise; a command is run by `command.rs`.

#![forbid(unsafe_code)]

use std::ffi::OsStr;

use crate::error::Error;
use crate::format::chunker::ChunkerSpec;
use crate::source::command::{RunningCommands, emit_command};
use crate::source::database::emit_database;
use crate::source::meta::Meta;
use crate::source::mmap::{map_stdin, release_mapped};
use crate::source::parent::Prior;
use crate::source::{Item, Sink, SourceSpec, emit_chunks};

/// Mapped bytes already chunked are unmapped (not evicted) after this many, so a mapped input
/// adds at most this much to the resident set.
const RELEASE_BYTES: usize = 4 << 20;

/// Stream source `spec`, stored as file `name` of the root; `known` and `prior`: what the
/// parent holds of it.
pub(super) fn emit_stream(
    name: &OsStr,
    spec: &SourceSpec,
    chunker: &ChunkerSpec,
    commands: &RunningCommands,
    known: bool,
    prior: Option<Prior>,
    sink: &mut Sink<'_>,
) -> bool {
    let start = Item::FileStart {
        name: name.to_os_string(),
        meta: Meta::stream(),
        path: name.to_string_lossy().into_owned(),
        known,
        prior,
    };
    match spec {
        SourceSpec::Stdin { .. } => emit_stdin(start, chunker, sink),
        SourceSpec::Command { command, .. } => {
            emit_command(command, start, chunker, commands, sink)
        }
        SourceSpec::Database(db) => emit_database(db, start, chunker, commands, sink),
        SourceSpec::Path(_) => false,
    }
}

/// Standard input as one file: `start`, its chunks (cut from the mapping when stdin is a
/// regular file, else read), its end.
fn emit_stdin(start: Item, chunker: &ChunkerSpec, sink: &mut Sink<'_>) -> bool {
    if !sink(start) {
        return false;
    }
    if let Some(map) = map_stdin() {
        // Cut on two threads: in a delta backup the rest of the pipeline is cheap enough
        // that one thread cutting every byte would hold it back.
        let (mut consumed, mut released) = (0, 0);
        let release = |offset: usize, len: usize| release_mapped(&map, offset, len);
        let all = chunker.split_two_threads(&map, &release, &mut |c| {
            consumed += c.len();
            if !sink(Item::Chunk(c.to_vec())) {
                return false;
            }
            if consumed - released >= RELEASE_BYTES {
                release_mapped(&map, released, consumed - released);
                released = consumed;
            }
            true
        });
        return all && sink(Item::FileEnd { error: None });
    }
    match emit_chunks(std::io::stdin().lock(), chunker, sink) {
        Ok(true) => sink(Item::FileEnd { error: None }),
        Ok(false) => false,
        Err(e) => sink(Item::Fatal(Error::io("reading standard input", e))),
    }
}
