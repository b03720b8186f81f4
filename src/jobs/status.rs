//! `tresor status`: per job, how old its last successful snapshot is, how its last run went,
//! its last check, the repository's size; stale or not against its `max-age`. Also the
//! Prometheus text format, printed or written for node_exporter's textfile collector.
//!
//! The figures come from the run history in the state directory, without opening the
//! repository (so a monitoring agent needs no password). When the history has no successful
//! run of a job (a new machine, a lost state directory), the repository is asked: the newest
//! snapshot tagged `job:NAME` is the job's last success.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::jobs::config::Job;
use crate::jobs::state::{self, RunRecord};

/// One job's status.
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    /// The job.
    pub job: String,
    /// When its last successful run ended, or its newest snapshot was taken (RFC 3339).
    pub last_success: Option<String>,
    /// Seconds since then.
    pub last_success_age_seconds: Option<u64>,
    /// The snapshot of the last success.
    pub last_snapshot: Option<String>,
    /// Where the last success was found: `history`, or `repository` (history lost).
    pub last_success_from: Option<&'static str>,
    /// The last run's start, result and exit code.
    pub last_run: Option<LastRun>,
    /// When the check step last ran, and its result.
    pub last_check: Option<LastCheck>,
    /// Bytes of the repository's packs after the last run.
    pub repository_bytes: Option<u64>,
    /// The window (`max-age` of the job, or `--max-age`), in seconds.
    pub max_age_seconds: Option<u64>,
    /// No success within the window (or never).
    pub stale: bool,
    /// Why the repository could not be asked, when it was needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last run, in short.
#[derive(Clone, Debug, Serialize)]
pub struct LastRun {
    /// Start (RFC 3339).
    pub started: String,
    /// `ok`, `warning`, `failed`, `skipped`.
    pub result: String,
    /// Its exit code.
    pub exit_code: u8,
    /// Seconds it took.
    pub seconds: f64,
    /// Bytes its snapshot added.
    pub bytes_added: Option<u64>,
    /// How its notifications went: `ok`, `failed` (a ping or the notification command could
    /// not be delivered), or none when it had none to send.
    pub notify: Option<String>,
    /// Why they failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_error: Option<String>,
}

/// The last check.
#[derive(Clone, Debug, Serialize)]
pub struct LastCheck {
    /// When it ran.
    pub time: String,
    /// `ok` or `failed`.
    pub result: String,
}

