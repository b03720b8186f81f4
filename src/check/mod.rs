//! `tresor check`: finds every kind of damage and names what it affects.
//!
//! Three passes, each feeding the damage map the next one uses:
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::codec;
use crate::format::id::{BlobId, ObjectId};
use crate::format::pack::{self, PackEntry};
use crate::format::tree::Node;
use crate::format::tree::NodeKind;
use crate::repo::catalog::{DeltaBase, DiskBlobSet, PackRecord};
use crate::repo::walk::{self, Step, TreeVisitor};
use crate::repo::{BlobReader, Repo};

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

/// Receives progress; every method has a no-op default.
pub trait CheckProgress: Sync {
    /// A pass starts; `total` is in its own units (bytes for reading, else items).
    fn phase(&self, _name: &str, _total: u64) {}
    /// Units done in the current pass.
    fn advance(&self, _n: u64) {}
}

/// Progress that reports nothing.
pub struct Silent;
impl CheckProgress for Silent {}

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
    progress: &dyn CheckProgress,
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

/// Pass 1: index objects against packs (existence, size, header) and against the catalog.
fn check_index_objects(
    repo: &mut Repo,
    stored: &HashMap<ObjectId, u64>,
    damage: &mut Damage,
    report: &mut CheckReport,
    progress: &dyn CheckProgress,
) -> Result<()> {
    let reader = repo.reader().clone();
    let names = repo.index_names()?;
    progress.phase("index", names.len() as u64);
    let mut stale = false;
    let mut indexed_packs: HashSet<ObjectId> = HashSet::new();
    for name in names {
        progress.advance(1);
        report.index_objects += 1;
        let packs = match repo.load_index(&name) {
            Ok(p) => p,
            Err(e) => {
                report.problems.push(format!("index object {name}: {e}"));
                continue;
            }
        };
        let mut present = Vec::new();
        for p in &packs {
            indexed_packs.insert(p.id);
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
                        &name[..8],
                        p.size
                    ),
                ),
                Some(_) => present.push(p),
            }
            // The catalog leaves out the entries of packs that are gone.
            if !stale && stored.contains_key(&p.id) {
                stale = !catalog_agrees(repo, &p.id, &p.entries)?;
            }
        }
        let headers: Vec<Result<Vec<PackEntry>>> = present
            .par_iter()
            .map(|p| reader.pack_header(&p.id, p.size))
            .collect();
        for (p, header) in present.iter().zip(headers) {
            match header {
                Ok(h) if h == p.entries => {}
                Ok(_) => damage.pack(
                    p.id,
                    format!("header disagrees with index object {}", &name[..8]),
                ),
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
                if (l.kind, l.offset, l.stored_len, l.raw_len, base)
                    != (e.kind, e.offset, e.stored_len, e.raw_len, e.base)
                {
                    return Ok(false);
                }
            }
            Some(_) => {}
        }
    }
    Ok(true)
}

fn strip_pack_prefix(msg: &str, pack: &ObjectId) -> String {
    let prefix = format!("pack {}", pack.to_hex());
    msg.strip_prefix(&prefix)
        .map(|m| m.trim_start_matches([':', ' ']).to_string())
        .unwrap_or_else(|| msg.to_string())
}

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
}

/// Pass 2: reads the selected packs in parallel, stamping the ledger for clean ones.
#[allow(clippy::too_many_arguments)]
fn read_packs(
    repo: &mut Repo,
    reader: &BlobReader,
    stored: &HashMap<ObjectId, u64>,
    opts: &CheckOptions,
    suspects: &[ObjectId],
    damage: &mut Damage,
    report: &mut CheckReport,
    progress: &dyn CheckProgress,
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

/// Where the bases of a pack's delta blobs are, by base id.
type Bases = HashMap<BlobId, DeltaBase>;

/// Locates the bases of the delta blobs among `entries` (those that are indexed as data blobs;
/// the others are reported by the structural pass).
fn delta_bases(repo: &Repo, entries: &[PackEntry]) -> Result<Bases> {
    let mut out = HashMap::new();
    for b in entries.iter().filter_map(|e| e.base) {
        if out.contains_key(&b) {
            continue;
        }
        if let Some((loc, None)) = repo.catalog().blob_row(&b)?
            && loc.kind == BlobKind::Data
        {
            out.insert(b, DeltaBase::at(b, &loc));
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
        if let Some((loc, None)) = repo.catalog().blob_row(&base_id)?
            && loc.kind == BlobKind::Data
        {
            bases.insert(base_id, DeltaBase::at(base_id, &loc));
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
            Err(err) => r.blob_problems.push((e.id, err.to_string())),
        }
    }
    Ok(())
}

/// Verifies one blob of a pack: a delta is decoded against its base, read from its own pack.
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
    let base_plain = reader
        .read_base(base)
        .map_err(|e| Error::corrupt("blob", format!("its delta base cannot be read: {e}")))?;
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
    };
    let bytes = match reader.pack_bytes(id) {
        Ok(b) => b,
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
    let mut problems: Vec<(BlobId, String)> = entries
        .par_iter()
        .filter_map(|e| {
            let end = e.offset as usize + e.stored_len as usize;
            let result = match bytes.get(e.offset as usize..end) {
                Some(s) => verify_blob(reader, e, s, bases),
                None => Err(Error::corrupt("blob", "lies past the end of its pack")),
            };
            match result {
                Ok(()) => None,
                Err(Error::Corrupt { reason, .. }) => Some((e.id, reason)),
                Err(err) => Some((e.id, err.to_string())),
            }
        })
        .collect();
    r.blob_problems.append(&mut problems);
    r
}

/// Remembers, for trees already walked, which of their paths are affected.
struct TreeMemo {
    clean: DiskBlobSet,
    affected: HashMap<BlobId, Vec<String>>,
}

/// Pass 3: every snapshot, every tree, every file's blobs.
fn check_snapshots(
    repo: &Repo,
    damage: &mut Damage,
    report: &mut CheckReport,
    progress: &dyn CheckProgress,
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

/// Whether a blob cannot be restored (missing from the index, damaged, or in a bad pack).
fn blob_is_bad(repo: &Repo, id: &BlobId, damage: &mut Damage) -> Result<bool> {
    if damage.blobs.contains_key(id) {
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
                Some(b) => blob_is_bad(repo, &b, damage)?,
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
