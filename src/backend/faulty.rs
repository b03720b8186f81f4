//! A fault-injecting backend — a **test tool**, never used by the CLI.
//!
//! [`FaultyBackend`] wraps a backend and fails a given share of calls with transient errors
//! (what a flaky network or an overloaded object store gives), either **before** doing the
//! operation (nothing happened) or **after** doing it (the operation took effect, but the caller
//! sees an error: the lost-response case, e.g. a put that stored the object). Tests use it to
//! show that [`super::RetryBackend`] hides such faults, and that without retry every operation
//! fails cleanly and leaves a repository that `check` passes.
//!
//! Faults are deterministic for a seed: whether a call fails depends on the seed, the call
//! (operation, kind, name, range) and how many times that same call was made before, not on
//! timing or on the order in which threads make their calls. A call that failed is decided
//! afresh when it is repeated, so a retry gets through with probability `1 − share`.
//! The errors alternate between [`Error::Storage`] marked transient and [`Error::Io`] of kind
//! `TimedOut` or `ConnectionReset`, so both ways of being transient are exercised.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, ObjectKind};
use crate::error::{Error, Result};

/// A backend call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Backend::create`].
    Create,
    /// [`Backend::exists`].
    Exists,
    /// [`Backend::put`].
    Put,
    /// [`Backend::put_new`].
    PutNew,
    /// [`Backend::get`].
    Get,
    /// [`Backend::get_range`].
    GetRange,
    /// [`Backend::list`].
    List,
    /// [`Backend::delete`].
    Delete,
    /// [`Backend::remove_stale_temporaries`].
    RemoveStaleTemporaries,
}

impl Op {
    /// Every call.
    pub const ALL: [Op; 9] = [
        Op::Create,
        Op::Exists,
        Op::Put,
        Op::PutNew,
        Op::Get,
        Op::GetRange,
        Op::List,
        Op::Delete,
        Op::RemoveStaleTemporaries,
    ];
}

/// When an injected fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before the operation: it is not done.
    Before,
    /// After the operation: it is done, but its answer is lost.
    After,
    /// Either, decided per fault.
    Either,
}

/// Which calls fail, and how.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// The share of calls that fail, from 0.0 (none) to 1.0 (all).
    pub share: f64,
    /// Seed of the decisions.
    pub seed: u64,
    /// When faults strike.
    pub point: FaultPoint,
    /// The calls that may fail; others always pass.
    pub ops: Vec<Op>,
}

impl FaultPlan {
    /// Fails `share` of the calls, before or after the operation, deterministically for `seed`.
    /// Every call may fail except [`Op::Create`], which nothing retries (see
    /// [`super::retry`]); [`FaultPlan::ops`] changes that.
    pub fn new(share: f64, seed: u64) -> FaultPlan {
        FaultPlan {
            share,
            seed,
            point: FaultPoint::Either,
            ops: Op::ALL.into_iter().filter(|o| *o != Op::Create).collect(),
        }
    }

    /// Faults strike only at `point`.
    pub fn at(mut self, point: FaultPoint) -> FaultPlan {
        self.point = point;
        self
    }

    /// Only these calls may fail.
    pub fn ops(mut self, ops: &[Op]) -> FaultPlan {
        self.ops = ops.to_vec();
        self
    }
}

/// The cause of an injected [`Error::Storage`].
#[derive(Debug, thiserror::Error)]
#[error("injected fault (the storage did not answer)")]
pub struct InjectedFault;

/// A decided fault: when, and which error.
struct Fault {
    after: bool,
    flavour: u8,
}

/// A backend that fails some calls on purpose (see the module documentation).
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    /// How many times each call (by its hash) was made.
    seen: Mutex<HashMap<u64, u32>>,
    enabled: AtomicBool,
    calls: AtomicU64,
    injected: AtomicU64,
    after: AtomicU64,
}

