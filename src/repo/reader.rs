//! Reading blobs and packs: the repository's read path, shareable across threads.
//!
//! A [`BlobReader`] holds the backend and the master key (both behind `Arc`), so it is
//! `Clone + Send + Sync`: the restore's rayon workers, the mount, the parent-tree loader of a
//! backup and the check's pack readers each take one. It never touches the catalog (a SQLite
//! connection is not `Sync`): callers locate a blob first ([`crate::repo::Repo::locate`]) and
//! hand its [`BlobLocation`] in.
//!
//! Every read authenticates before it decompresses and checks the plaintext against the blob's
//! id; a delta blob is decoded against its base, which is read and authenticated first (bases
//! are never deltas, so that is one step). Damage reports name the pack.

use std::sync::Arc;

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
}

impl BlobReader {
    pub(super) fn new(backend: Arc<dyn Backend>, key: Arc<MasterKey>) -> BlobReader {
        BlobReader { backend, key }
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

    /// The sealed bytes of the blob found at `loc`, as stored (`repo copy` re-seals them).
    pub fn read_stored(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        self.range(&loc.pack, loc.offset, loc.stored_len)
    }

    /// A whole stored pack (check, prune and repair read packs whole).
    pub fn pack_bytes(&self, pack: &ObjectId) -> Result<Vec<u8>> {
        self.backend.get(ObjectKind::Pack, &pack.to_hex())
    }

    /// Reads a stored pack's header with two range reads (trailer, then header), without the
    /// blobs.
    pub fn pack_header(&self, pack: &ObjectId, pack_size: u64) -> Result<Vec<PackEntry>> {
        let name = pack.to_hex();
        if pack_size < PACK_TRAILER_LEN as u64 {
            return Err(Error::corrupt(
                format!("pack {name}"),
                "too short to be a pack",
            ));
        }
        let trailer = self.backend.get_range(
            ObjectKind::Pack,
            &name,
            pack_size - PACK_TRAILER_LEN as u64,
            PACK_TRAILER_LEN as u64,
        )?;
        let hlen = pack::parse_trailer(pack, &trailer, pack_size)? as u64;
        let sealed = self.backend.get_range(
            ObjectKind::Pack,
            &name,
            pack_size - PACK_TRAILER_LEN as u64 - hlen,
            hlen,
        )?;
        pack::parse_header(&self.key, pack, &sealed, pack_size)
    }

    /// The sealed bytes of one blob of a pack.
    fn range(&self, pack: &ObjectId, offset: u32, len: u32) -> Result<Vec<u8>> {
        self.backend
            .get_range(ObjectKind::Pack, &pack.to_hex(), offset as u64, len as u64)
    }
}

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
