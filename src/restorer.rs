//! `snapshot restore`: snapshot → trees → chunks → files, or one file → a writer.
//!
//! File content is read in batches of chunks: the catalog locates each chunk, rayon fetches and
//! decodes a batch on both cores (authenticate, bounded inflate, id check), and a writer thread
//! writes the previous batch meanwhile. A chunk that fails to decode stops the restore with an
//! error naming the blob and its pack: never silently wrong bytes. Directory metadata is applied
//! last, deepest first, so writing files does not disturb restored mtimes.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::repo::{Repo, read_located};
use crate::snapshot::Snapshot;
use crate::tree::{ContentRef, Node, NodeKind, Tree};

/// Plaintext bytes decoded per batch.
const BATCH_BYTES: u64 = 32 << 20;

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreSummary {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Content bytes written.
    pub bytes: u64,
}

/// What a path in a snapshot names.
#[allow(clippy::large_enum_variant)] // short-lived; boxing the node buys nothing
pub enum Entry {
    /// The snapshot root.
    Root(Tree),
    /// One node.
    Node(Node),
}

/// Normalizes a snapshot path: no leading `/`, no empty, `.` or `..` components.
pub fn split_path(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Error::InvalidArgument(format!(
            "snapshot path {path:?} may not contain '..'"
        )));
    }
    Ok(parts)
}

/// Finds `path` (as stored, e.g. `etc/nginx`) in a snapshot; `None` or empty is the root.
pub fn resolve(repo: &Repo, snap: &Snapshot, path: Option<&str>) -> Result<Entry> {
    let parts = split_path(path.unwrap_or(""))?;
    let mut tree = repo.load_tree(&snap.root)?;
    for (i, part) in parts.iter().enumerate() {
        let node = tree
            .nodes
            .into_iter()
            .find(|n| n.name == *part && n.name_hex.is_none())
            .ok_or_else(|| Error::PathNotInSnapshot(path.unwrap_or("").into()))?;
        if i + 1 == parts.len() {
            return Ok(Entry::Node(node));
        }
        match (&node.kind, &node.subtree) {
            (NodeKind::Dir, Some(sub)) => tree = repo.load_tree(sub)?,
            _ => return Err(Error::PathNotInSnapshot(path.unwrap_or("").into())),
        }
    }
    Ok(Entry::Root(tree))
}

