//! `snapshot restore`: snapshot → trees → chunks → files, or one file → a writer.
//!
//! File content is read in batches of chunks: the catalog locates each chunk, the batch's reads
//! are planned per pack (neighbouring chunks of a pack coalesced into one ranged read, see
//! [`crate::repo::BlobReader::read_many`]) and fetched and decoded in parallel (authenticate,
//! bounded inflate, id check), and a writer thread writes the previous batch meanwhile. A chunk that fails to decode stops the restore with an
//! error naming the blob and its pack: never silently wrong bytes.
//!
//! A directory restore walks the trees on one thread (the catalog is not `Sync`), creating
//! directories as it goes and collecting small files into groups (at most [`GROUP_FILES`] files
//! or [`GROUP_BYTES`] bytes); each group is located on the walking thread and checked, its
//! chunks read as one coalesced batch, and its files written in parallel. A big file uses the
//! batched pipeline above. All-zero 4 KiB
//! blocks become holes. Files that already exist are kept or rewritten per [`Overwrite`].
//! Symlinks in the target are never followed: an entry in the way is removed and recreated,
//! files are created with `O_EXCL | O_NOFOLLOW`. Hard links are linked to the first node of
//! their group this run restored, after all file content; then directory metadata, deepest
//! first, so writing files does not disturb restored mtimes. Problems that leave an entry
//! restored but imperfect (an xattr refused, a device node without root, a socket) are
//! warnings; an entry that could not be restored at all is a failure and the walk goes on;
//! damage in the repository or a full disk stops the restore.

#![forbid(unsafe_code)]

pub mod selection;

mod content;
mod dir;
mod meta;
mod paths;
mod verify;
mod visit;

use std::path::{Path, PathBuf};

pub use content::{HoleWriter, restore_to_writer, write_content};
pub use dir::restore_to_dir;
pub use verify::{content_matches, verify_file, verify_restore};

/// Plaintext bytes decoded per batch.
const BATCH_BYTES: u64 = 32 << 20;

/// Files written in parallel per group, at most.
pub const GROUP_FILES: usize = 256;
/// Content bytes per group of small files, at most (a file over [`BATCH_BYTES`] goes alone).
pub const GROUP_BYTES: u64 = 64 << 20;

/// What to do with a file that already exists in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// The result equals the snapshot; an existing file of the right size whose content hashes
    /// to the node's chunk ids is kept (only its metadata is applied), others are rewritten.
    #[default]
    Always,
    /// Keep (and apply metadata to) an existing file whose size and mtime match; no reading.
    IfChanged,
    /// Leave every existing entry untouched.
    Never,
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// `--include` globs (see [`crate::restore::selection`]).
    pub include: Vec<String>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// Existing files.
    pub overwrite: Overwrite,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreSummary {
    /// Files whose content was written.
    pub files: u64,
    /// Content bytes written (holes included).
    pub bytes: u64,
    /// Existing files kept as they were (content identical, unchanged, or `never`).
    pub files_skipped: u64,
    /// Content bytes of the kept files.
    pub bytes_skipped: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links made (or found already in place) to a file restored in this run.
    pub hardlinks: u64,
    /// Fifos, device nodes and sockets created.
    pub specials: u64,
    /// Entries restored imperfectly or skipped on purpose, one line each.
    pub warnings: Vec<String>,
    /// Entries that could not be restored at all, one line each.
    pub failures: Vec<String>,
}

/// What `verify_restore` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Regular files compared.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files that differ.
    pub mismatches: Vec<Mismatch>,
}

/// One restored file that differs from the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// The file in the target (shown lossily in JSON when not UTF-8).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// How it differs.
    pub reason: String,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}
