//! Copy scripts: a chunk described as copies from a base chunk and literal bytes.
//!
//! This module owns the script format of delta blobs (docs/design.md §4.1) and the matcher that
//! writes scripts. It knows nothing of keys, ids or zstd: the codec compresses a script and
//! seals it, and hands the decompressed script back to [`apply`].
//!
//! A script is `ops_len (varint) ‖ ops ‖ literals`. `ops` is a sequence of steps, each
//! `literal_len (varint)` optionally followed by `offset (zigzag varint) ‖ copy_len (varint)`:
//! append the next `literal_len` bytes of `literals`, then copy `copy_len` bytes of the base
//! from `offset` bytes after the end of the previous copy (from byte 0 for the first). The last
//! step has no copy part; `ops` ends exactly there. Every copy is at least [`MIN_COPY`] bytes.
//!
//! The matcher is built for a chunk and its previous version: they mostly line up, with rows
//! removed, inserted or rewritten in between. It walks the chunk, first trying to continue
//! at the base position that the last copy lined up with, then a sparse index of the base
//! (one position in [`STEP`]), and after a difference a short search ahead in the base for
//! the bytes around it. Its cost is a memory-speed comparison where the two agree, plus a
//! table probe per byte where they do not — no full index of the base, which is what makes a
//! general-purpose compressor with the base as dictionary expensive here.

/// Shortest copy a script may hold: shorter ones cost more script than literal bytes.
pub const MIN_COPY: usize = 16;

/// One base position in `STEP` is indexed. After a shift the chunk lines up with an indexed
/// position within `STEP` bytes. Day 1 of the dump corpus against day 0: 16 gives 8.0 MB of
/// deltas, 32 gives 8.6 MB, 64 gives 9.3 MB; the time differs less than run-to-run noise.
const STEP: usize = 32;

/// How far past the lined-up position a resynchronisation looks (see `encode`): a few rows.
/// Day 1 of the dump corpus: 8.8 MB of deltas without it, 6.5 MB with 256, 6.3 MB with 512 or
/// 1024.
const RESYNC_WINDOW: usize = 512;

/// A match at least this long is taken without looking for a better one.
const LONG_MATCH: usize = 256;

/// Longest script that can describe a chunk of `raw_len` bytes (at most
/// [`crate::format::MAX_BLOB_LEN`]): literals are at most the chunk, and each step but the last
/// yields at least [`MIN_COPY`] bytes from three numbers below 2^28 (4 varint bytes each).
/// Decoders inflate no more than this.
pub fn max_script_len(raw_len: usize) -> usize {
    raw_len + (raw_len / MIN_COPY + 1) * 12 + 10
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Index entries: a base position (below 2^24, [`crate::format::MAX_BLOB_LEN`]) in the low
/// bits, 8 more bits of the word's hash in the high ones, so that most probes that would miss
/// are settled without touching the base.
const POS_MASK: u32 = (1 << 24) - 1;
const EMPTY: u32 = u32::MAX;

/// The index slot of an 8-byte word and the check bits stored with its position.
fn slot(word: u64, bits: u32) -> (usize, u32) {
    let h = word.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> (64 - bits)) as usize, (h as u32) & !POS_MASK)
}

/// How many leading bytes `a` and `b` share.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = read_u64(a, i) ^ read_u64(b, i);
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A run of bytes the target shares with the base.
#[derive(Clone, Copy)]
struct Match {
    base: usize,
    target: usize,
    len: usize,
}

