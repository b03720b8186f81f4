//! Paths in the target: paths longer than PATH_MAX through directory anchors ([`DirAnchors`]),
//! entries in the way, creating and opening files without following symlinks, and the stored
//! parents of a `--path`.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Overwrite;
use crate::error::{Error, IoContext, Result};

pub(super) fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Removes a non-directory entry in the way (a symlink itself, never its target).
pub(super) fn remove_in_the_way(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Err(Error::InvalidArgument(format!(
            "{} exists and is a directory",
            path.display()
        ))),
        Ok(_) => fs::remove_file(path).ctx(|| format!("replacing {}", path.display())),
        Err(_) => Ok(()),
    }
}

pub(super) fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))
}

/// Joined system-call paths stay at most this long; below, paths continue from an anchor.
const SHORT_PATH: usize = 3072;
/// Directory anchors open at most in one restore or verify.
const MAX_ANCHORS: usize = 512;

/// Paths longer than PATH_MAX (4096 bytes): when joining a name to a directory's path would
/// exceed [`SHORT_PATH`], the directory is opened (`O_PATH`, not following symlinks) and its
/// entries are reached as `/proc/self/fd/N/name`, which every path-based call accepts. Anchors
/// stay open until the restore ends (hard links and directory metadata come last), at most
/// [`MAX_ANCHORS`] of them; beyond that an entry fails with a message saying so.
#[derive(Default)]
pub(super) struct DirAnchors {
    fds: Vec<std::os::fd::OwnedFd>,
}

impl DirAnchors {
    /// The system-call path of `name` in the directory reached by `dir`.
    pub(super) fn child(
        &mut self,
        dir: &Path,
        anchor: &mut Option<PathBuf>,
        name: &OsStr,
    ) -> Result<PathBuf> {
        use std::os::fd::AsRawFd;
        let joined = dir.join(name);
        if joined.as_os_str().len() <= SHORT_PATH {
            return Ok(joined);
        }
        if let Some(a) = anchor {
            return Ok(a.join(name));
        }
        if self.fds.len() >= MAX_ANCHORS {
            return Err(Error::InvalidArgument(format!(
                "{}: more than {MAX_ANCHORS} directories deeper than {SHORT_PATH} bytes; not restored",
                joined.display()
            )));
        }
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
            .ctx(|| format!("opening {}", dir.display()))?;
        let fd = std::os::fd::OwnedFd::from(f);
        let a = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        self.fds.push(fd);
        let p = a.join(name);
        *anchor = Some(a);
        Ok(p)
    }
}

/// Creates `target/a/b/…` for the stored parents of a `--path`, replacing a non-directory in
/// the way (a symlink is never followed; with `never` it is an error instead).
pub(super) fn plain_parents(
    target: &Path,
    parts: &[&str],
    overwrite: Overwrite,
) -> Result<PathBuf> {
    let mut p = target.to_path_buf();
    for part in parts {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) if overwrite == Overwrite::Never => {
                return Err(Error::InvalidArgument(format!(
                    "{} exists and is not a directory; --overwrite never leaves it, so nothing \
                     can be restored under it",
                    p.display()
                )));
            }
            Ok(_) => remove_in_the_way(&p)?,
            Err(_) => {}
        }
        fs::create_dir(&p).ctx(|| format!("creating {}", p.display()))?;
    }
    Ok(p)
}
