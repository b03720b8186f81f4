//! An open repository: backend, master key, config, chunker, catalog and lock wired together.
//!
//! Operations (backup, restore, …) share a `Repo` and never call each other. `Repo::init`
//! writes key file, then config (the config's presence is what makes a repository exist).
//! `Repo::open` unwraps the key, reads the config and syncs the catalog. [`Repo::lock`] takes
//! the repository lock and syncs the catalog again, so that what an operation decides from
//! (dedup, what is unused) is what the repository held once the lock was granted.
//!
//! The rest of the repository's door is in the submodules: opening the master key and key
//! management (`key_ring`), snapshots (`snapshots`), the read path (`reader`, `view`), the one
//! pack writer (`packer`, `adopt`), stored objects for check/prune/repair (`objects`), tree walks
//! (`walk`), and the catalog, key files, locks, config and forget records they rest on.

#![forbid(unsafe_code)]

pub mod adopt;
pub mod catalog;
pub mod config;
pub mod history;
mod key_ring;
pub mod keys;
pub mod lock;
pub mod objects;
pub mod packer;
pub mod password;
pub mod reader;
mod snapshots;
pub mod view;
pub mod walk;

pub use adopt::Adoption;
pub use key_ring::{KeyListing, MAX_KEY_FILES_READ, MAX_OPEN_WORK_KIB};
pub use packer::{Packer, PackerReport};
pub use reader::BlobReader;
pub use snapshots::SnapshotList;
pub use view::RepoView;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, Result};
use crate::format::chunker::{ChunkerParams, ChunkerSpec};
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::tree::Tree;
use crate::repo::catalog::{BlobLocation, Catalog, PackObservation};
use crate::repo::lock::{LockGuard, LockTiming};
use config::Config;
use key_ring::{key_hint_file, unlock_key};
use keys::KdfParams;

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

/// How to open a repository.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Try this key file first (a full id or a unique prefix), e.g. when many key files exist.
    pub key_hint: Option<String>,
    /// Requests to keep in flight (`--connections`); `None`: the backend's default
    /// ([`Backend::connections`]).
    pub connections: Option<usize>,
}

/// An open repository.
pub struct Repo {
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    config: Config,
    chunker: ChunkerSpec,
    catalog: Catalog,
    warnings: Vec<String>,
    /// The key file that opened it.
    key_id: String,
    /// The repository lock, once taken.
    lock: Option<LockGuard>,
    /// The read path, shared with worker threads.
    reader: BlobReader,
    /// Requests to keep in flight (pack uploads, coalesced reads, index objects).
    connections: usize,
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

/// The user running tresor: `$USER`, else `$LOGNAME` (cron sets one), else the uid.
pub fn username() -> String {
    use std::os::unix::fs::MetadataExt;
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| match std::fs::metadata("/proc/self") {
            Ok(m) => format!("uid {}", m.uid()),
            Err(_) => String::new(),
        })
}

impl Repo {
    /// Creates a repository and returns its config.
    pub fn init(backend: &dyn Backend, password: &[u8], opts: &InitOptions) -> Result<Config> {
        if backend.exists(ObjectKind::Config, "config")? {
            return Err(Error::RepoExists(backend.location()));
        }
        Self::init_with_key(backend, password, opts, MasterKey::generate()?)
    }

    /// `repo init --copy-chunker-params-from`: creates a repository that chunks and ids
    /// plaintext exactly like `source` (its chunker parameters and its content secret, see
    /// [`crate::format::crypto`]) under a master key of its own, so that blobs copied from
    /// `source` keep their ids and dedup with backups made directly into the new one.
    /// `opts.chunker` is ignored.
    pub fn init_like(
        backend: &dyn Backend,
        password: &[u8],
        opts: &InitOptions,
        source: &Repo,
    ) -> Result<Config> {
        let opts = InitOptions {
            chunker: source.config.chunker,
            ..opts.clone()
        };
        let key = MasterKey::generate_sharing_content(&source.key)?;
        Self::init_with_key(backend, password, &opts, key)
    }

