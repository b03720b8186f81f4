//! Content-defined chunking: FastCDC (2020) over any reader, with a keyed gear table.
//!
//! The `fastcdc` crate's `cut_gear` finds each cut point; this module owns the streaming loop so
//! that the gear table can be a full 256-entry table derived from the repository key (the crate's
//! own seed only XORs one constant into its public table), and so the read buffer is compacted
//! rarely instead of after every chunk. Memory is bounded: one buffer of `4 × max_size`
//! (at least 16 MiB), whatever the input length.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, select_masks};

use crate::error::{Error, Result};

/// Chunk-size parameters (bytes). Stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk, except the last one of a stream.
    pub min_size: u32,
    /// Target average.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl ChunkerParams {
    /// Checks the limits FastCDC 2020 supports.
    pub fn validate(&self) -> Result<()> {
        let (min, avg, max) = (self.min_size, self.avg_size, self.max_size);
        let even = min % 2 == 0 && avg % 2 == 0 && max % 2 == 0;
        let in_range = (64..=1_048_576).contains(&min)
            && (256..=4_194_304).contains(&avg)
            && (1024..=16_777_216).contains(&max)
            && min <= avg
            && avg <= max;
        if !in_range || !even {
            return Err(Error::InvalidArgument(format!(
                "chunker sizes min {min}, avg {avg}, max {max} are out of range \
                 (even numbers, 64 ≤ min ≤ 1 MiB, 256 ≤ avg ≤ 4 MiB, 1 KiB ≤ max ≤ 16 MiB, min ≤ avg ≤ max)"
            )));
        }
        Ok(())
    }
}

/// Precomputed tables and masks for one repository.
#[derive(Clone)]
pub struct ChunkerSpec {
    params: ChunkerParams,
    gear: Vec<u64>,
    gear_ls: Vec<u64>,
    mask_s: u64,
    mask_l: u64,
}

impl ChunkerSpec {
    /// Builds the spec from validated parameters and a 256-entry gear table.
    pub fn new(params: ChunkerParams, gear: Vec<u64>) -> Result<Self> {
        params.validate()?;
        if gear.len() != 256 {
            return Err(Error::InvalidArgument(
                "gear table must have 256 entries".into(),
            ));
        }
        let gear_ls = gear.iter().map(|g| g << 1).collect();
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Ok(ChunkerSpec {
            params,
            gear,
            gear_ls,
            mask_s,
            mask_l,
        })
    }

    /// The parameters.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`; `data` must hold at least `max_size` bytes unless it
    /// is the end of the stream. Returns 0 only for empty input.
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = self.params;
        let (_, n) = cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    /// A streaming chunker over `reader`.
    pub fn chunker<R: Read>(&self, reader: R) -> Chunker<'_, R> {
        let cap = (4 * self.params.max_size as usize).max(16 << 20);
        Chunker {
            spec: self,
            reader,
            buf: Vec::new(),
            cap,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// The chunks of a byte slice held in memory (e.g. a mapped file), borrowed, not copied. Cuts
/// exactly where [`ChunkerSpec::chunker`] cuts the same bytes.
pub struct Split<'a> {
    spec: &'a ChunkerSpec,
    rest: &'a [u8],
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let n = self.spec.cut(self.rest).max(1).min(self.rest.len());
        let (chunk, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(chunk)
    }
}

impl ChunkerSpec {
    /// Cuts `data` into chunks without copying it.
    pub fn split<'a>(&'a self, data: &'a [u8]) -> Split<'a> {
        Split {
            spec: self,
            rest: data,
        }
    }

