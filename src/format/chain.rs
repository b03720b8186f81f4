//! Delta chains: the top version of a chain of copy scripts, decoded in one pass.
//!
//! Version k of a chunk may be stored as a copy script ([`crate::format::delta`]) against
//! version k-1, and so on down to a whole chunk, the root. Running [`delta::apply`](crate::format::delta::apply) once per
//! level costs a full-chunk copy per level. This module owns the decoder that composes the
//! scripts instead: [`apply_chain`] keeps the current version as a list of segments, each a run
//! of bytes of the root or of one script's literals, maps every copy of the next script through
//! that list (a binary search, then whole segments), and copies bytes only once, at the end.
//!
//! It accepts exactly what [`delta::apply`](crate::format::delta::apply) applied level by level accepts, with the same error
//! for the same first bad level: every check of a script depends only on the script, the length
//! of the version below it and the raw length it claims, never on the bytes, so the checks are
//! made on the segment list just as `apply` makes them on bytes.
//!
//! Bounds, whatever the scripts say. Work: each step of a script costs a binary search plus the
//! segments it yields, so a level costs about the length of the segment list, and a long chain
//! the sum of those lengths. After a level (but the last) the list is flattened (the current
//! version materialised as a new root, one copy) once the segments composed since the last
//! flattening add up to more than one per [`BYTES_PER_SEGMENT`] bytes of the version: moving a
//! segment costs about what copying that many bytes does, so composing never costs much more
//! than the copies `apply` would make, and a realistic chain (a few rows changed per level) is
//! flattened once every dozen levels or so. A script whose composition would yield more than
//! one segment per [`HARD_BYTES_PER_SEGMENT`] bytes is stopped and composed again against the
//! flattened version below it. Memory: the scripts and the root are borrowed; beyond them, a
//! segment list of at most a few times the largest version's length (24 bytes a segment), one
//! flattened version and the output. Like `apply`, the lengths a chain claims are trusted to be
//! bounded by the caller ([`crate::format::MAX_BLOB_LEN`]); no version is materialised before
//! its script is checked.

use crate::format::delta::{Reader, ScriptError, split};

type Result<T> = std::result::Result<T, ScriptError>;

fn bad(what: &'static str) -> ScriptError {
    what
}

/// After a level (but the last), the segment list is flattened once the segments composed
/// since the last flattening (the list's length at each level, summed) pass one per this many
/// bytes of the version, plus [`SEGMENT_SLACK`]. The list itself is never longer than that sum.
const BYTES_PER_SEGMENT: usize = 32;

/// While a script is composed, more segments than one per this many bytes of its version (plus
/// [`SEGMENT_SLACK`]) stop the composition: the version below is flattened and the script
/// composed again. Against a flat version a script yields at most one segment per copy and one
/// per literal run, at most one per 8 bytes ([`delta::MIN_COPY`](crate::format::delta::MIN_COPY) is 16), so the second try
/// finishes.
const HARD_BYTES_PER_SEGMENT: usize = 8;

/// Segments always allowed, so that small chunks are not flattened for nothing.
const SEGMENT_SLACK: usize = 64;

/// Source of the bytes of a segment: the current root, or the literals of script `k - 1`.
const ROOT: usize = 0;

/// A run of the version's bytes: those up to output offset `end` (from the end of the previous
/// segment), which are the bytes of source `src` up to offset `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    end: usize,
    src: usize,
    at: usize,
}

/// A version as segments. No two neighbours are contiguous in one source (they are merged).
#[derive(Default)]
struct Segments(Vec<Seg>);

impl Segments {
    /// The whole of a root of `len` bytes.
    fn whole(len: usize) -> Segments {
        let mut s = Segments(Vec::new());
        s.push(ROOT, 0, len);
        s
    }

    fn len(&self) -> usize {
        self.0.last().map_or(0, |s| s.end)
    }

