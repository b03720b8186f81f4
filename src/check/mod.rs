//! `tresor check`: finds every kind of damage and names what it affects.
//!
//! Four passes, each feeding the damage map the next one uses (each in its own module: `index`,
//! `packs`, `snapshots`; history is read through [`crate::repo::history`]):
//!
//! 1. **Structure.** Every index object opens; every pack it names exists with the recorded size
//!    and its header (two range reads) lists exactly the blobs the index object says. The catalog
//!    must agree with the index objects; when it does not it is rebuilt (it is only a cache).
//!    Packs present but in no index object are listed as *unindexed* (adoptable, not damage).
//! 2. **Read data** (optional, selectable): each chosen pack is read once, on all cores; its bytes
//!    must hash to its name, its header must match the catalog, and every blob must authenticate,
//!    inflate and hash to its id. Packs that read clean are stamped in the catalog's
//!    verification ledger, which `--max-age` uses to re-read the least recently verified first.
//!    Packs that the structural pass found damaged but present (a bad header, a wrong size)
//!    are always read this way, even without `--read-data`: their blobs are judged one by one,
//!    so an intact blob in a pack with a damaged header does not condemn the files that need it.
//! 3. **Snapshots.** Every snapshot opens and its trees are walked; each file that needs a blob
//!    that is missing, in a missing or damaged pack, or damaged itself is named, per snapshot.
//!    Trees already walked are remembered in a temporary disk set, so memory stays flat.
//! 4. **History.** A snapshot that disappeared without a forget record (see [`crate::repo::history`])
//!    is damage; one present although a forget record names it is a note.
//!
//! Memory: one index object, one pack per reading thread, the pack listing (about 60 bytes per
//! pack, i.e. ~4 MiB per TiB stored) and the damage found. Blobs and trees are never collected.

#![forbid(unsafe_code)]

mod index;
mod packs;
mod snapshots;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::format::id::{BlobId, ObjectId};
use crate::repo::Repo;

use index::check_index_objects;
use packs::read_packs;
use snapshots::check_snapshots;

/// Which packs `--read-data-subset` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// `P%`: that share of all packs, least recently verified first (so ten runs of `10%`
    /// cover every pack, however the repository grows).
    Fraction(f64),
    /// `n/m`: the packs whose name, read as a number, is `n-1` modulo `m` — a fixed slice, so
    /// `1/7` … `7/7` on seven days cover everything.
    Slice {
        /// 1-based slice number.
        n: u64,
        /// Number of slices.
        m: u64,
    },
}

impl FromStr for Subset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subset> {
        let bad = || {
            Error::InvalidArgument(format!(
                "bad --read-data-subset {s:?}: give a percentage like 10% or a slice like 1/7"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Fraction(p / 100.0));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        let m: u64 = m.trim().parse().map_err(|_| bad())?;
        if m == 0 || n == 0 || n > m {
            return Err(bad());
        }
        Ok(Subset::Slice { n, m })
    }
}

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Read every pack (or the selection below).
    pub read_data: bool,
    /// Read only this subset of packs.
    pub subset: Option<Subset>,
    /// Read only packs not verified within this many seconds.
    pub max_age_secs: Option<u64>,
    /// Stop reading after this many bytes.
    pub budget_bytes: Option<u64>,
}

impl CheckOptions {
    /// Whether any pack data is read (any selection option implies it).
    pub fn reads_data(&self) -> bool {
        self.read_data
            || self.subset.is_some()
            || self.max_age_secs.is_some()
            || self.budget_bytes.is_some()
    }
}

pub use crate::progress::{PhaseProgress, Silent};

/// A snapshot that needs damaged or missing data, and which of its paths do.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct AffectedSnapshot {
    /// Full snapshot id.
    pub id: String,
    /// Its time (RFC 3339), empty when the snapshot object itself is unreadable.
    pub time: String,
    /// Affected paths as the snapshot stores them; a directory that cannot be read ends in `/`
    /// (everything below it is affected); empty when the snapshot object is unreadable.
    pub paths: Vec<String>,
}

/// What a check found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Index objects checked.
    pub index_objects: u64,
    /// Packs in the repository.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Packs read in full.
    pub packs_read: u64,
    /// Bytes read in full.
    pub bytes_read: u64,
    /// Packs the read-data selection (subset, max age, budget) left for another day.
    pub packs_not_read: u64,
    /// The catalog disagreed with the index objects and was rebuilt.
    pub catalog_rebuilt: bool,
    /// Packs present but not in any index object (left by an interrupted backup; adopted by
    /// the next `snapshot create` or `repair index`; not damage).
    pub unindexed_packs: Vec<String>,
    /// Packs that are missing, truncated, or whose bytes or header are damaged.
    pub damaged_packs: Vec<String>,
    /// Blobs that are missing from the index or fail to authenticate or decode.
    pub damaged_blobs: Vec<String>,
    /// Snapshots that need damaged or missing data.
    pub affected_snapshots: Vec<AffectedSnapshot>,
    /// Snapshots known to have existed that disappeared without a forget record.
    pub missing_snapshots: Vec<crate::repo::history::MissingSnapshot>,
    /// Packs that index objects name but the storage does not hold.
    pub absent_packs: Vec<String>,
    /// Every problem, one line each, naming the object.
    pub problems: Vec<String>,
    /// Things worth knowing that are not damage.
    pub notes: Vec<String>,
}

