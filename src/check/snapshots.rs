//! Pass 3, snapshots: every snapshot's trees are walked by the memoizing [`Judge`], which names
//! each file that needs a blob that is missing, damaged or in a damaged pack.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};

use super::{AffectedSnapshot, CheckReport, Damage};
use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{Node, NodeKind};
use crate::progress::PhaseProgress;
use crate::repo::Repo;
use crate::repo::catalog::DiskBlobSet;
use crate::repo::walk::{self, Step, TreeVisitor};

/// Remembers, for trees already walked, which of their paths are affected.
struct TreeMemo {
    clean: DiskBlobSet,
    affected: HashMap<BlobId, Vec<String>>,
}

/// Pass 3: every snapshot, every tree, every file's blobs.
pub(super) fn check_snapshots(
    repo: &Repo,
    damage: &mut Damage,
    report: &mut CheckReport,
    progress: &dyn PhaseProgress,
) -> Result<()> {
    let names = repo.snapshot_names()?;
    progress.phase("snapshots", names.len() as u64);
    let mut memo = TreeMemo {
        clean: DiskBlobSet::new()?,
        affected: HashMap::new(),
    };
    let mut affected: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for name in names {
        progress.advance(1);
        report.snapshots += 1;
        let snap = match repo.load_snapshot(&name) {
            Ok(s) => s,
            Err(e) if super::storage_failure(&e) => return Err(e),
            Err(e) => {
                report.problems.push(format!("snapshot object {name}: {e}"));
                affected.insert((String::new(), name), Vec::new());
                continue;
            }
        };
        let paths = walk(repo, &snap.root, &mut memo, damage)?;
        if !paths.is_empty() {
            affected.insert((snap.time.clone(), name), paths);
        }
    }
    report.affected_snapshots = affected
        .into_iter()
        .map(|((time, id), paths)| AffectedSnapshot { id, time, paths })
        .collect();
    Ok(())
}

/// Whether a blob cannot be restored (missing from the index, damaged, or in a bad pack; for
/// a delta, also when any blob of its chain is).
fn blob_is_bad(repo: &Repo, id: &BlobId, damage: &mut Damage) -> Result<bool> {
    blob_is_bad_within(
        repo,
        id,
        damage,
        crate::format::MAX_CHAIN_DEPTH as usize + 1,
    )
}

/// [`blob_is_bad`] following at most `steps` blobs of a chain: a chain longer than any a
/// reader follows (a cycle in a damaged index) cannot be decoded.
fn blob_is_bad_within(repo: &Repo, id: &BlobId, damage: &mut Damage, steps: usize) -> Result<bool> {
    if damage.blobs.contains_key(id) {
        return Ok(true);
    }
    if steps == 0 {
        return Ok(true);
    }
    match repo.catalog().blob_row(id)? {
        None => {
            let why = match repo.catalog().lost_pack_of(id)? {
                Some(p) => format!(
                    "is needed by a snapshot, but its pack {} is missing",
                    p.to_hex()
                ),
                None => "is needed by a snapshot but is not in any index".into(),
            };
            damage.blob(*id, why);
            Ok(true)
        }
        Some((loc, base)) => Ok(damage.packs.contains_key(&loc.pack)
            || match base {
                Some(b) => blob_is_bad_within(repo, &b, damage, steps - 1)?,
                None => false,
            }),
    }
}

/// Paths below `tree` (relative to it) that need damaged or missing data; `/` stands for the
/// tree itself when it cannot be read.
fn walk(
    repo: &Repo,
    tree_id: &BlobId,
    memo: &mut TreeMemo,
    damage: &mut Damage,
) -> Result<Vec<String>> {
    let mut judge = Judge {
        repo,
        memo,
        damage,
        frames: vec![Frame::default()],
    };
    walk::walk(repo, tree_id, &mut judge)?;
    let root = judge
        .frames
        .pop()
        .ok_or_else(|| Error::InvalidArgument("check walk lost its root".into()))?;
    judge.settle(&root)?;
    Ok(root.paths)
}

/// One directory level of a [`Judge`]'s walk.
#[derive(Default)]
struct Frame {
    /// The directory's name.
    name: String,
    /// Its tree, once the walk reached it.
    tree: Option<BlobId>,
    /// Whether the memo already holds the verdict on that tree.
    memoized: bool,
    /// Affected paths below it, relative to it.
    paths: Vec<String>,
}

/// The visitor of [`walk`]: judges every file's blobs, memoizing the verdict per tree, so a
/// tree shared by many snapshots is judged once.
struct Judge<'a> {
    repo: &'a Repo,
    memo: &'a mut TreeMemo,
    damage: &'a mut Damage,
    frames: Vec<Frame>,
}

impl Judge<'_> {
    fn top(&mut self) -> Result<&mut Frame> {
        self.frames
            .last_mut()
            .ok_or_else(|| Error::InvalidArgument("check walk left its root".into()))
    }

    /// Memoizes the verdict on a finished directory's tree.
    fn settle(&mut self, f: &Frame) -> Result<()> {
        match f.tree {
            Some(id) if !f.memoized => {
                if f.paths.is_empty() {
                    self.memo.clean.insert(&id)?;
                } else {
                    self.memo.affected.insert(id, f.paths.clone());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl TreeVisitor for Judge<'_> {
    fn tree(&mut self, id: &BlobId) -> Result<Step> {
        let known = self.memo.affected.get(id).cloned();
        let clean = known.is_none() && self.memo.clean.contains(id)?;
        let bad = known.is_none() && !clean && blob_is_bad(self.repo, id, self.damage)?;
        let f = self.top()?;
        f.tree = Some(*id);
        if let Some(paths) = known {
            f.paths = paths;
            f.memoized = true;
            return Ok(Step::Skip);
        }
        if clean {
            f.memoized = true;
            return Ok(Step::Skip);
        }
        if bad {
            f.paths.push("/".to_string());
            return Ok(Step::Skip);
        }
        Ok(Step::Descend)
    }

    fn unreadable(&mut self, id: &BlobId, e: Error) -> Result<()> {
        if super::storage_failure(&e) {
            return Err(e);
        }
        self.damage.blob(*id, format!("tree cannot be read: {e}"));
        self.top()?.paths.push("/".to_string());
        Ok(())
    }

    fn dir(&mut self, node: &Node) -> Result<Step> {
        self.frames.push(Frame {
            name: node.name.clone(),
            ..Frame::default()
        });
        Ok(Step::Descend)
    }

    fn leave(&mut self, _node: &Node) -> Result<()> {
        let f = self
            .frames
            .pop()
            .ok_or_else(|| Error::InvalidArgument("check walk left its root".into()))?;
        self.settle(&f)?;
        let parent = self.top()?;
        for p in f.paths {
            parent.paths.push(if p == "/" {
                format!("{}/", f.name)
            } else {
                format!("{}/{p}", f.name)
            });
        }
        Ok(())
    }

    fn entry(&mut self, node: &Node) -> Result<()> {
        if node.kind != NodeKind::File {
            return Ok(());
        }
        let mut bad = false;
        for c in &node.content {
            bad |= blob_is_bad(self.repo, &c.0, self.damage)?;
        }
        if bad {
            self.top()?.paths.push(node.name.clone());
        }
        Ok(())
    }
}
