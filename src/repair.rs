//! `tresor repair`: rebuilds the index from pack headers, adopts packs no index object lists,
//! and finds (or forgets) snapshots whose data is gone.
//!
//! Every repair only adds before it removes: new index objects are durable before an old one
//! is deleted, so a repair killed at any instant leaves a repository at least as complete as
//! before (at worst with duplicate index entries, which are harmless).

use std::collections::HashSet;
use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{Backend, ObjectKind};
use crate::checker::{self, AffectedSnapshot, CheckOptions, CheckProgress};
use crate::crypto::MasterKey;
use crate::error::Result;
use crate::id::ObjectId;
use crate::index::{self, IndexedPack};
use crate::pack;
use crate::repo::Repo;

/// Index objects are cut at about this many entries (~2 MiB sealed).
const ENTRIES_PER_INDEX: usize = 50_000;

/// What `repair index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IndexRepair {
    /// Packs whose header was read and indexed.
    pub packs: u64,
    /// Blobs they hold.
    pub blobs: u64,
    /// New index objects written.
    pub index_objects_written: u64,
    /// Old index objects removed after the new ones were durable.
    pub index_objects_removed: u64,
    /// Packs whose header could not be read: left in place, their blobs unindexed.
    pub unreadable_packs: Vec<String>,
}

/// What adopting unindexed packs did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Adoption {
    /// Packs adopted into a new index object.
    pub packs: u64,
    /// Blobs in them, now reusable by dedup.
    pub blobs: u64,
    /// Packs that could not be adopted (header unreadable), with the reason.
    pub skipped: Vec<String>,
}

