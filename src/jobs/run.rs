//! `tresor run`: one job's steps, in order, with the failure rules.
//!
//! 1. The job's lock (state dir): a second run of the same job waits or skips ([`Overlap`]).
//! 2. The `start` ping.
//! 3. `before` hooks. One failing fails the job before the repository is even opened.
//!    Then each source's `before` hooks (`source-before`), in source order (paths as listed,
//!    then command streams by name); one failing fails the job the same way, and the sources
//!    after it get no hooks at all.
//! 4. `snapshot`: the job's paths and command streams, tagged with its tags and `job:NAME`,
//!    through [`backup::create`], exactly as `snapshot create` does: all sources in one
//!    snapshot. Right after it, in source order, each source whose `before` ran gets its
//!    `after` hooks if the snapshot succeeded (else, or when an `after` failed, its `failure`
//!    hooks), then its `finally` hooks.
//! 5. `forget` with the job's keeps, among the job's own snapshots (tag `job:NAME`), per host.
//! 6. `prune` when due ([`Due`]): a period since the last successful prune, or the unused
//!    share of the stored bytes over a threshold.
//! 7. `check` when due, reading what its `read-data-max-age` and `budget` say; then `drill`
//!    when due: each database source of the new snapshot restored into a scratch database and
//!    its row counts compared ([`crate::db::drill`]).
//! 8. `copy`: the job's snapshots each `copy` target lacks, through [`crate::copy::copy`].
//! 9. `after` hooks when no step failed, else `failure` hooks; then `finally` hooks.
//! 10. The success or fail ping and the notification command (the `notify` step: failed
//!     when a ping, the start one included, or the command failed; that leaves the run's
//!     result alone and makes its exit code [`exit::NOTIFY`] when it would be 0); then the
//!     run is recorded in the history, `notify` step included.
//!
//! A failed snapshot skips forget and prune (old backups are never deleted after a failed new
//! one), check and copy; a failed forget skips prune. The job's result is its worst step's: a failed
//! step outranks a warning, and between two failed steps the higher exit code wins.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{self, Location};
use crate::backup::{self, CreateOptions, Progress};
use crate::check::{self, CheckOptions};
use crate::error::{Error, Result, exit};
use crate::forget::{self, GroupBy};
use crate::format::snapshot::ExcludeRecord;
use crate::jobs::config::{Due, Job};
use crate::jobs::hooks::{self, HookEnv};
use crate::jobs::notify::{self, Ping};
use crate::jobs::sources::SourceHooks;
use crate::jobs::state::{self, RunRecord, StepRecord};
use crate::repo::lock::LockTiming;
use crate::repo::{self, Repo};
use crate::source::SourceSpec;

/// A step's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepResult {
    /// Done.
    Ok,
    /// Not configured, or not run because of an earlier failure.
    Skipped,
    /// Configured but not due this run.
    NotDue,
    /// Done with a problem (a snapshot with unreadable files).
    Warning,
    /// Failed.
    Failed,
}

impl StepResult {
    /// Its name in JSON and the history.
    pub fn as_str(self) -> &'static str {
        match self {
            StepResult::Ok => "ok",
            StepResult::Skipped => "skipped",
            StepResult::NotDue => "not-due",
            StepResult::Warning => "warning",
            StepResult::Failed => "failed",
        }
    }

    fn rank(self) -> u8 {
        match self {
            StepResult::Failed => 2,
            StepResult::Warning => 1,
            _ => 0,
        }
    }
}

/// One step of a run.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// `before`, `source-before`, `snapshot`, `source-after`, `source-failure`,
    /// `source-finally`, `forget`, `prune`, `check`, `copy`, `after`, `failure`, `finally`,
    /// `notify`.
    pub step: &'static str,
    /// Its outcome.
    pub result: StepResult,
    /// Its exit code (see [`exit`]).
    pub exit_code: u8,
    /// When it started (RFC 3339).
    pub started: String,
    /// Seconds it took.
    pub seconds: f64,
    /// What it did or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The source whose hooks these are (`source-before` … `source-finally` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One job's run.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    /// The job.
    pub job: String,
    /// The job's result: `ok`, `warning`, `failed`, or `skipped` (another run was going).
    pub result: StepResult,
    /// The worst step's exit code.
    pub exit_code: u8,
    /// Start (RFC 3339).
    pub started: String,
    /// End (RFC 3339).
    pub ended: String,
    /// Seconds.
    pub seconds: f64,
    /// The snapshot written.
    pub snapshot: Option<String>,
    /// Files in it.
    pub files: Option<u64>,
    /// Bytes it added to the repository.
    pub bytes_added: Option<u64>,
    /// Snapshots forgotten.
    pub forgotten: Option<u64>,
    /// Bytes the prune freed.
    pub bytes_freed: Option<u64>,
    /// Bytes of the repository's packs at the end.
    pub repository_bytes: Option<u64>,
    /// Snapshots copied into the `copy` targets.
    pub copied: Option<u64>,
    /// Each step, in order.
    pub steps: Vec<StepReport>,
    /// Warnings and errors that need a notification that cannot be delivered; the run's
    /// result does not change for them.
    pub notify_warnings: Vec<String>,
    /// The end of the run's log (what the fail ping and `TRESOR_LOG_TAIL` carry).
    #[serde(skip)]
    pub log_tail: String,
}

