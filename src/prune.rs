//! `tresor prune`: frees the space of data no snapshot references.
//!
//! Plan: mark every blob the remaining snapshots reach (a temporary disk set); for each indexed
//! pack, count the stored bytes of the used blobs it holds (as the catalog places them). A pack
//! with no used blob is deleted; a pack whose unused share exceeds `max_unused`, or that holds
//! an unused delta whose base is unused too (which would otherwise outlive its base), is
//! repacked (its used blobs are authenticated and copied, still sealed, into new packs).
//!
//! Execute, in crash-safe order — nothing is deleted before what replaces it is durable:
//!
//! 1. new packs (durable), then index objects for them (durable), by the repository's
//!    [`crate::repo::Packer`];
//! 2. every index object that lists a pack being removed is rewritten without those packs
//!    (the packs it keeps listed again in new index objects, durable, then the old one
//!    deleted);
//! 3. the removed packs are deleted;
//! 4. the catalog is rebuilt.
//!
//! Before each step the lock is checked (still ours) and a signal to stop is honoured; the
//! steps' order makes stopping between any two of them safe.
//!
//! Killed after 1: the new packs duplicate blobs that are still indexed elsewhere (harmless).
//! Killed during 2: some blobs are listed twice (harmless). Killed during 3: some removed packs
//! remain unindexed; the next backup adopts them, the next prune deletes them again. Prune runs
//! under the exclusive lock, so no backup can be relying on a pack it deletes.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::PACK_TRAILER_LEN;
use crate::format::id::{BlobId, ObjectId};
use crate::repo::Repo;
use crate::repo::catalog::DiskBlobSet;

/// Default for `--max-unused`: a pack is repacked when more than this share of it is unused.
pub const DEFAULT_MAX_UNUSED: f64 = 0.10;

/// A delta a kept snapshot names is stored whole again (re-rooted) when the part of its chain
/// that no kept snapshot names itself holds at least this many times what the delta would take
/// stored whole: then storing it whole lets prune free that part (docs/design.md §14).
///
/// Measured 2026-12-04 on one repository of the small month (30 dumps, 61.9 MB), copied and
/// pruned to the last 7 days with each factor (those 7 days alone take 21.84 MB): 1.25 left
/// 34.91 MB (1.60×), 1.0 32.85 MB (1.50×), 0.8 32.38 MB (1.48×), 0.65 32.31 MB, 0.5 and below
/// 32.00 MB (1.47×). The whole-size estimate (the root's compression ratio) runs high, so
/// below 1 still pays; 0.8 takes most of the gain while a re-rooting that frees less than it
/// costs (an estimate right on the mark) costs at most a fifth of the blob.
pub const REROOT_FACTOR: f64 = 0.8;

/// Sealing overhead of a pack header (nonce and tag) plus the trailer.
const PACK_OVERHEAD: u64 = 24 + 16 + PACK_TRAILER_LEN as u64;

/// What prune will do (or did).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneSummary {
    /// Snapshots whose data is kept.
    pub snapshots_kept: u64,
    /// Indexed packs and their bytes.
    pub packs: u64,
    /// Bytes of all indexed packs.
    pub pack_bytes: u64,
    /// Blobs some kept snapshot needs, and their stored bytes.
    pub used_blobs: u64,
    /// Stored bytes of the used blobs.
    pub used_bytes: u64,
    /// Packs holding nothing any kept snapshot needs.
    pub delete_packs: u64,
    /// Their bytes.
    pub delete_bytes: u64,
    /// Packs whose unused share exceeds `max_unused`.
    pub repack_packs: u64,
    /// Their bytes.
    pub repack_bytes: u64,
    /// Used bytes copied out of them into new packs.
    pub repack_copy_bytes: u64,
    /// Unused bytes left in packs under the threshold.
    pub unused_bytes_kept: u64,
    /// Deltas kept snapshots name that are stored whole again, so that the part of their
    /// chains no kept snapshot names can go ([`REROOT_FACTOR`]).
    pub rerooted_blobs: u64,
    /// What those take whole (estimated from their chains' roots).
    pub rerooted_bytes: u64,
    /// Bytes kept only because a kept delta's chain needs them.
    pub chain_only_bytes: u64,
    /// Indexed packs that are missing and hold nothing needed: dropped from the index.
    pub missing_packs: u64,
    /// Bytes this prune frees (predicted by the plan; exact after execution).
    pub bytes_freed: u64,
}

