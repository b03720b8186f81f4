//! Fills a repository's index with synthetic entries, for the scale benchmark
//! (scripts/scale-bench.sh): `cargo run --release --example synthetic_index -- REPO CACHE N`
//! with the password in `TRESOR_PASSWORD`.
//!
//! Writes index objects listing N random blob ids in fake packs of 16 entries each (1 MiB
//! blobs, as the default chunker makes), then opens the repository once so that the catalog
//! loads them, and prints how long each step took. The packs do not exist: this repository is
//! only for measuring how backups and prune planning behave against a 10-million-chunk catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use tresor::backend::local::LocalBackend;
use tresor::backend::{Backend, ObjectKind};
use tresor::format::BlobKind;
use tresor::format::id::{BlobId, ObjectId};
use tresor::format::index::{self, IndexedPack};
use tresor::format::pack::PackEntry;
use tresor::repo::Repo;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (repo, cache, n): (&str, &str, u64) = (&args[0], &args[1], args[2].parse().unwrap());
    let password = std::env::var("TRESOR_PASSWORD").expect("TRESOR_PASSWORD");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(std::path::Path::new(repo)));
    let t = Instant::now();
    let r = Repo::open(Arc::clone(&backend), password.as_bytes(), cache.as_ref()).unwrap();
    let key = Arc::clone(r.key());
    drop(r);
    const PER_PACK: u64 = 16;
    const PER_INDEX: u64 = 100_000;
    let mut made = 0u64;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let mut packs = Vec::new();
    while made < n {
        let mut entries = Vec::new();
        for i in 0..PER_PACK.min(n - made) {
            let mut h = blake3::Hasher::new_keyed(&seed);
            h.update(&(made + i).to_le_bytes());
            entries.push(PackEntry {
                kind: BlobKind::Data,
                id: BlobId(*h.finalize().as_bytes()),
                offset: (i * 400_000) as u32,
                stored_len: 400_000,
                raw_len: 1 << 20,
                base: None,
                depth: 0,
            });
        }
        made += entries.len() as u64;
        let mut h = blake3::Hasher::new_keyed(&seed);
        h.update(b"pack");
        h.update(&made.to_le_bytes());
        packs.push(IndexedPack {
            id: ObjectId(*h.finalize().as_bytes()),
            size: entries.len() as u64 * 400_000 + 1000,
            entries,
        });
        if made.is_multiple_of(PER_INDEX) || made == n {
            let (name, bytes) = index::encode(&key, &packs).unwrap();
            backend
                .put(ObjectKind::Index, &name.to_hex(), &bytes)
                .unwrap();
            packs.clear();
        }
    }
    println!(
        "wrote index objects for {n} entries in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let r = Repo::open(backend, password.as_bytes(), cache.as_ref()).unwrap();
    let (blobs, packs) = r.catalog().counts().unwrap();
    println!(
        "catalog loaded {blobs} blobs in {packs} packs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
