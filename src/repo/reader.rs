//! Reading blobs and packs: the repository's read path, shareable across threads.
//!
//! A [`BlobReader`] holds the backend and the master key (both behind `Arc`), so it is
//! `Clone + Send + Sync`: the restore's rayon workers, the mount, the parent-tree loader of a
//! backup and the check's pack readers each take one. It never touches the catalog (a SQLite
//! connection is not `Sync`): callers locate a blob first ([`crate::repo::Repo::locate`]) and
//! hand its [`BlobLocation`] in.
//!
//! **Coalesced reads.** [`BlobReader::read_many`] reads a batch of blobs the way object storage
//! wants: it plans the reads per pack ([`plan_runs`]: sorted by pack and offset, neighbours
//! closer than [`MAX_GAP`] merged into one ranged read of at most [`MAX_RUN`] bytes, delta
//! bases planned along with the blobs), issues the runs [`BlobReader::connections`] at a time,
//! then decodes the blobs on the rayon pool (a run often holds a whole batch). The answer
//! keeps the batch's order. Memory: the batch's stored bytes and its plaintext.
//!
//! Every read authenticates before it decompresses and checks the plaintext against the blob's
//! id; a delta blob is decoded against its base, which is read and authenticated first (bases
//! are never deltas, so that is one step). Damage reports name the pack.

use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::pack::{self, PackEntry};
use crate::format::tree::Tree;
use crate::format::{BlobKind, PACK_TRAILER_LEN};
use crate::repo::catalog::{BlobLocation, DeltaBase};

/// The thread-safe read path of one repository.
#[derive(Clone)]
pub struct BlobReader {
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    connections: usize,
}

/// Bytes between two needed blobs of a pack that a ranged read reads through rather than
/// paying another request for (at 20 ms a round trip, 256 KiB costs less than a request).
pub const MAX_GAP: u64 = 256 << 10;

/// The longest ranged read a plan makes (a single larger blob is read alone).
pub const MAX_RUN: u64 = 8 << 20;

/// One ranged read of a plan: `len` bytes of `pack` at `offset`, holding the planned reads
/// `parts` (indices into what was planned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The pack.
    pub pack: ObjectId,
    /// Where the read starts.
    pub offset: u64,
    /// How many bytes it reads.
    pub len: u64,
    /// The planned reads it covers, by index, in offset order.
    pub parts: Vec<usize>,
}

/// Plans ranged reads for `wanted` (pack, offset, length) pieces: sorted by pack and offset,
/// a piece that starts at most `max_gap` bytes after the current run's end (or overlaps it) is
/// added to it while the run stays within `max_run` bytes; every piece lands in exactly one
/// run, which covers it whole. The same piece wanted twice is read once.
pub fn plan_runs(wanted: &[(ObjectId, u64, u64)], max_gap: u64, max_run: u64) -> Vec<Run> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| (wanted[i].0, wanted[i].1, wanted[i].2));
    let mut runs: Vec<Run> = Vec::new();
    for i in order {
        let (pack, offset, len) = wanted[i];
        let end = offset.saturating_add(len);
        if let Some(r) = runs.last_mut() {
            let run_end = r.offset + r.len;
            let new_end = run_end.max(end);
            if r.pack == pack
                && offset <= run_end.saturating_add(max_gap)
                && new_end - r.offset <= max_run
            {
                r.len = new_end - r.offset;
                r.parts.push(i);
                continue;
            }
        }
        runs.push(Run {
            pack,
            offset,
            len,
            parts: vec![i],
        });
    }
    runs
}

/// What one planned piece of a batch turned into.
enum Piece {
    /// A blob's plaintext, by its place in the batch.
    Plain(usize, Vec<u8>),
    /// A delta's sealed bytes (decoded once its base is), by its place in the batch.
    Delta(usize, Vec<u8>),
    /// A base's plaintext, by its place among the bases.
    Base(usize, Vec<u8>),
}

