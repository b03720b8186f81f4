//! Magic numbers, versions and fixed sizes of the on-disk format.
//!
//! This module mirrors docs/design.md; every constant that appears in a stored byte lives here so
//! the format can be read in one place. All integers on disk are little-endian.

/// Version of the repository format written by this build (stored in the config). Version 2
/// added delta blobs ([`BlobKind::Delta`]) against whole data blobs; version 3 added delta
/// chains (a delta's base may be a delta, up to [`MAX_CHAIN_DEPTH`] deep, recorded in index
/// entries of kind [`CHAIN_DELTA_KIND`]). Older repositories are read and written too, each
/// with only what its version allows, so builds that know only that version can still read
/// them: version 1 never receives delta blobs and gets trees of at most
/// [`TREE_VERSION_REPO_V1`]; version 2 receives deltas whose base is a whole data blob.
pub const REPO_VERSION: u32 = 3;

/// Oldest repository version that may hold delta chains.
pub const CHAIN_REPO_VERSION: u32 = 3;

/// Deepest delta chain a writer makes and a reader follows: a delta of depth `d` decodes from a
/// whole data blob through `d` copy scripts (see docs/design.md, "Delta chains").
pub const MAX_CHAIN_DEPTH: u8 = 32;

/// Kind byte of a pack-header or index entry for a delta of depth 2 or more: stored like a
/// delta entry (kind 2) followed by one more byte, the depth. A depth-1 delta keeps kind 2, so
/// repositories without chains stay byte-identical.
pub const CHAIN_DELTA_KIND: u8 = 3;

/// Oldest repository version this build opens.
pub const MIN_REPO_VERSION: u32 = 1;

/// Version of key files.
pub const KEY_FILE_VERSION: u32 = 1;

/// Version of forget records.
pub const FORGET_RECORD_VERSION: u32 = 1;

/// Version of snapshot objects.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Version of tree blobs written by this build. Readers accept every version up to it:
/// version 2 added special files, hard-link, change-detection and xattr fields; version 3 added
/// chunk anchors (`anchors`), which let the next backup pick delta bases.
pub const TREE_VERSION: u32 = 3;

/// Version of the trees written into a version-1 repository: builds that know only repository
/// version 1 read trees up to version 2. Such trees carry no anchors, which only serve to pick
/// delta bases, and a version-1 repository never receives delta blobs.
pub const TREE_VERSION_REPO_V1: u32 = 2;

/// Magic at the very end of every pack file.
pub const PACK_MAGIC: [u8; 8] = *b"TRSRPK01";

/// Magic at the start of an index object's plaintext.
pub const INDEX_MAGIC: [u8; 8] = *b"TRSRIX01";

/// Size of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;

/// Size of a Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// Bytes a sealed envelope adds to its plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Size of one entry in a pack header: kind (1), id (32), stored length (4), raw length (4).
/// A [`BlobKind::Delta`] entry is followed by its base's id ([`DELTA_BASE_LEN`] more bytes).
pub const PACK_ENTRY_LEN: usize = 1 + 32 + 4 + 4;

/// Extra bytes of a delta entry in pack headers and index objects: the base blob's id.
pub const DELTA_BASE_LEN: usize = 32;

/// Largest zstd window a prefix-frame delta may use (base plus chunk, both at most
/// [`MAX_BLOB_LEN`]): decoders refuse frames that ask for more.
pub const DELTA_WINDOW_LOG_MAX: u32 = 25;

/// How a delta blob's payload (after its base's id) is encoded, told by its first byte.
pub mod delta {
    /// `SCRIPT ‖ zstd frame of a copy script` (src/delta.rs), written since 2026-12-01.
    pub const SCRIPT: u8 = 0x01;
    /// The first byte of a zstd frame (magic `28 B5 2F FD`) made with the base's plaintext as
    /// reference prefix: what the first delta writer stored. Still read, no longer written.
    pub const ZSTD_PREFIX_MAGIC: u8 = 0x28;
}

/// Pack trailer: sealed header length (u32) + magic.
pub const PACK_TRAILER_LEN: usize = 4 + PACK_MAGIC.len();

/// Upper bound on a blob's plaintext (and so on decompression output): 16 MiB, the largest
/// chunk FastCDC may produce. Trees larger than this are split (see tree.rs).
pub const MAX_BLOB_LEN: usize = 16 * 1024 * 1024;

/// Upper bound on a pack header's plaintext, to refuse absurd allocations from a hostile trailer.
pub const MAX_PACK_HEADER_LEN: usize = 64 * 1024 * 1024;

/// Upper bound on small objects (config, key files, snapshots, index objects) when read.
pub const MAX_OBJECT_LEN: usize = 256 * 1024 * 1024;

/// Blob codec byte at the start of a blob's plaintext inside the AEAD.
pub mod codec {
    /// Payload stored as is.
    pub const RAW: u8 = 0;
    /// Payload is a zstd frame.
    pub const ZSTD: u8 = 1;
}

/// Kinds of blob. Stored in pack headers and index objects and bound into each blob's AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file or stream content.
    Data = 0,
    /// A serialized directory listing.
    Tree = 1,
    /// A chunk of content stored as a zstd patch against a base data blob (repository
    /// version 2). Its id is the id of the content it decodes to, like a data blob's.
    Delta = 2,
}

impl BlobKind {
    /// Whether the blob holds file content (a data or delta blob).
    pub fn is_content(self) -> bool {
        matches!(self, BlobKind::Data | BlobKind::Delta)
    }

    /// Decodes a stored kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            2 => Some(BlobKind::Delta),
            _ => None,
        }
    }
}

/// Associated-data domain strings: every sealed thing says what it is, so one cannot be
/// substituted for another.
pub mod aad {
    /// Prefix of a blob's associated data (followed by kind byte and blob id).
    pub const BLOB: &[u8] = b"tresor/v1/blob";
    /// A pack header.
    pub const PACK_HEADER: &[u8] = b"tresor/v1/pack-header";
    /// An index object.
    pub const INDEX: &[u8] = b"tresor/v1/index";
    /// A snapshot object.
    pub const SNAPSHOT: &[u8] = b"tresor/v1/snapshot";
    /// The config object.
    pub const CONFIG: &[u8] = b"tresor/v1/config";
    /// A lock object.
    pub const LOCK: &[u8] = b"tresor/v1/lock";
    /// The master key inside a key file.
    pub const KEY: &[u8] = b"tresor/v1/key";
    /// A forget record (which snapshots were removed, by whom, why).
    pub const FORGOTTEN: &[u8] = b"tresor/v1/forgotten";
}

/// Key-derivation contexts for the subkeys derived from the master secret (BLAKE3 derive_key).
pub mod kdf_context {
    /// Key of the keyed BLAKE3 that names blobs.
    pub const BLOB_ID: &str = "tresor 2026-11 blob id key v1";
    /// XChaCha20-Poly1305 key for all sealed data.
    pub const ENCRYPTION: &str = "tresor 2026-11 encryption key v1";
    /// Seed of the FastCDC gear table.
    pub const GEAR: &str = "tresor 2026-11 chunker gear table v1";
}