/// A plan with what executing it needs.
pub struct Plan {
    /// The figures.
    pub summary: PruneSummary,
    used: DiskBlobSet,
    delete: HashSet<ObjectId>,
    repack: Vec<ObjectId>,
    /// Deltas to store whole (see [`REROOT_FACTOR`]).
    reroot: HashSet<BlobId>,
}

/// Guards a prune against freeing the data of snapshots that disappeared without `snapshot
/// forget` (see [`crate::repo::history::audit`]), which may be an attack or an accident:
/// refuses ([`Error::Missing`]) unless `allow_missing`; then (unless `dry_run`) records them as
/// forgotten and returns a warning naming them.
pub fn guard_missing_snapshots(
    repo: &Repo,
    allow_missing: bool,
    dry_run: bool,
) -> Result<Option<String>> {
    let history = crate::repo::history::audit(repo)?;
    if history.missing.is_empty() {
        return Ok(None);
    }
    let list: Vec<String> = history
        .missing
        .iter()
        .map(|m| format!("{} ({})", &m.id[..m.id.len().min(8)], m.evidence))
        .collect();
    if !allow_missing {
        return Err(Error::Missing {
            object: format!(
                "snapshots: {} disappeared without `snapshot forget`: {}; refusing to prune, which would free their data (restore them from a copy of the repository, or, if they were removed on purpose, run `tresor prune --allow-missing-snapshots`)",
                history.missing.len(),
                list.join("; ")
            ),
        });
    }
    if dry_run {
        return Ok(None);
    }
    let ids = history
        .missing
        .iter()
        .map(|m| ObjectId::from_hex(&m.id))
        .collect::<Result<Vec<_>>>()?;
    repo.forget_snapshots(
        &ids,
        "prune --allow-missing-snapshots (disappeared without forget)",
    )?;
    Ok(Some(format!(
        "recorded {} snapshots that disappeared without `snapshot forget` as forgotten: {}",
        ids.len(),
        list.join("; ")
    )))
}

/// The root trees of every snapshot, for a prune that keeps them all. Refuses when a snapshot
/// object cannot be read: what it needs is unknown, so nothing may be judged unused.
pub fn all_roots(repo: &Repo) -> Result<Vec<BlobId>> {
    let (snaps, damaged) = repo.snapshots()?;
    if let Some(d) = damaged.first() {
        return Err(Error::corrupt(
            d.clone(),
            "refusing to prune: what this snapshot needs is unknown (remove it with `tresor repair snapshots --forget`)",
        ));
    }
    Ok(snaps.into_iter().map(|(_, s)| s.root).collect())
}

