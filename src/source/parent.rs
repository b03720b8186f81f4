//! Change detection: which snapshot is a backup's parent, and the lazy walk of its trees that
//! lets the source walk skip reading files that did not change.
//!
//! **Parent choice** ([`choose`]): `--parent SNAP` if given (id, prefix or `latest`), else the
//! latest snapshot of the same host whose *set of path sources* equals this run's (stdin,
//! command and database sources are ignored for the match); a run of streams only (stdin,
//! commands, databases) takes the latest one with no paths and the same set of stream names
//! (a database's stored path), whose versions of the streams serve as delta bases ([`Prior`]).
//! `--force` uses no parent.
//!
//! **Match rule** ([`ParentCursor::file`]): a regular file is unchanged when the parent has a
//! regular file at the same stored path with equal size, mtime, ctime, inode and device (a v1
//! node, with no ctime/inode, never matches), its chunk lengths add up to that size, and every
//! one of its chunk ids is still in the catalog. Its chunk list is then reused without opening
//! the file. Otherwise the file is read.
//!
//! **Threads.** The walk runs on the backup's reader thread, which must decide *before* opening
//! a file, so the lookups live there. The `Repo`'s catalog connection belongs to the consumer
//! thread (a SQLite connection is not `Sync`, and that one writes), so the cursor reads through
//! a [`RepoView`]: the read path and a second, read-only connection to the same catalog file
//! (WAL mode lets it read while the consumer writes).
//! Nothing crosses back: the verdict travels in the item stream.
//!
//! **Memory.** The walk is depth-first in name-byte order and trees are sorted by name bytes;
//! [`ParentCursor`] keeps one loaded parent tree per directory level of the walk (or `None`
//! where the parent has no such directory), so memory is bounded by depth × directory size,
//! never by the size of the parent snapshot. A parent tree that cannot be loaded is a warning:
//! that subtree is read in full.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::error::Result;
use crate::format::id::{BlobId, ObjectId};
use crate::format::snapshot::{Snapshot, SourceRecord};
use crate::format::tree::{ContentRef, Node, NodeKind, Xattr};
use crate::repo::{Repo, RepoView};
use crate::source::meta::Meta;

/// Picks the parent snapshot: `reference` if given, else the latest snapshot of `host` with
/// the same set of path sources as `sources`. `None` when there is none.
pub fn choose(
    repo: &Repo,
    reference: Option<&str>,
    host: &str,
    sources: &[SourceRecord],
) -> Result<Option<(ObjectId, Snapshot)>> {
    if let Some(r) = reference {
        return repo.find_snapshot(r).map(Some);
    }
    let want = path_set(sources);
    let streams = stream_set(sources);
    if want.is_empty() && streams.is_empty() {
        return Ok(None);
    }
    let (snaps, _damaged) = repo.snapshots()?;
    Ok(snaps.into_iter().rev().find(|(_, s)| {
        s.host == host
            && path_set(&s.sources) == want
            && (!want.is_empty() || stream_set(&s.sources) == streams)
    }))
}

fn stream_set(sources: &[SourceRecord]) -> BTreeSet<&str> {
    sources
        .iter()
        .filter_map(|s| match s {
            SourceRecord::Stdin { name } | SourceRecord::Command { name, .. } => {
                Some(name.as_str())
            }
            SourceRecord::Database(d) => Some(d.name.as_str()),
            _ => None,
        })
        .collect()
}

fn path_set(sources: &[SourceRecord]) -> BTreeSet<&str> {
    sources
        .iter()
        .filter_map(|s| match s {
            SourceRecord::Path { path } => Some(path.as_str()),
            _ => None,
        })
        .collect()
}

/// A file's previous version as the parent stores it: its chunks and their anchors, from which
/// the backup picks delta bases for the chunks that changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prior {
    /// The chunk list.
    pub content: Vec<ContentRef>,
    /// One anchor per chunk ([`crate::format::tree::chunk_anchor`]).
    pub anchors: Vec<u64>,
}

impl Prior {
    /// The prior version of a file node, when it has anchors to match against.
    fn of(n: &Node) -> Option<Prior> {
        (n.kind == NodeKind::File && !n.content.is_empty() && n.anchors.len() == n.content.len())
            .then(|| Prior {
                content: n.content.clone(),
                anchors: n.anchors.clone(),
            })
    }
}

