//! [`verify_restore`]: re-reads restored regular files and compares them with the snapshot,
//! hashing each chunk's range with the repository key (no pack reads).

#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::paths::{DirAnchors, open_nofollow};
use super::visit::{Visitor, start, walk};
use super::{GROUP_BYTES, GROUP_FILES, Mismatch, RestoreOptions, VerifyReport};
use crate::error::{Error, Result};
use crate::format::crypto::MasterKey;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentRef, Node, NodeKind};
use crate::repo::Repo;
use crate::restore::selection::Selection;

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
    use std::ffi::OsStr;

    use super::*;
    use crate::backup::tests::repo;
    use crate::backup::{CreateOptions, NoProgress, create};
    use crate::restore::restore_to_dir;
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
}
