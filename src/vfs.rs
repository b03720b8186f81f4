//! The mount's view of a repository: a read-only file tree with inode numbers, directory
//! listings and reads at any offset. Plain code with its own tests; the FUSE adapter
//! (`mount.rs`) only translates calls.
//!
//! ```text
//! /snapshots/<time>-<short id>/…   one directory per snapshot (its root tree)
//! /snapshots/latest -> <newest>
//! /hosts/<host>/<time>-<short id>/…
//! /tags/<tag>/<time>-<short id>/…
//! ```
//!
//! Inodes are handed out as entries are looked up and stay valid for the life of the view.
//! The snapshot list is re-read when a top-level directory is listed and the last read is
//! older than [`Vfs::REFRESH`], so new snapshots appear without remounting. Reads map an offset
//! to chunks through the cumulative chunk lengths (binary search), fetching only the chunks
//! that cover the range; decoded chunks are kept in a small cache bounded in bytes, so a
//! sequential read decodes each chunk once.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{ContentRef, Node, NodeKind};
use crate::repo::Repo;

/// Chunks decoded at once on a cache miss (the one asked for and the ones after it).
const PREFETCH: usize = 6;

/// Inode of the root directory.
pub const ROOT: u64 = 1;

/// What kind of entry an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A named pipe (shown, never opened: reads fail).
    Fifo,
    /// A character device node.
    Chardev,
    /// A block device node.
    Blockdev,
    /// A unix socket.
    Socket,
}

/// What `stat` shows for an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes (files: content; symlinks: target length).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inside a snapshot: never changes, so the kernel may cache it for long.
    pub immutable: bool,
}

/// One inode's content.
#[derive(Clone, Debug)]
enum Entry {
    /// A synthetic directory (root, snapshots/, hosts/, a host, tags/, a tag).
    Virtual(Virtual),
    /// A node of a snapshot's tree (the snapshot's root directory is a `Dir` node too).
    Node(Box<Node>),
    /// `snapshots/latest`.
    Latest,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Virtual {
    Root,
    Snapshots,
    Hosts,
    Host(String),
    Tags,
    Tag(String),
}

/// A directory's entries: sorted for listing, hashed for lookup.
#[derive(Default)]
struct DirList {
    names: Vec<(Vec<u8>, u64)>,
    index: HashMap<Vec<u8>, u64>,
}

/// A snapshot as the view lists it.
#[derive(Clone, Debug)]
struct SnapEntry {
    dir_name: String,
    host: String,
    tags: Vec<String>,
    root: Node,
}

/// Decoded chunks, least recently used evicted first, bounded in bytes.
struct ChunkCache {
    max_bytes: usize,
    bytes: usize,
    map: HashMap<BlobId, std::sync::Arc<Vec<u8>>>,
    order: VecDeque<BlobId>,
}

impl ChunkCache {
    fn get(&mut self, id: &BlobId) -> Option<std::sync::Arc<Vec<u8>>> {
        let hit = self.map.get(id).cloned();
        if hit.is_some() {
            self.order.retain(|x| x != id);
            self.order.push_back(*id);
        }
        hit
    }

    fn put(&mut self, id: BlobId, data: std::sync::Arc<Vec<u8>>) {
        self.bytes += data.len();
        self.map.insert(id, data);
        self.order.push_back(id);
        while self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.map.remove(&old) {
                self.bytes -= d.len();
            }
        }
    }
}

/// The read-only file tree of a repository.
pub struct Vfs {
    repo: Repo,
    entries: Vec<Entry>,
    children: HashMap<u64, Arc<DirList>>,
    by_parent_name: HashMap<(u64, Vec<u8>), u64>,
    snapshots: Vec<SnapEntry>,
    listed_at: Option<Instant>,
    offsets: HashMap<u64, Vec<u64>>,
    last_end: HashMap<u64, u64>,
    chunks: ChunkCache,
    mount_time_ns: i64,
}

impl Vfs {
    /// How old the snapshot list may get before a top-level listing re-reads it.
    pub const REFRESH: Duration = Duration::from_secs(5);

    /// A view of `repo`; `cache_bytes` bounds the decoded-chunk cache.
    pub fn new(repo: Repo, cache_bytes: usize) -> Result<Vfs> {
        let mut v = Vfs {
            repo,
            entries: vec![Entry::Latest, Entry::Virtual(Virtual::Root)],
            children: HashMap::new(),
            by_parent_name: HashMap::new(),
            snapshots: Vec::new(),
            listed_at: None,
            offsets: HashMap::new(),
            last_end: HashMap::new(),
            chunks: ChunkCache {
                max_bytes: cache_bytes,
                bytes: 0,
                map: HashMap::new(),
                order: VecDeque::new(),
            },
            mount_time_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        };
        v.refresh(true)?;
        Ok(v)
    }

