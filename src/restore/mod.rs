//! `snapshot restore`: snapshot → trees → chunks → files, or one file → a writer.
//!
//! File content is read in batches of chunks: the catalog locates each chunk, rayon fetches and
//! decodes a batch on both cores (authenticate, bounded inflate, id check), and a writer thread
//! writes the previous batch meanwhile. A chunk that fails to decode stops the restore with an
//! error naming the blob and its pack: never silently wrong bytes.
//!
//! A directory restore walks the trees on one thread (the catalog is not `Sync`), creating
//! directories as it goes and collecting small files into groups (at most [`GROUP_FILES`] files
//! or [`GROUP_BYTES`] bytes); each group is located on the walking thread and then checked,
//! decoded and written in parallel. A big file uses the batched pipeline above. All-zero 4 KiB
//! blocks become holes. Files that already exist are kept or rewritten per [`Overwrite`].
//! Symlinks in the target are never followed: an entry in the way is removed and recreated,
//! files are created with `O_EXCL | O_NOFOLLOW`. Hard links are linked to the first node of
//! their group this run restored, after all file content; then directory metadata, deepest
//! first, so writing files does not disturb restored mtimes. Problems that leave an entry
//! restored but imperfect (an xattr refused, a device node without root, a socket) are
//! warnings; an entry that could not be restored at all is a failure and the walk goes on;
//! damage in the repository or a full disk stops the restore.

pub mod selection;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::format::crypto::MasterKey;
use crate::format::id::BlobId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentRef, Node, NodeKind, Tree};
use crate::repo::catalog::BlobLocation;
use crate::repo::walk::{self, Resolved, Step, TreeVisitor, resolve, split_path};
use crate::repo::{BlobReader, Repo};
use crate::restore::selection::Selection;

/// Plaintext bytes decoded per batch.
const BATCH_BYTES: u64 = 32 << 20;

/// Files written in parallel per group, at most.
pub const GROUP_FILES: usize = 256;
/// Content bytes per group of small files, at most (a file over [`BATCH_BYTES`] goes alone).
pub const GROUP_BYTES: u64 = 64 << 20;
/// Runs of zero bytes aligned to this block size become holes.
const HOLE_BLOCK: u64 = 4096;

/// What to do with a file that already exists in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// The result equals the snapshot; an existing file of the right size whose content hashes
    /// to the node's chunk ids is kept (only its metadata is applied), others are rewritten.
    #[default]
    Always,
    /// Keep (and apply metadata to) an existing file whose size and mtime match; no reading.
    IfChanged,
    /// Leave every existing entry untouched.
    Never,
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// `--include` globs (see [`crate::restore::selection`]).
    pub include: Vec<String>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// Existing files.
    pub overwrite: Overwrite,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreSummary {
    /// Files whose content was written.
    pub files: u64,
    /// Content bytes written (holes included).
    pub bytes: u64,
    /// Existing files kept as they were (content identical, unchanged, or `never`).
    pub files_skipped: u64,
    /// Content bytes of the kept files.
    pub bytes_skipped: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links made (or found already in place) to a file restored in this run.
    pub hardlinks: u64,
    /// Fifos, device nodes and sockets created.
    pub specials: u64,
    /// Entries restored imperfectly or skipped on purpose, one line each.
    pub warnings: Vec<String>,
    /// Entries that could not be restored at all, one line each.
    pub failures: Vec<String>,
}

/// What `verify_restore` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Regular files compared.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files that differ.
    pub mismatches: Vec<Mismatch>,
}

/// One restored file that differs from the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// The file in the target (shown lossily in JSON when not UTF-8).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// How it differs.
    pub reason: String,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// Writes a file's content to `out`, decoding on both cores while the previous batch is written.
pub fn write_content<W: Write + Send>(
    repo: &Repo,
    content: &[ContentRef],
    out: &mut W,
) -> Result<u64> {
    let reader = repo.reader();
    let total: u64 = content.iter().map(|c| c.1 as u64).sum();
    if total <= BATCH_BYTES {
        // Small files (the common case in trees): one parallel batch, no writer thread.
        let located: Vec<_> = content
            .iter()
            .map(|c| repo.locate(&c.0).map(|l| (c.0, l)))
            .collect::<Result<_>>()?;
        let chunks: Vec<Vec<u8>> = located
            .par_iter()
            .map(|(id, loc)| reader.read(id, loc))
            .collect::<Result<_>>()?;
        for c in &chunks {
            out.write_all(c)
                .map_err(|e| Error::io("writing restored data", e))?;
        }
        out.flush()
            .map_err(|e| Error::io("writing restored data", e))?;
        return Ok(total);
    }
    std::thread::scope(|s| -> Result<u64> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Vec<u8>>>(1);
        let writer = s.spawn(move || -> std::io::Result<u64> {
            let mut n = 0u64;
            for batch in rx {
                for chunk in batch {
                    out.write_all(&chunk)?;
                    n += chunk.len() as u64;
                }
            }
            out.flush()?;
            Ok(n)
        });
        let mut produced: Result<()> = Ok(());
        let mut i = 0;
        while i < content.len() {
            if let Err(e) = crate::interrupt::check() {
                produced = Err(e);
                break;
            }
            let mut j = i;
            let mut bytes = 0u64;
            while j < content.len() && (j == i || bytes + content[j].1 as u64 <= BATCH_BYTES) {
                bytes += content[j].1 as u64;
                j += 1;
            }
            let located: Result<Vec<_>> = content[i..j]
                .iter()
                .map(|c| repo.locate(&c.0).map(|l| (c.0, l)))
                .collect();
            let decoded: Result<Vec<Vec<u8>>> =
                located.and_then(|l| l.par_iter().map(|(id, loc)| reader.read(id, loc)).collect());
            match decoded {
                Ok(batch) => {
                    if tx.send(batch).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    produced = Err(e);
                    break;
                }
            }
            i = j;
        }
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| Error::InvalidArgument("the writer thread panicked".into()))?;
        produced?;
        written.map_err(|e| Error::io("writing restored data", e))
    })
}

