//! The walk of one source path: depth-first in name-byte order, by directory descriptor
//! (`*at` calls relative to each open directory, so paths longer than PATH_MAX work), applying
//! the exclude rules and the parent's change detection, reading each entry's metadata and
//! extended attributes and chunking the content of regular files that changed.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, openat, readlinkat, statat};

use crate::format::chunker::ChunkerSpec;
use crate::format::tree::{NodeKind, Xattr};
use crate::source::command::RunningCommands;
use crate::source::exclude::{CACHE_TAG_NAME, CACHE_TAG_SIGNATURE, Excludes};
use crate::source::meta::{Meta, to_u64};
use crate::source::parent::{FileChange, ParentCursor};
use crate::source::{Item, Sink, emit_chunks, warn, warn_soft};

/// What the walk consults besides the file system: the chunker, the parent snapshot's trees
/// (change detection, see [`crate::source::parent`]) and the exclude rules.
pub struct Walker<'a> {
    /// Splits file content.
    pub chunker: &'a ChunkerSpec,
    /// The parent's directories along the walk.
    pub parent: ParentCursor,
    /// What to leave out.
    pub excludes: &'a Excludes,
    /// The `--command` children running now (shared with whoever may have to stop them).
    pub commands: std::sync::Arc<RunningCommands>,
}

/// Backs up one source path: its directory is opened, then the walk goes on by descriptor.
pub(super) fn walk_source(
    abs: &Path,
    name: &OsStr,
    w: &mut Walker<'_>,
    sink: &mut Sink<'_>,
) -> bool {
    if w.excludes.matches(abs, name) {
        return true; // an excluded source path stores nothing
    }
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let Some(last) = abs.file_name() else {
        return warn(sink, abs, "cannot back up", "no file name");
    };
    let dir = match openat(
        CWD,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => return warn(sink, parent, "cannot open directory", e),
    };
    let root_dev = match statat(&dir, last, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => to_u64(st.st_dev),
        Err(e) => return warn(sink, abs, "cannot stat", e),
    };
    entry(dir.as_fd(), abs, last, name, root_dev, w, sink)
}

/// Backs up entry `name` of the directory open as `dir` (absolute path `abs`), stored as
/// `stored`.
fn entry(
    dir: BorrowedFd<'_>,
    abs: &Path,
    name: &OsStr,
    stored: &OsStr,
    root_dev: u64,
    w: &mut Walker<'_>,
    sink: &mut Sink<'_>,
) -> bool {
    let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => s,
        Err(e) => return warn(sink, abs, "cannot stat", e),
    };
    let ft = FileType::from_raw_mode(st.st_mode);
    let mut meta = Meta::of_stat(&st);
    // An unchanged regular file takes its xattrs from the parent (below); others are read.
    if ft != FileType::RegularFile {
        match read_xattrs(&reachable(dir, abs, name), abs, sink) {
            Some(x) => meta.xattrs = x,
            None => return false,
        }
    }
    match ft {
        FileType::Directory => {
            let other_fs = w.excludes.one_file_system && meta.device != root_dev;
            let (fd, mut names) = if other_fs {
                (None, Vec::new()) // a mount point: stored, not descended into
            } else {
                let fd = match open_dir_at(dir, name) {
                    Ok(fd) => fd,
                    Err(e) => return warn(sink, abs, "cannot open directory", e),
                };
                match list_dir(fd.as_fd()) {
                    Ok(n) => (Some(fd), n),
                    Err(e) => return warn(sink, abs, "cannot list directory", e),
                }
            };
            if w.excludes
                .if_present
                .iter()
                .any(|p| names.iter().any(|n| n.as_bytes() == p.as_slice()))
            {
                return true;
            }
            if w.excludes.caches
                && names.iter().any(|n| n == CACHE_TAG_NAME)
                && fd.as_ref().is_some_and(|fd| is_cache_dir(fd.as_fd()))
            {
                names = vec![OsString::from(CACHE_TAG_NAME)];
            }
            if !sink(Item::DirStart {
                name: stored.to_os_string(),
                meta,
            }) {
                return false;
            }
            if let Some(m) = w.parent.enter(stored)
                && !warn_soft(sink, m)
            {
                return false;
            }
            if let Some(fd) = &fd {
                for n in names {
                    let child = abs.join(&n);
                    if w.excludes.matches(&child, &n) {
                        continue;
                    }
                    if !entry(fd.as_fd(), &child, &n, &n, root_dev, w, sink) {
                        return false;
                    }
                }
            }
            w.parent.leave();
            sink(Item::DirEnd)
        }
        FileType::RegularFile => {
            let (known, prior) = match w.parent.file(stored, &meta) {
                FileChange::Unchanged(content, xattrs, anchors) => {
                    meta.xattrs = xattrs;
                    return sink(Item::Unchanged {
                        name: stored.to_os_string(),
                        meta,
                        content,
                        anchors,
                    });
                }
                FileChange::Changed(prior) => (true, prior),
                FileChange::New => (false, None),
            };
            match read_xattrs(&reachable(dir, abs, name), abs, sink) {
                Some(x) => meta.xattrs = x,
                None => return false,
            }
            let file = match open_file_at(dir, name) {
                Ok(f) => f,
                Err(e) => return warn(sink, abs, "cannot open", e),
            };
            let before = meta.clone();
            if !sink(Item::FileStart {
                name: stored.to_os_string(),
                meta,
                path: abs.display().to_string(),
                known,
                prior,
            }) {
                return false;
            }
            match emit_chunks(&file, w.chunker, sink) {
                Ok(true) => {
                    // Compare the open file's status after reading with the one before: a file
                    // written to meanwhile may be stored torn, so say so (the snapshot holds what
                    // was read; the next backup reads it again because its times differ).
                    let changed = match file.metadata() {
                        Ok(after) => before.content_changed(&Meta::of(&after)),
                        Err(_) => false,
                    };
                    sink(Item::FileEnd { error: None })
                        && (!changed
                            || sink(Item::Warning {
                                message: format!(
                                    "{}: changed while it was being read; the snapshot holds the bytes as read",
                                    abs.display()
                                ),
                                incomplete: false,
                            }))
                }
                Ok(false) => false,
                Err(e) => sink(Item::FileEnd {
                    error: Some(format!("{}: read error: {e}", abs.display())),
                }),
            }
        }
        FileType::Symlink => match readlinkat(dir, name, Vec::new()) {
            Ok(t) => sink(Item::Symlink {
                name: stored.to_os_string(),
                meta,
                target: OsString::from_vec(t.into_bytes()),
            }),
            Err(e) => warn(sink, abs, "cannot read link", e),
        },
        other => {
            let kind = match other {
                FileType::Fifo => NodeKind::Fifo,
                FileType::CharacterDevice => NodeKind::Chardev,
                FileType::BlockDevice => NodeKind::Blockdev,
                FileType::Socket => NodeKind::Socket,
                _ => {
                    return sink(Item::Warning {
                        message: format!("{}: skipped: unknown file type", abs.display()),
                        incomplete: false,
                    });
                }
            };
            sink(Item::Special {
                name: stored.to_os_string(),
                meta,
                kind,
            })
        }
    }
}

