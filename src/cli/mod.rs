//! The command line: a thin layer from clap arguments to library calls and back to text, JSON
//! and exit codes. Progress bars only on a terminal; in cron, errors and a one-line summary.
//!
//! This module holds the clap argument tree, dispatch, exit-code mapping, the password sources
//! and opening/locking the repository; the commands live in `snapshots` (create, list, show,
//! restore, ls, diff, stats), `databases` (db list, db restore, drill), `maintenance` (check, repair, unlock, prune, forget, mount),
//! `copying` (repo copy), `keys` (key list, add, remove, passwd) and `jobs` (run, status, config
//! check, schedule, completions, man).

mod args;
mod copying;
mod databases;
mod jobs;
mod keys;
mod maintenance;
mod snapshots;

use args::*;
use copying::*;
use databases::*;
use jobs::*;
use keys::*;
use maintenance::*;
use snapshots::*;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

use tresor::backend::{self, BackendOptions, Location};
use tresor::backup::{self, CreateOptions, Progress};
use tresor::check::{self, CheckOptions, Subset};
use tresor::error::Error;
use tresor::format::chunker::ChunkerParams;
use tresor::format::id::ObjectId;
use tresor::format::snapshot::{Snapshot, SourceRecord};
use tresor::progress::PhaseProgress;
use tresor::repair;
use tresor::repo::keys::KdfParams;
use tresor::repo::lock::LockTiming;
use tresor::repo::{self, InitOptions, Repo};
use tresor::restore;
use tresor::source::SourceSpec;

/// Exit codes (also in README.md).
pub use tresor::error::exit;

/// Entry point: runs the CLI and maps errors to exit codes.
pub fn main() -> ExitCode {
    if let Err(e) = tresor::interrupt::install() {
        eprintln!("tresor: warning: {e} (Ctrl-C will not stop cleanly)");
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("tresor: error: {}", render_error(&e));
            ExitCode::from(code_for(&e))
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<Error>(), Some(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, each said once: a library error already names its
/// cause (`reading X: Permission denied`), which the chain would repeat.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if out.is_empty() {
            out = t;
        } else if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
    }
    out
}

fn code_for(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map_or(exit::FATAL, Error::exit_code)
}

fn run(mut cli: Cli) -> Result<u8> {
    let job_commands = matches!(
        cli.command,
        Command::Run(_)
            | Command::Status(_)
            | Command::Config(_)
            | Command::Schedule(_)
            | Command::Completions(_)
            | Command::Man
    );
    if !job_commands {
        settings_from_config(&mut cli.global)?;
    } else if let Some(j) = &cli.global.job {
        bail!(
            "--job {j:?} is for the repository commands; `run`, `status` and `schedule` name their jobs as arguments"
        );
    }
    let g = &cli.global;
    match cli.command {
        Command::Repo(RepoCmd::Init(a)) => init(g, a),
        Command::Snapshot(SnapshotCmd::Create(a)) => create(g, a),
        Command::Snapshot(SnapshotCmd::List(a)) => list(g, a),
        Command::Snapshot(SnapshotCmd::Show(a)) => show(g, a),
        Command::Snapshot(SnapshotCmd::Restore(a)) => restore(g, a),
        Command::Check(a) => check(g, a),
        Command::Repair(RepairCmd::Index(a)) => repair_index(g, a),
        Command::Repair(RepairCmd::Snapshots(a)) => repair_snapshots(g, a),
        Command::Repo(RepoCmd::Unlock(a)) => unlock(g, a),
        Command::Repo(RepoCmd::Copy(a)) => repo_copy(g, a),
        Command::Snapshot(SnapshotCmd::Forget(a)) => forget(g, a),
        Command::Snapshot(SnapshotCmd::Ls(a)) => ls(g, a),
        Command::Snapshot(SnapshotCmd::Diff(a)) => diff(g, a),
        Command::Prune(a) => prune(g, a),
        Command::Stats(a) => stats(g, a),
        Command::Mount(a) => mount(g, a),
        Command::Key(KeyCmd::List(a)) => key_list(g, a),
        Command::Key(KeyCmd::Add(a)) => key_add(g, a),
        Command::Key(KeyCmd::Remove(a)) => key_remove(g, a),
        Command::Key(KeyCmd::Passwd(a)) => key_passwd(g, a),
        Command::Db(DbCmd::List(a)) => db_list(g, a),
        Command::Db(DbCmd::Restore(a)) => db_restore(g, a),
        Command::Drill(a) => drill(g, a),
        Command::Run(a) => run_jobs(g, a),
        Command::Status(a) => job_status(g, a),
        Command::Config(ConfigCmd::Check) => config_check(g),
        Command::Schedule(ScheduleCmd::Install(a)) => schedule_install(g, a),
        Command::Schedule(ScheduleCmd::Show(a)) => schedule_show(a),
        Command::Schedule(ScheduleCmd::Remove(a)) => schedule_remove(a),
        Command::Completions(a) => completions(a),
        Command::Man => man(),
    }
}

