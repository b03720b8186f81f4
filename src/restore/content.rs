//! File content out of the repository: the batched read pipeline ([`write_content`]), one file
//! of a snapshot to a writer ([`restore_to_writer`]), and [`HoleWriter`], which turns all-zero
//! blocks into holes.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::BATCH_BYTES;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{ContentRef, Node, NodeKind, Tree};
use crate::repo::Repo;
use crate::repo::walk::{Resolved, resolve};

/// Runs of zero bytes aligned to this block size become holes.
const HOLE_BLOCK: u64 = 4096;

/// Writes a file's content to `out`: batch by batch, each read with coalesced ranged reads in
/// parallel ([`crate::repo::BlobReader::read_many`]) while the previous batch is written.
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
        let chunks = reader.read_many(&located)?;
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
            let decoded: Result<Vec<Vec<u8>>> = located.and_then(|l| reader.read_many(&l));
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;

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
