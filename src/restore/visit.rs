//! The selected walk that restore and verify share: the entries it starts from, the
//! [`Visitor`] callbacks, and the [`Selected`] adapter applying a [`Selection`] to the
//! repository's tree walk.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use super::Overwrite;
use super::paths::plain_parents;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Node;
use crate::repo::Repo;
use crate::repo::walk::{self, Resolved, Step, TreeVisitor, resolve, split_path};
use crate::restore::selection::Selection;

/// Callbacks of [`walk`] over the selected part of a snapshot.
pub(super) trait Visitor {
    /// A directory the walk enters (`included`: selected by itself or an ancestor).
    fn enter(&mut self, path: &Path, node: &Node, included: bool) -> Result<()>;
    /// Leaving the directory entered last.
    fn leave(&mut self) -> Result<()>;
    /// A selected non-directory entry.
    fn entry(&mut self, path: PathBuf, node: &Node) -> Result<()>;
}

/// Walks `nodes` (the entries of the directory `dir`, stored path `rel`) depth first with the
/// repository's tree walk, calling the visitor for what the selection keeps. Excluded
/// directories are not loaded.
pub(super) fn walk(
    repo: &Repo,
    sel: &Selection,
    dir: &Path,
    rel: &Path,
    nodes: &[Node],
    v: &mut dyn Visitor,
) -> Result<()> {
    let mut selected = Selected {
        sel,
        frames: vec![(dir.to_path_buf(), rel.to_path_buf(), false)],
        v,
    };
    walk::walk_nodes(repo, nodes, &mut selected)
}

/// Applies a [`Selection`] to a tree walk and keeps the paths: what [`walk`] hands the
/// [`Visitor`].
struct Selected<'a> {
    sel: &'a Selection,
    /// Per directory entered: its path, its stored path, whether it is included.
    frames: Vec<(PathBuf, PathBuf, bool)>,
    v: &'a mut dyn Visitor,
}

impl Selected<'_> {
    /// The path, stored path and inclusion of `node`, or `None` when it is excluded.
    fn place(&self, node: &Node) -> Result<Option<(PathBuf, PathBuf, bool)>> {
        crate::interrupt::check()?;
        let name = node.os_name()?;
        let (dir, rel, inherited) = self
            .frames
            .last()
            .ok_or_else(|| Error::InvalidArgument("restore walk left its start".into()))?;
        let crel = rel.join(&name);
        if self.sel.excluded(&crel, &name) {
            return Ok(None);
        }
        let included = *inherited || self.sel.included(&crel, &name);
        Ok(Some((dir.join(&name), crel, included)))
    }
}

impl TreeVisitor for Selected<'_> {
    fn dir(&mut self, node: &Node) -> Result<Step> {
        let Some((path, crel, included)) = self.place(node)? else {
            return Ok(Step::Skip);
        };
        self.v.enter(&path, node, included)?;
        self.frames.push((path, crel, included));
        Ok(Step::Descend)
    }

    fn leave(&mut self, _node: &Node) -> Result<()> {
        self.frames.pop();
        self.v.leave()
    }

    fn entry(&mut self, node: &Node) -> Result<()> {
        match self.place(node)? {
            Some((path, _, true)) => self.v.entry(path, node),
            _ => Ok(()),
        }
    }
}

/// The entries a restore of `path` starts from: (target directory, stored path of it, nodes).
pub(super) fn start(
    repo: &Repo,
    snap: &Snapshot,
    path: Option<&str>,
    target: &Path,
    create: Option<Overwrite>,
) -> Result<(PathBuf, PathBuf, Vec<Node>)> {
    match resolve(repo, snap, path)? {
        Resolved::Root(tree) => Ok((target.to_path_buf(), PathBuf::new(), tree.nodes)),
        Resolved::Node(node) => {
            let parts = split_path(path.unwrap_or(""))?;
            let parents = &parts[..parts.len().saturating_sub(1)];
            let dir = match create {
                Some(overwrite) => plain_parents(target, parents, overwrite)?,
                None => parents.iter().fold(target.to_path_buf(), |p, c| p.join(c)),
            };
            let rel: PathBuf = parents.iter().collect();
            Ok((dir, rel, vec![node]))
        }
    }
}
