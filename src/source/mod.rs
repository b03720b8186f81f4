//! Sources: what a backup reads, turned into one ordered stream of [`Item`]s.
//!
//! Paths are walked depth-first in name-byte order (symlinks are stored, never followed),
//! by directory descriptor: every entry is reached with `*at` calls relative to its open
//! directory, so absolute paths longer than PATH_MAX are backed up too (one descriptor is open
//! per directory level). Files are opened with `O_NOFOLLOW` and, where the kernel permits,
//! `O_NOATIME`, so reading them does not touch their access time. Regular files the parent
//! snapshot holds unchanged are not opened ([`crate::source::parent`]); excluded entries are not
//! visited ([`crate::source::exclude`]);
//! standard input and `--command` output become single files at the snapshot root. File
//! content arrives already chunked. A command's exit status is checked when its output ends:
//! a non-zero exit or death by a signal yields [`Item::Fatal`], and the archiver then writes no
//! snapshot. Unreadable entries yield [`Item::Warning`] and the walk goes on.
//!
//! Stored paths: an absolute source `/var/www` is stored as `var/www`; its parent directories are
//! stored with their own metadata, so several sources share one root.

pub mod exclude;
pub mod parent;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat, openat, readlinkat, statat};

use crate::error::{Error, Result};
use crate::format::chunker::ChunkerSpec;
use crate::format::tree::{ContentRef, NodeKind, Xattr};
use crate::source::exclude::{CACHE_TAG_NAME, CACHE_TAG_SIGNATURE, Excludes};
use crate::source::parent::{ParentCursor, Prior, Verdict};

/// A source as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A file or directory.
    Path(PathBuf),
    /// Standard input, stored as a file named `name`.
    Stdin {
        /// File name in the snapshot.
        name: String,
    },
    /// A command run with `sh -c`; its standard output is stored as a file named `name`.
    Command {
        /// File name in the snapshot.
        name: String,
        /// The command line.
        command: String,
    },
}

/// Metadata recorded for every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time in ns since the epoch.
    pub mtime_ns: i64,
    /// Size (files).
    pub size: u64,
    /// Status change time in ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Device of the file system.
    pub device: u64,
    /// Hard link count (regular files; 0 otherwise).
    pub links: u64,
    /// Device number (device nodes; 0 otherwise).
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl Meta {
    /// The metadata `lstat` gives (no extended attributes).
    pub fn of(md: &fs::Metadata) -> Meta {
        let ft = md.file_type();
        Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            size: md.len(),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            inode: md.ino(),
            device: md.dev(),
            links: if ft.is_file() { md.nlink() } else { 0 },
            rdev: if ft.is_char_device() || ft.is_block_device() {
                md.rdev()
            } else {
                0
            },
            xattrs: Vec::new(),
        }
    }

    /// Whether a file's content may have changed between two `stat`s of it.
    pub fn content_changed(&self, later: &Meta) -> bool {
        self.size != later.size
            || self.mtime_ns != later.mtime_ns
            || self.ctime_ns != later.ctime_ns
    }

    /// Metadata for a stream (stdin or a command): owned by this process, mode 0600, now.
    fn stream() -> Meta {
        let (uid, gid) = fs::metadata("/proc/self")
            .map(|m| (m.uid(), m.gid()))
            .unwrap_or((0, 0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Meta {
            mode: 0o600,
            uid,
            gid,
            mtime_ns: now,
            ..Meta::default()
        }
    }
}

/// One step of the source stream.
#[derive(Debug)]
pub enum Item {
    /// A directory begins; its entries follow until the matching `DirEnd`.
    DirStart { name: OsString, meta: Meta },
    /// The current directory ends.
    DirEnd,
    /// A regular file (or stream) begins; its chunks follow, then `FileEnd`. `known`: the
    /// parent snapshot has a file at this path (the file changed); `prior`: that version, when
    /// it can serve as delta bases.
    FileStart {
        name: OsString,
        meta: Meta,
        path: String,
        known: bool,
        prior: Option<Prior>,
    },
    /// A regular file the parent snapshot holds unchanged: its chunk list and anchors, not
    /// read again.
    Unchanged {
        name: OsString,
        meta: Meta,
        content: Vec<ContentRef>,
        anchors: Vec<u64>,
    },
    /// A chunk of the current file.
    Chunk(Vec<u8>),
    /// The current file ends; with an error it must be dropped from the snapshot.
    FileEnd { error: Option<String> },
    /// A symbolic link.
    Symlink {
        name: OsString,
        meta: Meta,
        target: OsString,
    },
    /// A fifo, device node or socket.
    Special {
        name: OsString,
        meta: Meta,
        kind: NodeKind,
    },
    /// Something was skipped; `incomplete` marks the snapshot incomplete.
    Warning { message: String, incomplete: bool },
    /// A command finished successfully.
    CommandOk { status: i32 },
    /// The backup must not be committed.
    Fatal(Error),
}

/// Where items go; `false` means the consumer is gone and the producer must stop.
pub type Sink<'a> = dyn FnMut(Item) -> bool + 'a;

#[derive(Default)]
struct PlanDir {
    real: Option<PathBuf>,
    /// Set for a directory that only exists to hold deeper sources.
    meta_from: Option<PathBuf>,
    children: BTreeMap<Vec<u8>, PlanDir>,
    stream: Option<SourceSpec>,
}

/// Normalizes a source path to an absolute path without `.` or `..` (no symlinks resolved).
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::BadSource {
        path: p.into(),
        reason: e.to_string(),
    })?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Checks sources and builds the plan: refuses missing paths and clashing names.
