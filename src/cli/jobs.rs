//! Job commands: `run`, `status`, `config check`, `schedule install|show|remove`, and the
//! generated `completions` and `man` page. The work is in the library's `jobs` module.

use super::*;
use clap::CommandFactory;
use tresor::jobs::config::{self as jobconfig, Config, Overrides, PasswordSource};
use tresor::jobs::run::{JobReport, Reporter, RunContext, StepResult};
use tresor::jobs::{schedule, state, status};

/// The file's path: --config / TRESOR_CONFIG, else the default places.
fn config_path(g: &Global) -> Result<std::path::PathBuf> {
    match &g.config {
        Some(p) => Ok(p.clone()),
        None => Ok(jobconfig::find_default()?),
    }
}

fn load_config(g: &Global) -> Result<Config> {
    let overrides = Overrides {
        repository: g.repo.clone(),
        password_file: g.password_file.clone(),
        password_command: g.password_command.clone(),
        password_env: std::env::var_os("TRESOR_PASSWORD").is_some(),
        cache_dir: g.cache_dir.clone(),
    };
    Ok(jobconfig::load(&config_path(g)?, &overrides)?)
}

fn state_dir(c: &Config) -> std::path::PathBuf {
    c.state_dir.clone().unwrap_or_else(state::default_dir)
}

/// Problems during a run go to stderr at once, named by job.
struct Stderr;
impl Reporter for Stderr {
    fn problem(&self, job: &str, text: &str) {
        eprintln!("tresor: {job}: {text}");
    }
}

