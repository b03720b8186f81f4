//! Blob codec: encode (zstd level 3 + seal) and decode (open + bounded inflate + id check) of
//! 1 MiB chunks, compressible dump text and incompressible random bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tresor::codec;
use tresor::config::DEFAULT_ZSTD_LEVEL;
use tresor::format::BlobKind;

fn codec(c: &mut Criterion) {
    let key = common::key();
    let inputs = [
        ("text", common::dump_text(common::MIB)),
        ("random", common::random_bytes(common::MIB, 3)),
    ];
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(common::MIB as u64));
    for (name, data) in &inputs {
        let id = key.blob_id(data);
        let raw_len = data.len() as u32;
        let stored = codec::encode(&key, BlobKind::Data, &id, data, DEFAULT_ZSTD_LEVEL).unwrap();
        g.bench_function(format!("encode_1MiB_{name}"), |b| {
            b.iter(|| {
                codec::encode(
                    &key,
                    BlobKind::Data,
                    &id,
                    black_box(data),
                    DEFAULT_ZSTD_LEVEL,
                )
                .unwrap()
            })
        });
        g.bench_function(format!("decode_1MiB_{name}"), |b| {
            b.iter(|| {
                codec::decode(&key, BlobKind::Data, &id, black_box(&stored), raw_len).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