fn plan(sources: &[SourceSpec]) -> Result<PlanDir> {
    let mut root = PlanDir::default();
    for s in sources {
        match s {
            SourceSpec::Path(p) => {
                let abs = absolute(p)?;
                fs::symlink_metadata(&abs).map_err(|e| Error::BadSource {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
                let comps: Vec<&OsStr> = abs
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n),
                        _ => None,
                    })
                    .collect();
                if comps.is_empty() {
                    return Err(Error::BadSource {
                        path: p.clone(),
                        reason: "backing up / itself is not supported yet; name its directories"
                            .into(),
                    });
                }
                let mut node = &mut root;
                let mut sofar = PathBuf::from("/");
                for (i, c) in comps.iter().enumerate() {
                    sofar.push(c);
                    if node.real.is_some() {
                        break; // an ancestor is already a source and covers this path
                    }
                    let child = node.children.entry(c.as_bytes().to_vec()).or_default();
                    if child.stream.is_some() {
                        return Err(Error::InvalidArgument(format!(
                            "{} clashes with a stream name",
                            abs.display()
                        )));
                    }
                    if i + 1 == comps.len() {
                        child.real = Some(sofar.clone());
                        child.children.clear();
                    } else {
                        child.meta_from = Some(sofar.clone());
                    }
                    node = child;
                }
            }
            SourceSpec::Stdin { name } | SourceSpec::Command { name, .. } => {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(Error::InvalidArgument(format!(
                        "{name:?} is not a valid file name for a stream"
                    )));
                }
                if root.children.contains_key(name.as_bytes()) {
                    return Err(Error::InvalidArgument(format!(
                        "two sources would both be stored as {name:?}"
                    )));
                }
                root.children.insert(
                    name.as_bytes().to_vec(),
                    PlanDir {
                        stream: Some(s.clone()),
                        ..Default::default()
                    },
                );
            }
        }
    }
    Ok(root)
}

/// Validates sources without reading them (used before any work starts).
pub fn check(sources: &[SourceSpec]) -> Result<()> {
    plan(sources).map(|_| ())
}

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

/// Produces the item stream for `sources` into `sink`, ending at the root's contents.
pub fn produce(sources: &[SourceSpec], w: &mut Walker<'_>, sink: &mut Sink<'_>) {
    match plan(sources) {
        Ok(root) => {
            for (name, child) in root.children {
                if !emit_plan(OsStr::from_bytes(&name), child, w, sink) {
                    return;
                }
            }
        }
        Err(e) => {
            sink(Item::Fatal(e));
        }
    }
}

fn emit_plan(name: &OsStr, node: PlanDir, w: &mut Walker<'_>, sink: &mut Sink<'_>) -> bool {
    if let Some(stream) = node.stream {
        let (known, prior) = w.parent.stream(name);
        return emit_stream(name, &stream, w.chunker, &w.commands, known, prior, sink);
    }
    if let Some(real) = node.real {
        return walk_source(&real, name, w, sink);
    }
    let meta = match node.meta_from.as_deref().map(fs::metadata) {
        Some(Ok(md)) => Meta::of(&md),
        _ => Meta {
            mode: 0o755,
            ..Meta::default()
        },
    };
    if !sink(Item::DirStart {
        name: name.to_os_string(),
        meta,
    }) {
        return false;
    }
    if let Some(m) = w.parent.enter(name)
        && !warn_soft(sink, m)
    {
        return false;
    }
    for (n, child) in node.children {
        if !emit_plan(OsStr::from_bytes(&n), child, w, sink) {
            return false;
        }
    }
    w.parent.leave();
    sink(Item::DirEnd)
}