impl Match {
    /// The match through `base[b]` and `target[t]` (whose first 8 bytes agree), extended
    /// forward as far as they agree and backward down to `target[floor]`.
    fn extend(base: &[u8], target: &[u8], b: usize, t: usize, floor: usize) -> Match {
        let forward = common_prefix(&target[t..], &base[b..]);
        let mut back = 0;
        while t - back > floor && b - back > 0 && target[t - back - 1] == base[b - back - 1] {
            back += 1;
        }
        Match {
            base: b - back,
            target: t - back,
            len: forward + back,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The script that turns `base` into `target`.
pub fn encode(base: &[u8], target: &[u8]) -> Vec<u8> {
    let entries = base.len() / STEP + 1;
    let bits = (usize::BITS - entries.leading_zeros()).clamp(8, 24);
    let mut table = vec![EMPTY; 1 << bits];
    let mut p = 0;
    while p + 8 <= base.len() && p <= POS_MASK as usize {
        let (at, check) = slot(read_u64(base, p), bits);
        table[at] = check | p as u32;
        p += STEP;
    }

    let mut ops = Vec::with_capacity(target.len() / 256 + 16);
    let mut literals = Vec::new();
    // `lit_from`: first target byte not yet in the script; `prev_end`: base position after
    // the last copy; `i`: where the next match is looked for.
    let (mut i, mut lit_from, mut prev_end) = (0usize, 0usize, 0usize);
    while i + 8 <= target.len() {
        let word = read_u64(target, i);
        // First choice: the base lined up with the last copy (a same-length rewrite in
        // between); else the index.
        let aligned = prev_end + (i - lit_from);
        let mut best: Option<Match> = None;
        if aligned + 8 <= base.len() && read_u64(base, aligned) == word {
            best = Some(Match::extend(base, target, aligned, i, lit_from));
        } else {
            let (at, check) = slot(word, bits);
            let e = table[at];
            let c = (e & POS_MASK) as usize;
            if e != EMPTY && e & !POS_MASK == check && read_u64(base, c) == word {
                best = Some(Match::extend(base, target, c, i, lit_from));
            }
        }
        // Right after a copy ended at a difference, without a long match: the base may have
        // bytes the chunk lost (a removed row). Look for the 16 bytes around the difference a
        // little further on in the base. Without this, a table whose rows differ only in
        // their keys gets lined up one row off after a removed row, and costs a copy per row.
        if i == lit_from && i >= 8 && best.is_none_or(|b| b.len < LONG_MATCH) {
            let lo = aligned.min(base.len()).saturating_sub(8);
            let hi = (aligned + RESYNC_WINDOW).min(base.len());
            let finder = memchr::memmem::FinderBuilder::new()
                .prefilter(memchr::memmem::Prefilter::None)
                .build_forward(&target[i - 8..i + 8]);
            if let Some(q) = finder.find(&base[lo..hi]) {
                let other = Match::extend(base, target, lo + q + 8, i, lit_from);
                if best.is_none_or(|b| other.len > b.len) {
                    best = Some(other);
                }
            }
        }
        if let Some(m) = best.filter(|m| m.len >= MIN_COPY) {
            put_varint(&mut ops, (m.target - lit_from) as u64);
            literals.extend_from_slice(&target[lit_from..m.target]);
            put_varint(&mut ops, zigzag(m.base as i64 - prev_end as i64));
            put_varint(&mut ops, m.len as u64);
            i = m.target + m.len;
            lit_from = i;
            prev_end = m.base + m.len;
            continue;
        }
        i += 1;
    }
    put_varint(&mut ops, (target.len() - lit_from) as u64);
    literals.extend_from_slice(&target[lit_from..]);

    let mut script = Vec::with_capacity(ops.len() + literals.len() + 10);
    put_varint(&mut script, ops.len() as u64);
    script.extend_from_slice(&ops);
    script.extend_from_slice(&literals);
    script
}

/// What is wrong with a script that [`apply`] refuses.
pub type ScriptError = &'static str;

type Result<T> = std::result::Result<T, ScriptError>;

fn bad(what: &'static str) -> ScriptError {
    what
}

/// Reads the numbers of a script's steps (also for [`crate::format::chain`], which composes
/// scripts with the same checks).
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl Reader<'_> {
    pub(crate) fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| bad("truncated step"))?;
            self.at += 1;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(bad("number overflows"));
            }
            v |= part << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("number overflows"))
    }

    pub(crate) fn size(&mut self) -> Result<usize> {
        usize::try_from(self.varint()?).map_err(|_| bad("size overflows"))
    }

    /// The copy part of a step after a copy that ended at base position `prev_end`: where the
    /// copy starts in the base and how long it is (at least [`MIN_COPY`]).
    pub(crate) fn copy(&mut self, prev_end: usize) -> Result<(usize, usize)> {
        let offset = self.varint()?;
        let offset = (offset >> 1) as i64 ^ -((offset & 1) as i64);
        let len = self.size()?;
        if len < MIN_COPY {
            return Err(bad("copy shorter than the minimum"));
        }
        let from = i64::try_from(prev_end)
            .ok()
            .and_then(|p| p.checked_add(offset))
            .and_then(|f| usize::try_from(f).ok())
            .ok_or_else(|| bad("copy before the base"))?;
        Ok((from, len))
    }
}

/// A script cut into its steps and its literals.
pub(crate) fn split(script: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut head = Reader {
        bytes: script,
        at: 0,
    };
    let ops_len = head.size()?;
    let ops_end = head
        .at
        .checked_add(ops_len)
        .filter(|&e| e <= script.len())
        .ok_or_else(|| bad("steps run past the end"))?;
    Ok((&script[head.at..ops_end], &script[ops_end..]))
}

