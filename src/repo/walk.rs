//! Paths and walks in a snapshot's trees, for every operation that reads trees: [`resolve`]
//! finds a stored path (`snapshot restore --path`, `snapshot ls`); [`walk`] visits trees depth
//! first in stored order and is the one tree walk of restore, check, usage and listing.
//!
//! A walk loads one tree per directory level at a time, so its memory is bounded by depth ×
//! directory size, never by the size of the snapshot. The visitor decides, before a tree is
//! loaded, whether to enter it ([`Step`]): usage skips trees it has marked, check skips trees
//! it has judged, restore skips excluded directories, a flat listing skips every directory.
//!
//! [`reach`] and [`mark_all`] are the reachability walks: every blob a snapshot needs (trees,
//! chunks, and the bases of chunks stored as deltas), for prune's "used" set and for cost
//! accounting.

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::repo::Repo;
use crate::repo::catalog::DiskBlobSet;

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

/// Marks every blob reachable from `root` (its trees and file chunks, and the base of every
/// chunk stored as a delta: restoring the chunk needs it, so a prune must keep it) in `set`. A
/// tree already in the set is not walked again: everything below it is already marked. Fails
/// if a tree cannot be read — a caller deciding what is unused must not guess.
pub fn mark(repo: &Repo, root: &BlobId, set: &DiskBlobSet) -> Result<()> {
    reach(
        repo,
        root,
        |t| Ok(!set.insert(t)?),
        |id| set.insert(id).map(|_| ()),
    )
}

/// Walks the trees below `root`: a tree for which `skip` says true is not entered; `visit`
/// sees every entered tree, every file chunk in them and the base of every chunk stored as a
/// delta (restoring the chunk needs it, so a prune must keep it).
pub fn reach(
    repo: &Repo,
    root: &BlobId,
    skip: impl FnMut(&BlobId) -> Result<bool>,
    visit: impl FnMut(&BlobId) -> Result<()>,
) -> Result<()> {
    walk(
        repo,
        root,
        &mut Reach {
            repo,
            skip,
            visit,
            chains: true,
            whole: None,
        },
    )
}

/// The visitor of [`reach`].
struct Reach<'a, S, V> {
    repo: &'a Repo,
    skip: S,
    visit: V,
    /// Whether the chains of deltas are visited too.
    chains: bool,
    /// Deltas whose chains are not followed (they are being stored whole).
    whole: Option<&'a std::collections::HashSet<BlobId>>,
}

impl<S, V> TreeVisitor for Reach<'_, S, V>
where
    S: FnMut(&BlobId) -> Result<bool>,
    V: FnMut(&BlobId) -> Result<()>,
{
    fn tree(&mut self, id: &BlobId) -> Result<Step> {
        if (self.skip)(id)? {
            return Ok(Step::Skip);
        }
        (self.visit)(id)?;
        Ok(Step::Descend)
    }

    fn entry(&mut self, node: &Node) -> Result<()> {
        if node.kind != NodeKind::File {
            return Ok(());
        }
        for c in &node.content {
            (self.visit)(&c.0)?;
            if !self.chains {
                continue;
            }
            // A delta needs its whole chain, down to the whole blob at its root. The walk is
            // bounded: the catalog keeps only chains whose recorded depths descend.
            let mut at = c.0;
            for _ in 0..crate::format::MAX_CHAIN_DEPTH {
                if self.whole.is_some_and(|w| w.contains(&at)) {
                    break;
                }
                let Some(base) = self.repo.catalog().delta_base(&at)? else {
                    break;
                };
                (self.visit)(&base)?;
                at = base;
            }
        }
        Ok(())
    }
}

/// Every tree and file chunk the given roots reach, without the chains of deltas: what
/// snapshots name themselves (prune tells those from blobs needed only as bases).
pub fn mark_all_named<'a>(
    repo: &Repo,
    roots: impl IntoIterator<Item = &'a BlobId>,
) -> Result<DiskBlobSet> {
    mark_roots(repo, roots, false, None)
}

/// Every blob reachable from the given roots, as [`mark_all`] marks them, except the chains
/// of the deltas in `whole` (a prune stores those whole: they no longer need their bases).
pub fn mark_all_storing_whole<'a>(
    repo: &Repo,
    roots: impl IntoIterator<Item = &'a BlobId>,
    whole: &std::collections::HashSet<BlobId>,
) -> Result<DiskBlobSet> {
    mark_roots(repo, roots, true, Some(whole))
}

/// Marks what the roots reach in a new set: trees, file chunks and, with `chains`, the chains
/// of deltas (but not of those in `whole`).
fn mark_roots<'a>(
    repo: &Repo,
    roots: impl IntoIterator<Item = &'a BlobId>,
    chains: bool,
    whole: Option<&std::collections::HashSet<BlobId>>,
) -> Result<DiskBlobSet> {
    let set = DiskBlobSet::new()?;
    for r in roots {
        walk(
            repo,
            r,
            &mut Reach {
                repo,
                skip: |t: &BlobId| Ok(!set.insert(t)?),
                visit: |id: &BlobId| set.insert(id).map(|_| ()),
                chains,
                whole,
            },
        )?;
    }
    Ok(set)
}

/// Every blob reachable from the given roots.
pub fn mark_all<'a>(
    repo: &Repo,
    roots: impl IntoIterator<Item = &'a BlobId>,
) -> Result<DiskBlobSet> {
    let set = DiskBlobSet::new()?;
    for r in roots {
        mark(repo, r, &set)?;
    }
    Ok(set)
}