pub(super) fn run_jobs(g: &Global, a: RunArgs) -> Result<u8> {
    let cfg = load_config(g)?;
    let jobs = cfg.select(&a.jobs)?;
    let dir = state_dir(&cfg);
    if a.dry_run {
        for j in &jobs {
            for line in tresor::jobs::run::plan(j, &dir)? {
                println!("{line}");
            }
        }
        return Ok(exit::OK);
    }
    let ctx = RunContext {
        state_dir: dir.clone(),
        reporter: &Stderr,
    };
    let mut reports: Vec<JobReport> = Vec::new();
    for j in &jobs {
        if let Some(sig) = tresor::interrupt::received() {
            eprintln!(
                "tresor: {}: not started: stopped by {}",
                j.name,
                tresor::error::signal_name(sig)
            );
            break;
        }
        let r = tresor::jobs::run::run_job(j, &ctx).with_context(|| format!("job {}", j.name))?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else if !g.quiet || r.result == StepResult::Failed {
            println!("{}", r.summary());
        }
        reports.push(r);
    }
    if let Some(tf) = &cfg.prometheus_textfile {
        let all: Vec<&tresor::jobs::config::Job> = cfg.jobs.iter().collect();
        if let Err(e) = status::write_textfile(tf, &all, &dir) {
            eprintln!("tresor: warning: writing {}: {e}", tf.display());
        }
    }
    // A failed step outranks a warning, which outranks a failed notification (exit 5 with
    // every step ok); then the higher code.
    let rank = |r: &JobReport| match r.result {
        StepResult::Failed => 3,
        StepResult::Warning => 2,
        _ if r.exit_code != exit::OK => 1,
        _ => 0,
    };
    let worst = reports
        .iter()
        .filter(|r| rank(r) > 0)
        .max_by_key(|r| (rank(r), r.exit_code))
        .map_or(exit::OK, |r| r.exit_code);
    if let Some(sig) = tresor::interrupt::received() {
        return Ok(u8::try_from(128 + sig).unwrap_or(exit::FATAL));
    }
    Ok(worst)
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 2 * 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

pub(super) fn job_status(g: &Global, a: StatusArgs) -> Result<u8> {
    let cfg = load_config(g)?;
    let jobs = cfg.select(&a.jobs)?;
    let dir = state_dir(&cfg);
    let max_age = a
        .max_age
        .as_deref()
        .map(tresor::forget::policy::parse_duration)
        .transpose()
        .map_err(|e| anyhow!("--max-age: {e}"))?;
    let mut all = Vec::new();
    for j in &jobs {
        let s = status::status(j, &dir, max_age, true)?;
        let last = state::history(&dir, &j.name)?.pop();
        all.push((s, last));
    }
    let format = if a.json { StatusFormat::Json } else { a.format };
    match format {
        StatusFormat::Json => {
            let v: Vec<&status::JobStatus> = all.iter().map(|(s, _)| s).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        StatusFormat::Prometheus => print!("{}", status::prometheus(&all)),
        StatusFormat::Text => {
            for (s, _) in &all {
                let success = match (&s.last_success_age_seconds, &s.last_snapshot) {
                    (Some(age), Some(id)) => format!(
                        "last success {} (snapshot {}{})",
                        ago(*age),
                        &id[..id.len().min(8)],
                        if s.last_success_from == Some("repository") {
                            ", found in the repository"
                        } else {
                            ""
                        }
                    ),
                    _ => "never succeeded".to_string(),
                };
                let run = s
                    .last_run
                    .as_ref()
                    .map_or("no run recorded".to_string(), |r| {
                        format!(
                            "last run {} (exit {}) at {}",
                            r.result, r.exit_code, r.started
                        )
                    });
                let check = s
                    .last_check
                    .as_ref()
                    .map_or("never checked".to_string(), |c| {
                        format!("last check {} at {}", c.result, c.time)
                    });
                let size = s
                    .repository_bytes
                    .map_or(String::new(), |b| format!(", repository {}", human(b)));
                let state = match (s.stale, s.max_age_seconds) {
                    (true, _) => "STALE",
                    (false, Some(_)) => "OK",
                    (false, None) => "ok (no max-age)",
                };
                let notify = match s.last_run.as_ref().and_then(|r| r.notify_error.as_ref()) {
                    Some(e) => format!("; NOTIFICATION FAILED: {e}"),
                    None => String::new(),
                };
                println!(
                    "{}: {state}: {success}; {run}; {check}{size}{notify}",
                    s.job
                );
                if let Some(e) = &s.error {
                    eprintln!("tresor: {}: could not ask the repository: {e}", s.job);
                }
            }
        }
    }
    Ok(if all.iter().any(|(s, _)| s.stale) {
        exit::STALE
    } else {
        exit::OK
    })
}

pub(super) fn config_check(g: &Global) -> Result<u8> {
    let cfg = load_config(g)?;
    let mut problems = Vec::new();
    for j in &cfg.jobs {
        if let PasswordSource::File(f) = &j.password
            && let Err(e) = std::fs::metadata(f)
        {
            problems.push(format!(
                "{} line {}: job {:?}: password file {}: {e}",
                cfg.path.display(),
                j.line,
                j.name,
                f.display()
            ));
        }
        for f in &j.excludes.files {
            if let Err(e) = std::fs::metadata(f) {
                problems.push(format!(
                    "{} line {}: job {:?}: exclude file {}: {e}",
                    cfg.path.display(),
                    j.line,
                    j.name,
                    f.display()
                ));
            }
        }
    }
    let mut top = toml::Table::new();
    top.insert(
        "state-dir".into(),
        toml::Value::String(state_dir(&cfg).display().to_string()),
    );
    if let Some(t) = &cfg.prometheus_textfile {
        top.insert(
            "prometheus-textfile".into(),
            toml::Value::String(t.display().to_string()),
        );
    }
    let mut jobs = toml::Table::new();
    for j in &cfg.jobs {
        jobs.insert(j.name.clone(), toml::Value::Table(j.effective()));
    }
    top.insert("jobs".into(), toml::Value::Table(jobs));
    if !g.quiet {
        println!(
            "# {}: {} jobs; effective settings (secrets masked):",
            cfg.path.display(),
            cfg.jobs.len()
        );
        print!("{}", toml::to_string(&top)?);
    }
    for p in &problems {
        eprintln!("tresor: error: {p}");
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::USAGE
    })
}

pub(super) fn schedule_install(g: &Global, a: ScheduleInstallArgs) -> Result<u8> {
    let cfg = load_config(g)?;
    cfg.select(std::slice::from_ref(&a.job))?;
    let config = std::fs::canonicalize(&cfg.path)
        .with_context(|| format!("resolving {}", cfg.path.display()))?;
    let kind = if a.cron {
        schedule::Kind::Cron
    } else {
        schedule::Kind::Systemd
    };
    let s = schedule::Schedule {
        job: a.job.clone(),
        at: schedule::parse_at(&a.at)?,
        randomized_delay: a
            .randomized_delay
            .as_deref()
            .map(tresor::forget::policy::parse_duration)
            .transpose()
            .map_err(|e| anyhow!("--randomized-delay: {e}"))?,
        binary: std::env::current_exe().context("finding the tresor binary")?,
        config,
        user: a.user.clone(),
    };
    let dir = a.dir.clone().unwrap_or_else(|| kind.system_dir());
    let written = schedule::install(&s, kind, &dir)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    if a.dir.is_none() && kind == schedule::Kind::Systemd {
        let timer = format!("tresor-{}.timer", a.job);
        for args in [
            vec!["daemon-reload"],
            vec!["enable", "--now", timer.as_str()],
        ] {
            let st = std::process::Command::new("systemctl").args(&args).status();
            match st {
                Ok(s) if s.success() => println!("systemctl {}: done", args.join(" ")),
                Ok(s) => {
                    eprintln!(
                        "tresor: warning: systemctl {} {}; run it yourself",
                        args.join(" "),
                        tresor::source::describe_status(&s)
                    );
                    break;
                }
                Err(e) => {
                    eprintln!(
                        "tresor: warning: systemctl {}: {e}; run it yourself",
                        args.join(" ")
                    );
                    break;
                }
            }
        }
    }
    Ok(exit::OK)
}

fn schedule_dirs(dir: &Option<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
    match dir {
        Some(d) => vec![d.clone()],
        None => vec![
            schedule::Kind::Systemd.system_dir(),
            schedule::Kind::Cron.system_dir(),
        ],
    }
}

pub(super) fn schedule_show(a: ScheduleJobArgs) -> Result<u8> {
    let mut found = 0;
    for d in schedule_dirs(&a.dir) {
        for (p, text) in schedule::show(&a.job, &d)? {
            println!("# {}\n{text}", p.display());
            found += 1;
        }
    }
    if found == 0 {
        bail!("no schedule of job {:?} is installed", a.job);
    }
    Ok(exit::OK)
}

pub(super) fn schedule_remove(a: ScheduleJobArgs) -> Result<u8> {
    if a.dir.is_none()
        && schedule::Kind::Systemd
            .system_dir()
            .join(format!("tresor-{}.timer", a.job))
            .exists()
    {
        let timer = format!("tresor-{}.timer", a.job);
        if let Err(e) = std::process::Command::new("systemctl")
            .args(["disable", "--now", &timer])
            .status()
        {
            eprintln!("tresor: warning: systemctl disable --now {timer}: {e}");
        }
    }
    let mut removed = 0;
    for d in schedule_dirs(&a.dir) {
        for p in schedule::remove(&a.job, &d)? {
            println!("removed {}", p.display());
            removed += 1;
        }
    }
    if removed == 0 {
        bail!("no schedule of job {:?} is installed", a.job);
    }
    Ok(exit::OK)
}

pub(super) fn completions(a: CompletionsArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "tresor", &mut std::io::stdout());
    Ok(exit::OK)
}

pub(super) fn man() -> Result<u8> {
    let page = clap_mangen::Man::new(Cli::command());
    let mut out = Vec::new();
    page.render(&mut out).context("rendering the manual page")?;
    std::io::stdout().write_all(&out)?;
    Ok(exit::OK)
}
