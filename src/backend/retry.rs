//! Retrying transient backend errors: [`RetryBackend`] wraps any backend and repeats a call
//! that failed with an error [`Error::is_transient`] says may be cured by repeating it (a
//! timeout, a dropped connection, throttling), with bounded exponential backoff and full jitter
//! ([`RetryPolicy`]). Permanent errors (a missing object, denied access, corrupt data, a full
//! disk) are returned at once: repeating cannot change them.
//!
//! # Why repeating a call is safe
//!
//! A transient error says nothing about whether the call took effect: the request may have
//! failed before reaching the storage, or the storage may have done it and the answer been
//! lost. The backend contract ([`super`]) makes every call but `create` safe to repeat either
//! way:
//!
//! - `exists`, `get`, `get_range`, `list`: reads; repeating one changes nothing. A `list`
//!   repeated after a concurrent writer's put may see one more object, as a later call would.
//! - `put`: objects are named by the hash of their bytes (the config is written once, by
//!   `repo init`), so a repeated put — also one after a put that was stored but whose answer
//!   was lost — replaces the object with identical bytes. A failed put leaves nothing or the
//!   whole object, never a prefix.
//! - `delete`: deleting a missing object succeeds, so a repeat after a delete whose answer
//!   was lost succeeds too.
//! - `remove_stale_temporaries`: removing a temporary is a delete; a repeat after a partial
//!   run removes the rest, and only the report of what the failed attempt removed is lost.
//! - `create` is **not** retried: after a lost answer the repeat would find the layout the
//!   first attempt made and fail with [`Error::RepoExists`], hiding what happened. Its error
//!   goes to the caller (`repo init`), which can simply be run again on an empty location.
//!
//! The final error of a call that was retried keeps its variant (callers decide from it) and
//! says in its context how many attempts were made; it is the last attempt's error.
//! Retrying stops early once a signal asked the process to stop ([`crate::interrupt`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Backend, ObjectKind};
use crate::error::{Error, Result};

/// How often and how long to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (0 counts as 1: no retry).
    pub max_attempts: u32,
    /// The longest pause before the first retry; it doubles for each further one.
    pub base_delay: Duration,
    /// No pause is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, pauses of at most 100 ms, 200 ms, … (3.1 s in all at most), capped at 10 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The longest pause before retry number `retry` (1 for the first):
    /// `base_delay · 2^(retry−1)`, at most `max_delay`.
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let doubling = retry.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1u32 << doubling)
            .min(self.max_delay)
    }

    /// The pause before retry number `retry`: uniform between zero and [`Self::backoff_cap`]
    /// ("full jitter", so clients that failed together do not retry together).
    pub fn pause(&self, retry: u32) -> Duration {
        let cap = self.backoff_cap(retry);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        match getrandom::u64() {
            Ok(r) if nanos < u64::MAX => Duration::from_nanos(r % (nanos + 1)),
            // Without randomness, the full pause: still bounded.
            _ => cap,
        }
    }
}

/// A backend that retries its inner backend's transient errors (see the module documentation).
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
    retries: AtomicU64,
}

