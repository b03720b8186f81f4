//! [`restore_to_dir`]: the [`DirRestorer`] visitor creates directories, writes small files in
//! parallel groups and big ones with the batched pipeline, makes symlinks and special files, and
//! does hard links and directory metadata last.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::content::{HoleWriter, write_content};
use super::meta::{Ctx, apply_meta_fd, apply_meta_path, is_root};
use super::paths::{DirAnchors, create_new, open_nofollow, remove_in_the_way};
use super::verify::content_matches;
use super::visit::{Visitor, start, walk};
use super::{BATCH_BYTES, GROUP_BYTES, GROUP_FILES, Overwrite, RestoreOptions, RestoreSummary};
use crate::error::{Error, IoContext, Result};
use crate::format::crypto::MasterKey;
use crate::format::id::BlobId;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::repo::Repo;
use crate::repo::catalog::BlobLocation;
use crate::restore::selection::Selection;

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

/// Writes one small file from its decoded chunks (a worker thread: no repository access).
fn write_small(job: &FileJob, chunks: &[Vec<u8>], ctx: Ctx) -> Result<Vec<String>> {
    if job.existing.is_some() {
        remove_in_the_way(&job.path)?;
    }
    let f = create_new(&job.path)?;
    let mut w = HoleWriter::new(&f);
    for chunk in chunks {
        w.write_all(chunk)
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
        // Every chunk of the group located, then read as one batch (coalesced per pack): the
        // `Some(range)` of a job is where its chunks are in the batch.
        let mut work = Vec::with_capacity(jobs.len());
        let mut located: Vec<(BlobId, BlobLocation)> = Vec::new();
        for (job, d) in jobs.into_iter().zip(decisions) {
            match d {
                Ok(true) => {
                    let start = located.len();
                    for c in &job.node.content {
                        let l = self
                            .repo
                            .locate(&c.0)
                            .map_err(|e| with_path(e, &job.path))?;
                        located.push((c.0, l));
                    }
                    let range = start..located.len();
                    work.push((job, Some(range)));
                }
                Ok(false) => work.push((job, None)),
                Err(e) => {
                    self.summary
                        .failures
                        .push(format!("checking {}: {e}", job.path.display()));
                }
            }
        }
        // A batch that fails is read again file by file, so the error names its file (and
        // settles as it would for that file alone).
        let batch = reader.read_many(&located).ok();
        let results: Vec<Result<Vec<String>>> = work
            .par_iter()
            .map(|(job, range)| match range {
                Some(r) => match &batch {
                    Some(chunks) => write_small(job, &chunks[r.clone()], ctx),
                    None => reader
                        .read_many(&located[r.clone()])
                        .and_then(|chunks| write_small(job, &chunks, ctx)),
                }
                .map_err(|e| with_path(e, &job.path)),
                None => keep_file(job, ctx),
            })
            .collect();
        for ((job, range), r) in work.into_iter().zip(results) {
            if self.settle(r)? {
                self.count_file(range.is_some(), job.node.size);
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
