//! The configuration file (`tresor.toml`): parsing, validation and the effective settings of
//! each job.
//!
//! A file has `[defaults]`, inherited by every `[jobs.NAME]`. A job's key replaces the
//! default's; in the `hooks`, `notify` and `check` tables each key is inherited on its own.
//! Flags and environment variables ([`Overrides`]) beat both. Every error names the file and
//! the line: unknown keys and bad values through the TOML parser's spans, missing pieces (no
//! password source, nothing to back up) through the line of the job's table.
//!
//! Relative file names (`password-file`, `exclude-file`, `cache-dir`, `state-dir`,
//! `prometheus-textfile`, a repository path) are relative to the file's directory, so a cron
//! job's working directory does not matter.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::forget::policy::Policy;

/// Where tresor looks for its file without `--config`: `/etc/tresor/tresor.toml`, else
/// `$XDG_CONFIG_HOME/tresor/tresor.toml` (`~/.config/…` without it). The first that exists wins.
pub fn default_paths() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/tresor/tresor.toml")];
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    if let Some(d) = xdg {
        v.push(d.join("tresor").join("tresor.toml"));
    }
    v
}

/// The first of [`default_paths`] that exists.
pub fn find_default() -> Result<PathBuf> {
    let paths = default_paths();
    paths.iter().find(|p| p.exists()).cloned().ok_or_else(|| {
        let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        Error::Config {
            at: "configuration".into(),
            message: format!(
                "no configuration file: none of {} exists (give --config FILE or set TRESOR_CONFIG)",
                tried.join(", ")
            ),
        }
    })
}

/// Settings given on the command line or in the environment; they beat the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--repo` / `TRESOR_REPO`.
    pub repository: Option<OsString>,
    /// `--password-file` / `TRESOR_PASSWORD_FILE`.
    pub password_file: Option<PathBuf>,
    /// `--password-command` / `TRESOR_PASSWORD_COMMAND`.
    pub password_command: Option<String>,
    /// `TRESOR_PASSWORD` is set.
    pub password_env: bool,
    /// `--cache-dir` / `TRESOR_CACHE_DIR`.
    pub cache_dir: Option<PathBuf>,
}

/// Where a job's password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// The first line of a file.
    File(PathBuf),
    /// The first line of a command's output.
    Command(String),
    /// `$TRESOR_PASSWORD`.
    Env,
}

impl PasswordSource {
    /// Reads the password.
    pub fn read(&self) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            PasswordSource::File(f) => crate::repo::password::from_file(f, "password"),
            PasswordSource::Command(c) => crate::repo::password::from_command(c),
            PasswordSource::Env => match std::env::var_os("TRESOR_PASSWORD") {
                Some(p) => {
                    use std::os::unix::ffi::OsStrExt;
                    crate::repo::password::non_empty(Zeroizing::new(p.as_bytes().to_vec()))
                }
                None => Err(Error::Password("TRESOR_PASSWORD is not set".into())),
            },
        }
    }
}

/// When a step that need not run every time (prune, check) is due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Due {
    /// Every run.
    Always,
    /// Never.
    Never,
    /// When the last successful run of the step is at least this many seconds old.
    Every(u64),
    /// Prune only: when more than this share of the stored bytes is unused.
    UnusedOver(f64),
}

/// What to leave out of the snapshot (as `snapshot create`'s exclude options).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Excludes {
    /// `--exclude` globs.
    pub patterns: Vec<String>,
    /// `--exclude-file` files.
    pub files: Vec<PathBuf>,
    /// `--exclude-if-present` names.
    pub if_present: Vec<String>,
    /// `--exclude-caches`.
    pub caches: bool,
    /// `--one-file-system`.
    pub one_file_system: bool,
}

/// The check step's policy.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckPolicy {
    /// When it runs (`when`, default every run).
    pub when: Due,
    /// Re-read packs not verified within this many seconds (`read-data-max-age`).
    pub read_data_max_age: Option<u64>,
    /// Read at most this many bytes (`budget`).
    pub budget: Option<u64>,
}

/// A job's hooks: shell commands run with `sh -c`, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hooks {
    /// Before anything touches the repository; one failing fails the job.
    pub before: Vec<String>,
    /// After every step succeeded (warnings included).
    pub after: Vec<String>,
    /// After a step failed.
    pub failure: Vec<String>,
    /// Last, whatever happened.
    pub finally: Vec<String>,
}

/// How a job reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Notify {
    /// A healthchecks.io-style URL: `/start`, the URL itself on success, `/fail`.
    pub ping: Option<String>,
    /// A shell command (mail, ntfy, curl …) given the log tail on standard input.
    pub command: Option<String>,
    /// Run the command after every run, not only after a failure (`when = "always"`).
    pub command_always: bool,
}

/// A repository a job copies its new snapshots into (`copy = [{ repository = …, … }]`).
#[derive(Clone, Debug, PartialEq)]
pub struct CopyTarget {
    /// Its location.
    pub repository: OsString,
    /// Its password (default: the job's own).
    pub password: PasswordSource,
}

/// What a second run of a job does while one is still going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Wait for it to end, then run.
    Wait,
    /// Skip this run (recorded as skipped, exit 0).
    Skip,
}

