//! Repository locks: who is working on the repository, so that prune never pulls data from
//! under a running backup, and a crashed run never blocks cron for days.
//!
//! A lock is a sealed JSON object in `locks/` (named by the hash of its bytes) saying host, pid
//! (and the pid's start time, so a reused pid is not mistaken for the holder), user, operation,
//! shared or exclusive, and when it was created and last refreshed. Protocol:
//!
//! 1. write our lock object (durable);
//! 2. list the locks; remove the stale ones (holder on this host whose process is gone, or not
//!    refreshed for [`LockTiming::stale_after`]; damaged lock objects too), each with a message;
//! 3. if any other lock conflicts (either side exclusive), remove ours and retry until the
//!    `retry` budget is spent, then fail naming the holder.
//!
//! Both writers always see each other after step 1, so two conflicting operations never both
//! proceed (at worst both back off and retry with jitter). While held, a thread refreshes the
//! lock every [`LockTiming::refresh_every`] by writing a new object and deleting the old one;
//! dropping the [`LockGuard`] deletes it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ObjectKind};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format;
use crate::id::ObjectId;

/// What a lock object says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Start time of that process (clock ticks since boot, from /proc), if known.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// User running it.
    pub user: String,
    /// What it is doing ("snapshot create", "prune", …).
    pub operation: String,
    /// Exclusive (prune, forget, repair) or shared (create, restore, check, mount).
    pub exclusive: bool,
    /// Unix seconds when taken.
    pub created: i64,
    /// Unix seconds of the last refresh.
    pub refreshed: i64,
    /// Random, so two locks never share a name.
    pub nonce: String,
}

impl LockInfo {
    /// One line naming the holder, for messages.
    pub fn describe(&self) -> String {
        let since = chrono::DateTime::from_timestamp(self.created, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        format!(
            "{} lock held by `{}` (pid {} on {}, user {}) since {since}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.operation,
            self.pid,
            self.host,
            self.user
        )
    }

    fn seal(&self, key: &MasterKey) -> Result<(String, Vec<u8>)> {
        let json = serde_json::to_vec(self).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let sealed = key.seal(format::aad::LOCK, &json)?;
        Ok((ObjectId::of_bytes(&sealed).to_hex(), sealed))
    }

    fn open(key: &MasterKey, name: &str, stored: &[u8]) -> Result<LockInfo> {
        let what = || format!("lock {name}");
        if ObjectId::of_bytes(stored).to_hex() != name {
            return Err(Error::corrupt(what(), "content does not match its name"));
        }
        let plain = key.open(format::aad::LOCK, stored, &what)?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(what(), e.to_string()))
    }
}

/// Timing of the protocol (tests shorten it).
#[derive(Clone, Copy, Debug)]
pub struct LockTiming {
    /// How often a held lock is rewritten.
    pub refresh_every: Duration,
    /// A lock not refreshed for this long is stale, wherever its holder runs.
    pub stale_after: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming {
            refresh_every: Duration::from_secs(5 * 60),
            stale_after: Duration::from_secs(30 * 60),
        }
    }
}

/// The first 8 characters of an object name (all of it if shorter: names in `locks/` are
/// whatever files are there).
fn short(name: &str) -> &str {
    name.get(..8).unwrap_or(name)
}

/// Start time of a process (field 22 of /proc/PID/stat), if it runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Why a lock is stale, if it is.
fn stale_reason(info: &LockInfo, host: &str, now: i64, timing: &LockTiming) -> Option<String> {
    if info.host == host && Path::new("/proc/self").exists() {
        match process_start(info.pid) {
            None => return Some(format!("process {} is gone", info.pid)),
            Some(start) if info.pid_start.is_some_and(|s| s != start) => {
                return Some(format!("process {} is gone (its pid was reused)", info.pid));
            }
            Some(_) => {}
        }
    }
    let age = now.saturating_sub(info.refreshed);
    if age > timing.stale_after.as_secs() as i64 {
        return Some(format!("not refreshed for {} minutes", age / 60));
    }
    None
}

/// Every lock in the repository: (name, its info or why it cannot be read).
pub fn list(
    backend: &dyn Backend,
    key: &MasterKey,
) -> Result<Vec<(String, std::result::Result<LockInfo, String>)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(ObjectKind::Lock)? {
        let info = match backend.get(ObjectKind::Lock, &name) {
            Ok(bytes) => LockInfo::open(key, &name, &bytes).map_err(|e| e.to_string()),
            // Deleted between list and get: its holder just finished.
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        out.push((name, info));
    }
    Ok(out)
}

