//! The command line: a thin layer from clap arguments to library calls and back to text, JSON
//! and exit codes. Progress bars only on a terminal; in cron, errors and a one-line summary.
//!
//! This module holds the clap argument tree, dispatch, exit-code mapping, the password sources
//! and opening/locking the repository; the commands live in `snapshots` (create, list, show,
//! restore, ls, diff, stats), `maintenance` (check, repair, unlock, prune, forget, mount) and
//! `keys` (key list, add, remove, passwd).

mod keys;
mod maintenance;
mod snapshots;

use keys::*;
use maintenance::*;
use snapshots::*;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

use tresor::backend::{self, BackendOptions, Location};
use tresor::backup::{self, CreateOptions, Progress};
use tresor::check::{self, CheckOptions, CheckProgress, Subset};
use tresor::error::Error;
use tresor::format::chunker::ChunkerParams;
use tresor::format::id::ObjectId;
use tresor::format::snapshot::{Snapshot, SourceRecord};
use tresor::repair;
use tresor::repo::keys::KdfParams;
use tresor::repo::lock::LockTiming;
use tresor::repo::{self, InitOptions, Repo};
use tresor::restore;
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
    /// Repository location: a local directory (a path, or `local:PATH` for a relative path
    /// that contains a colon).
    #[arg(
        long,
        short = 'r',
        env = "TRESOR_REPO",
        global = true,
        value_name = "LOCATION"
    )]
    repo: Option<std::ffi::OsString>,
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
    /// Take no lock (reading commands only: restore, check, mount, …): for a repository on
    /// read-only media. A read-only repository is detected and read without a lock anyway.
    #[arg(long, global = true)]
    no_lock: bool,
    /// Try this key file first (an id or unique prefix from `tresor key list`).
    #[arg(long, env = "TRESOR_KEY_HINT", global = true, value_name = "ID")]
    key_hint: Option<String>,
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
    /// Key files: list them, add a password, remove one, change the password in use.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Every key file: id, host, user, created, KDF parameters, and which one is in use.
    List(JsonArg),
    /// Add another password (a new key file for the same repository).
    Add(KeyAddArgs),
    /// Remove a key file (never the last one; the one in use only with --force).
    Remove(KeyRemoveArgs),
    /// Change the password in use: a new key file, then the old one removed.
    Passwd(KeyPasswdArgs),
}

#[derive(Args)]
struct NewPasswordArgs {
    /// Read the new password from the first line of this file [default: $TRESOR_NEW_PASSWORD,
    /// else a prompt, twice].
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    /// argon2id memory in KiB for the new key file [default: 65536].
    #[arg(long, hide = true)]
    kdf_memory_kib: Option<u32>,
    /// argon2id passes for the new key file [default: 3].
    #[arg(long, hide = true)]
    kdf_iterations: Option<u32>,
}

#[derive(Args)]
struct KeyAddArgs {
    #[command(flatten)]
    new: NewPasswordArgs,
    /// Host name recorded in the key file [default: this machine's].
    #[arg(long)]
    host: Option<String>,
    /// User name recorded in the key file [default: the current user].
    #[arg(long)]
    user: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct KeyRemoveArgs {
    /// The key file's id or a unique prefix (see `tresor key list`).
    id: String,
    /// Also remove the key file in use (another must still open the repository).
    #[arg(long)]
    force: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct KeyPasswdArgs {
    #[command(flatten)]
    new: NewPasswordArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
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
    /// Prune even though snapshots disappeared without `snapshot forget` (their data is freed;
    /// they are recorded as forgotten, so later checks stop reporting them).
    #[arg(long)]
    allow_missing_snapshots: bool,
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
    /// For --prune: see `prune --allow-missing-snapshots`.
    #[arg(long)]
    allow_missing_snapshots: bool,
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
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_ZSTD_LEVEL)]
    compression_level: i32,
    /// Pack target size in MiB.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_PACK_SIZE / (1024 * 1024))]
    pack_size_mib: u32,
    /// Smallest chunk in bytes.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_CHUNKER.min_size)]
    chunk_min: u32,
    /// Average chunk in bytes.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_CHUNKER.avg_size)]
    chunk_avg: u32,
    /// Largest chunk in bytes.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_CHUNKER.max_size)]
    chunk_max: u32,
    /// argon2id memory in KiB (lower only for tests).
    #[arg(long, default_value_t = KdfParams::default().memory_kib, hide = true)]
    kdf_memory_kib: u32,
    /// argon2id passes.
    #[arg(long, default_value_t = KdfParams::default().iterations, hide = true)]
    kdf_iterations: u32,
    /// Let the repository directory's group read it (directories 0750, files 0640) instead of
    /// the owner alone (0700, 0600).
    #[arg(long)]
    group_readable: bool,
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
    for c in e.chain() {
        if let Some(err) = c.downcast_ref::<Error>() {
            return match err {
                Error::RepoNotFound(_) => exit::NO_REPO,
                Error::WrongPassword { .. } => exit::WRONG_PASSWORD,
                Error::Locked(_) => exit::LOCKED,
                Error::Corrupt { .. } | Error::Missing { .. } | Error::Mismatch { .. } => {
                    exit::DAMAGED
                }
                Error::Interrupted { signal } => u8::try_from(128 + signal).unwrap_or(exit::FATAL),
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
        Command::Key(KeyCmd::List(a)) => key_list(g, a),
        Command::Key(KeyCmd::Add(a)) => key_add(g, a),
        Command::Key(KeyCmd::Remove(a)) => key_remove(g, a),
        Command::Key(KeyCmd::Passwd(a)) => key_passwd(g, a),
    }
}

fn repo_location(g: &Global) -> Result<Location> {
    let given = g
        .repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use --repo or set TRESOR_REPO"))?;
    Ok(Location::parse_os(given)?)
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
    password_from(
        g.password_file.as_deref(),
        "TRESOR_PASSWORD",
        ("password", "repository password"),
        confirm,
        "set TRESOR_PASSWORD_FILE, TRESOR_PASSWORD_COMMAND or TRESOR_PASSWORD",
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
        let bytes = Zeroizing::new(
            std::fs::read(f).with_context(|| format!("reading {what} file {}", f.display()))?,
        );
        return non_empty(first_line(&bytes));
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
    if p.is_empty() {
        bail!("the password is empty");
    }
    Ok(p)
}

fn open(g: &Global) -> Result<Repo> {
    let backend = backend::open(&repo_location(g)?)?;
    let pw = password(g, false)?;
    let cache = g.cache_dir.clone().unwrap_or_else(repo::default_cache_dir);
    let opts = repo::OpenOptions {
        key_hint: g.key_hint.clone(),
    };
    let repo = Repo::open_with(backend, &pw, &cache, &opts)?;
    for w in repo.warnings() {
        eprintln!("tresor: warning: {w} (run `tresor check`)");
    }
    Ok(repo)
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
    let config = Repo::init(backend.as_ref(), &pw, &opts)?;
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