impl JobReport {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.step == name)
    }

    /// The first failed step (a failed notification is not one: it does not fail the run).
    pub fn failed_step(&self) -> Option<&StepReport> {
        self.steps
            .iter()
            .find(|s| s.result == StepResult::Failed && s.step != "notify")
    }

    /// The history record of this run.
    pub fn record(&self) -> RunRecord {
        RunRecord {
            job: self.job.clone(),
            started: self.started.clone(),
            ended: self.ended.clone(),
            seconds: self.seconds,
            result: self.result.as_str().into(),
            exit_code: self.exit_code,
            snapshot: self.snapshot.clone(),
            bytes_added: self.bytes_added,
            repository_bytes: self.repository_bytes,
            steps: self
                .steps
                .iter()
                .map(|s| StepRecord {
                    step: s.step.into(),
                    result: s.result.as_str().into(),
                    exit_code: s.exit_code,
                    started: s.started.clone(),
                    seconds: s.seconds,
                    message: s.message.clone(),
                    source: s.source.clone(),
                })
                .collect(),
        }
    }

    /// One line for humans and cron mail: `web: ok, snapshot 3fa9c1d2 (…), forgot 1, prune
    /// not-due, check ok, 2.1 s`, or `web: failed at snapshot: … (skipped: forget, prune), 0.3 s`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = self.failed_step() {
            parts.push(format!(
                "failed at {}: {}",
                f.step,
                f.message.as_deref().unwrap_or("(no message)")
            ));
            let skipped: Vec<&str> = self
                .steps
                .iter()
                .filter(|s| s.result == StepResult::Skipped && s.message.is_some())
                .map(|s| s.step)
                .collect();
            if !skipped.is_empty() {
                parts.push(format!("skipped {}", skipped.join(", ")));
            }
        } else {
            parts.push(self.result.as_str().to_string());
            if let Some(s) = self
                .steps
                .iter()
                .find(|s| s.result == StepResult::Skipped && s.message.is_some())
            {
                parts.push(format!(
                    "{}: {}",
                    s.step,
                    s.message.as_deref().unwrap_or("")
                ));
            }
        }
        if let Some(id) = &self.snapshot {
            parts.push(format!(
                "snapshot {} ({} files, {} added)",
                &id[..id.len().min(8)],
                self.files.unwrap_or(0),
                human(self.bytes_added.unwrap_or(0))
            ));
        }
        for s in &self.steps {
            let shown = match (s.step, s.result) {
                ("notify", StepResult::Failed) => "NOTIFICATION FAILED".to_string(),
                (_, StepResult::Skipped) | (_, StepResult::Failed) => continue,
                ("snapshot", StepResult::Ok) => continue,
                (
                    "before" | "after" | "failure" | "finally" | "source-before" | "source-after"
                    | "source-failure" | "source-finally" | "notify",
                    StepResult::Ok,
                ) => continue,
                ("forget", StepResult::Ok) => format!("forgot {}", self.forgotten.unwrap_or(0)),
                ("copy", StepResult::Ok) => format!("copied {}", self.copied.unwrap_or(0)),
                ("prune", StepResult::Ok) => {
                    format!("pruned {}", human(self.bytes_freed.unwrap_or(0)))
                }
                (step, r) => format!("{step} {}", r.as_str()),
            };
            parts.push(shown);
        }
        format!("{}: {}, {:.1} s", self.job, parts.join(", "), self.seconds)
    }
}

pub use crate::units::human;

/// Where a run's warnings and errors go as they happen (the CLI prints them on stderr).
pub trait Reporter: Sync {
    /// A warning or error of job `job`.
    fn problem(&self, job: &str, text: &str);
}

/// A reporter that drops everything (tests; the log keeps it all anyway).
pub struct Quiet;
impl Reporter for Quiet {
    fn problem(&self, _: &str, _: &str) {}
}

/// The run's log: every step's outcome, warnings, hook output. Its tail goes into the fail
/// ping, `TRESOR_LOG_TAIL` and the notification command's input.
struct Log<'a> {
    job: &'a str,
    lines: Mutex<Vec<String>>,
    out: &'a dyn Reporter,
}

/// Bytes of log tail handed to hooks and notifications.
const LOG_TAIL: usize = 4000;

impl Log<'_> {
    fn note(&self, text: &str) {
        if let Ok(mut l) = self.lines.lock() {
            l.extend(text.lines().map(str::to_string));
        }
    }
    fn problem(&self, text: &str) {
        self.note(text);
        self.out.problem(self.job, text);
    }
    fn tail(&self) -> String {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        let mut out = Vec::new();
        let mut size = 0;
        for l in lines.iter().rev() {
            size += l.len() + 1;
            if size > LOG_TAIL && !out.is_empty() {
                break;
            }
            out.push(l.as_str());
        }
        out.reverse();
        out.join("\n")
    }
}

impl Progress for Log<'_> {
    fn warn(&self, message: &str) {
        self.problem(&format!("warning: {message}"));
    }
}

/// How the run is set up.
pub struct RunContext<'a> {
    /// The state directory (history, job locks).
    pub state_dir: PathBuf,
    /// Where warnings and errors go as they happen.
    pub reporter: &'a dyn Reporter,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Collects the steps of a run.
struct Steps {
    list: Vec<StepReport>,
}

impl Steps {
    fn push(&mut self, step: &'static str, started: (String, Instant), out: StepOut) {
        self.list.push(StepReport {
            step,
            result: out.result,
            exit_code: out.code,
            started: started.0,
            seconds: started.1.elapsed().as_secs_f64(),
            message: out.message,
            source: None,
        });
    }
    fn skip(&mut self, step: &'static str, why: Option<String>) {
        self.push(
            step,
            (now(), Instant::now()),
            StepOut {
                result: StepResult::Skipped,
                code: exit::OK,
                message: why,
            },
        );
    }
    fn worst(&self) -> (StepResult, u8) {
        self.list
            .iter()
            .filter(|s| s.result.rank() > 0)
            .max_by_key(|s| (s.result.rank(), s.exit_code))
            .map_or((StepResult::Ok, exit::OK), |s| (s.result, s.exit_code))
    }
    fn failed(&self) -> bool {
        self.list.iter().any(|s| s.result == StepResult::Failed)
    }
}

struct StepOut {
    result: StepResult,
    code: u8,
    message: Option<String>,
}