/// One job with every setting resolved.
#[derive(Clone, Debug)]
pub struct Job {
    /// Its name (`[jobs.NAME]`).
    pub name: String,
    /// The line of its table in the file.
    pub line: usize,
    /// The repository location.
    pub repository: OsString,
    /// The password source.
    pub password: PasswordSource,
    /// The cache directory (None: the default one).
    pub cache_dir: Option<PathBuf>,
    /// Host name to record.
    pub host: Option<String>,
    /// Files and directories to back up (absolute).
    pub paths: Vec<PathBuf>,
    /// Command streams, NAME → command.
    pub commands: Vec<(String, String)>,
    /// The hooks of the sources that have any, in source order (see [`crate::jobs::sources`]).
    pub source_hooks: Vec<crate::jobs::sources::SourceHooks>,
    /// Database sources (`postgres`, `mariadb`, `sqlite`, `count-rows`).
    pub databases: DatabaseSources,
    /// Tags (the `job:NAME` tag is added to these).
    pub tags: Vec<String>,
    /// Excludes.
    pub excludes: Excludes,
    /// Retention (None: no forget step).
    pub keep: Option<Policy>,
    /// When to prune.
    pub prune: Due,
    /// When to drill the new snapshot's database sources (`drill`, default never).
    pub drill: Due,
    /// The prune's repack threshold (`max-unused`, default 10%).
    pub max_unused: f64,
    /// The check step (None: no check).
    pub check: Option<CheckPolicy>,
    /// The age after which `tresor status` calls the job stale.
    pub max_age: Option<u64>,
    /// Hooks.
    pub hooks: Hooks,
    /// Seconds a hook (or the notification command) may run.
    pub hook_timeout: u64,
    /// Notifications.
    pub notify: Notify,
    /// Overlapping runs.
    pub overlap: Overlap,
    /// Seconds to wait for a conflicting repository lock (`retry-lock`, default 10 min).
    pub retry_lock: u64,
    /// Repositories the job's snapshots are copied into after each run (`copy`).
    pub copy: Vec<CopyTarget>,
}

/// A job's database sources, dumped as `snapshot create --postgres/--mariadb/--sqlite` would,
/// with the client tools' own defaults for the connection (libpq's environment, `~/.my.cnf`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseSources {
    /// PostgreSQL databases (`all` for every one, plus globals).
    pub postgres: Vec<String>,
    /// MariaDB/MySQL databases (`all`).
    pub mariadb: Vec<String>,
    /// SQLite database files (absolute).
    pub sqlite: Vec<PathBuf>,
    /// Record per-table row counts.
    pub count_rows: bool,
    /// How to reach the PostgreSQL server (`pg-host`, `pg-port`, `pg-user`; else libpq's
    /// environment and defaults).
    pub pg: crate::db::PgConn,
    /// How to reach the MariaDB server (`my-socket`, `my-host`, `my-port`, `my-user`,
    /// `my-defaults-file`; else the client's defaults).
    pub my: crate::db::MyConn,
}

impl DatabaseSources {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.postgres.is_empty() && self.mariadb.is_empty() && self.sqlite.is_empty()
    }
}

impl Job {
    /// The tag every snapshot of this job carries: `job:NAME`.
    pub fn tag(&self) -> String {
        job_tag(&self.name)
    }
}

/// The tag the snapshots of job `name` carry.
pub fn job_tag(name: &str) -> String {
    format!("job:{name}")
}

/// What `[defaults]` says about the repository, resolved like a job's (overrides
/// included): what `tresor --config FILE snapshot list` and the other repository commands
/// use when no flag or environment variable says otherwise.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    /// `repository`.
    pub repository: Option<OsString>,
    /// `password-file` or `password-command`.
    pub password: Option<PasswordSource>,
    /// `cache-dir`.
    pub cache_dir: Option<PathBuf>,
}

/// A parsed, validated file.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file.
    pub path: PathBuf,
    /// The repository settings of `[defaults]`.
    pub defaults: Defaults,
    /// `state-dir` (None: the default, see [`crate::jobs::state::default_dir`]).
    pub state_dir: Option<PathBuf>,
    /// `prometheus-textfile`: written after each run.
    pub prometheus_textfile: Option<PathBuf>,
    /// The jobs, by name.
    pub jobs: Vec<Job>,
}

impl Config {
    /// The jobs named (all of them, in file order, for none); an unknown name is an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Job>> {
        if names.is_empty() {
            return Ok(self.jobs.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.jobs.iter().find(|j| &j.name == n).ok_or_else(|| {
                    let known: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
                    Error::InvalidArgument(format!(
                        "no job {n:?} in {} (it has: {})",
                        self.path.display(),
                        known.join(", ")
                    ))
                })
            })
            .collect()
    }
}

/// Reads and validates `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading configuration file {}", path.display()), e))?;
    // Relative names in the file are relative to its directory, wherever tresor runs from.
    let path = std::path::absolute(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    parse(&text, &path, overrides)
}

/// A value the file writes as a string and `parse` reads; its error becomes the TOML error
/// (with the value's line).
macro_rules! parsed_string {
    ($(#[$doc:meta])* $name:ident($inner:ty), $parse:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        struct $name($inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                let parse: fn(&str) -> std::result::Result<$inner, String> = $parse;
                parse(&s).map($name).map_err(serde::de::Error::custom)
            }
        }
    };
}

parsed_string!(
    /// A duration written like `26h`, `30d`, `1d12h` (s, m, h, d, w, M, y).
    Secs(u64),
    crate::forget::policy::parse_duration
);
parsed_string!(
    /// A size written like `2GiB`, `500MB`.
    Bytes(u64),
    |s| crate::units::parse_size(s).map_err(|e| e.to_string())
);
parsed_string!(
    /// A share written like `10%`.
    Share(f64),
    |s| crate::units::parse_share(s).map_err(|e| e.to_string())
);
parsed_string!(
    /// `always | never | hourly | daily | weekly | monthly`, or for prune also `"N%"`.
    When(Due),
    parse_due
);

