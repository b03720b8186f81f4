//! `tresor repo copy`: copying snapshots, with their trees, chunks and delta bases, from one
//! repository into another, re-encrypted under the target's key.
//!
//! **What is copied.** The selected source snapshots (all, or by id, host, tag) whose original
//! id ([`Snapshot::original_id`]: the id of the snapshot a backup first wrote, carried through
//! copies of copies) is not the original id of a snapshot the target holds: a second run copies
//! only what is new, and a blob the target has is never stored twice (the target packer's
//! [`Packer::claim`]). Nor is a snapshot the target forgot ([`crate::repo::history`]: its
//! forget record names the original id): retention in the target is independent of the
//! source's.
//!
//! **Two modes**, decided by the keys ([`MasterKey::same_content`]):
//! - *shared content secret* (a target made with `repo init --copy-chunker-params-from`, or a
//!   copy of one): blob ids are equal in both repositories. A blob the target has is skipped
//!   without being read; any other is read from the source, its envelope opened and its body
//!   (compressed payload, or delta script) sealed again under the target's key, unchanged.
//!   Trees are copied as they are.
//! - *independent keys*: every blob gets the target's id (`target key.blob_id(plaintext)`), so
//!   every blob of every snapshot copied is read and decoded, even when the target has it.
//!   Trees are rewritten bottom-up with the mapped subtree and chunk ids and the chunk anchors
//!   recomputed under the target's key. A delta stays a delta: its script does not depend on
//!   the key, only its base id, which is replaced by the base's mapped id (in both modes a
//!   delta whose base the target holds as a delta itself is stored whole: bases never are). The map from source
//!   to target ids lives in memory for one run: about 100 bytes per distinct blob copied (a
//!   million 1 MiB chunks, a TiB of distinct data, is ~100 MB).
//!
//! **Order and crash safety.** A delta's base is stored before the delta (even when the
//! snapshot does not itself reference the base); a tree after everything it names; the blobs
//! go through the target's [`Packer`] (pack durable, then index object, then catalog); the
//! snapshot is written last, one snapshot at a time ([`Repo::save_snapshot`]). A killed copy
//! leaves packs the next run adopts ([`Repo::adopt_unindexed`], run first) and no snapshot
//! that lacks data. The copied snapshot keeps the source's time, host, user, tags, sources,
//! excludes and summary; `parent` (a source snapshot id) is dropped.
//!
//! Memory is bounded: one file's chunks are read a window at a time (at most
//! [`WINDOW`] blobs in flight, read in parallel from the source's [`BlobReader`]).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentRef, NodeKind, Tree, chunk_anchor};
use crate::format::{BlobKind, TREE_VERSION};
use crate::progress::PhaseProgress;
use crate::repo::catalog::BlobLocation;
use crate::repo::{Packer, Repo};

/// Blobs of one file read at once (in parallel): bounds memory to about this many chunks.
pub const WINDOW: usize = 16;

/// Which snapshots to copy.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Snapshot references (`latest`, ids, unique prefixes); empty: every snapshot.
    pub snapshots: Vec<String>,
    /// Only snapshots of these hosts (any of them); empty: any host.
    pub hosts: Vec<String>,
    /// Only snapshots with at least one of these tags; empty: any.
    pub tags: Vec<String>,
    /// Decide what would be copied, write nothing.
    pub dry_run: bool,
}

/// One snapshot copied (or, in a dry run, to be copied).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CopiedSnapshot {
    /// Its id in the source.
    pub source_id: String,
    /// Its id in the target (`None` in a dry run).
    pub target_id: Option<String>,
    /// The id of the snapshot first written by a backup.
    pub original: String,
    /// Its time.
    pub time: String,
    /// Its host.
    pub host: String,
}

/// What a copy did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// Snapshots copied, oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Selected snapshots the target already had (by original id).
    pub skipped: u64,
    /// Selected snapshots the target had and forgot (its forget records name their original
    /// id): the target's retention is its own, a copy does not bring them back.
    pub skipped_forgotten: u64,
    /// Whether both repositories share their content secret (ids are equal; see the module
    /// documentation).
    pub shared_content: bool,
    /// Blobs stored in the target.
    pub blobs_copied: u64,
    /// Of those, deltas.
    pub blobs_delta: u64,
    /// References to blobs the target had already or that this run had stored before (each
    /// reference counts: a chunk named twice and stored once counts once here).
    pub blobs_reused: u64,
    /// Sealed bytes read from the source's packs.
    pub bytes_read: u64,
    /// Plaintext bytes of the blobs stored (a delta counts as its chunk's length).
    pub data_copied: u64,
    /// Bytes written to the target (packs and index objects).
    pub bytes_added: u64,
    /// Packs written to the target.
    pub packs_written: u64,
    /// Packs a killed earlier run left in the target, adopted first.
    pub adopted_packs: u64,
    /// Wall-clock seconds.
    pub duration_seconds: f64,
}