/// What the parent says about a regular file.
#[derive(Debug, PartialEq, Eq)]
pub enum FileChange {
    /// No regular file at this path in the parent (or no parent).
    New,
    /// The parent had a file here, but it must be read again; its version there, if it can
    /// serve as delta bases.
    Changed(Option<Prior>),
    /// Unchanged: reuse this chunk list, these extended attributes (setting an xattr moves
    /// ctime, so equal ctimes mean equal xattrs; the file need not be asked again) and anchors.
    Unchanged(Vec<ContentRef>, Vec<Xattr>, Vec<u64>),
}

/// The parent's directories along the walk's current path.
pub struct ParentCursor {
    trees: Option<RepoView>,
    /// One entry per directory the walk is in; `None` where the parent has no such directory.
    stack: Vec<Option<Vec<Node>>>,
}

impl ParentCursor {
    /// No parent: every file is new.
    pub fn none() -> ParentCursor {
        ParentCursor {
            trees: None,
            stack: vec![None],
        }
    }

    /// Starts at the root tree of the parent snapshot.
    pub fn new(trees: RepoView, root: &BlobId) -> Result<ParentCursor> {
        let tree = trees.load_tree(root)?;
        Ok(ParentCursor {
            trees: Some(trees),
            stack: vec![Some(tree.nodes)],
        })
    }

    fn lookup(&self, name: &OsStr) -> Option<&Node> {
        let nodes = self.stack.last()?.as_ref()?;
        let key = name.as_bytes();
        nodes
            .binary_search_by(|n| n.name_bytes().as_slice().cmp(key))
            .ok()
            .and_then(|i| nodes.get(i))
    }

    /// The walk enters directory `name` of the current one. A parent tree that cannot be
    /// loaded yields a message and the subtree is walked as if the parent lacked it.
    pub fn enter(&mut self, name: &OsStr) -> Option<String> {
        let sub = match (&self.trees, self.lookup(name)) {
            (Some(t), Some(n)) if n.kind == NodeKind::Dir => n.subtree.map(|id| (id, t)),
            _ => None,
        };
        let (frame, warning) = match sub {
            None => (None, None),
            Some((id, t)) => match t.load_tree(&id) {
                Ok(tree) => (Some(tree.nodes), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "parent tree of {}: {e}; its files are read again",
                        name.to_string_lossy()
                    )),
                ),
            },
        };
        self.stack.push(frame);
        warning
    }

    /// The walk leaves the current directory.
    pub fn leave(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
        }
    }

    /// The verdict for regular file `name` of the current directory with metadata `meta`.
    pub fn file(&self, name: &OsStr, meta: &Meta) -> FileChange {
        let Some(n) = self.lookup(name) else {
            return FileChange::New;
        };
        if n.kind != NodeKind::File {
            return FileChange::New;
        }
        let same = n.ctime_ns != 0
            && n.size == meta.size
            && n.mtime_ns == meta.mtime_ns
            && n.ctime_ns == meta.ctime_ns
            && n.inode == meta.inode
            && n.device == meta.device
            && n.content.iter().map(|c| c.1 as u64).sum::<u64>() == n.size;
        if !same {
            return FileChange::Changed(Prior::of(n));
        }
        match self.trees.as_ref().map(|t| t.all_present(&n.content)) {
            Some(Ok(true)) => {
                FileChange::Unchanged(n.content.clone(), n.xattrs.clone(), n.anchors.clone())
            }
            // A lookup error is no reason to fail: read the file.
            _ => FileChange::Changed(Prior::of(n)),
        }
    }

    /// What the parent holds of stream `name` (stdin or command output) at the current level:
    /// whether it has a file of that name (the stream is then counted as changed, not new), and
    /// that version when it can serve as delta bases.
    pub fn stream(&self, name: &OsStr) -> (bool, Option<Prior>) {
        match self.lookup(name) {
            Some(n) if n.kind == NodeKind::File => (true, Prior::of(n)),
            _ => (false, None),
        }
    }
}