impl StepOut {
    fn ok(message: impl Into<String>) -> StepOut {
        StepOut {
            result: StepResult::Ok,
            code: exit::OK,
            message: Some(message.into()),
        }
    }
    fn not_due(message: impl Into<String>) -> StepOut {
        StepOut {
            result: StepResult::NotDue,
            code: exit::OK,
            message: Some(message.into()),
        }
    }
    fn failed(e: &Error) -> StepOut {
        StepOut {
            result: StepResult::Failed,
            code: e.exit_code(),
            message: Some(e.to_string()),
        }
    }
}

/// Opens `job`'s repository with its password and cache directory (`cache-dir`, else the
/// usual default, else without `HOME` /var/cache/tresor).
pub fn open_repo(job: &Job) -> Result<Repo> {
    open_at(job, &job.repository, &job.password)
}

/// Opens the repository at `location` with `password`, in `job`'s cache directory.
fn open_at(
    job: &Job,
    location: &std::ffi::OsStr,
    password: &crate::jobs::config::PasswordSource,
) -> Result<Repo> {
    let backend = backend::open(&Location::parse_os(location)?)?;
    let pw = password.read()?;
    Repo::open_with(backend, &pw, &cache_dir(job), &repo::OpenOptions::default())
}

/// `job`'s cache directory: its `cache-dir`, else the usual default, else (without `HOME`)
/// /var/cache/tresor.
pub fn cache_dir(job: &Job) -> PathBuf {
    job.cache_dir.clone().unwrap_or_else(|| {
        // Without HOME (a bare cron environment) the default is under the temp dir, which
        // boot wipes: a job keeps its catalog in /var/cache/tresor instead.
        let d = repo::default_cache_dir();
        if d.starts_with(std::env::temp_dir()) {
            PathBuf::from("/var/cache/tresor")
        } else {
            d
        }
    })
}

/// Whether a step last done at `last` (RFC 3339) is due again by `due` at `now`. Periods
/// get a twenty-fourth of slack, so a daily job that started a few minutes earlier than
/// yesterday still prunes.
pub fn period_due(due: Due, last: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> bool {
    match due {
        Due::Always | Due::UnusedOver(_) => true,
        Due::Never => false,
        Due::Every(secs) => match last.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
            None => true,
            Some(t) => {
                let elapsed = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64;
                elapsed + secs / 24 >= secs
            }
        },
    }
}

/// When step `step` last ran (with any of `results`), per the history.
fn last_run_of<'h>(history: &'h [RunRecord], step: &str, results: &[&str]) -> Option<&'h str> {
    history.iter().rev().find_map(|r| {
        r.steps
            .iter()
            .find(|s| s.step == step && results.contains(&s.result.as_str()))
            .map(|s| s.started.as_str())
    })
}

/// The plan `--dry-run` prints: what each step would do, nothing touched.
pub fn plan(job: &Job, state_dir: &Path) -> Result<Vec<String>> {
    let history = state::history(state_dir, &job.name)?;
    let t = chrono::Utc::now();
    let hooks = |kind: &str, list: &[String]| {
        if list.is_empty() {
            format!("{kind} hooks: none")
        } else {
            format!("{kind} hooks: {}", list.join("; "))
        }
    };
    let mut v = vec![
        format!(
            "job {}: repository {}",
            job.name,
            crate::jobs::config::mask_urls(&job.repository.to_string_lossy())
        ),
        hooks("before", &job.hooks.before),
    ];
    for s in &job.source_hooks {
        let h = &s.hooks;
        let kinds: Vec<String> = [
            ("before", &h.before),
            ("after", &h.after),
            ("failure", &h.failure),
            ("finally", &h.finally),
        ]
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(k, l)| format!("{k}: {}", l.join("; ")))
        .collect();
        v.push(format!(
            "source {} hooks (before ahead of the snapshot, the others right after it): {}",
            s.source,
            kinds.join(" | ")
        ));
    }
    let mut sources: Vec<String> = job.paths.iter().map(|p| p.display().to_string()).collect();
    sources.extend(
        job.commands
            .iter()
            .map(|(n, c)| format!("{n} = `{}`", crate::jobs::config::mask_urls(c))),
    );
    let mut tags = job.tags.clone();
    tags.push(job.tag());
    v.push(format!(
        "snapshot: {} (tags {}{})",
        sources.join(", "),
        tags.join(", "),
        if job.excludes.patterns.is_empty() {
            String::new()
        } else {
            format!("; exclude {}", job.excludes.patterns.join(", "))
        }
    ));
    v.push(match &job.keep {
        Some(p) => format!(
            "forget: among the snapshots tagged {}, per host: {}",
            job.tag(),
            describe_policy(p)
        ),
        None => "forget: no keep rules, skipped".into(),
    });
    let last_prune = last_run_of(&history, "prune", &["ok"]);
    v.push(match job.prune {
        Due::Never => "prune: never".into(),
        Due::UnusedOver(x) => format!(
            "prune: when more than {}% of the stored bytes are unused",
            x * 100.0
        ),
        d => format!(
            "prune: {} (last {}): {}",
            crate::jobs::config::describe_due(d),
            last_prune.unwrap_or("never"),
            if period_due(d, last_prune, t) {
                "due"
            } else {
                "not due"
            }
        ),
    });
    v.push(match &job.check {
        None => "check: not configured".into(),
        Some(c) => {
            let last = last_run_of(&history, "check", &["ok", "failed"]);
            format!(
                "check: {} (last {}): {}{}{}",
                crate::jobs::config::describe_due(c.when),
                last.unwrap_or("never"),
                if period_due(c.when, last, t) {
                    "due"
                } else {
                    "not due"
                },
                c.read_data_max_age
                    .map(|a| format!(", re-read packs not verified for {a} s"))
                    .unwrap_or_default(),
                c.budget
                    .map(|b| format!(", at most {}", human(b)))
                    .unwrap_or_default()
            )
        }
    });
    if job.drill != Due::Never {
        let last = last_run_of(&history, "drill", &["ok", "failed"]);
        v.push(format!(
            "drill: {} (last {}): {}",
            crate::jobs::config::describe_due(job.drill),
            last.unwrap_or("never"),
            if period_due(job.drill, last, t) {
                "due: each database source of the new snapshot restored into a scratch database, counts compared"
            } else {
                "not due"
            }
        ));
    }
    for c in &job.copy {
        v.push(format!(
            "copy: the snapshots tagged {} that {} lacks",
            job.tag(),
            crate::jobs::config::mask_urls(&c.repository.to_string_lossy())
        ));
    }
    v.push(hooks("after", &job.hooks.after));

    v.push(hooks("failure", &job.hooks.failure));
    v.push(hooks("finally", &job.hooks.finally));
    if let Some(p) = &job.notify.ping {
        v.push(format!(
            "notify: ping {} (start, success, fail)",
            crate::jobs::config::mask_urls(p)
        ));
    }
    if let Some(c) = &job.notify.command {
        v.push(format!(
            "notify: command `{}` {}",
            crate::jobs::config::mask_urls(c),
            if job.notify.command_always {
                "after every run"
            } else {
                "after a failure"
            }
        ));
    }
    Ok(v)
}