impl RetryBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy) -> Self {
        RetryBackend {
            inner,
            policy,
            retries: AtomicU64::new(0),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// How many retries (attempts after a first one) were made so far, over all calls.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Runs `call` until it succeeds, fails permanently, or the attempts run out.
    fn run<T>(&self, mut call: impl FnMut() -> Result<T>) -> Result<T> {
        let attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let e = match call() {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let stopping = crate::interrupt::received().is_some();
            if !e.is_transient() || attempt >= attempts || stopping {
                return Err(if attempt > 1 || (stopping && e.is_transient()) {
                    annotate(e, attempt, stopping)
                } else {
                    e
                });
            }
            std::thread::sleep(self.policy.pause(attempt));
            self.retries.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
        }
    }
}

/// Says in the error's context how many attempts were made (for the variants that carry a
/// context; damage and missing objects keep their exact messages, which reports quote).
fn annotate(e: Error, attempts: u32, stopping: bool) -> Error {
    let note = if e.is_transient() {
        if stopping {
            format!(
                "failed {attempts} times with a transient error; not retried further: stopping on a signal"
            )
        } else {
            format!("failed {attempts} times with a transient error; gave up")
        }
    } else {
        format!(
            "attempt {attempts}, after {} transient errors",
            attempts - 1
        )
    };
    match e {
        Error::Io { context, source } => Error::Io {
            context: format!("{context} ({note})"),
            source,
        },
        Error::Storage {
            context,
            transient,
            source,
        } => Error::Storage {
            context: format!("{context} ({note})"),
            transient,
            source,
        },
        Error::NoSpace { context } => Error::NoSpace {
            context: format!("{context} ({note})"),
        },
        other => other,
    }
}

impl Backend for RetryBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        // Not repeatable: see the module documentation.
        self.inner.create()
    }
    fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        self.run(|| self.inner.exists(kind, name))
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.run(|| self.inner.put(kind, name, data))
    }
    fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        // After a transient failure the put may have taken effect with its reply lost: a
        // repeat that finds the object then reads it back, and the same bytes are ours.
        let mut failed_before = false;
        self.run(|| match self.inner.put_new(kind, name, data) {
            Err(Error::AlreadyExists { object }) if failed_before => {
                match self.inner.get(kind, name) {
                    Ok(stored) if stored == data => Ok(()),
                    Ok(_) => Err(Error::AlreadyExists { object }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                failed_before |= e.is_transient();
                Err(e)
            }
            Ok(()) => Ok(()),
        })
    }
    fn put_bytes(&self, kind: ObjectKind, name: &str, data: bytes::Bytes) -> Result<()> {
        self.run(|| self.inner.put_bytes(kind, name, data.clone()))
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.run(|| self.inner.get(kind, name))
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(|| self.inner.get_range(kind, name, offset, len))
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        self.run(|| self.inner.list(kind))
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.run(|| self.inner.delete(kind, name))
    }
    fn remove_stale_temporaries(&self, min_age: Duration) -> Result<Vec<(String, u64)>> {
        self.run(|| self.inner.remove_stale_temporaries(min_age))
    }
    fn request_counts(&self) -> Option<super::RequestCounts> {
        self.inner.request_counts()
    }
    fn connections(&self) -> usize {
        self.inner.connections()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;
    use std::sync::Mutex;

    /// Fails each call with the next error of a script, then passes calls through.
    struct Scripted {
        inner: MemBackend,
        script: Mutex<Vec<Error>>,
        calls: AtomicU64,
    }

    impl Scripted {
        fn new(mut script: Vec<Error>) -> Arc<Scripted> {
            script.reverse();
            Arc::new(Scripted {
                inner: MemBackend::new(),
                script: Mutex::new(script),
                calls: AtomicU64::new(0),
            })
        }
        fn next(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match self.script.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    impl Backend for Scripted {
        fn location(&self) -> String {
            "scripted".into()
        }
        fn create(&self) -> Result<()> {
            self.next()?;
            self.inner.create()
        }
        fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
            self.next()?;
            self.inner.exists(kind, name)
        }
        fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
            self.next()?;
            self.inner.put(kind, name, data)
        }
        fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
            self.next()?;
            self.inner.put_new(kind, name, data)
        }
        fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
            self.next()?;
            self.inner.get(kind, name)
        }
        fn get_range(&self, kind: ObjectKind, name: &str, o: u64, l: u64) -> Result<Vec<u8>> {
            self.next()?;
            self.inner.get_range(kind, name, o, l)
        }
        fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
            self.next()?;
            self.inner.list(kind)
        }
        fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
            self.next()?;
            self.inner.delete(kind, name)
        }
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    fn timeout() -> Error {
        Error::io(
            "reading data/ab/ab12",
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        )
    }

    #[test]
    fn transient_errors_are_retried_until_success() {
        let s = Scripted::new(vec![
            timeout(),
            Error::transient("put", "503 slow down"),
            timeout(),
        ]);
        let r = RetryBackend::new(s.clone(), fast(6));
        r.put(ObjectKind::Pack, "ab12", b"x").unwrap();
        assert_eq!(s.calls.load(Ordering::Relaxed), 4);
        assert_eq!(r.retries(), 3);
        assert_eq!(r.get(ObjectKind::Pack, "ab12").unwrap(), b"x");
        assert_eq!(r.location(), "scripted");
    }

    #[test]
    fn giving_up_names_the_attempts_and_keeps_the_last_error() {
        let s = Scripted::new((0..3).map(|_| timeout()).collect());
        let r = RetryBackend::new(s.clone(), fast(3));
        let e = r.get(ObjectKind::Pack, "ab12").unwrap_err();
        assert_eq!(s.calls.load(Ordering::Relaxed), 3);
        assert!(e.is_transient(), "{e}");
        let m = e.to_string();
        assert!(m.contains("reading data/ab/ab12"), "{m}");
        assert!(m.contains("failed 3 times"), "{m}");
        assert!(matches!(e, Error::Io { .. }));
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let denied = || {
            Error::io(
                "writing keys/k",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            )
        };
        let s = Scripted::new(vec![denied()]);
        let r = RetryBackend::new(s.clone(), fast(6));
        let e = r.put(ObjectKind::Key, "k", b"x").unwrap_err();
        assert_eq!(s.calls.load(Ordering::Relaxed), 1);
        assert_eq!(
            e.to_string(),
            denied().to_string(),
            "unchanged when not retried"
        );
        // A missing object is an answer, not a failure.
        let s = Scripted::new(vec![]);
        let r = RetryBackend::new(s.clone(), fast(6));
        assert!(matches!(
            r.get(ObjectKind::Index, "nope"),
            Err(Error::Missing { .. })
        ));
        assert_eq!(s.calls.load(Ordering::Relaxed), 1);
        // A permanent error after transient ones says so, and keeps its variant.
        let s = Scripted::new(vec![timeout(), Error::permanent("put x", "403 forbidden")]);
        let r = RetryBackend::new(s, fast(6));
        let e = r.put(ObjectKind::Key, "k", b"x").unwrap_err();
        assert!(!e.is_transient());
        assert!(
            e.to_string()
                .contains("attempt 2, after 1 transient errors"),
            "{e}"
        );
    }

    #[test]
    fn a_create_only_put_whose_reply_was_lost_is_ours_and_a_foreign_one_is_not() {
        use crate::backend::faulty::{FaultPlan, FaultPoint, FaultyBackend, Op};
        let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
        // Half the put_news are done and their answer lost; reads always pass.
        let faulty = Arc::new(FaultyBackend::new(
            Arc::clone(&mem),
            FaultPlan::new(0.5, 7)
                .at(FaultPoint::After)
                .ops(&[Op::PutNew]),
        ));
        let r = RetryBackend::new(faulty.clone(), fast(40));
        for i in 0..50 {
            let name = format!("lock-{i}");
            let bytes = format!("mine {i}");
            r.put_new(ObjectKind::Lock, &name, bytes.as_bytes())
                .unwrap();
            assert_eq!(mem.get(ObjectKind::Lock, &name).unwrap(), bytes.as_bytes());
        }
        assert!(faulty.injected_after() > 10, "replies were really lost");
        // An object someone else made is not taken for ours.
        mem.put(ObjectKind::Lock, "b", b"theirs").unwrap();
        assert!(matches!(
            r.put_new(ObjectKind::Lock, "b", b"mine"),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(mem.get(ObjectKind::Lock, "b").unwrap(), b"theirs");
    }

    #[test]
    fn create_is_not_retried() {
        let s = Scripted::new(vec![timeout()]);
        let r = RetryBackend::new(s.clone(), fast(6));
        assert!(r.create().unwrap_err().is_transient());
        assert_eq!(s.calls.load(Ordering::Relaxed), 1);
        r.create().unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 6);
        assert_eq!(p.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(200));
        assert_eq!(p.backoff_cap(5), Duration::from_millis(1600));
        assert_eq!(p.backoff_cap(8), Duration::from_secs(10));
        assert_eq!(p.backoff_cap(1000), Duration::from_secs(10));
        let pauses: Vec<Duration> = (0..64).map(|_| p.pause(3)).collect();
        assert!(pauses.iter().all(|d| *d <= Duration::from_millis(400)));
        assert!(
            pauses.iter().any(|d| *d != pauses[0]),
            "pauses are drawn at random"
        );
        let none = RetryPolicy {
            max_attempts: 0,
            ..fast(0)
        };
        let s = Scripted::new(vec![timeout()]);
        assert!(
            RetryBackend::new(s.clone(), none)
                .list(ObjectKind::Pack)
                .is_err()
        );
        assert_eq!(s.calls.load(Ordering::Relaxed), 1, "0 attempts means one");
    }
}