/// The one file of a snapshot that holds exactly one (descending through directories that hold
/// only one entry, as a backup of one file path stores it under its parent directories).
fn only_file(repo: &Repo, mut tree: Tree) -> Result<Node> {
    loop {
        let mut nodes = tree.nodes.into_iter();
        match (nodes.next(), nodes.next()) {
            (Some(n), None) if n.kind == NodeKind::File => return Ok(n),
            (Some(n), None) if n.kind == NodeKind::Dir => match n.subtree {
                Some(sub) => tree = repo.load_tree(&sub)?,
                None => return Err(Error::corrupt("tree", "directory without subtree")),
            },
            _ => {
                return Err(Error::InvalidArgument(
                    "--stdout without --path needs a snapshot that holds exactly one file; name it with --path".into(),
                ));
            }
        }
    }
}

/// Writes one file of a snapshot to `out`. Without a path, the snapshot must hold exactly one file.
pub fn restore_to_writer<W: Write + Send>(
    repo: &Repo,
    snap: &Snapshot,
    path: Option<&str>,
    out: &mut W,
) -> Result<u64> {
    let node = match resolve(repo, snap, path)? {
        Resolved::Node(n) => n,
        Resolved::Root(t) => only_file(repo, t)?,
    };
    if node.kind != NodeKind::File {
        return Err(Error::InvalidArgument(format!(
            "{:?} is not a regular file",
            node.name
        )));
    }
    write_content(repo, &node.content, out)
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn mtime(n: &Node) -> SystemTime {
    if n.mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n.mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(n.mtime_ns.unsigned_abs())
    }
}

/// Errors that stop a restore instead of being recorded against one entry.
fn is_fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. }
            | Error::Missing { .. }
            | Error::NoSpace { .. }
            | Error::UnsupportedVersion { .. }
            | Error::Catalog { .. }
    )
}

/// A writer into a fresh file that turns all-zero 4 KiB blocks (at file offsets that are
/// multiples of 4 KiB) into holes, writing with positional writes. Call [`HoleWriter::finish`]
/// to set the final length (a trailing hole needs it).
pub struct HoleWriter<'f> {
    file: &'f File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

fn all_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, x| a | x) == 0)
}

impl<'f> HoleWriter<'f> {
    /// Writes into `file` from offset 0.
    pub fn new(file: &'f File) -> HoleWriter<'f> {
        HoleWriter {
            file,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Writes out `buf` up to the last block boundary (or all of it), skipping zero blocks.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        let abs_end = self.start + self.buf.len() as u64;
        let end = if all {
            self.buf.len()
        } else {
            (abs_end - abs_end % HOLE_BLOCK).saturating_sub(self.start) as usize
        };
        let mut run: Option<usize> = None;
        let mut i = 0usize;
        while i < end {
            let abs = self.start + i as u64;
            let next = (i + (HOLE_BLOCK - abs % HOLE_BLOCK) as usize).min(end);
            if all_zero(&self.buf[i..next]) {
                if let Some(s) = run.take() {
                    self.file
                        .write_all_at(&self.buf[s..i], self.start + s as u64)?;
                }
            } else if run.is_none() {
                run = Some(i);
            }
            i = next;
        }
        if let Some(s) = run {
            self.file
                .write_all_at(&self.buf[s..end], self.start + s as u64)?;
        }
        self.buf.drain(..end);
        self.start += end as u64;
        Ok(())
    }

    /// Writes what is buffered and sets the file's length to `size`.
    pub fn finish(mut self, size: u64) -> io::Result<()> {
        self.drain(true)?;
        self.file.set_len(size)
    }
}

impl Write for HoleWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.drain(false)?;
        }
        Ok(data.len())
    }

    /// Writes everything buffered (skipping zeros is always safe in a fresh file).
    fn flush(&mut self) -> io::Result<()> {
        self.drain(true)
    }
}

