//! An open repository: backend, master key, config, chunker, catalog and lock wired together.
//!
//! Operations (archiver, restorer, …) share a `Repo` and never call each other. `Repo::init`
//! writes key file, then config (the config's presence is what makes a repository exist).
//! `Repo::open` unwraps the key, reads the config and syncs the catalog. [`Repo::lock`] takes
//! the repository lock and syncs the catalog again, so that what an operation decides from
//! (dedup, what is unused) is what the repository held once the lock was granted.
//!
//! **Opening with a password** tries the key files in a bounded way, because anyone who can
//! write to `keys/` can plant files there: each file is inspected before any KDF (size, name,
//! JSON, parameter limits: stray files are skipped with a note); the key file that opened the
//! repository last time on this machine (remembered in the cache per location) or the one
//! named by `--key-hint` goes first, then the cheapest KDF first and the newest first; and the
//! total argon2 work of one open is capped at [`MAX_OPEN_WORK_KIB`]. Key files left untried are
//! named in the error.

#![forbid(unsafe_code)]

pub mod adopt;
pub mod catalog;
pub mod config;
pub mod history;
pub mod keys;
pub mod lock;
pub mod objects;
pub mod packer;
pub mod reader;
pub mod view;
pub mod walk;

pub use adopt::Adoption;
pub use packer::{Packer, PackerReport};
pub use reader::BlobReader;
pub use view::RepoView;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, Result};

use crate::format::chunker::{ChunkerParams, ChunkerSpec};

use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::repo::catalog::{BlobLocation, Catalog, PackObservation};
use crate::repo::lock::{LockGuard, LockTiming};
use config::Config;
use keys::{KdfParams, KeyInfo};

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

/// Total argon2 work (KiB × passes) one open may spend on key files: twice the largest a single
/// key file may ask for, and over a hundred default key files.
pub const MAX_OPEN_WORK_KIB: u64 = 2 * keys::MAX_WORK_KIB;

/// Key files read at most per open (a planted directory of millions must not stall it).
pub const MAX_KEY_FILES_READ: usize = 256;

/// How to open a repository.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Try this key file first (a full id or a unique prefix), e.g. when many key files exist.
    pub key_hint: Option<String>,
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
    /// The key file that opened it.
    key_id: String,
    /// The repository lock, once taken.
    lock: Option<LockGuard>,
    /// The read path, shared with worker threads.
    reader: BlobReader,
}

