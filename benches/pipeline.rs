//! End to end: `backup::create` of a 256 MiB dump-like file into a fresh repository on a
//! `LocalBackend` (a new one for every iteration, so every chunk is new: chunk, hash, compress,
//! seal, pack, fsync), and `restore::restore_to_writer` of that file into `io::sink()`
//! (locate, read, open, inflate, id check). Default repository settings, cheap argon2.
//!
//! Files live under the system temporary directory; set TMPDIR to measure another disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tresor::backend::local::LocalBackend;
use tresor::backup::{self, CreateOptions, NoProgress};
use tresor::repo::keys::KdfParams;
use tresor::repo::{InitOptions, Repo};
use tresor::restore;
use tresor::source::SourceSpec;

/// 256 MiB under `cargo bench`; 16 MiB when `cargo test --all-targets` runs the bench once as a
/// test (criterion's test mode), so that stays quick.
fn len() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        256 * common::MIB
    } else {
        16 * common::MIB
    }
}
const PASSWORD: &[u8] = b"bench";

fn init_open(dir: &Path) -> Repo {
    let backend = LocalBackend::new(dir.join("repo"));
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    Repo::init(&backend, PASSWORD, &opts).unwrap();
    Repo::open(Arc::new(backend), PASSWORD, &dir.join("cache")).unwrap()
}

fn options(source: &Path) -> CreateOptions {
    CreateOptions {
        sources: vec![SourceSpec::Path(source.to_path_buf())],
        tags: Vec::new(),
        host: Some("bench".into()),
        ..Default::default()
    }
}

fn pipeline(c: &mut Criterion) {
    let data_dir = tempfile::tempdir().unwrap();
    let source: PathBuf = data_dir.path().join("dump.sql");
    let len = len();
    {
        let mut w = BufWriter::new(File::create(&source).unwrap());
        common::write_dump(&mut w, len).unwrap();
    }
    let mut g = c.benchmark_group("pipeline");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(len as u64));

    g.bench_function("create_256MiB_dump_fresh_repo", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut repo = init_open(dir.path());
                let started = Instant::now();
                let r = backup::create(&mut repo, &options(&source), &NoProgress).unwrap();
                total += started.elapsed();
                assert_eq!(r.snapshot.summary.bytes_read, len as u64);
            }
            total
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let mut repo = init_open(dir.path());
    let snap = backup::create(&mut repo, &options(&source), &NoProgress)
        .unwrap()
        .snapshot;
    g.bench_function("restore_256MiB_dump_to_sink", |b| {
        b.iter(|| {
            let n = restore::restore_to_writer(&repo, &snap, None, &mut std::io::sink()).unwrap();
            assert_eq!(n, len as u64);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    targets = pipeline
}
criterion_main!(benches);
