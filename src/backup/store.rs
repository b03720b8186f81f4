//! The blob store of a backup: dedup against the in-flight set and the catalog, delta or whole
//! encoding on the rayon pool, and feeding the sealed blobs to the repository's [`Packer`].
//!
//! A delta needs its base read from the repository first: those reads run on
//! [`Repo::connections`] threads of their own (over object storage each waits a round trip,
//! and the rayon pool is for encoding). Each takes what is queued, up to a batch, reads the
//! bases with one ranged read per run of neighbours and hands the chunks on to the rayon pool.

#![forbid(unsafe_code)]

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::codec;
use crate::format::crypto::MasterKey;
use crate::format::id::BlobId;
use crate::format::snapshot::Summary;
use crate::format::tree::{Node, Tree};
use crate::repo::catalog::BlobLocation;
use crate::repo::{Packer, Repo};

/// The deepest delta chain a backup makes (readers follow up to
/// [`crate::format::MAX_CHAIN_DEPTH`]). Each level costs a restore one script composition per
/// chunk; at the limit the next version is made against the chain's root instead, which holds
/// the changes of this many days. A month of the small dump corpus (30 days): limit 4 stored
/// 70.1 MB, 8 stored 66.3 MB, 32 stored 53.1 MB; restoring the last day took 0.76, 1.0 and
/// 2.4 s (docs/performance.md).
pub const CHAIN_DEPTH: u8 = 8;

/// Plaintext bytes handed to the encoders and not yet packed, delta bases included ([`charge`]);
/// bounds memory.
const MAX_ENCODING_BYTES: usize = 16 << 20;

/// Decides what to store and how (dedup, delta or whole, compression on the rayon pool); the
/// repository's [`Packer`] packs, uploads and indexes it in crash-safe order.
pub(super) struct BlobStore<'r> {
    packer: Packer<'r>,
    key: Arc<MasterKey>,
    level: i32,
    /// Whether changed chunks may be stored as deltas (repository version 2, compression on).
    deltas: bool,
    /// Whether a delta's base may be a delta (repository version 3).
    chains: bool,
    encoded_tx: Sender<Encoded>,
    encoded_rx: Receiver<Encoded>,
    /// To the base-reading threads (deltas on); dropping it ends them.
    base_tx: Option<Sender<BaseJob>>,
    encoding: usize,
    encoding_bytes: usize,
    data_added: u64,
    blobs_added: u64,
    blobs_reused: u64,
    blobs_delta: u64,
}

/// The most queued chunks a base-reading thread takes at once, reading their bases with
/// coalesced ranged reads ([`crate::repo::BlobReader::read_bases`]).
const BASE_BATCH: usize = 8;

/// A chunk back from an encoder: id, plaintext length, the bytes it was charged to the
/// encoding budget ([`charge`]), sealed bytes and, for a delta, its base and depth.
type Encoded = (BlobId, u32, usize, Result<(Vec<u8>, Option<(BlobId, u8)>)>);

/// A chunk whose delta base must be read first: id, plaintext, base.
type BaseJob = (BlobId, Vec<u8>, Base);

/// The blob a changed chunk is encoded against: the previous version of the chunk (a whole data
/// blob, or a delta whose chain is read and decoded with it), and the depth the new delta gets.
#[derive(Clone, Debug)]
pub(super) struct Base {
    id: BlobId,
    loc: BlobLocation,
    depth: u8,
}

impl Base {
    /// (stored, raw) length of the whole blob at the root of the base's chain: the estimate of
    /// what the chunk would cost stored whole.
    fn whole(&self) -> (u32, u32) {
        match self.loc.root() {
            Some(r) => (r.stored_len, r.raw_len),
            None => (self.loc.stored_len, self.loc.raw_len),
        }
    }
}

/// Encodes a chunk (on the rayon pool): as a delta against `base` when its plaintext could be
/// read and the delta is small enough, else whole.
fn encode_chunk(
    key: &MasterKey,
    id: BlobId,
    data: Vec<u8>,
    base: Option<(Base, Vec<u8>)>,
    level: i32,
    charged: usize,
) -> Encoded {
    let delta = base.and_then(|(b, base_plain)| {
        let (stored, raw) = b.whole();
        let limit = codec::delta_limit(data.len(), stored, raw);
        codec::encode_delta_within(key, &id, &data, &b.id, &base_plain, limit)
            .ok()
            .flatten()
            .map(|sealed| (sealed, Some((b.id, b.depth))))
    });
    let sealed = match delta {
        Some(d) => Ok(d),
        None => codec::encode(key, BlobKind::Data, &id, &data, level).map(|s| (s, None)),
    };
    (id, data.len() as u32, charged, sealed)
}

