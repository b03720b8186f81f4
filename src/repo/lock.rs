//! Repository locks: who is working on the repository, so that prune never pulls data from
//! under a running backup, and a crashed run never blocks cron for days.
//!
//! A lock is a sealed JSON object in `locks/` (named by the hash of its bytes) saying host, pid,
//! the pid's start time, the kernel's boot id and the holder's PID namespace, user, operation,
//! shared or exclusive, and when it was created and last refreshed. Protocol:
//!
//! 1. write our lock object (durable, create-only: [`Backend::put_new`]);
//! 2. list the locks; remove the stale ones, each with a message;
//! 3. if any other lock conflicts (either side exclusive), remove ours and retry until the
//!    `retry` budget is spent, then fail naming the holder.
//!
//! Both writers always see each other after step 1, so two conflicting operations never both
//! proceed (at worst both back off and retry with jitter).
//!
//! # When a lock is stale
//!
//! A lock is stale when it was not refreshed for [`LockTiming::stale_after`], wherever its holder
//! runs. Earlier than that, only when its holder is *provably* dead: the lock names this host,
//! this kernel (same boot id) and this PID namespace, and `kill(pid, 0)` says no such process
//! (or `/proc` — when it is our own namespace's — shows another process under that pid, started
//! at another time). A pid means nothing in another namespace (a backup in a container that
//! shares the host name, `docker exec … pg_dump`), and `/proc/<pid>` may be invisible although
//! the process runs (`hidepid=2`): such locks are judged by refresh time alone. Locks written
//! before boot id and namespace were recorded are judged by refresh time too.
//!
//! # While held
//!
//! A thread refreshes the lock every [`LockTiming::refresh_every`]: it first re-reads its current
//! object; if that is gone or no longer ours (another process judged it stale, or `repo unlock
//! --remove-all`), the lock is *lost*: it is not recreated, and [`LockGuard::ensure_held`] fails
//! from then on. Otherwise it writes a new object and deletes the old one. Writers call
//! `ensure_held` (which also re-reads the object itself) before each step that commits work
//! (index objects, the snapshot, prune's deletions), so an operation whose lock vanished stops
//! with a clear error instead of writing a snapshot whose data a prune may have taken.
//! Dropping the [`LockGuard`] deletes the lock object.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, Result};
use crate::format;
use crate::format::crypto::MasterKey;
use crate::format::id::ObjectId;

/// What a lock object says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder, in its own PID namespace.
    pub pid: u32,
    /// Start time of that process (clock ticks since boot, from /proc), if known.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// The holder kernel's boot id (`/proc/sys/kernel/random/boot_id`), if known.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The holder's PID namespace as `DEV:INODE` of `/proc/self/ns/pid`, if known.
    #[serde(default)]
    pub pid_ns: Option<String>,
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

/// Who this process is, as far as a lock can say: what lets another process on the same
/// kernel and in the same PID namespace tell whether we still run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Host name.
    pub host: String,
    /// Our pid, in our PID namespace.
    pub pid: u32,
    /// Our start time (clock ticks since boot), if `/proc/self/stat` tells it.
    pub pid_start: Option<u64>,
    /// The kernel's boot id, if readable.
    pub boot_id: Option<String>,
    /// Our PID namespace (`DEV:INODE`), if readable.
    pub pid_ns: Option<String>,
}

impl ProcessIdentity {
    /// This process.
    pub fn current() -> ProcessIdentity {
        use std::os::unix::fs::MetadataExt;
        ProcessIdentity {
            host: crate::repo::hostname(),
            pid: std::process::id(),
            pid_start: start_time_from(Path::new("/proc/self/stat")),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            pid_ns: std::fs::metadata("/proc/self/ns/pid")
                .ok()
                .map(|m| format!("{}:{}", m.dev(), m.ino())),
        }
    }

    /// Whether a lock's pid can be judged here: same host, same kernel, same PID namespace.
    fn can_judge(&self, info: &LockInfo) -> bool {
        info.host == self.host
            && self.boot_id.is_some()
            && info.boot_id == self.boot_id
            && self.pid_ns.is_some()
            && info.pid_ns == self.pid_ns
    }
}

