//! An open repository: backend, master key, config, chunker and catalog wired together.
//!
//! Operations (archiver, restorer, …) share a `Repo` and never call each other. `Repo::init`
//! writes key file, then config (the config's presence is what makes a repository exist).
//! `Repo::open` unwraps the key, reads the config and syncs the catalog.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, ObjectKind};
use crate::catalog::{BlobLocation, Catalog, DeltaBase};
use crate::chunker::{ChunkerParams, ChunkerSpec};
use crate::codec;
use crate::config::{self, Config};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::id::{BlobId, ObjectId};
use crate::keys::{self, KdfParams};
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// Settings for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunk sizes.
    pub chunker: ChunkerParams,
    /// Pack target size in bytes.
    pub pack_size: u32,
    /// zstd level (0 = off).
    pub compression_level: i32,
    /// argon2id cost for the first key file.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: config::DEFAULT_CHUNKER,
            pack_size: config::DEFAULT_PACK_SIZE,
            compression_level: config::DEFAULT_ZSTD_LEVEL,
            kdf: KdfParams::default(),
        }
    }
}

/// Snapshots with their ids, oldest first.
pub type SnapshotList = Vec<(ObjectId, Snapshot)>;

/// An open repository.
pub struct Repo {
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    config: Config,
    chunker: ChunkerSpec,
    catalog: Catalog,
    warnings: Vec<String>,
}

/// The cache directory: `$TRESOR_CACHE_DIR`, else `$XDG_CACHE_HOME/tresor`, else `~/.cache/tresor`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRESOR_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("tresor");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("tresor"),
        None => std::env::temp_dir().join("tresor-cache"),
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

impl Repo {
    /// Creates a repository and returns its config.
    pub fn init(backend: &dyn Backend, password: &[u8], opts: &InitOptions) -> Result<Config> {
        if backend.exists(ObjectKind::Config, "config")? {
            return Err(Error::RepoExists(backend.location()));
        }
        let config = Config::new(opts.chunker, opts.pack_size, opts.compression_level)?;
        let key = MasterKey::generate()?;
        backend.create()?;
        let (name, bytes) = keys::create(&key, password, opts.kdf, &hostname())?;
        backend.put(ObjectKind::Key, &name.to_hex(), &bytes)?;
        backend.put(ObjectKind::Config, "config", &config.encode(&key)?)?;
        Ok(config)
    }

    /// Opens a repository with a password, syncing the catalog under `cache_dir`.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8], cache_dir: &Path) -> Result<Repo> {
        if !backend.exists(ObjectKind::Config, "config")? {
            return Err(Error::RepoNotFound(backend.location()));
        }
        let key = Arc::new(Self::unlock(backend.as_ref(), password)?);
        let config = Config::decode(&key, &backend.get(ObjectKind::Config, "config")?)?;
        let chunker = ChunkerSpec::new(config.chunker, key.gear_table())?;
        let mut catalog = Catalog::open(cache_dir, &config.id)?;
        let warnings = catalog.sync(backend.as_ref(), &key)?;
        Ok(Repo {
            backend,
            key,
            config,
            chunker,
            catalog,
            warnings,
        })
    }

    fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<MasterKey> {
        let mut corrupt = None;
        let names = backend.list(ObjectKind::Key)?;
        for (name, _) in &names {
            let bytes = backend.get(ObjectKind::Key, name)?;
            if ObjectId::of_bytes(&bytes).to_hex() != *name {
                corrupt = Some(Error::corrupt(
                    format!("key file {name}"),
                    "content does not match its name",
                ));
                continue;
            }
            match keys::open(name, &bytes, password) {
                Ok(Some(k)) => return Ok(k),
                Ok(None) => {}
                Err(e) => corrupt = Some(e),
            }
        }
        match corrupt {
            Some(e) => Err(e),
            None if names.is_empty() => Err(Error::Missing {
                object: "key files (keys/ is empty)".into(),
            }),
            None => Err(Error::WrongPassword),
        }
    }

    /// Problems met while opening that did not stop it (damaged index objects skipped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    /// The master key.
    pub fn key(&self) -> &Arc<MasterKey> {
        &self.key
    }
    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The chunker for this repository.
    pub fn chunker(&self) -> &ChunkerSpec {
        &self.chunker
    }
    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
    /// The catalog, for writers.
    pub fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    /// Finds a blob in the catalog, or says it is missing from the index.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.catalog.locate(id)?.ok_or_else(|| Error::Missing {
            object: format!("blob {} (not in any index object)", id.to_hex()),
        })
    }

    /// Reads and decodes one blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        read_located(self.backend.as_ref(), &self.key, id, &loc)
    }

    /// Loads a tree.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let loc = self.locate(id)?;
        load_located_tree(self.backend.as_ref(), &self.key, id, &loc)
    }

    /// All readable snapshots, oldest first, and one line per snapshot object that cannot be
    /// read (naming it): one damaged snapshot must not hide the others.
    pub fn snapshots(&self) -> Result<(SnapshotList, Vec<String>)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for (name, _) in self.backend.list(ObjectKind::Snapshot)? {
            let id = match ObjectId::from_hex(&name) {
                Ok(id) => id,
                Err(e) => {
                    damaged.push(format!("snapshot object {name}: {e}"));
                    continue;
                }
            };
            // Failing to read is an error of the storage, not damage of this object.
            let bytes = self.backend.get(ObjectKind::Snapshot, &name)?;
            match Snapshot::decode(&self.key, &id, &bytes) {
                Ok(s) => out.push((id, s)),
                Err(e) => damaged.push(format!("snapshot object {name}: {e}")),
            }
        }
        out.sort_by(|a, b| a.1.timestamp().cmp(&b.1.timestamp()).then(a.0.cmp(&b.0)));
        Ok((out, damaged))
    }

    /// Resolves `latest`, a full id or a unique id prefix.
    pub fn find_snapshot(&self, reference: &str) -> Result<(ObjectId, Snapshot)> {
        if reference == "latest" {
            let (mut snaps, damaged) = self.snapshots()?;
            // `latest` must not silently mean an older snapshot than the newest one.
            if let Some(d) = damaged.into_iter().next() {
                return Err(Error::corrupt(
                    d,
                    "cannot tell which snapshot is the latest; name the snapshot by id, or remove the damaged one with `tresor repair snapshots --forget`",
                ));
            }
            return snaps.pop().ok_or_else(|| {
                Error::SnapshotNotFound("latest (the repository has no snapshots)".into())
            });
        }
        let r = reference.to_ascii_lowercase();
        if r.is_empty() || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(reference.into()));
        }
        let matches: Vec<String> = self
            .backend
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&r))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound(reference.into())),
            1 => {
                let id = ObjectId::from_hex(&matches[0])?;
                let s = Snapshot::decode(
                    &self.key,
                    &id,
                    &self.backend.get(ObjectKind::Snapshot, &matches[0])?,
                )?;
                Ok((id, s))
            }
            n => Err(Error::AmbiguousSnapshot {
                prefix: reference.into(),
                count: n,
            }),
        }
    }
}