    fn init_with_key(
        backend: &dyn Backend,
        password: &[u8],
        opts: &InitOptions,
        key: MasterKey,
    ) -> Result<Config> {
        if backend.exists(ObjectKind::Config, "config")? {
            return Err(Error::RepoExists(backend.location()));
        }
        let config = Config::new(opts.chunker, opts.pack_size, opts.compression_level)?;
        opts.kdf.validate()?;
        backend.create()?;
        let (name, bytes) = keys::create(&key, password, opts.kdf, &hostname(), &username())?;
        backend.put(ObjectKind::Key, &name.to_hex(), &bytes)?;
        // Create-only: of two `init`s racing here, the second fails rather than replace it.
        backend.put_new(ObjectKind::Config, "config", &config.encode(&key)?)?;
        Ok(config)
    }

    /// Opens a repository with a password, syncing the catalog under `cache_dir`.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8], cache_dir: &Path) -> Result<Repo> {
        Self::open_with(backend, password, cache_dir, &OpenOptions::default())
    }

    /// [`Repo::open`] with options.
    pub fn open_with(
        backend: Arc<dyn Backend>,
        password: &[u8],
        cache_dir: &Path,
        opts: &OpenOptions,
    ) -> Result<Repo> {
        if !backend.exists(ObjectKind::Config, "config")? {
            return Err(Error::RepoNotFound(backend.location()));
        }
        let hint_file = key_hint_file(cache_dir, &backend.location());
        let remembered = std::fs::read_to_string(&hint_file)
            .ok()
            .map(|s| s.trim().to_string());
        let hints: Vec<&str> = opts
            .key_hint
            .as_deref()
            .into_iter()
            .chain(remembered.as_deref())
            .collect();
        let (key, key_id, mut warnings) = unlock_key(backend.as_ref(), password, &hints)?;
        let key = Arc::new(key);
        let config = Config::decode(&key, &backend.get(ObjectKind::Config, "config")?)?;
        let chunker = ChunkerSpec::new(config.chunker, key.gear_table())?;
        let mut catalog = Catalog::open(cache_dir, &config.id)?;
        let connections = opts
            .connections
            .unwrap_or_else(|| backend.connections())
            .max(1);
        warnings.extend(catalog.sync(
            backend.as_ref(),
            &key,
            crate::parallel::small_requests(connections),
        )?);
        if remembered.as_deref() != Some(key_id.as_str()) {
            // Only a hint: a cache that cannot be written costs the next open some KDF time.
            let _ = crate::repo::catalog::private_dir_all(&cache_dir.join("key-hints"))
                .and_then(|()| crate::backend::local::write_atomic(&hint_file, key_id.as_bytes()));
        }
        Ok(Repo {
            reader: BlobReader::new(Arc::clone(&backend), Arc::clone(&key), connections),
            connections,
            backend,
            key,
            config,
            chunker,
            catalog,
            warnings,
            key_id,
            lock: None,
        })
    }

    /// Takes the repository lock for `operation` (see [`crate::repo::lock`]), then brings the
    /// catalog up to date and removes temporary files that interrupted runs left (see
    /// [`Repo::remove_stale_temporaries`]). Returns one message per stale lock or temporary file
    /// removed. The lock is held until [`Repo::release_lock`] or the `Repo` is dropped.
    pub fn lock(
        &mut self,
        operation: &str,
        exclusive: bool,
        retry: std::time::Duration,
        timing: LockTiming,
    ) -> Result<Vec<String>> {
        let guard = crate::repo::lock::acquire(
            Arc::clone(&self.backend),
            Arc::clone(&self.key),
            operation,
            exclusive,
            retry,
            timing,
        )?;
        let mut notes = guard.removed_stale.clone();
        let alone = exclusive || guard.others_at_start == 0;
        self.lock = Some(guard);
        self.warnings = self.catalog.sync(
            self.backend.as_ref(),
            &self.key,
            crate::parallel::small_requests(self.connections),
        )?;
        notes.extend(self.remove_stale_temporaries(alone)?);
        Ok(notes)
    }

    /// Removes temporary files of interrupted writes: those older than a minute when no other
    /// operation holds a lock (`alone`: nobody else can be writing one), else only those older
    /// than a day. One message per file.
    pub fn remove_stale_temporaries(&self, alone: bool) -> Result<Vec<String>> {
        let min_age = std::time::Duration::from_secs(if alone { 60 } else { 86_400 });
        Ok(self
            .backend
            .remove_stale_temporaries(min_age)?
            .into_iter()
            .map(|(name, size)| {
                format!("removed {name} ({size} bytes), a temporary file an interrupted run left")
            })
            .collect())
    }

    /// Fails unless the lock taken by [`Repo::lock`] is still held (see
    /// [`LockGuard::ensure_held`]); without a lock (library use, `--no-lock`) there is nothing
    /// to lose.
    pub fn ensure_lock_held(&self) -> Result<()> {
        match &self.lock {
            Some(g) => g.ensure_held(),
            None => Ok(()),
        }
    }

    /// The lock object this repository holds, if any.
    pub fn lock_name(&self) -> Option<String> {
        self.lock.as_ref().map(LockGuard::name)
    }

    /// Drops the lock now.
    pub fn release_lock(&mut self) {
        self.lock = None;
    }

    /// Lists the packs the storage holds and tells the catalog (see
    /// [`Catalog::observe_packs`]): index entries of packs that are gone stop serving dedup
    /// and reads. Returns every listed name with its size (names that are not pack ids too)
    /// and what changed. The listing comes after the catalog's last sync ([`Repo::lock`],
    /// [`Repo::open`]), as `observe_packs` requires.
    pub fn observe_packs(&mut self) -> Result<(Vec<(String, u64)>, PackObservation)> {
        let listing = self.backend.list(ObjectKind::Pack)?;
        let ids: HashSet<ObjectId> = listing
            .iter()
            .filter_map(|(n, _)| ObjectId::from_hex(n).ok())
            .collect();
        let seen = self.catalog.observe_packs(
            &ids,
            self.backend.as_ref(),
            &self.key,
            crate::parallel::small_requests(self.connections),
        )?;
        self.warnings.extend(seen.warnings.iter().cloned());
        Ok((listing, seen))
    }

    /// Every lock in the repository: (name, its info or why it cannot be read).
    pub fn locks(&self) -> Result<Vec<(String, std::result::Result<lock::LockInfo, String>)>> {
        lock::list(self.backend.as_ref(), &self.key)
    }

    /// `repo unlock`: removes stale locks, or with `all` every lock (see
    /// [`lock::remove_locks`]). Returns one line per lock removed.
    pub fn remove_locks(&self, all: bool, timing: &LockTiming) -> Result<Vec<String>> {
        lock::remove_locks(self.backend.as_ref(), &self.key, all, timing)
    }

    /// Problems met while opening that did not stop it (damaged index objects skipped).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
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

    /// The catalog, for lookups (only the repository writes it).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Finds a blob in the catalog, or says it is missing from the index.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.catalog
            .locate(id)?
            .ok_or_else(|| self.catalog.missing_blob(id, ""))
    }

    /// Requests to keep in flight at once (see [`OpenOptions::connections`]).
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// The requests made to the storage so far, by kind, if the backend counts them (every
    /// backend [`crate::backend::open`] makes does).
    pub fn request_counts(&self) -> Option<crate::backend::RequestCounts> {
        self.backend.request_counts()
    }

    /// The thread-safe read path (see [`BlobReader`]).
    pub fn reader(&self) -> &BlobReader {
        &self.reader
    }

    /// Reads and decodes one blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        self.reader().read(id, &loc)
    }

    /// Loads a tree.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let loc = self.locate(id)?;
        self.reader().read_tree(id, &loc)
    }
}
