//! The delta base picker: for each chunk of a changed file, the chunk of its previous version
//! a delta is most likely small against (same anchor, else the most overlapped).

#![forbid(unsafe_code)]

use std::collections::HashMap;

use crate::format::id::BlobId;
use crate::source::parent::Prior;

/// Marks an anchor shared by several chunks of the previous version while the map is built.
const AMBIGUOUS: usize = usize::MAX;

/// Picks, for each chunk of a file being read, the chunk of the file's previous version it
/// most likely resembles: the one with the same anchor (it starts the same way), else the one
/// it overlaps most when both versions are lined up at the last anchor match. A cut point
/// that a change created splits a previous chunk: the second part has no anchor of its own,
/// and its base is the rest of that chunk, not the chunk after it.
pub(super) struct BasePicker {
    prior: Prior,
    by_anchor: HashMap<u64, usize>,
    /// Where each chunk of the previous version starts in it.
    starts: Vec<u64>,
    /// Where the next chunk starts in the file being read.
    offset: u64,
    /// Previous-version offset minus this version's offset, at the last anchor match.
    shift: i64,
    /// The chunk of the previous version picked last.
    last: Option<usize>,
}

impl BasePicker {
    pub(super) fn new(prior: Prior) -> Self {
        // An anchor that starts several chunks (low-entropy content such as padding: a table
        // of space-filled rows cut inside its filler) is marked AMBIGUOUS: see `pick`.
        let mut by_anchor = HashMap::with_capacity(prior.anchors.len());
        for (i, a) in prior.anchors.iter().enumerate() {
            by_anchor
                .entry(*a)
                .and_modify(|at: &mut usize| *at = AMBIGUOUS)
                .or_insert(i);
        }
        let mut at = 0u64;
        let starts = prior
            .content
            .iter()
            .map(|c| {
                let s = at;
                at += c.1 as u64;
                s
            })
            .collect();
        BasePicker {
            prior,
            by_anchor,
            starts,
            offset: 0,
            shift: 0,
            last: None,
        }
    }

    /// The base candidate for the next chunk of the file, `len` bytes with this anchor.
    ///
    /// An anchor that starts several chunks of the previous version names the one right after
    /// the last pick when that one has it (runs of space-padded rows: each chunk follows the
    /// previous one in both versions), and none otherwise: the first of them would be an
    /// arbitrary base far from this chunk's data and would throw the shift off.
    pub(super) fn pick(&mut self, anchor: u64, len: u32) -> Option<BlobId> {
        let here = self.offset;
        self.offset += len as u64;
        let next = self.last.map_or(0, |l| l + 1);
        let matched = match self.by_anchor.get(&anchor) {
            Some(&AMBIGUOUS) => (self.prior.anchors.get(next) == Some(&anchor)).then_some(next),
            Some(&i) => Some(i),
            None => None,
        };
        let i = match matched {
            Some(i) => {
                self.shift = self.starts[i] as i64 - here as i64;
                i
            }
            None => self.most_overlapped(here.saturating_add_signed(self.shift), len)?,
        };
        self.last = Some(i);
        self.prior.content.get(i).map(|c| c.0)
    }

    /// The chunk of the previous version that shares the most bytes with `from..from + len`
    /// (the last one when that lies past its end).
    fn most_overlapped(&self, from: u64, len: u32) -> Option<usize> {
        let to = from + len as u64;
        let first = self
            .starts
            .partition_point(|&s| s <= from)
            .saturating_sub(1);
        (first..self.starts.len())
            .take_while(|&i| i == first || self.starts[i] < to)
            .max_by_key(|&i| {
                let (s, e) = (
                    self.starts[i],
                    self.starts[i] + self.prior.content[i].1 as u64,
                );
                (e.min(to).saturating_sub(s.max(from)), std::cmp::Reverse(i))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::ContentRef;

    #[test]
    fn picker_follows_anchors_and_takes_the_next_chunk_for_shared_ones() {
        let id = |i: u8| BlobId([i; 32]);
        // Previous version: chunks 0..6; chunks 2, 3 and 4 start alike (anchor 9).
        let anchors = vec![1, 2, 9, 9, 9, 6];
        let prior = Prior {
            content: (0..6).map(|i| ContentRef(id(i), 100)).collect(),
            anchors,
        };
        let mut p = BasePicker::new(prior);
        // Today 50 bytes were removed from chunk 0, the rest lines up chunk for chunk.
        assert_eq!(p.pick(1, 50), Some(id(0)));
        assert_eq!(p.pick(2, 100), Some(id(1)));
        // A shared anchor right after chunk 1: chunk 2, then 3 and 4 in turn (not the first
        // of them, and not by offset: today's chunk 2 grew by 200 bytes).
        assert_eq!(p.pick(9, 300), Some(id(2)));
        assert_eq!(p.pick(9, 100), Some(id(3)));
        assert_eq!(p.pick(9, 100), Some(id(4)));
        // A new anchor: the chunk it overlaps most once lined up at the last match (chunk 4
        // started at 400 in the previous version and at 550 today), so chunk 5.
        assert_eq!(p.pick(77, 100), Some(id(5)));
        // A shared anchor that does not follow the last pick names none of its chunks: the
        // overlap rule gives the last chunk (past the end).
        assert_eq!(p.pick(9, 100), Some(id(5)));
    }

    #[test]
    fn base_picker_follows_anchors_and_else_the_most_overlapped_chunk() {
        // The previous version: chunks A, B, C, D of 100 bytes, anchors 1, 2, 3, 4.
        let id = |b: u8| BlobId([b; 32]);
        let prior = Prior {
            content: (1..=4).map(|b| ContentRef(id(b), 100)).collect(),
            anchors: vec![1, 2, 3, 4],
        };
        let picks = |chunks: &[(u64, u32)]| -> Vec<u8> {
            let mut p = BasePicker::new(prior.clone());
            chunks
                .iter()
                .map(|&(anchor, len)| p.pick(anchor, len).unwrap().0[0])
                .collect()
        };
        // Unchanged boundaries: each chunk by its anchor.
        assert_eq!(
            picks(&[(1, 100), (2, 100), (3, 100), (4, 100)]),
            [1, 2, 3, 4]
        );
        // A new cut point 30 bytes into B: the second part is the rest of B, not C.
        assert_eq!(
            picks(&[(1, 100), (2, 30), (0, 70), (3, 100), (4, 100)]),
            [1, 2, 2, 3, 4]
        );
        // B's cut point moved 5 bytes earlier: the chunk starting there is mostly B.
        assert_eq!(picks(&[(1, 95), (0, 105), (3, 100)]), [1, 2, 3]);
        // 50 new bytes inserted after A (shifting everything after by 50): lined up at the
        // last anchor match, the insertion lies over B; B and C are found by their anchors.
        assert_eq!(
            picks(&[(1, 100), (0, 50), (2, 100), (0, 20), (3, 80)]),
            [1, 2, 2, 3, 3]
        );
        // No anchor at all (the start changed): position alone; past the end, the last chunk.
        assert_eq!(
            picks(&[(0, 100), (0, 100), (0, 150), (0, 100)]),
            [1, 2, 3, 4]
        );
        assert_eq!(picks(&[(0, 450), (0, 100)]), [1, 4]);
        // Anchors win over positions, also backwards (a moved block).
        assert_eq!(picks(&[(4, 100), (1, 100), (0, 100)]), [4, 1, 2]);
    }
}
