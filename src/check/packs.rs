//! Pass 2, reading data: which packs to read ([`select_packs`]), reading them on all cores,
//! verifying every blob (deltas against their bases, deferred ones through the catalog) and
//! stamping the verification ledger for clean packs.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use super::{CheckOptions, CheckReport, Damage, Subset, storage_failure, strip_pack_prefix};
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::codec;
use crate::format::id::{BlobId, ObjectId};
use crate::format::pack::{self, PackEntry};
use crate::progress::PhaseProgress;
use crate::repo::catalog::{BlobLocation, PackRecord};
use crate::repo::{BlobReader, Repo};

/// Chooses which indexed packs to read, in ledger order.
fn select_packs(
    all: Vec<PackRecord>,
    stored: &HashMap<ObjectId, u64>,
    opts: &CheckOptions,
    now: i64,
) -> Vec<PackRecord> {
    let total = all.len();
    let mut chosen: Vec<PackRecord> = all
        .into_iter()
        .filter(|p| stored.contains_key(&p.id))
        .filter(|p| match opts.max_age_secs {
            Some(age) => p
                .verified_at
                .is_none_or(|at| at < now.saturating_sub(age as i64)),
            None => true,
        })
        .filter(|p| match opts.subset {
            Some(Subset::Slice { n, m }) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&p.id.0[..8]);
                u64::from_be_bytes(b) % m == n - 1
            }
            _ => true,
        })
        .collect();
    if let Some(Subset::Fraction(f)) = opts.subset {
        chosen.truncate(((total as f64) * f).ceil() as usize);
    }
    if let Some(budget) = opts.budget_bytes {
        let mut sum = 0u64;
        chosen.retain(|p| {
            let take = sum < budget;
            sum += p.size;
            take
        });
    }
    chosen
}

/// What reading one pack found.
struct PackRead {
    id: ObjectId,
    bytes: u64,
    pack_problems: Vec<String>,
    blob_problems: Vec<(BlobId, String)>,
    /// Delta blobs whose base is not among those located for the pack's catalog entries (a
    /// second copy of a blob the catalog places elsewhere), with their sealed bytes: verified
    /// afterwards by [`verify_deferred`], which can ask the catalog.
    deferred: Vec<(PackEntry, Vec<u8>)>,
    /// The storage failed to answer (after its retries): no verdict on the pack, the check
    /// stops with this error instead of reporting damage.
    storage_error: Option<Error>,
}

/// Pass 2: reads the selected packs in parallel, stamping the ledger for clean ones.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_packs(
    repo: &mut Repo,
    reader: &BlobReader,
    stored: &HashMap<ObjectId, u64>,
    opts: &CheckOptions,
    suspects: &[ObjectId],
    damage: &mut Damage,
    report: &mut CheckReport,
    progress: &dyn PhaseProgress,
) -> Result<()> {
    let now = chrono::Utc::now().timestamp();
    let all = repo.catalog().packs()?;
    let total = all.len() as u64;
    let mut chosen = if opts.reads_data() {
        select_packs(all.clone(), stored, opts, now)
    } else {
        Vec::new()
    };
    if opts.reads_data() {
        report.packs_not_read = total - chosen.len() as u64;
    }
    let picked: HashSet<ObjectId> = chosen.iter().map(|p| p.id).collect();
    chosen.extend(
        all.into_iter()
            .filter(|p| suspects.contains(&p.id) && !picked.contains(&p.id)),
    );
    progress.phase("read", chosen.iter().map(|p| p.size).sum());
    let group = rayon::current_num_threads().max(1) * 2;
    for batch in chosen.chunks(group) {
        crate::interrupt::check()?;
        let work: Vec<(&PackRecord, Vec<PackEntry>, Bases)> = batch
            .iter()
            .map(|p| {
                let entries = repo.catalog().pack_entries(&p.id)?;
                let bases = delta_bases(repo, &entries)?;
                Ok((p, entries, bases))
            })
            .collect::<Result<_>>()?;
        let results: Vec<PackRead> = work
            .par_iter()
            .map(|(p, entries, bases)| {
                let r = read_pack(reader, &p.id, entries, bases);
                progress.advance(p.size);
                r
            })
            .collect();
        let mut clean = Vec::new();
        for mut r in results {
            if let Some(e) = r.storage_error.take() {
                return Err(e);
            }
            verify_deferred(repo, reader, &mut r, report)?;
            report.packs_read += 1;
            report.bytes_read += r.bytes;
            // Judged blob by blob now, whatever the structural pass thought of the whole.
            damage.judged.insert(r.id);
            if r.pack_problems.is_empty() && r.blob_problems.is_empty() {
                if !damage.packs.contains_key(&r.id) {
                    clean.push(r.id);
                }
                continue;
            }
            for p in r.pack_problems {
                damage.problems.push(format!("pack {}: {p}", r.id.to_hex()));
                damage.named.insert(r.id);
            }
            for (b, p) in r.blob_problems {
                damage.blob(b, format!("in pack {}: {p}", r.id.to_hex()));
            }
        }
        repo.mark_verified(&clean, now)?;
    }
    // A pack read in full is judged by its blobs: drop the blanket verdict, keep its problem.
    let judged = damage.judged.clone();
    damage.packs.retain(|id, _| !judged.contains(id));
    Ok(())
}

