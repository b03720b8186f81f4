//! Storage backends: where the repository's objects live.
//!
//! [`open`] picks the backend for a [`Location`] (what `--repo` says); [`layout`] says under
//! which key each object lives; [`local`], [`mem`] and [`s3`] are the backends; [`retry`]
//! wraps one to retry transient errors, [`counting`] counts the requests made to one, and
//! [`faulty`] (a test tool) wraps one to inject errors.
//!
//! # Contract
//!
//! Every backend stores named, immutable objects of a few kinds ([`ObjectKind`]) and must
//! guarantee:
//!
//! - **put** is atomic and durable: when it returns `Ok`, the whole object is stored and survives
//!   a crash or power loss; a crash during `put` leaves either nothing or the whole object under
//!   that name, never a prefix. Putting a name that exists replaces it (callers only do so with
//!   identical content, since names are content hashes).
//! - **put_new** is `put` that only creates: when an object of that name exists it stores
//!   nothing and fails with [`Error::AlreadyExists`]. Of any number of concurrent `put_new`s of
//!   one name, exactly one succeeds and the object holds its bytes (local: a hard link of a
//!   durable temporary file; S3: `If-None-Match: *`). Locks are made with it, and the marker
//!   of an S3 repository, so two hosts never take each other's object for their own.
//! - **get** returns the whole object or an error; **get_range** returns exactly `len` bytes or
//!   an error (a short object is an error, never a short read): a range must lie within the
//!   object (`offset + len <= size`; an empty range at the very end is fine), else
//!   [`Error::Corrupt`], whatever `offset` and `len` are.
//! - **list** returns every complete object of a kind with its size, and nothing else (no
//!   temporary files); the config lists as one object named `config` once it exists.
//! - **delete** of a missing object is not an error.
//! - **list** of a kind whose directory does not exist yet (a kind added after the repository
//!   was created, such as [`ObjectKind::Forgotten`]) is empty; **put** creates it.
//! - **remove_stale_temporaries** removes what interrupted puts left behind (a local
//!   backend's `.tmp-` files, an object store's incomplete multipart uploads) that is at
//!   least the given age, and names each; backends that leave nothing behind do nothing.
//! - A missing object is reported as [`Error::Missing`], so callers can tell it from I/O errors.
//! - Objects live under the keys of [`layout`] (`config`, `keys/NAME`, `data/XX/NAME`, …).
//!
//! `tests/harness/conformance.rs` is the suite that checks these promises; every backend runs
//! it (`tests/it/backends.rs`).
//!
//! # Errors: what to report as which
//!
//! Callers decide from the variant what an error means, so a backend must choose it with care:
//!
//! - [`Error::Missing`]: the object does not exist — and only then. Never for a failure to find
//!   out (a timeout while reading a lock object must not read as "the lock is gone", and
//!   `check` reports a missing pack as damage).
//! - [`Error::Corrupt`]: the object exists but cannot give what was asked: a `get_range` past
//!   its end (the object is shorter than the index says).
//! - [`Error::NoSpace`]: the storage is full (ENOSPC, an exhausted quota).
//! - [`Error::Io`]: a local system call failed; its [`std::io::ErrorKind`] decides whether it
//!   is transient ([`Error::is_transient`]: interrupted, timed out, connection errors, …).
//! - [`Error::Storage`] with `transient: true` ([`Error::transient`]): the call may succeed if
//!   repeated — a timeout, a dropped or refused connection, a 5xx response, throttling (429,
//!   503 Slow Down). The call may or may not have taken effect.
//! - [`Error::Storage`] with `transient: false` ([`Error::permanent`]): repeating cannot help
//!   — refused credentials (401/403), a bucket that does not exist, a malformed request.
//! - [`Error::AlreadyExists`]: `put_new` of a name that exists.
//! - [`Error::RepoExists`]: `create` over a location that holds something.
//!
//! # Repeating a call
//!
//! Every call except `create` may be repeated after any error, and then has the effect of one
//! successful call: reads change nothing; a `put_new` repeated after a transient error that
//! then finds the object is judged by its content ([`retry::RetryBackend`] reads it back: the
//! same bytes mean the earlier attempt took effect); `put` of a name that exists replaces it with the same
//! bytes (names are content hashes, the config is written once); `delete` of a missing object
//! succeeds. A `put` that failed (even one whose response was lost after the object was stored)
//! must leave either nothing or the whole object. [`retry::RetryBackend`] relies on this to
//! retry transient errors; `create` is not repeatable (a repeat after a lost response finds the
//! layout it made and fails).
//!
//! Backends know nothing of encryption, compression or the format: they move bytes. That keeps
//! this trait small enough for object storage ([`s3`]).
//!
//! [`Error::Missing`]: crate::error::Error::Missing
//! [`Error::Corrupt`]: crate::error::Error::Corrupt
//! [`Error::NoSpace`]: crate::error::Error::NoSpace
//! [`Error::Io`]: crate::error::Error::Io
//! [`Error::Storage`]: crate::error::Error::Storage
//! [`Error::RepoExists`]: crate::error::Error::RepoExists
//! [`Error::AlreadyExists`]: crate::error::Error::AlreadyExists
//! [`Error::is_transient`]: crate::error::Error::is_transient
//! [`Error::transient`]: crate::error::Error::transient
//! [`Error::permanent`]: crate::error::Error::permanent

#![forbid(unsafe_code)]

pub mod counting;
pub mod faulty;
pub mod layout;
pub mod local;
pub mod location;
pub mod mem;
pub mod retry;
pub mod s3;

pub use counting::{CountingBackend, RequestCounts};
pub use layout::ObjectKind;
pub use location::{BackendOptions, Location, open, open_with};
pub use retry::{RetryBackend, RetryPolicy};

use crate::error::Result;

/// A storage backend; see the module documentation for the contract.
pub trait Backend: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> String;
    /// Creates the layout for a new repository; fails if the location holds anything.
    fn create(&self) -> Result<()>;
    /// Whether a repository exists here (its config object is present).
    fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool>;
    /// Stores an object durably and atomically.
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()>;
    /// Stores an object durably and atomically only if no object of that name exists; else
    /// stores nothing and fails with [`crate::error::Error::AlreadyExists`].
    fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()>;
    /// [`Backend::put`] of bytes the caller gives away: a backend that must hold its own copy
    /// while the request runs (an object store's request body) takes these without copying,
    /// which halves the memory of a pack upload. Same contract as `put`.
    fn put_bytes(&self, kind: ObjectKind, name: &str, data: bytes::Bytes) -> Result<()> {
        self.put(kind, name, &data)
    }
    /// Reads a whole object.
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>>;
    /// Reads exactly `len` bytes at `offset`.
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Lists the objects of a kind with their sizes.
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>>;
    /// Deletes an object; a missing object is not an error.
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()>;
    /// Removes leftovers of interrupted puts that are at least `min_age` old; returns each
    /// one's name and size. The caller makes sure no put of that age can still be running.
    fn remove_stale_temporaries(
        &self,
        _min_age: std::time::Duration,
    ) -> Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }
    /// The requests made so far, by kind, if this backend (or one it wraps) counts them
    /// ([`counting::CountingBackend`]).
    fn request_counts(&self) -> Option<RequestCounts> {
        None
    }
    /// How many requests are worth having in flight at once by default: 1 for storage where
    /// parallel requests do not help; more for object storage, where each request waits a
    /// round trip. Callers may be told otherwise (`--connections`).
    fn connections(&self) -> usize {
        1
    }
}
