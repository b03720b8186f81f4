//! Opening the master key with a password, and key management (`tresor key list/add/remove/
//! passwd`).
//! **Opening with a password** tries the key files in a bounded way, because anyone who can
//! write to `keys/` can plant files there: each file is inspected before any KDF (size, name,
//! JSON, parameter limits: stray files are skipped with a note); the key file that opened the
//! repository last time on this machine (remembered in the cache per location) or the one
//! named by `--key-hint` goes first, then the cheapest KDF first and the newest first; and the
//! total argon2 work of one open is capped at [`MAX_OPEN_WORK_KIB`]. Key files left untried are
//! named in the error.

use std::path::{Path, PathBuf};

use super::keys::{self, KdfParams, KeyInfo};
use super::{Repo, hostname, username};
use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, Result};
use crate::format::crypto::MasterKey;
/// Total argon2 work (KiB × passes) one open may spend on key files: twice the largest a single
/// key file may ask for, and over a hundred default key files.
pub const MAX_OPEN_WORK_KIB: u64 = 2 * keys::MAX_WORK_KIB;

/// Key files read at most per open (a planted directory of millions must not stall it).
pub const MAX_KEY_FILES_READ: usize = 256;

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

impl Repo {
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
}

/// Where the cache remembers which key file opened the repository at `location`.
pub(super) fn key_hint_file(cache_dir: &Path, location: &str) -> PathBuf {
    let h = blake3::hash(location.as_bytes()).to_hex();
    cache_dir.join("key-hints").join(&h.as_str()[..32])
}

/// Opens the master key with `password`, trying key files in the bounded way the module
/// documentation describes; `hints` (full ids or prefixes) go first. Returns the key, the id of
/// the key file that opened it, and one warning per file in `keys/` that is not a key file.
pub(super) fn unlock_key(
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