impl BlobReader {
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        key: Arc<MasterKey>,
        connections: usize,
    ) -> BlobReader {
        BlobReader {
            backend,
            key,
            connections: connections.max(1),
        }
    }

    /// Requests this reader keeps in flight ([`crate::repo::Repo::connections`]).
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Reads and decodes the blobs of a batch with coalesced ranged reads, in parallel (see
    /// the module documentation); the plaintexts in the batch's order.
    pub fn read_many(&self, batch: &[(BlobId, BlobLocation)]) -> Result<Vec<Vec<u8>>> {
        if batch.len() == 1 {
            return Ok(vec![self.read(&batch[0].0, &batch[0].1)?]);
        }
        let mut bases: Vec<DeltaBase> = Vec::new();
        let mut base_of: Vec<Option<usize>> = vec![None; batch.len()];
        let mut wanted: Vec<(ObjectId, u64, u64)> = Vec::with_capacity(batch.len());
        for (i, (id, loc)) in batch.iter().enumerate() {
            wanted.push((loc.pack, loc.offset as u64, loc.stored_len as u64));
            if loc.kind == BlobKind::Delta {
                let base = loc.base.ok_or_else(|| {
                    Error::corrupt(
                        format!("delta blob {}", id.to_hex()),
                        "the index names no base",
                    )
                })?;
                let j = match bases.iter().position(|b| b.id == base.id) {
                    Some(j) => j,
                    None => {
                        bases.push(base);
                        bases.len() - 1
                    }
                };
                base_of[i] = Some(j);
            }
        }
        for b in &bases {
            wanted.push((b.pack, b.offset as u64, b.stored_len as u64));
        }
        let runs = plan_runs(&wanted, MAX_GAP, MAX_RUN);
        let fetched = crate::parallel::try_map(self.connections, &runs, |run| {
            self.backend
                .get_range(ObjectKind::Pack, &run.pack.to_hex(), run.offset, run.len)
        })?;
        // Decoding on the rayon pool: one run often holds a whole batch.
        let parts: Vec<(usize, usize)> = runs
            .iter()
            .enumerate()
            .flat_map(|(r, run)| run.parts.iter().map(move |&p| (r, p)))
            .collect();
        let pieces: Vec<Piece> = parts
            .par_iter()
            .map(|&(r, p)| {
                let run = &runs[r];
                let (_, offset, len) = wanted[p];
                let at = (offset - run.offset) as usize;
                let stored = fetched[r].get(at..at + len as usize).ok_or_else(|| {
                    Error::corrupt(
                        format!("pack {}", run.pack.to_hex()),
                        "a ranged read came back short",
                    )
                })?;
                Ok(if p < batch.len() {
                    let (id, loc) = &batch[p];
                    if loc.kind == BlobKind::Delta {
                        Piece::Delta(p, stored.to_vec())
                    } else {
                        Piece::Plain(
                            p,
                            codec::decode(&self.key, loc.kind, id, stored, loc.raw_len)
                                .map_err(|e| in_pack(e, &loc.pack, ""))?,
                        )
                    }
                } else {
                    let j = p - batch.len();
                    let b = &bases[j];
                    Piece::Base(
                        j,
                        codec::decode_unhashed(&self.key, BlobKind::Data, &b.id, stored, b.raw_len)
                            .map_err(|e| in_pack(e, &b.pack, " (a delta base)"))?,
                    )
                })
            })
            .collect::<Result<_>>()?;
        drop(fetched);
        let mut plain: Vec<Option<Vec<u8>>> = vec![None; batch.len()];
        let mut deltas: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut base_plain: Vec<Option<Vec<u8>>> = vec![None; bases.len()];
        for piece in pieces {
            match piece {
                Piece::Plain(i, v) => plain[i] = Some(v),
                Piece::Delta(i, v) => deltas.push((i, v)),
                Piece::Base(j, v) => base_plain[j] = Some(v),
            }
        }
        let decoded: Vec<(usize, Vec<u8>)> = deltas
            .par_iter()
            .map(|(i, stored)| {
                let (id, loc) = &batch[*i];
                let j = base_of[*i].ok_or_else(|| Error::corrupt("delta", "no base planned"))?;
                let bp = base_plain[j]
                    .as_deref()
                    .ok_or_else(|| Error::corrupt("delta base", "not read"))?;
                codec::decode_delta(&self.key, id, stored, loc.raw_len, &bases[j].id, bp)
                    .map(|v| (*i, v))
                    .map_err(|e| in_pack(e, &loc.pack, ""))
            })
            .collect::<Result<_>>()?;
        for (i, v) in decoded {
            plain[i] = Some(v);
        }
        plain
            .into_iter()
            .map(|p| p.ok_or_else(|| Error::corrupt("blob", "not read")))
            .collect()
    }

    /// The master key (for ids of plaintext: verifying restored files).
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// Reads and decodes the blob `id` found at `loc`. A delta blob is decoded against its
    /// base, which is read and decoded first.
    pub fn read(&self, id: &BlobId, loc: &BlobLocation) -> Result<Vec<u8>> {
        let stored = self.range(&loc.pack, loc.offset, loc.stored_len)?;
        self.decode(id, loc, &stored)
    }

    /// Reads, decodes and parses the tree blob `id` found at `loc`; refuses a data blob.
    pub fn read_tree(&self, id: &BlobId, loc: &BlobLocation) -> Result<Tree> {
        if loc.kind != BlobKind::Tree {
            return Err(Error::corrupt(
                format!("tree {}", id.to_hex()),
                "index lists it as a data blob",
            ));
        }
        Tree::from_bytes(id, &self.read(id, loc)?)
    }

    /// Decodes the sealed bytes of a blob whose location is known (read already, e.g. as part
    /// of a whole pack); a delta's base is read from the storage.
    pub fn decode(&self, id: &BlobId, loc: &BlobLocation, stored: &[u8]) -> Result<Vec<u8>> {
        if loc.kind != BlobKind::Delta {
            return codec::decode(&self.key, loc.kind, id, stored, loc.raw_len)
                .map_err(|e| in_pack(e, &loc.pack, ""));
        }
        let base = loc.base.as_ref().ok_or_else(|| {
            Error::corrupt(
                format!("delta blob {}", id.to_hex()),
                "the index names no base",
            )
        })?;
        let base_plain = self.read_base(base)?;
        codec::decode_delta(&self.key, id, stored, loc.raw_len, &base.id, &base_plain)
            .map_err(|e| in_pack(e, &loc.pack, ""))
    }

    /// Reads and decodes a delta's base (always a plain data blob), authenticated but not
    /// hashed: the delta's own id check covers it (see [`codec::decode_unhashed`]).
    pub fn read_base(&self, base: &DeltaBase) -> Result<Vec<u8>> {
        let stored = self.range(&base.pack, base.offset, base.stored_len)?;
        codec::decode_unhashed(&self.key, BlobKind::Data, &base.id, &stored, base.raw_len)
            .map_err(|e| in_pack(e, &base.pack, " (a delta base)"))
    }

    /// Reads and decodes several delta bases with coalesced ranged reads (one request per run
    /// of neighbouring bases, [`plan_runs`]), one after the other on the calling thread: a
    /// backup reads the bases of the changed chunks it has queued, which follow each other in
    /// the packs of the previous version. Each base gets its own result (a base that cannot be
    /// read only means its chunk is stored whole), in the order given.
    pub fn read_bases(&self, bases: &[DeltaBase]) -> Vec<Result<Vec<u8>>> {
        let wanted: Vec<(ObjectId, u64, u64)> = bases
            .iter()
            .map(|b| (b.pack, b.offset as u64, b.stored_len as u64))
            .collect();
        let mut out: Vec<Option<Result<Vec<u8>>>> = (0..bases.len()).map(|_| None).collect();
        for run in plan_runs(&wanted, MAX_GAP, MAX_RUN) {
            let fetched =
                self.backend
                    .get_range(ObjectKind::Pack, &run.pack.to_hex(), run.offset, run.len);
            for &p in &run.parts {
                let b = &bases[p];
                let at = (b.offset as u64 - run.offset) as usize;
                let piece = match &fetched {
                    Ok(bytes) => bytes.get(at..at + b.stored_len as usize).ok_or_else(|| {
                        Error::corrupt(
                            format!("pack {}", run.pack.to_hex()),
                            "a ranged read came back short",
                        )
                    }),
                    // Every base of the run shares the one failure.
                    Err(e) => Err(Error::Storage {
                        context: format!("reading delta bases of pack {}", run.pack.to_hex()),
                        transient: e.is_transient(),
                        source: e.to_string().into(),
                    }),
                };
                out[p] = Some(piece.and_then(|stored| {
                    codec::decode_unhashed(&self.key, BlobKind::Data, &b.id, stored, b.raw_len)
                        .map_err(|e| in_pack(e, &b.pack, " (a delta base)"))
                }));
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::corrupt("delta base", "not read"))))
            .collect()
    }

    /// The sealed bytes of the blob found at `loc`, as stored (`repo copy` re-seals them).
    pub fn read_stored(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        self.range(&loc.pack, loc.offset, loc.stored_len)
    }

    /// A whole stored pack (check, prune and repair read packs whole).
    pub fn pack_bytes(&self, pack: &ObjectId) -> Result<Vec<u8>> {
        self.backend.get(ObjectKind::Pack, &pack.to_hex())
    }

    /// Reads a stored pack's header without the blobs: one range read of the pack's last
    /// [`HEADER_GUESS`] bytes, which holds the trailer and, for all but packs of thousands of
    /// blobs, the whole header; a second read for the rest of a longer header.
    pub fn pack_header(&self, pack: &ObjectId, pack_size: u64) -> Result<Vec<PackEntry>> {
        let name = pack.to_hex();
        let tl = PACK_TRAILER_LEN as u64;
        if pack_size < tl {
            return Err(Error::corrupt(
                format!("pack {name}"),
                "too short to be a pack",
            ));
        }
        let tail_len = pack_size.min(HEADER_GUESS);
        let tail =
            self.backend
                .get_range(ObjectKind::Pack, &name, pack_size - tail_len, tail_len)?;
        let trailer = tail
            .get(tail.len().saturating_sub(PACK_TRAILER_LEN)..)
            .unwrap_or(&[]);
        let hlen = pack::parse_trailer(pack, trailer, pack_size)? as u64;
        if hlen + tl <= tail_len {
            let start = (tail_len - tl - hlen) as usize;
            let sealed = tail
                .get(start..start + hlen as usize)
                .ok_or_else(|| Error::corrupt(format!("pack {name}"), "short read"))?;
            return pack::parse_header(&self.key, pack, sealed, pack_size);
        }
        let sealed =
            self.backend
                .get_range(ObjectKind::Pack, &name, pack_size - tl - hlen, hlen)?;
        pack::parse_header(&self.key, pack, &sealed, pack_size)
    }

    /// The packs an index object lists (check reads them in parallel, away from the catalog).
    pub fn load_index(&self, name: &str) -> Result<Vec<crate::format::index::IndexedPack>> {
        let id = ObjectId::from_hex(name)?;
        crate::format::index::decode(&self.key, &id, &self.backend.get(ObjectKind::Index, name)?)
    }

    /// The sealed bytes of one blob of a pack.
    fn range(&self, pack: &ObjectId, offset: u32, len: u32) -> Result<Vec<u8>> {
        self.backend
            .get_range(ObjectKind::Pack, &pack.to_hex(), offset as u64, len as u64)
    }
}