fn describe_policy(p: &crate::forget::policy::Policy) -> String {
    let mut v = Vec::new();
    for (n, k) in [
        ("last", p.keep_last),
        ("hourly", p.keep_hourly),
        ("daily", p.keep_daily),
        ("weekly", p.keep_weekly),
        ("monthly", p.keep_monthly),
        ("yearly", p.keep_yearly),
    ] {
        if let Some(k) = k {
            v.push(format!("{n} {k}"));
        }
    }
    if let Some(w) = p.keep_within_secs {
        v.push(format!("within {w} s"));
    }
    for t in &p.keep_tags {
        v.push(format!("tag {t}"));
    }
    format!("keep {}", v.join(", "))
}

/// Runs `job`. Errors only when the run could not be attempted or recorded (the state
/// directory is unusable); everything a step does wrong is in the report.
pub fn run_job(job: &Job, ctx: &RunContext<'_>) -> Result<JobReport> {
    let log = Log {
        job: &job.name,
        lines: Mutex::new(Vec::new()),
        out: ctx.reporter,
    };
    let started_at = (now(), Instant::now());
    let Some(_lock) = state::lock_job(&ctx.state_dir, &job.name, job.overlap)? else {
        let message = "another run of this job is still going (overlap = \"skip\")";
        log.problem(message);
        let mut steps = Steps { list: Vec::new() };
        steps.skip("snapshot", Some(message.into()));
        let mut r = report(job, started_at, steps, &log);
        r.result = StepResult::Skipped;
        // Not recorded: the running one owns the history (and holds the lock that keeps
        // its read-modify-write whole).
        return Ok(r);
    };
    let history = state::history(&ctx.state_dir, &job.name)?;
    let mut notify_warnings = Vec::new();
    if let Some(url) = &job.notify.ping
        && let Err(e) = notify::ping(url, Ping::Start, "")
    {
        log.problem(&format!("warning: {e}"));
        notify_warnings.push(e.to_string());
    }
    let mut steps = Steps { list: Vec::new() };
    let mut outcome = Outcome::default();
    let env = |step: &str, source: &str, steps: &Steps, outcome: &Outcome, log: &Log<'_>| {
        let (result, code) = steps.worst();
        HookEnv {
            job: job.name.clone(),
            step: step.into(),
            source: source.into(),
            result: if step == "before" {
                "running".into()
            } else {
                result.as_str().into()
            },
            failed_step: steps
                .list
                .iter()
                .find(|s| s.result == StepResult::Failed)
                .map(|s| s.step.to_string())
                .unwrap_or_default(),
            exit_code: code,
            snapshot: outcome.snapshot.clone().unwrap_or_default(),
            log_tail: log.tail(),
        }
    };
    // A job's hooks (`source` None) or one source's; a job's empty list is recorded as
    // skipped, a source's is not recorded at all.
    let run_hooks = |kind: &'static str,
                     source: Option<&str>,
                     list: &[String],
                     steps: &mut Steps,
                     outcome: &Outcome| {
        if list.is_empty() {
            if source.is_none() {
                steps.skip(kind, None);
            }
            return;
        }
        let t = (now(), Instant::now());
        let mut out = StepOut::ok(format!("{} ran", list.len()));
        for cmd in list {
            let e = env(kind, source.unwrap_or(""), steps, outcome, &log);
            match hooks::run(cmd, &e, b"", Duration::from_secs(job.hook_timeout)) {
                Ok(o) => log.note(&o.output),
                Err(e) => {
                    log.problem(&format!("error: {e}"));
                    out = StepOut {
                        result: StepResult::Failed,
                        code: exit::FATAL,
                        message: Some(e.to_string()),
                    };
                    // The rest of a failed list does not run (`set -e`).
                    break;
                }
            }
        }
        match source {
            None => steps.push(kind, t, out),
            Some(s) => {
                steps.push(source_step(kind), t, out);
                if let Some(last) = steps.list.last_mut() {
                    last.source = Some(s.to_string());
                }
            }
        }
    };
    // After the snapshot (or instead of it, when a source's before hook failed): the `after`
    // hooks of each source whose `before` ran, or its `failure` hooks, then its `finally`.
    let source_exits = |entered: &[&SourceHooks], steps: &mut Steps, outcome: &Outcome| {
        for s in entered {
            let src = Some(s.source.as_str());
            if steps.failed() {
                run_hooks("failure", src, &s.hooks.failure, steps, outcome);
            } else {
                run_hooks("after", src, &s.hooks.after, steps, outcome);
                if steps.failed() {
                    run_hooks("failure", src, &s.hooks.failure, steps, outcome);
                }
            }
            run_hooks("finally", src, &s.hooks.finally, steps, outcome);
        }
    };
    run_hooks("before", None, &job.hooks.before, &mut steps, &outcome);
    // Source `before` hooks, in source order, before the repository is opened; the first
    // failing one ends the list (the later sources' hooks do not run at all).
    let mut entered: Vec<&SourceHooks> = Vec::new();
    if !steps.failed() {
        for s in &job.source_hooks {
            entered.push(s);
            run_hooks(
                "before",
                Some(&s.source),
                &s.hooks.before,
                &mut steps,
                &outcome,
            );
            if steps.failed() {
                break;
            }
        }
    }
    if steps.failed() {
        steps.skip("snapshot", Some("a before hook failed".into()));
        source_exits(&entered, &mut steps, &outcome);
        skip_after_failure(
            job,
            &mut steps,
            "a before hook failed; the repository was not touched",
        );
    } else {
        repository_steps(
            job,
            &history,
            &log,
            &mut steps,
            &mut outcome,
            &mut |steps, outcome| source_exits(&entered, steps, outcome),
        );
    }
    if steps.failed() {
        steps.skip("after", None);
        run_hooks("failure", None, &job.hooks.failure, &mut steps, &outcome);
    } else {
        run_hooks("after", None, &job.hooks.after, &mut steps, &outcome);
        if steps.failed() {
            run_hooks("failure", None, &job.hooks.failure, &mut steps, &outcome);
        } else {
            steps.skip("failure", None);
        }
    }
    run_hooks("finally", None, &job.hooks.finally, &mut steps, &outcome);
    let began = started_at.1;
    let mut r = report(job, started_at, steps, &log);
    r.snapshot = outcome.snapshot;
    r.files = outcome.files;
    r.bytes_added = outcome.bytes_added;
    r.forgotten = outcome.forgotten;
    r.bytes_freed = outcome.bytes_freed;
    r.repository_bytes = outcome.repository_bytes;
    r.copied = outcome.copied;
    r.log_tail = log.tail();
    let failed = r.result == StepResult::Failed;
    let notify_started = (now(), Instant::now());
    let mut notified = Vec::new();
    if let Some(url) = &job.notify.ping {
        let (kind, body) = if failed {
            (Ping::Fail, r.log_tail.clone())
        } else {
            (Ping::Success, r.summary())
        };
        match notify::ping(url, kind, &body) {
            Ok(()) => notified.push("ping sent"),
            Err(e) => {
                log.problem(&format!("warning: {e}"));
                notify_warnings.push(e.to_string());
            }
        }
    }
    if let Some(cmd) = &job.notify.command
        && (failed || job.notify.command_always)
    {
        let e = HookEnv {
            job: job.name.clone(),
            step: "notify".into(),
            source: String::new(),
            result: r.result.as_str().into(),
            failed_step: r
                .failed_step()
                .map(|s| s.step.to_string())
                .unwrap_or_default(),
            exit_code: r.exit_code,
            snapshot: r.snapshot.clone().unwrap_or_default(),
            log_tail: r.log_tail.clone(),
        };
        let input = format!("{}\n\n{}\n", r.summary(), r.log_tail);
        match hooks::run(
            cmd,
            &e,
            input.as_bytes(),
            Duration::from_secs(job.hook_timeout),
        ) {
            Ok(_) => notified.push("notification command ran"),
            Err(e) => {
                log.problem(&format!("warning: notification command: {e}"));
                notify_warnings.push(format!("notification command: {e}"));
            }
        }
    }
    // The notify step: failed when anything could not be delivered (the start ping
    // included). It does not change the run's result, only its exit code when all else
    // succeeded (exit::NOTIFY), so a monitor's "last success" stays true to the backup.
    let notify_out = if !notify_warnings.is_empty() {
        StepOut {
            result: StepResult::Failed,
            code: exit::NOTIFY,
            message: Some(notify_warnings.join("; ")),
        }
    } else if notified.is_empty() {
        StepOut {
            result: StepResult::Skipped,
            code: exit::OK,
            message: None,
        }
    } else {
        StepOut::ok(notified.join(", "))
    };
    if notify_out.result == StepResult::Failed && r.exit_code == exit::OK {
        r.exit_code = exit::NOTIFY;
    }
    let mut notify_steps = Steps { list: Vec::new() };
    notify_steps.push("notify", notify_started, notify_out);
    r.steps.extend(notify_steps.list);
    r.notify_warnings = notify_warnings;
    r.ended = now();
    r.seconds = began.elapsed().as_secs_f64();
    // Recorded last, so the history has the notify step too.
    if let Err(e) = state::record(&ctx.state_dir, &r.record()) {
        log.problem(&format!("error: recording the run: {e}"));
        return Err(e);
    }
    Ok(r)
}