impl FaultyBackend {
    /// Wraps `inner`, failing calls as `plan` says.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> FaultyBackend {
        FaultyBackend {
            inner,
            plan,
            seen: Mutex::new(HashMap::new()),
            enabled: AtomicBool::new(true),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            after: AtomicU64::new(0),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// Turns fault injection on or off (on at first).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Of those, faults injected after the operation was done (lost answers).
    pub fn injected_after(&self) -> u64 {
        self.after.load(Ordering::Relaxed)
    }

    /// Whether this call fails, and how.
    fn decide(
        &self,
        op: Op,
        kind: Option<ObjectKind>,
        name: &str,
        extra: [u64; 2],
    ) -> Option<Fault> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.enabled.load(Ordering::SeqCst) || !self.plan.ops.contains(&op) {
            return None;
        }
        let mut h = blake3::Hasher::new();
        h.update(&[op as u8, kind.map_or(255, |k| k as u8)]);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&extra[0].to_le_bytes());
        h.update(&extra[1].to_le_bytes());
        let call = u64_at(h.finalize().as_bytes(), 0);
        let occurrence = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let n = seen.entry(call).or_insert(0);
            *n += 1;
            *n
        };
        let mut h = blake3::Hasher::new();
        h.update(&self.plan.seed.to_le_bytes());
        h.update(&call.to_le_bytes());
        h.update(&occurrence.to_le_bytes());
        let r = h.finalize();
        let r = r.as_bytes();
        // 53 random bits as a number in [0, 1).
        let draw = (u64_at(r, 0) >> 11) as f64 / (1u64 << 53) as f64;
        if draw >= self.plan.share {
            return None;
        }
        let after = match self.plan.point {
            FaultPoint::Before => false,
            FaultPoint::After => true,
            FaultPoint::Either => r[8] & 1 == 1,
        };
        self.injected.fetch_add(1, Ordering::Relaxed);
        if after {
            self.after.fetch_add(1, Ordering::Relaxed);
        }
        Some(Fault {
            after,
            flavour: r[9] % 3,
        })
    }

    /// Runs `call` under the decided fault, if any.
    fn run<T>(
        &self,
        op: Op,
        kind: Option<ObjectKind>,
        name: &str,
        extra: [u64; 2],
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some(fault) = self.decide(op, kind, name, extra) else {
            return call();
        };
        if fault.after {
            // Done, but the answer is lost.
            let _ = call();
        }
        let mut what = format!("{op:?}");
        if let Some(kind) = kind {
            what.push_str(&format!(" {kind:?}"));
        }
        if !name.is_empty() {
            what.push_str(&format!(" {name}"));
        }
        let context = format!(
            "{what} ({}, {})",
            self.inner.location(),
            if fault.after {
                "after the operation"
            } else {
                "before the operation"
            }
        );
        Err(match fault.flavour {
            0 => Error::transient(context, InjectedFault),
            1 => Error::io(
                context,
                std::io::Error::new(std::io::ErrorKind::TimedOut, "injected fault: timed out"),
            ),
            _ => Error::io(
                context,
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected fault: connection reset",
                ),
            ),
        })
    }
}

fn u64_at(b: &[u8; 32], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.run(Op::Create, None, "", [0, 0], || self.inner.create())
    }
    fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        self.run(Op::Exists, Some(kind), name, [0, 0], || {
            self.inner.exists(kind, name)
        })
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.run(Op::Put, Some(kind), name, [data.len() as u64, 0], || {
            self.inner.put(kind, name, data)
        })
    }
    fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.run(Op::PutNew, Some(kind), name, [data.len() as u64, 0], || {
            self.inner.put_new(kind, name, data)
        })
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.run(Op::Get, Some(kind), name, [0, 0], || {
            self.inner.get(kind, name)
        })
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(Op::GetRange, Some(kind), name, [offset, len], || {
            self.inner.get_range(kind, name, offset, len)
        })
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        self.run(Op::List, Some(kind), "", [0, 0], || self.inner.list(kind))
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.run(Op::Delete, Some(kind), name, [0, 0], || {
            self.inner.delete(kind, name)
        })
    }
    fn remove_stale_temporaries(&self, min_age: Duration) -> Result<Vec<(String, u64)>> {
        let secs = min_age.as_secs();
        self.run(Op::RemoveStaleTemporaries, None, "", [secs, 0], || {
            self.inner.remove_stale_temporaries(min_age)
        })
    }
    fn request_counts(&self) -> Option<super::counting::RequestCounts> {
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

    fn faulty(plan: FaultPlan) -> (Arc<MemBackend>, FaultyBackend) {
        let mem = Arc::new(MemBackend::new());
        let f = FaultyBackend::new(mem.clone(), plan);
        (mem, f)
    }

    #[test]
    fn faults_before_do_nothing_and_faults_after_lose_the_answer() {
        let (mem, f) = faulty(FaultPlan::new(1.0, 1).at(FaultPoint::Before));
        let e = f.put(ObjectKind::Pack, "ab12", b"x").unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("before the operation"), "{e}");
        assert!(!mem.exists(ObjectKind::Pack, "ab12").unwrap());

        let (mem, f) = faulty(FaultPlan::new(1.0, 1).at(FaultPoint::After));
        let e = f.put(ObjectKind::Pack, "ab12", b"x").unwrap_err();
        assert!(e.is_transient() && e.to_string().contains("after the operation"));
        assert_eq!(mem.get(ObjectKind::Pack, "ab12").unwrap(), b"x");
        assert!(f.delete(ObjectKind::Pack, "ab12").is_err());
        assert!(!mem.exists(ObjectKind::Pack, "ab12").unwrap());
        assert_eq!((f.injected(), f.injected_after()), (2, 2));
        // Create is spared unless asked for; turned off, nothing fails.
        f.create().unwrap();
        f.set_enabled(false);
        f.put(ObjectKind::Pack, "cd34", b"y").unwrap();
    }

    #[test]
    fn the_share_is_kept_and_the_same_seed_gives_the_same_faults() {
        let run = |seed| {
            let (_, f) = faulty(FaultPlan::new(0.3, seed));
            (0..2000)
                .map(|i| f.put(ObjectKind::Index, &format!("{i:04x}"), b"x").is_err())
                .collect::<Vec<bool>>()
        };
        let a = run(7);
        let failed = a.iter().filter(|x| **x).count();
        assert!((450..750).contains(&failed), "{failed} of 2000 failed");
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        // Only the chosen operations fail.
        let (_, f) = faulty(FaultPlan::new(1.0, 1).ops(&[Op::Get]));
        f.put(ObjectKind::Key, "k", b"x").unwrap();
        assert!(f.get(ObjectKind::Key, "k").is_err());
        assert!(f.exists(ObjectKind::Key, "k").unwrap());
    }
}
