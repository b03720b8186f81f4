//! Sources: what a backup reads, turned into one ordered stream of [`Item`]s.
//!
//! Paths are walked depth-first in name-byte order (symlinks are stored, never followed),
//! by directory descriptor: every entry is reached with `*at` calls relative to its open
//! directory, so absolute paths longer than PATH_MAX are backed up too (one descriptor is open
//! per directory level). Files are opened with `O_NOFOLLOW` and, where the kernel permits,
//! `O_NOATIME`, so reading them does not touch their access time. Regular files the parent
//! snapshot holds unchanged are not opened ([`crate::source::parent`]); excluded entries are not
//! visited ([`crate::source::exclude`]);
//! standard input and `--command` output become single files at the snapshot root, database
//! dumps files under `postgres/` or `sqlite/`. File
//! content arrives already chunked. A command's exit status is checked when its output ends:
//! a non-zero exit or death by a signal yields [`Item::Fatal`], and the backup then writes no
//! snapshot. Unreadable entries yield [`Item::Warning`] and the walk goes on.
//!
//! Stored paths: an absolute source `/var/www` is stored as `var/www`; its parent directories are
//! stored with their own metadata, so several sources share one root.
//!
//! # Layout
//!
//! - `plan.rs`: the sources checked and arranged into one stored tree; [`produce`] emits it.
//! - `walk.rs`: the walk of a source path ([`Walker`]), entry by entry, with
//!   [`read_xattrs`].
//! - `meta.rs`: [`Meta`], what is recorded for every entry (a leaf module).
//! - `stream.rs`: standard input as a file; `command.rs`: `--command` children
//!   ([`RunningCommands`]); `database.rs`: the dumps of database sources ([`crate::db`]),
//!   stored like command output, at their nested paths.
//! - `mmap.rs`: the memory-mapped standard input and its SIGBUS guard, the only module here
//!   with `unsafe` code. Every other file here forbids it; this one cannot (a `forbid` in
//!   `mod.rs` would reach `mmap.rs` too), so the crate's `deny` holds here, and it holds only
//!   the module declarations, shared types and re-exports.
//! - [`parent`]: change detection against the parent snapshot; [`exclude`]: what is left out.

mod command;
mod database;
pub mod exclude;
mod meta;
mod mmap;
pub mod parent;
mod plan;
mod stream;
mod walk;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::format::chunker::ChunkerSpec;
use crate::format::tree::{ContentRef, NodeKind};
use crate::source::parent::Prior;

pub use command::{RunningCommands, describe_status};
pub use meta::Meta;
pub use plan::{absolute, check, produce};
pub use walk::{Walker, read_xattrs};

/// A source as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A file or directory.
    Path(PathBuf),
    /// Standard input, stored as a file named `name`.
    Stdin {
        /// File name in the snapshot.
        name: String,
    },
    /// A command run with `sh -c`; its standard output is stored as a file named `name`.
    Command {
        /// File name in the snapshot.
        name: String,
        /// The command line.
        command: String,
    },
    /// A database dumped by its engine ([`crate::db`]), stored at its path
    /// (`postgres/<host>/<db>.sql`, `sqlite/<path>`).
    Database(Box<crate::db::DbSource>),
}

/// One step of the source stream.
#[derive(Debug)]
pub enum Item {
    /// A directory begins; its entries follow until the matching `DirEnd`.
    DirStart { name: OsString, meta: Meta },
    /// The current directory ends.
    DirEnd,
    /// A regular file (or stream) begins; its chunks follow, then `FileEnd`. `known`: the
    /// parent snapshot has a file at this path (the file changed); `prior`: that version, when
    /// it can serve as delta bases.
    FileStart {
        name: OsString,
        meta: Meta,
        path: String,
        known: bool,
        prior: Option<Prior>,
    },
    /// A regular file the parent snapshot holds unchanged: its chunk list and anchors, not
    /// read again.
    Unchanged {
        name: OsString,
        meta: Meta,
        content: Vec<ContentRef>,
        anchors: Vec<u64>,
    },
    /// A chunk of the current file.
    Chunk(Vec<u8>),
    /// The current file ends; with an error it must be dropped from the snapshot.
    FileEnd { error: Option<String> },
    /// A symbolic link.
    Symlink {
        name: OsString,
        meta: Meta,
        target: OsString,
    },
    /// A fifo, device node or socket.
    Special {
        name: OsString,
        meta: Meta,
        kind: NodeKind,
    },
    /// Something was skipped; `incomplete` marks the snapshot incomplete.
    Warning { message: String, incomplete: bool },
    /// A command finished successfully.
    CommandOk { status: i32 },
    /// A database source's dump finished successfully: its completed record.
    Database(crate::format::snapshot::DatabaseRecord),
    /// The backup must not be committed.
    Fatal(Error),
}

/// Where items go; `false` means the consumer is gone and the producer must stop.
pub type Sink<'a> = dyn FnMut(Item) -> bool + 'a;

fn warn(sink: &mut Sink<'_>, path: &Path, what: &str, e: impl std::fmt::Display) -> bool {
    sink(Item::Warning {
        message: format!("{}: {what}: {e}", path.display()),
        incomplete: true,
    })
}

fn warn_soft(sink: &mut Sink<'_>, message: String) -> bool {
    sink(Item::Warning {
        message,
        incomplete: false,
    })
}

/// Chunks a reader into the sink. `Ok(false)`: the sink is gone.
fn emit_chunks(
    reader: impl Read,
    chunker: &ChunkerSpec,
    sink: &mut Sink<'_>,
) -> std::io::Result<bool> {
    let mut c = chunker.chunker(reader);
    while let Some(chunk) = c.next_chunk()? {
        if !sink(Item::Chunk(chunk)) {
            return Ok(false);
        }
    }
    Ok(true)
}