/// Whether `f` holds exactly the node's content: its size, and each range hashing (keyed
/// BLAKE3, no repository access) to its chunk id. Ranges are hashed in parallel.
pub fn content_matches(key: &MasterKey, f: &File, node: &Node) -> io::Result<bool> {
    if f.metadata()?.len() != node.size {
        return Ok(false);
    }
    let mut ranges = Vec::with_capacity(node.content.len());
    let mut off = 0u64;
    for c in &node.content {
        ranges.push((off, *c));
        off += c.1 as u64;
    }
    ranges
        .par_iter()
        .map(|(off, ContentRef(id, len))| {
            let mut buf = vec![0u8; *len as usize];
            match f.read_exact_at(&mut buf, *off) {
                Ok(()) => Ok(key.blob_id(&buf) == *id),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
                Err(e) => Err(e),
            }
        })
        .try_reduce(|| true, |a, b| Ok(a && b))
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Compares one restored file with its node; `Err(Error::Mismatch)` names it when it differs.
pub fn verify_file(key: &MasterKey, path: &Path, node: &Node) -> Result<()> {
    let mismatch = |reason: String| Error::Mismatch {
        path: path.to_path_buf(),
        reason,
    };
    let md = fs::symlink_metadata(path).map_err(|e| mismatch(format!("cannot stat: {e}")))?;
    if !md.is_file() {
        return Err(mismatch("not a regular file".into()));
    }
    if md.len() != node.size {
        return Err(mismatch(format!(
            "size {} instead of {}",
            md.len(),
            node.size
        )));
    }
    let f = open_nofollow(path).map_err(|e| mismatch(format!("cannot open: {e}")))?;
    match content_matches(key, &f, node) {
        Ok(true) => Ok(()),
        Ok(false) => Err(mismatch("content differs".into())),
        Err(e) => Err(mismatch(format!("cannot read: {e}"))),
    }
}

/// Whether an existing entry must be replaced by the node's content.
fn needs_write(
    key: &MasterKey,
    path: &Path,
    node: &Node,
    existing: &Option<fs::Metadata>,
    overwrite: Overwrite,
) -> io::Result<bool> {
    let md = match existing {
        Some(md) if md.is_file() => md,
        Some(_) | None => return Ok(true),
    };
    match overwrite {
        Overwrite::Never => Ok(false),
        Overwrite::IfChanged => {
            let ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
            Ok(md.len() != node.size || ns != node.mtime_ns as i128)
        }
        Overwrite::Always => {
            if md.len() != node.size {
                return Ok(true);
            }
            let f = open_nofollow(path)?;
            Ok(!content_matches(key, &f, node)?)
        }
    }
}

/// Removes a non-directory entry in the way (a symlink itself, never its target).
fn remove_in_the_way(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Err(Error::InvalidArgument(format!(
            "{} exists and is a directory",
            path.display()
        ))),
        Ok(_) => fs::remove_file(path).ctx(|| format!("replacing {}", path.display())),
        Err(_) => Ok(()),
    }
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))
}

/// Settings the parallel workers need (no repository).
#[derive(Clone, Copy)]
struct Ctx {
    as_root: bool,
}

/// Sets the node's xattrs on `path` without following a symlink; on an entry that existed
/// before (`fresh` false) also removes `user.` attributes the node does not have. Every failure
/// is a warning.
fn apply_xattrs(path: &Path, node: &Node, fresh: bool, warnings: &mut Vec<String>) {
    if !fresh && let Ok(names) = xattr::list(path) {
        for name in names {
            let stale = name.to_str().is_some_and(|n| {
                n.starts_with("user.") && !node.xattrs.iter().any(|x| x.name == n)
            });
            if stale && let Err(e) = xattr::remove(path, &name) {
                warnings.push(format!(
                    "{}: removing xattr {:?}: {e}",
                    path.display(),
                    name
                ));
            }
        }
    }
    for x in &node.xattrs {
        let value = match hex::decode(&x.value) {
            Ok(v) => v,
            Err(_) => {
                warnings.push(format!(
                    "{}: xattr {} has a value that is not hex; not set",
                    path.display(),
                    x.name
                ));
                continue;
            }
        };
        if let Err(e) = xattr::set(path, &x.name, &value) {
            warnings.push(format!("{}: setting xattr {}: {e}", path.display(), x.name));
        }
    }
}

/// Owner (as root), xattrs, mode, times of a file or directory through its open descriptor:
/// chown first (it clears setuid bits and capabilities), chmod after the xattrs (setting them
/// needs write permission).
fn apply_meta_fd(f: &File, path: &Path, node: &Node, fresh: bool, ctx: Ctx) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if ctx.as_root {
        std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid))
            .ctx(|| format!("chown {}", path.display()))?;
    }
    apply_xattrs(path, node, fresh, &mut warnings);
    f.set_permissions(fs::Permissions::from_mode(node.mode & 0o7777))
        .ctx(|| format!("chmod {}", path.display()))?;
    let times = fs::FileTimes::new()
        .set_modified(mtime(node))
        .set_accessed(mtime(node));
    f.set_times(times)
        .ctx(|| format!("setting times of {}", path.display()))?;
    Ok(warnings)
}

/// The same for entries that must not be opened (symlinks, fifos, devices, sockets).
fn apply_meta_path(path: &Path, node: &Node, ctx: Ctx) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if ctx.as_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .ctx(|| format!("chown {}", path.display()))?;
    }
    apply_xattrs(path, node, true, &mut warnings);
    if node.kind != NodeKind::Symlink {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(node.mode & 0o7777),
            rustix::fs::AtFlags::empty(),
        )
        .map_err(io::Error::from)
        .ctx(|| format!("chmod {}", path.display()))?;
    }
    let t = filetime::FileTime::from_system_time(mtime(node));
    filetime::set_symlink_file_times(path, t, t)
        .ctx(|| format!("setting times of {}", path.display()))?;
    Ok(warnings)
}

/// Writes one small file whose chunks are located (a worker thread: no repository access).
fn write_small(
    reader: &BlobReader,
    job: &FileJob,
    located: &[(BlobId, BlobLocation)],
    ctx: Ctx,
) -> Result<Vec<String>> {
    if job.existing.is_some() {
        remove_in_the_way(&job.path)?;
    }
    let f = create_new(&job.path)?;
    let mut w = HoleWriter::new(&f);
    for (id, loc) in located {
        let chunk = reader.read(id, loc)?;
        w.write_all(&chunk)
            .map_err(|e| Error::io(format!("writing {}", job.path.display()), e))?;
    }
    w.finish(job.node.size)
        .map_err(|e| Error::io(format!("writing {}", job.path.display()), e))?;
    apply_meta_fd(&f, &job.path, &job.node, true, ctx)
}

