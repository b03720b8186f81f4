//! A repository in a local directory.
//!
//! Layout: every object is the file at its key ([`layout::key`]) under the root directory:
//! `config`, `keys/`, `index/`, `snapshots/`, `locks/`, `forgotten/`, and `data/XX/` where `XX`
//! is the first two hex digits of a pack's name (256 subdirectories keep directories small).
//!
//! Durability of `put`: write to `.tmp-…` in the target directory, fsync the file, rename it
//! over the final name, fsync the directory. A crash leaves at worst a `.tmp-` file, which
//! `list` never reports and `remove_stale_temporaries` removes. Reads use positional I/O, so
//! one open file serves concurrent readers.
//!
//! Permissions: files are created `0600` and directories `0700` whatever the umask (a key file
//! readable by others would let any local user guess the password offline). A repository whose
//! top directory gives its group access and others none (`repo init --group-readable` makes it
//! `0750`; `chmod 0770` makes it group-writable) gets files and directories with the same group
//! bits, so a backup group can share it. Other users never get any bit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Backend, ObjectKind, layout};
use crate::error::{Error, IoContext, Result};

/// A backend rooted at a directory.
pub struct LocalBackend {
    root: PathBuf,
    /// Group bits new files and directories get (`0o040`, `0o060` or none), and `create` gives
    /// the top directory.
    group: u32,
}

/// Mode of new files with the given group bits.
fn file_mode(group: u32) -> u32 {
    0o600 | (group & 0o060)
}

/// Mode of new directories with the given group bits (read implies search).
fn dir_mode(group: u32) -> u32 {
    0o700 | (group & 0o060) | if group & 0o040 != 0 { 0o010 } else { 0 }
}

/// Creates one directory with `mode`, whatever the umask.
fn make_dir(d: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .mode(mode)
        .create(d)
        .ctx(|| format!("creating {}", d.display()))?;
    // The umask may have taken group bits away.
    fs::set_permissions(d, fs::Permissions::from_mode(mode))
        .ctx(|| format!("setting the mode of {}", d.display()))
}

impl LocalBackend {
    /// `put` (`create_only`: `put_new`): makes the object's directory if needed, then writes.
    fn store(&self, kind: ObjectKind, name: &str, data: &[u8], create_only: bool) -> Result<()> {
        let dir = self.dir_of(kind, name);
        if matches!(kind, ObjectKind::Pack | ObjectKind::Forgotten) && !dir.exists() {
            // A pack's fan-out directory, or a kind newer than the repository.
            if let Some(parent) = dir.parent()
                && !parent.exists()
            {
                make_dir(parent, dir_mode(self.group))?;
            }
            match make_dir(&dir, dir_mode(self.group)) {
                Ok(()) => {}
                // Made by a concurrent writer meanwhile.
                Err(_) if dir.is_dir() => {}
                Err(e) => return Err(e),
            }
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
        }
        write_durable(&dir.join(name), data, file_mode(self.group), create_only)
    }

    /// A backend at `root` (not touched until used, except that the group bits of an existing
    /// top directory are read: they decide the group bits of new files).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let root = root.into();
        // Only a top directory closed to others says "share with the group" on purpose: a
        // plain `mkdir` (0755 under the usual umask), or a repository made by a build that
        // followed the umask, is kept private.
        let group = fs::metadata(&root)
            .map(|m| m.permissions().mode())
            .map(|mode| if mode & 0o007 == 0 { mode & 0o060 } else { 0 })
            .unwrap_or(0);
        LocalBackend { root, group }
    }

    /// For `repo init`: the repository's group may read it (top directory `0750`, files
    /// `0640`).
    pub fn group_readable(mut self) -> Self {
        self.group |= 0o040;
        self
    }

    /// The directory holding objects of `kind` named `name`.
    fn dir_of(&self, kind: ObjectKind, name: &str) -> PathBuf {
        let path = self.path_of(kind, name);
        path.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone())
    }

    /// Full path of an object: its key ([`layout::key`]) under the root.
    pub fn path_of(&self, kind: ObjectKind, name: &str) -> PathBuf {
        self.root.join(layout::key(kind, name))
    }

    fn missing_or(&self, kind: ObjectKind, name: &str, what: &str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::Missing {
                object: format!("{kind:?} {name} ({})", self.path_of(kind, name).display()),
            }
        } else {
            Error::io(format!("{what} {}", self.path_of(kind, name).display()), e)
        }
    }
}

/// Flushes a directory's entries to disk.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Writes `data` to `path` crash-safely (temp file, fsync, rename, fsync the directory),
/// readable by its owner only.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o600)
}