/// Reads headers of `packs` in parallel; good ones become index entries.
fn read_headers(
    backend: &dyn Backend,
    key: &MasterKey,
    packs: &[(ObjectId, u64)],
) -> Vec<std::result::Result<IndexedPack, String>> {
    packs
        .par_iter()
        .map(|(id, size)| {
            pack::read_header(backend, key, id, *size)
                .map(|entries| IndexedPack {
                    id: *id,
                    size: *size,
                    entries,
                })
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Collects indexed packs and writes them out as index objects of bounded size.
pub(crate) struct IndexWriter<'a> {
    backend: &'a dyn Backend,
    key: &'a MasterKey,
    pending: Vec<IndexedPack>,
    entries: usize,
    /// Index objects written so far, with what they list.
    pub(crate) written: Vec<(String, Vec<IndexedPack>)>,
}

impl<'a> IndexWriter<'a> {
    pub(crate) fn new(backend: &'a dyn Backend, key: &'a MasterKey) -> Self {
        IndexWriter {
            backend,
            key,
            pending: Vec::new(),
            entries: 0,
            written: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, p: IndexedPack) -> Result<()> {
        self.entries += p.entries.len();
        self.pending.push(p);
        if self.entries >= ENTRIES_PER_INDEX {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes pending packs as one index object (durable when this returns).
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let packs = std::mem::take(&mut self.pending);
        self.entries = 0;
        let (name, bytes) = index::encode(self.key, &packs)?;
        self.backend
            .put(ObjectKind::Index, &name.to_hex(), &bytes)?;
        self.written.push((name.to_hex(), packs));
        Ok(())
    }
}

fn parse_listing(listing: Vec<(String, u64)>, skipped: &mut Vec<String>) -> Vec<(ObjectId, u64)> {
    let mut out = Vec::new();
    for (name, size) in listing {
        match ObjectId::from_hex(&name) {
            Ok(id) => out.push((id, size)),
            Err(_) => skipped.push(format!("data/{name}: not a pack name")),
        }
    }
    out
}

/// Rebuilds every index object from the pack headers alone, then the catalog.
///
/// Order: list the old index objects; read every pack header and write new index objects
/// (durable); only then delete the old ones; then rebuild the catalog. Index objects that
/// appear while this runs (a concurrent backup) are not in the old list and are kept.
pub fn repair_index(repo: &mut Repo, progress: &dyn CheckProgress) -> Result<IndexRepair> {
    let backend = Arc::clone(repo.backend());
    let key = Arc::clone(repo.key());
    let old: Vec<String> = backend
        .list(ObjectKind::Index)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut out = IndexRepair::default();
    let packs = parse_listing(backend.list(ObjectKind::Pack)?, &mut out.unreadable_packs);
    progress.phase("headers", packs.len() as u64);
    let mut writer = IndexWriter::new(backend.as_ref(), &key);
    for group in packs.chunks(64) {
        for (r, (id, _)) in read_headers(backend.as_ref(), &key, group)
            .into_iter()
            .zip(group)
        {
            progress.advance(1);
            match r {
                Ok(p) => {
                    out.packs += 1;
                    out.blobs += p.entries.len() as u64;
                    writer.push(p)?;
                }
                Err(e) => out
                    .unreadable_packs
                    .push(format!("pack {}: {e}", id.to_hex())),
            }
        }
    }
    writer.flush()?;
    let new: HashSet<String> = writer.written.iter().map(|(n, _)| n.clone()).collect();
    out.index_objects_written = new.len() as u64;
    for name in old.iter().filter(|n| !new.contains(*n)) {
        backend.delete(ObjectKind::Index, name)?;
        out.index_objects_removed += 1;
    }
    let skipped = repo.catalog_mut().rebuild(backend.as_ref(), &key)?;
    out.unreadable_packs.extend(skipped);
    out.unreadable_packs.sort();
    Ok(out)
}

/// Indexes packs that exist but that no index object lists — what a backup killed between
/// writing a pack and writing its index object leaves — so their blobs dedup again. Run at the
/// start of every `snapshot create`; cheap when there is nothing to adopt (one listing).
///
/// A concurrent backup's pack, durable but not yet indexed, may be adopted too: it is then
/// listed by two index objects, which is harmless.
pub fn adopt_unindexed(repo: &mut Repo) -> Result<Adoption> {
    let backend = Arc::clone(repo.backend());
    let key = Arc::clone(repo.key());
    let mut out = Adoption::default();
    let mut orphans = Vec::new();
    for (id, size) in parse_listing(backend.list(ObjectKind::Pack)?, &mut out.skipped) {
        if !repo.catalog().has_pack(&id)? {
            orphans.push((id, size));
        }
    }
    if orphans.is_empty() {
        return Ok(out);
    }
    let mut writer = IndexWriter::new(backend.as_ref(), &key);
    for (r, (id, _)) in read_headers(backend.as_ref(), &key, &orphans)
        .into_iter()
        .zip(&orphans)
    {
        match r {
            Ok(p) => {
                out.packs += 1;
                out.blobs += p.entries.len() as u64;
                writer.push(p)?;
            }
            Err(e) => out.skipped.push(format!("pack {}: {e}", id.to_hex())),
        }
    }
    writer.flush()?;
    for (name, packs) in &writer.written {
        repo.catalog_mut().add_index(name, packs)?;
    }
    Ok(out)
}

/// What `repair snapshots` found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SnapshotRepair {
    /// Snapshots that need data that is gone, with the affected paths.
    pub damaged: Vec<AffectedSnapshot>,
    /// Snapshot objects removed (empty unless `forget` and not `dry_run`).
    pub forgotten: Vec<String>,
    /// Everything the check found, one line each.
    pub problems: Vec<String>,
}

/// Finds snapshots that need damaged or missing data (a structural check, or with
/// `check.read_data` a full one); with `forget` removes their snapshot objects, unless
/// `dry_run`. Snapshots that are intact are never touched.
pub fn repair_snapshots(
    repo: &mut Repo,
    check: &CheckOptions,
    forget: bool,
    dry_run: bool,
    progress: &dyn CheckProgress,
) -> Result<SnapshotRepair> {
    let report = checker::check(repo, check, progress)?;
    let mut out = SnapshotRepair {
        damaged: report.affected_snapshots,
        forgotten: Vec::new(),
        problems: report.problems,
    };
    if forget && !dry_run {
        for s in &out.damaged {
            repo.backend().delete(ObjectKind::Snapshot, &s.id)?;
            out.forgotten.push(s.id.clone());
        }
    }
    Ok(out)
}