/// Writes a file's content to `out`, decoding on both cores while the previous batch is written.
pub fn write_content<W: Write + Send>(
    repo: &Repo,
    content: &[ContentRef],
    out: &mut W,
) -> Result<u64> {
    let key = repo.key().as_ref();
    let backend = repo.backend().as_ref();
    let total: u64 = content.iter().map(|c| c.1 as u64).sum();
    if total <= BATCH_BYTES {
        // Small files (the common case in trees): one parallel batch, no writer thread.
        let located: Vec<_> = content
            .iter()
            .map(|c| repo.locate(&c.0).map(|l| (c.0, l)))
            .collect::<Result<_>>()?;
        let chunks: Vec<Vec<u8>> = located
            .par_iter()
            .map(|(id, loc)| read_located(backend, key, id, loc))
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
            let decoded: Result<Vec<Vec<u8>>> = located.and_then(|l| {
                l.par_iter()
                    .map(|(id, loc)| read_located(backend, key, id, loc))
                    .collect()
            });
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
        Entry::Node(n) => n,
        Entry::Root(t) => only_file(repo, t)?,
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

struct DirRestorer<'a> {
    repo: &'a Repo,
    as_root: bool,
    summary: RestoreSummary,
    dirs_meta: Vec<(PathBuf, Node)>,
}

impl DirRestorer<'_> {
    fn remove_existing(path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(md) if md.is_dir() => Err(Error::InvalidArgument(format!(
                "{} exists and is a directory",
                path.display()
            ))),
            Ok(_) => fs::remove_file(path).ctx(|| format!("replacing {}", path.display())),
            Err(_) => Ok(()),
        }
    }

    fn restore_node(&mut self, parent: &Path, node: &Node) -> Result<()> {
        let path = parent.join(node.os_name()?);
        match node.kind {
            NodeKind::Dir => {
                match fs::symlink_metadata(&path) {
                    Ok(md) if md.is_dir() => {}
                    Ok(_) => {
                        Self::remove_existing(&path)?;
                        fs::create_dir(&path).ctx(|| format!("creating {}", path.display()))?;
                    }
                    Err(_) => {
                        fs::create_dir(&path).ctx(|| format!("creating {}", path.display()))?
                    }
                }
                // Owner-writable while filling it; the real mode comes last.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .ctx(|| format!("chmod {}", path.display()))?;
                let sub = node
                    .subtree
                    .ok_or_else(|| Error::corrupt("tree", "directory without subtree"))?;
                let tree = self.repo.load_tree(&sub)?;
                for child in &tree.nodes {
                    self.restore_node(&path, child)?;
                }
                self.summary.dirs += 1;
                self.dirs_meta.push((path, node.clone()));
            }
            NodeKind::File => {
                Self::remove_existing(&path)?;
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .ctx(|| format!("creating {}", path.display()))?;
                let mut w = BufWriter::with_capacity(1 << 20, f);
                let n = write_content(self.repo, &node.content, &mut w)?;
                let f = w.into_inner().map_err(|e| {
                    Error::io(format!("writing {}", path.display()), e.into_error())
                })?;
                self.apply_meta(&path, node, Some(&f))?;
                self.summary.files += 1;
                self.summary.bytes += n;
            }
            NodeKind::Symlink => {
                Self::remove_existing(&path)?;
                std::os::unix::fs::symlink(node.os_target()?, &path)
                    .ctx(|| format!("creating symlink {}", path.display()))?;
                if self.as_root {
                    std::os::unix::fs::lchown(&path, Some(node.uid), Some(node.gid))
                        .ctx(|| format!("chown {}", path.display()))?;
                }
                let t = filetime::FileTime::from_system_time(mtime(node));
                filetime::set_symlink_file_times(&path, t, t)
                    .ctx(|| format!("setting times of symlink {}", path.display()))?;
                self.summary.symlinks += 1;
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Socket => {
                return Err(Error::InvalidArgument(format!(
                    "{}: special files are not restored yet",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn apply_meta(&self, path: &Path, node: &Node, open: Option<&File>) -> Result<()> {
        if self.as_root {
            std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
                .ctx(|| format!("chown {}", path.display()))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777))
            .ctx(|| format!("chmod {}", path.display()))?;
        let times = fs::FileTimes::new()
            .set_modified(mtime(node))
            .set_accessed(mtime(node));
        let owned;
        let f = match open {
            Some(f) => f,
            None => {
                owned = File::open(path).ctx(|| format!("opening {}", path.display()))?;
                &owned
            }
        };
        f.set_times(times)
            .ctx(|| format!("setting times of {}", path.display()))
    }
}

/// Restores `path` of a snapshot (or all of it) under `target`, keeping stored paths:
/// `--path etc/nginx` lands in `target/etc/nginx`.
pub fn restore_to_dir(
    repo: &Repo,
    snap: &Snapshot,
    path: Option<&str>,
    target: &Path,
) -> Result<RestoreSummary> {
    let entry = resolve(repo, snap, path)?;
    fs::create_dir_all(target).ctx(|| format!("creating {}", target.display()))?;
    let mut r = DirRestorer {
        repo,
        as_root: is_root(),
        summary: RestoreSummary::default(),
        dirs_meta: Vec::new(),
    };
    match entry {
        Entry::Root(tree) => {
            for n in &tree.nodes {
                r.restore_node(target, n)?;
            }
        }
        Entry::Node(node) => {
            let parts = split_path(path.unwrap_or(""))?;
            let mut parent = target.to_path_buf();
            for p in &parts[..parts.len().saturating_sub(1)] {
                parent.push(p);
            }
            fs::create_dir_all(&parent).ctx(|| format!("creating {}", parent.display()))?;
            r.restore_node(&parent, &node)?;
        }
    }
    // Directory metadata last, deepest first (dirs_meta is in post-order).
    let dirs = std::mem::take(&mut r.dirs_meta);
    for (p, n) in dirs.iter() {
        r.apply_meta(p, n, None)?;
    }
    Ok(r.summary)
}
