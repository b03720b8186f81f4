//! A repository in a local directory.
//!
//! Layout: `config`, `keys/`, `index/`, `snapshots/`, `locks/`, and `data/XX/` where `XX` is the
//! first two hex digits of a pack's name (256 subdirectories keep directories small).
//!
//! Durability of `put`: write to `.tmp-…` in the target directory, fsync the file, rename it
//! over the final name, fsync the directory. A crash leaves at worst a `.tmp-` file, which
//! `list` never reports. Reads use positional I/O, so one open file serves concurrent readers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Backend, ObjectKind};
use crate::error::{Error, IoContext, Result};

/// A backend rooted at a directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend at `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    /// The directory holding objects of `kind` named `name`.
    fn dir_of(&self, kind: ObjectKind, name: &str) -> PathBuf {
        match kind {
            ObjectKind::Config => self.root.clone(),
            ObjectKind::Pack => self
                .root
                .join(kind.dir())
                .join(name.get(..2).unwrap_or("00")),
            _ => self.root.join(kind.dir()),
        }
    }

    /// Full path of an object.
    pub fn path_of(&self, kind: ObjectKind, name: &str) -> PathBuf {
        self.dir_of(kind, name).join(name)
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

/// Writes `data` to `path` crash-safely: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 6];
    crate::crypto::random_bytes(&mut suffix)?;
    let tmp = dir.join(format!(".tmp-{file_name}-{}", hex::encode(suffix)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, path)
            .ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
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

    fn create(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::RepoExists(self.location()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.root)
                    .ctx(|| format!("creating {}", self.root.display()))?;
            }
            Err(e) => return Err(Error::io(format!("reading {}", self.root.display()), e)),
        }
        for kind in ObjectKind::DIRS {
            let d = self.root.join(kind.dir());
            fs::create_dir(&d).ctx(|| format!("creating {}", d.display()))?;
        }
        for i in 0..=255u8 {
            let d = self
                .root
                .join(ObjectKind::Pack.dir())
                .join(hex::encode([i]));
            fs::create_dir(&d).ctx(|| format!("creating {}", d.display()))?;
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
        let dir = self.dir_of(kind, name);
        if kind == ObjectKind::Pack && !dir.exists() {
            fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        write_atomic(&dir.join(name), data)
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        fs::read(self.path_of(kind, name)).map_err(|e| self.missing_or(kind, name, "reading", e))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = File::open(self.path_of(kind, name))
            .map_err(|e| self.missing_or(kind, name, "opening", e))?;
        let mut buf = vec![0u8; len as usize];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::corrupt(
                format!("{kind:?} {name}"),
                format!("truncated: a read of {len} bytes at offset {offset} runs past its end"),
            )),
            Err(e) => Err(self.missing_or(kind, name, "reading", e)),
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        let base = self.root.join(kind.dir());
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
                if name.starts_with('.') || kind == ObjectKind::Config {
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
    fn conforms() {
        let t = tempfile::tempdir().unwrap();
        super::super::conformance::run(&LocalBackend::new(t.path().join("repo")));
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
