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
use crate::repo::catalog::DeltaBase;
use crate::repo::{Packer, Repo};

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
/// encoding budget ([`charge`]), sealed bytes and, for a delta, its base.
type Encoded = (BlobId, u32, usize, Result<(Vec<u8>, Option<BlobId>)>);

/// A chunk whose delta base must be read first: id, plaintext, base.
type BaseJob = (BlobId, Vec<u8>, DeltaBase);

/// Encodes a chunk (on the rayon pool): as a delta against `base` when its plaintext could be
/// read and the delta is small enough, else whole.
fn encode_chunk(
    key: &MasterKey,
    id: BlobId,
    data: Vec<u8>,
    base: Option<(DeltaBase, Vec<u8>)>,
    level: i32,
    charged: usize,
) -> Encoded {
    let delta = base.and_then(|(b, base_plain)| {
        let limit = codec::delta_limit(data.len(), b.stored_len, b.raw_len);
        codec::encode_delta_within(key, &id, &data, &b.id, &base_plain, limit)
            .ok()
            .flatten()
            .map(|sealed| (sealed, Some(b.id)))
    });
    let sealed = match delta {
        Some(d) => Ok(d),
        None => codec::encode(key, BlobKind::Data, &id, &data, level).map(|s| (s, None)),
    };
    (id, data.len() as u32, charged, sealed)
}

/// What a chunk costs the encoding budget: its plaintext and, when a delta base is to be read
/// for it, the base's plaintext (held from its read until the chunk is encoded).
fn charge(data: &[u8], base: Option<&DeltaBase>) -> usize {
    data.len() + base.map_or(0, |b| b.raw_len as usize)
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
                    let bases: Vec<DeltaBase> = jobs.iter().map(|j| j.2).collect();
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
        let base_tx = if deltas {
            base_readers(repo, repo.connections(), level, &encoded_tx)
        } else {
            None
        };
        Ok(BlobStore {
            key: Arc::clone(repo.key()),
            level,
            deltas,
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
        base: Option<BlobId>,
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

    /// The data blob a delta against `candidate` (a chunk of the file's previous version)
    /// would use as its base: the candidate itself, or its base if it is a delta (bases are
    /// never deltas, so decoding is one step). `None` when deltas are off or it is not indexed.
    pub(super) fn delta_base(&self, candidate: Option<BlobId>) -> Result<Option<DeltaBase>> {
        let Some(c) = candidate.filter(|_| self.deltas) else {
            return Ok(None);
        };
        Ok(match self.packer.repo().catalog().locate(&c) {
            Ok(Some(loc)) if loc.kind == BlobKind::Data => Some(DeltaBase::at(c, &loc)),
            Ok(Some(loc)) => loc.base,
            // A base that cannot be found is no reason to fail: store the chunk whole.
            Ok(None) | Err(Error::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        })
    }

    /// Compresses and seals a claimed data chunk on the rayon pool — as a delta against `base`
    /// when one is given and the delta is small enough, else whole; the result is packed by
    /// [`BlobStore::take_encoded`]. Waits while too much is being encoded.
    pub(super) fn encode_async(
        &mut self,
        id: BlobId,
        data: Vec<u8>,
        base: Option<DeltaBase>,
    ) -> Result<()> {
        while self.encoding_bytes > MAX_ENCODING_BYTES {
            self.take_encoded(true)?;
        }
        self.encoding += 1;
        self.encoding_bytes += charge(&data, base.as_ref());
        if let (Some(b), Some(tx)) = (base, &self.base_tx) {
            if let Err(e) = tx.send((id, data, b)) {
                // The readers are gone: read the base with the encoding, as without them.
                let (id, data, b) = e.into_inner();
                self.spawn_encode(id, data, Some(b));
            }
        } else {
            self.spawn_encode(id, data, base);
        }
        self.take_encoded(false)
    }

    /// Encodes on the rayon pool, reading the base there if there is one.
    fn spawn_encode(&self, id: BlobId, data: Vec<u8>, base: Option<DeltaBase>) {
        let (key, tx, level) = (Arc::clone(&self.key), self.encoded_tx.clone(), self.level);
        let reader = self.packer.repo().reader().clone();
        let charged = charge(&data, base.as_ref());
        rayon::spawn(move || {
            let base = base.and_then(|b| reader.read_base(&b).ok().map(|p| (b, p)));
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