fn age(time: &str, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    Some((now - t.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64)
}

/// `job`'s status from the history in `state_dir`; `max_age` replaces the job's own window.
/// With `ask_repository`, a job with no success in its history is looked up in the repository.
pub fn status(
    job: &Job,
    state_dir: &Path,
    max_age: Option<u64>,
    ask_repository: bool,
) -> Result<JobStatus> {
    let now = chrono::Utc::now();
    let history: Vec<RunRecord> = state::history(state_dir, &job.name)?;
    let success = history.iter().rev().find(|r| r.succeeded());
    let mut s = JobStatus {
        job: job.name.clone(),
        last_success: success.map(|r| r.ended.clone()),
        last_success_age_seconds: None,
        last_snapshot: success.and_then(|r| r.snapshot.clone()),
        last_success_from: success.map(|_| "history"),
        last_run: history.last().map(|r| {
            let notify = r
                .steps
                .iter()
                .find(|st| st.step == "notify" && matches!(st.result.as_str(), "ok" | "failed"));
            LastRun {
                started: r.started.clone(),
                result: r.result.clone(),
                exit_code: r.exit_code,
                seconds: r.seconds,
                bytes_added: r.bytes_added,
                notify: notify.map(|st| st.result.clone()),
                notify_error: notify
                    .filter(|st| st.result == "failed")
                    .and_then(|st| st.message.clone()),
            }
        }),
        last_check: history.iter().rev().find_map(|r| {
            r.steps
                .iter()
                .find(|st| st.step == "check" && matches!(st.result.as_str(), "ok" | "failed"))
                .map(|st| LastCheck {
                    time: st.started.clone(),
                    result: st.result.clone(),
                })
        }),
        repository_bytes: history.iter().rev().find_map(|r| r.repository_bytes),
        max_age_seconds: max_age.or(job.max_age),
        stale: false,
        error: None,
    };
    if success.is_none() && ask_repository {
        match newest_job_snapshot(job) {
            Ok(Some((id, time))) => {
                s.last_success = Some(time);
                s.last_snapshot = Some(id);
                s.last_success_from = Some("repository");
            }
            Ok(None) => {}
            Err(e) => s.error = Some(e.to_string()),
        }
    }
    s.last_success_age_seconds = s.last_success.as_deref().and_then(|t| age(t, now));
    s.stale = match (s.max_age_seconds, s.last_success_age_seconds) {
        (Some(max), Some(a)) => a > max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    Ok(s)
}

/// The newest snapshot tagged `job:NAME` in the job's repository: (id, time).
pub fn newest_job_snapshot(job: &Job) -> Result<Option<(String, String)>> {
    let repo = crate::jobs::run::open_repo(job)?;
    let (snaps, _) = repo.snapshots()?;
    let tag = job.tag();
    Ok(snaps
        .iter()
        .filter(|(_, s)| s.tags.contains(&tag))
        .max_by_key(|(_, s)| s.timestamp())
        .map(|(id, s)| (id.to_hex(), s.time.clone())))
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unix(time: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.timestamp())
}

/// The statuses in the Prometheus text exposition format.
pub fn prometheus(statuses: &[(JobStatus, Option<RunRecord>)]) -> String {
    type Metric = (
        &'static str,
        &'static str,
        fn(&JobStatus, Option<&RunRecord>) -> Option<f64>,
    );
    let metrics: [Metric; 9] = [
        (
            "tresor_job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run (or newest snapshot).",
            |s, _| s.last_success.as_deref().and_then(unix).map(|t| t as f64),
        ),
        (
            "tresor_job_last_run_timestamp_seconds",
            "Unix time the job's last run started.",
            |_, r| r.and_then(|r| unix(&r.started)).map(|t| t as f64),
        ),
        (
            "tresor_job_last_run_duration_seconds",
            "How long the job's last run took.",
            |_, r| r.map(|r| r.seconds),
        ),
        (
            "tresor_job_last_run_exit_code",
            "Exit code of the job's last run (0 is success).",
            |_, r| r.map(|r| f64::from(r.exit_code)),
        ),
        (
            "tresor_job_last_run_bytes_added",
            "Bytes the job's last snapshot added to the repository.",
            |_, r| r.and_then(|r| r.bytes_added).map(|b| b as f64),
        ),
        (
            "tresor_job_last_run_notify_failed",
            "1 when the job's last run could not deliver a notification.",
            |_, r| {
                r.map(|r| {
                    if r.step_with("notify", "failed").is_some() {
                        1.0
                    } else {
                        0.0
                    }
                })
            },
        ),
        (
            "tresor_job_repository_bytes",
            "Bytes of the repository's packs after the job's last run.",
            |s, _| s.repository_bytes.map(|b| b as f64),
        ),
        (
            "tresor_job_max_age_seconds",
            "The job's max-age window.",
            |s, _| s.max_age_seconds.map(|a| a as f64),
        ),
        (
            "tresor_job_stale",
            "1 when the job has not succeeded within its max-age.",
            |s, _| Some(if s.stale { 1.0 } else { 0.0 }),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (s, r) in statuses {
            if let Some(v) = value(s, r.as_ref()) {
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {v}", escape_label(&s.job));
            }
        }
    }
    out
}

/// The statuses of `jobs` with their last runs (history only), for [`prometheus`].
pub fn collect(jobs: &[&Job], state_dir: &Path) -> Result<Vec<(JobStatus, Option<RunRecord>)>> {
    jobs.iter()
        .map(|j| {
            let s = status(j, state_dir, None, false)?;
            let last = state::history(state_dir, &j.name)?.pop();
            Ok((s, last))
        })
        .collect()
}

/// Writes the textfile for node_exporter (0644, crash-safe: it never reads half a file).
pub fn write_textfile(path: &Path, jobs: &[&Job], state_dir: &Path) -> Result<()> {
    let text = prometheus(&collect(jobs, state_dir)?);
    crate::backend::local::write_atomic_mode(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::config::{Overrides, parse};

    #[test]
    fn stale_by_history_and_prometheus_text() {
        let d = tempfile::tempdir().unwrap();
        let c = parse(
            "[jobs.web]\nrepository = \"/nonexistent\"\npassword-file = \"/p\"\npaths = [\"/x\"]\nmax-age = \"1h\"\n",
            Path::new("/t.toml"),
            &Overrides::default(),
        )
        .unwrap();
        let job = &c.jobs[0];
        let s = status(job, d.path(), None, false).unwrap();
        assert!(
            s.stale && s.last_success.is_none(),
            "never succeeded: stale"
        );
        let old = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
        let rec = RunRecord {
            job: "web".into(),
            started: old.clone(),
            ended: old,
            seconds: 2.5,
            result: "ok".into(),
            exit_code: 0,
            snapshot: Some("ab".repeat(32)),
            bytes_added: Some(1234),
            repository_bytes: Some(99),
            steps: vec![],
        };
        state::record(d.path(), &rec).unwrap();
        let s = status(job, d.path(), None, false).unwrap();
        assert!(s.stale, "3 h old against 1 h");
        let s = status(job, d.path(), Some(4 * 3600), false).unwrap();
        assert!(!s.stale, "3 h old against --max-age 4h");
        let text = prometheus(&collect(&[job], d.path()).unwrap());
        assert!(
            text.contains("tresor_job_last_run_bytes_added{job=\"web\"} 1234"),
            "{text}"
        );
        assert!(text.contains("tresor_job_stale{job=\"web\"} 1"), "{text}");
        assert!(
            text.contains("# TYPE tresor_job_repository_bytes gauge"),
            "{text}"
        );
    }
}
