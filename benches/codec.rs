//! Blob codec: encode (zstd level 3 + seal) and decode (open + bounded inflate + id check) of
//! 1 MiB chunks, compressible dump text and incompressible random bytes; and deltas of a 2 MiB
//! chunk of dump text against yesterday's version of it (one row in 50 moved to the end and
//! changed): the copy-script matcher alone, the whole delta encoding, and its decoding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tresor::format::BlobKind;
use tresor::format::codec;
use tresor::repo::config::DEFAULT_ZSTD_LEVEL;

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

fn delta(c: &mut Criterion) {
    let key = common::key();
    let base = common::dump_text(2 * common::MIB);
    // Today's version: every 50th row leaves its place and comes back, changed, at the end.
    let mut kept = Vec::new();
    let mut moved = Vec::new();
    for (i, row) in base.split_inclusive(|&b| b == b'\n').enumerate() {
        if i % 50 == 49 {
            moved.extend_from_slice(b"updated ");
            moved.extend_from_slice(row);
        } else {
            kept.extend_from_slice(row);
        }
    }
    let chunk = [kept, moved].concat();
    let (id, base_id) = (key.blob_id(&chunk), key.blob_id(&base));
    let sealed = codec::encode_delta(&key, &id, &chunk, &base_id, &base)
        .unwrap()
        .expect("a 2% change makes a small delta");
    let raw_len = chunk.len() as u32;
    let mut g = c.benchmark_group("delta");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("script_2MiB", |b| {
        b.iter(|| tresor::format::delta::encode(black_box(&base), black_box(&chunk)))
    });
    g.bench_function("encode_2MiB", |b| {
        b.iter(|| codec::encode_delta(&key, &id, black_box(&chunk), &base_id, &base).unwrap())
    });
    g.bench_function("decode_2MiB", |b| {
        b.iter(|| {
            codec::decode_delta(&key, &id, black_box(&sealed), raw_len, &base_id, &base).unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = codec, delta
}
criterion_main!(benches);