/// What a chunk costs the encoding budget: its plaintext and, when a delta base is to be read
/// for it, the base's plaintext (held from its read until the chunk is encoded).
fn charge(data: &[u8], base: Option<&Base>) -> usize {
    data.len() + base.map_or(0, |b| b.loc.raw_len as usize)
}

/// Starts `n` base-reading threads (see the module documentation); `None` if none could start
/// (then bases are read on the rayon pool).
fn base_readers(
    repo: &Repo,
    n: usize,
    level: i32,
    done: &Sender<Encoded>,
) -> Option<Sender<BaseJob>> {
    let (tx, rx) = crossbeam_channel::unbounded::<BaseJob>();
    let mut started = 0;
    for _ in 0..n {
        let (rx, done) = (rx.clone(), done.clone());
        let (reader, key) = (repo.reader().clone(), Arc::clone(repo.key()));
        let spawned = std::thread::Builder::new()
            .name("tresor-base".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // What else is queued, up to a batch: the bases of neighbouring changed
                    // chunks are neighbours in the previous version's packs, so one ranged
                    // read serves many (one round trip instead of one each).
                    let mut jobs = vec![first];
                    while jobs.len() < BASE_BATCH {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let bases: Vec<(BlobId, BlobLocation)> =
                        jobs.iter().map(|j| (j.2.id, j.2.loc.clone())).collect();
                    let plains = reader.read_bases(&bases);
                    for ((id, data, b), plain) in jobs.into_iter().zip(plains) {
                        // The delta is an optimisation: a base that cannot be read means a
                        // whole blob.
                        let charged = charge(&data, Some(&b));
                        let base = plain.ok().map(|p| (b, p));
                        let (key, done) = (Arc::clone(&key), done.clone());
                        rayon::spawn(move || {
                            let _ = done.send(encode_chunk(&key, id, data, base, level, charged));
                        });
                    }
                }
            });
        if spawned.is_ok() {
            started += 1;
        }
    }
    (started > 0).then_some(tx)
}

impl<'r> BlobStore<'r> {
    pub(super) fn new(repo: &'r mut Repo) -> Result<Self> {
        let (encoded_tx, encoded_rx) = crossbeam_channel::unbounded();
        let config = repo.config();
        let (level, deltas) = (
            config.compression_level,
            config.version >= 2 && config.compression_level != 0,
        );
        let chains = config.version >= crate::format::CHAIN_REPO_VERSION;
        let base_tx = if deltas {
            base_readers(repo, repo.connections(), level, &encoded_tx)
        } else {
            None
        };
        Ok(BlobStore {
            key: Arc::clone(repo.key()),
            level,
            deltas,
            chains,
            base_tx,
            packer: repo.packer()?,
            encoded_tx,
            encoded_rx,
            encoding: 0,
            encoding_bytes: 0,
            data_added: 0,
            blobs_added: 0,
            blobs_reused: 0,
            blobs_delta: 0,
        })
    }

    /// Whether a blob must be stored; marks it in flight if so.
    pub(super) fn claim(&mut self, id: &BlobId) -> Result<bool> {
        let new = self.packer.claim(id)?;
        if !new {
            self.blobs_reused += 1;
        }
        Ok(new)
    }

    fn add_sealed(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        raw_len: u32,
        base: Option<(BlobId, u8)>,
    ) -> Result<()> {
        self.packer.add(kind, id, sealed, raw_len, base)?;
        self.blobs_added += 1;
        self.data_added += raw_len as u64;
        Ok(())
    }

    /// Stores a directory listing. A version-1 repository gets a version-2 tree without
    /// anchors, which builds that know only repository version 1 can read (see
    /// [`crate::format::TREE_VERSION_REPO_V1`]).
    pub(super) fn store_tree(&mut self, nodes: Vec<Node>) -> Result<BlobId> {
        let mut tree = Tree::new(nodes)?;
        if self.packer.repo().config().version < 2 {
            tree.version = crate::format::TREE_VERSION_REPO_V1;
            for n in &mut tree.nodes {
                n.anchors.clear();
            }
        }
        self.store_one(BlobKind::Tree, &tree.to_bytes()?)
    }

