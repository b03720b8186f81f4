//! The command line: every command, subcommand and option as clap types (the help text is the
//! doc comments). What each command does is in the sibling modules.

use std::path::PathBuf;
use tresor::repo::keys::KdfParams;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "tresor",
    version,
    about = "Deduplicating, encrypted backups of file trees and database dumps"
)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) global: Global,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Args)]
pub(super) struct Global {
    /// Repository location: a local directory (a path, or `local:PATH` for a relative path
    /// that contains a colon).
    #[arg(
        long,
        short = 'r',
        env = "TRESOR_REPO",
        global = true,
        value_name = "LOCATION"
    )]
    pub(super) repo: Option<std::ffi::OsString>,
    /// Read the password from the first line of this file.
    #[arg(long, env = "TRESOR_PASSWORD_FILE", global = true)]
    pub(super) password_file: Option<PathBuf>,
    /// Run this command (sh -c) and use the first line of its output as the password.
    #[arg(long, env = "TRESOR_PASSWORD_COMMAND", global = true)]
    pub(super) password_command: Option<String>,
    /// Cache directory for the local catalog [default: $XDG_CACHE_HOME/tresor].
    #[arg(long, env = "TRESOR_CACHE_DIR", global = true)]
    pub(super) cache_dir: Option<PathBuf>,
    /// Print only errors (no summary line, no progress).
    #[arg(long, short = 'q', global = true)]
    pub(super) quiet: bool,
    /// Wait this long for a conflicting lock (`10m`, `1h`) instead of failing at once.
    #[arg(
        long,
        env = "TRESOR_RETRY_LOCK",
        global = true,
        value_name = "DURATION"
    )]
    pub(super) retry_lock: Option<String>,
    /// Take no lock (reading commands only: restore, check, mount, …): for a repository on
    /// read-only media. A read-only repository is detected and read without a lock anyway.
    #[arg(long, global = true)]
    pub(super) no_lock: bool,
    /// Try this key file first (an id or unique prefix from `tresor key list`).
    #[arg(long, env = "TRESOR_KEY_HINT", global = true, value_name = "ID")]
    pub(super) key_hint: Option<String>,
    /// Transfers to keep in flight at once (pack uploads, ranged reads of blobs); small
    /// requests (index objects, pack headers) run four times as many [default: 2 for a local
    /// directory, 4 for S3].
    #[arg(
        long,
        env = "TRESOR_CONNECTIONS",
        global = true,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub(super) connections: Option<u16>,
    /// The configuration file [default: /etc/tresor/tresor.toml, else
    /// $XDG_CONFIG_HOME/tresor/tresor.toml, when one exists]. `run`, `status`, `config check`
    /// and `schedule` read their jobs from it; every other command takes the repository,
    /// password source and cache directory of its [defaults] (or of --job) when no flag or
    /// environment variable gives them.
    #[arg(long, env = "TRESOR_CONFIG", global = true, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// With a configuration file: take the repository, password source and cache directory of
    /// this job instead of [defaults] (`tresor --job web snapshot list`).
    // Its own id: `schedule install JOB` and others have a `job` argument of their own.
    #[arg(long = "job", id = "config_job", global = true, value_name = "NAME")]
    pub(super) job: Option<String>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub(super) enum Command {
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
    /// Database sources: list them, restore one into a database.
    #[command(subcommand)]
    Db(DbCmd),
    /// Restore drill: restore each database source of a snapshot into a scratch database,
    /// compare per-table row counts with those recorded, drop it, report the time to restore;
    /// exit 6 when any drill fails.
    Drill(DrillArgs),
    /// Run jobs of the configuration file: hooks, snapshot, forget, prune, check,
    /// notifications. One summary line per job; the exit code is the worst step's.
    Run(RunArgs),
    /// Per job: the last successful snapshot's age, the last run, the last check, the
    /// repository's size; exit 4 when a job has not succeeded within its max-age.
    Status(StatusArgs),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run a job daily from a systemd timer or cron.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on standard output.
    Man,
}