fn warn(sink: &mut Sink<'_>, path: &Path, what: &str, e: impl std::fmt::Display) -> bool {
    sink(Item::Warning {
        message: format!("{}: {what}: {e}", path.display()),
        incomplete: true,
    })
}

fn warn_soft(sink: &mut Sink<'_>, message: String) -> bool {
    sink(Item::Warning {
        message,
        incomplete: false,
    })
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

fn to_i64<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

fn to_u64<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(0)
}

impl Meta {
    /// The metadata a `stat` call gave (no extended attributes).
    pub fn of_stat(st: &Stat) -> Meta {
        let ft = FileType::from_raw_mode(st.st_mode);
        let special = matches!(ft, FileType::CharacterDevice | FileType::BlockDevice);
        Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime_ns: ns(to_i64(st.st_mtime), to_i64(st.st_mtime_nsec)),
            size: to_u64(st.st_size),
            ctime_ns: ns(to_i64(st.st_ctime), to_i64(st.st_ctime_nsec)),
            inode: to_u64(st.st_ino),
            device: to_u64(st.st_dev),
            links: if ft == FileType::RegularFile {
                to_u64(st.st_nlink)
            } else {
                0
            },
            rdev: if special { to_u64(st.st_rdev) } else { 0 },
            xattrs: Vec::new(),
        }
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

/// Backs up one source path: its directory is opened, then the walk goes on by descriptor.
fn walk_source(abs: &Path, name: &OsStr, w: &mut Walker<'_>, sink: &mut Sink<'_>) -> bool {
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
                Verdict::Unchanged(content, xattrs, anchors) => {
                    meta.xattrs = xattrs;
                    return sink(Item::Unchanged {
                        name: stored.to_os_string(),
                        meta,
                        content,
                        anchors,
                    });
                }
                Verdict::Changed(prior) => (true, prior),
                Verdict::New => (false, None),
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

/// Chunks a reader into the sink. `Ok(false)`: the sink is gone.
fn emit_chunks(
    reader: impl Read,
    chunker: &ChunkerSpec,
    sink: &mut Sink<'_>,
) -> std::io::Result<bool> {
    let mut c = chunker.chunker(reader);
    while let Some(chunk) = c.next_chunk()? {
        if !sink(Item::Chunk(chunk)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Describes how a child process ended.
pub fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended abnormally".into(),
    }
}

/// Standard input mapped into memory when it is a regular file (`tresor … < dump.sql`), from
/// its current offset to its end. Chunking the page cache in place spares the copy `read`
/// makes, which under a busy pipeline costs more CPU than cutting the chunks (see
/// docs/performance.md). `None` (read it instead) for pipes, terminals, empty files and any
/// failure. A file truncated while mapped would raise SIGBUS: [`guard_sigbus`] turns that into
/// a clear message and exit 1 before any snapshot is written.
#[allow(unsafe_code)]
fn map_stdin() -> Option<memmap2::Mmap> {
    use std::os::fd::AsRawFd;
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let st = rustix::fs::fstat(fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return None;
    }
    let pos = rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).ok()?;
    let len = usize::try_from((st.st_size as u64).checked_sub(pos)?).ok()?;
    if len == 0 {
        return None;
    }
    guard_sigbus();
    // SAFETY: the mapping is only read. Bytes changed under it by another process are read as
    // they are at that moment (like `read` would; each chunk is copied before it is hashed), and
    // a truncation faults into the SIGBUS guard, which ends the process without a snapshot.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(pos)
            .len(len)
            .map(stdin.as_raw_fd())
    }
    .ok()?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Some(map)
}

/// Mapped bytes already chunked are unmapped (not evicted) after this many, so a mapped input
/// adds at most this much to the resident set.
const RELEASE_BYTES: usize = 16 << 20;

/// Drops the page mappings of `len` bytes at `offset` of a mapped input that is done with. The
/// page cache keeps the data; nothing borrowed from that range is alive (chunks are copies).
#[allow(unsafe_code)]
fn release_mapped(map: &memmap2::Mmap, offset: usize, len: usize) {
    // SAFETY: MADV_DONTNEED on a shared, read-only file mapping only drops page-table entries;
    // a later access would fault the same bytes back in from the page cache.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
}

/// Installs (once) a SIGBUS handler that reports a mapped standard input that shrank while it
/// was read, and exits with status 1. Nothing is half-written by exiting there: packs and index
/// objects are written whole-or-not-at-all and the snapshot object comes last.
#[allow(unsafe_code)]
fn guard_sigbus() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn on_sigbus(_: libc::c_int) {
        const MSG: &[u8] = b"tresor: error: standard input shrank while it was being read \
(the file was truncated); no snapshot was written\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(1);
        }
    }
    ONCE.call_once(|| {
        // SAFETY: a plain handler that only calls async-signal-safe functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

/// The `--command` children of one backup that are running now, so that a backup that stops
/// early (a signal, an error elsewhere) ends them instead of leaving a dump running with nobody
/// reading it. Once [`RunningCommands::stop`] was called, a command started later is ended at
/// once.
#[derive(Default)]
pub struct RunningCommands {
    state: std::sync::Mutex<(bool, Vec<u32>)>,
}

impl RunningCommands {
    /// Records a started command (its process group is its pid); ends it at once if the
    /// backup already stopped.
    fn started(&self, pid: u32) {
        let stopped = match self.state.lock() {
            Ok(mut s) => {
                s.1.push(pid);
                s.0
            }
            Err(_) => false,
        };
        if stopped {
            terminate_group(pid);
        }
    }

    fn ended(&self, pid: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.1.retain(|p| *p != pid);
        }
    }

    /// Sends SIGTERM to the process group of every command still running, and to any started
    /// from now on.
    pub fn stop(&self) {
        let pids = match self.state.lock() {
            Ok(mut s) => {
                s.0 = true;
                s.1.clone()
            }
            Err(_) => Vec::new(),
        };
        for pid in pids {
            terminate_group(pid);
        }
    }
}

fn terminate_group(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::TERM);
    }
}