/// Fills the repository, password source and cache directory that no flag or environment
/// variable gave from the configuration file: its `[defaults]`, or with `--job` that job.
/// A file named by --config / TRESOR_CONFIG is always read (a broken one is an error); the
/// default places only when something is missing, and none existing is fine.
fn settings_from_config(g: &mut Global) -> Result<()> {
    let password_given = g.password_command.is_some()
        || g.password_file.is_some()
        || std::env::var_os("TRESOR_PASSWORD").is_some();
    let needed = g.repo.is_none() || !password_given || g.job.is_some();
    let path = match &g.config {
        Some(p) => p.clone(),
        None if !needed => return Ok(()),
        None => match tresor::jobs::config::default_paths()
            .into_iter()
            .find(|p| p.exists())
        {
            Some(p) => p,
            None if g.job.is_some() => {
                // Names the places tried.
                tresor::jobs::config::find_default().context("--job needs a configuration file")?
            }
            None => return Ok(()),
        },
    };
    let overrides = tresor::jobs::config::Overrides {
        repository: g.repo.clone(),
        password_file: g.password_file.clone(),
        password_command: g.password_command.clone(),
        password_env: std::env::var_os("TRESOR_PASSWORD").is_some(),
        cache_dir: g.cache_dir.clone(),
    };
    let cfg = tresor::jobs::config::load(&path, &overrides)?;
    let d = match &g.job {
        Some(name) => {
            let j = cfg.select(std::slice::from_ref(name))?[0];
            tresor::jobs::config::Defaults {
                repository: Some(j.repository.clone()),
                password: Some(j.password.clone()),
                cache_dir: Some(tresor::jobs::run::cache_dir(j)),
            }
        }
        None => cfg.defaults.clone(),
    };
    if g.repo.is_none() {
        g.repo = d.repository;
    }
    if !password_given {
        use tresor::jobs::config::PasswordSource;
        match d.password {
            Some(PasswordSource::File(f)) => g.password_file = Some(f),
            Some(PasswordSource::Command(c)) => g.password_command = Some(c),
            Some(PasswordSource::Env) | None => {}
        }
    }
    if g.cache_dir.is_none() {
        g.cache_dir = d.cache_dir;
    }
    Ok(())
}

fn repo_location(g: &Global) -> Result<Location> {
    let given = g.repo.as_deref().ok_or_else(|| {
        anyhow!(
            "no repository given: use --repo, set TRESOR_REPO, or set `repository` in the [defaults] of the configuration file (--config FILE)"
        )
    })?;
    Ok(Location::parse_os(given)?)
}

/// The password, from (in order) --password-command, --password-file, TRESOR_PASSWORD, a prompt.
fn password(g: &Global, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(cmd) = &g.password_command {
        return Ok(tresor::repo::password::from_command(cmd)?);
    }
    password_from(
        g.password_file.as_deref(),
        "TRESOR_PASSWORD",
        ("password", "repository password"),
        confirm,
        "set TRESOR_PASSWORD_FILE, TRESOR_PASSWORD_COMMAND or TRESOR_PASSWORD, or `password-file` in the [defaults] of the configuration file",
    )
}