    /// Hands each chunk of `data` to `each`, in order, cut exactly where [`ChunkerSpec::split`]
    /// cuts, with a helper thread cutting the second half ahead while this thread cuts the
    /// first. Stops early, returning false, when `each` does. Inputs under
    /// [`TWO_THREAD_MIN`] are cut on this thread alone.
    ///
    /// A cut depends only on the bytes after the previous cut, so once this thread's chain of
    /// cuts lands on one of the helper's (which started at the middle as if a cut were there),
    /// every later cut is the helper's too; until then this thread keeps cutting itself, to the
    /// end if need be. `release(offset, len)` is called by the helper for bytes it has cut past,
    /// so a mapped input's pages need not stay mapped for it.
    pub fn split_two_threads<'a>(
        &self,
        data: &'a [u8],
        release: &(dyn Fn(usize, usize) + Sync),
        each: &mut dyn FnMut(&'a [u8]) -> bool,
    ) -> bool {
        let mid = if data.len() < TWO_THREAD_MIN {
            data.len()
        } else {
            data.len() / 2
        };
        self.split_two_threads_at(data, mid, release, each)
    }

    fn split_two_threads_at<'a>(
        &self,
        data: &'a [u8],
        mid: usize,
        release: &(dyn Fn(usize, usize) + Sync),
        each: &mut dyn FnMut(&'a [u8]) -> bool,
    ) -> bool {
        std::thread::scope(|scope| {
            let helper = (mid < data.len()).then(|| {
                std::thread::Builder::new()
                    .name("tresor-cut".into())
                    .spawn_scoped(scope, || {
                        let (mut at, mut released) = (mid, mid);
                        let mut ends = Vec::new();
                        for c in self.split(&data[mid..]) {
                            at += c.len();
                            ends.push(at);
                            if at - released >= HELPER_RELEASE_BYTES {
                                release(released, at - released);
                                released = at;
                            }
                        }
                        ends
                    })
            });
            let mut helper = helper.and_then(|h| h.ok());
            let mut ends: Option<Vec<usize>> = None;
            let mut at = 0;
            while at < data.len() {
                let n = self.cut(&data[at..]).max(1).min(data.len() - at);
                if !each(&data[at..at + n]) {
                    return false;
                }
                at += n;
                if at < mid {
                    continue;
                }
                // A helper that could not start or that panicked leaves this thread to cut alone.
                let ends = ends.get_or_insert_with(|| {
                    helper
                        .take()
                        .and_then(|h| h.join().ok())
                        .unwrap_or_default()
                });
                if let Ok(k) = ends.binary_search(&at) {
                    for &end in &ends[k + 1..] {
                        if !each(&data[at..end]) {
                            return false;
                        }
                        at = end;
                    }
                    return true;
                }
            }
            true
        })
    }
}

/// Inputs at least this long are cut on two threads ([`ChunkerSpec::split_two_threads`]).
pub const TWO_THREAD_MIN: usize = 64 << 20;

/// The helper of [`ChunkerSpec::split_two_threads`] releases what it has cut past in steps of
/// this many bytes.
const HELPER_RELEASE_BYTES: usize = 4 << 20;

/// Iterates over the chunks of a reader. Each item is an owned chunk or the reader's error.
pub struct Chunker<'a, R> {
    spec: &'a ChunkerSpec,
    reader: R,
    /// Grows on demand up to `cap`, so a small file costs a small buffer.
    buf: Vec<u8>,
    cap: usize,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunker<'_, R> {
    fn fill(&mut self) -> io::Result<()> {
        let need = self.spec.params.max_size as usize;
        if self.eof || self.end - self.start >= need {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.cap {
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).clamp(64 << 10, self.cap);
                self.buf.resize(grown, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, `Ok(None)` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.fill()?;
        let window = &self.buf[self.start..self.end];
        if window.is_empty() {
            return Ok(None);
        }
        let n = self.spec.cut(window).max(1).min(window.len());
        let chunk = window[..n].to_vec();
        self.start += n;
        Ok(Some(chunk))
    }
}

impl<R: Read> Iterator for Chunker<'_, R> {
    type Item = io::Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u8) -> ChunkerSpec {
        let key = crate::format::crypto::MasterKey::from_secret([seed; 32]);
        let p = ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        };
        ChunkerSpec::new(p, key.gear_table()).unwrap()
    }

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn lengths(s: &ChunkerSpec, d: &[u8]) -> Vec<usize> {
        s.chunker(d).map(|c| c.unwrap().len()).collect()
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let s = spec(1);
        let d = data(1 << 20);
        let chunks: Vec<Vec<u8>> = s.chunker(&d[..]).map(|c| c.unwrap()).collect();
        assert_eq!(chunks.concat(), d);
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.len() >= 2048 && c.len() <= 32768, "{}", c.len());
        }
        assert!(chunks.len() > 40 && chunks.len() < 400, "{}", chunks.len());
    }

    #[test]
    fn split_in_memory_cuts_where_the_stream_chunker_cuts() {
        // A mapped stdin and a piped one must give the same chunks, or they would not dedup.
        let s = spec(4);
        for n in [0, 1, 2047, 100_000, 1 << 20] {
            let d = data(n);
            let split: Vec<&[u8]> = s.split(&d).collect();
            let streamed: Vec<Vec<u8>> = s.chunker(&d[..]).map(|c| c.unwrap()).collect();
            assert_eq!(split, streamed, "{n} bytes");
        }
    }

    #[test]
    fn two_threads_cut_where_one_cuts() {
        // Random bytes and repetitive text (whose cuts fall on few candidates), split at
        // several middles: the chunks must be the very same as one thread's.
        let s = spec(5);
        let text: Vec<u8> = (0..60_000)
            .flat_map(|i| format!("{i}\t1\t0\t{:40}\n", "").into_bytes())
            .collect();
        for d in [data(3 << 20), text] {
            let one: Vec<&[u8]> = s.split(&d).collect();
            for mid in [1, 4096, d.len() / 3, d.len() / 2, d.len() - 1] {
                let mut two: Vec<&[u8]> = Vec::new();
                let released = std::sync::Mutex::new(0usize);
                let release = |_: usize, n: usize| {
                    if let Ok(mut r) = released.lock() {
                        *r += n;
                    }
                };
                let done = s.split_two_threads_at(&d, mid, &release, &mut |c| {
                    two.push(c);
                    true
                });
                assert!(done);
                assert_eq!(two.len(), one.len(), "mid {mid}");
                assert!(two == one, "mid {mid}");
            }
            // Stopping early stops.
            let mut n = 0;
            assert!(
                !s.split_two_threads_at(&d, d.len() / 2, &|_, _| {}, &mut |_| {
                    n += 1;
                    n < 3
                })
            );
            assert_eq!(n, 3);
        }
    }

    #[test]
    fn deterministic_per_seed_and_different_across_seeds() {
        let d = data(1 << 20);
        assert_eq!(lengths(&spec(1), &d), lengths(&spec(1), &d));
        assert_ne!(lengths(&spec(1), &d), lengths(&spec(2), &d));
    }

    #[test]
    fn boundaries_resynchronise_after_an_insertion() {
        let s = spec(3);
        let d = data(1 << 20);
        let mut e = d.clone();
        e.splice(1000..1000, b"inserted bytes".iter().copied());
        let a: std::collections::HashSet<Vec<u8>> = s.chunker(&d[..]).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = s.chunker(&e[..]).map(|c| c.unwrap()).collect();
        let shared = b.iter().filter(|c| a.contains(*c)).count();
        assert!(
            shared + 3 >= b.len(),
            "only {shared} of {} chunks shared",
            b.len()
        );
    }

    #[test]
    fn empty_input_gives_no_chunks_and_bad_params_are_refused() {
        assert_eq!(spec(1).chunker(&[][..]).count(), 0);
        let bad = ChunkerParams {
            min_size: 4096,
            avg_size: 1024,
            max_size: 8192,
        };
        assert!(bad.validate().is_err());
    }
}