#[derive(Args)]
pub(super) struct RunArgs {
    /// Jobs to run, in this order [default: every job, in file order].
    pub(super) jobs: Vec<String>,
    /// Print what each job would do; touch nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Print one JSON object per job (one per line) with each step's result and timings.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum StatusFormat {
    Text,
    Json,
    Prometheus,
}

#[derive(Args)]
pub(super) struct StatusArgs {
    /// Jobs [default: every job].
    pub(super) jobs: Vec<String>,
    /// Stale when the last success is older than this (`26h`, `2d`) [default: each job's
    /// `max-age`].
    #[arg(long, value_name = "DURATION")]
    pub(super) max_age: Option<String>,
    /// Print JSON (same as --format json).
    #[arg(long)]
    pub(super) json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub(super) format: StatusFormat,
}

#[derive(Subcommand)]
pub(super) enum ConfigCmd {
    /// Validate the file and print the effective settings of each job (secrets masked).
    Check,
}

#[derive(Subcommand)]
pub(super) enum ScheduleCmd {
    /// Write a systemd service + timer (or with --cron a cron.d file) that runs JOB daily.
    Install(ScheduleInstallArgs),
    /// Print the installed schedule files of JOB.
    Show(ScheduleJobArgs),
    /// Remove the installed schedule files of JOB.
    Remove(ScheduleJobArgs),
}

#[derive(Args)]
pub(super) struct ScheduleInstallArgs {
    /// The job.
    pub(super) job: String,
    /// Time of day, HH:MM (local time).
    #[arg(long, default_value = "02:30", value_name = "HH:MM")]
    pub(super) at: String,
    /// A line in /etc/cron.d instead of a systemd timer.
    #[arg(long)]
    pub(super) cron: bool,
    /// Start up to this much later, at random (`30m`), so many machines do not start at once.
    #[arg(long, value_name = "DURATION")]
    pub(super) randomized_delay: Option<String>,
    /// The user cron runs the job as.
    #[arg(long, default_value = "root")]
    pub(super) user: String,
    /// Write the files here instead of /etc/systemd/system or /etc/cron.d (and do not call
    /// systemctl).
    #[arg(long, value_name = "DIR")]
    pub(super) dir: Option<PathBuf>,
}

#[derive(Args)]
pub(super) struct ScheduleJobArgs {
    /// The job.
    pub(super) job: String,
    /// Look here instead of /etc/systemd/system and /etc/cron.d.
    #[arg(long, value_name = "DIR")]
    pub(super) dir: Option<PathBuf>,
}

#[derive(Args)]
pub(super) struct CompletionsArgs {
    /// The shell.
    pub(super) shell: clap_complete::Shell,
}