/// The step name of a source's hooks of `kind`.
fn source_step(kind: &str) -> &'static str {
    match kind {
        "before" => "source-before",
        "after" => "source-after",
        "failure" => "source-failure",
        _ => "source-finally",
    }
}

/// Records the repository steps after the snapshot as skipped: with `why` those the job has,
/// silently those it does not.
fn skip_after_failure(job: &Job, steps: &mut Steps, why: &str) {
    for (step, configured) in [
        ("forget", job.keep.is_some()),
        ("prune", job.prune != Due::Never),
        ("check", job.check.is_some()),
        ("drill", job.drill != Due::Never),
        ("copy", !job.copy.is_empty()),
    ] {
        steps.skip(step, configured.then(|| why.to_string()));
    }
}

fn report(job: &Job, started: (String, Instant), steps: Steps, log: &Log<'_>) -> JobReport {
    let (result, exit_code) = steps.worst();
    JobReport {
        job: job.name.clone(),
        result,
        exit_code,
        started: started.0,
        ended: now(),
        seconds: started.1.elapsed().as_secs_f64(),
        snapshot: None,
        files: None,
        bytes_added: None,
        forgotten: None,
        bytes_freed: None,
        repository_bytes: None,
        copied: None,
        steps: steps.list,
        notify_warnings: Vec::new(),
        log_tail: log.tail(),
    }
}