    fn entry(&self, ino: u64) -> Result<&Entry> {
        self.entries
            .get(ino as usize)
            .filter(|_| ino >= ROOT)
            .ok_or_else(|| Error::InvalidArgument(format!("no inode {ino}")))
    }

    /// Re-reads the snapshot list if it is older than [`Vfs::REFRESH`] (or `force`).
    fn refresh(&mut self, force: bool) -> Result<()> {
        if !force && self.listed_at.is_some_and(|t| t.elapsed() < Self::REFRESH) {
            return Ok(());
        }
        let (snaps, _) = self.repo.snapshots()?;
        self.snapshots = snaps
            .into_iter()
            .map(|(id, s)| {
                let t = s.timestamp();
                SnapEntry {
                    dir_name: format!("{}-{}", t.format("%Y-%m-%dT%H:%M:%SZ"), id.short()),
                    host: s.host.clone(),
                    tags: s.tags.clone(),
                    root: Node {
                        subtree: Some(s.root),
                        ..Node::new(
                            std::ffi::OsStr::new(""),
                            NodeKind::Dir,
                            0o755,
                            0,
                            0,
                            t.timestamp_nanos_opt().unwrap_or_default(),
                        )
                    },
                }
            })
            .collect();
        self.listed_at = Some(Instant::now());
        // Virtual directories are rebuilt on the next listing.
        for (ino, e) in self.entries.iter().enumerate() {
            if matches!(e, Entry::Virtual(_)) {
                self.children.remove(&(ino as u64));
            }
        }
        Ok(())
    }

    /// The inode for `name` under `parent`, creating it on first sight.
    fn intern(&mut self, parent: u64, name: Vec<u8>, entry: Entry) -> u64 {
        if let Some(ino) = self.by_parent_name.get(&(parent, name.clone())) {
            // A name reused by a new snapshot list keeps its inode but gets the new entry.
            self.entries[*ino as usize] = entry;
            return *ino;
        }
        let ino = self.entries.len() as u64;
        self.entries.push(entry);
        self.by_parent_name.insert((parent, name), ino);
        ino
    }

