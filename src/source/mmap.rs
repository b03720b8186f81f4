//! Memory-mapped standard input: mapping it, releasing the page mappings of ranges already
//! chunked, and the SIGBUS guard that turns a truncation under the mapping into a clean exit.
//! The only module of `source` that holds `unsafe` code; what it offers are safe functions
//! whose comments say why each `unsafe` block is sound.

use std::os::fd::AsFd;

/// Standard input mapped into memory: a shared, read-only mapping of a regular file, read as
/// its bytes. Only [`map_stdin`] makes one, which is what lets [`release_mapped`] be safe.
pub(super) struct MappedStdin(memmap2::Mmap);

impl std::ops::Deref for MappedStdin {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Standard input mapped into memory when it is a regular file (`tresor … < dump.sql`), from
/// its current offset to its end. Chunking the page cache in place spares the copy `read`
/// makes, which under a busy pipeline costs more CPU than cutting the chunks (see
/// docs/performance.md). `None` (read it instead) for pipes, terminals, empty files and any
/// failure. A file truncated while mapped would raise SIGBUS: [`guard_sigbus`] turns that into
/// a clear message and exit 1 before any snapshot is written.
#[allow(unsafe_code)]
pub(super) fn map_stdin() -> Option<MappedStdin> {
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
    Some(MappedStdin(map))
}

/// Drops the page mappings of `len` bytes at `offset` of a mapped input that is done with, so
/// they leave the resident set. The page cache keeps the data. A range that does not lie
/// within the mapping is ignored (memmap2 checks `offset` and `len` each against the mapping's
/// length, not their sum, so the advice could otherwise reach whatever is mapped after it).
#[allow(unsafe_code)]
pub(super) fn release_mapped(map: &MappedStdin, offset: usize, len: usize) {
    if offset.checked_add(len).is_none_or(|end| end > map.0.len()) {
        return;
    }
    // SAFETY: the range lies within the mapping (checked above), and a `MappedStdin` is always
    // a shared, read-only file mapping (`map_stdin` makes it with `MmapOptions::map`).
    // MADV_DONTNEED on such a mapping only drops page-table entries: a later access faults the
    // same bytes back in from the page cache, so no borrow of the range, alive or not, reads
    // other bytes than it would have (a private or anonymous mapping would have its pages reset).
    let _ = unsafe {
        map.0
            .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
    };
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A mapping like the one `map_stdin` makes, of a file the test owns.
    #[allow(unsafe_code)]
    fn map_file(f: &std::fs::File) -> MappedStdin {
        // SAFETY: the test's own temporary file, not changed while it is mapped.
        MappedStdin(unsafe { memmap2::MmapOptions::new().map(f) }.unwrap())
    }

    #[test]
    fn released_ranges_read_back_the_same_bytes_and_stray_ranges_are_ignored() {
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let map = map_file(&f);
        release_mapped(&map, 0, map.len());
        assert_eq!(&map[..], &data[..]);
        release_mapped(&map, 4096, map.len()); // runs past the end
        release_mapped(&map, usize::MAX, 2); // overflows
        release_mapped(&map, map.len(), 0);
        assert_eq!(&map[..], &data[..]);
    }
}