/// Reads, decodes and parses the tree blob `id` found at `loc`; refuses a data blob.
pub fn load_located_tree(
    backend: &dyn Backend,
    key: &MasterKey,
    id: &BlobId,
    loc: &BlobLocation,
) -> Result<Tree> {
    if loc.kind != BlobKind::Tree {
        return Err(Error::corrupt(
            format!("tree {}", id.to_hex()),
            "index lists it as a data blob",
        ));
    }
    Tree::from_bytes(id, &read_located(backend, key, id, loc)?)
}

/// Reads and decodes a blob whose location is known (usable from worker threads). A delta blob
/// is decoded against its base, which is read and decoded first.
pub fn read_located(
    backend: &dyn Backend,
    key: &MasterKey,
    id: &BlobId,
    loc: &BlobLocation,
) -> Result<Vec<u8>> {
    let stored = read_range(backend, &loc.pack, loc.offset, loc.stored_len)?;
    decode_located(backend, key, id, loc, &stored)
}

/// The sealed bytes of one blob of a pack.
fn read_range(backend: &dyn Backend, pack: &ObjectId, offset: u32, len: u32) -> Result<Vec<u8>> {
    backend.get_range(ObjectKind::Pack, &pack.to_hex(), offset as u64, len as u64)
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

/// Decodes the sealed bytes of a blob whose location is known; a delta's base is read from the
/// backend.
pub fn decode_located(
    backend: &dyn Backend,
    key: &MasterKey,
    id: &BlobId,
    loc: &BlobLocation,
    stored: &[u8],
) -> Result<Vec<u8>> {
    if loc.kind != BlobKind::Delta {
        return codec::decode(key, loc.kind, id, stored, loc.raw_len)
            .map_err(|e| in_pack(e, &loc.pack, ""));
    }
    let base = loc.base.as_ref().ok_or_else(|| {
        Error::corrupt(
            format!("delta blob {}", id.to_hex()),
            "the index names no base",
        )
    })?;
    let base_plain = read_base(backend, key, base)?;
    codec::decode_delta(key, id, stored, loc.raw_len, &base.id, &base_plain)
        .map_err(|e| in_pack(e, &loc.pack, ""))
}

/// Reads and decodes a delta's base (always a plain data blob), authenticated but not hashed:
/// the delta's own id check covers it (see [`codec::decode_unhashed`]).
pub fn read_base(backend: &dyn Backend, key: &MasterKey, base: &DeltaBase) -> Result<Vec<u8>> {
    let stored = read_range(backend, &base.pack, base.offset, base.stored_len)?;
    codec::decode_unhashed(key, BlobKind::Data, &base.id, &stored, base.raw_len)
        .map_err(|e| in_pack(e, &base.pack, " (a delta base)"))
}