/// Copies the snapshots `opts` selects from `source` into `target` (see the module
/// documentation). Both should be locked by the caller: `target` for writing, `source` shared.
pub fn copy(
    source: &Repo,
    target: &mut Repo,
    opts: &CopyOptions,
    progress: &dyn PhaseProgress,
) -> Result<CopyReport> {
    let started = Instant::now();
    let mut report = CopyReport {
        shared_content: source.key().same_content(target.key()),
        ..CopyReport::default()
    };
    if source.config().id == target.config().id {
        return Err(Error::InvalidArgument(
            "the source and the target are the same repository".into(),
        ));
    }
    let selected = select(source, opts)?;
    let (present, _) = target.snapshots()?;
    let have: HashSet<String> = present.iter().map(|(id, s)| s.original_id(id)).collect();
    let forgotten = crate::repo::history::forgotten_originals(target)?;
    let mut todo = Vec::new();
    for (id, snap) in selected {
        let original = snap.original_id(&id);
        if have.contains(&original) {
            report.skipped += 1;
        } else if forgotten.contains(&original) {
            report.skipped_forgotten += 1;
        } else {
            todo.push((id, snap));
        }
    }
    if opts.dry_run {
        report.copied = todo.iter().map(|(id, s)| describe(id, s, None)).collect();
        report.duration_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if todo.is_empty() {
        report.duration_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    report.adopted_packs = target.adopt_unindexed()?.packs;
    let mut ids = IdMap::default();
    for (id, snap) in todo {
        crate::interrupt::check()?;
        progress.phase(&format!("copy {}", id.short()), snap.summary.bytes_read);
        let root = {
            let mut packer = target.packer()?;
            let mut c = Copier {
                source,
                packer: &mut packer,
                ids: &mut ids,
                shared: report.shared_content,
                report: &mut report,
                progress,
            };
            let root = c.tree(&snap.root)?;
            let pr = packer.finish()?;
            report.bytes_added += pr.bytes_written;
            report.packs_written += pr.packs_written;
            root
        };
        let original = snap.original_id(&id);
        let copy = Snapshot {
            root,
            parent: None,
            original: Some(original),
            known_snapshots: Vec::new(),
            ..snap.clone()
        };
        let (tid, stored) = target.save_snapshot(copy)?;
        report.copied.push(describe(&id, &stored, Some(&tid)));
    }
    report.duration_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn describe(id: &ObjectId, s: &Snapshot, target: Option<&ObjectId>) -> CopiedSnapshot {
    CopiedSnapshot {
        source_id: id.to_hex(),
        target_id: target.map(ObjectId::to_hex),
        original: s.original_id(id),
        time: s.time.clone(),
        host: s.host.clone(),
    }
}

/// The source snapshots `opts` selects, oldest first.
fn select(source: &Repo, opts: &CopyOptions) -> Result<Vec<(ObjectId, Snapshot)>> {
    let mut out: Vec<(ObjectId, Snapshot)> = if opts.snapshots.is_empty() {
        let (all, damaged) = source.snapshots()?;
        if let Some(d) = damaged.into_iter().next() {
            return Err(Error::corrupt(
                d,
                "cannot copy every snapshot of the source: name the snapshots to copy, or repair the source",
            ));
        }
        all
    } else {
        let mut v = Vec::new();
        let mut seen = HashSet::new();
        for r in &opts.snapshots {
            let (id, s) = source.find_snapshot(r)?;
            if seen.insert(id) {
                v.push((id, s));
            }
        }
        v.sort_by(|a, b| a.1.timestamp().cmp(&b.1.timestamp()).then(a.0.cmp(&b.0)));
        v
    };
    out.retain(|(_, s)| {
        (opts.hosts.is_empty() || opts.hosts.contains(&s.host))
            && (opts.tags.is_empty() || s.tags.iter().any(|t| opts.tags.contains(t)))
    });
    Ok(out)
}

/// Source id → (target id, the chunk's anchor under the target's key) for the blobs and trees
/// done in this run. With a shared content secret only trees are recorded (ids are equal).
#[derive(Default)]
struct IdMap(HashMap<BlobId, (BlobId, u64)>);

/// One blob read from the source, ready to be stored in the target.
struct Fetched {
    /// Its id in the source.
    src: BlobId,
    /// The target's id for it.
    id: BlobId,
    kind: BlobKind,
    /// The opened body (for a delta: base id, then script).
    body: Vec<u8>,
    raw_len: u32,
    /// The delta's base in the source.
    base: Option<BlobId>,
    /// The anchor under the target's key (independent keys only; 0 otherwise).
    anchor: u64,
    stored_len: u64,
    /// Where it is in the source, and (deltas only) its sealed bytes there, kept for the rare
    /// delta that must be stored whole (see [`Copier::store`]).
    loc: BlobLocation,
    stored: Vec<u8>,
}

struct Copier<'a, 'p, 'r> {
    source: &'a Repo,
    packer: &'a mut Packer<'p>,
    ids: &'a mut IdMap,
    shared: bool,
    report: &'a mut CopyReport,
    progress: &'r dyn PhaseProgress,
}

impl Copier<'_, '_, '_> {
    fn target_key(&self) -> &MasterKey {
        self.packer.repo().key()
    }

    /// Copies the tree `src` and everything below it; returns its id in the target.
    fn tree(&mut self, src: &BlobId) -> Result<BlobId> {
        if let Some((t, _)) = self.ids.0.get(src) {
            return Ok(*t);
        }
        crate::interrupt::check()?;
        let loc = self.source.locate(src)?;
        let plain = self.source.reader().read(src, &loc)?;
        self.report.bytes_read += loc.stored_len as u64;
        let tree = Tree::from_bytes(src, &plain)?;
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut node in tree.nodes {
            if let Some(sub) = node.subtree {
                node.subtree = Some(self.tree(&sub)?);
            }
            if node.kind == NodeKind::File && !node.content.is_empty() {
                let mapped = self.chunks(&node.content)?;
                if !self.shared {
                    node.anchors = if node.anchors.len() == node.content.len() {
                        mapped.iter().map(|(_, a)| *a).collect()
                    } else {
                        Vec::new()
                    };
                    node.content = node
                        .content
                        .iter()
                        .zip(&mapped)
                        .map(|(c, (id, _))| ContentRef(*id, c.1))
                        .collect();
                }
            }
            nodes.push(node);
        }
        let (tid, bytes) = if self.shared {
            (*src, plain)
        } else {
            let t = Tree {
                version: tree.version.min(TREE_VERSION),
                nodes,
            };
            let b = t.to_bytes()?;
            (self.target_key().blob_id(&b), b)
        };
        if self.packer.claim(&tid)? {
            let level = self.packer.repo().config().compression_level;
            let sealed = codec::encode(self.target_key(), BlobKind::Tree, &tid, &bytes, level)?;
            self.packer
                .add(BlobKind::Tree, tid, &sealed, bytes.len() as u32, None)?;
            self.report.blobs_copied += 1;
            self.report.data_copied += bytes.len() as u64;
        } else {
            self.report.blobs_reused += 1;
        }
        self.ids.0.insert(*src, (tid, 0));
        Ok(tid)
    }

    /// Copies the chunks of one file, a window at a time; returns (target id, anchor) per
    /// chunk (with a shared content secret the ids are the source's, the anchors 0).
    fn chunks(&mut self, content: &[ContentRef]) -> Result<Vec<(BlobId, u64)>> {
        let mut out = Vec::with_capacity(content.len());
        for window in content.chunks(WINDOW) {
            crate::interrupt::check()?;
            // Which ones must be read: with shared ids, those the target lacks (claimed now);
            // with independent keys, those not mapped in this run yet.
            let mut need: Vec<(BlobId, BlobLocation)> = Vec::new();
            let mut in_window = HashSet::new();
            for c in window {
                let wanted = if self.shared {
                    self.packer.claim(&c.0)?
                } else {
                    !self.ids.0.contains_key(&c.0) && in_window.insert(c.0)
                };
                if wanted {
                    need.push((c.0, self.source.locate(&c.0)?));
                } else {
                    self.report.blobs_reused += 1;
                }
            }
            let mut fetched = self.fetch(&need)?;
            // Data before deltas: a delta's base in the same window is stored first.
            fetched.sort_by_key(|f| f.kind == BlobKind::Delta);
            for f in fetched {
                self.store(f)?;
            }
            for c in window {
                out.push(if self.shared {
                    (c.0, 0)
                } else {
                    self.ids.0.get(&c.0).copied().ok_or_else(|| {
                        Error::corrupt(format!("blob {}", c.0.to_hex()), "not copied")
                    })?
                });
            }
        }
        Ok(out)
    }

    /// Reads `need` from the source in parallel: opened bodies, and with independent keys
    /// the target ids (which need the plaintext, so a delta is decoded against its base).
    fn fetch(&self, need: &[(BlobId, BlobLocation)]) -> Result<Vec<Fetched>> {
        let reader = self.source.reader().clone();
        let src_key = self.source.key().as_ref();
        let tgt_key = self.target_key();
        let shared = self.shared;
        need.par_iter()
            .map(|(id, loc)| {
                let stored = reader.read_stored(loc)?;
                let body = codec::open_body(src_key, loc.kind, id, &stored)?;
                let (tid, anchor) = if shared {
                    if loc.kind != BlobKind::Delta {
                        let plain = codec::inflate_body(loc.kind, id, &body, loc.raw_len)?;
                        if src_key.blob_id(&plain) != *id {
                            return Err(Error::corrupt(
                                format!("{:?} blob {} in the source", loc.kind, id.to_hex()),
                                "content does not match its id",
                            ));
                        }
                    }
                    (*id, 0)
                } else {
                    // `decode` checks the plaintext against the source id.
                    let plain = reader.decode(id, loc, &stored)?;
                    (tgt_key.blob_id(&plain), chunk_anchor(tgt_key, &plain))
                };
                Ok(Fetched {
                    src: *id,
                    id: tid,
                    kind: loc.kind,
                    body,
                    raw_len: loc.raw_len,
                    base: loc.base().map(|b| b.id),
                    anchor,
                    stored_len: loc.stored_len as u64,
                    loc: loc.clone(),
                    stored: if loc.kind == BlobKind::Delta {
                        stored
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect()
    }

    /// Stores one fetched blob in the target (a delta's base first).
    fn store(&mut self, mut f: Fetched) -> Result<()> {
        self.report.bytes_read += f.stored_len;
        // With shared ids the blob was claimed before it was read.
        let store = self.shared || self.packer.claim(&f.id)?;
        if !self.shared {
            self.ids.0.insert(f.src, (f.id, f.anchor));
        }
        if !store {
            self.report.blobs_reused += 1;
            return Ok(());
        }
        let mut base = None;
        if f.kind == BlobKind::Delta {
            let src_base = f
                .base
                .ok_or_else(|| Error::corrupt("delta blob", "the index names no base"))?;
            let tbase = self.base(&src_base)?;
            if f.body.len() < 32 {
                return Err(Error::corrupt(
                    format!("delta blob {}", f.id.to_hex()),
                    "body too short for a base id",
                ));
            }
            let Some(depth) = self.delta_depth_in_target(&tbase)? else {
                // The target cannot hold a delta against the base as it has it (a version 2
                // target, where a base is never a delta, or a chain as deep as chains grow), so
                // this blob is stored whole.
                let plain = self.source.reader().decode(&f.src, &f.loc, &f.stored)?;
                let level = self.packer.repo().config().compression_level;
                let sealed =
                    codec::encode(self.target_key(), BlobKind::Data, &f.id, &plain, level)?;
                self.packer
                    .add(BlobKind::Data, f.id, &sealed, f.raw_len, None)?;
                self.count(f.raw_len, false);
                return Ok(());
            };
            f.body[..32].copy_from_slice(&tbase.0);
            base = Some((tbase, depth));
        }
        let sealed = codec::seal_body(self.target_key(), f.kind, &f.id, &f.body)?;
        self.packer.add(f.kind, f.id, &sealed, f.raw_len, base)?;
        self.count(f.raw_len, f.kind == BlobKind::Delta);
        Ok(())
    }

    fn count(&mut self, raw_len: u32, delta: bool) {
        self.report.blobs_copied += 1;
        self.report.data_copied += raw_len as u64;
        if delta {
            self.report.blobs_delta += 1;
        }
        self.progress.advance(raw_len as u64);
    }

    /// The depth a delta against the target's blob `base` gets there, or `None` when the
    /// target may not hold such a delta: `base` is a delta and the target has no chains
    /// (repository version 2), or its chain is already as deep as chains grow.
    fn delta_depth_in_target(&self, base: &BlobId) -> Result<Option<u8>> {
        let depth = match self.packer.pending_depth(base) {
            Some(d) => d,
            None => self
                .packer
                .repo()
                .catalog()
                .locate(base)?
                .map_or(0, |l| l.depth),
        };
        let chains = self.packer.repo().config().version >= crate::format::CHAIN_REPO_VERSION;
        Ok(((depth == 0 || chains) && depth < crate::format::MAX_CHAIN_DEPTH).then_some(depth + 1))
    }

    /// Makes sure the delta base `src` (a blob of the source: a whole one, or a delta whose own
    /// base comes first) is in the target before a delta against it is stored; returns its
    /// target id.
    fn base(&mut self, src: &BlobId) -> Result<BlobId> {
        if self.shared {
            if self.packer.claim(src)? {
                let loc = self.source.locate(src)?;
                let f = self.fetch(&[(*src, loc)])?;
                for x in f {
                    self.store(x)?;
                }
            }
            return Ok(*src);
        }
        if let Some((t, _)) = self.ids.0.get(src) {
            return Ok(*t);
        }
        let loc = self.source.locate(src)?;
        let f = self.fetch(&[(*src, loc)])?;
        for x in f {
            self.store(x)?;
        }
        self.ids
            .0
            .get(src)
            .map(|(t, _)| *t)
            .ok_or_else(|| Error::corrupt(format!("delta base {}", src.to_hex()), "not copied"))
    }
}