/// Reads the extended attributes of `path` (never following a symlink), sorted by name.
/// `shown` names the entry in warnings. A file system without xattr support yields none;
/// names that are not UTF-8 are skipped with a warning, as are attributes that cannot be read.
pub fn read_xattrs(path: &Path, shown: &Path, sink: &mut Sink<'_>) -> Option<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Some(Vec::new()),
        Err(e) => {
            return warn(sink, shown, "cannot list extended attributes", e).then(Vec::new);
        }
    };
    let mut out = Vec::new();
    for n in names {
        let Some(name) = n.to_str() else {
            if !warn(
                sink,
                shown,
                "extended attribute name is not UTF-8, skipped",
                n.to_string_lossy(),
            ) {
                return None;
            }
            continue;
        };
        match xattr::get(path, &n) {
            Ok(Some(v)) => out.push(Xattr {
                name: name.to_string(),
                value: hex::encode(v),
            }),
            Ok(None) => {} // removed meanwhile
            Err(e) => {
                if !warn(
                    sink,
                    shown,
                    &format!("cannot read extended attribute {name}"),
                    e,
                ) {
                    return None;
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(out)
}

/// Longest absolute path handed to path-based calls; deeper entries are reached through
/// their directory's descriptor.
const SHORT_PATH: usize = 4000;

/// A path naming entry `name` of the directory open as `dir`, usable by path-based calls
/// (xattrs) however deep the entry is: its absolute path when short, else through
/// `/proc/self/fd`.
fn reachable(dir: BorrowedFd<'_>, abs: &Path, name: &OsStr) -> PathBuf {
    if abs.as_os_str().len() < SHORT_PATH {
        abs.to_path_buf()
    } else {
        Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
    }
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a regular file for reading without following a symlink and, where permitted,
/// without updating its access time (`O_NOATIME` needs ownership or CAP_FOWNER).
fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(e) if e == rustix::io::Errno::PERM => openat(dir, name, flags, Mode::empty())?,
        r => r?,
    };
    Ok(File::from(fd))
}

/// Whether directory `dir` holds a valid cache directory tag.
fn is_cache_dir(dir: BorrowedFd<'_>) -> bool {
    let Ok(mut f) = open_file_at(dir, OsStr::new(CACHE_TAG_NAME)) else {
        return false;
    };
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return false;
    }
    let mut head = vec![0u8; CACHE_TAG_SIGNATURE.len()];
    f.read_exact(&mut head).is_ok() && head == CACHE_TAG_SIGNATURE
}

/// Reads a directory's entry names (without `.` and `..`), sorted by bytes.
fn list_dir(dir: BorrowedFd<'_>) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}
