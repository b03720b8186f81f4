//! The one pack writer: every blob any operation stores (backup, prune's repacking) and every
//! pack any operation indexes (adoption of unindexed packs, `repair index`) goes through a
//! [`Packer`].
//!
//! **Order, the invariant of the repository** (docs/design.md, "Write ordering"): a blob is
//! added to the open pack; a full pack is sealed (its header last) and handed to the upload
//! thread, which stores it durably; only a durable pack is listed in an index object; only
//! after the index object is durable does the catalog learn the pack's blobs. A crash at any
//! point leaves either a pack no index object lists (adopted by the next backup, see
//! [`Repo::adopt_unindexed`]) or nothing at all; never an index entry without its pack.
//!
//! **In flight.** A blob id [`Packer::claim`]ed is pending until its index object is durable:
//! a second claim of it says "already stored", so two chunks with the same id are never stored
//! twice, even while the first is still being encoded or uploaded.
//!
//! **Index objects** are written when 8 freshly written packs are durable (so a killed backup
//! leaves at most that many packs for adoption to find) or when the pending ones list 50,000
//! entries (~2 MiB sealed), and at [`Packer::finish`]. Before each one the packer stops if a
//! signal asked to (see [`crate::interrupt`]) or if the repository lock is no longer ours.
//!
//! **Threads.** Sealing and adding happen on the caller's thread; [`Repo::connections`] upload
//! threads store packs, so the next pack fills while the previous ones are written (over
//! object storage each upload waits round trips, so several run at once). The handoff is a
//! rendezvous (a sealed pack waits until an upload thread is free), and the bytes of sealed
//! packs not yet stored are bounded by [`UPLOAD_BYTES_PACKS`] packs' worth whatever the number
//! of upload threads: memory is one pack filling plus at most that many in flight (more threads
//! help the small packs and the index objects, not the memory). With one connection (a local
//! disk) the bound is one pack: a single upload thread cannot store two at once, and a second
//! sealed pack waiting its turn would only hold memory. Packs become durable in any order; each is listed in an index object only once its
//! own upload succeeded.

use std::collections::HashMap;
#[cfg(test)]
use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::Repo;
use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::index::{self, IndexedPack};
use crate::format::pack::{FinishedPack, PackWriter};
use crate::format::{BlobKind, MAX_BLOB_LEN};

/// Freshly written packs per index object.
const PACKS_PER_INDEX: usize = 8;

/// Entries per index object (~2 MiB sealed).
const ENTRIES_PER_INDEX: usize = 50_000;

/// Sealed packs' bytes that may be on their way to storage at once, in packs of the
/// repository's pack size (see the module documentation). Two keep a local disk's fsync and an
/// object store's round trips overlapped with the filling of the next pack.
const UPLOAD_BYTES_PACKS: usize = 2;

/// Sealed packs that may be in flight with `connections` upload threads (see the module
/// documentation): one thread stores one pack at a time, so one is enough to keep it busy.
fn upload_packs(connections: usize) -> usize {
    if connections <= 1 {
        1
    } else {
        UPLOAD_BYTES_PACKS
    }
}

/// `len` bytes of a pack an upload thread holds, counted out of [`InFlight`] when dropped.
struct Held<'a>(&'a InFlight, usize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// Bytes of sealed packs handed to the upload threads and not yet stored or failed.
#[derive(Default)]
struct InFlight {
    bytes: Mutex<usize>,
    freed: Condvar,
    /// The most bytes in flight at once so far.
    most: std::sync::atomic::AtomicUsize,
}