    /// Name → inode of a directory's entries.
    fn dir_children(&mut self, ino: u64) -> Result<Arc<DirList>> {
        let entry = self.entry(ino)?.clone();
        if matches!(
            entry,
            Entry::Virtual(Virtual::Root | Virtual::Snapshots | Virtual::Hosts | Virtual::Tags)
        ) {
            self.refresh(false)?;
        }
        if let Some(c) = self.children.get(&ino) {
            return Ok(Arc::clone(c));
        }
        let list: Vec<(Vec<u8>, Entry)> = match entry {
            Entry::Virtual(Virtual::Root) => vec![
                (b"snapshots".to_vec(), Entry::Virtual(Virtual::Snapshots)),
                (b"hosts".to_vec(), Entry::Virtual(Virtual::Hosts)),
                (b"tags".to_vec(), Entry::Virtual(Virtual::Tags)),
            ],
            Entry::Virtual(Virtual::Snapshots) => {
                let mut v: Vec<(Vec<u8>, Entry)> = self
                    .snapshots
                    .iter()
                    .map(|s| {
                        (
                            s.dir_name.clone().into_bytes(),
                            Entry::Node(Box::new(s.root.clone())),
                        )
                    })
                    .collect();
                if !self.snapshots.is_empty() {
                    v.push((b"latest".to_vec(), Entry::Latest));
                }
                v
            }
            Entry::Virtual(Virtual::Hosts) => {
                let mut hosts: Vec<String> =
                    self.snapshots.iter().map(|s| s.host.clone()).collect();
                hosts.sort();
                hosts.dedup();
                hosts
                    .into_iter()
                    .map(|h| (h.clone().into_bytes(), Entry::Virtual(Virtual::Host(h))))
                    .collect()
            }
            Entry::Virtual(Virtual::Tags) => {
                let mut tags: Vec<String> =
                    self.snapshots.iter().flat_map(|s| s.tags.clone()).collect();
                tags.sort();
                tags.dedup();
                tags.into_iter()
                    .filter(|t| !t.is_empty() && !t.contains('/'))
                    .map(|t| (t.clone().into_bytes(), Entry::Virtual(Virtual::Tag(t))))
                    .collect()
            }
            Entry::Virtual(Virtual::Host(h)) => self
                .snapshots
                .iter()
                .filter(|s| s.host == h)
                .map(|s| {
                    (
                        s.dir_name.clone().into_bytes(),
                        Entry::Node(Box::new(s.root.clone())),
                    )
                })
                .collect(),
            Entry::Virtual(Virtual::Tag(t)) => self
                .snapshots
                .iter()
                .filter(|s| s.tags.contains(&t))
                .map(|s| {
                    (
                        s.dir_name.clone().into_bytes(),
                        Entry::Node(Box::new(s.root.clone())),
                    )
                })
                .collect(),
            Entry::Node(n) if n.kind == NodeKind::Dir => {
                let tree = match n.subtree {
                    Some(t) => self.repo.load_tree(&t)?,
                    None => return Ok(Arc::new(DirList::default())),
                };
                tree.nodes
                    .into_iter()
                    .map(|c| (c.name_bytes(), Entry::Node(Box::new(c))))
                    .collect()
            }
            _ => return Err(Error::InvalidArgument("not a directory".into())),
        };
        let mut sorted = BTreeMap::new();
        for (name, e) in list {
            let child = self.intern(ino, name.clone(), e);
            sorted.insert(name, child);
        }
        let dir = Arc::new(DirList {
            index: sorted.iter().map(|(n, i)| (n.clone(), *i)).collect(),
            names: sorted.into_iter().collect(),
        });
        self.children.insert(ino, Arc::clone(&dir));
        Ok(dir)
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<Option<Attr>> {
        let children = self.dir_children(parent)?;
        match children.index.get(name) {
            Some(ino) => Ok(Some(self.attr(*ino)?)),
            None => Ok(None),
        }
    }

    /// Up to `max` entries of a directory from position `from`, by name: (name, attributes).
    /// Listing a directory page by page costs each page only (100,000 entries list quickly).
    pub fn readdir_page(
        &mut self,
        ino: u64,
        from: usize,
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Attr)>> {
        let children = self.dir_children(ino)?;
        children
            .names
            .iter()
            .skip(from)
            .take(max)
            .map(|(name, child)| Ok((name.clone(), self.attr(*child)?)))
            .collect()
    }

    /// All of a directory's entries, by name.
    pub fn readdir(&mut self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>> {
        self.readdir_page(ino, 0, usize::MAX)
    }

    /// What `stat` shows.
    pub fn attr(&self, ino: u64) -> Result<Attr> {
        Ok(match self.entry(ino)? {
            Entry::Virtual(_) => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                mode: 0o555,
                uid: 0,
                gid: 0,
                mtime_ns: self.mount_time_ns,
                immutable: false,
            },
            Entry::Latest => Attr {
                ino,
                kind: Kind::Symlink,
                size: self.latest_target().map(|t| t.len() as u64).unwrap_or(0),
                mode: 0o777,
                uid: 0,
                gid: 0,
                mtime_ns: self.mount_time_ns,
                immutable: false,
            },
            Entry::Node(n) => Attr {
                ino,
                kind: match n.kind {
                    NodeKind::Dir => Kind::Dir,
                    NodeKind::File => Kind::File,
                    NodeKind::Symlink => Kind::Symlink,
                    NodeKind::Fifo => Kind::Fifo,
                    NodeKind::Chardev => Kind::Chardev,
                    NodeKind::Blockdev => Kind::Blockdev,
                    NodeKind::Socket => Kind::Socket,
                },
                size: match n.kind {
                    NodeKind::File => n.size,
                    NodeKind::Symlink => n.os_target().map(|t| t.len() as u64).unwrap_or(0),
                    _ => 0,
                },
                mode: n.mode & 0o7777,
                uid: n.uid,
                gid: n.gid,
                mtime_ns: n.mtime_ns,
                immutable: true,
            },
        })
    }

    fn latest_target(&self) -> Option<String> {
        self.snapshots.last().map(|s| s.dir_name.clone())
    }

    /// A symlink's target bytes.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        match self.entry(ino)? {
            Entry::Latest => Ok(self.latest_target().unwrap_or_default().into_bytes()),
            Entry::Node(n) if n.kind == NodeKind::Symlink => Ok(n.os_target()?.as_bytes().to_vec()),
            _ => Err(Error::InvalidArgument("not a symlink".into())),
        }
    }

    /// Reads up to `len` bytes of file `ino` at `offset`, fetching only the chunks covering them.
    pub fn read(&mut self, ino: u64, offset: u64, len: u32) -> Result<Vec<u8>> {
        let content: Vec<ContentRef> = match self.entry(ino)? {
            Entry::Node(n) if n.kind == NodeKind::File => n.content.clone(),
            _ => return Err(Error::InvalidArgument("not a file".into())),
        };
        let starts = self.offsets.entry(ino).or_insert_with(|| {
            let mut s = Vec::with_capacity(content.len() + 1);
            let mut at = 0u64;
            for c in &content {
                s.push(at);
                at += c.1 as u64;
            }
            s.push(at);
            s
        });
        let total = *starts.last().unwrap_or(&0);
        if offset >= total || len == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + len as u64).min(total);
        let sequential = offset == 0 || self.last_end.get(&ino) == Some(&offset);
        self.last_end.insert(ino, end);
        // The chunk holding `offset`: the last start <= offset.
        let mut i = starts.partition_point(|s| *s <= offset).saturating_sub(1);
        let starts = starts.clone();
        let mut out = Vec::with_capacity((end - offset) as usize);
        while i < content.len() && starts[i] < end {
            let (id, clen) = (content[i].0, content[i].1 as u64);
            let data = match self.chunks.get(&id) {
                Some(d) => d,
                // Read-ahead only for sequential reads: a random read fetches only the chunks
                // that cover it.
                None => {
                    let ahead = if sequential { PREFETCH } else { 1 };
                    self.fetch(&content[i..content.len().min(i + ahead)])?
                }
            };
            if data.len() as u64 != clen {
                return Err(Error::corrupt(
                    format!("blob {}", id.to_hex()),
                    "length differs from the tree's",
                ));
            }
            let from = offset.max(starts[i]) - starts[i];
            let to = end.min(starts[i] + clen) - starts[i];
            out.extend_from_slice(&data[from as usize..to as usize]);
            i += 1;
        }
        Ok(out)
    }

    /// Decodes the first chunk of `run` and, on the other cores at the same time, the chunks
    /// after it that are not cached yet: a sequential read then finds them decoded. Returns
    /// the first; a failure of a read-ahead chunk is left for when it is actually read.
    fn fetch(&mut self, run: &[ContentRef]) -> Result<std::sync::Arc<Vec<u8>>> {
        use rayon::prelude::*;
        let first = run
            .first()
            .ok_or_else(|| Error::InvalidArgument("nothing to fetch".into()))?
            .0;
        let mut wanted = vec![(first, self.repo.locate(&first)?)];
        for c in &run[1..] {
            if !self.chunks.map.contains_key(&c.0)
                && !wanted.iter().any(|w| w.0 == c.0)
                && let Ok(loc) = self.repo.locate(&c.0)
            {
                wanted.push((c.0, loc));
            }
        }
        let reader = self.repo.reader();
        let decoded: Vec<Result<Vec<u8>>> = wanted
            .par_iter()
            .map(|(id, loc)| reader.read(id, loc))
            .collect();
        let mut out = None;
        for ((id, _), d) in wanted.into_iter().zip(decoded) {
            match d {
                Ok(d) => {
                    let d = std::sync::Arc::new(d);
                    if id == first {
                        out = Some(std::sync::Arc::clone(&d));
                    }
                    self.chunks.put(id, d);
                }
                Err(e) if id == first => return Err(e),
                Err(_) => {}
            }
        }
        out.ok_or_else(|| Error::InvalidArgument("chunk not fetched".into()))
    }

    /// The repository (for the adapter's lock).
    pub fn repo(&self) -> &Repo {
        &self.repo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{self, CreateOptions, NoProgress};
    use crate::source::SourceSpec;

    fn rnd(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn path(v: &mut Vfs, p: &str) -> Attr {
        let mut at = v.attr(ROOT).unwrap();
        for part in p.split('/').filter(|s| !s.is_empty()) {
            at = v
                .lookup(at.ino, part.as_bytes())
                .unwrap()
                .unwrap_or_else(|| panic!("{p}: no {part}"));
        }
        at
    }

    #[test]
    fn browse_and_read_at_any_offset() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        let big = rnd(3 << 20, 7);
        std::fs::write(src.join("d/big.bin"), &big).unwrap();
        std::fs::write(src.join("small.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let (_b, mut repo) = backup::tests::repo(t.path());
        let mk = |tags: Vec<String>, host: &str| CreateOptions {
            sources: vec![SourceSpec::Path(src.clone())],
            tags,
            host: Some(host.into()),
            ..Default::default()
        };
        let first =
            backup::create(&mut repo, &mk(vec!["db".into()], "alpha"), &NoProgress).unwrap();
        let mut v = Vfs::new(repo, 1 << 20).unwrap();

        let names = |v: &mut Vfs, ino| -> Vec<String> {
            v.readdir(ino)
                .unwrap()
                .into_iter()
                .map(|(n, _)| String::from_utf8(n).unwrap())
                .collect()
        };
        assert_eq!(names(&mut v, ROOT), ["hosts", "snapshots", "tags"]);
        let snaps = path(&mut v, "snapshots");
        let listed = names(&mut v, snaps.ino);
        let dir = format!(
            "{}-{}",
            first.snapshot.timestamp().format("%Y-%m-%dT%H:%M:%SZ"),
            first.id.short()
        );
        assert_eq!(listed, [dir.clone(), "latest".to_string()]);
        let latest = path(&mut v, "snapshots/latest");
        assert_eq!(latest.kind, Kind::Symlink);
        assert_eq!(v.readlink(latest.ino).unwrap(), dir.as_bytes());
        let ino = path(&mut v, "hosts").ino;
        assert_eq!(names(&mut v, ino), ["alpha"]);
        let ino = path(&mut v, "tags/db").ino;
        assert_eq!(names(&mut v, ino), std::slice::from_ref(&dir));

        let stored = src.to_str().unwrap().trim_start_matches('/').to_string();
        let f = path(&mut v, &format!("snapshots/{dir}/{stored}/d/big.bin"));
        assert_eq!((f.kind, f.size), (Kind::File, big.len() as u64));
        let same = path(&mut v, &format!("hosts/alpha/{dir}/{stored}/d/big.bin"));
        assert_eq!(same.size, f.size);
        // Random offsets, across chunk boundaries, and the end.
        let mut x = 12345u64;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 20) % big.len() as u64;
            let len = ((x >> 8) % 300_000) as u32 + 1;
            let got = v.read(f.ino, off, len).unwrap();
            let end = (off as usize + len as usize).min(big.len());
            assert!(got == big[off as usize..end], "read at {off} len {len}");
        }
        assert!(v.read(f.ino, big.len() as u64, 10).unwrap().is_empty());
        // A random read decodes only the chunks covering it (no read-ahead).
        v.chunks = ChunkCache {
            max_bytes: 1 << 20,
            bytes: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        };
        v.read(f.ino, 2_000_000, 10).unwrap();
        assert_eq!(
            v.chunks.map.len(),
            1,
            "a 10-byte random read decoded more than its chunk"
        );
        // A whole sequential read through 128 KiB requests.
        let mut all = Vec::new();
        while (all.len() as u64) < f.size {
            all.extend(v.read(f.ino, all.len() as u64, 128 << 10).unwrap());
        }
        assert!(all == big);
        let s = path(&mut v, &format!("snapshots/{dir}/{stored}/small.txt"));
        assert_eq!(v.read(s.ino, 0, 100).unwrap(), b"hello");
        let l = path(&mut v, &format!("snapshots/{dir}/{stored}/link"));
        assert_eq!(l.kind, Kind::Symlink);
        assert_eq!(v.readlink(l.ino).unwrap(), b"/etc/passwd");
        assert!(v.lookup(ROOT, b"nope").unwrap().is_none());
        assert!(v.read(ROOT, 0, 1).is_err());

        // A new snapshot appears once the list is older than REFRESH; latest follows it.
        let second = backup::create(&mut v.repo, &mk(vec![], "beta"), &NoProgress).unwrap();
        v.listed_at = None; // as if REFRESH had passed
        let listed = names(&mut v, snaps.ino);
        assert_eq!(listed.len(), 3, "{listed:?}");
        let dir2 = format!(
            "{}-{}",
            second.snapshot.timestamp().format("%Y-%m-%dT%H:%M:%SZ"),
            second.id.short()
        );
        assert_eq!(v.readlink(latest.ino).unwrap(), dir2.as_bytes());
        let ino = path(&mut v, "hosts").ino;
        assert_eq!(names(&mut v, ino), ["alpha", "beta"]);
        // The file seen before keeps its inode and content.
        assert!(v.read(f.ino, 0, 16).unwrap() == big[..16]);
    }
}