    /// The blob a delta against `candidate` (a chunk of the file's previous version) is made
    /// against, or `None` when deltas are off or the candidate is not indexed. In a repository
    /// with chains (version 3) that is the candidate itself, so each day's delta holds one day's
    /// changes, until the candidate's chain is [`CHAIN_DEPTH`] deep; then, and always in a
    /// version 2 repository, it is the whole blob at the root of the candidate's chain.
    pub(super) fn delta_base(&self, candidate: Option<BlobId>) -> Result<Option<Base>> {
        let Some(c) = candidate.filter(|_| self.deltas) else {
            return Ok(None);
        };
        let loc = match self.packer.repo().catalog().locate(&c) {
            Ok(Some(loc)) => loc,
            // A base that cannot be found is no reason to fail: store the chunk whole.
            Ok(None) | Err(Error::Corrupt { .. }) | Err(Error::Missing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(match loc.kind {
            BlobKind::Data => Some(Base {
                id: c,
                loc,
                depth: 1,
            }),
            BlobKind::Delta if self.chains && loc.depth < CHAIN_DEPTH => Some(Base {
                id: c,
                depth: loc.depth + 1,
                loc,
            }),
            // At the depth limit (or without chains): against the chain's root.
            BlobKind::Delta => loc.root().map(|r| Base {
                id: r.id,
                loc: r.location(),
                depth: 1,
            }),
            BlobKind::Tree => None,
        })
    }

    /// Compresses and seals a claimed data chunk on the rayon pool — as a delta against `base`
    /// when one is given and the delta is small enough, else whole; the result is packed by
    /// [`BlobStore::take_encoded`]. Waits while too much is being encoded.
    pub(super) fn encode_async(
        &mut self,
        id: BlobId,
        data: Vec<u8>,
        base: Option<Base>,
    ) -> Result<()> {
        while self.encoding_bytes > MAX_ENCODING_BYTES {
            self.take_encoded(true)?;
        }
        self.encoding += 1;
        self.encoding_bytes += charge(&data, base.as_ref());
        match (base, &self.base_tx) {
            (Some(b), Some(tx)) => {
                if let Err(e) = tx.send((id, data, b)) {
                    // The readers are gone: read the base with the encoding, as without them.
                    let (id, data, b) = e.into_inner();
                    self.spawn_encode(id, data, Some(b));
                }
            }
            (base, _) => self.spawn_encode(id, data, base),
        }
        self.take_encoded(false)
    }

    /// Encodes on the rayon pool, reading the base there if there is one.
    fn spawn_encode(&self, id: BlobId, data: Vec<u8>, base: Option<Base>) {
        let (key, tx, level) = (Arc::clone(&self.key), self.encoded_tx.clone(), self.level);
        let reader = self.packer.repo().reader().clone();
        let charged = charge(&data, base.as_ref());
        rayon::spawn(move || {
            let base = base.and_then(|b| reader.read(&b.id, &b.loc).ok().map(|p| (b, p)));
            let _ = tx.send(encode_chunk(&key, id, data, base, level, charged));
        });
    }

    /// Packs finished encodings: those ready now, or (with `wait_one`) at least one.
    pub(super) fn take_encoded(&mut self, wait_one: bool) -> Result<()> {
        let mut wait = wait_one && self.encoding > 0;
        loop {
            let msg = if wait {
                wait = false;
                self.encoded_rx
                    .recv()
                    .map_err(|_| Error::InvalidArgument("encoder channel closed".into()))?
            } else {
                match self.encoded_rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                }
            };
            let (id, raw_len, charged, sealed) = msg;
            self.encoding -= 1;
            self.encoding_bytes -= charged;
            let (sealed, base) = sealed?;
            let kind = if base.is_some() {
                self.blobs_delta += 1;
                BlobKind::Delta
            } else {
                BlobKind::Data
            };
            self.add_sealed(kind, id, &sealed, raw_len, base)?;
        }
    }

    /// Stores one blob (used for trees) unless the repository has it.
    fn store_one(&mut self, kind: BlobKind, plain: &[u8]) -> Result<BlobId> {
        let id = self.key.blob_id(plain);
        if self.claim(&id)? {
            let sealed = codec::encode(&self.key, kind, &id, plain, self.level)?;
            self.add_sealed(kind, id, &sealed, plain.len() as u32, None)?;
        }
        Ok(id)
    }

    /// Packs what is still being encoded, then waits until everything is durable and
    /// indexed; fills in what was added.
    pub(super) fn finish(mut self, summary: &mut Summary) -> Result<()> {
        while self.encoding > 0 {
            self.take_encoded(true)?;
        }
        let written = self.packer.finish()?;
        summary.bytes_added = written.bytes_written;
        summary.data_added = self.data_added;
        summary.blobs_added = self.blobs_added;
        summary.blobs_reused = self.blobs_reused;
        summary.blobs_delta = self.blobs_delta;
        Ok(())
    }
}
