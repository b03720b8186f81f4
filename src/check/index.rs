//! Pass 1, structure: every index object against the packs it names (existence, size,
//! header) and against the catalog, which is rebuilt when it disagrees.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use super::{CheckReport, Damage, strip_pack_prefix};
use crate::error::Result;
use crate::format::id::ObjectId;
use crate::format::pack::PackEntry;
use crate::progress::PhaseProgress;
use crate::repo::Repo;

/// Pass 1: index objects against packs (existence, size, header) and against the catalog.
pub(super) fn check_index_objects(
    repo: &mut Repo,
    stored: &HashMap<ObjectId, u64>,
    damage: &mut Damage,
    report: &mut CheckReport,
    progress: &dyn PhaseProgress,
) -> Result<()> {
    let reader = repo.reader().clone();
    let names = repo.index_names()?;
    progress.phase("index", names.len() as u64);
    let mut stale = false;
    let mut indexed_packs: HashSet<ObjectId> = HashSet::new();
    // Index objects are read a batch at a time and the headers of a batch's packs all at
    // once, many small requests in flight: over object storage each is a round trip.
    let threads = crate::parallel::small_requests(reader.connections());
    for batch in names.chunks(threads * 2) {
        crate::interrupt::check()?;
        let loaded = crate::parallel::try_map(threads, batch, |name| Ok(reader.load_index(name)))?;
        let mut present = Vec::new();
        for (name, packs) in batch.iter().zip(loaded) {
            progress.advance(1);
            report.index_objects += 1;
            let packs = match packs {
                Ok(p) => p,
                Err(e) if super::storage_failure(&e) => return Err(e),
                Err(e) => {
                    report.problems.push(format!("index object {name}: {e}"));
                    continue;
                }
            };
            for p in packs {
                indexed_packs.insert(p.id);
                // The catalog leaves out the entries of packs that are gone.
                if !stale && stored.contains_key(&p.id) {
                    stale = !catalog_agrees(repo, &p.id, &p.entries)?;
                }
                match stored.get(&p.id) {
                    None => damage.pack(
                        p.id,
                        format!(
                            "is missing, yet index object {name} lists it (a pack deleted outside tresor, or a stale index object put back; backups do not reuse its blobs, and `tresor repair index` rewrites the index from the packs)"
                        ),
                    ),
                    Some(&size) if size != p.size => damage.pack(
                        p.id,
                        format!(
                            "has {size} bytes, index object {} says {} (truncated or damaged)",
                            &name[..8.min(name.len())],
                            p.size
                        ),
                    ),
                    Some(_) => present.push((name, p)),
                }
            }
        }
        let headers: Vec<Result<Vec<PackEntry>>> =
            crate::parallel::try_map(threads, &present, |(_, p)| {
                Ok(reader.pack_header(&p.id, p.size))
            })?;
        for ((name, p), header) in present.iter().zip(headers) {
            match header {
                Ok(h) if h == p.entries => {}
                Ok(_) => damage.pack(
                    p.id,
                    format!(
                        "header disagrees with index object {}",
                        &name[..8.min(name.len())]
                    ),
                ),
                // The storage not answering is no verdict on the pack.
                Err(e) if super::storage_failure(&e) => return Err(e),
                Err(e) => damage.pack(p.id, strip_pack_prefix(&e.to_string(), &p.id)),
            }
        }
    }
    let indexed_present = indexed_packs
        .iter()
        .filter(|p| stored.contains_key(p))
        .count();
    if !stale && repo.catalog().counts()?.1 != indexed_present as u64 {
        stale = true;
    }
    if stale {
        let skipped = repo.rebuild_catalog()?;
        report.catalog_rebuilt = true;
        report.notes.push(
            "the local catalog disagreed with the index objects and was rebuilt from them".into(),
        );
        report.notes.extend(skipped);
    }
    for (delta, _base, problem) in repo.catalog().broken_deltas()? {
        damage.blob(delta, problem);
    }
    Ok(())
}

/// Whether the catalog places every entry of `pack` where the index object does. A blob the
/// catalog places in another pack is fine: the same blob stored twice (two concurrent backups).
fn catalog_agrees(repo: &Repo, pack: &ObjectId, entries: &[PackEntry]) -> Result<bool> {
    for e in entries {
        match repo.catalog().blob_row(&e.id)? {
            None => return Ok(false),
            Some((l, base)) if l.pack == *pack => {
                if (l.kind, l.offset, l.stored_len, l.raw_len, base, l.depth)
                    != (e.kind, e.offset, e.stored_len, e.raw_len, e.base, e.depth)
                {
                    return Ok(false);
                }
            }
            Some(_) => {}
        }
    }
    Ok(true)
}