/// Plans a prune that keeps exactly what `keep_roots` (root trees) reach.
pub fn plan(repo: &Repo, keep_roots: &[BlobId], max_unused: f64) -> Result<Plan> {
    if let Some(w) = repo.warnings().first() {
        return Err(Error::corrupt(
            "index",
            format!(
                "refusing to prune while an index object is damaged ({w}); run `tresor repair index` first"
            ),
        ));
    }
    let reroot = reroots(repo, keep_roots)?;
    let used = crate::repo::walk::mark_all_storing_whole(repo, keep_roots, &reroot.0)?;
    let stored: HashMap<ObjectId, u64> = repo.stored_packs()?.into_iter().collect();
    let mut s = PruneSummary {
        snapshots_kept: keep_roots.len() as u64,
        ..Default::default()
    };
    let mut delete = HashSet::new();
    let mut repack = Vec::new();
    // Packs index objects name but the storage lost: their entries go from the index objects.
    for id in repo.catalog().absent_packs()? {
        s.missing_packs += 1;
        delete.insert(id);
    }
    for p in repo.catalog().packs()? {
        s.packs += 1;
        s.pack_bytes += p.size;
        let (mut used_bytes, mut used_blobs, mut used_header_bytes) = (0u64, 0u64, 0u64);
        // An unused delta whose base is unused too: left where it is, it would outlive its
        // base (a chain's dead middle, once the days above it are forgotten).
        let mut dangling = false;
        for e in repo.catalog().pack_entries(&p.id)? {
            // A delta stored whole again: this copy goes.
            if reroot.0.contains(&e.id) {
                dangling = true;
                continue;
            }
            if used.contains(&e.id)? {
                used_bytes += e.stored_len as u64;
                used_blobs += 1;
                used_header_bytes += e.header_len() as u64;
            } else if let Some(b) = e.base {
                dangling |= !used.contains(&b)?;
            }
        }
        s.used_blobs += used_blobs;
        s.used_bytes += used_bytes;
        if !stored.contains_key(&p.id) {
            if used_blobs > 0 {
                return Err(Error::Missing {
                    object: format!(
                        "pack {} (it holds data kept snapshots need; run `tresor check`, then `tresor repair`)",
                        p.id.to_hex()
                    ),
                });
            }
            s.missing_packs += 1;
            delete.insert(p.id);
            continue;
        }
        let unused = p.size.saturating_sub(used_bytes);
        if used_blobs == 0 {
            s.delete_packs += 1;
            s.delete_bytes += p.size;
            delete.insert(p.id);
        } else if unused as f64 > max_unused * p.size as f64 || dangling {
            s.repack_packs += 1;
            s.repack_bytes += p.size;
            s.repack_copy_bytes += used_bytes + used_header_bytes;
            repack.push(p.id);
        } else {
            s.unused_bytes_kept += unused;
        }
    }
    // Every blob a kept snapshot needs must be indexed in a pack that exists: otherwise the
    // repository is damaged, and judging what is unused could only guess.
    // (The deltas stored whole again are needed too: their old copies are not counted above.)
    let needed = used.len()?;
    if s.used_blobs + (reroot.0.len() as u64) < needed {
        return Err(Error::Missing {
            object: format!(
                "{} blobs kept snapshots need (no index lists them in a pack that exists; refusing to prune: run `tresor check`, then `tresor repair index` or `tresor repair snapshots --forget`)",
                needed - s.used_blobs - reroot.0.len() as u64
            ),
        });
    }
    s.rerooted_blobs = reroot.0.len() as u64;
    s.rerooted_bytes = reroot.1;
    s.chain_only_bytes = reroot.2;
    s.repack_copy_bytes += reroot.1;
    let pack_size = repo.config().pack_size as u64;
    let new_packs = s.repack_copy_bytes.div_ceil(pack_size.max(1));
    s.bytes_freed = (s.delete_bytes + s.repack_bytes)
        .saturating_sub(s.repack_copy_bytes + new_packs * PACK_OVERHEAD);
    Ok(Plan {
        summary: s,
        used,
        delete,
        repack,
        reroot: reroot.0,
    })
}

/// The deltas to store whole again ([`REROOT_FACTOR`]), what they will take whole, and the
/// bytes kept only as parts of the chains of the others.
///
/// A delta the kept snapshots name has a *dead part* of its chain: the blobs below it, down to
/// the first one a kept snapshot names itself (or to the root), which only its decoding needs.
/// After a `forget` of the older days of a series, the oldest kept day's deltas have the whole
/// forgotten past as their dead part; storing them whole (the next days chain on them) lets
/// that past go.
fn reroots(repo: &Repo, keep_roots: &[BlobId]) -> Result<(HashSet<BlobId>, u64, u64)> {
    let named = crate::repo::walk::mark_all_named(repo, keep_roots)?;
    let (mut out, mut whole_bytes, mut chain_only) = (HashSet::new(), 0u64, 0u64);
    let mut seen_dead: HashSet<BlobId> = HashSet::new();
    for p in repo.catalog().packs()? {
        for e in repo.catalog().pack_entries(&p.id)? {
            let Some(mut base) = e.base else { continue };
            if !named.contains(&e.id)? || named.contains(&base)? {
                continue;
            }
            // Down the dead part: (stored bytes, the root's stored and raw length).
            let (mut dead, mut root) = (0u64, None);
            let mut first_seen = false;
            for _ in 0..crate::format::MAX_CHAIN_DEPTH {
                let Some((loc, next)) = repo.catalog().blob_row(&base)? else {
                    break;
                };
                if named.contains(&base)? {
                    break;
                }
                first_seen |= !seen_dead.insert(base);
                dead += loc.stored_len as u64;
                match next {
                    Some(n) => base = n,
                    None => {
                        root = Some((loc.stored_len, loc.raw_len));
                        break;
                    }
                }
            }
            let Some((rs, rr)) = root else {
                // The dead part ends at a named blob: a dead middle, kept (it is small: at
                // most the deltas between two kept days).
                chain_only += dead;
                continue;
            };
            let whole = (e.raw_len as u64 * rs as u64) / (rr as u64).max(1);
            if dead as f64 >= REROOT_FACTOR * whole as f64 {
                out.insert(e.id);
                whole_bytes += whole;
            } else if !first_seen {
                chain_only += dead;
            }
        }
    }
    Ok((out, whole_bytes, chain_only))
}

