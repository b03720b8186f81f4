//! Ids: keyed BLAKE3 of a 1 MiB chunk (blob ids), and plain BLAKE3 (object names) for
//! comparison.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tresor::format::id::ObjectId;

fn ids(c: &mut Criterion) {
    let key = common::key();
    let data = common::random_bytes(common::MIB, 5);
    let mut g = c.benchmark_group("ids");
    g.throughput(Throughput::Bytes(common::MIB as u64));
    g.bench_function("blob_id_keyed_blake3_1MiB", |b| {
        b.iter(|| key.blob_id(black_box(&data)))
    });
    g.bench_function("object_id_blake3_1MiB", |b| {
        b.iter(|| ObjectId::of_bytes(black_box(&data)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = ids
}
criterion_main!(benches);