/// What the repository steps produced.
#[derive(Default)]
struct Outcome {
    snapshot: Option<String>,
    files: Option<u64>,
    bytes_added: Option<u64>,
    forgotten: Option<u64>,
    bytes_freed: Option<u64>,
    repository_bytes: Option<u64>,
    copied: Option<u64>,
}

/// The steps that use the repository: snapshot, forget, prune, check, drill, copy. `after_snapshot`
/// runs right after the snapshot step is recorded, whether it succeeded or not (the sources'
/// after, failure and finally hooks).
fn repository_steps(
    job: &Job,
    history: &[RunRecord],
    log: &Log<'_>,
    steps: &mut Steps,
    outcome: &mut Outcome,
    after_snapshot: &mut dyn FnMut(&mut Steps, &Outcome),
) {
    let t = (now(), Instant::now());
    let retry = Duration::from_secs(job.retry_lock);
    let lock = |repo: &mut Repo, what: &str, exclusive: bool| -> Result<()> {
        crate::interrupt::set_cooperative(true);
        for note in repo.lock(
            &format!("tresor run {}: {what}", job.name),
            exclusive,
            retry,
            LockTiming::default(),
        )? {
            log.problem(&format!("note: {note}"));
        }
        Ok(())
    };
    let opened = open_repo(job).and_then(|mut repo| {
        for w in repo.warnings() {
            log.problem(&format!("warning: {w} (run `tresor check`)"));
        }
        lock(&mut repo, "snapshot", false)?;
        Ok(repo)
    });
    let mut repo = match opened {
        Ok(r) => r,
        Err(e) => {
            log.problem(&format!("error: snapshot: {e}"));
            steps.push("snapshot", t, StepOut::failed(&e));
            after_snapshot(steps, &*outcome);
            skip_after_failure(job, steps, "the snapshot failed");
            return;
        }
    };
    let created = match snapshot(&mut repo, job, log) {
        Ok(r) => {
            let s = &r.snapshot.summary;
            outcome.snapshot = Some(r.id.to_hex());
            outcome.files = Some(s.files);
            outcome.bytes_added = Some(s.bytes_added);
            let message = format!(
                "snapshot {} saved: {} files, {} read, {} added",
                r.id.short(),
                s.files,
                human(s.bytes_read),
                human(s.bytes_added)
            );
            log.note(&message);
            let out = if s.incomplete {
                let m = format!(
                    "{message}; INCOMPLETE: {} entries could not be read",
                    s.errors.len()
                );
                log.problem(&format!("warning: {m}"));
                StepOut {
                    result: StepResult::Warning,
                    code: exit::INCOMPLETE,
                    message: Some(m),
                }
            } else {
                StepOut::ok(message)
            };
            steps.push("snapshot", t, out);
            after_snapshot(steps, &*outcome);
            r.snapshot
        }
        Err(e) => {
            log.problem(&format!("error: snapshot: {e}"));
            steps.push("snapshot", t, StepOut::failed(&e));
            after_snapshot(steps, &*outcome);
            skip_after_failure(job, steps, "the snapshot failed");
            outcome.repository_bytes = repository_bytes(&repo);
            return;
        }
    };
    let now_utc = chrono::Utc::now();
    let prune_due = match job.prune {
        Due::Never => false,
        d => period_due(d, last_run_of(history, "prune", &["ok"]), now_utc),
    };
    let mut exclusive: Result<()> = Ok(());
    if job.keep.is_some() || prune_due {
        repo.release_lock();
        exclusive = lock(&mut repo, "forget and prune", true);
    }
    let t = (now(), Instant::now());
    match (&job.keep, &exclusive) {
        (None, _) => steps.skip("forget", None),
        (Some(_), Err(e)) => {
            log.problem(&format!("error: forget: {e}"));
            steps.push("forget", t, StepOut::failed(e));
        }
        (Some(policy), Ok(())) => {
            let tag = job.tag();
            let by = GroupBy {
                host: true,
                sources: false,
                tags: false,
            };
            let r = forget::decide_among(&repo, policy, by, &|s| s.tags.contains(&tag))
                .and_then(|v| forget::remove(&repo, &v));
            match r {
                Ok(n) => {
                    outcome.forgotten = Some(n);
                    log.note(&format!("forget: removed {n} snapshots"));
                    steps.push("forget", t, StepOut::ok(format!("removed {n} snapshots")));
                }
                Err(e) => {
                    log.problem(&format!("error: forget: {e}"));
                    steps.push("forget", t, StepOut::failed(&e));
                }
            }
        }
    }
    let t = (now(), Instant::now());
    if job.prune == Due::Never {
        steps.skip("prune", None);
    } else if steps
        .list
        .iter()
        .any(|s| s.step == "forget" && s.result == StepResult::Failed)
    {
        steps.skip("prune", Some("forget failed".into()));
    } else if !prune_due {
        steps.push(
            "prune",
            t,
            StepOut::not_due(format!(
                "last pruned {}",
                last_run_of(history, "prune", &["ok"]).unwrap_or("never")
            )),
        );
    } else if let Err(e) = &exclusive {
        log.problem(&format!("error: prune: {e}"));
        steps.push("prune", t, StepOut::failed(e));
    } else {
        let out = match prune(&mut repo, job, log) {
            Ok((out, freed)) => {
                outcome.bytes_freed = freed;
                out
            }
            Err(e) => {
                log.problem(&format!("error: prune: {e}"));
                StepOut::failed(&e)
            }
        };
        steps.push("prune", t, out);
    }
    if job.check.is_some() && repo.lock_name().is_none() {
        // The exclusive lock was refused; the check shares the repository.
        if let Err(e) = lock(&mut repo, "check", false) {
            log.problem(&format!("error: check: {e}"));
            steps.push("check", (now(), Instant::now()), StepOut::failed(&e));
            steps.skip("copy", Some("the repository could not be locked".into()));
            outcome.repository_bytes = repository_bytes(&repo);
            return;
        }
    }
    match &job.check {
        None => steps.skip("check", None),
        Some(c) => {
            let last = last_run_of(history, "check", &["ok", "failed"]);
            if !period_due(c.when, last, chrono::Utc::now()) {
                steps.push(
                    "check",
                    (now(), Instant::now()),
                    StepOut::not_due(format!("last checked {}", last.unwrap_or("never"))),
                );
            } else {
                let t = (now(), Instant::now());
                let out = run_check(&mut repo, c, log).unwrap_or_else(|e| {
                    log.problem(&format!("error: check: {e}"));
                    StepOut::failed(&e)
                });
                steps.push("check", t, out);
            }
        }
    }
    if job.drill == Due::Never {
        steps.skip("drill", None);
    } else {
        let last = last_run_of(history, "drill", &["ok", "failed"]);
        if !period_due(job.drill, last, chrono::Utc::now()) {
            steps.push(
                "drill",
                (now(), Instant::now()),
                StepOut::not_due(format!("last drilled {}", last.unwrap_or("never"))),
            );
        } else {
            let t = (now(), Instant::now());
            let out = run_drill(&repo, job, &created, log).unwrap_or_else(|e| {
                log.problem(&format!("error: drill: {e}"));
                StepOut::failed(&e)
            });
            steps.push("drill", t, out);
        }
    }
    outcome.repository_bytes = repository_bytes(&repo);
    if job.copy.is_empty() {
        steps.skip("copy", None);
    } else {
        let t = (now(), Instant::now());
        let mut copied = 0u64;
        let mut out = None;
        for target in &job.copy {
            match copy_to(&repo, job, target, log) {
                Ok(n) => copied += n,
                Err(e) => {
                    let shown =
                        crate::jobs::config::mask_urls(&target.repository.to_string_lossy());
                    log.problem(&format!("error: copy to {shown}: {e}"));
                    out = Some(StepOut {
                        result: StepResult::Failed,
                        code: e.exit_code(),
                        message: Some(format!("copy to {shown}: {e}")),
                    });
                }
            }
        }
        outcome.copied = Some(copied);
        let out = out.unwrap_or_else(|| {
            StepOut::ok(format!(
                "copied {copied} snapshots into {} repositories",
                job.copy.len()
            ))
        });
        steps.push("copy", t, out);
    }
}