impl InFlight {
    /// Waits until `len` more bytes fit within `limit` (or nothing is in flight), then counts
    /// them.
    fn acquire(&self, len: usize, limit: usize) {
        let mut n = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 && *n + len > limit {
            n = self.freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += len;
        self.most
            .fetch_max(*n, std::sync::atomic::Ordering::Relaxed);
    }

    fn release(&self, len: usize) {
        let mut n = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(len);
        self.freed.notify_all();
    }
}

/// What a packer wrote.
#[derive(Clone, Debug, Default)]
pub struct PackerReport {
    /// Packs written.
    pub packs_written: u64,
    /// Bytes of packs and index objects written.
    pub bytes_written: u64,
    /// Index objects written, by name, in order.
    pub index_objects: Vec<String>,
}

/// Writes blobs into packs and packs into index objects, in crash-safe order (see the module
/// documentation). Made by [`Repo::packer`]; [`Packer::finish`] must be called for the last
/// pack and index object to be written (dropping a packer waits for the upload in progress
/// and writes nothing more).
pub struct Packer<'r> {
    repo: &'r mut Repo,
    pack: PackWriter,
    pack_size: usize,
    upload_tx: Option<Sender<FinishedPack>>,
    done_rx: Receiver<Result<IndexedPack>>,
    uploaders: Vec<thread::JoinHandle<()>>,
    /// Sealed bytes with the upload threads, at most `upload_limit`.
    in_flight: Arc<InFlight>,
    upload_limit: usize,
    /// Durable packs not yet in an index object.
    durable: Vec<IndexedPack>,
    /// Of those, how many this packer wrote.
    fresh: usize,
    /// Entries they list.
    entries: usize,
    /// Blobs claimed and not yet indexed, with the depth they were added with (0 for whole
    /// blobs and for claimed blobs not yet added).
    pending: HashMap<BlobId, u8>,
    report: PackerReport,
}

/// Room for a pack: its target size, one largest blob past it, and the header.
fn pack_capacity(pack_size: usize) -> usize {
    pack_size + MAX_BLOB_LEN / 4 + (1 << 20)
}

impl Repo {
    /// The pack writer of this repository (see [`Packer`]).
    pub fn packer(&mut self) -> Result<Packer<'_>> {
        Packer::new(self)
    }
}

impl Drop for Packer<'_> {
    /// On every exit, errors included, the upload in progress is let to finish (or fail and
    /// remove its temporary file) before the process can end: no `.tmp-` file is left behind
    /// by an error elsewhere in the pipeline.
    fn drop(&mut self) {
        self.upload_tx = None;
        for h in self.uploaders.drain(..) {
            let _ = h.join();
        }
    }
}

impl<'r> Packer<'r> {
    fn new(repo: &'r mut Repo) -> Result<Packer<'r>> {
        let (upload_tx, upload_rx) = bounded::<FinishedPack>(0);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let in_flight = Arc::new(InFlight::default());
        let mut uploaders = Vec::new();
        for _ in 0..repo.connections.max(1) {
            let backend = Arc::clone(&repo.backend);
            let (upload_rx, done_tx) = (upload_rx.clone(), done_tx.clone());
            let in_flight = Arc::clone(&in_flight);
            let h = thread::Builder::new()
                .name("tresor-upload".into())
                .spawn(move || {
                    for p in upload_rx {
                        let size = p.bytes.len();
                        // Counted out when the put returns, or unwinds.
                        let _held = Held(&in_flight, size);
                        let r = backend
                            .put_bytes(ObjectKind::Pack, &p.id.to_hex(), p.bytes.into())
                            .map(|()| IndexedPack {
                                id: p.id,
                                size: size as u64,
                                entries: p.entries,
                            });
                        if done_tx.send(r).is_err() {
                            break;
                        }
                    }
                });
            match h {
                Ok(h) => uploaders.push(h),
                // Dropping the sender ends the threads already started.
                Err(e) => return Err(Error::io("starting the upload threads", e)),
            }
        }
        let pack_size = repo.config.pack_size as usize;
        let upload_limit = upload_packs(repo.connections) * pack_capacity(pack_size);
        Ok(Packer {
            repo,
            pack: PackWriter::with_capacity(pack_capacity(pack_size)),
            pack_size,
            upload_tx: Some(upload_tx),
            done_rx,
            uploaders,
            in_flight,
            upload_limit,
            durable: Vec::new(),
            fresh: 0,
            entries: 0,
            pending: HashMap::new(),
            report: PackerReport::default(),
        })
    }

    /// The repository (config, catalog lookups, the read path).
    pub fn repo(&self) -> &Repo {
        self.repo
    }

    /// Whether the blob `id` must be stored: `false` when the repository has it or it is in
    /// flight; otherwise it is marked in flight and the caller must [`Packer::add`] it.
    pub fn claim(&mut self, id: &BlobId) -> Result<bool> {
        if self.pending.contains_key(id) || self.repo.catalog.contains(id)? {
            return Ok(false);
        }
        self.pending.insert(*id, 0);
        Ok(true)
    }

    /// The depth a blob this packer stored and has not yet indexed was added with (0: whole);
    /// `None` for any other blob (the catalog knows those).
    pub fn pending_depth(&self, id: &BlobId) -> Option<u8> {
        self.pending.get(id).copied()
    }

    /// Adds a sealed blob to the open pack; a full pack goes to the upload thread, and index
    /// objects are written as packs become durable.
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        raw_len: u32,
        base: Option<(BlobId, u8)>,
    ) -> Result<()> {
        self.pack.add(kind, id, sealed, raw_len, base)?;
        if let Some((_, depth)) = base {
            self.pending.insert(id, depth);
        }
        if self.pack.len() >= self.pack_size {
            self.ship_pack()?;
        }
        Ok(())
    }

