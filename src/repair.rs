//! `tresor repair index`: rebuilds the index from pack headers. (`repair snapshots` is a check
//! followed by the repository's forget, put together by the CLI; adoption of unindexed packs is
//! the repository's own, see [`crate::repo::adopt`].)
//!
//! Every repair only adds before it removes: new index objects are durable before an old one
//! is deleted, so a repair killed at any instant leaves a repository at least as complete as
//! before (at worst with duplicate index entries, which are harmless).
//!
//! `repair index` never drops an entry it cannot replace. A pack whose header cannot be read
//! (truncated, damaged) keeps the entries the old index objects give it, each *salvaged* by
//! its blob's own authentication: a blob that still opens under its id (a delta, against its
//! base) keeps its entry; one that lies past the pack's end or fails authentication is dropped
//! (it is damage either way, and without its entry the next backup that meets the chunk stores
//! it again); one that cannot be judged (its delta base unreadable) is kept. The pack is named.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use crate::error::Result;
use crate::format::id::ObjectId;
use crate::format::index::IndexedPack;
use crate::progress::PhaseProgress;
use crate::repo::Repo;
use crate::repo::adopt::{parse_listing, read_headers};

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
    /// Packs whose header could not be read and that no old index object lists: left in
    /// place, their blobs unindexed.
    pub unreadable_packs: Vec<String>,
    /// Packs whose header could not be read, indexed from the old index objects' entries
    /// (one line each: what was kept and dropped).
    pub salvaged_packs: Vec<String>,
    /// Entries kept for those packs.
    pub blobs_salvaged: u64,
    /// Entries dropped because their blob is damaged or cut off.
    pub blobs_dropped: u64,
}

impl IndexRepair {
    /// Whether the repair met damage (unreadable or salvaged packs).
    pub fn found_damage(&self) -> bool {
        !self.unreadable_packs.is_empty() || !self.salvaged_packs.is_empty()
    }
}