/// Copies the job's snapshots that `target` lacks into it (the source is locked already).
fn copy_to(
    source: &Repo,
    job: &Job,
    target: &crate::jobs::config::CopyTarget,
    log: &Log<'_>,
) -> Result<u64> {
    let mut repo = open_at(job, &target.repository, &target.password)?;
    crate::interrupt::set_cooperative(true);
    for note in repo.lock(
        &format!("tresor run {}: copy", job.name),
        false,
        Duration::from_secs(job.retry_lock),
        LockTiming::default(),
    )? {
        log.problem(&format!("note: {note}"));
    }
    let opts = crate::copy::CopyOptions {
        snapshots: Vec::new(),
        hosts: Vec::new(),
        tags: vec![job.tag()],
        dry_run: false,
    };
    let r = crate::copy::copy(source, &mut repo, &opts, &crate::progress::Silent)?;
    log.note(&format!(
        "copy: {} snapshots copied into {}, {} added",
        r.copied.len(),
        crate::jobs::config::mask_urls(&target.repository.to_string_lossy()),
        human(r.bytes_added)
    ));
    Ok(r.copied.len() as u64)
}

fn repository_bytes(repo: &Repo) -> Option<u64> {
    repo.catalog()
        .packs()
        .ok()
        .map(|p| p.iter().map(|p| p.size).sum())
}

/// The database sources of a job (connections from the tools' own defaults).
fn database_sources(d: &crate::jobs::config::DatabaseSources) -> Result<Vec<SourceSpec>> {
    let mut out = Vec::new();
    if !d.postgres.is_empty() {
        let pg = crate::db::postgres::sources(
            &d.pg,
            &d.postgres,
            crate::db::PgFormat::Plain,
            &[],
            d.count_rows,
        )?;
        out.extend(pg.into_iter().map(|d| SourceSpec::Database(Box::new(d))));
    }
    if !d.mariadb.is_empty() {
        let my = crate::db::mariadb::sources(&d.my, &d.mariadb, &[], d.count_rows)?;
        out.extend(my.into_iter().map(|d| SourceSpec::Database(Box::new(d))));
    }
    for p in &d.sqlite {
        out.push(SourceSpec::Database(Box::new(crate::db::sqlite::source(
            p,
            d.count_rows,
        )?)));
    }
    Ok(out)
}

fn snapshot(repo: &mut Repo, job: &Job, log: &Log<'_>) -> Result<backup::CreateResult> {
    let mut sources: Vec<SourceSpec> = job.paths.iter().cloned().map(SourceSpec::Path).collect();
    sources.extend(
        job.commands
            .iter()
            .map(|(name, command)| SourceSpec::Command {
                name: name.clone(),
                command: command.clone(),
            }),
    );
    sources.extend(database_sources(&job.databases)?);
    let mut patterns = job.excludes.patterns.clone();
    for f in &job.excludes.files {
        patterns.extend(crate::source::exclude::read_patterns(f)?);
    }
    let mut tags = job.tags.clone();
    tags.push(job.tag());
    let opts = CreateOptions {
        sources,
        tags,
        host: job.host.clone(),
        parent: None,
        force: false,
        excludes: ExcludeRecord {
            patterns,
            if_present: job.excludes.if_present.clone(),
            caches: job.excludes.caches,
            one_file_system: job.excludes.one_file_system,
        },
    };
    backup::create(repo, &opts, log)
}

