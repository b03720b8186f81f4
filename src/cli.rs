//! The command line: a thin layer from clap arguments to library calls and back to text, JSON
//! and exit codes. Progress bars only on a terminal; in cron, errors and a one-line summary.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

use tresor::archiver::{self, CreateOptions, Progress};
use tresor::backend::Backend;
use tresor::backend::local::LocalBackend;
use tresor::checker::{self, CheckOptions, CheckProgress, Subset};
use tresor::chunker::ChunkerParams;
use tresor::error::Error;
use tresor::id::ObjectId;
use tresor::keys::KdfParams;
use tresor::lock::{LockGuard, LockTiming};
use tresor::repair;
use tresor::repo::{self, InitOptions, Repo};
use tresor::restorer;
use tresor::snapshot::{Snapshot, SourceRecord};
use tresor::source::SourceSpec;

/// Exit codes (also in README.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A fatal error.
    pub const FATAL: u8 = 1;
    /// Bad usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The snapshot was written but some sources could not be read.
    pub const INCOMPLETE: u8 = 3;
    /// No repository at the given location.
    pub const NO_REPO: u8 = 10;
    /// Another process holds a conflicting lock.
    pub const LOCKED: u8 = 11;
    /// Wrong password.
    pub const WRONG_PASSWORD: u8 = 12;
    /// A repository object is corrupt or missing.
    pub const DAMAGED: u8 = 13;
}

#[derive(Parser)]
#[command(
    name = "tresor",
    version,
    about = "Deduplicating, encrypted backups of file trees and database dumps"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Repository location (a local directory).
    #[arg(long, short = 'r', env = "TRESOR_REPO", global = true)]
    repo: Option<PathBuf>,
    /// Read the password from the first line of this file.
    #[arg(long, env = "TRESOR_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this command (sh -c) and use the first line of its output as the password.
    #[arg(long, env = "TRESOR_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Cache directory for the local catalog [default: $XDG_CACHE_HOME/tresor].
    #[arg(long, env = "TRESOR_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Print only errors (no summary line, no progress).
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    /// Wait this long for a conflicting lock (`10m`, `1h`) instead of failing at once.
    #[arg(
        long,
        env = "TRESOR_RETRY_LOCK",
        global = true,
        value_name = "DURATION"
    )]
    retry_lock: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Repository management.
    #[command(subcommand)]
    Repo(RepoCmd),
    /// Create, list, show and restore snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Verify the repository's structure (and with --read-data, every byte).
    Check(CheckArgs),
    /// Repair the index or drop snapshots whose data is gone.
    #[command(subcommand)]
    Repair(RepairCmd),
    /// Delete data no snapshot needs; repack packs that are mostly unused.
    Prune(PruneArgs),
    /// Repository figures: snapshots, chunks, stored and raw bytes, dedup and compression.
    Stats(JsonArg),
    /// Show every snapshot read-only under MOUNTPOINT (FUSE) until Ctrl-C or `fusermount3 -u`.
    Mount(MountArgs),
}

#[derive(Args)]
struct MountArgs {
    /// An empty directory to mount on.
    mountpoint: PathBuf,
    /// MiB of decoded chunks kept for reads.
    #[arg(long, default_value_t = 256)]
    cache_mib: usize,
}