#[derive(Subcommand)]
pub(super) enum KeyCmd {
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
pub(super) struct NewPasswordArgs {
    /// Read the new password from the first line of this file [default: $TRESOR_NEW_PASSWORD,
    /// else a prompt, twice].
    #[arg(long, value_name = "FILE")]
    pub(super) new_password_file: Option<PathBuf>,
    /// argon2id memory in KiB for the new key file [default: 65536].
    #[arg(long, hide = true)]
    pub(super) kdf_memory_kib: Option<u32>,
    /// argon2id passes for the new key file [default: 3].
    #[arg(long, hide = true)]
    pub(super) kdf_iterations: Option<u32>,
}

#[derive(Args)]
pub(super) struct KeyAddArgs {
    #[command(flatten)]
    pub(super) new: NewPasswordArgs,
    /// Host name recorded in the key file [default: this machine's].
    #[arg(long)]
    pub(super) host: Option<String>,
    /// User name recorded in the key file [default: the current user].
    #[arg(long)]
    pub(super) user: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct KeyRemoveArgs {
    /// The key file's id or a unique prefix (see `tresor key list`).
    pub(super) id: String,
    /// Also remove the key file in use (another must still open the repository).
    #[arg(long)]
    pub(super) force: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct KeyPasswdArgs {
    #[command(flatten)]
    pub(super) new: NewPasswordArgs,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct MountArgs {
    /// An empty directory to mount on.
    pub(super) mountpoint: PathBuf,
    /// MiB of decoded chunks kept for reads.
    #[arg(long, default_value_t = 256)]
    pub(super) cache_mib: usize,
}

#[derive(Args)]
pub(super) struct PruneArgs {
    /// Repack a pack when more than this share of it is unused (`10%`, `0%` repacks every
    /// pack with any unused byte).
    #[arg(long, default_value = "10%", value_name = "PERCENT")]
    pub(super) max_unused: String,
    /// Show what would be deleted and freed; change nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Prune even though snapshots disappeared without `snapshot forget` (their data is freed;
    /// they are recorded as forgotten, so later checks stop reporting them).
    #[arg(long)]
    pub(super) allow_missing_snapshots: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct ForgetArgs {
    /// Snapshots to forget by id (instead of a policy).
    pub(super) ids: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub(super) keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_hourly: Option<u32>,
    /// … days.
    #[arg(long, value_name = "N")]
    pub(super) keep_daily: Option<u32>,
    /// … ISO weeks.
    #[arg(long, value_name = "N")]
    pub(super) keep_weekly: Option<u32>,
    /// … months.
    #[arg(long, value_name = "N")]
    pub(super) keep_monthly: Option<u32>,
    /// … years.
    #[arg(long, value_name = "N")]
    pub(super) keep_yearly: Option<u32>,
    /// Keep every snapshot within this duration of the group's newest (`30d`, `1y6M`).
    #[arg(long, value_name = "DURATION")]
    pub(super) keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub(super) keep_tag: Vec<String>,
    /// Apply the policy per group of these fields (`host,sources,tags`; empty: one group).
    #[arg(long, default_value = "host,sources", value_name = "FIELDS")]
    pub(super) group_by: String,
    /// Show each snapshot with keep/remove, the rule that decided, and what a prune would free.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    pub(super) prune: bool,
    /// For --prune: see `prune --max-unused`.
    #[arg(long, default_value = "10%", value_name = "PERCENT")]
    pub(super) max_unused: String,
    /// For --prune: see `prune --allow-missing-snapshots`.
    #[arg(long)]
    pub(super) allow_missing_snapshots: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct UnlockArgs {
    /// Remove every lock, also those of processes that may still run (dangerous).
    #[arg(long)]
    pub(super) remove_all: bool,
}

#[derive(Subcommand)]
pub(super) enum RepairCmd {
    /// Rebuild every index object (and the local catalog) from the pack headers alone.
    Index(JsonArg),
    /// Find snapshots that need data that is gone; with --forget remove them.
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Args)]
pub(super) struct RepairSnapshotsArgs {
    /// Remove the damaged snapshots (their intact data stays until a prune).
    #[arg(long)]
    pub(super) forget: bool,
    /// Show what --forget would remove, remove nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Judge by reading every pack, not only by the structure.
    #[arg(long)]
    pub(super) read_data: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Subcommand)]
pub(super) enum RepoCmd {
    /// Create a new repository.
    Init(InitArgs),
    /// Remove stale locks (of crashed runs); --remove-all removes every lock.
    Unlock(UnlockArgs),
    /// Copy snapshots from another repository (--from) into this one (--repo), re-encrypted
    /// under this one's key. Only snapshots this repository does not have yet are copied, and
    /// no blob it has is stored again: run it from cron. Copying into a repository made with
    /// `repo init --copy-chunker-params-from` skips what it has without reading it; into any
    /// other, every blob of each new snapshot is read and decoded.
    Copy(CopyArgs),
}

/// Where the source repository is and how to open it (`repo copy`, `repo init
/// --copy-chunker-params-from`).
#[derive(Args)]
pub(super) struct FromPasswordArgs {
    /// The source repository's password from the first line of FILE [default:
    /// $TRESOR_FROM_PASSWORD, else the password of --repo].
    #[arg(long, env = "TRESOR_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub(super) from_password_file: Option<PathBuf>,
    /// Try this key file of the source first.
    #[arg(long, value_name = "ID")]
    pub(super) from_key_hint: Option<String>,
}

#[derive(Args)]
pub(super) struct CopyArgs {
    /// The source repository: a path, `local:PATH` or `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
    #[arg(long, env = "TRESOR_FROM_REPO", value_name = "LOCATION")]
    pub(super) from: std::ffi::OsString,
    /// Snapshots to copy: `latest`, ids or unique prefixes [default: every snapshot].
    pub(super) snapshots: Vec<String>,
    /// Only snapshots of this host (repeatable: any of them).
    #[arg(long)]
    pub(super) host: Vec<String>,
    /// Only snapshots with this tag (repeatable: any of them).
    #[arg(long)]
    pub(super) tag: Vec<String>,
    #[command(flatten)]
    pub(super) from_password: FromPasswordArgs,
    /// Show which snapshots would be copied; write nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct InitArgs {
    /// zstd level for new data (0 turns compression off).
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_ZSTD_LEVEL)]
    pub(super) compression_level: i32,
    /// Pack target size in MiB.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_PACK_SIZE / (1024 * 1024))]
    pub(super) pack_size_mib: u32,
    /// Smallest chunk in bytes.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_CHUNKER.min_size)]
    pub(super) chunk_min: u32,
    /// Average chunk in bytes.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_CHUNKER.avg_size)]
    pub(super) chunk_avg: u32,
    /// Largest chunk in bytes.
    #[arg(long, default_value_t = tresor::repo::config::DEFAULT_CHUNKER.max_size)]
    pub(super) chunk_max: u32,
    /// argon2id memory in KiB (lower only for tests).
    #[arg(long, default_value_t = KdfParams::default().memory_kib, hide = true)]
    pub(super) kdf_memory_kib: u32,
    /// argon2id passes.
    #[arg(long, default_value_t = KdfParams::default().iterations, hide = true)]
    pub(super) kdf_iterations: u32,
    /// Let the repository directory's group read it (directories 0750, files 0640) instead of
    /// the owner alone (0700, 0600).
    #[arg(long)]
    pub(super) group_readable: bool,
    /// Chunk and id data exactly like the repository at LOCATION (its chunker parameters and
    /// its content secret; the encryption key stays this repository's own), so that snapshots
    /// copied from it with `repo copy` keep their ids: copying skips what is here without
    /// reading it, and copied data dedups with backups made directly into this repository.
    /// Opens LOCATION (see --from-password-file). The --chunk-* options are then ignored.
    #[arg(long, value_name = "LOCATION")]
    pub(super) copy_chunker_params_from: Option<std::ffi::OsString>,
    #[command(flatten)]
    pub(super) from_password: FromPasswordArgs,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub(super) enum SnapshotCmd {
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
pub(super) struct LsArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    pub(super) snapshot: String,
    /// Path inside the snapshot, as stored (default: its top).
    pub(super) path: Option<String>,
    /// Everything below, not just one level.
    #[arg(long, short = 'R')]
    pub(super) recursive: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct DiffArgs {
    /// The older snapshot.
    pub(super) a: String,
    /// The newer snapshot.
    pub(super) b: String,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct CreateArgs {
    /// Files and directories to back up.
    pub(super) paths: Vec<PathBuf>,
    /// Read standard input as one file.
    #[arg(long)]
    pub(super) stdin: bool,
    /// Run this command with `sh -c` and store its output as a file; if it fails, no snapshot.
    /// Repeatable as NAME=CMD (`--command shop.sql='pg_dump shop'`): each output is its own
    /// file. A prefix like `PGHOST=…` (upper-case, a shell variable) is part of the command.
    #[arg(long, value_name = "[NAME=]CMD")]
    pub(super) command: Vec<String>,
    /// File name in the snapshot for --stdin or --command.
    #[arg(long, default_value = "stdin")]
    pub(super) stdin_name: String,
    /// Dump this PostgreSQL database with pg_dump, stored as `postgres/<host>/<db>.sql`
    /// (repeatable). `all`: every database that is not a template, one file each, plus the
    /// roles and tablespaces (`pg_dumpall --globals-only`) as `postgres/<host>/globals.sql`.
    /// If a dump fails, no snapshot is written.
    #[arg(long, value_name = "DB")]
    pub(super) postgres: Vec<String>,
    /// Stored format of --postgres dumps: `plain` SQL (small deltas from day to day) or
    /// pg_dump's `custom` archive (`.dump`, stored uncompressed; `db restore --jobs N` loads it
    /// in parallel).
    #[arg(long, value_enum, default_value_t = PgFormatArg::Plain)]
    pub(super) pg_format: PgFormatArg,
    /// Pass this option to pg_dump (repeatable), e.g. `--pg-dump-option=--exclude-table=logs`.
    #[arg(long, value_name = "OPTION", allow_hyphen_values = true)]
    pub(super) pg_dump_option: Vec<String>,
    /// Dump this MariaDB/MySQL database with mariadb-dump (else mysqldump), stored as
    /// `mariadb/<host>/<db>.sql` (repeatable; `all`: every database but the server's own).
    /// Default options: --single-transaction --routines --triggers --events.
    #[arg(long, value_name = "DB")]
    pub(super) mariadb: Vec<String>,
    /// Pass this option to mariadb-dump (repeatable), after the defaults, e.g.
    /// `--mariadb-dump-option=--lock-tables` for MyISAM tables.
    #[arg(long, value_name = "OPTION", allow_hyphen_values = true)]
    pub(super) mariadb_dump_option: Vec<String>,
    /// Copy this SQLite database with SQLite's online backup API (consistent while it is being
    /// written), stored as `sqlite/<absolute path>` (repeatable).
    #[arg(long, value_name = "PATH")]
    pub(super) sqlite: Vec<PathBuf>,
    /// Record the exact row count of every table of each database source, counted in the
    /// dump's own snapshot, for `tresor drill` to compare.
    #[arg(long)]
    pub(super) count_rows: bool,
    #[command(flatten)]
    pub(super) pg: PgArgs,
    #[command(flatten)]
    pub(super) my: MyArgs,
    #[command(flatten)]
    pub(super) container: ContainerArgs,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    pub(super) tag: Vec<String>,
    /// Host name to record [default: this machine's].
    #[arg(long)]
    pub(super) host: Option<String>,
    /// Parent snapshot for change detection (`latest`, an id or a unique prefix) [default: the
    /// latest snapshot of this host with the same set of source paths]. A regular file whose
    /// size, mtime, ctime, inode and device equal the parent's file at the same path, and whose
    /// chunks are all still in the repository, is not read again.
    #[arg(long, value_name = "SNAPSHOT")]
    pub(super) parent: Option<String>,
    /// Read every file; use no parent.
    #[arg(long, conflicts_with = "parent")]
    pub(super) force: bool,
    /// Leave out entries matching GLOB (repeatable). A pattern without `/` matches an entry's
    /// base name at any depth (`*.tmp`); a pattern with `/` matches the entry's absolute path
    /// (`/home/*/.cache`, `**/target/debug`; so `a/b` alone matches nothing). `*`, `?` and
    /// `[..]` never match `/`; `**` matches any number of whole path components; `\` escapes.
    /// An excluded directory is not descended into; an excluded source path stores nothing.
    #[arg(long, value_name = "GLOB")]
    pub(super) exclude: Vec<String>,
    /// Read exclude patterns from FILE (repeatable): one per line, blank lines and `#` comments
    /// ignored, surrounding whitespace trimmed.
    #[arg(long, value_name = "FILE")]
    pub(super) exclude_file: Vec<PathBuf>,
    /// Leave out entirely every directory that holds an entry named NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    pub(super) exclude_if_present: Vec<String>,
    /// Store a directory holding a valid CACHEDIR.TAG (starting with `Signature:
    /// 8a477f597d28d172789f06886806bc55`) with only that tag file.
    #[arg(long)]
    pub(super) exclude_caches: bool,
    /// Do not descend into directories on another file system than their source path; such a
    /// mount point is stored as an empty directory.
    #[arg(long, short = 'x')]
    pub(super) one_file_system: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// How to reach a PostgreSQL server (default: libpq's environment, PGHOST, PGPORT, PGUSER,
/// PGPASSWORD, ~/.pgpass…).
#[derive(Args, Clone, Default)]
pub(super) struct PgArgs {
    /// PostgreSQL host or socket directory [default: libpq's, PGHOST].
    #[arg(long, value_name = "HOST")]
    pub(super) pg_host: Option<String>,
    /// PostgreSQL port [default: libpq's, PGPORT].
    #[arg(long, value_name = "PORT")]
    pub(super) pg_port: Option<u16>,
    /// PostgreSQL user [default: libpq's, PGUSER].
    #[arg(long, value_name = "USER")]
    pub(super) pg_user: Option<String>,
    /// Directory of psql, pg_dump, pg_dumpall and pg_restore [default: PATH].
    #[arg(long, env = "TRESOR_PG_BINDIR", value_name = "DIR")]
    pub(super) pg_bindir: Option<PathBuf>,
}

/// Where the database tools run.
#[derive(Args, Clone, Default)]
pub(super) struct ContainerArgs {
    /// Run the database tools (psql, pg_dump, mariadb-dump, …) inside this container with
    /// `docker exec -i` (or podman); connection options then mean what they mean there.
    #[arg(long, value_name = "NAME")]
    pub(super) container: Option<String>,
    /// The container CLI [default: docker if in PATH, else podman].
    #[arg(long, value_name = "CMD", requires = "container")]
    pub(super) container_runtime: Option<String>,
}

/// How to reach a MariaDB/MySQL server (default: the client's own defaults, ~/.my.cnf).
#[derive(Args, Clone, Default)]
pub(super) struct MyArgs {
    /// MariaDB unix socket.
    #[arg(long, value_name = "PATH")]
    pub(super) my_socket: Option<PathBuf>,
    /// MariaDB host.
    #[arg(long, value_name = "HOST")]
    pub(super) my_host: Option<String>,
    /// MariaDB port.
    #[arg(long, value_name = "PORT")]
    pub(super) my_port: Option<u16>,
    /// MariaDB user.
    #[arg(long, value_name = "USER")]
    pub(super) my_user: Option<String>,
    /// An option file with the credentials (`[client]` user=, password=), read in addition to
    /// the usual ones.
    #[arg(long, value_name = "FILE")]
    pub(super) my_defaults_file: Option<PathBuf>,
    /// Directory of mariadb and mariadb-dump (or mysql and mysqldump) [default: PATH].
    #[arg(long, env = "TRESOR_MY_BINDIR", value_name = "DIR")]
    pub(super) my_bindir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum PgFormatArg {
    Plain,
    Custom,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub(super) enum DbCmd {
    /// The database sources of a snapshot: engine, database, format, server version, dumper,
    /// whether row counts were recorded.
    List(DbListArgs),
    /// Load a database source of a snapshot into a database (PostgreSQL: psql or pg_restore,
    /// stopping at the first error) or write an SQLite file back, streaming from the repository.
    Restore(DbRestoreArgs),
}

#[derive(Args)]
pub(super) struct DbListArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    pub(super) snapshot: String,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct DbRestoreArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    pub(super) snapshot: String,
    /// The source: its stored path (`postgres/local/shop.sql`), its database name, or for
    /// SQLite the database file's path.
    pub(super) source: String,
    /// The target: a database name (PostgreSQL; not needed for globals) or a file (SQLite).
    #[arg(long, value_name = "NAME")]
    pub(super) into: Option<String>,
    /// Create the target database when it does not exist (an existing one must be empty).
    #[arg(long)]
    pub(super) create: bool,
    /// Drop the target database (or replace the SQLite file) when it exists, then restore.
    #[arg(long, conflicts_with = "create")]
    pub(super) drop_existing: bool,
    /// First restore the roles and tablespaces the snapshot holds for the same server.
    #[arg(long)]
    pub(super) globals: bool,
    /// Parallel pg_restore jobs for a custom-format dump (from a temporary file in $TMPDIR,
    /// which parallel pg_restore needs).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(super) jobs: u32,
    #[command(flatten)]
    pub(super) pg: PgArgs,
    #[command(flatten)]
    pub(super) my: MyArgs,
    #[command(flatten)]
    pub(super) container: ContainerArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct DrillArgs {
    /// Snapshot: `latest`, a full id or a unique prefix [default: the latest snapshot with
    /// database sources].
    pub(super) snapshot: Option<String>,
    /// Drill only this source (stored path or database name; repeatable) [default: every one].
    #[arg(long, value_name = "SOURCE")]
    pub(super) source: Vec<String>,
    #[command(flatten)]
    pub(super) pg: PgArgs,
    #[command(flatten)]
    pub(super) my: MyArgs,
    #[command(flatten)]
    pub(super) container: ContainerArgs,
    /// Print the results as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct ShowArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    pub(super) snapshot: String,
    /// Also show the bytes it needs beyond this base snapshot (the differential size).
    #[arg(long, value_name = "SNAPSHOT")]
    pub(super) since: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct RestoreArgs {
    /// Snapshot: `latest`, a full id or a unique prefix.
    pub(super) snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(long, conflicts_with = "stdout")]
    pub(super) target: Option<PathBuf>,
    /// Write one file to standard output.
    #[arg(long)]
    pub(super) stdout: bool,
    /// Restore only this path, as the snapshot stores it (see `snapshot show`).
    #[arg(long)]
    pub(super) path: Option<String>,
    /// Restore only entries matching GLOB (repeatable). Globs match the stored path, e.g.
    /// `etc/nginx/*.conf` (no leading `/`); a pattern without `/` matches the base name at any
    /// depth. `*` and `?` stay within one component, `**` crosses components. An included
    /// directory brings its whole subtree; an included entry brings its parent directories
    /// (created, with their metadata); other directories are not created.
    #[arg(long, value_name = "GLOB", conflicts_with = "stdout")]
    pub(super) include: Vec<String>,
    /// Skip entries matching GLOB (repeatable; same syntax as --include). An excluded directory
    /// skips its whole subtree. Excludes win over includes.
    #[arg(long, value_name = "GLOB", conflicts_with = "stdout")]
    pub(super) exclude: Vec<String>,
    /// Files that already exist in the target. `always`: the result equals the snapshot; an
    /// existing file whose size and content (hashed locally, chunk by chunk) already match is
    /// kept and gets only its metadata. `if-changed`: keep an existing file whose size and mtime
    /// match, without reading it. `never`: leave every existing entry untouched.
    #[arg(long, value_enum, default_value_t = OverwriteArg::Always, conflicts_with = "stdout")]
    pub(super) overwrite: OverwriteArg,
    /// After restoring, re-read every selected regular file and compare it with the snapshot
    /// (size and each chunk's keyed hash); a mismatch names the file and exits 13.
    #[arg(long, conflicts_with = "stdout")]
    pub(super) verify: bool,
    /// Print the summary as JSON.
    #[arg(long, conflicts_with = "stdout")]
    pub(super) json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

#[derive(Args)]
pub(super) struct CheckArgs {
    /// Also read, authenticate and decompress every blob of every pack.
    #[arg(long)]
    pub(super) read_data: bool,
    /// Read only part of the packs: `10%` (the least recently verified tenth) or `1/7` (a
    /// fixed seventh; 1/7 … 7/7 cover all). Implies --read-data.
    #[arg(long, value_name = "P%|N/M")]
    pub(super) read_data_subset: Option<String>,
    /// Read only packs not verified within this age (`30d`, `12h`, `2w`), least recently
    /// verified first. Implies --read-data.
    #[arg(long, value_name = "AGE")]
    pub(super) max_age: Option<String>,
    /// Stop reading after this many bytes (`5GiB`, `500MB`). Implies --read-data.
    #[arg(long, value_name = "SIZE")]
    pub(super) budget: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}