fn prune(repo: &mut Repo, job: &Job, log: &Log<'_>) -> Result<(StepOut, Option<u64>)> {
    if let Some(w) = crate::prune::guard_missing_snapshots(repo, false, false)? {
        log.problem(&format!("warning: {w}"));
    }
    repo.adopt_unindexed()?;
    let roots = crate::prune::all_roots(repo)?;
    let plan = crate::prune::plan(repo, &roots, job.max_unused)?;
    if let Due::UnusedOver(limit) = job.prune {
        let s = &plan.summary;
        let unused = s.pack_bytes.saturating_sub(s.used_bytes) as f64;
        let share = if s.pack_bytes == 0 {
            0.0
        } else {
            unused / s.pack_bytes as f64
        };
        if share <= limit {
            return Ok((
                StepOut::not_due(format!(
                    "{:.1}% of the stored bytes are unused, not over {}%",
                    share * 100.0,
                    limit * 100.0
                )),
                None,
            ));
        }
    }
    let report = crate::prune::execute(repo, plan)?;
    let m = format!(
        "freed {} ({} packs deleted, {} written)",
        human(report.bytes_freed),
        report.packs_deleted,
        report.packs_written
    );
    log.note(&format!("prune: {m}"));
    Ok((StepOut::ok(m), Some(report.bytes_freed)))
}

/// The drill step: each database source of the snapshot just made is restored into a scratch
/// database (a scratch file for SQLite), its row counts compared with those recorded, and the
/// scratch copy dropped ([`crate::db::drill`]).
fn run_drill(
    repo: &Repo,
    job: &Job,
    snapshot: &crate::format::snapshot::Snapshot,
    log: &Log<'_>,
) -> Result<StepOut> {
    let records = snapshot.database_records();
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    let mut seconds = 0.0;
    for rec in records {
        let mut feed = |w: &mut (dyn std::io::Write + Send)| {
            let mut w = w;
            crate::restore::restore_to_writer(repo, snapshot, Some(&rec.name), &mut w)
        };
        let o = crate::db::drill::source(&job.databases.pg, &job.databases.my, rec, &mut feed)?;
        seconds += o.restore_seconds;
        if o.passed() {
            log.note(&format!(
                "drill {}: ok, restored in {:.1} s",
                o.source, o.restore_seconds
            ));
            passed.push(o.source);
        } else {
            let why = o
                .error
                .clone()
                .unwrap_or_else(|| format!("{} tables differ in rows", o.mismatches.len()));
            log.problem(&format!("error: drill {}: {why}", o.source));
            failed.push(format!("{}: {why}", o.source));
        }
    }
    if failed.is_empty() {
        Ok(StepOut::ok(format!(
            "drilled {} sources, restored in {seconds:.1} s",
            passed.len()
        )))
    } else {
        Ok(StepOut {
            result: StepResult::Failed,
            code: exit::DRILL_FAILED,
            message: Some(format!("DRILL FAILED: {}", failed.join("; "))),
        })
    }
}

fn run_check(
    repo: &mut Repo,
    c: &crate::jobs::config::CheckPolicy,
    log: &Log<'_>,
) -> Result<StepOut> {
    let opts = CheckOptions {
        read_data: false,
        subset: None,
        max_age_secs: c.read_data_max_age,
        budget_bytes: c.budget,
    };
    let report = check::check(repo, &opts, &crate::progress::Silent)?;
    for p in &report.problems {
        log.problem(&format!("damage: {p}"));
    }
    let read = if opts.reads_data() {
        format!(
            ", read {} packs ({})",
            report.packs_read,
            human(report.bytes_read)
        )
    } else {
        String::new()
    };
    if report.is_clean() {
        let m = format!("checked {} packs{read}: no damage found", report.packs);
        log.note(&format!("check: {m}"));
        Ok(StepOut::ok(m))
    } else {
        Ok(StepOut {
            result: StepResult::Failed,
            code: exit::DAMAGED,
            message: Some(format!(
                "DAMAGE: {} problems, {} snapshots affected{read}",
                report.problems.len(),
                report.affected_snapshots.len()
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_due_with_slack() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-08T02:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let day = Due::Every(86_400);
        assert!(period_due(day, None, now));
        assert!(
            period_due(day, Some("2026-01-07T02:35:00Z"), now),
            "minutes early"
        );
        assert!(!period_due(day, Some("2026-01-07T12:00:00Z"), now));
        let week = Due::Every(7 * 86_400);
        assert!(period_due(week, Some("2026-01-01T02:31:00Z"), now));
        assert!(!period_due(week, Some("2026-01-05T02:31:00Z"), now));
        assert!(!period_due(Due::Never, None, now));
        assert!(period_due(Due::Always, Some("2026-01-08T02:29:00Z"), now));
    }

    #[test]
    fn the_worst_step_decides() {
        let mut s = Steps { list: Vec::new() };
        let t = || (now(), Instant::now());
        s.push(
            "snapshot",
            t(),
            StepOut {
                result: StepResult::Warning,
                code: exit::INCOMPLETE,
                message: None,
            },
        );
        assert_eq!(s.worst(), (StepResult::Warning, exit::INCOMPLETE));
        s.push(
            "after",
            t(),
            StepOut {
                result: StepResult::Failed,
                code: exit::FATAL,
                message: None,
            },
        );
        s.push(
            "check",
            t(),
            StepOut {
                result: StepResult::Failed,
                code: exit::DAMAGED,
                message: None,
            },
        );
        s.skip("finally", None);
        assert_eq!(s.worst(), (StepResult::Failed, exit::DAMAGED));
    }
}