#[derive(Args)]
struct PruneArgs {
    /// Repack a pack when more than this share of it is unused (`10%`, `0%` repacks every
    /// pack with any unused byte).
    #[arg(long, default_value = "10%", value_name = "PERCENT")]
    max_unused: String,
    /// Show what would be deleted and freed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ForgetArgs {
    /// Snapshots to forget by id (instead of a policy).
    ids: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// … days.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// … ISO weeks.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// … months.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// … years.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot within this duration of the group's newest (`30d`, `1y6M`).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    keep_tag: Vec<String>,
    /// Apply the policy per group of these fields (`host,sources,tags`; empty: one group).
    #[arg(long, default_value = "host,sources", value_name = "FIELDS")]
    group_by: String,
    /// Show each snapshot with keep/remove, the rule that decided, and what a prune would free.
    #[arg(long)]
    dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    /// For --prune: see `prune --max-unused`.
    #[arg(long, default_value = "10%", value_name = "PERCENT")]
    max_unused: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UnlockArgs {
    /// Remove every lock, also those of processes that may still run (dangerous).
    #[arg(long)]
    remove_all: bool,
}

#[derive(Subcommand)]
enum RepairCmd {
    /// Rebuild every index object (and the local catalog) from the pack headers alone.
    Index(JsonArg),
    /// Find snapshots that need data that is gone; with --forget remove them.
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Args)]
struct RepairSnapshotsArgs {
    /// Remove the damaged snapshots (their intact data stays until a prune).
    #[arg(long)]
    forget: bool,
    /// Show what --forget would remove, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Judge by reading every pack, not only by the structure.
    #[arg(long)]
    read_data: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum RepoCmd {
    /// Create a new repository.
    Init(InitArgs),
    /// Remove stale locks (of crashed runs); --remove-all removes every lock.
    Unlock(UnlockArgs),
}

#[derive(Args)]
struct InitArgs {
    /// zstd level for new data (0 turns compression off).
    #[arg(long, default_value_t = tresor::config::DEFAULT_ZSTD_LEVEL)]
    compression_level: i32,
    /// Pack target size in MiB.
    #[arg(long, default_value_t = tresor::config::DEFAULT_PACK_SIZE / (1024 * 1024))]
    pack_size_mib: u32,
    /// Smallest chunk in bytes.
    #[arg(long, default_value_t = tresor::config::DEFAULT_CHUNKER.min_size)]
    chunk_min: u32,
    /// Average chunk in bytes.
    #[arg(long, default_value_t = tresor::config::DEFAULT_CHUNKER.avg_size)]
    chunk_avg: u32,
    /// Largest chunk in bytes.
    #[arg(long, default_value_t = tresor::config::DEFAULT_CHUNKER.max_size)]
    chunk_max: u32,
    /// argon2id memory in KiB (lower only for tests).
    #[arg(long, default_value_t = KdfParams::default().memory_kib, hide = true)]
    kdf_memory_kib: u32,
    /// argon2id passes.
    #[arg(long, default_value_t = KdfParams::default().iterations, hide = true)]
    kdf_iterations: u32,
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Back up paths, standard input or a command's output into a new snapshot.
    Create(CreateArgs),
    /// List snapshots, oldest first.
    List(JsonArg),
    /// Show one snapshot.
    Show(ShowArgs),
    /// Restore a snapshot (or one path of it) into a directory or to standard output.
    ///
    /// Into a directory: hard links, fifos, sockets, device nodes (as root), xattrs, owners (as
    /// root), modes and mtimes are restored; sparse files stay sparse; symlinks in the target
    /// are replaced, never followed; nothing is deleted. Problems that leave an entry restored
    /// but imperfect (an xattr refused, a device node without root, a socket path too long to
    /// bind) are warnings on stderr and exit 0. An entry that cannot be restored at all is
    /// listed as "not restored", the rest goes on, and the exit code is 3. Damage in the
    /// repository stops the restore with 13; so does a --verify mismatch.
    Restore(RestoreArgs),
    /// Remove snapshots by a retention policy or by id (data goes with `prune`).
    Forget(ForgetArgs),
    /// List the entries of a snapshot (or of one path in it) with size, mode and mtime.
    Ls(LsArgs),
    /// What was added, removed and modified between two snapshots.
    Diff(DiffArgs),
}

#[derive(Args)]
struct LsArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    snapshot: String,
    /// Path inside the snapshot, as stored (default: its top).
    path: Option<String>,
    /// Everything below, not just one level.
    #[arg(long, short = 'R')]
    recursive: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DiffArgs {
    /// The older snapshot.
    a: String,
    /// The newer snapshot.
    b: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CreateArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Read standard input as one file.
    #[arg(long)]
    stdin: bool,
    /// Run this command with `sh -c` and store its output as a file; if it fails, no snapshot.
    /// Repeatable as NAME=CMD (`--command shop.sql='pg_dump shop'`): each output is its own
    /// file. A prefix like `PGHOST=…` (upper-case, a shell variable) is part of the command.
    #[arg(long, value_name = "[NAME=]CMD")]
    command: Vec<String>,
    /// File name in the snapshot for --stdin or --command.
    #[arg(long, default_value = "stdin")]
    stdin_name: String,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// Host name to record [default: this machine's].
    #[arg(long)]
    host: Option<String>,
    /// Parent snapshot for change detection (`latest`, an id or a unique prefix) [default: the
    /// latest snapshot of this host with the same set of source paths]. A regular file whose
    /// size, mtime, ctime, inode and device equal the parent's file at the same path, and whose
    /// chunks are all still in the repository, is not read again.
    #[arg(long, value_name = "SNAPSHOT")]
    parent: Option<String>,
    /// Read every file; use no parent.
    #[arg(long, conflicts_with = "parent")]
    force: bool,
    /// Leave out entries matching GLOB (repeatable). A pattern without `/` matches an entry's
    /// base name at any depth (`*.tmp`); a pattern with `/` matches the entry's absolute path
    /// (`/home/*/.cache`, `**/target/debug`; so `a/b` alone matches nothing). `*`, `?` and
    /// `[..]` never match `/`; `**` matches any number of whole path components; `\` escapes.
    /// An excluded directory is not descended into; an excluded source path stores nothing.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Read exclude patterns from FILE (repeatable): one per line, blank lines and `#` comments
    /// ignored, surrounding whitespace trimmed.
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Leave out entirely every directory that holds an entry named NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Store a directory holding a valid CACHEDIR.TAG (starting with `Signature:
    /// 8a477f597d28d172789f06886806bc55`) with only that tag file.
    #[arg(long)]
    exclude_caches: bool,
    /// Do not descend into directories on another file system than their source path; such a
    /// mount point is stored as an empty directory.
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ShowArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    snapshot: String,
    /// Also show the bytes it needs beyond this base snapshot (the differential size).
    #[arg(long, value_name = "SNAPSHOT")]
    since: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RestoreArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(long, conflicts_with = "stdout")]
    target: Option<PathBuf>,
    /// Write one file to standard output.
    #[arg(long)]
    stdout: bool,
    /// Restore only this path, as the snapshot stores it (see `snapshot show`).
    #[arg(long)]
    path: Option<String>,
    /// Restore only entries matching GLOB (repeatable). Globs match the stored path, e.g.
    /// `etc/nginx/*.conf` (no leading `/`); a pattern without `/` matches the base name at any
    /// depth. `*` and `?` stay within one component, `**` crosses components. An included
    /// directory brings its whole subtree; an included entry brings its parent directories
    /// (created, with their metadata); other directories are not created.
    #[arg(long, value_name = "GLOB", conflicts_with = "stdout")]
    include: Vec<String>,
    /// Skip entries matching GLOB (repeatable; same syntax as --include). An excluded directory
    /// skips its whole subtree. Excludes win over includes.
    #[arg(long, value_name = "GLOB", conflicts_with = "stdout")]
    exclude: Vec<String>,
    /// Files that already exist in the target. `always`: the result equals the snapshot; an
    /// existing file whose size and content (hashed locally, chunk by chunk) already match is
    /// kept and gets only its metadata. `if-changed`: keep an existing file whose size and mtime
    /// match, without reading it. `never`: leave every existing entry untouched.
    #[arg(long, value_enum, default_value_t = OverwriteArg::Always, conflicts_with = "stdout")]
    overwrite: OverwriteArg,
    /// After restoring, re-read every selected regular file and compare it with the snapshot
    /// (size and each chunk's keyed hash); a mismatch names the file and exits 13.
    #[arg(long, conflicts_with = "stdout")]
    verify: bool,
    /// Print the summary as JSON.
    #[arg(long, conflicts_with = "stdout")]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

#[derive(Args)]
struct CheckArgs {
    /// Also read, authenticate and decompress every blob of every pack.
    #[arg(long)]
    read_data: bool,
    /// Read only part of the packs: `10%` (the least recently verified tenth) or `1/7` (a
    /// fixed seventh; 1/7 … 7/7 cover all). Implies --read-data.
    #[arg(long, value_name = "P%|N/M")]
    read_data_subset: Option<String>,
    /// Read only packs not verified within this age (`30d`, `12h`, `2w`), least recently
    /// verified first. Implies --read-data.
    #[arg(long, value_name = "AGE")]
    max_age: Option<String>,
    /// Stop reading after this many bytes (`5GiB`, `500MB`). Implies --read-data.
    #[arg(long, value_name = "SIZE")]
    budget: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Entry point: runs the CLI and maps errors to exit codes.
pub fn main() -> ExitCode {
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
            eprintln!("tresor: error: {e:#}");
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

fn code_for(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(err) = c.downcast_ref::<Error>() {
            return match err {
                Error::RepoNotFound(_) => exit::NO_REPO,
                Error::WrongPassword => exit::WRONG_PASSWORD,
                Error::Locked(_) => exit::LOCKED,
                Error::Corrupt { .. } | Error::Missing { .. } | Error::Mismatch { .. } => {
                    exit::DAMAGED
                }
                _ => exit::FATAL,
            };
        }
    }
    exit::FATAL
}

fn run(cli: Cli) -> Result<u8> {
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
        Command::Snapshot(SnapshotCmd::Forget(a)) => forget(g, a),
        Command::Snapshot(SnapshotCmd::Ls(a)) => ls(g, a),
        Command::Snapshot(SnapshotCmd::Diff(a)) => diff(g, a),
        Command::Prune(a) => prune(g, a),
        Command::Stats(a) => stats(g, a),
        Command::Mount(a) => mount(g, a),
    }
}

fn repo_path(g: &Global) -> Result<PathBuf> {
    g.repo
        .clone()
        .ok_or_else(|| anyhow!("no repository given: use --repo or set TRESOR_REPO"))
}

fn first_line(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Zeroizing::new(line.to_vec())
}

/// The password, from (in order) --password-command, --password-file, TRESOR_PASSWORD, a prompt.
fn password(g: &Global, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(cmd) = &g.password_command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running password command `{cmd}`"))?;
        if !out.status.success() {
            bail!(
                "password command `{cmd}` {}",
                tresor::source::describe_status(&out.status)
            );
        }
        let p = first_line(&out.stdout);
        drop(Zeroizing::new(out.stdout));
        return non_empty(p);
    }
    if let Some(f) = &g.password_file {
        let bytes = Zeroizing::new(
            std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?,
        );
        return non_empty(first_line(&bytes));
    }
    if let Some(p) = std::env::var_os("TRESOR_PASSWORD") {
        use std::os::unix::ffi::OsStrExt;
        return non_empty(Zeroizing::new(p.as_bytes().to_vec()));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password given: set TRESOR_PASSWORD_FILE, TRESOR_PASSWORD_COMMAND or TRESOR_PASSWORD (no prompt: standard input is not a terminal)"
        );
    }
    let p = Zeroizing::new(
        rpassword::prompt_password("repository password: ").context("reading the password")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("repeat password: ").context("reading the password")?,
        );
        if *again != *p {
            bail!("the passwords do not match");
        }
    }
    non_empty(Zeroizing::new(p.as_bytes().to_vec()))
}