/// What an executed prune did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// The plan it carried out.
    pub plan: PruneSummary,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Packs deleted (emptied and repacked ones).
    pub packs_deleted: u64,
    /// Index objects rewritten or written.
    pub index_objects_written: u64,
    /// Index objects deleted.
    pub index_objects_removed: u64,
    /// Bytes of packs and index objects before minus after.
    pub bytes_freed: u64,
    /// Forget records merged into one.
    pub forget_records_merged: u64,
}

/// Carries out a plan (see the module documentation for the order).
pub fn execute(repo: &mut Repo, plan: Plan) -> Result<PruneReport> {
    let before = repo.stored_bytes()?;
    let mut report = PruneReport {
        plan: plan.summary.clone(),
        ..Default::default()
    };

    // 1. Copy the used blobs of packs being repacked into new packs (indexed as they become
    //    durable).
    let copied = DiskBlobSet::new()?;
    let mut packer = repo.packer()?;
    let level = packer.repo().config().compression_level;
    for id in &plan.reroot {
        crate::interrupt::check()?;
        let loc = packer.repo().locate(id)?;
        // Decoded through its chain (and so verified): never store damage whole.
        let plain = packer.repo().reader().read(id, &loc)?;
        let sealed = crate::format::codec::encode(
            packer.repo().key(),
            crate::format::BlobKind::Data,
            id,
            &plain,
            level,
        )?;
        packer.add(
            crate::format::BlobKind::Data,
            *id,
            &sealed,
            loc.raw_len,
            None,
        )?;
        copied.insert(id)?;
    }
    for id in &plan.repack {
        crate::interrupt::check()?;
        let bytes = packer.repo().reader().pack_bytes(id)?;
        // The catalog's entries, not the header: a pack whose header is damaged (its entries
        // salvaged by `repair index`) is repacked like any other.
        for e in packer.repo().catalog().pack_entries(id)? {
            let Some(loc) = packer
                .repo()
                .catalog()
                .locate(&e.id)?
                .filter(|l| l.pack == *id && l.offset == e.offset)
            else {
                continue;
            };
            if !plan.used.contains(&e.id)? || !copied.insert(&e.id)? {
                continue;
            }
            let sealed = bytes
                .get(e.offset as usize..e.offset as usize + e.stored_len as usize)
                .ok_or_else(|| {
                    Error::corrupt(format!("pack {}", id.to_hex()), "a blob lies past its end")
                })?;
            // Never copy damage forward: the blob must authenticate and decode to its id (a
            // delta against its base, which stays where it is or is copied on its own).
            packer.repo().reader().decode(&e.id, &loc, sealed)?;
            packer.add(
                e.kind,
                e.id,
                sealed,
                e.raw_len,
                e.base.map(|b| (b, e.depth)),
            )?;
        }
    }
    let written = packer.finish()?;
    report.packs_written = written.packs_written;
    report.index_objects_written += written.index_objects.len() as u64;

    // 2. Rewrite every index object that names a pack being removed: the packs it still
    //    names are listed again in new index objects, durable before the old one goes.
    crate::interrupt::check()?;
    repo.ensure_lock_held()?;
    let removed: HashSet<ObjectId> = plan
        .delete
        .iter()
        .chain(plan.repack.iter())
        .copied()
        .collect();
    let fresh: HashSet<String> = written.index_objects.into_iter().collect();
    let mut replaced = Vec::new();
    let mut packer = repo.packer()?;
    for name in packer.repo().index_names()? {
        if fresh.contains(&name) {
            continue;
        }
        let packs = packer.repo().load_index(&name)?;
        if !packs.iter().any(|p| removed.contains(&p.id)) {
            continue;
        }
        for p in packs.into_iter().filter(|p| !removed.contains(&p.id)) {
            packer.index_stored(p)?;
        }
        replaced.push(name);
    }
    let rewritten = packer.finish()?;
    report.index_objects_written += rewritten.index_objects.len() as u64;
    crate::interrupt::check()?;
    repo.ensure_lock_held()?;
    for name in &replaced {
        repo.delete_index(name)?;
        report.index_objects_removed += 1;
    }

    // 3. Only now delete the packs.
    crate::interrupt::check()?;
    repo.ensure_lock_held()?;
    for id in &removed {
        repo.delete_pack(id)?;
        report.packs_deleted += 1;
    }

    // 4. The catalog follows the index objects.
    let warnings = repo.rebuild_catalog()?;
    if let Some(w) = warnings.first() {
        return Err(Error::corrupt("index after prune", w.clone()));
    }
    report.bytes_freed = before.saturating_sub(repo.stored_bytes()?);
    report.forget_records_merged = crate::repo::history::compact(repo)?;
    Ok(report)
}