/// A key file as `key list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyListing {
    /// What the file says, or `None` when it is not a readable key file.
    #[serde(flatten)]
    pub info: Option<KeyInfo>,
    /// Its name.
    pub name: String,
    /// Whether this open used it.
    pub in_use: bool,
    /// Why it cannot be used, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
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
        let config = Config::new(opts.chunker, opts.pack_size, opts.compression_level)?;
        opts.kdf.validate()?;
        let key = MasterKey::generate()?;
        backend.create()?;
        let (name, bytes) = keys::create(&key, password, opts.kdf, &hostname(), &username())?;
        backend.put(ObjectKind::Key, &name.to_hex(), &bytes)?;
        backend.put(ObjectKind::Config, "config", &config.encode(&key)?)?;
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
        warnings.extend(catalog.sync(backend.as_ref(), &key)?);
        if remembered.as_deref() != Some(key_id.as_str()) {
            // Only a hint: a cache that cannot be written costs the next open some KDF time.
            let _ = crate::repo::catalog::private_dir_all(&cache_dir.join("key-hints"))
                .and_then(|()| crate::backend::local::write_atomic(&hint_file, key_id.as_bytes()));
        }
        Ok(Repo {
            reader: BlobReader::new(Arc::clone(&backend), Arc::clone(&key)),
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
        self.warnings = self.catalog.sync(self.backend.as_ref(), &self.key)?;
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
        let seen = self
            .catalog
            .observe_packs(&ids, self.backend.as_ref(), &self.key)?;
        self.warnings.extend(seen.warnings.iter().cloned());
        Ok((listing, seen))
    }

    /// The id of the key file that opened this repository.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Every file in `keys/`: what it says (read without any KDF), and which one is in use.
    pub fn keys(&self) -> Result<Vec<KeyListing>> {
        let mut out = Vec::new();
        for (name, size) in self.backend.list(ObjectKind::Key)? {
            let parsed = if size > keys::MAX_KEY_FILE_LEN {
                Err(format!("{size} bytes is too large for a key file"))
            } else {
                match self.backend.get(ObjectKind::Key, &name) {
                    Ok(bytes) => keys::inspect(&name, &bytes).map_err(|e| e.to_string()),
                    Err(Error::Missing { .. }) => continue,
                    Err(e) => return Err(e),
                }
            };
            out.push(KeyListing {
                in_use: name == self.key_id,
                name,
                problem: parsed.as_ref().err().cloned(),
                info: parsed.ok(),
            });
        }
        out.sort_by(|a, b| {
            let created = |k: &KeyListing| k.info.as_ref().map(|i| i.created.clone());
            created(a).cmp(&created(b)).then(a.name.cmp(&b.name))
        });
        Ok(out)
    }

    /// Adds a key file wrapping this repository's master key under another password.
    pub fn add_key(
        &self,
        password: &[u8],
        params: KdfParams,
        host: &str,
        user: &str,
    ) -> Result<KeyInfo> {
        let (id, bytes) = keys::create(&self.key, password, params, host, user)?;
        self.backend.put(ObjectKind::Key, &id.to_hex(), &bytes)?;
        keys::inspect(&id.to_hex(), &bytes)
    }

    /// Resolves a key id or unique prefix among the files in `keys/`.
    fn find_key(&self, reference: &str) -> Result<KeyListing> {
        let r = reference.to_ascii_lowercase();
        let mut found: Vec<KeyListing> = self
            .keys()?
            .into_iter()
            .filter(|k| !r.is_empty() && k.name.starts_with(&r))
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::InvalidArgument(format!(
                "no key file matches {reference:?} (see `tresor key list`)"
            ))),
            n => Err(Error::InvalidArgument(format!(
                "key prefix {reference:?} is ambiguous: it matches {n} key files"
            ))),
        }
    }

    /// Removes a key file: never the last usable one, and the one in use only with `force`
    /// (another key file must then still open the repository).
    pub fn remove_key(&self, reference: &str, force: bool) -> Result<KeyListing> {
        let k = self.find_key(reference)?;
        let usable = self.keys()?.iter().filter(|k| k.info.is_some()).count();
        if k.info.is_some() && usable <= 1 {
            return Err(Error::InvalidArgument(format!(
                "key file {} is the repository's only key: removing it would make every byte unreadable (add another with `tresor key add` first)",
                k.name
            )));
        }
        if k.in_use && !force {
            return Err(Error::InvalidArgument(format!(
                "key file {} is the one in use (it opened the repository just now); give --force to remove it anyway, or use `tresor key passwd` to replace it",
                k.name
            )));
        }
        self.backend.delete(ObjectKind::Key, &k.name)?;
        Ok(k)
    }

    /// Replaces the key file in use by one for `new_password`: the new file is durable before
    /// the old one is deleted, so a crash in between leaves both (each opens the repository).
    /// Returns the new key and the old one's id.
    pub fn change_password(
        &mut self,
        new_password: &[u8],
        params: Option<KdfParams>,
    ) -> Result<(KeyInfo, String)> {
        let old = self.find_key(&self.key_id.clone())?;
        let params = params
            .or(old.info.as_ref().map(KeyInfo::params))
            .unwrap_or_default();
        let new = self.add_key(new_password, params, &hostname(), &username())?;
        self.backend.delete(ObjectKind::Key, &old.name)?;
        self.key_id = new.id.clone();
        Ok((new, old.name))
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

    /// Names and sizes of the stored objects of one kind.
    fn list_objects(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        self.backend.list(kind)
    }

    /// One stored object's bytes.
    fn get_object(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.backend.get(kind, name)
    }

    /// Writes a forget record durably; returns its name.
    pub(crate) fn put_forget_record(
        &self,
        record: &crate::repo::history::ForgetRecord,
    ) -> Result<ObjectId> {
        self.ensure_lock_held()?;
        let (name, bytes) = record.encode(&self.key)?;
        self.backend
            .put(ObjectKind::Forgotten, &name.to_hex(), &bytes)?;
        Ok(name)
    }

    /// Deletes a forget record (only [`crate::repo::history::compact`], after merging it).
    pub(crate) fn delete_forget_record(&self, name: &ObjectId) -> Result<()> {
        self.backend.delete(ObjectKind::Forgotten, &name.to_hex())
    }

    /// Removes snapshot objects the way every removal must: a forget record naming them
    /// (`reason` says why) is durable first, then the objects go. Returns how many went.
    pub fn forget_snapshots(&self, ids: &[ObjectId], reason: &str) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.put_forget_record(&crate::repo::history::ForgetRecord::new(ids, reason))?;
        for id in ids {
            crate::interrupt::check()?;
            self.backend.delete(ObjectKind::Snapshot, &id.to_hex())?;
        }
        Ok(ids.len() as u64)
    }

    /// Writes a snapshot object, last of a backup: after checking that the lock is still ours
    /// and no signal asked to stop, with the ids of every snapshot present now as its known
    /// snapshots. Returns its id and the snapshot as stored.
    pub fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(ObjectId, Snapshot)> {
        crate::interrupt::check()?;
        self.ensure_lock_held()?;
        let mut known: Vec<String> = self
            .backend
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| ObjectId::from_hex(n).is_ok())
            .collect();
        known.sort();
        snapshot.known_snapshots = known;
        let (id, bytes) = snapshot.encode(&self.key)?;
        self.backend
            .put(ObjectKind::Snapshot, &id.to_hex(), &bytes)?;
        self.catalog
            .remember_snapshots(&[id], chrono::Utc::now().timestamp())?;
        Ok((id, snapshot))
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
        // What this machine has seen, it will notice missing (see `history`).
        let ids: Vec<ObjectId> = out.iter().map(|(id, _)| *id).collect();
        self.catalog
            .remember_snapshots(&ids, chrono::Utc::now().timestamp())?;
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