fn non_empty(p: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>> {
    if p.is_empty() {
        bail!("the password is empty");
    }
    Ok(p)
}

fn open(g: &Global) -> Result<Repo> {
    let path = repo_path(g)?;
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&path));
    let pw = password(g, false)?;
    let cache = g.cache_dir.clone().unwrap_or_else(repo::default_cache_dir);
    let repo = Repo::open(backend, &pw, &cache)?;
    for w in repo.warnings() {
        eprintln!("tresor: warning: {w} (run `tresor check`)");
    }
    Ok(repo)
}

/// Takes the repository lock for `operation`, printing any stale locks it removed.
fn lock(g: &Global, repo: &Repo, operation: &str, exclusive: bool) -> Result<LockGuard> {
    let retry = match &g.retry_lock {
        Some(r) => std::time::Duration::from_secs(parse_age(r)?),
        None => std::time::Duration::ZERO,
    };
    let guard = tresor::lock::acquire(
        Arc::clone(repo.backend()),
        Arc::clone(repo.key()),
        operation,
        exclusive,
        retry,
        LockTiming::default(),
    )?;
    for m in &guard.removed_stale {
        eprintln!("tresor: {m}");
    }
    Ok(guard)
}

fn init(g: &Global, a: InitArgs) -> Result<u8> {
    let path = repo_path(g)?;
    let backend = LocalBackend::new(&path);
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
    let config = Repo::init(&backend, &pw, &opts)?;
    if !g.quiet {
        println!(
            "created tresor repository {} at {}",
            &config.id[..8],
            path.display()
        );
        println!("keep the password safe: without it the data cannot be read by anyone");
    }
    Ok(exit::OK)
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

fn create(g: &Global, a: CreateArgs) -> Result<u8> {
    let mut sources: Vec<SourceSpec> = a.paths.iter().cloned().map(SourceSpec::Path).collect();
    if a.stdin && !a.command.is_empty() {
        bail!("--stdin and --command both want to be the stream; give one");
    }
    if a.stdin && std::io::stdin().is_terminal() {
        bail!(
            "--stdin reads the data to back up from standard input, which is a terminal here; pipe the data in (e.g. `pg_dump shop | tresor snapshot create --stdin`)"
        );
    }
    if a.stdin {
        sources.push(SourceSpec::Stdin {
            name: a.stdin_name.clone(),
        });
    }
    let single = a.command.len() == 1;
    for c in &a.command {
        let (name, command) = match split_named_command(c) {
            Some((n, cmd)) => (n.to_string(), cmd.to_string()),
            None if single => (a.stdin_name.clone(), c.clone()),
            None => bail!(
                "with several --command options, name each output: --command NAME=CMD (e.g. shop.sql='pg_dump shop'); {c:?} has no name"
            ),
        };
        sources.push(SourceSpec::Command { name, command });
    }
    if sources.is_empty() {
        bail!("nothing to back up: give paths, --stdin or --command");
    }
    let mut repo = open(g)?;
    let _lock = lock(g, &repo, "snapshot create", false)?;
    let progress = Bar(bar(g, "read"));
    let mut patterns = a.exclude.clone();
    for f in &a.exclude_file {
        patterns.extend(tresor::exclude::read_patterns(f)?);
    }
    let opts = CreateOptions {
        sources,
        tags: a.tag,
        host: a.host,
        parent: a.parent,
        force: a.force,
        excludes: tresor::snapshot::ExcludeRecord {
            patterns,
            if_present: a.exclude_if_present,
            caches: a.exclude_caches,
            one_file_system: a.one_file_system,
        },
    };
    let result = archiver::create(&mut repo, &opts, &progress);
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    let r = result?;
    let s = &r.snapshot.summary;
    if a.json {
        let v = serde_json::json!({
            "id": r.id.to_hex(),
            "short_id": r.id.short(),
            "time": r.snapshot.time,
            "files": s.files,
            "dirs": s.dirs,
            "symlinks": s.symlinks,
            "bytes_read": s.bytes_read,
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "parent": r.snapshot.parent,
            "bytes_added": s.bytes_added,
            "data_added": s.data_added,
            "blobs_added": s.blobs_added,
            "blobs_reused": s.blobs_reused,
            "duration_seconds": s.duration_seconds,
            "command_exit_status": s.command_exit_status,
            "incomplete": s.incomplete,
            "errors": s.errors,
            "adopted_packs": r.adopted_packs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        if r.adopted_packs > 0 {
            println!(
                "adopted {} packs left by an interrupted backup; their data was reused",
                r.adopted_packs
            );
        }
        println!(
            "snapshot {} saved: {} files ({} new, {} changed, {} unchanged), {} read, {} added, {:.1} s{}",
            r.id.short(),
            s.files,
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            human(s.bytes_read),
            human(s.bytes_added),
            s.duration_seconds,
            if s.incomplete {
                format!(
                    " — INCOMPLETE: {} entries could not be read",
                    s.errors.len()
                )
            } else {
                String::new()
            }
        );
    }
    Ok(if s.incomplete {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// `shop.sql=pg_dump shop` → ("shop.sql", "pg_dump shop"). A prefix that looks like a shell
/// variable assignment (`PGHOST=db pg_dump`, upper-case letters, digits and `_`) is not a name.
fn split_named_command(c: &str) -> Option<(&str, &str)> {
    let (name, cmd) = c.split_once('=')?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'));
    let shell_var = name
        .chars()
        .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_');
    (valid && !shell_var && !cmd.trim().is_empty()).then_some((name, cmd))
}

/// Paths as the snapshot stores them, one per source.
fn stored_paths(s: &Snapshot) -> Vec<String> {
    s.sources
        .iter()
        .map(|src| match src {
            SourceRecord::Path { path } => path.trim_start_matches('/').to_string(),
            SourceRecord::Stdin { name } | SourceRecord::Command { name, .. } => name.clone(),
        })
        .collect()
}

fn source_text(src: &SourceRecord) -> String {
    match src {
        SourceRecord::Path { path } => path.clone(),
        SourceRecord::Stdin { name } => format!("stdin:{name}"),
        SourceRecord::Command { command, name } => {
            // One line in tables, however the command was written.
            let flat: String = command.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = flat.chars().take(60).collect();
            let more = if short.len() < flat.len() { "…" } else { "" };
            format!("command:{name}={short}{more}")
        }
    }
}

fn snapshot_json(id: &ObjectId, s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.time,
        "host": s.host,
        "username": s.username,
        "tags": s.tags,
        "sources": s.sources,
        "paths": stored_paths(s),
        "root": s.root.to_hex(),
        "parent": s.parent,
        "excludes": s.excludes,
        "summary": s.summary,
    })
}

fn list(g: &Global, a: JsonArg) -> Result<u8> {
    let repo = open(g)?;
    let (snaps, damaged) = repo.snapshots()?;
    for d in &damaged {
        eprintln!("tresor: error: {d} (run `tresor check`)");
    }
    // The list is shown, but a damaged snapshot object is never a silent omission.
    let code = if damaged.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let v: Vec<_> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(code);
    }
    writeln!(
        out,
        "{:<8}  {:<20}  {:<16}  {:<16}  {:>10}  sources",
        "id", "time (UTC)", "host", "tags", "size"
    )?;
    for (id, s) in &snaps {
        let sources: Vec<String> = s.sources.iter().map(source_text).collect();
        writeln!(
            out,
            "{:<8}  {:<20}  {:<16}  {:<16}  {:>10}  {}",
            id.short(),
            s.timestamp().format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.tags.join(","),
            human(s.summary.bytes_read),
            sources.join(" ")
        )?;
    }
    if !g.quiet {
        writeln!(out, "{} snapshots", snaps.len())?;
    }
    Ok(code)
}

fn show(g: &Global, a: ShowArgs) -> Result<u8> {
    let repo = open(g)?;
    let (id, s) = repo.find_snapshot(&a.snapshot)?;
    let (all, _) = repo.snapshots()?;
    let others: Vec<_> = all
        .iter()
        .filter(|(i, _)| *i != id)
        .map(|(_, o)| o.root)
        .collect();
    let base = match &a.since {
        Some(r) => Some(repo.find_snapshot(r)?),
        None => None,
    };
    let cost = tresor::usage::snapshot_cost(&repo, &s, &others, base.as_ref().map(|b| &b.1.root))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = snapshot_json(&id, &s);
        v["cost"] = serde_json::to_value(&cost)?;
        if let Some((bid, _)) = &base {
            v["cost"]["base"] = serde_json::Value::from(bid.to_hex());
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(exit::OK);
    }
    let sm = &s.summary;
    writeln!(out, "snapshot  {}", id.to_hex())?;
    writeln!(out, "time      {}", s.time)?;
    writeln!(out, "host      {}", s.host)?;
    writeln!(out, "user      {}", s.username)?;
    writeln!(out, "tags      {}", s.tags.join(", "))?;
    writeln!(out, "sources")?;
    for (src, p) in s.sources.iter().zip(stored_paths(&s)) {
        writeln!(out, "  {:<40} stored as {p}", source_text(src))?;
    }
    writeln!(
        out,
        "files     {} ({} dirs, {} symlinks, {} special files)",
        sm.files, sm.dirs, sm.symlinks, sm.specials
    )?;
    writeln!(
        out,
        "changes   {} new, {} changed, {} unchanged (parent {})",
        sm.files_new,
        sm.files_changed,
        sm.files_unchanged,
        s.parent.as_deref().unwrap_or("none")
    )?;
    if let Some(x) = &s.excludes {
        writeln!(
            out,
            "excludes  {}",
            serde_json::to_string(x).unwrap_or_default()
        )?;
    }
    writeln!(out, "read      {}", human(sm.bytes_read))?;
    writeln!(
        out,
        "added     {} ({} new blobs, {} reused)",
        human(sm.bytes_added),
        sm.blobs_added,
        sm.blobs_reused
    )?;
    writeln!(
        out,
        "needs     {} in {} blobs; only it: {} (what forgetting it frees)",
        human(cost.referenced.stored),
        cost.referenced.blobs,
        human(cost.unique.stored)
    )?;
    if let (Some(b), Some((bid, _))) = (&cost.beyond_base, &base) {
        writeln!(
            out,
            "since     {}: needs {} beyond it ({} blobs)",
            bid.short(),
            human(b.stored),
            b.blobs
        )?;
    }
    writeln!(out, "duration  {:.1} s", sm.duration_seconds)?;
    writeln!(
        out,
        "complete  {}",
        if sm.incomplete {
            "NO — some sources could not be read:"
        } else {
            "yes"
        }
    )?;
    for e in &sm.errors {
        writeln!(out, "  {e}")?;
    }
    Ok(exit::OK)
}

fn restore(g: &Global, a: RestoreArgs) -> Result<u8> {
    let repo = open(g)?;
    let _lock = lock(g, &repo, "snapshot restore", false)?;
    let (id, s) = repo.find_snapshot(&a.snapshot)?;
    if a.stdout {
        let mut out = std::io::stdout();
        restorer::restore_to_writer(&repo, &s, a.path.as_deref(), &mut out)?;
        return Ok(exit::OK);
    }
    let target = a
        .target
        .ok_or_else(|| anyhow!("give --target DIR or --stdout"))?;
    let opts = restorer::RestoreOptions {
        include: a.include,
        exclude: a.exclude,
        overwrite: match a.overwrite {
            OverwriteArg::Always => restorer::Overwrite::Always,
            OverwriteArg::IfChanged => restorer::Overwrite::IfChanged,
            OverwriteArg::Never => restorer::Overwrite::Never,
        },
    };
    let started = std::time::Instant::now();
    let sum = restorer::restore_to_dir(&repo, &s, a.path.as_deref(), &target, &opts)?;
    let seconds = started.elapsed().as_secs_f64();
    for w in &sum.warnings {
        eprintln!("tresor: warning: {w}");
    }
    for f in &sum.failures {
        eprintln!("tresor: not restored: {f}");
    }
    let verified = if a.verify {
        let report = restorer::verify_restore(&repo, &s, a.path.as_deref(), &target, &opts)?;
        for m in &report.mismatches {
            eprintln!("tresor: mismatch: {}: {}", m.path.display(), m.reason);
        }
        Some(report)
    } else {
        None
    };
    if a.json {
        let v = serde_json::json!({
            "snapshot": id.to_hex(),
            "target": target.to_string_lossy(),
            "summary": &sum,
            "verify": &verified,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        println!(
            "restored snapshot {} to {}: {} files written ({}), {} kept ({}), {} dirs, {} symlinks, \
             {} hard links, {} special files, {} warnings, {} not restored in {:.1} s",
            id.short(),
            target.display(),
            sum.files,
            human(sum.bytes),
            sum.files_skipped,
            human(sum.bytes_skipped),
            sum.dirs,
            sum.symlinks,
            sum.hardlinks,
            sum.specials,
            sum.warnings.len(),
            sum.failures.len(),
            seconds
        );
        if let Some(r) = &verified {
            println!(
                "verified {} files ({}): {} mismatches",
                r.files,
                human(r.bytes),
                r.mismatches.len()
            );
        }
    }
    if let Some(r) = &verified
        && let Some(first) = r.mismatches.first()
    {
        let reason = if r.mismatches.len() > 1 {
            format!(
                "{} (and {} more files)",
                first.reason,
                r.mismatches.len() - 1
            )
        } else {
            first.reason.clone()
        };
        return Err(anyhow::Error::new(Error::Mismatch {
            path: first.path.clone(),
            reason,
        }));
    }
    Ok(if sum.failures.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

/// A check's progress as an indicatif bar (a terminal only).
struct CheckBar {
    enabled: bool,
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl CheckBar {
    fn new(g: &Global) -> CheckBar {
        CheckBar {
            enabled: !g.quiet && std::io::stderr().is_terminal(),
            bar: std::sync::Mutex::new(None),
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(b) = b.take()
        {
            b.finish_and_clear();
        }
    }
}

impl CheckProgress for CheckBar {
    fn phase(&self, name: &str, total: u64) {
        if !self.enabled {
            return;
        }
        self.finish();
        let b = ProgressBar::new(total);
        let unit = if name == "read" {
            "{bytes}/{total_bytes} at {bytes_per_sec}"
        } else {
            "{pos}/{len}"
        };
        if let Ok(style) =
            ProgressStyle::with_template(&format!("{{bar:30}} {name} {unit}, {{elapsed}}"))
        {
            b.set_style(style);
        }
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(b);
        }
    }
    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(b) = b.as_ref()
        {
            b.inc(n);
        }
    }
}

/// `30d`, `12h`, `90m`, `2w`, `45s` → seconds.
fn parse_age(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("bad age {s:?}: give a number and a unit, like 30d or 12h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("bad age {s:?}: the unit must be s, m, h, d or w"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("age {s:?} is too large"))
}

/// `5GiB`, `500MB`, `1T`, `4096` → bytes (K/M/G/T are powers of 1024 with or without `i`;
/// `KB`/`MB`/`GB`/`TB` are powers of 1000).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| anyhow!("bad size {s:?}: give a number and a unit, like 5GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => bail!("bad size {s:?}: unknown unit {unit:?}"),
    };
    Ok((n * mult) as u64)
}

fn check(g: &Global, a: CheckArgs) -> Result<u8> {
    let opts = CheckOptions {
        read_data: a.read_data,
        subset: a
            .read_data_subset
            .as_deref()
            .map(str::parse::<Subset>)
            .transpose()?,
        max_age_secs: a.max_age.as_deref().map(parse_age).transpose()?,
        budget_bytes: a.budget.as_deref().map(parse_size).transpose()?,
    };
    let mut repo = open(g)?;
    let _lock = lock(g, &repo, "check", false)?;
    let progress = CheckBar::new(g);
    let report = checker::check(&mut repo, &opts, &progress);
    progress.finish();
    let report = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for n in &report.notes {
            println!("note: {n}");
        }
        for p in &report.problems {
            println!("damage: {p}");
        }
        print_affected(&report.affected_snapshots);
        if !report.unindexed_packs.is_empty() && !g.quiet {
            println!(
                "{} packs are not indexed (left by an interrupted backup; the next `snapshot create` or `repair index` adopts them)",
                report.unindexed_packs.len()
            );
        }
        if !g.quiet {
            println!(
                "checked {} snapshots, {} index objects, {} packs, {} blobs{}: {}",
                report.snapshots,
                report.index_objects,
                report.packs,
                report.blobs,
                if opts.reads_data() {
                    format!(
                        ", read {} packs ({}){}",
                        report.packs_read,
                        human(report.bytes_read),
                        if report.packs_not_read > 0 {
                            format!(", {} left for later runs", report.packs_not_read)
                        } else {
                            String::new()
                        }
                    )
                } else {
                    String::new()
                },
                if report.is_clean() {
                    "no damage found".to_string()
                } else {
                    format!(
                        "DAMAGE: {} problems, {} snapshots affected",
                        report.problems.len(),
                        report.affected_snapshots.len()
                    )
                }
            );
        }
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

/// Names each affected snapshot and (up to 20 of) its affected paths.
fn print_affected(affected: &[checker::AffectedSnapshot]) {
    for s in affected {
        let short = &s.id[..s.id.len().min(8)];
        if s.time.is_empty() {
            println!("affected: snapshot {short}: the snapshot object itself is unreadable");
            continue;
        }
        println!(
            "affected: snapshot {short} ({}): {} paths need damaged or missing data",
            s.time,
            s.paths.len()
        );
        for p in s.paths.iter().take(20) {
            println!("  {p}");
        }
        if s.paths.len() > 20 {
            println!("  … and {} more (--json lists all)", s.paths.len() - 20);
        }
    }
}

fn repair_index(g: &Global, a: JsonArg) -> Result<u8> {
    let mut repo = open(g)?;
    let _lock = lock(g, &repo, "repair index", true)?;
    let progress = CheckBar::new(g);
    let r = repair::repair_index(&mut repo, &progress);
    progress.finish();
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.unreadable_packs {
            println!("damage: {p} (left in place, not indexed)");
        }
        if !g.quiet {
            println!(
                "rebuilt the index from {} packs ({} blobs): {} index objects written, {} old ones removed",
                r.packs, r.blobs, r.index_objects_written, r.index_objects_removed
            );
        }
    }
    Ok(if r.unreadable_packs.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn repair_snapshots(g: &Global, a: RepairSnapshotsArgs) -> Result<u8> {
    let mut repo = open(g)?;
    let _lock = lock(g, &repo, "repair snapshots", a.forget && !a.dry_run)?;
    let progress = CheckBar::new(g);
    let opts = CheckOptions {
        read_data: a.read_data,
        ..Default::default()
    };
    let r = repair::repair_snapshots(&mut repo, &opts, a.forget, a.dry_run, &progress);
    progress.finish();
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            println!("damage: {p}");
        }
        print_affected(&r.damaged);
        if !g.quiet {
            let verb = match (a.forget, a.dry_run) {
                (true, true) => "would be forgotten (dry run)",
                (true, false) => "forgotten",
                _ => "found (use --forget to remove them)",
            };
            if r.damaged.is_empty() {
                println!("every snapshot has all its data");
            } else {
                println!("{} damaged snapshots {verb}", r.damaged.len());
            }
        }
    }
    // Damage that remains in the repository is still reported by the exit code.
    Ok(if r.damaged.is_empty() || !r.forgotten.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn unlock(g: &Global, a: UnlockArgs) -> Result<u8> {
    let repo = open(g)?;
    if a.remove_all {
        eprintln!(
            "tresor: warning: removing every lock, including those of operations that may still run; a running prune or backup may now be disturbed"
        );
    }
    let removed = tresor::lock::unlock(
        repo.backend().as_ref(),
        repo.key(),
        a.remove_all,
        &LockTiming::default(),
    )?;
    for m in &removed {
        println!("{m}");
    }
    if !g.quiet {
        let left = tresor::lock::list(repo.backend().as_ref(), repo.key())?;
        println!(
            "{} locks removed, {} held by running operations",
            removed.len(),
            left.len()
        );
        for (_, info) in left {
            if let Ok(i) = info {
                println!("  {}", i.describe());
            }
        }
    }
    Ok(exit::OK)
}

/// `10%`, `2.5%` or `10` (percent) → a share between 0 and 1.
fn parse_share(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow!("bad percentage {s:?}: give e.g. 10%"))?;
    if !(0.0..=100.0).contains(&v) {
        bail!("percentage {s:?} must be between 0% and 100%");
    }
    Ok(v / 100.0)
}

fn print_plan(p: &tresor::prune::PrunePlan, verb: &str) {
    println!(
        "{} packs ({}) hold {} blobs ({}) that {} kept snapshots need",
        p.packs,
        human(p.pack_bytes),
        p.used_blobs,
        human(p.used_bytes),
        p.snapshots_kept
    );
    println!(
        "{verb} {} unused packs ({}), repack {} packs ({}, copying {}), leave {} unused in packs under the threshold{}",
        p.delete_packs,
        human(p.delete_bytes),
        p.repack_packs,
        human(p.repack_bytes),
        human(p.repack_copy_bytes),
        human(p.unused_bytes_kept),
        if p.missing_packs > 0 {
            format!(
                ", drop {} missing empty packs from the index",
                p.missing_packs
            )
        } else {
            String::new()
        }
    );
}

fn prune(g: &Global, a: PruneArgs) -> Result<u8> {
    let max_unused = parse_share(&a.max_unused)?;
    let mut repo = open(g)?;
    let _lock = lock(g, &repo, "prune", true)?;
    run_prune(g, &mut repo, max_unused, a.dry_run, a.json)
}

fn run_prune(
    g: &Global,
    repo: &mut Repo,
    max_unused: f64,
    dry_run: bool,
    json: bool,
) -> Result<u8> {
    if !dry_run {
        // Packs of interrupted backups are judged like the others.
        let adopted = repair::adopt_unindexed(repo)?;
        if adopted.packs > 0 && !g.quiet && !json {
            println!("adopted {} unindexed packs first", adopted.packs);
        }
    }
    let roots = tresor::prune::all_roots(repo)?;
    let plan = tresor::prune::plan(repo, &roots, max_unused)?;
    if dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan.summary)?);
        } else {
            print_plan(&plan.summary, "would delete");
            println!("would free {}", human(plan.summary.bytes_freed));
        }
        return Ok(exit::OK);
    }
    if !json && !g.quiet {
        print_plan(&plan.summary, "deleting");
    }
    let report = tresor::prune::execute(repo, plan)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !g.quiet {
        println!(
            "freed {} ({} packs deleted, {} written, {} index objects rewritten)",
            human(report.bytes_freed),
            report.packs_deleted,
            report.packs_written,
            report.index_objects_written
        );
    }
    Ok(exit::OK)
}

fn forget(g: &Global, a: ForgetArgs) -> Result<u8> {
    let policy = tresor::policy::Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within_secs: a
            .keep_within
            .as_deref()
            .map(tresor::policy::parse_duration)
            .transpose()
            .map_err(|e| anyhow!("--keep-within: {e}"))?,
        keep_tags: a.keep_tag.clone(),
    };
    let by: tresor::forget::GroupBy = a.group_by.parse()?;
    let max_unused = parse_share(&a.max_unused)?;
    let mut repo = open(g)?;
    let _lock = lock(g, &repo, "snapshot forget", !a.dry_run)?;
    let verdicts = tresor::forget::decide(&repo, &policy, by, &a.ids)?;
    let removed = verdicts.iter().filter(|v| !v.keep).count();
    // What a prune right after would free: plan it with only the kept snapshots.
    let keep_roots: Vec<_> = verdicts.iter().filter(|v| v.keep).map(|v| v.root).collect();
    let predicted = if a.dry_run {
        let (_, damaged) = repo.snapshots()?;
        if damaged.is_empty() {
            Some(tresor::prune::plan(&repo, &keep_roots, max_unused)?.summary)
        } else {
            None
        }
    } else {
        None
    };
    if a.json {
        let v = serde_json::json!({
            "dry_run": a.dry_run,
            "snapshots": verdicts,
            "remove": removed,
            "keep": verdicts.len() - removed,
            "prune_would_free": predicted.as_ref().map(|p| p.bytes_freed),
            "prune_plan": predicted,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut group = None;
        for v in &verdicts {
            if group.as_ref() != Some(&v.group) {
                println!(
                    "group {}",
                    if v.group.is_empty() {
                        "(all)"
                    } else {
                        &v.group
                    }
                );
                group = Some(v.group.clone());
            }
            println!(
                "  {}  {:<20}  {:<6}  {}",
                &v.id[..8],
                v.time.get(..19).unwrap_or(&v.time).replace('T', " "),
                if v.keep { "keep" } else { "remove" },
                v.reasons.join(", ")
            );
        }
        println!(
            "{} snapshots: keep {}, {} {}",
            verdicts.len(),
            verdicts.len() - removed,
            if a.dry_run { "would remove" } else { "remove" },
            removed
        );
        if let Some(p) = &predicted {
            println!("a prune after this would free {}", human(p.bytes_freed));
        }
    }
    if a.dry_run {
        return Ok(exit::OK);
    }
    tresor::forget::remove(&repo, &verdicts)?;
    if a.prune {
        return run_prune(g, &mut repo, max_unused, false, a.json);
    }
    Ok(exit::OK)
}

fn mount(g: &Global, a: MountArgs) -> Result<u8> {
    tresor::mount::preflight(&a.mountpoint)?;
    let repo = open(g)?;
    let lock = lock(g, &repo, "mount", false)?;
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .context("installing the Ctrl-C handler")?;
    let vfs = tresor::vfs::Vfs::new(repo, a.cache_mib << 20)?;
    if !g.quiet {
        eprintln!(
            "tresor: mounted at {}; Ctrl-C or `fusermount3 -u {}` to unmount",
            a.mountpoint.display(),
            a.mountpoint.display()
        );
    }
    tresor::mount::serve(vfs, &a.mountpoint, rx)?;
    drop(lock);
    if !g.quiet {
        eprintln!("tresor: unmounted {}", a.mountpoint.display());
    }
    Ok(exit::OK)
}

/// The type letter `ls -l` uses (`f` for a regular file, as in `find -type`).
fn kind_letter(kind: &str) -> char {
    match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "fifo" => 'p',
        "chardev" => 'c',
        "blockdev" => 'b',
        "socket" => 's',
        _ => 'f',
    }
}

fn ls(g: &Global, a: LsArgs) -> Result<u8> {
    let repo = open(g)?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let entries = tresor::listing::ls(&repo, &snap, a.path.as_deref(), a.recursive)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(exit::OK);
    }
    for e in &entries {
        writeln!(
            out,
            "{} {:>6} {:>12}  {}  {}{}",
            kind_letter(e.kind),
            e.mode,
            e.size,
            e.mtime.get(..19).unwrap_or(&e.mtime).replace('T', " "),
            e.path,
            e.target
                .as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default()
        )?;
    }
    Ok(exit::OK)
}

fn diff(g: &Global, a: DiffArgs) -> Result<u8> {
    let repo = open(g)?;
    let (_, sa) = repo.find_snapshot(&a.a)?;
    let (_, sb) = repo.find_snapshot(&a.b)?;
    let (changes, summary) = tresor::listing::diff(&repo, &sa, &sb)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({ "changes": changes, "summary": summary });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(exit::OK);
    }
    for c in &changes {
        let mark = match c.change {
            "added" => "+",
            "removed" => "-",
            _ => "M",
        };
        let size = match (c.size_before, c.size_after) {
            (Some(x), Some(y)) if x != y => format!("  ({} -> {})", human(x), human(y)),
            (None, Some(y)) | (Some(y), None) => format!("  ({})", human(y)),
            _ => String::new(),
        };
        writeln!(
            out,
            "{mark} {}{}{size}",
            c.path,
            if c.kind == "dir" { "/" } else { "" }
        )?;
    }
    writeln!(
        out,
        "{} added ({}), {} removed ({}), {} modified",
        summary.added,
        human(summary.bytes_added),
        summary.removed,
        human(summary.bytes_removed),
        summary.modified
    )?;
    Ok(exit::OK)
}

fn stats(g: &Global, a: JsonArg) -> Result<u8> {
    let repo = open(g)?;
    let st = tresor::usage::repo_stats(&repo)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(exit::OK);
    }
    println!("snapshots         {}", st.snapshots);
    println!("chunks            {} (+ {} trees)", st.chunks, st.trees);
    println!("snapshots hold    {}", human(st.logical_bytes));
    println!(
        "distinct data     {} (dedup {:.2}x)",
        human(st.raw_bytes),
        st.dedup_ratio
    );
    println!(
        "after compression {} (compression {:.2}x)",
        human(st.blob_bytes),
        st.compression_ratio
    );
    println!(
        "repository        {} (overall {:.2}x)",
        human(st.stored_bytes),
        st.total_ratio
    );
    Ok(exit::OK)
}

/// Bytes in binary units.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

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