/// Runs `script` against `base`, giving exactly `raw_len` bytes or an error (never more
/// memory than `raw_len`, whatever the script says).
pub fn apply(base: &[u8], script: &[u8], raw_len: usize) -> Result<Vec<u8>> {
    let (steps, literals) = split(script)?;
    let mut ops = Reader {
        bytes: steps,
        at: 0,
    };
    let mut lit_at = 0usize;
    let mut prev_end = 0usize;
    let mut out = Vec::with_capacity(raw_len);
    loop {
        let n = ops.size()?;
        let lit = lit_at
            .checked_add(n)
            .and_then(|e| literals.get(lit_at..e))
            .ok_or_else(|| bad("literals run past the end"))?;
        if out.len() + lit.len() > raw_len {
            return Err(bad("longer than the chunk"));
        }
        out.extend_from_slice(lit);
        lit_at += n;
        if ops.done() {
            break;
        }
        let (from, len) = ops.copy(prev_end)?;
        let src = from
            .checked_add(len)
            .and_then(|e| base.get(from..e))
            .ok_or_else(|| bad("copy past the base"))?;
        if out.len() + len > raw_len {
            return Err(bad("longer than the chunk"));
        }
        out.extend_from_slice(src);
        prev_end = from + len;
    }
    if lit_at != literals.len() {
        return Err(bad("unused literals"));
    }
    if out.len() != raw_len {
        return Err(bad("shorter than the chunk"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, salt: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n as u64 {
            out.extend_from_slice(
                format!("{i}\t{}\tshipped\t{{\"qty\": {}}}\n", i * 7 + salt, i % 13).as_bytes(),
            );
        }
        out
    }

    fn round_trip(base: &[u8], target: &[u8]) -> usize {
        let s = encode(base, target);
        assert!(s.len() <= max_script_len(target.len()));
        assert_eq!(apply(base, &s, target.len()).unwrap(), target);
        s.len()
    }

    #[test]
    fn edits_cost_about_what_changed() {
        let base = rows(20_000, 0);
        // Rows removed, one inserted, one rewritten in place, and new rows at the end.
        let mut target = base.clone();
        target.drain(100_000..100_050);
        target.splice(
            200_000..200_000,
            b"an inserted row of forty-two bytes here!\n".to_vec(),
        );
        target[300_000..300_004].copy_from_slice(b"XXXX");
        target.extend_from_slice(&rows(50, 99));
        let n = round_trip(&base, &target);
        assert!(n < 3_000, "{n}");
        assert!(round_trip(&base, &base) < 20);
    }

    #[test]
    fn a_removed_row_in_padded_rows_costs_one_copy_not_one_per_row() {
        // Rows that differ only in their key: after the removed row, the base lined up with
        // the last copy is one row off and matches all but a digit of every row.
        let row = |i: usize| format!("{i}\t1\t0\t{:84}\n", "").into_bytes();
        let base: Vec<u8> = (100_000..120_000).flat_map(row).collect();
        let target: Vec<u8> = (100_000..120_000)
            .filter(|&i| i != 100_050)
            .flat_map(row)
            .collect();
        let n = round_trip(&base, &target);
        assert!(n < 64, "{n}");
    }

    #[test]
    fn unrelated_short_and_empty_inputs() {
        let base = rows(1000, 0);
        let mut noise = vec![0u8; 5000];
        crate::format::crypto::random_bytes(&mut noise).unwrap();
        assert!(round_trip(&base, &noise) > noise.len());
        for t in [&b""[..], b"abc", &base[..7], &base[..100]] {
            round_trip(&base, t);
            round_trip(b"", t);
            round_trip(&base[..5], t);
        }
    }

    #[test]
    fn hostile_scripts_are_rejected() {
        let base = rows(100, 0);
        let target = [&base[500..900], b"new bytes", &base[..300]].concat();
        let s = encode(&base, &target);
        let n = target.len();
        assert!(apply(&base, &s, n - 1).is_err());
        assert!(apply(&base, &s, n + 1).is_err());
        assert!(apply(&base[..600], &s, n).is_err());
        assert!(apply(&base, &s[..s.len() - 1], n).is_err());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x55;
            if let Ok(out) = apply(&base, &t, n) {
                assert_eq!(out.len(), n);
            }
        }
        // A copy shorter than the minimum, a copy before the base, an endless number.
        let mut short = vec![];
        for v in [0, 0, 4, 0] {
            put_varint(&mut short, v);
        }
        let mut s = vec![short.len() as u8];
        s.extend_from_slice(&short);
        assert!(apply(&base, &s, 4).is_err());
        let mut before = vec![];
        for v in [0, zigzag(-1), 16, 0] {
            put_varint(&mut before, v);
        }
        let mut s = vec![before.len() as u8];
        s.extend_from_slice(&before);
        assert!(apply(&base, &s, 16).is_err());
        assert!(apply(&base, &[0xff; 12], 1).is_err());
    }
}