/// Field 22 of a `/proc/…/stat` file: the process's start time in clock ticks since boot.
fn start_time_from(stat: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `/proc` is the proc file system of our own PID namespace (so `/proc/<pid>` means the
/// process that `kill(pid, …)` would reach): `/proc/self` then names our own pid.
fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|l| l.to_str().and_then(|s| s.parse::<u32>().ok()))
        == Some(std::process::id())
}

/// What can be known of a process in our own PID namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    /// No process has this pid.
    Gone,
    /// A process has this pid, but it started at another time than the lock's holder.
    Reused,
    /// A process with this pid runs (and, as far as can be seen, it is the holder).
    Alive,
}

fn liveness(pid: u32, start: Option<u64>) -> Liveness {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Liveness::Gone;
    };
    // kill(pid, 0) sees every process of our namespace, also those `hidepid` hides in /proc
    // (EPERM: it exists but is not ours to signal).
    match rustix::process::test_kill_process(p) {
        Err(e) if e == rustix::io::Errno::SRCH => return Liveness::Gone,
        _ => {}
    }
    if let Some(start) = start
        && proc_is_ours()
        && let Some(now) = start_time_from(&Path::new("/proc").join(pid.to_string()).join("stat"))
        && now != start
    {
        return Liveness::Reused;
    }
    Liveness::Alive
}

