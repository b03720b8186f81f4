//! The local state of jobs: the run history `tresor status` and the next run read, and the
//! per-job lock that keeps two runs of one job apart.
//!
//! Layout under the state directory (see [`default_dir`]):
//!
//! - `history/NAME.json`: the job's last [`MAX_RUNS`] runs, oldest first, as a JSON array of
//!   [`RunRecord`]. Rewritten whole after each run, crash-safely (temporary file, fsync,
//!   rename, fsync of the directory): a crash leaves the old history or the new one, never
//!   half of one. A history that cannot be parsed is reported, not overwritten silently.
//! - `locks/NAME.lock`: an empty file a run holds an exclusive `flock` on. The kernel drops
//!   the lock when the process dies, so a crashed run never blocks the next one.
//!
//! The history is a convenience: the last successful snapshot of a job is also in the
//! repository (its snapshots carry the tag `job:NAME`), which `tresor status` falls back to.

#![forbid(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::jobs::config::Overlap;

/// Runs kept per job.
pub const MAX_RUNS: usize = 200;

/// The state directory: `$TRESOR_STATE_DIR`, else `$XDG_STATE_HOME/tresor`, else
/// `~/.local/state/tresor`, else (no `HOME`, as in a bare cron environment) `/var/lib/tresor`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRESOR_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("tresor");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local").join("state").join("tresor"),
        None => PathBuf::from("/var/lib/tresor"),
    }
}

/// One step of a recorded run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// A step's name, as in [`crate::jobs::run::StepReport`] (`before` … `notify`).
    pub step: String,
    /// `ok`, `warning`, `failed`, `skipped` or `not-due`.
    pub result: String,
    /// Its exit code (0 unless it failed or warned).
    pub exit_code: u8,
    /// When it started (RFC 3339).
    pub started: String,
    /// How long it took.
    pub seconds: f64,
    /// What went wrong, or what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The source of a source's hook step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One run of a job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// The job.
    pub job: String,
    /// Start and end (RFC 3339, UTC).
    pub started: String,
    /// End.
    pub ended: String,
    /// Seconds it took.
    pub seconds: f64,
    /// The worst step's result.
    pub result: String,
    /// The worst step's exit code.
    pub exit_code: u8,
    /// The snapshot written, if one was.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Bytes the snapshot added to the repository.
    #[serde(default)]
    pub bytes_added: Option<u64>,
    /// Bytes of the repository's packs at the end of the run.
    #[serde(default)]
    pub repository_bytes: Option<u64>,
    /// Each step.
    pub steps: Vec<StepRecord>,
}

impl RunRecord {
    /// Whether the run wrote its snapshot (it may have warned).
    pub fn succeeded(&self) -> bool {
        matches!(self.result.as_str(), "ok" | "warning") && self.snapshot.is_some()
    }

    /// The step named `step`, if it ran with `result`.
    pub fn step_with(&self, step: &str, result: &str) -> Option<&StepRecord> {
        self.steps
            .iter()
            .find(|s| s.step == step && s.result == result)
    }
}

fn history_file(dir: &Path, job: &str) -> PathBuf {
    dir.join("history").join(format!("{job}.json"))
}

/// The recorded runs of `job`, oldest first (empty when there are none).
pub fn history(dir: &Path, job: &str) -> Result<Vec<RunRecord>> {
    let f = history_file(dir, job);
    let bytes = match std::fs::read(&f) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", f.display()), e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(
            f.display().to_string(),
            format!("not a run history ({e}); move it away to start a new one"),
        )
    })
}

/// Appends `run` to its job's history (keeping the last [`MAX_RUNS`]), crash-safely. The
/// caller holds the job's [`JobLock`], so no other run writes the file meanwhile.
pub fn record(dir: &Path, run: &RunRecord) -> Result<()> {
    let mut runs = history(dir, &run.job)?;
    runs.push(run.clone());
    let excess = runs.len().saturating_sub(MAX_RUNS);
    runs.drain(..excess);
    let f = history_file(dir, &run.job);
    if let Some(parent) = f.parent() {
        crate::repo::catalog::private_dir_all(parent)?;
    }
    let bytes = serde_json::to_vec_pretty(&runs)
        .map_err(|e| Error::InvalidArgument(format!("encoding the run history: {e}")))?;
    crate::backend::local::write_atomic(&f, &bytes)
}

/// An exclusive hold on one job: released when dropped (or when the process dies).
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

/// Takes `job`'s lock. With [`Overlap::Wait`] waits for a running one to end; with
/// [`Overlap::Skip`] returns `None` at once when one is running.
pub fn lock_job(dir: &Path, job: &str, overlap: Overlap) -> Result<Option<JobLock>> {
    use rustix::fs::{FlockOperation, flock};
    let locks = dir.join("locks");
    crate::repo::catalog::private_dir_all(&locks)?;
    let path = locks.join(format!("{job}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    let op = match overlap {
        Overlap::Wait => FlockOperation::LockExclusive,
        Overlap::Skip => FlockOperation::NonBlockingLockExclusive,
    };
    loop {
        match flock(&file, op) {
            Ok(()) => return Ok(Some(JobLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) if overlap == Overlap::Skip => return Ok(None),
            Err(rustix::io::Errno::INTR) => {
                crate::interrupt::check()?;
                continue;
            }
            Err(e) => {
                return Err(Error::io(
                    format!("locking {}", path.display()),
                    std::io::Error::from(e),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, n: u64) -> RunRecord {
        RunRecord {
            job: job.into(),
            started: format!("2026-01-01T00:00:{:02}Z", n % 60),
            ended: "2026-01-01T00:01:00Z".into(),
            seconds: 1.0,
            result: "ok".into(),
            exit_code: 0,
            snapshot: Some(format!("{n:064x}")),
            bytes_added: Some(n),
            repository_bytes: Some(10 * n),
            steps: vec![],
        }
    }

    #[test]
    fn history_is_appended_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        assert!(history(d.path(), "web").unwrap().is_empty());
        for n in 0..(MAX_RUNS as u64 + 5) {
            record(d.path(), &run("web", n)).unwrap();
        }
        let h = history(d.path(), "web").unwrap();
        assert_eq!(h.len(), MAX_RUNS);
        assert_eq!(h.last().unwrap().bytes_added, Some(MAX_RUNS as u64 + 4));
        assert_eq!(h[0].bytes_added, Some(5));
        std::fs::write(d.path().join("history/web.json"), b"{half").unwrap();
        assert!(matches!(
            history(d.path(), "web"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_second_lock_of_one_job_skips_or_waits() {
        let d = tempfile::tempdir().unwrap();
        let held = lock_job(d.path(), "web", Overlap::Skip).unwrap().unwrap();
        assert!(lock_job(d.path(), "web", Overlap::Skip).unwrap().is_none());
        assert!(lock_job(d.path(), "db", Overlap::Skip).unwrap().is_some());
        let dir = d.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let l = lock_job(&dir, "web", Overlap::Wait).unwrap();
            (l.is_some(), t.elapsed())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
        let (got, waited) = waiter.join().unwrap();
        assert!(got && waited >= std::time::Duration::from_millis(250));
    }
}
