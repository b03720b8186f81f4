//! Packing: `PackWriter` add of sixteen sealed 1 MiB blobs, then finish (seal the header,
//! BLAKE3 the whole pack to name it): one 16 MiB pack, the default pack size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tresor::format::BlobKind;
use tresor::format::codec;
use tresor::format::pack::PackWriter;

fn pack(c: &mut Criterion) {
    let key = common::key();
    let blobs: Vec<_> = (0..16)
        .map(|i| {
            let data = common::random_bytes(common::MIB, 100 + i);
            let id = key.blob_id(&data);
            (
                id,
                codec::encode(&key, BlobKind::Data, &id, &data, 3).unwrap(),
                data.len() as u32,
            )
        })
        .collect();
    let total: usize = blobs.iter().map(|b| b.1.len()).sum();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("add_finish_16MiB", |b| {
        b.iter(|| {
            let mut w = PackWriter::new();
            for (id, sealed, raw_len) in &blobs {
                w.add(BlobKind::Data, *id, black_box(sealed), *raw_len, None)
                    .unwrap();
            }
            w.finish(&key).unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = pack
}
criterion_main!(benches);