    /// Appends `len` bytes of `src` from offset `from`, merged into the last segment when they
    /// follow it.
    fn push(&mut self, src: usize, from: usize, len: usize) {
        if len == 0 {
            return;
        }
        let end = self.len() + len;
        match self.0.last_mut() {
            Some(last) if last.src == src && last.at == from => {
                last.end = end;
                last.at = from + len;
            }
            _ => self.0.push(Seg {
                end,
                src,
                at: from + len,
            }),
        }
    }

    /// Appends bytes `from..to` of the version `base` describes (`to <= base.len()`). `hint` is
    /// where the search for the range's first segment starts, and is left at it: a script's
    /// copies mostly move forward through the base a little at a time, so each search is a few
    /// steps instead of a binary search of the whole list.
    fn copy(&mut self, base: &Segments, from: usize, to: usize, hint: &mut usize) {
        let segs = &base.0;
        // First and last segment holding a byte of the range.
        let first = partition_near(segs, *hint, |s| s.end <= from);
        *hint = first;
        let last = partition_near(segs, first, |s| s.end < to);
        let (Some(a), Some(z)) = (segs.get(first), segs.get(last)) else {
            return; // not reached: the range lies inside `base`
        };
        if first == last {
            self.push(a.src, a.at - (a.end - from), to - from);
            return;
        }
        let out_start = self.len();
        self.push(a.src, a.at - (a.end - from), a.end - from);
        // Whole segments in between: already merged with each other, moved as they are.
        self.0.extend(segs[first + 1..last].iter().map(|s| Seg {
            end: s.end - from + out_start,
            ..*s
        }));
        let z_start = segs[last - 1].end;
        self.push(z.src, z.at - (z.end - z_start), to - z_start);
    }

    /// The bytes, given the current root and the literals of every script.
    fn materialise(&self, root: &[u8], literals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        let mut start = 0;
        for s in &self.0 {
            let src = if s.src == ROOT {
                root
            } else {
                literals[s.src - 1]
            };
            out.extend_from_slice(&src[s.at - (s.end - start)..s.at]);
            start = s.end;
        }
        out
    }
}

/// `segs.partition_point(pred)` (`pred` true on a prefix of `segs`), found by galloping from
/// `hint` in the direction of the answer: O(log d) for an answer `d` segments away.
fn partition_near(segs: &[Seg], hint: usize, pred: impl Fn(&Seg) -> bool) -> usize {
    let n = segs.len();
    let h = hint.min(n);
    if h < n && pred(&segs[h]) {
        // The answer is past `h`.
        let (mut lo, mut step) = (h + 1, 1);
        loop {
            let hi = lo.saturating_add(step).min(n);
            if hi == n || !pred(&segs[hi - 1]) {
                return lo + segs[lo..hi].partition_point(&pred);
            }
            lo = hi;
            step *= 2;
        }
    }
    // The answer is at `h` or before it.
    let (mut hi, mut step) = (h, 1);
    loop {
        let lo = hi.saturating_sub(step);
        if lo == 0 || pred(&segs[lo]) {
            return lo + segs[lo..hi].partition_point(&pred);
        }
        hi = lo;
        step *= 2;
    }
}

/// Composes one script (steps `ops`, literals of `literals_len` bytes in source `src`) with the
/// version `base` describes, into `out`: the version of `raw_len` bytes it makes. Checks what
/// [`delta::apply`](crate::format::delta::apply) checks, in the same order. Stops early with `Ok(false)` once `out` holds
/// more than `cap` segments.
fn compose(
    base: &Segments,
    ops: &[u8],
    src: usize,
    literals_len: usize,
    raw_len: usize,
    cap: usize,
    out: &mut Segments,
) -> Result<bool> {
    let base_len = base.len();
    let mut ops = Reader { bytes: ops, at: 0 };
    let (mut lit_at, mut prev_end, mut made, mut hint) = (0usize, 0usize, 0usize, 0usize);
    let longer = || bad("longer than the chunk");
    loop {
        let n = ops.size()?;
        let lit_end = lit_at
            .checked_add(n)
            .filter(|&e| e <= literals_len)
            .ok_or_else(|| bad("literals run past the end"))?;
        made = made
            .checked_add(n)
            .filter(|&m| m <= raw_len)
            .ok_or_else(longer)?;
        out.push(src, lit_at, n);
        lit_at = lit_end;
        if ops.done() {
            break;
        }
        let (from, len) = ops.copy(prev_end)?;
        let to = from
            .checked_add(len)
            .filter(|&e| e <= base_len)
            .ok_or_else(|| bad("copy past the base"))?;
        made = made
            .checked_add(len)
            .filter(|&m| m <= raw_len)
            .ok_or_else(longer)?;
        out.copy(base, from, to, &mut hint);
        prev_end = to;
        if out.0.len() > cap {
            return Ok(false);
        }
    }
    if lit_at != literals_len {
        return Err(bad("unused literals"));
    }
    if made != raw_len {
        return Err(bad("shorter than the chunk"));
    }
    Ok(true)
}