/// A password from the first line of `file`, else the environment variable `var`, else a
/// prompt (only on a terminal, so cron never hangs; asked twice with `confirm`). `names` is
/// (what messages call it, what the prompt asks for); `how` tells, when none is given, how to
/// give one.
fn password_from(
    file: Option<&std::path::Path>,
    var: &str,
    names: (&str, &str),
    confirm: bool,
    how: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let (what, prompt) = names;
    if let Some(f) = file {
        return Ok(tresor::repo::password::from_file(f, what)?);
    }
    if let Some(p) = std::env::var_os(var) {
        use std::os::unix::ffi::OsStrExt;
        return non_empty(Zeroizing::new(p.as_bytes().to_vec()));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no {what} given: {how} (no prompt: standard input is not a terminal)");
    }
    let p = Zeroizing::new(
        rpassword::prompt_password(format!("{prompt}: ")).context("reading the password")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password(format!("repeat {prompt}: "))
                .context("reading the password")?,
        );
        if *again != *p {
            bail!("the passwords do not match");
        }
    }
    non_empty(Zeroizing::new(p.as_bytes().to_vec()))
}

fn non_empty(p: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>> {
    Ok(tresor::repo::password::non_empty(p)?)
}

fn open(g: &Global) -> Result<Repo> {
    Ok(open_keeping_password(g)?.0)
}

/// [`open`], also returning the password (`repo copy` tries it on the source).
fn open_keeping_password(g: &Global) -> Result<(Repo, Zeroizing<Vec<u8>>)> {
    let backend = backend::open(&repo_location(g)?)?;
    let pw = password(g, false)?;
    let cache = g.cache_dir.clone().unwrap_or_else(repo::default_cache_dir);
    let opts = repo::OpenOptions {
        key_hint: g.key_hint.clone(),
        connections: g.connections.map(usize::from),
    };
    let repo = Repo::open_with(backend, &pw, &cache, &opts)?;
    for w in repo.warnings() {
        eprintln!("tresor: warning: {w} (run `tresor check`)");
    }
    Ok((repo, pw))
}

/// Takes the repository lock for `operation` (the repository holds it until it is dropped),
/// printing any stale locks and temporary files it removed. An operation that takes the lock
/// stops cleanly at its safe points on the first Ctrl-C.
fn lock(g: &Global, repo: &mut Repo, operation: &str, exclusive: bool) -> Result<()> {
    if g.no_lock {
        bail!("--no-lock is for reading commands only; `{operation}` changes the repository");
    }
    let retry = match &g.retry_lock {
        Some(r) => std::time::Duration::from_secs(parse_age(r)?),
        None => std::time::Duration::ZERO,
    };
    tresor::interrupt::set_cooperative(true);
    for m in repo.lock(operation, exclusive, retry, LockTiming::default())? {
        eprintln!("tresor: {m}");
    }
    Ok(())
}

/// The shared lock of a reading command, unless `--no-lock`, or the repository refuses writes
/// (read-only media): then it is read without a lock, with a note.
fn lock_for_reading(g: &Global, repo: &mut Repo, operation: &str) -> Result<()> {
    tresor::interrupt::set_cooperative(true);
    if g.no_lock {
        return Ok(());
    }
    let retry = match &g.retry_lock {
        Some(r) => std::time::Duration::from_secs(parse_age(r)?),
        None => std::time::Duration::ZERO,
    };
    match repo.lock(operation, false, retry, LockTiming::default()) {
        Ok(notes) => {
            for m in notes {
                eprintln!("tresor: {m}");
            }
            Ok(())
        }
        Err(e) if e.is_read_only() => {
            if !g.quiet {
                eprintln!(
                    "tresor: note: the repository does not accept writes ({e}); reading it without a lock"
                );
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn init(g: &Global, a: InitArgs) -> Result<u8> {
    let location = repo_location(g)?;
    if a.group_readable && !location.is_local() {
        bail!(
            "--group-readable sets directory permissions, so it is for a local repository only; {location} is not one"
        );
    }
    let backend = backend::open_with(
        &location,
        &BackendOptions {
            group_readable: a.group_readable,
        },
    )?;
    let pw = password(g, true)?;
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: a.chunk_min,
            avg_size: a.chunk_avg,
            max_size: a.chunk_max,
        },
        pack_size: a
            .pack_size_mib
            .checked_mul(1024 * 1024)
            .ok_or_else(|| anyhow!("pack size too large"))?,
        compression_level: a.compression_level,
        kdf: KdfParams {
            memory_kib: a.kdf_memory_kib,
            iterations: a.kdf_iterations,
            parallelism: 1,
        },
    };
    let config = match &a.copy_chunker_params_from {
        None => Repo::init(backend.as_ref(), &pw, &opts)?,
        Some(from) => {
            let source = open_source(g, from, &a.from_password, &pw)?;
            Repo::init_like(backend.as_ref(), &pw, &opts, &source)?
        }
    };
    if !g.quiet {
        println!(
            "created tresor repository {} at {}",
            &config.id[..8],
            backend.location()
        );
        println!("keep the password safe: without it the data cannot be read by anyone");
    }
    Ok(exit::OK)
}

/// Opens the source repository of `repo copy` or `repo init --copy-chunker-params-from`:
/// its password from --from-password-file, else $TRESOR_FROM_PASSWORD, else `target_pw`.
fn open_source(
    g: &Global,
    from: &std::ffi::OsStr,
    a: &FromPasswordArgs,
    target_pw: &[u8],
) -> Result<Repo> {
    let location = Location::parse_os(from)?;
    let backend = backend::open(&location)?;
    let pw = if a.from_password_file.is_some() || std::env::var_os("TRESOR_FROM_PASSWORD").is_some()
    {
        password_from(
            a.from_password_file.as_deref(),
            "TRESOR_FROM_PASSWORD",
            ("source password", "source repository password"),
            false,
            "use --from-password-file or TRESOR_FROM_PASSWORD",
        )?
    } else {
        Zeroizing::new(target_pw.to_vec())
    };
    let cache = g.cache_dir.clone().unwrap_or_else(repo::default_cache_dir);
    let opts = repo::OpenOptions {
        key_hint: a.from_key_hint.clone(),
        connections: g.connections.map(usize::from),
    };
    let repo = Repo::open_with(backend, &pw, &cache, &opts).with_context(|| {
        let how = if a.from_password_file.is_some() {
            "--from-password-file"
        } else if std::env::var_os("TRESOR_FROM_PASSWORD").is_some() {
            "TRESOR_FROM_PASSWORD"
        } else {
            "the password of --repo, as no --from-password-file was given"
        };
        format!("opening the source repository {location} (with {how})")
    })?;
    for w in repo.warnings() {
        eprintln!("tresor: warning: source: {w} (run `tresor check` on it)");
    }
    Ok(repo)
}

struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn read(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
    fn warn(&self, message: &str) {
        match &self.0 {
            Some(b) => b.suspend(|| eprintln!("tresor: warning: {message}")),
            None => eprintln!("tresor: warning: {message}"),
        }
    }
}

fn bar(g: &Global, what: &str) -> Option<ProgressBar> {
    if g.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new_spinner();
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{bytes}} at {{bytes_per_sec}}, {{elapsed}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    b.set_style(style);
    b.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(b)
}

/// The `--json` output `v` (an object) with the requests this process made to the storage,
/// by kind, as `"requests"`.
fn with_requests(repo: &Repo, mut v: serde_json::Value) -> serde_json::Value {
    if let (Some(obj), Some(c)) = (v.as_object_mut(), repo.request_counts()) {
        let mut counts = serde_json::to_value(c).unwrap_or_default();
        counts["total"] = serde_json::Value::from(c.total());
        obj.insert("requests".into(), counts);
    }
    v
}

use tresor::units::human;

#[cfg(test)]
mod tests {
    use super::split_named_command;

    #[test]
    fn named_commands_and_shell_variables() {
        assert_eq!(
            split_named_command("shop.sql=pg_dump shop"),
            Some(("shop.sql", "pg_dump shop"))
        );
        assert_eq!(
            split_named_command("crm=pg_dump crm"),
            Some(("crm", "pg_dump crm"))
        );
        assert_eq!(split_named_command("PGHOST=db pg_dump shop"), None);
        assert_eq!(split_named_command("pg_dump shop"), None);
        assert_eq!(split_named_command("a b=c"), None);
        assert_eq!(split_named_command("x.sql="), None);
        assert_eq!(split_named_command("pg_dump --format=custom shop"), None);
    }
}