/// Where the cache remembers which key file opened the repository at `location`.
fn key_hint_file(cache_dir: &Path, location: &str) -> PathBuf {
    let h = blake3::hash(location.as_bytes()).to_hex();
    cache_dir.join("key-hints").join(&h.as_str()[..32])
}

/// Opens the master key with `password`, trying key files in the bounded way the module
/// documentation describes; `hints` (full ids or prefixes) go first. Returns the key, the id of
/// the key file that opened it, and one warning per file in `keys/` that is not a key file.
fn unlock_key(
    backend: &dyn Backend,
    password: &[u8],
    hints: &[&str],
) -> Result<(MasterKey, String, Vec<String>)> {
    let mut names = backend.list(ObjectKind::Key)?;
    if names.is_empty() {
        return Err(Error::Missing {
            object: "key files (keys/ is empty)".into(),
        });
    }
    let rank = |name: &str| {
        hints
            .iter()
            .position(|h| !h.is_empty() && name.starts_with(&h.to_ascii_lowercase()))
            .unwrap_or(usize::MAX)
    };
    names.sort_by_key(|(n, _)| rank(n));
    let unread = names.len().saturating_sub(MAX_KEY_FILES_READ);
    names.truncate(MAX_KEY_FILES_READ);
    let mut strays = Vec::new();
    let mut candidates = Vec::new();
    for (name, size) in names {
        if size > keys::MAX_KEY_FILE_LEN {
            strays.push(format!("{name} ({size} bytes, too large for a key file)"));
            continue;
        }
        let bytes = match backend.get(ObjectKind::Key, &name) {
            Ok(b) => b,
            // Deleted between list and get (a concurrent `key remove`).
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        match keys::inspect(&name, &bytes) {
            Ok(info) => candidates.push((rank(&name), info, bytes)),
            Err(e) => strays.push(format!("{name} ({e})")),
        }
    }
    // Hinted first; then the cheapest KDF (a planted file asking for much costs nothing until
    // the cheap ones failed), the newest first.
    candidates.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.params().cost().cmp(&b.1.params().cost()))
            .then(b.1.created.cmp(&a.1.created))
    });
    let warnings: Vec<String> = strays
        .iter()
        .map(|s| format!("keys/{s} is not a usable key file: ignored"))
        .collect();
    if candidates.is_empty() {
        return Err(Error::corrupt(
            "key files",
            format!("keys/ holds no usable key file: {}", strays.join("; ")),
        ));
    }
    let mut spent = 0u64;
    let mut skipped = Vec::new();
    for (hinted, info, bytes) in &candidates {
        let cost = info.params().cost();
        if *hinted == usize::MAX && spent.saturating_add(cost) > MAX_OPEN_WORK_KIB {
            skipped.push(format!(
                "{} ({} KiB × {} passes)",
                &info.id[..12],
                info.memory_kib,
                info.iterations
            ));
            continue;
        }
        spent = spent.saturating_add(cost);
        if let Some(k) = keys::open(&info.id, bytes, password)? {
            return Ok((k, info.id.clone(), warnings));
        }
    }
    let mut detail = String::new();
    if !skipped.is_empty() || unread > 0 {
        detail.push_str(&format!(
            " ({} key files not tried: the KDF work of one open is capped at {} KiB·passes{}{}; name yours with --key-hint ID)",
            skipped.len() + unread,
            MAX_OPEN_WORK_KIB,
            if skipped.is_empty() {
                String::new()
            } else {
                format!(": {}", skipped.join(", "))
            },
            if unread > 0 {
                format!(", and only {MAX_KEY_FILES_READ} key files are read")
            } else {
                String::new()
            }
        ));
    }
    if !strays.is_empty() {
        detail.push_str(&format!(
            " ({} files in keys/ are not key files and were ignored: {})",
            strays.len(),
            strays.join("; ")
        ));
    }
    Err(Error::WrongPassword { detail })
}