/// What [`decode`] did besides decoding (for the tests of the bounds).
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    /// Versions materialised before the top one.
    flattened: usize,
    /// Scripts composed a second time, against a flattened version.
    retried: usize,
    /// Most segments a list held.
    peak: usize,
}

/// Decodes the top of a chain: `root` is the whole plaintext of the chain's root; `scripts` are
/// the decompressed copy scripts from the level just above the root up to the wanted version,
/// each with the raw length of the version it produces. Returns the top version's bytes.
///
/// The result, and the error, are those of [`delta::apply`](crate::format::delta::apply) run level by level (the error of
/// the first level it refuses); with no scripts, the root.
pub fn apply_chain(root: &[u8], scripts: &[(&[u8], usize)]) -> Result<Vec<u8>> {
    decode(root, scripts, &mut Stats::default())
}

/// Materialises the version `cur` describes as the new root `flat`, which `cur` then covers.
fn flatten(cur: &mut Segments, flat: &mut Option<Vec<u8>>, root: &[u8], literals: &[&[u8]]) {
    let bytes = cur.materialise(flat.as_deref().unwrap_or(root), literals);
    *cur = Segments::whole(bytes.len());
    *flat = Some(bytes);
}

fn decode(root: &[u8], scripts: &[(&[u8], usize)], stats: &mut Stats) -> Result<Vec<u8>> {
    let mut flat: Option<Vec<u8>> = None;
    let mut cur = Segments::whole(root.len());
    let mut literals: Vec<&[u8]> = Vec::with_capacity(scripts.len());
    // Segments composed since the root or the last flattening.
    let mut work = 0usize;
    for (level, &(script, raw_len)) in scripts.iter().enumerate() {
        let (ops, lits) = split(script)?;
        literals.push(lits);
        let src = level + 1;
        let cap = raw_len / HARD_BYTES_PER_SEGMENT + SEGMENT_SLACK;
        let mut next = Segments(Vec::with_capacity(cur.0.len() + 16));
        let done = compose(&cur, ops, src, lits.len(), raw_len, cap, &mut next)?;
        stats.peak = stats.peak.max(next.0.len());
        work = work.saturating_add(next.0.len());
        if !done {
            // Too many segments: flatten the version below and compose against it, which
            // yields at most one segment per 8 bytes.
            flatten(&mut cur, &mut flat, root, &literals);
            stats.flattened += 1;
            stats.retried += 1;
            next.0.clear();
            compose(&cur, ops, src, lits.len(), raw_len, usize::MAX, &mut next)?;
            stats.peak = stats.peak.max(next.0.len());
            work = next.0.len();
        }
        cur = next;
        let last = level + 1 == scripts.len();
        if !last && work > raw_len / BYTES_PER_SEGMENT + SEGMENT_SLACK {
            flatten(&mut cur, &mut flat, root, &literals);
            stats.flattened += 1;
            work = 0;
        }
    }
    Ok(cur.materialise(flat.as_deref().unwrap_or(root), &literals))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::format::delta;
    use proptest::prelude::*;

    #[test]
    fn the_galloping_search_finds_what_a_binary_search_finds_from_any_hint() {
        for n in 0..40usize {
            let segs: Vec<Seg> = (0..n)
                .map(|i| Seg {
                    end: 3 * i + 2,
                    src: ROOT,
                    at: 0,
                })
                .collect();
            for hint in 0..n + 3 {
                for from in 0..3 * n + 4 {
                    let want = segs.partition_point(|s| s.end <= from);
                    assert_eq!(
                        partition_near(&segs, hint, |s| s.end <= from),
                        want,
                        "{n} segments, hint {hint}, from {from}"
                    );
                }
            }
        }
    }

    /// The reference: one [`delta::apply`](crate::format::delta::apply) per level.
    fn sequential(root: &[u8], scripts: &[(&[u8], usize)]) -> Result<Vec<u8>> {
        let mut v = root.to_vec();
        for &(s, n) in scripts {
            v = delta::apply(&v, s, n)?;
        }
        Ok(v)
    }

    fn refs(chain: &[(Vec<u8>, usize)]) -> Vec<(&[u8], usize)> {
        chain.iter().map(|(s, n)| (&s[..], *n)).collect()
    }

    /// Checks `apply_chain` against the reference; returns its stats.
    fn same(root: &[u8], chain: &[(Vec<u8>, usize)]) -> Stats {
        let scripts = refs(chain);
        let mut stats = Stats::default();
        let got = decode(root, &scripts, &mut stats);
        assert_eq!(got, sequential(root, &scripts));
        stats
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A literal run, then a copy `(offset, len)` or none.
    type Step<'a> = (&'a [u8], Option<(i64, u64)>);

    /// A script from steps `(literal, Some((offset, copy_len)))`, the last without a copy.
    fn script(steps: &[Step<'_>]) -> Vec<u8> {
        let (mut ops, mut lits) = (Vec::new(), Vec::new());
        for (lit, copy) in steps {
            put_varint(&mut ops, lit.len() as u64);
            lits.extend_from_slice(lit);
            if let Some((off, len)) = copy {
                put_varint(&mut ops, ((off << 1) ^ (off >> 63)) as u64);
                put_varint(&mut ops, *len);
            }
        }
        let mut s = Vec::new();
        put_varint(&mut s, ops.len() as u64);
        s.extend_from_slice(&ops);
        s.extend_from_slice(&lits);
        s
    }

    /// Numbered text rows, like a table dump.
    fn rows(n: usize, salt: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                format!("{i}\t{}\tshipped\t{{\"qty\": {}}}\n", i * 7 + salt, i % 13).into_bytes()
            })
            .collect()
    }

    /// A chain of `versions` (root first) made with the matcher.
    fn chain_of(versions: &[Vec<u8>]) -> Vec<(Vec<u8>, usize)> {
        versions
            .windows(2)
            .map(|w| (delta::encode(&w[0], &w[1]), w[1].len()))
            .collect()
    }

    #[test]
    fn no_scripts_give_the_root_and_a_chain_its_top() {
        let root = rows(2000, 0);
        assert_eq!(apply_chain(&root, &[]).unwrap(), root);
        let mut versions = vec![root.clone()];
        for k in 1..20usize {
            let mut v = versions[k - 1].clone();
            let at = (k * 7919) % (v.len() - 200);
            v[at..at + 30].copy_from_slice(&[b'a' + k as u8; 30]);
            v.splice(at / 2..at / 2, rows(3, k * 1000));
            v.drain(at / 3..at / 3 + 50);
            versions.push(v);
        }
        let chain = chain_of(&versions);
        for depth in 1..chain.len() {
            let stats = same(&root, &chain[..depth]);
            assert_eq!(stats.retried, 0, "{stats:?}");
            assert!(stats.flattened <= depth / 8, "{stats:?}");
            assert_eq!(
                apply_chain(&root, &refs(&chain[..depth])).unwrap(),
                versions[depth]
            );
        }
    }

    #[test]
    fn long_chains_are_flattened_now_and_then() {
        // Each level rewrites a few rows: the list grows by a few segments a level and stays
        // far below one per 32 bytes, but composing it again at every level would cost more
        // than copying the version now and then.
        let root = rows(2000, 0);
        let mut versions = vec![root.clone()];
        for k in 1..60usize {
            let mut v = versions[k - 1].clone();
            for e in 0..4 {
                let at = (k * 7919 + e * 15_401) % (v.len() - 40);
                v[at..at + 20].copy_from_slice(&[b'a' + (k % 26) as u8; 20]);
            }
            versions.push(v);
        }
        let chain = chain_of(&versions);
        let stats = same(&root, &chain);
        let per_byte = root.len() / BYTES_PER_SEGMENT + SEGMENT_SLACK;
        assert!(stats.flattened >= 2, "{stats:?}");
        assert!(stats.peak <= per_byte, "{stats:?}");
        assert_eq!(stats.retried, 0, "{stats:?}");
    }

    #[test]
    fn empty_versions_and_whole_literals() {
        let root = b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec();
        let empty = script(&[(b"", None)]);
        let lit = script(&[(b"fresh bytes, no copy", None)]);
        let back = script(&[(b"", Some((0, 20))), (b"", None)]);
        same(&root, &[(empty.clone(), 0)]);
        same(
            &root,
            &[(empty.clone(), 0), (lit.clone(), 20), (back.clone(), 20)],
        );
        same(b"", &[(lit.clone(), 20), (empty, 0), (lit, 20), (back, 20)]);
    }

    #[test]
    fn copies_split_and_join_segments() {
        let root: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        // v1: literal, root[100..300), literal, root[300..1000): two root runs around a literal.
        let v1 = script(&[
            (b"AAAA", Some((100, 200))),
            (b"BB", Some((0, 700))),
            (b"", None),
        ]);
        // v2: copies that straddle segment edges, backwards and overlapping, and a join:
        // v1[4..204) then v1[206..906) are root[100..300) ‖ root[300..1000), one segment.
        let v2 = script(&[
            (b"", Some((4, 200))),
            (b"", Some((2, 700))),
            (b"x", Some((-900, 300))),
            (b"", Some((-300, 16))),
            (b"", None),
        ]);
        let n1 = 4 + 200 + 2 + 700;
        let n2 = 200 + 700 + 1 + 300 + 16;
        same(&root, &[(v1.clone(), n1), (v2.clone(), n2)]);
        let base = Segments::whole(root.len());
        let (ops, lits) = split(&v1).unwrap();
        let mut s1 = Segments::default();
        assert!(compose(&base, ops, 1, lits.len(), n1, usize::MAX, &mut s1).unwrap());
        let (ops, lits) = split(&v2).unwrap();
        let mut s2 = Segments::default();
        assert!(compose(&s1, ops, 2, lits.len(), n2, usize::MAX, &mut s2).unwrap());
        assert_eq!(
            s2.0[0],
            Seg {
                end: 900,
                src: ROOT,
                at: 1000
            }
        );
    }

    #[test]
    fn hostile_chains_are_refused_like_apply_refuses_them() {
        let root = rows(200, 0);
        let mut v1 = root.clone();
        v1[500..520].copy_from_slice(&[b'#'; 20]);
        let mut v2 = v1.clone();
        v2.splice(900..900, b"inserted".to_vec());
        let chain = chain_of(&[root.clone(), v1, v2]);
        let (s1, n1) = (&chain[0].0, chain[0].1);
        let (s2, n2) = (&chain[1].0, chain[1].1);
        for n in [0, n2 - 1, n2 + 1] {
            same(&root, &[(s1.clone(), n1), (s2.clone(), n)]);
            same(&root, &[(s1.clone(), n), (s2.clone(), n2)]);
        }
        // A raw length no allocation could hold (`apply` would reserve it and panic) is
        // refused, not reserved: nothing is allocated before a script is checked.
        let huge = [(s1.clone(), usize::MAX), (s2.clone(), n2)];
        assert_eq!(
            apply_chain(&root, &refs(&huge)),
            Err("shorter than the chunk")
        );
        // A copy past a version that shrank, before it, shorter than the minimum.
        let shrink = script(&[(b"", Some((0, 100))), (b"", None)]);
        let past = script(&[(b"", Some((90, 16))), (b"", None)]);
        let before = script(&[(b"", Some((-1, 16))), (b"", None)]);
        let short = script(&[(b"", Some((0, 15))), (b"", None)]);
        for bad_one in [past, before, short] {
            let c = [(shrink.clone(), 100), (bad_one, 16)];
            same(&root, &c);
            assert!(apply_chain(&root, &refs(&c)).is_err());
        }
        // Unused literals, steps past the end, an endless number, an empty script.
        let mut unused = script(&[(b"abc", None)]);
        unused.push(b'!');
        let c = [(unused, 3)];
        assert_eq!(apply_chain(&root, &refs(&c)), Err("unused literals"));
        same(&root, &c);
        for s in [vec![0x7f, 0], vec![0xff; 12], vec![]] {
            same(&root, &[(s, 1)]);
        }
        // Every truncation and every byte flip of either level.
        for level in 0..2 {
            let s = &chain[level].0;
            for cut in 0..s.len() {
                let mut c = chain.clone();
                c[level].0.truncate(cut);
                same(&root, &c);
            }
            for i in 0..s.len() {
                for flip in [0x01, 0x55, 0x80] {
                    let mut c = chain.clone();
                    c[level].0[i] ^= flip;
                    same(&root, &c);
                }
            }
        }
    }

    /// 2000 units of a one-byte literal and 16 root bytes, then `tail` more root bytes: 4000
    /// segments (the root runs are contiguous but split by the literals).
    fn fragmented(tail: u64) -> (Vec<u8>, usize) {
        let mut steps: Vec<Step<'_>> = vec![(b"L", Some((0, 16))); 2000];
        if tail > 0 {
            steps.push((b"", Some((0, tail))));
        }
        steps.push((b"", None));
        (script(&steps), 2000 * 17 + tail as usize)
    }

    #[test]
    fn fragmenting_scripts_are_flattened_and_stay_exact() {
        let root: Vec<u8> = (0..=255u8).cycle().take(240_000).collect();
        let tail = script(&[(b"", Some((0, 1000))), (b"end", None)]);
        // Dense and not last: flattened after it is composed.
        let dense = fragmented(0);
        let stats = same(&root, std::slice::from_ref(&dense));
        assert_eq!((stats.flattened, stats.peak), (0, 4000), "{stats:?}");
        let stats = same(&root, &[dense.clone(), (tail.clone(), 1003)]);
        assert_eq!((stats.flattened, stats.retried), (1, 0), "{stats:?}");

        // Dense only in its first 34 KB of 234 KB: kept. Then a script of 16-byte copies that
        // each straddle a literal, between literals of its own, would make 4 segments per 17
        // bytes: it is stopped at the cap and composed against the flattened version.
        let sparse = fragmented(200_000);
        let steps: Vec<Step<'_>> = (0..1999)
            .map(|j| (&b"M"[..], Some((if j == 0 { 10 } else { 1 }, 16))))
            .chain([(&b""[..], None)])
            .collect();
        let straddle = (script(&steps), 1999 * 17);
        let stats = same(&root, &[sparse.clone(), (tail.clone(), 1003)]);
        assert_eq!((stats.flattened, stats.retried), (0, 0), "{stats:?}");
        let stats = same(&root, &[sparse.clone(), straddle.clone()]);
        assert_eq!((stats.flattened, stats.retried), (1, 1), "{stats:?}");
        let cap = straddle.1 / HARD_BYTES_PER_SEGMENT + SEGMENT_SLACK;
        assert!(stats.peak <= cap + 4001, "{stats:?}");
        // Errors after the cap are still found.
        let mut broken = straddle.clone();
        broken.0.push(b'!');
        same(&root, &[sparse.clone(), broken]);

        // A version copied whole eight times over: as many segments per byte, no flattening.
        let n = sparse.1 as i64;
        let steps: Vec<Step<'_>> = (0..8)
            .map(|k| (&b""[..], Some((if k == 0 { 0 } else { -n }, n as u64))))
            .chain([(&b""[..], None)])
            .collect();
        let stats = same(&root, &[sparse, (script(&steps), 8 * n as usize)]);
        assert_eq!((stats.flattened, stats.peak), (0, 8 * 4000), "{stats:?}");
    }

    /// An edit of one version into the next.
    #[derive(Clone, Debug)]
    enum Edit {
        /// Overwrite bytes in place, at a fraction of the length.
        Change(f64, Vec<u8>),
        Insert(f64, Vec<u8>),
        Delete(f64, usize),
        /// Move a run of `len` bytes from one place to another.
        Move(f64, usize, f64),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let bytes = || prop::collection::vec(any::<u8>(), 1..120);
        prop_oneof![
            (0.0..1.0f64, bytes()).prop_map(|(a, b)| Edit::Change(a, b)),
            (0.0..1.0f64, bytes()).prop_map(|(a, b)| Edit::Insert(a, b)),
            (0.0..1.0f64, 1..300usize).prop_map(|(a, n)| Edit::Delete(a, n)),
            (0.0..1.0f64, 1..2000usize, 0.0..1.0f64).prop_map(|(a, n, b)| Edit::Move(a, n, b)),
        ]
    }

    fn at(v: &[u8], f: f64) -> usize {
        ((v.len() as f64 * f) as usize).min(v.len())
    }

    fn edited(v: &[u8], edits: &[Edit]) -> Vec<u8> {
        let mut v = v.to_vec();
        for e in edits {
            match e {
                Edit::Change(a, b) => {
                    let i = at(&v, *a);
                    let n = b.len().min(v.len() - i);
                    v[i..i + n].copy_from_slice(&b[..n]);
                }
                Edit::Insert(a, b) => {
                    let i = at(&v, *a);
                    v.splice(i..i, b.iter().copied());
                }
                Edit::Delete(a, n) => {
                    let i = at(&v, *a);
                    v.drain(i..(i + n).min(v.len()));
                }
                Edit::Move(a, n, b) => {
                    let i = at(&v, *a);
                    let run: Vec<u8> = v.drain(i..(i + n).min(v.len())).collect();
                    let j = at(&v, *b);
                    v.splice(j..j, run);
                }
            }
        }
        v
    }

    /// A root (rows of text, or noise) and the versions that random edits make of it.
    fn versions() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let root = prop_oneof![
            (0..600usize, any::<usize>()).prop_map(|(n, s)| rows(n, s % 1000)),
            prop::collection::vec(any::<u8>(), 0..3000),
        ];
        let levels = prop::collection::vec(prop::collection::vec(edit(), 0..6), 1..40);
        (root, levels).prop_map(|(root, levels)| {
            let mut out = vec![root];
            for edits in &levels {
                let next = edited(&out[out.len() - 1], edits);
                out.push(next);
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn chains_decode_like_apply_level_by_level(versions in versions()) {
            let chain = chain_of(&versions);
            let got = apply_chain(&versions[0], &refs(&chain)).unwrap();
            prop_assert!(got == versions[versions.len() - 1]);
        }

        #[test]
        fn damaged_chains_fail_like_apply_level_by_level(
            versions in versions(),
            level in any::<prop::sample::Index>(),
            damage in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
            cut in prop::option::of(any::<prop::sample::Index>()),
            len_delta in prop_oneof![Just(0i64), -3..3i64],
        ) {
            let mut chain = chain_of(&versions);
            let l = level.index(chain.len());
            let s = &mut chain[l].0;
            for (i, x) in &damage {
                let i = i.index(s.len());
                s[i] ^= x;
            }
            if let Some(c) = cut {
                let c = c.index(s.len() + 1);
                s.truncate(c);
            }
            chain[l].1 = chain[l].1.saturating_add_signed(len_delta as isize);
            let scripts = refs(&chain);
            prop_assert_eq!(apply_chain(&versions[0], &scripts), sequential(&versions[0], &scripts));
        }
    }
}
