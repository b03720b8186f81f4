//! Request counting: a [`CountingBackend`] wraps a backend and counts every call made to it, by
//! kind (`get`, `get_range`, `put`, `list`, `delete`, `exists`, `create`), in atomics.
//!
//! [`super::open`] puts it innermost, directly around the local or S3 backend and inside the
//! [`super::RetryBackend`], so a retried request counts once per attempt: the counts are the
//! requests the storage actually saw (for S3, one HTTP request per call; a paged listing
//! counts once per `list` call, however many pages it took). The commands report them in their
//! `--json` output (`"requests": {...}`), read through [`Backend::request_counts`].

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Backend, ObjectKind};
use crate::error::Result;

/// Requests made so far, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Whole-object reads.
    pub get: u64,
    /// Ranged reads.
    pub get_range: u64,
    /// Object writes (`put`, `put_new`, `put_bytes`).
    pub put: u64,
    /// Listings.
    pub list: u64,
    /// Deletions.
    pub delete: u64,
    /// Existence checks.
    pub exists: u64,
    /// `create` calls (and stale-temporary sweeps).
    pub other: u64,
    /// Bytes read by `get` and `get_range`.
    pub bytes_read: u64,
    /// Bytes written by `put`.
    pub bytes_written: u64,
}

impl RequestCounts {
    /// All requests together.
    pub fn total(&self) -> u64 {
        self.get + self.get_range + self.put + self.list + self.delete + self.exists + self.other
    }
}

#[derive(Default)]
struct Counters {
    get: AtomicU64,
    get_range: AtomicU64,
    put: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    exists: AtomicU64,
    other: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// A backend that counts the calls made to the one it wraps (see the module documentation).
pub struct CountingBackend {
    inner: Arc<dyn Backend>,
    counters: Counters,
}

impl CountingBackend {
    /// Counts the calls to `inner`, from zero.
    pub fn new(inner: Arc<dyn Backend>) -> CountingBackend {
        CountingBackend {
            inner,
            counters: Counters::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            get: c.get.load(Relaxed),
            get_range: c.get_range.load(Relaxed),
            put: c.put.load(Relaxed),
            list: c.list.load(Relaxed),
            delete: c.delete.load(Relaxed),
            exists: c.exists.load(Relaxed),
            other: c.other.load(Relaxed),
            bytes_read: c.bytes_read.load(Relaxed),
            bytes_written: c.bytes_written.load(Relaxed),
        }
    }
}

impl Backend for CountingBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.counters.other.fetch_add(1, Relaxed);
        self.inner.create()
    }
    fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        self.counters.exists.fetch_add(1, Relaxed);
        self.inner.exists(kind, name)
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.counters.put.fetch_add(1, Relaxed);
        self.counters
            .bytes_written
            .fetch_add(data.len() as u64, Relaxed);
        self.inner.put(kind, name, data)
    }
    fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.counters.put.fetch_add(1, Relaxed);
        self.counters
            .bytes_written
            .fetch_add(data.len() as u64, Relaxed);
        self.inner.put_new(kind, name, data)
    }
    fn put_bytes(&self, kind: ObjectKind, name: &str, data: bytes::Bytes) -> Result<()> {
        self.counters.put.fetch_add(1, Relaxed);
        self.counters
            .bytes_written
            .fetch_add(data.len() as u64, Relaxed);
        self.inner.put_bytes(kind, name, data)
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.counters.get.fetch_add(1, Relaxed);
        let r = self.inner.get(kind, name);
        if let Ok(b) = &r {
            self.counters.bytes_read.fetch_add(b.len() as u64, Relaxed);
        }
        r
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.counters.get_range.fetch_add(1, Relaxed);
        let r = self.inner.get_range(kind, name, offset, len);
        if let Ok(b) = &r {
            self.counters.bytes_read.fetch_add(b.len() as u64, Relaxed);
        }
        r
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        self.counters.list.fetch_add(1, Relaxed);
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.counters.delete.fetch_add(1, Relaxed);
        self.inner.delete(kind, name)
    }
    fn remove_stale_temporaries(&self, min_age: std::time::Duration) -> Result<Vec<(String, u64)>> {
        self.counters.other.fetch_add(1, Relaxed);
        self.inner.remove_stale_temporaries(min_age)
    }
    fn request_counts(&self) -> Option<RequestCounts> {
        Some(self.counts())
    }
    fn connections(&self) -> usize {
        self.inner.connections()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;

    #[test]
    fn counts_each_kind_of_call() {
        let b = CountingBackend::new(Arc::new(MemBackend::new()));
        b.create().unwrap();
        b.put(ObjectKind::Pack, &"ab".repeat(32), b"hello").unwrap();
        assert!(b.exists(ObjectKind::Pack, &"ab".repeat(32)).unwrap());
        assert_eq!(b.get(ObjectKind::Pack, &"ab".repeat(32)).unwrap(), b"hello");
        assert_eq!(
            b.get_range(ObjectKind::Pack, &"ab".repeat(32), 1, 3)
                .unwrap(),
            b"ell"
        );
        assert!(
            b.get_range(ObjectKind::Pack, &"ab".repeat(32), 4, 3)
                .is_err()
        );
        assert_eq!(b.list(ObjectKind::Pack).unwrap().len(), 1);
        b.delete(ObjectKind::Pack, &"ab".repeat(32)).unwrap();
        let c = b.request_counts().unwrap();
        assert_eq!(
            c,
            RequestCounts {
                get: 1,
                get_range: 2,
                put: 1,
                list: 1,
                delete: 1,
                exists: 1,
                other: 1,
                bytes_read: 8,
                bytes_written: 5,
            }
        );
        assert_eq!(c.total(), 8);
    }
}