/// Applies metadata to an existing file that is kept.
fn keep_file(job: &FileJob, ctx: Ctx) -> Result<Vec<String>> {
    let f = open_nofollow(&job.path).ctx(|| format!("opening {}", job.path.display()))?;
    apply_meta_fd(&f, &job.path, &job.node, false, ctx)
}

/// A regular file to restore.
struct FileJob {
    path: PathBuf,
    node: Node,
    existing: Option<fs::Metadata>,
}

/// How far a directory on the walk's stack got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DirState {
    /// Not created yet (nothing selected inside so far).
    Pending,
    /// Exists and is ours to fill.
    Ready,
    /// Existed before and is used as it is (`never`): no metadata applied.
    Kept,
    /// Could not be created or must not be touched: nothing goes inside.
    Blocked,
}

struct Frame {
    /// Where it is, for messages (may exceed PATH_MAX).
    path: PathBuf,
    /// The path system calls use (see [`DirAnchors`]); set when the directory is made.
    access: PathBuf,
    /// This directory's anchor, once a child needed one.
    anchor: Option<PathBuf>,
    node: Node,
    state: DirState,
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
struct DirAnchors {
    fds: Vec<std::os::fd::OwnedFd>,
}

impl DirAnchors {
    /// The system-call path of `name` in the directory reached by `dir`.
    fn child(&mut self, dir: &Path, anchor: &mut Option<PathBuf>, name: &OsStr) -> Result<PathBuf> {
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

/// Callbacks of [`walk`] over the selected part of a snapshot.
trait Visitor {
    /// A directory the walk enters (`included`: selected by itself or an ancestor).
    fn enter(&mut self, path: &Path, node: &Node, included: bool) -> Result<()>;
    /// Leaving the directory entered last.
    fn leave(&mut self) -> Result<()>;
    /// A selected non-directory entry.
    fn entry(&mut self, path: PathBuf, node: &Node) -> Result<()>;
}

/// Walks `nodes` (the entries of the directory `dir`, stored path `rel`) depth first with the
/// repository's tree walk, calling the visitor for what the selection keeps. Excluded
/// directories are not loaded.
fn walk(
    repo: &Repo,
    sel: &Selection,
    dir: &Path,
    rel: &Path,
    nodes: &[Node],
    v: &mut dyn Visitor,
) -> Result<()> {
    let mut selected = Selected {
        sel,
        frames: vec![(dir.to_path_buf(), rel.to_path_buf(), false)],
        v,
    };
    walk::walk_nodes(repo, nodes, &mut selected)
}

/// Applies a [`Selection`] to a tree walk and keeps the paths: what [`walk`] hands the
/// [`Visitor`].
struct Selected<'a> {
    sel: &'a Selection,
    /// Per directory entered: its path, its stored path, whether it is included.
    frames: Vec<(PathBuf, PathBuf, bool)>,
    v: &'a mut dyn Visitor,
}

impl Selected<'_> {
    /// The path, stored path and inclusion of `node`, or `None` when it is excluded.
    fn place(&self, node: &Node) -> Result<Option<(PathBuf, PathBuf, bool)>> {
        crate::interrupt::check()?;
        let name = node.os_name()?;
        let (dir, rel, inherited) = self
            .frames
            .last()
            .ok_or_else(|| Error::InvalidArgument("restore walk left its start".into()))?;
        let crel = rel.join(&name);
        if self.sel.excluded(&crel, &name) {
            return Ok(None);
        }
        let included = *inherited || self.sel.included(&crel, &name);
        Ok(Some((dir.join(&name), crel, included)))
    }
}

impl TreeVisitor for Selected<'_> {
    fn dir(&mut self, node: &Node) -> Result<Step> {
        let Some((path, crel, included)) = self.place(node)? else {
            return Ok(Step::Skip);
        };
        self.v.enter(&path, node, included)?;
        self.frames.push((path, crel, included));
        Ok(Step::Descend)
    }

    fn leave(&mut self, _node: &Node) -> Result<()> {
        self.frames.pop();
        self.v.leave()
    }

    fn entry(&mut self, node: &Node) -> Result<()> {
        match self.place(node)? {
            Some((path, _, true)) => self.v.entry(path, node),
            _ => Ok(()),
        }
    }
}

struct DirRestorer<'a> {
    repo: &'a Repo,
    /// The directory the walk starts in, and its anchor.
    root: PathBuf,
    root_anchor: Option<PathBuf>,
    anchors: DirAnchors,
    overwrite: Overwrite,
    ctx: Ctx,
    summary: RestoreSummary,
    stack: Vec<Frame>,
    dirs_meta: Vec<(PathBuf, Node)>,
    group: Vec<FileJob>,
    group_bytes: u64,
    /// First restored path of each hard-link group.
    links: HashMap<(u64, u64), PathBuf>,
    /// (primary, link path) made after all content is written.
    link_jobs: Vec<(PathBuf, PathBuf)>,
}