/// Where the bases of a pack's delta blobs are (with their own chains), by base id.
type Bases = HashMap<BlobId, BlobLocation>;

/// Where the base `b` of a delta is, with its chain: `None` when it is not indexed, is a tree,
/// or its chain cannot be followed (the structural pass reports those).
fn locate_base(repo: &Repo, b: &BlobId) -> Result<Option<BlobLocation>> {
    match repo.catalog().locate(b) {
        Ok(Some(loc)) if loc.kind != BlobKind::Tree => Ok(Some(loc)),
        Ok(_) | Err(Error::Corrupt { .. }) | Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Locates the bases of the delta blobs among `entries` (those whose chains can be followed;
/// the others are reported by the structural pass).
fn delta_bases(repo: &Repo, entries: &[PackEntry]) -> Result<Bases> {
    let mut out = HashMap::new();
    for b in entries.iter().filter_map(|e| e.base) {
        if out.contains_key(&b) {
            continue;
        }
        if let Some(loc) = locate_base(repo, &b)? {
            out.insert(b, loc);
        }
    }
    Ok(out)
}

/// Verifies the deferred deltas of a pack read ([`PackRead::deferred`]) against their bases.
/// A copy whose base is not indexed is damage when the catalog uses that copy (the structural
/// pass names it too), and only a note otherwise: the catalog always prefers a copy that can
/// be decoded (a whole one), and prune keeps only the bases of the copies the catalog uses.
fn verify_deferred(
    repo: &Repo,
    reader: &BlobReader,
    r: &mut PackRead,
    report: &mut CheckReport,
) -> Result<()> {
    for (e, sealed) in std::mem::take(&mut r.deferred) {
        let Some(base_id) = e.base else { continue };
        let mut bases = Bases::new();
        if let Some(loc) = locate_base(repo, &base_id)? {
            bases.insert(base_id, loc);
        } else {
            let used = repo
                .catalog()
                .blob_row(&e.id)?
                .is_some_and(|(l, _)| l.pack == r.id && l.offset == e.offset);
            if !used {
                report.notes.push(format!(
                    "pack {}: holds an unused second copy of blob {} as a delta whose base {} \
                     is not indexed (the index uses another copy)",
                    r.id.to_hex(),
                    e.id.to_hex(),
                    base_id.to_hex()
                ));
                continue;
            }
        }
        match verify_blob(reader, &e, &sealed, &bases) {
            Ok(()) => {}
            Err(Error::Corrupt { reason, .. }) => r.blob_problems.push((e.id, reason)),
            Err(err) if storage_failure(&err) => return Err(err),
            Err(err) => r.blob_problems.push((e.id, err.to_string())),
        }
    }
    Ok(())
}

/// Verifies one blob of a pack: a delta is decoded against its base, read from its own pack
/// (and decoded through its own chain, each blob of which is authenticated; the base's id
/// check covers their bytes).
fn verify_blob(reader: &BlobReader, e: &PackEntry, sealed: &[u8], bases: &Bases) -> Result<()> {
    let Some(base_id) = e.base else {
        return codec::decode(reader.key(), e.kind, &e.id, sealed, e.raw_len).map(|_| ());
    };
    let base = bases.get(&base_id).ok_or_else(|| {
        Error::corrupt(
            "blob",
            format!("its delta base {} is not indexed", base_id.to_hex()),
        )
    })?;
    let base_plain = reader.read(&base_id, base).map_err(|e| {
        if storage_failure(&e) {
            e
        } else {
            Error::corrupt("blob", format!("its delta base cannot be read: {e}"))
        }
    })?;
    codec::decode_delta(
        reader.key(),
        &e.id,
        sealed,
        e.raw_len,
        &base_id,
        &base_plain,
    )
    .map(|_| ())
}

fn read_pack(reader: &BlobReader, id: &ObjectId, entries: &[PackEntry], bases: &Bases) -> PackRead {
    let mut r = PackRead {
        id: *id,
        bytes: 0,
        pack_problems: Vec::new(),
        blob_problems: Vec::new(),
        deferred: Vec::new(),
        storage_error: None,
    };
    let bytes = match reader.pack_bytes(id) {
        Ok(b) => b,
        Err(e) if storage_failure(&e) => {
            r.storage_error = Some(e);
            return r;
        }
        Err(e) => {
            r.pack_problems.push(format!("cannot be read: {e}"));
            for e in entries {
                r.blob_problems
                    .push((e.id, "its pack cannot be read".to_string()));
            }
            return r;
        }
    };
    r.bytes = bytes.len() as u64;
    if ObjectId::of_bytes(&bytes) != *id {
        r.pack_problems
            .push("content does not match its name (damaged)".into());
    }
    // The catalog places each blob once: a blob stored twice (two concurrent backups) is
    // listed under one of its packs only. So every catalog entry must be in the header; the
    // header may hold more. All blobs the header lists are verified.
    let header = match pack::header_of(reader.key(), id, &bytes) {
        Ok(h) => {
            let listed: HashSet<&PackEntry> = h.iter().collect();
            if !entries.iter().all(|e| listed.contains(e)) {
                r.pack_problems
                    .push("header disagrees with the index".into());
            }
            Some(h)
        }
        Err(e) => {
            r.pack_problems.push(strip_pack_prefix(&e.to_string(), id));
            None
        }
    };
    let entries = header.as_deref().unwrap_or(entries);
    // Deltas whose base was not located (copies the catalog does not use) wait for the catalog.
    let (entries, later): (Vec<&PackEntry>, Vec<&PackEntry>) = entries
        .iter()
        .partition(|e| e.base.is_none_or(|b| bases.contains_key(&b)));
    for e in later {
        let end = e.offset as usize + e.stored_len as usize;
        match bytes.get(e.offset as usize..end) {
            Some(s) => r.deferred.push((*e, s.to_vec())),
            None => r
                .blob_problems
                .push((e.id, "lies past the end of its pack".into())),
        }
    }
    // Blobs in parallel too: packs differ a lot in how much they inflate to, and work-stealing
    // keeps both cores busy to the last pack.
    // A delta's base is read from its own pack: the storage failing that read is no verdict.
    let results: Vec<(BlobId, Error)> = entries
        .par_iter()
        .filter_map(|e| {
            let end = e.offset as usize + e.stored_len as usize;
            let result = match bytes.get(e.offset as usize..end) {
                Some(s) => verify_blob(reader, e, s, bases),
                None => Err(Error::corrupt("blob", "lies past the end of its pack")),
            };
            result.err().map(|err| (e.id, err))
        })
        .collect();
    for (id, err) in results {
        match err {
            Error::Corrupt { reason, .. } => r.blob_problems.push((id, reason)),
            err if storage_failure(&err) => {
                r.storage_error.get_or_insert(err);
            }
            err => r.blob_problems.push((id, err.to_string())),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(b: u8, size: u64, verified_at: Option<i64>) -> PackRecord {
        PackRecord {
            id: ObjectId([b; 32]),
            size,
            verified_at,
        }
    }

    #[test]
    fn selection_follows_ledger_age_slices_and_budget() {
        // Catalog order: never verified first, then oldest verification first.
        let all = vec![
            rec(1, 100, None),
            rec(2, 100, None),
            rec(3, 100, Some(1_000)),
            rec(4, 100, Some(5_000)),
        ];
        let stored: HashMap<ObjectId, u64> = all.iter().map(|p| (p.id, p.size)).collect();
        let ids = |v: Vec<PackRecord>| v.iter().map(|p| p.id.0[0]).collect::<Vec<_>>();
        let now = 10_000;
        let o = |f: fn(&mut CheckOptions)| {
            let mut o = CheckOptions {
                read_data: true,
                ..Default::default()
            };
            f(&mut o);
            o
        };
        assert_eq!(
            ids(select_packs(all.clone(), &stored, &o(|_| {}), now)),
            [1, 2, 3, 4]
        );
        // Not verified in the last 6000 s: 1, 2 (never) and 3 (9000 s ago).
        let aged = o(|o| o.max_age_secs = Some(6_000));
        assert_eq!(
            ids(select_packs(all.clone(), &stored, &aged, now)),
            [1, 2, 3]
        );
        let budget = o(|o| {
            o.max_age_secs = Some(6_000);
            o.budget_bytes = Some(150);
        });
        assert_eq!(
            ids(select_packs(all.clone(), &stored, &budget, now)),
            [1, 2]
        );
        let half = o(|o| o.subset = Some(Subset::Fraction(0.5)));
        assert_eq!(ids(select_packs(all.clone(), &stored, &half, now)), [1, 2]);
        // Slices partition the packs: every pack in exactly one of m slices.
        let mut seen = Vec::new();
        for n in 1..=3 {
            let s = CheckOptions {
                subset: Some(Subset::Slice { n, m: 3 }),
                ..Default::default()
            };
            seen.extend(ids(select_packs(all.clone(), &stored, &s, now)));
        }
        seen.sort();
        assert_eq!(seen, [1, 2, 3, 4]);
        // A pack missing from the backend is not selected for reading.
        let mut fewer = stored.clone();
        fewer.remove(&ObjectId([2; 32]));
        assert_eq!(ids(select_packs(all, &fewer, &o(|_| {}), now)), [1, 3, 4]);
    }
}
