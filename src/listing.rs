//! Looking inside snapshots without restoring: `snapshot ls` and `snapshot diff`.
//!
//! `diff` walks both snapshots' trees side by side and skips every subtree whose id is equal
//! (identical content and metadata), so comparing two nightly snapshots of a large, mostly
//! unchanged tree reads only the directories that changed.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::error::Result;
use crate::format::id::BlobId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::repo::Repo;
use crate::repo::walk::{self, Resolved, Step, TreeVisitor};

/// One entry as `snapshot ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ListEntry {
    /// Path as the snapshot stores it.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits, octal text.
    pub mode: String,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// Link target (symlinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Chardev => "chardev",
        NodeKind::Blockdev => "blockdev",
        NodeKind::Socket => "socket",
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn entry(path: String, n: &Node) -> ListEntry {
    let secs = n.mtime_ns.div_euclid(1_000_000_000);
    let nanos = n.mtime_ns.rem_euclid(1_000_000_000) as u32;
    ListEntry {
        path,
        kind: kind_name(n.kind),
        size: if n.kind == NodeKind::File { n.size } else { 0 },
        mode: format!("{:04o}", n.mode & 0o7777),
        mtime: chrono::DateTime::from_timestamp(secs, nanos)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        target: n.target.clone(),
    }
}

/// Lists `path` of a snapshot (its entries if it is a directory), recursively if asked.
pub fn ls(
    repo: &Repo,
    snap: &Snapshot,
    path: Option<&str>,
    recursive: bool,
) -> Result<Vec<ListEntry>> {
    let prefix = walk::split_path(path.unwrap_or(""))?.join("/");
    let mut out = Vec::new();
    let start = match walk::resolve(repo, snap, path)? {
        Resolved::Root(_) => Some(snap.root),
        Resolved::Node(n) if n.kind == NodeKind::Dir => n.subtree,
        Resolved::Node(n) => {
            out.push(entry(prefix, &n));
            return Ok(out);
        }
    };
    if let Some(t) = start {
        let mut lister = Lister {
            dirs: vec![prefix],
            recursive,
            out: &mut out,
        };
        walk::walk(repo, &t, &mut lister)?;
    }
    Ok(out)
}

/// The visitor of [`ls`]: one entry per node, in stored order, with its path.
struct Lister<'a> {
    /// The path of the directory being listed.
    dirs: Vec<String>,
    recursive: bool,
    out: &'a mut Vec<ListEntry>,
}

impl Lister<'_> {
    fn push(&mut self, n: &Node) -> String {
        let p = join(self.dirs.last().map_or("", |d| d.as_str()), &n.name);
        self.out.push(entry(p.clone(), n));
        p
    }
}

impl TreeVisitor for Lister<'_> {
    fn dir(&mut self, node: &Node) -> Result<Step> {
        let p = self.push(node);
        if !self.recursive {
            return Ok(Step::Skip);
        }
        self.dirs.push(p);
        Ok(Step::Descend)
    }

    fn leave(&mut self, _node: &Node) -> Result<()> {
        self.dirs.pop();
        Ok(())
    }

    fn entry(&mut self, node: &Node) -> Result<()> {
        self.push(node);
        Ok(())
    }
}

/// One difference between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Path as the snapshots store it.
    pub path: String,
    /// `added`, `removed` or `modified`.
    pub change: &'static str,
    /// `file`, `dir` or `symlink` (after the change; before it for removals).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size before (files that existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    /// Size after (files that exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_after: Option<u64>,
}

/// Counts over a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffSummary {
    /// Entries added.
    pub added: u64,
    /// Entries removed.
    pub removed: u64,
    /// Entries modified (content or metadata).
    pub modified: u64,
    /// File bytes in added files.
    pub bytes_added: u64,
    /// File bytes in removed files.
    pub bytes_removed: u64,
}

/// Every entry added, removed or modified from snapshot `a` to snapshot `b`, in path order.
/// A file is modified when its content, size, mode, owner or mtime differ; a symlink when its
/// target or metadata differ; a directory only through what it holds (an added or removed
/// directory is listed with everything below it).
pub fn diff(repo: &Repo, a: &Snapshot, b: &Snapshot) -> Result<(Vec<Change>, DiffSummary)> {
    let mut out = Vec::new();
    diff_trees(repo, Some(&a.root), Some(&b.root), "", &mut out)?;
    let mut s = DiffSummary::default();
    for c in &out {
        match c.change {
            "added" => {
                s.added += 1;
                s.bytes_added += c.size_after.unwrap_or(0);
            }
            "removed" => {
                s.removed += 1;
                s.bytes_removed += c.size_before.unwrap_or(0);
            }
            _ => s.modified += 1,
        }
    }
    Ok((out, s))
}

fn children(repo: &Repo, tree: Option<&BlobId>) -> Result<BTreeMap<Vec<u8>, Node>> {
    Ok(match tree {
        Some(t) => repo
            .load_tree(t)?
            .nodes
            .into_iter()
            .map(|n| (n.name_bytes(), n))
            .collect(),
        None => BTreeMap::new(),
    })
}

fn file_size(n: &Node) -> Option<u64> {
    (n.kind == NodeKind::File).then_some(n.size)
}

fn diff_trees(
    repo: &Repo,
    a: Option<&BlobId>,
    b: Option<&BlobId>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a.is_some() && a == b {
        return Ok(());
    }
    let (ca, mut cb) = (children(repo, a)?, children(repo, b)?);
    let mut names: Vec<Vec<u8>> = ca.keys().chain(cb.keys()).cloned().collect();
    names.sort();
    names.dedup();
    for name in names {
        let na = ca.get(&name);
        let nb = cb.remove(&name);
        let path = join(prefix, &String::from_utf8_lossy(&name));
        match (na, nb) {
            (Some(x), Some(y)) if x.kind == y.kind => {
                if x.kind == NodeKind::Dir {
                    diff_trees(repo, x.subtree.as_ref(), y.subtree.as_ref(), &path, out)?;
                } else if !x.same_as(&y) {
                    out.push(Change {
                        path,
                        change: "modified",
                        kind: kind_name(y.kind),
                        size_before: file_size(x),
                        size_after: file_size(&y),
                    });
                }
            }
            (x, y) => {
                if let Some(x) = x {
                    removed_or_added(repo, x, &path, "removed", out)?;
                }
                if let Some(y) = y {
                    removed_or_added(repo, &y, &path, "added", out)?;
                }
            }
        }
    }
    Ok(())
}

/// Lists `n` and, for a directory, everything below it, as added or removed.
fn removed_or_added(
    repo: &Repo,
    n: &Node,
    path: &str,
    change: &'static str,
    out: &mut Vec<Change>,
) -> Result<()> {
    let size = file_size(n);
    out.push(Change {
        path: path.to_string(),
        change,
        kind: kind_name(n.kind),
        size_before: if change == "removed" { size } else { None },
        size_after: if change == "added" { size } else { None },
    });
    if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
        for c in repo.load_tree(&sub)?.nodes {
            removed_or_added(repo, &c, &join(path, &c.name), change, out)?;
        }
    }
    Ok(())
}