/// [`write_atomic`] with the file created with `mode` (the umask cannot widen it).
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_durable(path, data, mode, false)
}

/// [`write_atomic_mode`], or with `create_only` a create-only write: the durable temporary
/// file is hard-linked to `path` (which fails if `path` exists: [`Error::AlreadyExists`]),
/// then removed. A crash between the link and the removal leaves a `.tmp-` file, which
/// [`Backend::remove_stale_temporaries`] removes.
fn write_durable(path: &Path, data: &[u8], mode: u32, create_only: bool) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 6];
    crate::format::crypto::random_bytes(&mut suffix)?;
    let tmp = dir.join(format!(".tmp-{file_name}-{}", hex::encode(suffix)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        if mode & 0o077 != 0 {
            // The umask may have taken group bits away.
            f.set_permissions(fs::Permissions::from_mode(mode))
                .ctx(|| format!("setting the mode of {}", tmp.display()))?;
        }
        f.write_all(data)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
        drop(f);
        if create_only {
            match fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::AlreadyExists {
                        object: path.display().to_string(),
                    });
                }
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("linking {} to {}", tmp.display(), path.display()));
                }
            }
            fs::remove_file(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
        } else {
            fs::rename(&tmp, path)
                .ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        }
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    /// Two: one request writes while the next pack is sealed; more only compete for the disk.
    fn connections(&self) -> usize {
        2
    }

    fn create(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::RepoExists(self.location()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
                }
                make_dir(&self.root, dir_mode(self.group))?;
            }
            Err(e) => return Err(Error::io(format!("reading {}", self.root.display()), e)),
        }
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.root, fs::Permissions::from_mode(dir_mode(self.group)))
                .ctx(|| format!("setting the mode of {}", self.root.display()))?;
        }
        for kind in ObjectKind::DIRS {
            make_dir(&self.root.join(kind.dir()), dir_mode(self.group))?;
        }
        for i in 0..=255u8 {
            let d = self
                .root
                .join(ObjectKind::Pack.dir())
                .join(hex::encode([i]));
            make_dir(&d, dir_mode(self.group))?;
        }
        fsync_dir(&self.root.join(ObjectKind::Pack.dir()))?;
        fsync_dir(&self.root)?;
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
        Ok(())
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        match fs::symlink_metadata(self.path_of(kind, name)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(
                format!("checking {}", self.path_of(kind, name).display()),
                e,
            )),
        }
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.store(kind, name, data, false)
    }

    fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.store(kind, name, data, true)
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        fs::read(self.path_of(kind, name)).map_err(|e| self.missing_or(kind, name, "reading", e))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = File::open(self.path_of(kind, name))
            .map_err(|e| self.missing_or(kind, name, "opening", e))?;
        let past_end = || {
            Error::corrupt(
                format!("{kind:?} {name}"),
                format!("truncated: a read of {len} bytes at offset {offset} runs past its end"),
            )
        };
        // Judged against the size first, so that a range past the end never allocates its
        // length, and an empty one past the end fails like any other.
        let size = f
            .metadata()
            .map_err(|e| self.missing_or(kind, name, "reading", e))?
            .len();
        let len_in_memory = offset
            .checked_add(len)
            .filter(|end| *end <= size)
            .and_then(|_| usize::try_from(len).ok())
            .ok_or_else(past_end)?;
        let mut buf = vec![0u8; len_in_memory];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            // Truncated meanwhile.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(past_end()),
            Err(e) => Err(self.missing_or(kind, name, "reading", e)),
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        if kind == ObjectKind::Config {
            let path = self.path_of(kind, layout::CONFIG);
            return match fs::metadata(&path) {
                Ok(md) if md.is_file() => Ok(vec![(layout::CONFIG.to_string(), md.len())]),
                Ok(_) => Ok(Vec::new()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Error::io(format!("stat {}", path.display()), e)),
            };
        }
        let base = self.root.join(kind.dir());
        if kind == ObjectKind::Forgotten && !base.exists() {
            return Ok(Vec::new());
        }
        let mut dirs = vec![base.clone()];
        if kind == ObjectKind::Pack {
            dirs = Vec::new();
            let rd = fs::read_dir(&base).ctx(|| format!("listing {}", base.display()))?;
            for e in rd {
                let e = e.ctx(|| format!("listing {}", base.display()))?;
                if e.file_type()
                    .ctx(|| format!("listing {}", base.display()))?
                    .is_dir()
                {
                    dirs.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        for d in dirs {
            let rd = fs::read_dir(&d).ctx(|| format!("listing {}", d.display()))?;
            for e in rd {
                let e = e.ctx(|| format!("listing {}", d.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let md = e
                    .metadata()
                    .ctx(|| format!("stat {}", e.path().display()))?;
                if md.is_file() {
                    out.push((name, md.len()));
                }
            }
        }
        Ok(out)
    }

    fn remove_stale_temporaries(&self, min_age: std::time::Duration) -> Result<Vec<(String, u64)>> {
        let mut dirs = vec![self.root.clone()];
        for kind in ObjectKind::DIRS {
            dirs.push(self.root.join(kind.dir()));
        }
        if let Ok(rd) = fs::read_dir(self.root.join(ObjectKind::Pack.dir())) {
            dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for d in dirs {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                    continue;
                }
                let Ok(md) = e.metadata() else { continue };
                let age = md
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if !md.is_file() || age < min_age {
                    continue;
                }
                match fs::remove_file(e.path()) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => {
                        return Err(Error::io(format!("removing {}", e.path().display()), err));
                    }
                }
                let rel = e
                    .path()
                    .strip_prefix(&self.root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| e.path().display().to_string());
                out.push((rel, md.len()));
            }
        }
        Ok(out)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        match fs::remove_file(self.path_of(kind, name)) {
            Ok(()) => fsync_dir(&self.dir_of(kind, name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("deleting {}", self.path_of(kind, name).display()),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_whatever_the_umask_unless_the_group_is_given_access() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let t = tempfile::tempdir().unwrap();
        // A permissive umask must not widen anything.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0));
        let b = LocalBackend::new(t.path().join("repo"));
        b.create().unwrap();
        b.put(ObjectKind::Key, "k1", b"key").unwrap();
        b.put(ObjectKind::Pack, "ab12", b"pack").unwrap();
        b.put(ObjectKind::Forgotten, "f1", b"record").unwrap();
        assert_eq!(mode(&t.path().join("repo")), 0o700);
        assert_eq!(mode(&t.path().join("repo/keys")), 0o700);
        assert_eq!(mode(&t.path().join("repo/data/ab")), 0o700);
        assert_eq!(mode(&t.path().join("repo/keys/k1")), 0o600);
        assert_eq!(mode(&t.path().join("repo/data/ab/ab12")), 0o600);
        assert_eq!(mode(&t.path().join("repo/forgotten/f1")), 0o600);
        // A directory made by a plain mkdir (0755) stays private: no group bits leak in.
        fs::create_dir(t.path().join("mkdir")).unwrap();
        fs::set_permissions(t.path().join("mkdir"), fs::Permissions::from_mode(0o755)).unwrap();
        let m = LocalBackend::new(t.path().join("mkdir"));
        m.create().unwrap();
        m.put(ObjectKind::Key, "k1", b"key").unwrap();
        assert_eq!(mode(&t.path().join("mkdir")), 0o700);
        assert_eq!(mode(&t.path().join("mkdir/keys/k1")), 0o600);
        // Group-readable on request; a backend opened later follows the top directory.
        let g = LocalBackend::new(t.path().join("shared")).group_readable();
        g.create().unwrap();
        let g = LocalBackend::new(t.path().join("shared"));
        g.put(ObjectKind::Index, "i1", b"index").unwrap();
        assert_eq!(mode(&t.path().join("shared")), 0o750);
        assert_eq!(mode(&t.path().join("shared/index")), 0o750);
        assert_eq!(mode(&t.path().join("shared/index/i1")), 0o640);
        rustix::process::umask(old);
    }

    #[test]
    fn stale_temporaries_are_removed_by_age() {
        let t = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(t.path().join("repo"));
        b.create().unwrap();
        let old = t.path().join("repo/data/ab/.tmp-ab12-000000");
        fs::write(&old, vec![0u8; 1000]).unwrap();
        let past = filetime::FileTime::from_unix_time(chrono::Utc::now().timestamp() - 3600, 0);
        filetime::set_file_mtime(&old, past).unwrap();
        let fresh = t.path().join("repo/index/.tmp-cd34-111111");
        fs::write(&fresh, b"in flight").unwrap();
        let removed = b
            .remove_stale_temporaries(std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            removed,
            vec![("data/ab/.tmp-ab12-000000".to_string(), 1000)]
        );
        assert!(!old.exists() && fresh.exists());
    }

    #[test]
    fn temp_files_are_not_listed() {
        let t = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(t.path().join("repo"));
        b.create().unwrap();
        fs::write(t.path().join("repo/snapshots/.tmp-abc-123"), b"partial").unwrap();
        assert!(b.list(ObjectKind::Snapshot).unwrap().is_empty());
    }
}