impl CheckReport {
    /// No damage found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.affected_snapshots.is_empty()
    }
}

/// Damage found so far: whole packs, and single blobs.
#[derive(Default)]
struct Damage {
    /// Packs none of whose blobs may be trusted (missing, wrong size, bad header), unless a
    /// full read later judged them blob by blob.
    packs: HashMap<ObjectId, String>,
    /// Packs read in full: their blobs are judged one by one.
    judged: HashSet<ObjectId>,
    /// Every pack with a pack-level problem, for the report.
    named: HashSet<ObjectId>,
    /// Blobs known to be bad, with the reason.
    blobs: HashMap<BlobId, String>,
    problems: Vec<String>,
}

impl Damage {
    fn pack(&mut self, id: ObjectId, problem: String) {
        self.problems
            .push(format!("pack {}: {problem}", id.to_hex()));
        self.named.insert(id);
        self.packs.entry(id).or_insert(problem);
    }

    fn blob(&mut self, id: BlobId, problem: String) {
        if !self.blobs.contains_key(&id) {
            self.problems
                .push(format!("blob {}: {problem}", id.to_hex()));
            self.blobs.insert(id, problem);
        }
    }
}

/// Runs the check. Problems are collected, not fatal, so one run reports all the damage it can
/// see; an error return means the check itself could not run (no backend, broken cache).
pub fn check(
    repo: &mut Repo,
    opts: &CheckOptions,
    progress: &dyn PhaseProgress,
) -> Result<CheckReport> {
    let reader = repo.reader().clone();
    let mut report = CheckReport::default();
    let mut damage = Damage::default();

    let mut stored: HashMap<ObjectId, u64> = HashMap::new();
    // The listing also tells the catalog which indexed packs are gone.
    let (listing, observed) = repo.observe_packs()?;
    report.absent_packs = observed.absent.iter().map(|p| p.to_hex()).collect();
    for (name, size) in listing {
        match ObjectId::from_hex(&name) {
            Ok(id) => {
                stored.insert(id, size);
            }
            Err(_) => report
                .problems
                .push(format!("data/{name}: not a pack name (stray file?)")),
        }
    }
    report.packs = stored.len() as u64;

    check_index_objects(repo, &stored, &mut damage, &mut report, progress)?;
    for id in stored.keys() {
        if !repo.catalog().has_pack(id)? {
            report.unindexed_packs.push(id.to_hex());
        }
    }
    report.blobs = repo.catalog().counts()?.0;

    // Damaged but present: judge their blobs one by one.
    let mut suspects: Vec<ObjectId> = damage
        .packs
        .keys()
        .filter(|p| stored.contains_key(p))
        .copied()
        .collect();
    suspects.sort();
    if opts.reads_data() || !suspects.is_empty() {
        read_packs(
            repo,
            &reader,
            &stored,
            opts,
            &suspects,
            &mut damage,
            &mut report,
            progress,
        )?;
    }
    check_snapshots(repo, &mut damage, &mut report, progress)?;
    let history = crate::repo::history::audit(repo)?;
    for m in &history.missing {
        report.problems.push(format!(
            "snapshot {} is missing: {}, and no forget record names it (deleted or rolled back outside tresor; if that was meant, `tresor prune --allow-missing-snapshots` records it as forgotten)",
            m.id, m.evidence
        ));
    }
    for d in &history.damaged_records {
        report.problems.push(d.clone());
    }
    for r in &history.resurrected {
        report.notes.push(format!(
            "snapshot {r} is present although a forget record names it (a forget interrupted before its deletion, or an old object put back); `tresor snapshot forget {}` removes it",
            &r[..8]
        ));
    }
    report.missing_snapshots = history.missing;

    report.damaged_packs = damage.named.iter().map(|p| p.to_hex()).collect();
    report.damaged_blobs = damage.blobs.keys().map(|b| b.to_hex()).collect();
    report.problems.append(&mut damage.problems);
    for v in [
        &mut report.problems,
        &mut report.damaged_packs,
        &mut report.damaged_blobs,
        &mut report.unindexed_packs,
    ] {
        v.sort();
        v.dedup();
    }
    Ok(report)
}

/// Whether a read failed because the storage did not answer (a network backend's failure after
/// its retries, or a transient I/O error): no verdict on the object, so the check stops with
/// the error rather than report damage. A local read error such as EIO is a verdict.
pub(super) fn storage_failure(e: &Error) -> bool {
    e.is_transient() || matches!(e, Error::Storage { .. })
}

fn strip_pack_prefix(msg: &str, pack: &ObjectId) -> String {
    let prefix = format!("pack {}", pack.to_hex());
    msg.strip_prefix(&prefix)
        .map(|m| m.trim_start_matches([':', ' ']).to_string())
        .unwrap_or_else(|| msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_syntax() {
        assert_eq!("10%".parse::<Subset>().unwrap(), Subset::Fraction(0.1));
        assert_eq!(
            "3/7".parse::<Subset>().unwrap(),
            Subset::Slice { n: 3, m: 7 }
        );
        for bad in ["0%", "101%", "x%", "0/7", "8/7", "1/0", "1", ""] {
            assert!(bad.parse::<Subset>().is_err(), "{bad}");
        }
    }
}