/// Removes stale (and unreadable) locks; returns one message per removed lock.
pub fn remove_stale(
    backend: &dyn Backend,
    key: &MasterKey,
    timing: &LockTiming,
) -> Result<Vec<String>> {
    let host = crate::repo::hostname();
    let now = chrono::Utc::now().timestamp();
    let mut removed = Vec::new();
    for (name, info) in list(backend, key)? {
        let why = match &info {
            Ok(i) => stale_reason(i, &host, now, timing).map(|r| format!("{}: {r}", i.describe())),
            Err(e) => Some(format!("unreadable lock object: {e}")),
        };
        if let Some(why) = why {
            backend.delete(ObjectKind::Lock, &name)?;
            removed.push(format!("removed stale lock {}: {why}", short(&name)));
        }
    }
    Ok(removed)
}

/// A held lock; dropping it stops the refresher and deletes the lock object.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    stop: Option<Sender<()>>,
    refresher: Option<thread::JoinHandle<()>>,
    /// Stale locks removed while acquiring (for the caller to print).
    pub removed_stale: Vec<String>,
}

impl LockGuard {
    /// The current lock object's name.
    pub fn name(&self) -> String {
        self.name.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let name = self.name();
        let _ = self.backend.delete(ObjectKind::Lock, &name);
    }
}

/// Takes a lock for `operation`, waiting up to `retry` for conflicting holders to finish.
pub fn acquire(
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    operation: &str,
    exclusive: bool,
    retry: Duration,
    timing: LockTiming,
) -> Result<LockGuard> {
    let host = crate::repo::hostname();
    let pid = std::process::id();
    let started = Instant::now();
    let mut removed_stale = Vec::new();
    let mut attempt: u32 = 0;
    loop {
        let now = chrono::Utc::now().timestamp();
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let info = LockInfo {
            host: host.clone(),
            pid,
            pid_start: process_start(pid),
            user: crate::archiver::username(),
            operation: operation.to_string(),
            exclusive,
            created: now,
            refreshed: now,
            nonce: hex::encode(nonce),
        };
        let (name, bytes) = info.seal(&key)?;
        backend.put(ObjectKind::Lock, &name, &bytes)?;
        removed_stale.extend(remove_stale(backend.as_ref(), &key, &timing)?);
        let conflict = list(backend.as_ref(), &key)?
            .into_iter()
            .filter(|(n, _)| *n != name)
            .find_map(|(_, i)| match i {
                Ok(other) if exclusive || other.exclusive => Some(other.describe()),
                _ => None,
            });
        let Some(holder) = conflict else {
            return Ok(start_refresher(
                backend,
                key,
                name,
                info,
                timing,
                removed_stale,
            ));
        };
        backend.delete(ObjectKind::Lock, &name)?;
        let waited = started.elapsed();
        if waited >= retry {
            return Err(Error::Locked(format!(
                "{holder}{}",
                if retry.is_zero() {
                    " (use --retry-lock to wait for it)".to_string()
                } else {
                    format!(" (waited {} s)", waited.as_secs())
                }
            )));
        }
        // Jittered back-off, so two waiters do not keep colliding.
        attempt = attempt.saturating_add(1);
        let mut j = [0u8; 2];
        getrandom::fill(&mut j).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let base = Duration::from_millis(200 * u64::from(attempt.min(25)));
        let jitter = Duration::from_millis(u64::from(u16::from_le_bytes(j)) % 500);
        thread::sleep((base + jitter).min(retry - waited));
    }
}

fn start_refresher(
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    name: String,
    mut info: LockInfo,
    timing: LockTiming,
    removed_stale: Vec<String>,
) -> LockGuard {
    let name = Arc::new(Mutex::new(name));
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let refresher = {
        let (backend, name) = (Arc::clone(&backend), Arc::clone(&name));
        thread::Builder::new()
            .name("tresor-lock".into())
            .spawn(move || {
                // Ends when the guard drops its sender.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(timing.refresh_every)
                {
                    info.refreshed = chrono::Utc::now().timestamp();
                    let Ok((new, bytes)) = info.seal(&key) else {
                        continue;
                    };
                    if backend.put(ObjectKind::Lock, &new, &bytes).is_err() {
                        continue;
                    }
                    if let Ok(mut n) = name.lock() {
                        let old = std::mem::replace(&mut *n, new);
                        let _ = backend.delete(ObjectKind::Lock, &old);
                    }
                }
            })
            .ok()
    };
    LockGuard {
        backend,
        name,
        stop: Some(stop_tx),
        refresher,
        removed_stale,
    }
}

