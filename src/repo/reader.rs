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
//! id; a delta blob is decoded through its chain (docs/design.md §4.2): every blob of the chain
//! is read with the same coalesced reads and authenticated, the root decoded whole and the
//! scripts composed into one pass ([`crate::format::chain`]). Damage reports name the pack.

use std::collections::HashMap;
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

/// The sealed bytes a set of coalesced ranged reads brought back, found by (pack, offset).
struct Fetched {
    runs: Vec<Run>,
    data: Vec<Result<Vec<u8>>>,
    /// (pack, offset) of each planned piece → (run, start within the run, length).
    at: HashMap<(ObjectId, u32), (usize, usize, usize)>,
}

impl Fetched {
    /// The sealed bytes of the piece `len` bytes long at `offset` of `pack`.
    fn piece(&self, pack: &ObjectId, offset: u32, len: u32) -> Result<&[u8]> {
        let &(r, at, n) = self
            .at
            .get(&(*pack, offset))
            .ok_or_else(|| Error::corrupt("read plan", "a piece was not planned"))?;
        let bytes = match &self.data[r] {
            Ok(b) => b,
            // Every blob of a failed read shares its failure, of the same kind (damage stays
            // damage, a missing pack stays missing).
            Err(Error::Corrupt { object, reason }) => {
                return Err(Error::corrupt(object.clone(), reason.clone()));
            }
            Err(Error::Missing { object }) => {
                return Err(Error::Missing {
                    object: object.clone(),
                });
            }
            Err(e) => {
                return Err(Error::Storage {
                    context: format!("reading pack {}", self.runs[r].pack.to_hex()),
                    transient: e.is_transient(),
                    source: e.to_string().into(),
                });
            }
        };
        bytes
            .get(at..at + n.min(len as usize))
            .filter(|b| b.len() == len as usize)
            .ok_or_else(|| {
                Error::corrupt(
                    format!("pack {}", pack.to_hex()),
                    "a ranged read came back short",
                )
            })
    }
}