/// How much of a pack's end [`BlobReader::pack_header`] reads first.
pub const HEADER_GUESS: u64 = 64 << 10;

/// Names the pack in a damage report about one of its blobs (`role` says what the blob was
/// needed as, if not for itself).
fn in_pack(e: Error, pack: &ObjectId, role: &str) -> Error {
    match e {
        Error::Corrupt { object, reason } => {
            Error::corrupt(format!("{object}{role} in pack {}", pack.to_hex()), reason)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pack(b: u8) -> ObjectId {
        ObjectId([b; 32])
    }

    #[test]
    fn neighbours_merge_and_gaps_split() {
        let w = vec![
            (pack(2), 0, 100),
            (pack(1), 500, 100),
            (pack(1), 0, 100),
            (pack(1), 100, 100),
            (pack(1), 10_000, 100),    // a 9,800-byte gap: read through
            (pack(1), 1_000_000, 100), // far: its own run
        ];
        let runs = plan_runs(&w, 10_000, 1 << 20);
        assert_eq!(
            runs,
            vec![
                Run {
                    pack: pack(1),
                    offset: 0,
                    len: 10_100,
                    parts: vec![2, 3, 1, 4]
                },
                Run {
                    pack: pack(1),
                    offset: 1_000_000,
                    len: 100,
                    parts: vec![5]
                },
                Run {
                    pack: pack(2),
                    offset: 0,
                    len: 100,
                    parts: vec![0]
                },
            ]
        );
        // The run-length bound splits a long stretch of neighbours.
        let w: Vec<_> = (0..10).map(|i| (pack(1), i * 100, 100)).collect();
        let runs = plan_runs(&w, 0, 300);
        assert_eq!(runs.len(), 4);
        assert!(runs.iter().all(|r| r.len <= 300));
    }

    proptest! {
        #[test]
        fn every_piece_is_covered_once_within_bounds(
            pieces in proptest::collection::vec((0u8..3, 0u64..5_000_000, 1u64..3_000_000), 0..60),
            gap in 0u64..1_000_000,
            max_run in 1u64..20_000_000,
        ) {
            let wanted: Vec<_> = pieces.iter().map(|&(p, o, l)| (pack(p), o, l)).collect();
            let runs = plan_runs(&wanted, gap, max_run);
            let mut seen = vec![0u32; wanted.len()];
            for r in &runs {
                // A run longer than the bound holds one piece only (a blob is never split).
                prop_assert!(r.len <= max_run || r.parts.len() == 1);
                for &i in &r.parts {
                    seen[i] += 1;
                    let (p, o, l) = wanted[i];
                    prop_assert_eq!(p, r.pack);
                    prop_assert!(o >= r.offset && o + l <= r.offset + r.len);
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            // In pack and offset order (pieces of a real pack never overlap, these may).
            for w in runs.windows(2) {
                prop_assert!((w[0].pack, w[0].offset) <= (w[1].pack, w[1].offset));
            }
            prop_assert!(runs.len() <= wanted.len());
        }
    }
}
