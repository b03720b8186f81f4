//! Measures how chunker parameters trade dedup against compression on a series of dumps.
//!
//! `cargo run --release --example dedup_study -- MIN:AVG:MAX [MIN:AVG:MAX …] -- day0.sql day1.sql …`
//!
//! For each parameter set it chunks every file in order with a fixed key, stores each chunk not
//! seen before exactly as the repository would (zstd level 3, sealed), and prints the bytes each
//! file adds and the total. This is how the defaults in docs/design.md were chosen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;

use rayon::prelude::*;
use tresor::format::BlobKind;
use tresor::format::chunker::{ChunkerParams, ChunkerSpec};
use tresor::format::codec;
use tresor::format::crypto::MasterKey;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sep = args
        .iter()
        .position(|a| a == "--")
        .expect("usage: PARAMS… -- FILES…");
    let (params, files) = (&args[..sep], &args[sep + 1..]);
    let key = MasterKey::from_secret([42; 32]);
    for p in params {
        let v: Vec<u32> = p
            .split(':')
            .map(|x| x.parse().expect("MIN:AVG:MAX"))
            .collect();
        let cp = ChunkerParams {
            min_size: v[0],
            avg_size: v[1],
            max_size: v[2],
        };
        let spec = ChunkerSpec::new(cp, key.gear_table()).expect("valid params");
        let mut seen = HashSet::new();
        let mut total = 0u64;
        let mut row = Vec::new();
        let started = std::time::Instant::now();
        let mut chunks_total = 0usize;
        for f in files {
            let r = BufReader::new(File::open(f).expect("open"));
            let mut added = 0u64;
            let mut batch = Vec::new();
            let flush = |batch: &mut Vec<Vec<u8>>, seen: &mut HashSet<_>, added: &mut u64| {
                let ids: Vec<_> = batch.par_iter().map(|c| key.blob_id(c)).collect();
                let mut new = Vec::new();
                for (c, id) in batch.iter().zip(ids) {
                    if seen.insert(id) {
                        new.push((c, id));
                    }
                }
                let sizes: Vec<usize> = new
                    .par_iter()
                    .map(|(c, id)| codec::encode(&key, BlobKind::Data, id, c, 3).unwrap().len())
                    .collect();
                *added += sizes.iter().map(|s| *s as u64).sum::<u64>();
                batch.clear();
            };
            for c in spec.chunker(r) {
                batch.push(c.expect("read"));
                chunks_total += 1;
                if batch.len() >= 64 {
                    flush(&mut batch, &mut seen, &mut added);
                }
            }
            flush(&mut batch, &mut seen, &mut added);
            total += added;
            row.push(added);
        }
        let mb = |b: u64| b as f64 / 1e6;
        let days: Vec<String> = row.iter().map(|b| format!("{:.1}", mb(*b))).collect();
        println!(
            "{p}\tchunks/file {}\tadded MB per file [{}]\ttotal {:.1} MB\t{:.1}s",
            chunks_total / files.len().max(1),
            days.join(", "),
            mb(total),
            started.elapsed().as_secs_f64()
        );
    }
}