/// The pieces (pack, offset, stored length) a blob's decoding needs: itself and, for a delta,
/// every blob of its chain.
fn pieces_of(loc: &BlobLocation, out: &mut Vec<(ObjectId, u64, u64)>) {
    out.push((loc.pack, loc.offset as u64, loc.stored_len as u64));
    for b in &loc.chain {
        out.push((b.pack, b.offset as u64, b.stored_len as u64));
    }
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
        let fetched = self.fetch(batch, true);
        // Decoding on the rayon pool: one run often holds a whole batch.
        batch
            .par_iter()
            .map(|(id, loc)| {
                let stored = fetched.piece(&loc.pack, loc.offset, loc.stored_len)?;
                self.decode_with(id, loc, stored, &|b| {
                    fetched.piece(&b.pack, b.offset, b.stored_len)
                })
            })
            .collect()
    }

    /// Plans and makes the coalesced ranged reads of what decoding `batch` needs, `parallel`ly
    /// ([`BlobReader::connections`] at a time) or one after the other.
    fn fetch(&self, batch: &[(BlobId, BlobLocation)], parallel: bool) -> Fetched {
        let mut wanted = Vec::with_capacity(batch.len());
        for (_, loc) in batch {
            pieces_of(loc, &mut wanted);
        }
        self.fetch_pieces(&wanted, parallel)
    }

    /// Plans and makes the coalesced ranged reads of `wanted` (pack, offset, length) pieces.
    fn fetch_pieces(&self, wanted: &[(ObjectId, u64, u64)], parallel: bool) -> Fetched {
        let runs = plan_runs(wanted, MAX_GAP, MAX_RUN);
        let get = |run: &Run| {
            self.backend
                .get_range(ObjectKind::Pack, &run.pack.to_hex(), run.offset, run.len)
        };
        let data: Vec<Result<Vec<u8>>> = if parallel && runs.len() > 1 {
            // Every run gets its own result: a failed read fails only the blobs it holds.
            crate::parallel::try_map(self.connections, &runs, |run| Ok(get(run)))
                .unwrap_or_else(|_| runs.iter().map(get).collect())
        } else {
            runs.iter().map(get).collect()
        };
        let mut at = HashMap::with_capacity(wanted.len());
        for (r, run) in runs.iter().enumerate() {
            for &p in &run.parts {
                let (pack, offset, len) = wanted[p];
                at.insert(
                    (pack, offset as u32),
                    (r, (offset - run.offset) as usize, len as usize),
                );
            }
        }
        Fetched { runs, data, at }
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
    /// of a whole pack); a delta's chain is read from the storage.
    pub fn decode(&self, id: &BlobId, loc: &BlobLocation, stored: &[u8]) -> Result<Vec<u8>> {
        if loc.kind != BlobKind::Delta {
            return codec::decode(&self.key, loc.kind, id, stored, loc.raw_len)
                .map_err(|e| in_pack(e, &loc.pack, ""));
        }
        let mut wanted = Vec::with_capacity(loc.chain.len());
        for b in &loc.chain {
            wanted.push((b.pack, b.offset as u64, b.stored_len as u64));
        }
        let fetched = self.fetch_pieces(&wanted, true);
        self.decode_with(id, loc, stored, &|b| {
            fetched.piece(&b.pack, b.offset, b.stored_len)
        })
    }

    /// Decodes blob `id` from its sealed bytes `stored`, a delta through its whole chain, whose
    /// sealed bytes `member` gives: the root is decoded whole, every delta above it is opened
    /// (authenticated, its script inflated), the scripts are composed into one pass over the
    /// root ([`crate::format::chain`]), and the result is checked against the blob's id (the
    /// chain's blobs are authenticated; the id check covers their bytes too).
    fn decode_with<'f>(
        &self,
        id: &BlobId,
        loc: &BlobLocation,
        stored: &'f [u8],
        member: &dyn Fn(&DeltaBase) -> Result<&'f [u8]>,
    ) -> Result<Vec<u8>> {
        if loc.kind != BlobKind::Delta {
            return codec::decode(&self.key, loc.kind, id, stored, loc.raw_len)
                .map_err(|e| in_pack(e, &loc.pack, ""));
        }
        let what = || format!("delta blob {}", id.to_hex());
        let root = loc
            .root()
            .ok_or_else(|| Error::corrupt(what(), "the index names no base"))?;
        if root.kind != BlobKind::Data {
            return Err(Error::corrupt(
                what(),
                "its chain does not end in a data blob",
            ));
        }
        let mut plain = codec::decode_unhashed(
            &self.key,
            BlobKind::Data,
            &root.id,
            member(root)?,
            root.raw_len,
        )
        .map_err(|e| in_pack(e, &root.pack, " (a delta base)"))?;
        // From just above the root up to the blob itself: (id, sealed, raw length, base id).
        let n = loc.chain.len();
        let mut levels: Vec<(BlobId, &[u8], u32, BlobId, ObjectId)> = Vec::with_capacity(n);
        for i in (0..n - 1).rev() {
            let b = &loc.chain[i];
            levels.push((b.id, member(b)?, b.raw_len, loc.chain[i + 1].id, b.pack));
        }
        levels.push((*id, stored, loc.raw_len, loc.chain[0].id, loc.pack));
        let mut scripts: Vec<(Vec<u8>, usize)> = Vec::with_capacity(levels.len());
        for (lid, sealed, raw_len, base_id, pack) in levels {
            match codec::open_delta(&self.key, &lid, sealed, raw_len, &base_id)
                .map_err(|e| in_pack(e, &pack, ""))?
            {
                codec::DeltaPayload::Script(s) => scripts.push((s, raw_len as usize)),
                codec::DeltaPayload::Prefix(frame) => {
                    // The first delta encoding cannot be composed: materialise what is below.
                    plain = self.compose(id, &plain, &scripts)?;
                    scripts.clear();
                    plain = codec::apply_prefix(&lid, &frame, raw_len, &plain)
                        .map_err(|e| in_pack(e, &pack, ""))?;
                }
            }
        }
        if !scripts.is_empty() {
            plain = self.compose(id, &plain, &scripts)?;
        }
        codec::check_decoded(&self.key, id, &plain, loc.raw_len)
            .map_err(|e| in_pack(e, &loc.pack, ""))?;
        Ok(plain)
    }

    fn compose(&self, id: &BlobId, root: &[u8], scripts: &[(Vec<u8>, usize)]) -> Result<Vec<u8>> {
        let refs: Vec<(&[u8], usize)> = scripts.iter().map(|(s, n)| (&s[..], *n)).collect();
        crate::format::chain::apply_chain(root, &refs).map_err(|e| {
            Error::corrupt(
                format!("delta blob {}", id.to_hex()),
                format!("bad copy script in its chain: {e}"),
            )
        })
    }

    /// Reads and decodes the blobs a backup's deltas are made against, with coalesced ranged
    /// reads (one request per run of neighbouring blobs, [`plan_runs`]), one after the other on
    /// the calling thread: a backup reads the bases of the changed chunks it has queued, which
    /// follow each other in the packs of the previous version, as do the blobs of their
    /// chains. Each gets its own result (a base that cannot be read only means its chunk is
    /// stored whole), in the order given.
    pub fn read_bases(&self, bases: &[(BlobId, BlobLocation)]) -> Vec<Result<Vec<u8>>> {
        let fetched = self.fetch(bases, false);
        bases
            .iter()
            .map(|(id, loc)| {
                let stored = fetched.piece(&loc.pack, loc.offset, loc.stored_len)?;
                self.decode_with(id, loc, stored, &|b| {
                    fetched.piece(&b.pack, b.offset, b.stored_len)
                })
            })
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
