//! Delta chains: the top of a chain of copy scripts over a 1 MiB chunk of dump text, decoded by
//! `delta::apply` once per level (every version materialised) and by `chain::apply_chain`
//! (scripts composed, bytes copied once), at depths 1, 8, 30 and 64. Each level changes about
//! 0.5% of the bytes, in rows of about 100 bytes scattered over the chunk: most rewritten in
//! place, some inserted, some removed. Throughput is of the top version's bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tresor::format::{chain, delta};

/// Rows of about this many bytes are edited.
const ROW: usize = 100;

/// Each level edits this many rows: 0.5% of a MiB.
const ROWS_PER_LEVEL: usize = common::MIB / 200 / ROW;

/// The next version: [`ROWS_PER_LEVEL`] rows, 70% rewritten in place, 15% inserted, 15% removed.
fn next_version(v: &[u8], rng: &mut common::Rng) -> Vec<u8> {
    let mut v = v.to_vec();
    for _ in 0..ROWS_PER_LEVEL {
        let at = rng.below((v.len() - 2 * ROW) as u64) as usize;
        let row: Vec<u8> = (0..ROW).map(|_| b'a' + rng.below(26) as u8).collect();
        match rng.below(20) {
            0..14 => v[at..at + ROW].copy_from_slice(&row),
            14..17 => {
                v.splice(at..at, row);
            }
            _ => {
                v.drain(at..at + ROW);
            }
        }
    }
    v
}

fn chains(c: &mut Criterion) {
    let mut rng = common::Rng::new(7);
    let root = common::dump_text(common::MIB);
    let mut versions = vec![root.clone()];
    for k in 1..=64 {
        let next = next_version(&versions[k - 1], &mut rng);
        versions.push(next);
    }
    let scripts: Vec<(Vec<u8>, usize)> = versions
        .windows(2)
        .map(|w| (delta::encode(&w[0], &w[1]), w[1].len()))
        .collect();
    let mut g = c.benchmark_group("chain");
    for depth in [1, 8, 30, 64] {
        let levels: Vec<(&[u8], usize)> =
            scripts[..depth].iter().map(|(s, n)| (&s[..], *n)).collect();
        let top = &versions[depth];
        assert_eq!(&chain::apply_chain(&root, &levels).unwrap(), top);
        g.throughput(Throughput::Bytes(top.len() as u64));
        g.bench_function(format!("sequential_1MiB_depth{depth}"), |b| {
            b.iter(|| {
                let (s, n) = levels[0];
                let mut v = delta::apply(black_box(&root), s, n).unwrap();
                for &(s, n) in &levels[1..] {
                    v = delta::apply(&v, s, n).unwrap();
                }
                v
            })
        });
        g.bench_function(format!("apply_chain_1MiB_depth{depth}"), |b| {
            b.iter(|| chain::apply_chain(black_box(&root), &levels).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = chains
}
criterion_main!(benches);