    /// Lists a pack that is already stored (found unindexed, or re-read by `repair index`) in
    /// the next index object.
    pub fn index_stored(&mut self, pack: IndexedPack) -> Result<()> {
        self.entries += pack.entries.len();
        self.durable.push(pack);
        self.collect(false)
    }

    /// Ships the open pack, waits until every pack is durable, and writes the last index
    /// object. Returns what was written.
    pub fn finish(mut self) -> Result<PackerReport> {
        self.ship_pack()?;
        self.collect(true)?;
        Ok(std::mem::take(&mut self.report))
    }

    fn ship_pack(&mut self) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(
            &mut self.pack,
            PackWriter::with_capacity(pack_capacity(self.pack_size)),
        );
        let finished = full.finish(&self.repo.key)?;
        let len = finished.bytes.len();
        self.report.bytes_written += len as u64;
        let tx = self
            .upload_tx
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("uploader closed".into()))?;
        self.in_flight.acquire(len, self.upload_limit);
        if tx.send(finished).is_err() {
            // The uploader stopped: its error is waiting in done_rx.
            self.collect(true)?;
            return Err(Error::InvalidArgument(
                "the upload thread stopped unexpectedly".into(),
            ));
        }
        self.collect(false)
    }

    /// Takes finished uploads; writes an index object when enough packs are durable (with
    /// `all`, after waiting for every upload, whatever is durable).
    fn collect(&mut self, all: bool) -> Result<()> {
        if all {
            self.upload_tx = None;
            for h in std::mem::take(&mut self.uploaders) {
                h.join()
                    .map_err(|_| Error::InvalidArgument("an upload thread panicked".into()))?;
            }
        }
        while let Ok(r) = self.done_rx.try_recv() {
            let p = r?;
            self.report.packs_written += 1;
            self.fresh += 1;
            self.entries += p.entries.len();
            self.durable.push(p);
        }
        if self.fresh >= PACKS_PER_INDEX
            || self.entries >= ENTRIES_PER_INDEX
            || (all && !self.durable.is_empty())
        {
            self.write_index()?;
        }
        Ok(())
    }

    /// Writes the durable packs as one index object, then tells the catalog.
    fn write_index(&mut self) -> Result<()> {
        // Each commit point: stop here if asked to, or if the lock is no longer ours.
        crate::interrupt::check()?;
        self.repo.ensure_lock_held()?;
        let packs = std::mem::take(&mut self.durable);
        self.fresh = 0;
        self.entries = 0;
        let (name, bytes) = index::encode(&self.repo.key, &packs)?;
        let name = name.to_hex();
        self.repo.backend.put(ObjectKind::Index, &name, &bytes)?;
        self.report.bytes_written += bytes.len() as u64;
        self.repo.catalog.add_index(&name, &packs)?;
        for p in &packs {
            for e in &p.entries {
                self.pending.remove(&e.id);
            }
        }
        self.report.index_objects.push(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::backend::Backend;
    use crate::backend::mem::MemBackend;
    use crate::format::codec;
    use crate::repo::keys::KdfParams;
    use crate::repo::{InitOptions, OpenOptions};

    /// A memory backend whose pack puts wait (up to a few seconds) until `want` of them are in
    /// flight at once, and fail for the `fail_nth` pack put (1-based; 0: never).
    struct Gate {
        inner: MemBackend,
        want: usize,
        fail_nth: usize,
        in_flight: Mutex<usize>,
        most: AtomicUsize,
        puts: AtomicUsize,
        cv: Condvar,
        /// How long a pack put waits for `want` puts in flight.
        hold: Duration,
    }

    impl Backend for Gate {
        fn location(&self) -> String {
            "gate".into()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
            self.inner.exists(kind, name)
        }
        fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
            self.inner.put_new(kind, name, data)
        }
        fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
            if kind != ObjectKind::Pack {
                return self.inner.put(kind, name, data);
            }
            let nth = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            {
                let mut n = self.in_flight.lock().unwrap();
                *n += 1;
                self.most.fetch_max(*n, Ordering::SeqCst);
                self.cv.notify_all();
                let _ = self
                    .cv
                    .wait_timeout_while(n, self.hold, |n| *n < self.want)
                    .unwrap();
            }
            let r = if nth == self.fail_nth {
                Err(Error::permanent("put", "refused by the test"))
            } else {
                self.inner.put(kind, name, data)
            };
            *self.in_flight.lock().unwrap() -= 1;
            r
        }
        fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
            self.inner.get(kind, name)
        }
        fn get_range(&self, kind: ObjectKind, name: &str, o: u64, l: u64) -> Result<Vec<u8>> {
            self.inner.get_range(kind, name, o, l)
        }
        fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
            self.inner.list(kind)
        }
        fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
            self.inner.delete(kind, name)
        }
    }

    fn gate(want: usize, fail_nth: usize) -> Arc<Gate> {
        Arc::new(Gate {
            inner: MemBackend::new(),
            want,
            fail_nth,
            in_flight: Mutex::new(0),
            most: AtomicUsize::new(0),
            puts: AtomicUsize::new(0),
            cv: Condvar::new(),
            hold: Duration::from_secs(5),
        })
    }

    /// The names of the packs the storage holds.
    fn stored_packs(backend: &dyn Backend) -> HashSet<String> {
        backend
            .list(ObjectKind::Pack)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    fn open(backend: Arc<Gate>, cache: &std::path::Path, connections: usize) -> Repo {
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            pack_size: 1 << 20,
            ..Default::default()
        };
        Repo::init(backend.as_ref(), b"pw", &opts).unwrap();
        let open = OpenOptions {
            connections: Some(connections),
            ..Default::default()
        };
        Repo::open_with(backend, b"pw", cache, &open).unwrap()
    }

    /// Stores `n` incompressible 256 KiB blobs (four per pack); returns the packer's outcome.
    fn store(repo: &mut Repo, n: u64) -> Result<PackerReport> {
        store_sized(repo, n, 256 << 10)
    }

    /// Stores `n` incompressible blobs of `len` bytes; returns the packer's outcome.
    fn store_sized(repo: &mut Repo, n: u64, len: usize) -> Result<PackerReport> {
        let key = Arc::clone(repo.key());
        let mut p = repo.packer()?;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..n {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let id = key.blob_id(&data);
            assert!(p.claim(&id)?);
            let sealed = codec::encode(&key, BlobKind::Data, &id, &data, 0)?;
            p.add(BlobKind::Data, id, &sealed, data.len() as u32, None)?;
        }
        p.finish()
    }

    #[test]
    fn uploads_run_in_parallel_within_the_memory_bound_and_every_indexed_pack_is_stored() {
        let t = tempfile::tempdir().unwrap();
        // Four upload threads, but full packs' memory allows two at once: each 4.5 MiB blob
        // makes a pack of its own (1 MiB packs leave room for one largest blob past the
        // target), and three of them exceed two packs' capacity. Puts wait until two are in
        // flight (the last one alone waits out `hold`), so two is also reached.
        let backend = Arc::new(Gate {
            hold: Duration::from_millis(300),
            ..Arc::into_inner(gate(UPLOAD_BYTES_PACKS, 0)).unwrap()
        });
        let mut repo = open(Arc::clone(&backend), t.path(), 4);
        let report = store_sized(&mut repo, 8, 9 << 19).unwrap();
        assert_eq!(
            backend.most.load(Ordering::SeqCst),
            UPLOAD_BYTES_PACKS,
            "as many full packs were in flight at once as the memory bound allows, no more"
        );
        assert_eq!(report.packs_written, 8, "{report:?}");
        let stored = stored_packs(backend.as_ref());
        let mut indexed = 0;
        for name in repo.index_names().unwrap() {
            for p in repo.load_index(&name).unwrap() {
                assert!(stored.contains(&p.id.to_hex()));
                indexed += 1;
            }
        }
        assert_eq!(indexed, stored.len(), "every stored pack is indexed");
        assert_eq!(indexed as u64, report.packs_written);
    }

    #[test]
    fn one_connection_holds_one_sealed_pack_at_a_time() {
        let t = tempfile::tempdir().unwrap();
        // Each pack put takes 50 ms (it waits for a second one that never comes), so the next
        // packs are sealed while one is being stored.
        let backend = Arc::new(Gate {
            hold: Duration::from_millis(50),
            ..Arc::into_inner(gate(2, 0)).unwrap()
        });
        let mut repo = open(Arc::clone(&backend), t.path(), 1);
        let key = Arc::clone(repo.key());
        let mut p = repo.packer().unwrap();
        // Blobs of 4.5 MiB: each pack holds one and is most of a pack's capacity (1 MiB packs
        // leave room for one largest blob past the target), so two never fit in one capacity.
        let capacity = pack_capacity(p.pack_size);
        for n in 0..8u64 {
            let data: Vec<u8> = (0..9u64 << 19)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56 ^ n) as u8)
                .collect();
            let id = key.blob_id(&data);
            assert!(p.claim(&id).unwrap());
            let sealed = codec::encode(&key, BlobKind::Data, &id, &data, 0).unwrap();
            p.add(BlobKind::Data, id, &sealed, data.len() as u32, None)
                .unwrap();
        }
        let in_flight = Arc::clone(&p.in_flight);
        let report = p.finish().unwrap();
        assert_eq!(report.packs_written, 8, "{report:?}");
        let most = in_flight.most.load(Ordering::SeqCst);
        assert!(
            most > 0 && most <= capacity,
            "at most one sealed pack in flight: {most} bytes at once, a pack's capacity {capacity}"
        );
    }

    #[test]
    fn a_failed_upload_is_never_indexed() {
        let t = tempfile::tempdir().unwrap();
        let backend = gate(1, 2);
        let mut repo = open(Arc::clone(&backend), t.path(), 4);
        assert!(
            store(&mut repo, 60).is_err(),
            "the refused put fails the packer"
        );
        let stored = stored_packs(backend.as_ref());
        for name in repo.index_names().unwrap() {
            for p in repo.load_index(&name).unwrap() {
                assert!(stored.contains(&p.id.to_hex()), "index names a lost pack");
            }
        }
    }
}