fn parse_due(s: &str) -> std::result::Result<Due, String> {
    Ok(match s.trim() {
        "always" => Due::Always,
        "never" => Due::Never,
        "hourly" => Due::Every(3600),
        "daily" => Due::Every(86_400),
        "weekly" => Due::Every(7 * 86_400),
        "monthly" => Due::Every(30 * 86_400),
        t if t.ends_with('%') => {
            Due::UnusedOver(crate::units::parse_share(t).map_err(|e| e.to_string())?)
        }
        _ => {
            return Err(format!(
                "bad schedule {s:?}: use always, never, hourly, daily, weekly, monthly, or for prune a share of unused bytes like \"10%\""
            ));
        }
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Option<Spanned<RawSettings>>,
    #[serde(default)]
    jobs: BTreeMap<String, Spanned<RawSettings>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSettings {
    repository: Option<String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cache_dir: Option<PathBuf>,
    state_dir: Option<Spanned<PathBuf>>,
    prometheus_textfile: Option<Spanned<PathBuf>>,
    host: Option<String>,
    paths: Option<Vec<crate::jobs::sources::RawPath>>,
    commands: Option<BTreeMap<String, crate::jobs::sources::RawCommand>>,
    postgres: Option<Vec<String>>,
    mariadb: Option<Vec<String>>,
    sqlite: Option<Vec<PathBuf>>,
    count_rows: Option<bool>,
    pg_host: Option<String>,
    pg_port: Option<u16>,
    pg_user: Option<String>,
    my_socket: Option<PathBuf>,
    my_host: Option<String>,
    my_port: Option<u16>,
    my_user: Option<String>,
    my_defaults_file: Option<PathBuf>,
    drill: Option<When>,
    tags: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    exclude_file: Option<Vec<PathBuf>>,
    exclude_if_present: Option<Vec<String>>,
    exclude_caches: Option<bool>,
    one_file_system: Option<bool>,
    keep: Option<RawKeep>,
    prune: Option<When>,
    max_unused: Option<Share>,
    check: Option<RawCheck>,
    max_age: Option<Secs>,
    hooks: Option<RawHooks>,
    hook_timeout: Option<Secs>,
    notify: Option<RawNotify>,
    overlap: Option<Overlap>,
    retry_lock: Option<Secs>,
    copy: Option<Vec<RawCopy>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCopy {
    repository: String,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawKeep {
    last: Option<u32>,
    hourly: Option<u32>,
    daily: Option<u32>,
    weekly: Option<u32>,
    monthly: Option<u32>,
    yearly: Option<u32>,
    within: Option<Secs>,
    tags: Option<Vec<String>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCheck {
    when: Option<When>,
    read_data_max_age: Option<Secs>,
    budget: Option<Bytes>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    before: Option<Vec<String>>,
    after: Option<Vec<String>>,
    failure: Option<Vec<String>>,
    finally: Option<Vec<String>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    ping: Option<String>,
    command: Option<String>,
    when: Option<NotifyWhen>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum NotifyWhen {
    Failure,
    Always,
}

/// Line (1-based) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line where job `name`'s table starts: its `[jobs.NAME]` header if it has one (a
/// header table's span may start past it), else where the span starts.
fn job_line(text: &str, name: &str, span_start: usize) -> usize {
    let header = |l: &str| {
        let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
        l == format!("[jobs.{name}]") || l == format!("[jobs.\"{name}\"]")
    };
    text.lines()
        .position(header)
        .map_or_else(|| line_of(text, span_start), |i| i + 1)
}

/// Parses and validates a file's `text` (`path` names it in errors and anchors relative paths).
pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> Result<Config> {
    let file = path.display().to_string();
    let raw: RawFile = toml::from_str(text).map_err(|e| Error::Config {
        at: match e.span() {
            Some(s) => format!("{file} line {}", line_of(text, s.start)),
            None => file.clone(),
        },
        message: e.message().trim().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let rel = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let defaults = raw.defaults.map(Spanned::into_inner).unwrap_or_default();
    if raw.jobs.is_empty() {
        return Err(Error::Config {
            at: file,
            message: "no jobs: add a [jobs.NAME] table".into(),
        });
    }
    let mut jobs = Vec::new();
    for (name, spanned) in &raw.jobs {
        let line = job_line(text, name, spanned.span().start);
        let at = format!("{file} line {line}");
        let err = |message: String| Error::Config {
            at: at.clone(),
            message: format!("job {name:?}: {message}"),
        };
        let j = spanned.get_ref();
        for (key, v) in [
            ("state-dir", &j.state_dir),
            ("prometheus-textfile", &j.prometheus_textfile),
        ] {
            if let Some(v) = v {
                return Err(Error::Config {
                    at: format!("{file} line {}", line_of(text, v.span().start)),
                    message: format!(
                        "job {name:?}: `{key}` is a setting of [defaults] only (one per file)"
                    ),
                });
            }
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || name.starts_with('.')
        {
            return Err(err(
                "a job name may hold only letters, digits, `.`, `_` and `-` (it names files and systemd units)".into(),
            ));
        }
        let d = &defaults;
        macro_rules! pick {
            ($f:ident) => {
                j.$f.clone().or_else(|| d.$f.clone())
            };
        }
        let repository = match &overrides.repository {
            Some(r) => r.clone(),
            None => {
                let r = pick!(repository).ok_or_else(|| {
                    err("no repository: set `repository` here or in [defaults] (or --repo, TRESOR_REPO)".into())
                })?;
                OsString::from(anchor_location(&r, &base))
            }
        };
        let password = if let Some(c) = &overrides.password_command {
            PasswordSource::Command(c.clone())
        } else if let Some(f) = &overrides.password_file {
            PasswordSource::File(f.clone())
        } else if overrides.password_env {
            PasswordSource::Env
        } else {
            match (pick!(password_command), pick!(password_file)) {
                (Some(_), Some(_)) if j.password_command.is_some() == j.password_file.is_some() => {
                    return Err(err(
                        "both `password-file` and `password-command` are set; give one".into(),
                    ));
                }
                // A job's own source beats the other one inherited from [defaults].
                (Some(c), Some(_)) if j.password_command.is_some() => PasswordSource::Command(c),
                (Some(_), Some(f)) => PasswordSource::File(rel(&f)),
                (Some(c), None) => PasswordSource::Command(c),
                (None, Some(f)) => PasswordSource::File(rel(&f)),
                (None, None) => {
                    return Err(err(
                        "no password source: set `password-file` or `password-command` here or in [defaults] (or TRESOR_PASSWORD_FILE, TRESOR_PASSWORD_COMMAND, TRESOR_PASSWORD)".into(),
                    ));
                }
            }
        };
        let (paths, commands, source_hooks) = crate::jobs::sources::split(
            pick!(paths).unwrap_or_default(),
            pick!(commands).unwrap_or_default(),
        );
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(err(format!(
                "path {:?} is relative; give absolute paths (cron's working directory is not yours)",
                p.display().to_string()
            )));
        }
        for (n, c) in &commands {
            let ok_name =
                !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0');
            if !ok_name {
                return Err(err(format!(
                    "command stream name {n:?} must be a file name (no `/`)"
                )));
            }
            if c.trim().is_empty() {
                return Err(err(format!("command stream {n:?} has an empty command")));
            }
        }
        let databases = DatabaseSources {
            postgres: pick!(postgres).unwrap_or_default(),
            mariadb: pick!(mariadb).unwrap_or_default(),
            sqlite: pick!(sqlite).unwrap_or_default(),
            count_rows: pick!(count_rows).unwrap_or(false),
            pg: crate::db::PgConn {
                host: pick!(pg_host),
                port: pick!(pg_port),
                user: pick!(pg_user),
                ..Default::default()
            },
            my: crate::db::MyConn {
                socket: pick!(my_socket).map(|p| rel(&p)),
                host: pick!(my_host),
                port: pick!(my_port),
                user: pick!(my_user),
                defaults_file: pick!(my_defaults_file).map(|p| rel(&p)),
                ..Default::default()
            },
        };
        let drill = pick!(drill).map_or(Due::Never, |w| w.0);
        if matches!(drill, Due::UnusedOver(_)) {
            return Err(err(
                "`drill` takes always, never, hourly, daily, weekly or monthly (a share is for prune)"
                    .into(),
            ));
        }
        if drill != Due::Never && databases.is_empty() {
            return Err(err(
                "`drill` needs database sources to drill (postgres, mariadb or sqlite)".into(),
            ));
        }
        if let Some(p) = databases.sqlite.iter().find(|p| !p.is_absolute()) {
            return Err(err(format!(
                "sqlite {:?} is relative; give absolute paths",
                p.display().to_string()
            )));
        }
        if paths.is_empty() && commands.is_empty() && databases.is_empty() {
            return Err(err(
                "nothing to back up: give `paths`, `commands`, `postgres`, `mariadb` or `sqlite`"
                    .into(),
            ));
        }
        let keep = pick!(keep).map(|k| Policy {
            keep_last: k.last,
            keep_hourly: k.hourly,
            keep_daily: k.daily,
            keep_weekly: k.weekly,
            keep_monthly: k.monthly,
            keep_yearly: k.yearly,
            keep_within_secs: k.within.map(|s| s.0),
            keep_tags: k.tags.unwrap_or_default(),
        });
        if let Some(k) = &keep
            && k.is_empty()
            && k.keep_within_secs.is_none()
            && k.keep_tags.is_empty()
        {
            return Err(err(
                "`keep` keeps nothing: give at least one of last, hourly, daily, weekly, monthly, yearly, within, tags (or leave `keep` out: no forget step)".into(),
            ));
        }
        let check = match (&j.check, &d.check) {
            (None, None) => None,
            (jc, dc) => {
                let jc = jc.clone().unwrap_or_default();
                let dc = dc.clone().unwrap_or_default();
                Some(CheckPolicy {
                    when: jc.when.or(dc.when).map_or(Due::Always, |w| w.0),
                    read_data_max_age: jc.read_data_max_age.or(dc.read_data_max_age).map(|s| s.0),
                    budget: jc.budget.or(dc.budget).map(|b| b.0),
                })
            }
        };
        if let Some(CheckPolicy {
            when: Due::UnusedOver(_),
            ..
        }) = check
        {
            return Err(err(
                "check `when` takes always, never, hourly, daily, weekly or monthly (a share is for prune)".into(),
            ));
        }
        let hooks = {
            let jh = j.hooks.clone().unwrap_or_default();
            let dh = d.hooks.clone().unwrap_or_default();
            Hooks {
                before: jh.before.or(dh.before).unwrap_or_default(),
                after: jh.after.or(dh.after).unwrap_or_default(),
                failure: jh.failure.or(dh.failure).unwrap_or_default(),
                finally: jh.finally.or(dh.finally).unwrap_or_default(),
            }
        };
        let notify = {
            let jn = j.notify.clone().unwrap_or_default();
            let dn = d.notify.clone().unwrap_or_default();
            Notify {
                ping: jn.ping.or(dn.ping),
                command: jn.command.or(dn.command),
                command_always: jn.when.or(dn.when) == Some(NotifyWhen::Always),
            }
        };
        if let Some(p) = &notify.ping
            && !(p.starts_with("http://") || p.starts_with("https://"))
        {
            return Err(err(format!(
                "notify ping {} is not an http:// or https:// URL",
                mask_urls(p)
            )));
        }
        let excludes = Excludes {
            patterns: pick!(exclude).unwrap_or_default(),
            files: pick!(exclude_file)
                .unwrap_or_default()
                .iter()
                .map(|f| rel(f))
                .collect(),
            if_present: pick!(exclude_if_present).unwrap_or_default(),
            caches: pick!(exclude_caches).unwrap_or(false),
            one_file_system: pick!(one_file_system).unwrap_or(false),
        };
        let mut copy = Vec::new();
        for c in pick!(copy).unwrap_or_default() {
            let target_password = match (c.password_command, c.password_file) {
                (Some(_), Some(_)) => {
                    return Err(err(format!(
                        "copy target {}: both `password-file` and `password-command` are set; give one",
                        mask_urls(&c.repository)
                    )));
                }
                (Some(cmd), None) => PasswordSource::Command(cmd),
                (None, Some(f)) => PasswordSource::File(rel(&f)),
                (None, None) => password.clone(),
            };
            copy.push(CopyTarget {
                repository: OsString::from(anchor_location(&c.repository, &base)),
                password: target_password,
            });
        }
        jobs.push(Job {
            name: name.clone(),
            line,
            repository,
            password,
            cache_dir: overrides
                .cache_dir
                .clone()
                .or_else(|| pick!(cache_dir).map(|c| rel(&c))),
            host: pick!(host),
            paths,
            commands,
            source_hooks,
            databases,
            tags: pick!(tags).unwrap_or_default(),
            excludes,
            keep,
            prune: pick!(prune).map_or(Due::Never, |w| w.0),
            drill,
            max_unused: pick!(max_unused).map_or(0.1, |s| s.0),
            check,
            max_age: pick!(max_age).map(|s| s.0),
            hooks,
            hook_timeout: pick!(hook_timeout).map_or(3600, |s| s.0),
            notify,
            overlap: pick!(overlap).unwrap_or(Overlap::Wait),
            retry_lock: pick!(retry_lock).map_or(600, |s| s.0),
            copy,
        });
    }
    // Jobs in file order (the map sorted them by name).
    jobs.sort_by_key(|j| j.line);
    let defaults_resolved =
        resolve_defaults(&defaults, overrides, &base).map_err(|message| Error::Config {
            at: format!("{file} [defaults]"),
            message,
        })?;
    Ok(Config {
        path: path.to_path_buf(),
        defaults: defaults_resolved,
        state_dir: defaults.state_dir.map(|s| rel(s.get_ref())),
        prometheus_textfile: defaults.prometheus_textfile.map(|s| rel(s.get_ref())),
        jobs,
    })
}

/// The repository settings of `[defaults]` with the overrides applied.
fn resolve_defaults(
    d: &RawSettings,
    overrides: &Overrides,
    base: &Path,
) -> std::result::Result<Defaults, String> {
    let rel = |p: &Path| base.join(p);
    let password = if let Some(c) = &overrides.password_command {
        Some(PasswordSource::Command(c.clone()))
    } else if let Some(f) = &overrides.password_file {
        Some(PasswordSource::File(f.clone()))
    } else if overrides.password_env {
        Some(PasswordSource::Env)
    } else {
        match (&d.password_command, &d.password_file) {
            (Some(_), Some(_)) => {
                return Err("both `password-file` and `password-command` are set; give one".into());
            }
            (Some(c), None) => Some(PasswordSource::Command(c.clone())),
            (None, Some(f)) => Some(PasswordSource::File(rel(f))),
            (None, None) => None,
        }
    };
    Ok(Defaults {
        repository: overrides.repository.clone().or_else(|| {
            d.repository
                .as_deref()
                .map(|r| OsString::from(anchor_location(r, base)))
        }),
        password,
        cache_dir: overrides
            .cache_dir
            .clone()
            .or_else(|| d.cache_dir.as_deref().map(rel)),
    })
}

/// A repository written as a relative path is relative to the file's directory; schemes
/// (`s3:`, `local:`) and absolute paths stay as written.
fn anchor_location(r: &str, base: &Path) -> String {
    let has_scheme = r
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()));
    if r.starts_with('/') || (has_scheme && !r.starts_with('.')) {
        r.to_string()
    } else {
        base.join(r).display().to_string()
    }
}

/// `text` with the path and query of every URL in it replaced by `…` (ping URLs and webhook
/// URLs carry their secret there), so it can be printed.
pub fn mask_urls(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let scheme_start = rest[..i]
            .rfind(|c: char| !c.is_ascii_alphanumeric())
            .map_or(0, |p| p + 1);
        let after = &rest[i + 3..];
        let host_end = after
            .find(|c: char| c == '/' || c == '?' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        let host = &after[..host_end];
        // userinfo is a secret too.
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let tail = &after[host_end..];
        let secret_end = tail
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        out.push_str(&rest[..scheme_start]);
        out.push_str(&rest[scheme_start..i]);
        out.push_str("://");
        out.push_str(host);
        if secret_end > 0 {
            out.push_str("/…");
        }
        rest = &tail[secret_end..];
    }
    out.push_str(rest);
    out
}

fn fmt_secs(s: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// `always`, `daily`, `every 36h`, `10%`.
pub fn describe_due(d: Due) -> String {
    match d {
        Due::Always => "always".into(),
        Due::Never => "never".into(),
        Due::Every(3600) => "hourly".into(),
        Due::Every(86_400) => "daily".into(),
        Due::Every(604_800) => "weekly".into(),
        Due::Every(2_592_000) => "monthly".into(),
        Due::Every(s) => format!("every {}", fmt_secs(s)),
        Due::UnusedOver(x) => format!("{}%", x * 100.0),
    }
}

impl Job {
    /// The effective settings as a TOML table, secrets masked: a password command is shown as
    /// set, URLs lose their path (see [`mask_urls`]).
    pub fn effective(&self) -> toml::Table {
        use toml::Value as V;
        let strs = |v: &[String]| V::Array(v.iter().map(|s| V::String(mask_urls(s))).collect());
        let paths = |v: &[PathBuf]| {
            V::Array(
                v.iter()
                    .map(|p| V::String(p.display().to_string()))
                    .collect(),
            )
        };
        let mut t = toml::Table::new();
        t.insert(
            "repository".into(),
            V::String(mask_urls(&self.repository.to_string_lossy())),
        );
        match &self.password {
            PasswordSource::File(f) => {
                t.insert("password-file".into(), V::String(f.display().to_string()));
            }
            PasswordSource::Command(_) => {
                t.insert(
                    "password-command".into(),
                    V::String("(set, not shown)".into()),
                );
            }
            PasswordSource::Env => {
                t.insert("password".into(), V::String("$TRESOR_PASSWORD".into()));
            }
        }
        if let Some(c) = &self.cache_dir {
            t.insert("cache-dir".into(), V::String(c.display().to_string()));
        }
        if let Some(h) = &self.host {
            t.insert("host".into(), V::String(h.clone()));
        }
        let hooks_table = |h: &Hooks| {
            let mut t = toml::Table::new();
            for (k, list) in [
                ("before", &h.before),
                ("after", &h.after),
                ("failure", &h.failure),
                ("finally", &h.finally),
            ] {
                t.insert(k.into(), strs(list));
            }
            V::Table(t)
        };
        // A source with hooks is shown in its table form, as it is written.
        let source = |name: String, key: &str, plain: V| match crate::jobs::sources::hooks_of(
            &self.source_hooks,
            &name,
        ) {
            None => plain,
            Some(h) => {
                let mut t = toml::Table::new();
                t.insert(key.into(), plain);
                t.insert("hooks".into(), hooks_table(h));
                V::Table(t)
            }
        };
        t.insert(
            "paths".into(),
            V::Array(
                self.paths
                    .iter()
                    .map(|p| {
                        let shown = p.display().to_string();
                        source(shown.clone(), "path", V::String(shown))
                    })
                    .collect(),
            ),
        );
        let mut c = toml::Table::new();
        for (n, cmd) in &self.commands {
            c.insert(
                n.clone(),
                source(n.clone(), "command", V::String(mask_urls(cmd))),
            );
        }
        t.insert("commands".into(), V::Table(c));
        if !self.databases.is_empty() {
            t.insert("postgres".into(), strs(&self.databases.postgres));
            t.insert("mariadb".into(), strs(&self.databases.mariadb));
            t.insert("sqlite".into(), paths(&self.databases.sqlite));
            t.insert("count-rows".into(), V::Boolean(self.databases.count_rows));
            let pg = &self.databases.pg;
            let my = &self.databases.my;
            for (k, v) in [
                ("pg-host", pg.host.clone()),
                ("pg-port", pg.port.map(|p| p.to_string())),
                ("pg-user", pg.user.clone()),
                (
                    "my-socket",
                    my.socket.as_ref().map(|p| p.display().to_string()),
                ),
                ("my-host", my.host.clone()),
                ("my-port", my.port.map(|p| p.to_string())),
                ("my-user", my.user.clone()),
                (
                    "my-defaults-file",
                    my.defaults_file.as_ref().map(|p| p.display().to_string()),
                ),
            ] {
                if let Some(v) = v {
                    t.insert(k.into(), V::String(v));
                }
            }
            t.insert("drill".into(), V::String(describe_due(self.drill)));
        }
        let mut tags = self.tags.clone();
        tags.push(self.tag());
        t.insert("tags".into(), strs(&tags));
        t.insert("exclude".into(), strs(&self.excludes.patterns));
        t.insert("exclude-file".into(), paths(&self.excludes.files));
        t.insert("exclude-if-present".into(), strs(&self.excludes.if_present));
        t.insert("exclude-caches".into(), V::Boolean(self.excludes.caches));
        t.insert(
            "one-file-system".into(),
            V::Boolean(self.excludes.one_file_system),
        );
        if let Some(k) = &self.keep {
            let mut kt = toml::Table::new();
            for (name, v) in [
                ("last", k.keep_last),
                ("hourly", k.keep_hourly),
                ("daily", k.keep_daily),
                ("weekly", k.keep_weekly),
                ("monthly", k.keep_monthly),
                ("yearly", k.keep_yearly),
            ] {
                if let Some(v) = v {
                    kt.insert(name.into(), V::Integer(i64::from(v)));
                }
            }
            if let Some(w) = k.keep_within_secs {
                kt.insert("within".into(), V::String(fmt_secs(w)));
            }
            if !k.keep_tags.is_empty() {
                kt.insert("tags".into(), strs(&k.keep_tags));
            }
            t.insert("keep".into(), V::Table(kt));
        }
        t.insert("prune".into(), V::String(describe_due(self.prune)));
        t.insert(
            "max-unused".into(),
            V::String(format!("{}%", self.max_unused * 100.0)),
        );
        if let Some(c) = &self.check {
            let mut ct = toml::Table::new();
            ct.insert("when".into(), V::String(describe_due(c.when)));
            if let Some(a) = c.read_data_max_age {
                ct.insert("read-data-max-age".into(), V::String(fmt_secs(a)));
            }
            if let Some(b) = c.budget {
                ct.insert("budget".into(), V::String(crate::jobs::run::human(b)));
            }
            t.insert("check".into(), V::Table(ct));
        }
        if let Some(a) = self.max_age {
            t.insert("max-age".into(), V::String(fmt_secs(a)));
        }
        t.insert("hooks".into(), hooks_table(&self.hooks));
        t.insert(
            "hook-timeout".into(),
            V::String(fmt_secs(self.hook_timeout)),
        );
        let mut n = toml::Table::new();
        if let Some(p) = &self.notify.ping {
            n.insert("ping".into(), V::String(mask_urls(p)));
        }
        if let Some(c) = &self.notify.command {
            n.insert("command".into(), V::String(mask_urls(c)));
            n.insert(
                "when".into(),
                V::String(
                    if self.notify.command_always {
                        "always"
                    } else {
                        "failure"
                    }
                    .into(),
                ),
            );
        }
        t.insert("notify".into(), V::Table(n));
        t.insert(
            "overlap".into(),
            V::String(
                match self.overlap {
                    Overlap::Wait => "wait",
                    Overlap::Skip => "skip",
                }
                .into(),
            ),
        );
        t.insert("retry-lock".into(), V::String(fmt_secs(self.retry_lock)));
        let copies = self
            .copy
            .iter()
            .map(|c| {
                let mut ct = toml::Table::new();
                ct.insert(
                    "repository".into(),
                    V::String(mask_urls(&c.repository.to_string_lossy())),
                );
                let pw = match &c.password {
                    PasswordSource::File(f) => f.display().to_string(),
                    PasswordSource::Command(_) => "(a command, not shown)".into(),
                    PasswordSource::Env => "$TRESOR_PASSWORD".into(),
                };
                ct.insert("password".into(), V::String(pw));
                V::Table(ct)
            })
            .collect();
        t.insert("copy".into(), V::Array(copies));
        // Unset lists and tables say nothing.
        fn prune_empty(t: &mut toml::Table) {
            for (_, v) in t.iter_mut() {
                match v {
                    V::Table(inner) => prune_empty(inner),
                    V::Array(a) => {
                        for item in a.iter_mut() {
                            if let V::Table(inner) = item {
                                prune_empty(inner);
                            }
                        }
                    }
                    _ => {}
                }
            }
            t.retain(|_, v| match v {
                V::Array(a) => !a.is_empty(),
                V::Table(t) => !t.is_empty(),
                _ => true,
            });
        }
        prune_empty(&mut t);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[defaults]                      # inherited by every job
repository = "/srv/backup/repo"
password-file = "/etc/tresor/password"
hooks = { finally = ["echo done"] }

[jobs.web]
paths = ["/etc", "/var/www"]
exclude = ["*.tmp"]
commands = { "shop.sql" = "pg_dump shop" }
tags = ["nightly"]
keep = { daily = 7, weekly = 5, monthly = 12 }
prune = "weekly"
check = { read-data-max-age = "30d", budget = "2GiB" }
max-age = "26h"
hooks = { before = ["systemctl stop app-cron"], after = ["systemctl start app-cron"],
          failure = [], finally = [] }
notify = { ping = "https://hc.example/ping/UUID", command = "mail -s 'tresor: $TRESOR_JOB $TRESOR_RESULT' root" }

[jobs.db]
commands = { "crm.sql" = "pg_dump crm" }
copy = [{ repository = "s3:https://s3.example/offsite" }, { repository = "usb", password-file = "/etc/tresor/usb.pw" }]
prune = "20%"
password-command = "cat /root/pw"
"#;

    fn parse_ok(text: &str) -> Config {
        parse(
            text,
            Path::new("/etc/tresor/tresor.toml"),
            &Overrides::default(),
        )
        .unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(
            text,
            Path::new("/etc/tresor/tresor.toml"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn the_issue_example_parses_with_inheritance() {
        let c = parse_ok(EXAMPLE);
        assert_eq!(c.jobs.len(), 2);
        let web = &c.jobs[0];
        assert_eq!(web.name, "web");
        assert_eq!(web.line, 7);
        assert_eq!(web.repository, OsString::from("/srv/backup/repo"));
        assert_eq!(
            web.password,
            PasswordSource::File("/etc/tresor/password".into())
        );
        assert_eq!(
            web.paths,
            vec![PathBuf::from("/etc"), PathBuf::from("/var/www")]
        );
        assert_eq!(
            web.commands,
            vec![("shop.sql".to_string(), "pg_dump shop".to_string())]
        );
        let keep = web.keep.as_ref().unwrap();
        assert_eq!(
            (keep.keep_daily, keep.keep_weekly, keep.keep_monthly),
            (Some(7), Some(5), Some(12))
        );
        assert_eq!(web.prune, Due::Every(7 * 86_400));
        let check = web.check.as_ref().unwrap();
        assert_eq!(check.read_data_max_age, Some(30 * 86_400));
        assert_eq!(check.budget, Some(2 << 30));
        assert_eq!(web.max_age, Some(26 * 3600));
        assert_eq!(web.hooks.before, vec!["systemctl stop app-cron"]);
        // The job's own (empty) finally replaces the default's.
        assert!(web.hooks.finally.is_empty());
        assert!(web.notify.ping.is_some() && !web.notify.command_always);
        let db = &c.jobs[1];
        assert_eq!(db.name, "db");
        assert_eq!(
            db.hooks.finally,
            vec!["echo done"],
            "inherited from [defaults]"
        );
        assert_eq!(db.password, PasswordSource::Command("cat /root/pw".into()));
        assert_eq!(db.prune, Due::UnusedOver(0.2));
        assert!(db.keep.is_none() && db.check.is_none());
        assert_eq!(db.overlap, Overlap::Wait);
        assert_eq!(db.copy.len(), 2);
        assert_eq!(
            db.copy[0].password, db.password,
            "the job's password by default"
        );
        assert_eq!(db.copy[1].repository, OsString::from("/etc/tresor/usb"));
        assert_eq!(
            db.copy[1].password,
            PasswordSource::File("/etc/tresor/usb.pw".into())
        );
        assert!(web.copy.is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let unknown = parse_err(
            "[jobs.a]\npaths = [\"/x\"]\npassword-file = \"p\"\nrepository = \"/r\"\nexclud = [\"*.o\"]\n",
        );
        assert!(unknown.contains("line 5"), "{unknown}");
        assert!(unknown.contains("unknown field `exclud`"), "{unknown}");
        let duration = parse_err(
            "[defaults]\nrepository = \"/r\"\npassword-file = \"p\"\n\n[jobs.a]\npaths = [\"/x\"]\nmax-age = \"26 hours\"\n",
        );
        assert!(duration.contains("line 7"), "{duration}");
        assert!(duration.contains("duration"), "{duration}");
        let nopw = parse_err("[defaults]\nrepository = \"/r\"\n\n[jobs.web]\npaths = [\"/x\"]\n");
        assert!(nopw.contains("line 4"), "{nopw}");
        assert!(nopw.contains("no password source"), "{nopw}");
        let nothing = parse_err("[jobs.web]\nrepository = \"/r\"\npassword-file = \"p\"\n");
        assert!(nothing.contains("nothing to back up"), "{nothing}");
        let prune = parse_err(
            "[jobs.web]\nrepository = \"/r\"\npassword-file = \"p\"\npaths = [\"/x\"]\nprune = \"sometimes\"\n",
        );
        assert!(
            prune.contains("line 5") && prune.contains("bad schedule"),
            "{prune}"
        );
        let drill = parse_err(
            "[jobs.web]\nrepository = \"/r\"\npassword-file = \"p\"\npaths = [\"/x\"]\ndrill = \"weekly\"\n",
        );
        assert!(drill.contains("needs database sources"), "{drill}");
        let drill = parse_err(
            "[jobs.db]\nrepository = \"/r\"\npassword-file = \"p\"\npostgres = [\"shop\"]\ndrill = \"10%\"\n",
        );
        assert!(drill.contains("a share is for prune"), "{drill}");
        let global = parse_err(
            "[jobs.web]\nrepository = \"/r\"\npassword-file = \"p\"\npaths = [\"/x\"]\nstate-dir = \"/s\"\n",
        );
        assert!(
            global.contains("line 5") && global.contains("[defaults] only"),
            "{global}"
        );
        let both = parse_err(
            "[jobs.web]\nrepository = \"/r\"\npassword-file = \"p\"\npassword-command = \"c\"\npaths = [\"/x\"]\n",
        );
        assert!(both.contains("give one"), "{both}");
        let relative = parse_err(
            "[jobs.web]\nrepository = \"/r\"\npassword-file = \"p\"\npaths = [\"etc\"]\n",
        );
        assert!(relative.contains("relative"), "{relative}");
        assert!(parse_err("[defaults]\nrepository = \"/r\"\n").contains("no jobs"));
    }

    #[test]
    fn overrides_beat_the_file_and_paths_are_anchored() {
        let text = "[defaults]\nrepository = \"repo\"\npassword-file = \"pw\"\n[jobs.a]\npaths = [\"/x\"]\n";
        let c = parse(
            text,
            Path::new("/etc/tresor/tresor.toml"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.jobs[0].repository, OsString::from("/etc/tresor/repo"));
        assert_eq!(
            c.jobs[0].password,
            PasswordSource::File("/etc/tresor/pw".into())
        );
        let o = Overrides {
            repository: Some("/elsewhere".into()),
            password_env: true,
            ..Default::default()
        };
        let c = parse(text, Path::new("/etc/tresor/tresor.toml"), &o).unwrap();
        assert_eq!(c.jobs[0].repository, OsString::from("/elsewhere"));
        assert_eq!(c.jobs[0].password, PasswordSource::Env);
        assert_eq!(
            anchor_location("s3:https://h/b", Path::new("/e")),
            "s3:https://h/b"
        );
        assert_eq!(anchor_location("local:r", Path::new("/e")), "local:r");
        assert_eq!(anchor_location("./a:b", Path::new("/e")), "/e/./a:b");
    }

    #[test]
    fn secrets_are_masked() {
        assert_eq!(
            mask_urls("https://hc.example/ping/1234-uuid"),
            "https://hc.example/…"
        );
        assert_eq!(
            mask_urls("curl -d @- 'https://user:tok@hooks.slack.com/services/T/B/X' && echo ok"),
            "curl -d @- 'https://hooks.slack.com/…' && echo ok"
        );
        let c = parse_ok(EXAMPLE);
        let shown = toml::to_string(&c.jobs[1].effective()).unwrap();
        assert!(!shown.contains("/root/pw"), "{shown}");
        let shown = toml::to_string(&c.jobs[0].effective()).unwrap();
        assert!(!shown.contains("UUID"), "{shown}");
        assert!(shown.contains("job:web"), "{shown}");
    }
}
