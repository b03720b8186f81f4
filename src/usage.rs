//! What snapshots reference, and what that costs: sets of reachable blob ids (kept in temporary
//! SQLite files, so memory stays flat) and exact byte counts computed from them.
//!
//! These are the facts behind a deduplicating repository's "incremental" and "differential"
//! sizes: what a snapshot added when it was made, what only it references (what forgetting it
//! frees), and what it needs beyond a base snapshot. Bytes are stored (sealed) blob bytes as the
//! index records them; raw bytes are the plaintext lengths.

#![forbid(unsafe_code)]

use crate::error::Result;
use crate::format::id::BlobId;
use crate::repo::Repo;
use crate::repo::catalog::DiskBlobSet;
use crate::repo::walk::{mark_all, reach};

/// A count of distinct blobs and their sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlobBytes {
    /// Distinct blobs.
    pub blobs: u64,
    /// Their stored (sealed) bytes.
    pub stored: u64,
    /// Their plaintext bytes.
    pub raw: u64,
}

/// The distinct blobs reachable from `root` that are not in `exclude`, counted once each.
/// With `exclude` = everything other snapshots reach, this is what only this snapshot holds;
/// with `exclude` = what a base snapshot reaches, what this one needs beyond it.
pub fn bytes_beyond(
    repo: &Repo,
    root: &BlobId,
    exclude: Option<&DiskBlobSet>,
) -> Result<BlobBytes> {
    let seen = DiskBlobSet::new()?;
    let mut total = BlobBytes::default();
    let excluded = |id: &BlobId| -> Result<bool> {
        match exclude {
            Some(x) => x.contains(id),
            None => Ok(false),
        }
    };
    let count = |id: &BlobId, total: &mut BlobBytes| -> Result<()> {
        if !excluded(id)? && seen.insert(id)? {
            let loc = repo.locate(id)?;
            total.blobs += 1;
            total.stored += loc.stored_len as u64;
            total.raw += loc.raw_len as u64;
        }
        Ok(())
    };
    let walked = DiskBlobSet::new()?;
    // A tree another snapshot reaches has all its blobs excluded too.
    reach(
        repo,
        root,
        |t| Ok(excluded(t)? || !walked.insert(t)?),
        |id| count(id, &mut total),
    )?;
    Ok(total)
}

/// The cost facts of one snapshot.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SnapshotCost {
    /// Bytes its backup added to the repository when it was made (the incremental size).
    pub added_when_created: u64,
    /// Every distinct blob it reaches.
    pub referenced: BlobBytes,
    /// Blobs no other snapshot reaches: what forgetting it (then pruning) frees.
    pub unique: BlobBytes,
    /// With a base snapshot: blobs it needs that the base does not have (the differential
    /// size against that base).
    pub beyond_base: Option<BlobBytes>,
}

/// Computes a snapshot's cost facts; `others` are the roots of every other snapshot.
pub fn snapshot_cost(
    repo: &Repo,
    snap: &crate::format::snapshot::Snapshot,
    others: &[BlobId],
    base: Option<&BlobId>,
) -> Result<SnapshotCost> {
    let rest = mark_all(repo, others)?;
    Ok(SnapshotCost {
        added_when_created: snap.summary.bytes_added,
        referenced: bytes_beyond(repo, &snap.root, None)?,
        unique: bytes_beyond(repo, &snap.root, Some(&rest))?,
        beyond_base: match base {
            Some(b) => Some(bytes_beyond(repo, &snap.root, Some(&mark_all(repo, [b])?))?),
            None => None,
        },
    })
}

/// Repository-wide figures for `tresor stats`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepoStats {
    /// Readable snapshots.
    pub snapshots: u64,
    /// Data blobs (file chunks) indexed.
    pub chunks: u64,
    /// Tree blobs indexed.
    pub trees: u64,
    /// Bytes the snapshots hold, added up (what restoring them all would write).
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct blobs (after dedup, before compression).
    pub raw_bytes: u64,
    /// Sealed bytes of those blobs (after compression and encryption).
    pub blob_bytes: u64,
    /// Bytes of all packs and index objects: what the repository occupies.
    pub stored_bytes: u64,
    /// logical / raw.
    pub dedup_ratio: f64,
    /// raw / blob bytes.
    pub compression_ratio: f64,
    /// logical / stored.
    pub total_ratio: f64,
}

/// Computes [`RepoStats`] from the catalog and the snapshot summaries.
pub fn repo_stats(repo: &Repo) -> Result<RepoStats> {
    let (snaps, _) = repo.snapshots()?;
    let t = repo.catalog().blob_totals()?;
    let stored = repo.stored_bytes()?;
    let logical: u64 = snaps.iter().map(|(_, s)| s.summary.bytes_read).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(RepoStats {
        snapshots: snaps.len() as u64,
        chunks: t.data_blobs,
        trees: t.tree_blobs,
        logical_bytes: logical,
        raw_bytes: t.raw,
        blob_bytes: t.stored,
        stored_bytes: stored,
        dedup_ratio: ratio(logical, t.raw),
        compression_ratio: ratio(t.raw, t.stored),
        total_ratio: ratio(logical, stored),
    })
}