impl DirRestorer<'_> {
    /// Records an entry's outcome: warnings kept, a non-fatal error becomes a failure.
    fn settle(&mut self, r: Result<Vec<String>>) -> Result<bool> {
        match r {
            Ok(w) => {
                self.summary.warnings.extend(w);
                Ok(true)
            }
            Err(e) if is_fatal(&e) => Err(e),
            Err(e) => {
                self.summary.failures.push(e.to_string());
                Ok(false)
            }
        }
    }

    /// Makes one directory usable: keeps an existing one, replaces anything else in the way
    /// (unless `never`), creates a missing one; owner-writable while filling it.
    fn make_dir(&mut self, path: &Path) -> Result<DirState> {
        let r = (|| -> Result<DirState> {
            match fs::symlink_metadata(path) {
                Ok(md) if md.is_dir() && self.overwrite == Overwrite::Never => {
                    return Ok(DirState::Kept);
                }
                Ok(md) if md.is_dir() => {}
                Ok(_) if self.overwrite == Overwrite::Never => {
                    self.summary.warnings.push(format!(
                        "{} exists and is not a directory; left alone (--overwrite never), \
                         nothing restored inside it",
                        path.display()
                    ));
                    return Ok(DirState::Blocked);
                }
                Ok(_) => {
                    remove_in_the_way(path)?;
                    fs::create_dir(path).ctx(|| format!("creating {}", path.display()))?;
                }
                Err(_) => fs::create_dir(path).ctx(|| format!("creating {}", path.display()))?,
            }
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .ctx(|| format!("chmod {}", path.display()))?;
            Ok(DirState::Ready)
        })();
        match r {
            Ok(s) => Ok(s),
            Err(e) if is_fatal(&e) => Err(e),
            Err(e) => {
                self.summary
                    .failures
                    .push(format!("{e}; nothing restored inside it"));
                Ok(DirState::Blocked)
            }
        }
    }

    /// Creates the pending directories on the stack; false when one of them is blocked.
    fn materialize(&mut self) -> Result<bool> {
        for i in 0..self.stack.len() {
            match self.stack[i].state {
                DirState::Ready | DirState::Kept => {}
                DirState::Blocked => return Ok(false),
                DirState::Pending => {
                    let access = match self.access_in(i.checked_sub(1), i) {
                        Ok(a) => a,
                        Err(e) => {
                            self.settle(Err(e))?;
                            self.stack[i].state = DirState::Blocked;
                            return Ok(false);
                        }
                    };
                    let state = self.make_dir(&access)?;
                    self.stack[i].access = access;
                    self.stack[i].state = state;
                    if state == DirState::Blocked {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// The system-call path of frame `child`'s directory inside frame `parent` (`None`: the
    /// walk's root).
    fn access_in(&mut self, parent: Option<usize>, child: usize) -> Result<PathBuf> {
        let name = self.stack[child].path.file_name().map(|n| n.to_owned());
        self.access_of(parent, name.as_deref())
    }

    /// The system-call path of `name` inside frame `parent` (`None`: the walk's root).
    fn access_of(&mut self, parent: Option<usize>, name: Option<&OsStr>) -> Result<PathBuf> {
        let name = name.ok_or_else(|| Error::InvalidArgument("an entry without a name".into()))?;
        match parent {
            Some(i) => {
                let f = &mut self.stack[i];
                self.anchors.child(&f.access, &mut f.anchor, name)
            }
            None => self.anchors.child(&self.root, &mut self.root_anchor, name),
        }
    }

    fn queue_file(&mut self, job: FileJob) -> Result<()> {
        if job.node.size > BATCH_BYTES {
            return self.big_file(job);
        }
        self.group_bytes += job.node.size;
        self.group.push(job);
        if self.group.len() >= GROUP_FILES || self.group_bytes >= GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// A file over one batch: checked and written on this thread with the batched pipeline.
    fn big_file(&mut self, job: FileJob) -> Result<()> {
        let key = self.repo.key().as_ref();
        let write = needs_write(key, &job.path, &job.node, &job.existing, self.overwrite)
            .ctx(|| format!("checking {}", job.path.display()));
        let written = *write.as_ref().unwrap_or(&true);
        let r = match write {
            Ok(false) => keep_file(&job, self.ctx),
            Ok(true) => (|| {
                if job.existing.is_some() {
                    remove_in_the_way(&job.path)?;
                }
                let f = create_new(&job.path)?;
                let mut w = HoleWriter::new(&f);
                write_content(self.repo, &job.node.content, &mut w)
                    .map_err(|e| with_path(e, &job.path))?;
                w.finish(job.node.size)
                    .map_err(|e| Error::io(format!("writing {}", job.path.display()), e))?;
                apply_meta_fd(&f, &job.path, &job.node, true, self.ctx)
            })(),
            Err(e) => Err(e),
        };
        if self.settle(r)? {
            self.count_file(written, job.node.size);
        }
        Ok(())
    }

    fn count_file(&mut self, written: bool, size: u64) {
        if written {
            self.summary.files += 1;
            self.summary.bytes += size;
        } else {
            self.summary.files_skipped += 1;
            self.summary.bytes_skipped += size;
        }
    }

    /// Checks, decodes and writes the queued small files in parallel.
    fn flush(&mut self) -> Result<()> {
        crate::interrupt::check()?;
        let jobs = std::mem::take(&mut self.group);
        self.group_bytes = 0;
        if jobs.is_empty() {
            return Ok(());
        }
        let key = self.repo.key().as_ref();
        let reader = self.repo.reader();
        let (overwrite, ctx) = (self.overwrite, self.ctx);
        let decisions: Vec<io::Result<bool>> = jobs
            .par_iter()
            .map(|j| needs_write(key, &j.path, &j.node, &j.existing, overwrite))
            .collect();
        let mut work = Vec::with_capacity(jobs.len());
        for (job, d) in jobs.into_iter().zip(decisions) {
            match d {
                Ok(true) => {
                    let located = job
                        .node
                        .content
                        .iter()
                        .map(|c| self.repo.locate(&c.0).map(|l| (c.0, l)))
                        .collect::<Result<Vec<_>>>()
                        .map_err(|e| with_path(e, &job.path))?;
                    work.push((job, Some(located)));
                }
                Ok(false) => work.push((job, None)),
                Err(e) => {
                    self.summary
                        .failures
                        .push(format!("checking {}: {e}", job.path.display()));
                }
            }
        }
        let results: Vec<Result<Vec<String>>> = work
            .par_iter()
            .map(|(job, located)| match located {
                Some(l) => write_small(reader, job, l, ctx).map_err(|e| with_path(e, &job.path)),
                None => keep_file(job, ctx),
            })
            .collect();
        for ((job, located), r) in work.into_iter().zip(results) {
            if self.settle(r)? {
                self.count_file(located.is_some(), job.node.size);
            }
        }
        Ok(())
    }

    fn symlink(&mut self, path: &Path, node: &Node, existing: bool) -> Result<Vec<String>> {
        if existing {
            remove_in_the_way(path)?;
        }
        std::os::unix::fs::symlink(node.os_target()?, path)
            .ctx(|| format!("creating symlink {}", path.display()))?;
        apply_meta_path(path, node, self.ctx)
    }

    /// Fifos and device nodes with mknod, sockets by binding a listener (the file stays, no
    /// one listens). Device nodes need root; without it, and for a socket path too long to
    /// bind, the entry is skipped with a warning (`Ok(None)`).
    fn special(&mut self, path: &Path, node: &Node, existing: bool) -> Result<Option<Vec<String>>> {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        if existing {
            remove_in_the_way(path)?;
        }
        let what = match node.kind {
            NodeKind::Chardev => "character device",
            NodeKind::Blockdev => "block device",
            NodeKind::Socket => "socket",
            _ => "fifo",
        };
        let made = match node.kind {
            NodeKind::Fifo => mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                .map_err(io::Error::from),
            NodeKind::Chardev | NodeKind::Blockdev if !self.ctx.as_root => {
                self.summary.warnings.push(format!(
                    "{}: {what} {}:{} not restored (creating device nodes needs root)",
                    path.display(),
                    rustix::fs::major(node.rdev),
                    rustix::fs::minor(node.rdev)
                ));
                return Ok(None);
            }
            NodeKind::Chardev | NodeKind::Blockdev => {
                let ft = if node.kind == NodeKind::Chardev {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                mknodat(CWD, path, ft, Mode::from_raw_mode(0o600), node.rdev)
                    .map_err(io::Error::from)
            }
            _ => std::os::unix::net::UnixListener::bind(path).map(drop),
        };
        if let Err(e) = made {
            let permission = e.kind() == io::ErrorKind::PermissionDenied;
            if node.kind == NodeKind::Socket || (node.kind != NodeKind::Fifo && permission) {
                self.summary
                    .warnings
                    .push(format!("{}: {what} not restored: {e}", path.display()));
                return Ok(None);
            }
            return Err(Error::io(format!("creating {what} {}", path.display()), e));
        }
        apply_meta_path(path, node, self.ctx).map(Some)
    }
}

/// Adds the restored path to an error's context (damage keeps its own variant).
fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Io { context, source } => Error::Io {
            context: format!("{} ({context})", path.display()),
            source,
        },
        Error::NoSpace { context } => Error::NoSpace {
            context: format!("{} ({context})", path.display()),
        },
        Error::Corrupt { object, reason } => Error::Corrupt {
            object,
            reason: format!("{reason} (restoring {})", path.display()),
        },
        Error::Missing { object } => Error::Missing {
            object: format!("{object} (restoring {})", path.display()),
        },
        other => other,
    }
}

impl Visitor for DirRestorer<'_> {
    fn enter(&mut self, path: &Path, node: &Node, included: bool) -> Result<()> {
        let blocked = self
            .stack
            .last()
            .is_some_and(|f| f.state == DirState::Blocked);
        self.stack.push(Frame {
            path: path.to_path_buf(),
            access: PathBuf::new(),
            anchor: None,
            node: node.clone(),
            state: if blocked {
                DirState::Blocked
            } else {
                DirState::Pending
            },
        });
        if included && !blocked {
            self.materialize()?;
        }
        Ok(())
    }

    fn leave(&mut self) -> Result<()> {
        if let Some(f) = self.stack.pop()
            && f.state == DirState::Ready
        {
            self.summary.dirs += 1;
            self.dirs_meta.push((f.access, f.node));
        }
        Ok(())
    }

    fn entry(&mut self, path: PathBuf, node: &Node) -> Result<()> {
        if !self.materialize()? {
            return Ok(());
        }
        let path = match self.access_of(self.stack.len().checked_sub(1), path.file_name()) {
            Ok(p) => p,
            Err(e) => {
                self.settle(Err(e))?;
                return Ok(());
            }
        };
        let existing = fs::symlink_metadata(&path).ok();
        if self.overwrite == Overwrite::Never && existing.is_some() {
            if node.kind == NodeKind::File {
                self.count_file(false, node.size);
            }
            return Ok(());
        }
        match node.kind {
            NodeKind::File => {
                if let Some(key) = node.hardlink_key() {
                    if let Some(primary) = self.links.get(&key) {
                        self.link_jobs.push((primary.clone(), path));
                        return Ok(());
                    }
                    self.links.insert(key, path.clone());
                }
                self.queue_file(FileJob {
                    path,
                    node: node.clone(),
                    existing,
                })
            }
            NodeKind::Symlink => {
                let r = self.symlink(&path, node, existing.is_some());
                if self.settle(r)? {
                    self.summary.symlinks += 1;
                }
                Ok(())
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Socket => {
                match self.special(&path, node, existing.is_some()) {
                    Ok(None) => {}
                    Ok(Some(w)) => {
                        self.summary.warnings.extend(w);
                        self.summary.specials += 1;
                    }
                    Err(e) => {
                        self.settle(Err(e))?;
                    }
                }
                Ok(())
            }
            NodeKind::Dir => Err(Error::InvalidArgument(
                "a directory reached the entry callback".into(),
            )),
        }
    }
}

/// Creates `target/a/b/…` for the stored parents of a `--path`, replacing a non-directory in
/// the way (a symlink is never followed; with `never` it is an error instead).
fn plain_parents(target: &Path, parts: &[&str], overwrite: Overwrite) -> Result<PathBuf> {
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

/// The entries a restore of `path` starts from: (target directory, stored path of it, nodes).
fn start(
    repo: &Repo,
    snap: &Snapshot,
    path: Option<&str>,
    target: &Path,
    create: Option<Overwrite>,
) -> Result<(PathBuf, PathBuf, Vec<Node>)> {
    match resolve(repo, snap, path)? {
        Resolved::Root(tree) => Ok((target.to_path_buf(), PathBuf::new(), tree.nodes)),
        Resolved::Node(node) => {
            let parts = split_path(path.unwrap_or(""))?;
            let parents = &parts[..parts.len().saturating_sub(1)];
            let dir = match create {
                Some(overwrite) => plain_parents(target, parents, overwrite)?,
                None => parents.iter().fold(target.to_path_buf(), |p, c| p.join(c)),
            };
            let rel: PathBuf = parents.iter().collect();
            Ok((dir, rel, vec![node]))
        }
    }
}

/// Restores `path` of a snapshot (or all of it) under `target`, keeping stored paths:
/// `--path etc/nginx` lands in `target/etc/nginx`.
pub fn restore_to_dir(
    repo: &Repo,
    snap: &Snapshot,
    path: Option<&str>,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let sel = Selection::new(&opts.include, &opts.exclude)?;
    fs::create_dir_all(target).ctx(|| format!("creating {}", target.display()))?;
    let (dir, rel, nodes) = start(repo, snap, path, target, Some(opts.overwrite))?;
    let mut r = DirRestorer {
        repo,
        root: dir.clone(),
        root_anchor: None,
        anchors: DirAnchors::default(),
        overwrite: opts.overwrite,
        ctx: Ctx { as_root: is_root() },
        summary: RestoreSummary::default(),
        stack: Vec::new(),
        dirs_meta: Vec::new(),
        group: Vec::new(),
        group_bytes: 0,
        links: HashMap::new(),
        link_jobs: Vec::new(),
    };
    walk(repo, &sel, &dir, &rel, &nodes, &mut r)?;
    r.flush()?;
    // Hard links once every first link holds its content.
    for (primary, link) in std::mem::take(&mut r.link_jobs) {
        let res = (|| -> Result<Vec<String>> {
            if let Ok(md) = fs::symlink_metadata(&link) {
                let p = fs::symlink_metadata(&primary)
                    .ctx(|| format!("linking {} to {}", link.display(), primary.display()))?;
                if (md.dev(), md.ino()) == (p.dev(), p.ino()) {
                    return Ok(Vec::new());
                }
                remove_in_the_way(&link)?;
            }
            fs::hard_link(&primary, &link)
                .ctx(|| format!("linking {} to {}", link.display(), primary.display()))?;
            Ok(Vec::new())
        })();
        if r.settle(res)? {
            r.summary.hardlinks += 1;
        }
    }
    // Directory metadata last, deepest first (dirs_meta is in post-order).
    let ctx = r.ctx;
    for (p, n) in std::mem::take(&mut r.dirs_meta) {
        let res = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&p)
            .ctx(|| format!("opening {}", p.display()))
            .and_then(|f| apply_meta_fd(&f, &p, &n, false, ctx));
        r.settle(res)?;
    }
    Ok(r.summary)
}

/// Collects the selected regular files of a snapshot for [`verify_restore`], checking them in
/// parallel groups.
struct Verifier<'a> {
    key: &'a MasterKey,
    report: VerifyReport,
    /// (display path, system-call path, node)
    group: Vec<(PathBuf, PathBuf, Node)>,
    group_bytes: u64,
    /// System-call path and anchor of each directory on the walk, the root first.
    stack: Vec<(PathBuf, Option<PathBuf>)>,
    anchors: DirAnchors,
}

impl Verifier<'_> {
    fn flush(&mut self) {
        let group = std::mem::take(&mut self.group);
        self.group_bytes = 0;
        let key = self.key;
        let results: Vec<Result<()>> = group
            .par_iter()
            .map(|(_, a, n)| verify_file(key, a, n))
            .collect();
        for ((path, _, n), r) in group.into_iter().zip(results) {
            self.report.files += 1;
            self.report.bytes += n.size;
            match r {
                Ok(()) => {}
                Err(Error::Mismatch { reason, .. }) => {
                    self.report.mismatches.push(Mismatch { path, reason })
                }
                Err(e) => self.report.mismatches.push(Mismatch {
                    path,
                    reason: e.to_string(),
                }),
            }
        }
    }
}

impl Verifier<'_> {
    /// The system-call path of `path`'s name in the current directory; when no anchor can be
    /// made the plain path is used, and checking it reports why.
    fn access(&mut self, path: &Path) -> PathBuf {
        let (Some((dir, anchor)), Some(name)) = (self.stack.last_mut(), path.file_name()) else {
            return path.to_path_buf();
        };
        self.anchors
            .child(dir, anchor, name)
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

impl Visitor for Verifier<'_> {
    fn enter(&mut self, path: &Path, _: &Node, _: bool) -> Result<()> {
        let access = self.access(path);
        self.stack.push((access, None));
        Ok(())
    }
    fn leave(&mut self) -> Result<()> {
        self.stack.pop();
        Ok(())
    }
    fn entry(&mut self, path: PathBuf, node: &Node) -> Result<()> {
        if node.kind == NodeKind::File {
            self.group_bytes += node.size;
            let access = self.access(&path);
            self.group.push((path, access, node.clone()));
            if self.group.len() >= GROUP_FILES || self.group_bytes >= GROUP_BYTES {
                self.flush();
            }
        }
        Ok(())
    }
}

/// Re-reads every selected regular file under `target` and compares it with the snapshot: size,
/// and each chunk's range hashed with the repository key against the chunk id (no pack reads).
pub fn verify_restore(
    repo: &Repo,
    snap: &Snapshot,
    path: Option<&str>,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<VerifyReport> {
    let sel = Selection::new(&opts.include, &opts.exclude)?;
    let (dir, rel, nodes) = start(repo, snap, path, target, None)?;
    let mut v = Verifier {
        key: repo.key().as_ref(),
        report: VerifyReport::default(),
        group: Vec::new(),
        group_bytes: 0,
        stack: vec![(dir.clone(), None)],
        anchors: DirAnchors::default(),
    };
    walk(repo, &sel, &dir, &rel, &nodes, &mut v)?;
    v.flush();
    Ok(v.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::tests::repo;
    use crate::backup::{CreateOptions, NoProgress, create};
    use crate::source::SourceSpec;

    fn node_for(key: &MasterKey, data: &[u8], chunk: usize) -> Node {
        let mut n = Node::new(OsStr::new("f"), NodeKind::File, 0o644, 0, 0, 0);
        n.size = data.len() as u64;
        n.content = data
            .chunks(chunk)
            .map(|c| ContentRef(key.blob_id(c), c.len() as u32))
            .collect();
        n
    }

    #[test]
    fn verify_file_detects_changed_bytes_and_sizes() {
        let t = tempfile::tempdir().unwrap();
        let key = MasterKey::generate().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let node = node_for(&key, &data, 4000);
        let p = t.path().join("f");
        fs::write(&p, &data).unwrap();
        verify_file(&key, &p, &node).unwrap();
        let mut changed = data.clone();
        changed[77_777] ^= 1;
        fs::write(&p, &changed).unwrap();
        assert!(matches!(
            verify_file(&key, &p, &node),
            Err(Error::Mismatch { ref path, .. }) if path == &p
        ));
        fs::write(&p, &data[..99_999]).unwrap();
        assert!(matches!(
            verify_file(&key, &p, &node),
            Err(Error::Mismatch { .. })
        ));
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        assert!(matches!(
            verify_file(&key, &p, &node),
            Err(Error::Mismatch { .. })
        ));
    }

    #[test]
    fn verify_restore_finds_a_file_changed_after_restore() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/a"), vec![7u8; 300_000]).unwrap();
        fs::write(src.join("b"), b"bee").unwrap();
        let (_backend, mut r) = repo(t.path());
        let opts = CreateOptions {
            sources: vec![SourceSpec::Path(src.clone())],
            ..Default::default()
        };
        let snap = create(&mut r, &opts, &NoProgress).unwrap().snapshot;
        let target = t.path().join("out");
        let ro = RestoreOptions::default();
        let sum = restore_to_dir(&r, &snap, None, &target, &ro).unwrap();
        assert_eq!((sum.files, sum.failures.len()), (2, 0), "{sum:?}");
        let report = verify_restore(&r, &snap, None, &target, &ro).unwrap();
        assert_eq!((report.files, report.mismatches.len()), (2, 0));
        let a = target.join(src.strip_prefix("/").unwrap()).join("d/a");
        let mut bytes = fs::read(&a).unwrap();
        bytes[123_456] = 8;
        fs::write(&a, &bytes).unwrap();
        let report = verify_restore(&r, &snap, None, &target, &ro).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.mismatches.len(), 1, "{report:?}");
        assert_eq!(report.mismatches[0].path, a);
    }

    #[test]
    fn hole_writer_keeps_bytes_and_skips_zero_blocks() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s");
        let mut data = vec![0u8; 8 << 20];
        data[5000..5100].fill(1); // inside block 1
        data[3 << 20] = 9;
        data[(8 << 20) - 1] = 3;
        let f = File::create(&p).unwrap();
        let mut w = HoleWriter::new(&f);
        // Uneven pieces, so blocks straddle write calls.
        for piece in data.chunks(1_000_003) {
            w.write_all(piece).unwrap();
        }
        w.finish(data.len() as u64).unwrap();
        assert_eq!(fs::read(&p).unwrap(), data);
        let blocks = fs::metadata(&p).unwrap().blocks() * 512;
        assert!(
            blocks <= 256 << 10,
            "{blocks} bytes allocated for 3 written blocks"
        );
        // A file ending in zeros still gets its length.
        let f = File::create(&p).unwrap();
        let mut w = HoleWriter::new(&f);
        w.write_all(&[0u8; 10_000]).unwrap();
        w.finish(10_000).unwrap();
        assert_eq!(fs::read(&p).unwrap(), vec![0u8; 10_000]);
    }
}
