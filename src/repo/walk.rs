//! Paths and walks in a snapshot's trees, for every operation that reads trees: [`resolve`]
//! finds a stored path (`snapshot restore --path`, `snapshot ls`); [`walk`] visits trees depth
//! first in stored order and is the one tree walk of restore, check, usage and listing.
//!
//! A walk loads one tree per directory level at a time, so its memory is bounded by depth ×
//! directory size, never by the size of the snapshot. The visitor decides, before a tree is
//! loaded, whether to enter it ([`Step`]): usage skips trees it has marked, check skips trees
//! it has judged, restore skips excluded directories, a flat listing skips every directory.

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repo::Repo;

/// What a path in a snapshot names.
#[allow(clippy::large_enum_variant)] // short-lived; boxing the node buys nothing
pub enum Resolved {
    /// The snapshot root.
    Root(Tree),
    /// One node.
    Node(Node),
}

/// Normalizes a snapshot path: no leading `/`, no empty, `.` or `..` components.
pub fn split_path(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Error::InvalidArgument(format!(
            "snapshot path {path:?} may not contain '..'"
        )));
    }
    Ok(parts)
}

/// Finds `path` (as stored, e.g. `etc/nginx`) in a snapshot; `None` or empty is the root.
pub fn resolve(repo: &Repo, snap: &Snapshot, path: Option<&str>) -> Result<Resolved> {
    let parts = split_path(path.unwrap_or(""))?;
    let mut tree = repo.load_tree(&snap.root)?;
    for (i, part) in parts.iter().enumerate() {
        let node = tree
            .nodes
            .into_iter()
            .find(|n| n.name == *part && n.name_hex.is_none())
            .ok_or_else(|| Error::PathNotInSnapshot(path.unwrap_or("").into()))?;
        if i + 1 == parts.len() {
            return Ok(Resolved::Node(node));
        }
        match (&node.kind, &node.subtree) {
            (NodeKind::Dir, Some(sub)) => tree = repo.load_tree(sub)?,
            _ => return Err(Error::PathNotInSnapshot(path.unwrap_or("").into())),
        }
    }
    Ok(Resolved::Root(tree))
}

/// Whether a walk goes into a directory or tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Enter it.
    Descend,
    /// Leave it out (and everything below it).
    Skip,
}

/// The callbacks of a [`walk`]. For a directory entry the order is: [`TreeVisitor::dir`];
/// if it says [`Step::Descend`], [`TreeVisitor::tree`] for its subtree, its entries if that
/// says so too (or [`TreeVisitor::unreadable`] if the tree cannot be loaded), then
/// [`TreeVisitor::leave`].
pub trait TreeVisitor {
    /// A tree about to be loaded (the walk's root, or the subtree of a directory entered).
    fn tree(&mut self, _id: &BlobId) -> Result<Step> {
        Ok(Step::Descend)
    }
    /// A tree that cannot be loaded; the default fails the walk.
    fn unreadable(&mut self, _id: &BlobId, e: Error) -> Result<()> {
        Err(e)
    }
    /// A directory entry.
    fn dir(&mut self, _node: &Node) -> Result<Step> {
        Ok(Step::Descend)
    }
    /// Done with a directory that [`TreeVisitor::dir`] entered.
    fn leave(&mut self, _node: &Node) -> Result<()> {
        Ok(())
    }
    /// Any other entry (file, symlink, special file).
    fn entry(&mut self, _node: &Node) -> Result<()> {
        Ok(())
    }
}

/// Walks the tree `root` and everything below it that the visitor enters.
pub fn walk(repo: &Repo, root: &BlobId, v: &mut dyn TreeVisitor) -> Result<()> {
    if v.tree(root)? == Step::Skip {
        return Ok(());
    }
    match repo.load_tree(root) {
        Ok(tree) => walk_nodes(repo, &tree.nodes, v),
        Err(e) => v.unreadable(root, e),
    }
}

/// Walks the entries `nodes` of a directory already loaded (a subdirectory [`resolve`]d).
pub fn walk_nodes(repo: &Repo, nodes: &[Node], v: &mut dyn TreeVisitor) -> Result<()> {
    for node in nodes {
        if node.kind != NodeKind::Dir {
            v.entry(node)?;
            continue;
        }
        if v.dir(node)? == Step::Skip {
            continue;
        }
        let sub = node
            .subtree
            .ok_or_else(|| Error::corrupt("tree", "directory without subtree"))?;
        walk(repo, &sub, v)?;
        v.leave(node)?;
    }
    Ok(())
}