/// Every entry the readable index objects `names` give each pack (damaged objects skipped).
fn old_entries(
    repo: &Repo,
    names: &[String],
) -> Result<std::collections::HashMap<ObjectId, Vec<crate::format::pack::PackEntry>>> {
    let mut out: std::collections::HashMap<ObjectId, Vec<crate::format::pack::PackEntry>> =
        std::collections::HashMap::new();
    for name in names {
        use crate::error::Error;
        // Damaged or vanished objects are skipped; only a failing storage stops the repair.
        let packs = match repo.load_index(name) {
            Ok(p) => p,
            Err(
                Error::Missing { .. } | Error::Corrupt { .. } | Error::UnsupportedVersion { .. },
            ) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in packs {
            let v = out.entry(p.id).or_default();
            for e in p.entries {
                if !v.contains(&e) {
                    v.push(e);
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|e| e.offset);
    }
    Ok(out)
}

/// Keeps the entries of a pack with an unreadable header whose blobs still authenticate
/// (see the module documentation): (kept, dropped, why the first was dropped).
fn salvage(
    repo: &Repo,
    pack: &ObjectId,
    entries: &[crate::format::pack::PackEntry],
) -> Result<(Vec<crate::format::pack::PackEntry>, u64, Option<String>)> {
    use crate::error::Error;
    let bytes = match repo.reader().pack_bytes(pack) {
        Ok(b) => b,
        // Cannot read it at all: keep everything, judge nothing.
        Err(Error::Corrupt { .. }) | Err(Error::Missing { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let (mut kept, mut dropped, mut first) = (Vec::new(), 0u64, None);
    for e in entries {
        let end = e.offset as usize + e.stored_len as usize;
        let verdict = match bytes.get(e.offset as usize..end) {
            None => Err(format!(
                "blob {} lies past the pack's end ({} bytes)",
                e.id.short(),
                bytes.len()
            )),
            Some(sealed) => {
                let base = match e.base {
                    None => None,
                    Some(b) => match repo.catalog().locate(&b) {
                        Ok(Some(loc)) => Some((b, loc)),
                        _ => None,
                    },
                };
                let r = match (e.base, base) {
                    (None, _) => {
                        crate::format::codec::decode(repo.key(), e.kind, &e.id, sealed, e.raw_len)
                            .map(|_| ())
                    }
                    (Some(_), Some((b, loc))) => {
                        match repo.reader().read(&b, &loc) {
                            Ok(plain) => crate::format::codec::decode_delta(
                                repo.key(),
                                &e.id,
                                sealed,
                                e.raw_len,
                                &b,
                                &plain,
                            )
                            .map(|_| ()),
                            // The base cannot be read: this blob cannot be judged, keep it.
                            Err(_) => Ok(()),
                        }
                    }
                    (Some(_), None) => Ok(()),
                };
                r.map_err(|err| format!("blob {}: {err}", e.id.short()))
            }
        };
        match verdict {
            Ok(()) => kept.push(*e),
            // The pack could not be read at all: keep the entry, it may be a passing fault.
            Err(_) if bytes.is_empty() => kept.push(*e),
            Err(why) => {
                dropped += 1;
                first.get_or_insert(why);
            }
        }
    }
    Ok((kept, dropped, first))
}

/// Rebuilds every index object from the pack headers (and, for packs whose header cannot be
/// read, from the old entries their blobs confirm), then the catalog.
///
/// Order: list the old index objects; read every pack header and write new index objects
/// (durable); only then delete the old ones; then rebuild the catalog. Index objects that
/// appear while this runs (a concurrent backup) are not in the old list and are kept. Entries
/// of packs that are gone (a stale index object put back) are not carried over.
pub fn repair_index(repo: &mut Repo, progress: &dyn PhaseProgress) -> Result<IndexRepair> {
    let old = repo.index_names()?;
    let mut out = IndexRepair::default();
    let (listing, _) = repo.observe_packs()?;
    let packs = parse_listing(listing, &mut out.unreadable_packs);
    let mut previous = None;
    progress.phase("headers", packs.len() as u64);
    let mut packer = repo.packer()?;
    for group in packs.chunks(64) {
        crate::interrupt::check()?;
        for (r, (id, _)) in read_headers(packer.repo().reader(), group)
            .into_iter()
            .zip(group)
        {
            progress.advance(1);
            match r {
                Ok(p) => {
                    out.packs += 1;
                    out.blobs += p.entries.len() as u64;
                    packer.index_stored(p)?;
                }
                Err(e) => {
                    // Never drop what cannot be replaced: the old entries, confirmed blob by
                    // blob.
                    if previous.is_none() {
                        previous = Some(old_entries(packer.repo(), &old)?);
                    }
                    let Some(entries) = previous.as_ref().and_then(|m| m.get(id)) else {
                        out.unreadable_packs.push(format!(
                            "pack {}: {e} (no index object lists it: nothing to salvage)",
                            id.to_hex()
                        ));
                        continue;
                    };
                    let (kept, dropped, why) = salvage(packer.repo(), id, entries)?;
                    out.blobs_salvaged += kept.len() as u64;
                    out.blobs_dropped += dropped;
                    out.salvaged_packs.push(format!(
                        "pack {}: {e}; kept {} of its {} entries from the old index (their blobs authenticate){}",
                        id.to_hex(),
                        kept.len(),
                        entries.len(),
                        match why {
                            Some(w) => format!(", dropped {dropped} whose blobs are damaged ({w})"),
                            None => String::new(),
                        }
                    ));
                    if !kept.is_empty() {
                        let size = group
                            .iter()
                            .find(|(p, _)| p == id)
                            .map(|(_, s)| *s)
                            .unwrap_or_default();
                        packer.index_stored(IndexedPack {
                            id: *id,
                            size,
                            entries: kept,
                        })?;
                    }
                }
            }
        }
    }
    let written = packer.finish()?;
    let new: HashSet<String> = written.index_objects.into_iter().collect();
    out.index_objects_written = new.len() as u64;
    // The old objects go only once the new ones are durable, and only while the lock is ours.
    crate::interrupt::check()?;
    repo.ensure_lock_held()?;
    for name in old.iter().filter(|n| !new.contains(*n)) {
        repo.delete_index(name)?;
        out.index_objects_removed += 1;
    }
    let skipped = repo.rebuild_catalog()?;
    out.unreadable_packs.extend(skipped);
    out.unreadable_packs.sort();
    Ok(out)
}