fn emit_stream(
    name: &OsStr,
    spec: &SourceSpec,
    chunker: &ChunkerSpec,
    commands: &RunningCommands,
    known: bool,
    prior: Option<Prior>,
    sink: &mut Sink<'_>,
) -> bool {
    let start = Item::FileStart {
        name: name.to_os_string(),
        meta: Meta::stream(),
        path: name.to_string_lossy().into_owned(),
        known,
        prior,
    };
    match spec {
        SourceSpec::Stdin { .. } => {
            if !sink(start) {
                return false;
            }
            if let Some(map) = map_stdin() {
                // Cut on two threads: in a delta backup the rest of the pipeline is cheap enough
                // that one thread cutting every byte would hold it back.
                let (mut consumed, mut released) = (0, 0);
                let release = |offset: usize, len: usize| release_mapped(&map, offset, len);
                let all = chunker.split_two_threads(&map, &release, &mut |c| {
                    consumed += c.len();
                    if !sink(Item::Chunk(c.to_vec())) {
                        return false;
                    }
                    if consumed - released >= RELEASE_BYTES {
                        release_mapped(&map, released, consumed - released);
                        released = consumed;
                    }
                    true
                });
                return all && sink(Item::FileEnd { error: None });
            }
            match emit_chunks(std::io::stdin().lock(), chunker, sink) {
                Ok(true) => sink(Item::FileEnd { error: None }),
                Ok(false) => false,
                Err(e) => sink(Item::Fatal(Error::io("reading standard input", e))),
            }
        }
        SourceSpec::Command { command, .. } => {
            // Its own process group: when the backup stops early, the whole pipeline the
            // command runs (`pg_dump | gzip`, a `sleep`) is ended with it.
            let child = Command::new("sh")
                .arg("-c")
                .arg(command)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .process_group(0)
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    return sink(Item::Fatal(Error::CommandFailed {
                        command: command.clone(),
                        status: format!("could not be started: {e}"),
                    }));
                }
            };
            commands.started(child.id());
            let Some(stdout) = child.stdout.take() else {
                let _ = child.kill();
                return sink(Item::Fatal(Error::CommandFailed {
                    command: command.clone(),
                    status: "has no output pipe".into(),
                }));
            };
            if !sink(start) {
                let _ = child.kill();
                let _ = child.wait();
                commands.ended(child.id());
                return false;
            }
            let read = emit_chunks(stdout, chunker, sink);
            if !matches!(read, Ok(true)) {
                let _ = child.kill();
            }
            let status = child.wait();
            commands.ended(child.id());
            match (read, status) {
                (Ok(false), _) => false,
                (Err(e), _) => sink(Item::Fatal(Error::CommandFailed {
                    command: command.clone(),
                    status: format!("output could not be read: {e}"),
                })),
                (Ok(true), Err(e)) => sink(Item::Fatal(Error::CommandFailed {
                    command: command.clone(),
                    status: format!("could not be waited for: {e}"),
                })),
                (Ok(true), Ok(st)) if st.success() => {
                    sink(Item::FileEnd { error: None }) && sink(Item::CommandOk { status: 0 })
                }
                (Ok(true), Ok(st)) => sink(Item::Fatal(Error::CommandFailed {
                    command: command.clone(),
                    status: describe_status(&st),
                })),
            }
        }
        SourceSpec::Path(_) => false,
    }
}