/// Why a lock is stale, if it is (see the module documentation).
fn stale_reason(
    info: &LockInfo,
    me: &ProcessIdentity,
    now: i64,
    timing: &LockTiming,
) -> Option<String> {
    if me.can_judge(info) {
        match liveness(info.pid, info.pid_start) {
            Liveness::Gone => return Some(format!("process {} is gone", info.pid)),
            Liveness::Reused => {
                return Some(format!("process {} is gone (its pid was reused)", info.pid));
            }
            Liveness::Alive => {}
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
    let me = ProcessIdentity::current();
    let now = chrono::Utc::now().timestamp();
    let mut removed = Vec::new();
    for (name, info) in list(backend, key)? {
        let why = match &info {
            Ok(i) => stale_reason(i, &me, now, timing).map(|r| format!("{}: {r}", i.describe())),
            Err(e) => Some(format!("unreadable lock object: {e}")),
        };
        if let Some(why) = why {
            backend.delete(ObjectKind::Lock, &name)?;
            removed.push(format!("removed stale lock {}: {why}", short(&name)));
        }
    }
    Ok(removed)
}

/// The state a held lock shares with its refresher thread.
struct Held {
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    /// The current lock object's name.
    name: Mutex<String>,
    /// Our nonce: an object that opens to another nonce is not ours.
    nonce: String,
    /// Why the lock was lost, once it was.
    lost: Mutex<Option<String>>,
}

impl Held {
    fn current(&self) -> String {
        self.name.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    fn mark_lost(&self, why: String) {
        if let Ok(mut l) = self.lost.lock()
            && l.is_none()
        {
            *l = Some(why);
        }
    }

    /// Re-reads the current lock object: `Ok(false)` when it is gone or no longer ours.
    fn still_ours(&self) -> Result<bool> {
        let name = self.current();
        match self.backend.get(ObjectKind::Lock, &name) {
            Ok(bytes) => Ok(LockInfo::open(&self.key, &name, &bytes)
                .map(|i| i.nonce == self.nonce)
                .unwrap_or(false)),
            Err(Error::Missing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Locks this process holds, so that an emergency exit (a second Ctrl-C) can remove them.
static HELD: Mutex<Vec<(u64, Arc<Held>)>> = Mutex::new(Vec::new());
static NEXT_HELD: AtomicU64 = AtomicU64::new(0);

/// Deletes the lock objects of every lock this process holds (best effort). For an exit that
/// cannot wait for the operations to unwind; a normal exit drops the guards instead.
pub fn release_all_for_exit() {
    let held: Vec<Arc<Held>> = match HELD.lock() {
        Ok(h) => h.iter().map(|(_, h)| Arc::clone(h)).collect(),
        Err(_) => return,
    };
    for h in held {
        let _ = h.backend.delete(ObjectKind::Lock, &h.current());
    }
}

/// A held lock; dropping it stops the refresher and deletes the lock object.
pub struct LockGuard {
    held: Arc<Held>,
    slot: u64,
    stop: Option<Sender<()>>,
    refresher: Option<thread::JoinHandle<()>>,
    /// Stale locks removed while acquiring (for the caller to print).
    pub removed_stale: Vec<String>,
    /// Other locks present when this one was granted (shared holders, for a shared lock).
    pub others_at_start: usize,
}

impl LockGuard {
    /// The current lock object's name.
    pub fn name(&self) -> String {
        self.held.current()
    }

    /// Fails unless the lock is still ours: neither the refresher nor a fresh read of the lock
    /// object found it gone or replaced. Writers call this before committing work.
    pub fn ensure_held(&self) -> Result<()> {
        if let Some(why) = self.held.lost() {
            return Err(Error::LockLost(why));
        }
        if !self.held.still_ours()? {
            let why = format!(
                "lock object {} was removed by another process",
                short(&self.name())
            );
            self.held.mark_lost(why.clone());
            return Err(Error::LockLost(why));
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Ok(mut held) = HELD.lock() {
            held.retain(|(slot, _)| *slot != self.slot);
        }
        // A lost lock's name may now belong to nobody; deleting a missing object is harmless.
        let _ = self
            .held
            .backend
            .delete(ObjectKind::Lock, &self.held.current());
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
    let me = ProcessIdentity::current();
    let started = Instant::now();
    let mut removed_stale = Vec::new();
    let mut attempt: u32 = 0;
    loop {
        let now = chrono::Utc::now().timestamp();
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let info = LockInfo {
            host: me.host.clone(),
            pid: me.pid,
            pid_start: me.pid_start,
            boot_id: me.boot_id.clone(),
            pid_ns: me.pid_ns.clone(),
            user: crate::repo::username(),
            operation: operation.to_string(),
            exclusive,
            created: now,
            refreshed: now,
            nonce: hex::encode(nonce),
        };
        let (name, bytes) = info.seal(&key)?;
        // Create-only: a lock object is never written over one already there.
        backend.put_new(ObjectKind::Lock, &name, &bytes)?;
        removed_stale.extend(remove_stale(backend.as_ref(), &key, &timing)?);
        let others: Vec<std::result::Result<LockInfo, String>> = list(backend.as_ref(), &key)?
            .into_iter()
            .filter(|(n, _)| *n != name)
            .map(|(_, i)| i)
            .collect();
        let conflict = others.iter().find_map(|i| match i {
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
                others.len(),
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
    others_at_start: usize,
) -> LockGuard {
    let held = Arc::new(Held {
        backend,
        key,
        name: Mutex::new(name),
        nonce: info.nonce.clone(),
        lost: Mutex::new(None),
    });
    let slot = NEXT_HELD.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut h) = HELD.lock() {
        h.push((slot, Arc::clone(&held)));
    }
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let refresher = {
        let held = Arc::clone(&held);
        thread::Builder::new()
            .name("tresor-lock".into())
            .spawn(move || {
                // Ends when the guard drops its sender, or when the lock is lost.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(timing.refresh_every)
                {
                    match held.still_ours() {
                        Ok(true) => {}
                        Ok(false) => {
                            held.mark_lost(format!(
                                "lock object {} was removed by another process (judged stale, \
                                 or `repo unlock --remove-all`)",
                                short(&held.current())
                            ));
                            return;
                        }
                        // A storage hiccup: try again at the next refresh.
                        Err(_) => continue,
                    }
                    info.refreshed = chrono::Utc::now().timestamp();
                    let Ok((new, bytes)) = info.seal(&held.key) else {
                        continue;
                    };
                    // Within the same second the new object would be the current one.
                    if new == held.current() {
                        continue;
                    }
                    if held
                        .backend
                        .put_new(ObjectKind::Lock, &new, &bytes)
                        .is_err()
                    {
                        continue;
                    }
                    if let Ok(mut n) = held.name.lock() {
                        let old = std::mem::replace(&mut *n, new);
                        let _ = held.backend.delete(ObjectKind::Lock, &old);
                    }
                }
            })
            .ok()
    };
    LockGuard {
        held,
        slot,
        stop: Some(stop_tx),
        refresher,
        removed_stale,
        others_at_start,
    }
}

/// `repo unlock`: removes stale locks, or with `all` every lock. Returns one line per lock.
pub fn remove_locks(
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
            boot_id: None,
            pid_ns: None,
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
        let me = ProcessIdentity::current();
        // On this host, kernel and PID namespace, with a pid that does not exist.
        put_foreign(&*b, &k, |i| {
            i.host = me.host.clone();
            i.boot_id = me.boot_id.clone();
            i.pid_ns = me.pid_ns.clone();
            i.pid = 999_999_999;
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
            i.host = me.host.clone();
            i.boot_id = me.boot_id.clone();
            i.pid_ns = me.pid_ns.clone();
            i.pid = me.pid;
            i.pid_start = me.pid_start;
            i.exclusive = true;
        });
        let err = acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T);
        assert!(matches!(err, Err(Error::Locked(_))));
        // unlock without --remove-all keeps it; with it, everything goes.
        assert!(remove_locks(&*b, &k, false, &T).unwrap().is_empty());
        assert!(b.exists(ObjectKind::Lock, &name).unwrap());
        assert_eq!(remove_locks(&*b, &k, true, &T).unwrap().len(), 2);
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

    /// A pid is judged only in its own PID namespace on the same kernel: a lock of a process
    /// in another namespace (a container sharing the host name), or one written before boot id
    /// and namespace were recorded, is kept until its refresh time runs out, even when no
    /// process of ours has its pid.
    #[test]
    fn a_pid_from_another_namespace_or_an_old_lock_is_judged_by_refresh_time_only() {
        let (b, k) = setup();
        let me = ProcessIdentity::current();
        assert!(
            me.boot_id.is_some() && me.pid_ns.is_some(),
            "this test needs /proc: {me:?}"
        );
        let dead = 999_999_999;
        let other_ns = put_foreign(&*b, &k, |i| {
            i.host = me.host.clone();
            i.boot_id = me.boot_id.clone();
            i.pid_ns = Some("0:4026531836000".into());
            i.pid = dead;
            i.exclusive = true;
        });
        let other_kernel = put_foreign(&*b, &k, |i| {
            i.host = me.host.clone();
            i.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
            i.pid_ns = me.pid_ns.clone();
            i.pid = dead;
        });
        let old_format = put_foreign(&*b, &k, |i| {
            i.host = me.host.clone();
            i.pid = dead;
        });
        assert!(remove_stale(&*b, &k, &T).unwrap().is_empty());
        for n in [&other_ns, &other_kernel, &old_format] {
            assert!(b.exists(ObjectKind::Lock, n).unwrap());
        }
        // The exclusive one blocks us, as a live holder would.
        assert!(matches!(
            acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T),
            Err(Error::Locked(_))
        ));
        // Once not refreshed for longer than stale_after, they go.
        let short = LockTiming {
            refresh_every: T.refresh_every,
            stale_after: Duration::ZERO,
        };
        thread::sleep(Duration::from_millis(1100));
        assert_eq!(remove_stale(&*b, &k, &short).unwrap().len(), 3);
    }

    /// A lock removed behind its holder's back is lost: `ensure_held` fails at once (it re-reads
    /// the object), the refresher does not recreate it, and later calls keep failing.
    #[test]
    fn a_lock_removed_by_another_process_is_lost_not_recreated() {
        let (b, k) = setup();
        let g = acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T).unwrap();
        g.ensure_held().unwrap();
        remove_locks(&*b, &k, true, &T).unwrap();
        let err = g.ensure_held().unwrap_err();
        assert!(matches!(err, Error::LockLost(_)), "{err}");
        assert!(
            err.to_string().contains("removed by another process"),
            "{err}"
        );
        thread::sleep(Duration::from_millis(300));
        assert!(
            b.list(ObjectKind::Lock).unwrap().is_empty(),
            "the refresher recreated a lost lock"
        );
        assert!(matches!(g.ensure_held(), Err(Error::LockLost(_))));

        // The refresher alone notices too (no ensure_held call in between).
        let g2 = acquire(b.clone(), k.clone(), "create", false, Duration::ZERO, T).unwrap();
        b.delete(ObjectKind::Lock, &g2.name()).unwrap();
        thread::sleep(Duration::from_millis(300));
        assert!(g2.held.lost().is_some(), "the refresher did not notice");
        assert!(b.list(ObjectKind::Lock).unwrap().is_empty());
    }
}