/// `repo unlock`: removes stale locks, or with `all` every lock. Returns one line per lock.
pub fn unlock(
    backend: &dyn Backend,
    key: &MasterKey,
    all: bool,
    timing: &LockTiming,
) -> Result<Vec<String>> {
    if !all {
        return remove_stale(backend, key, timing);
    }
    let mut out = Vec::new();
    for (name, info) in list(backend, key)? {
        backend.delete(ObjectKind::Lock, &name)?;
        out.push(match info {
            Ok(i) => format!("removed lock {}: {}", short(&name), i.describe()),
            Err(e) => format!("removed lock {}: {e}", short(&name)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;

    fn setup() -> (Arc<dyn Backend>, Arc<MasterKey>) {
        let b: Arc<dyn Backend> = Arc::new(MemBackend::new());
        (b, Arc::new(MasterKey::from_secret([5; 32])))
    }

    fn put_foreign(b: &dyn Backend, k: &MasterKey, f: impl FnOnce(&mut LockInfo)) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut info = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            pid_start: None,
            user: "u".into(),
            operation: "snapshot create".into(),
            exclusive: false,
            created: now,
            refreshed: now,
            nonce: "00".into(),
        };
        f(&mut info);
        let (name, bytes) = info.seal(k).unwrap();
        b.put(ObjectKind::Lock, &name, &bytes).unwrap();
        name
    }

    const T: LockTiming = LockTiming {
        refresh_every: Duration::from_millis(50),
        stale_after: Duration::from_secs(60),
    };

    #[test]
    fn shared_locks_coexist_exclusive_ones_do_not() {
        let (b, k) = setup();
        let s1 = acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T).unwrap();
        let s2 = acquire(b.clone(), k.clone(), "restore", false, Duration::ZERO, T).unwrap();
        let err = match acquire(b.clone(), k.clone(), "prune", true, Duration::ZERO, T) {
            Err(e) => e,
            Ok(_) => panic!("exclusive lock granted over shared ones"),
        };
        assert!(err.to_string().contains("held by `"), "{err}");
        // The refused attempt leaves no lock behind.
        assert_eq!(b.list(ObjectKind::Lock).unwrap().len(), 2);
        drop(s1);
        drop(s2);
        assert!(b.list(ObjectKind::Lock).unwrap().is_empty());
        let x = acquire(b.clone(), k.clone(), "prune", true, Duration::ZERO, T).unwrap();
        assert!(acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T).is_err());
        drop(x);
    }

    #[test]
    fn waits_for_a_holder_with_retry() {
        let (b, k) = setup();
        let x = acquire(b.clone(), k.clone(), "prune", true, Duration::ZERO, T).unwrap();
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            drop(x);
        });
        let t = Instant::now();
        let s = acquire(
            b.clone(),
            k.clone(),
            "create",
            false,
            Duration::from_secs(10),
            T,
        );
        assert!(s.is_ok());
        assert!(t.elapsed() >= Duration::from_millis(250));
        releaser.join().unwrap();
    }

    #[test]
    fn stale_locks_are_removed_with_a_message() {
        let (b, k) = setup();
        // On this host, with a pid that does not exist.
        put_foreign(&*b, &k, |i| {
            i.host = crate::repo::hostname();
            i.pid = u32::MAX - 7;
            i.exclusive = true;
        });
        // Elsewhere, but not refreshed for two hours.
        put_foreign(&*b, &k, |i| i.refreshed -= 7200);
        // Damaged.
        b.put(ObjectKind::Lock, "ab", b"garbage").unwrap();
        // Elsewhere and fresh: a live holder, kept.
        put_foreign(&*b, &k, |_| {});
        let g = acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T).unwrap();
        assert_eq!(g.removed_stale.len(), 3, "{:?}", g.removed_stale);
        assert!(g.removed_stale.iter().any(|m| m.contains("is gone")));
        assert!(g.removed_stale.iter().any(|m| m.contains("not refreshed")));
        assert!(g.removed_stale.iter().any(|m| m.contains("unreadable")));
        assert_eq!(b.list(ObjectKind::Lock).unwrap().len(), 2);
        // A live exclusive holder on this host (this very process) is not stale.
        drop(g);
        let name = put_foreign(&*b, &k, |i| {
            i.host = crate::repo::hostname();
            i.pid = std::process::id();
            i.pid_start = process_start(i.pid);
            i.exclusive = true;
        });
        let err = acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T);
        assert!(matches!(err, Err(Error::Locked(_))));
        // unlock without --remove-all keeps it; with it, everything goes.
        assert!(unlock(&*b, &k, false, &T).unwrap().is_empty());
        assert!(b.exists(ObjectKind::Lock, &name).unwrap());
        assert_eq!(unlock(&*b, &k, true, &T).unwrap().len(), 2);
        assert!(b.list(ObjectKind::Lock).unwrap().is_empty());
    }

    #[test]
    fn a_held_lock_is_refreshed() {
        let (b, k) = setup();
        let g = acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T).unwrap();
        let first = g.name();
        thread::sleep(Duration::from_millis(1300));
        let now = g.name();
        assert_ne!(first, now, "the lock object was never rewritten");
        let locks = list(&*b, &k).unwrap();
        assert_eq!(locks.len(), 1, "the old lock object must be deleted");
        let info = locks[0].1.clone().unwrap();
        assert!(info.refreshed > info.created, "{info:?}");
        drop(g);
        assert!(b.list(ObjectKind::Lock).unwrap().is_empty());
    }
}
