//! Throughput of the content-defined chunker (keyed FastCDC) over 64 MiB of dump-like text,
//! with the default chunk sizes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tresor::format::chunker::ChunkerSpec;
use tresor::repo::config::DEFAULT_CHUNKER;

const LEN: usize = 64 * common::MIB;

fn chunker(c: &mut Criterion) {
    let data = common::dump_text(LEN);
    let spec = ChunkerSpec::new(DEFAULT_CHUNKER, common::key().gear_table()).unwrap();
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("default_params_64MiB_dump", |b| {
        b.iter(|| {
            let mut chunks = 0usize;
            let mut bytes = 0usize;
            for ch in spec.chunker(black_box(&data[..])) {
                bytes += ch.unwrap().len();
                chunks += 1;
            }
            assert_eq!(bytes, LEN);
            black_box(chunks)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = chunker
}
criterion_main!(benches);
