//! Test harness: one temporary directory per test, the real `tresor` binary, a throwaway
//! PostgreSQL cluster.
//!
//! Every command runs with the `TRESOR_*` variables inherited from the outside removed, then
//! `TRESOR_REPO`, `TRESOR_CACHE_DIR` and the password (variable or file) pointing into the
//! test's own directory. Repositories are always created with the cheap hidden KDF settings.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tresor");

pub mod mariadb;
pub mod proxy;
pub mod s3;

/// Exit codes documented in src/cli.rs `mod exit`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FATAL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const INCOMPLETE: i32 = 3;
    pub const STALE: i32 = 4;
    pub const NOTIFY: i32 = 5;
    pub const DRILL_FAILED: i32 = 6;
    pub const NO_REPO: i32 = 10;
    pub const LOCKED: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
    pub const DAMAGED: i32 = 13;
}

/// Longest any single command may run before the test fails (nothing in the suite comes close).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(240);

/// The result of one command.
#[derive(Debug)]
pub struct Out {
    /// Exit code; 128 + signal number when killed by a signal.
    pub code: i32,
    /// The signal that killed it, if one did (so an exit with 130 and a death by SIGINT differ).
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Parses stdout as JSON; panics with the whole output if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout_str(),
                self.stderr
            )
        })
    }

    /// Panics (showing both streams) unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            code,
            "{what}: expected exit code {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(4096)]),
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(&self, what: &str) -> &Self {
        self.expect_code(exit::OK, what)
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}; it is:\n{}",
            self.stderr
        );
        self
    }
}

/// Exit code of a finished process: its code, or 128 + the signal that killed it.
pub fn code_of(st: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// What to feed a command on standard input.
pub enum Input {
    Null,
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// Removes every `TRESOR_*` variable this process inherited from a command's environment.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRESOR_") {
            cmd.env_remove(&k);
        }
    }
}

/// Waits for a child with a deadline, collecting both output streams; kills it on timeout.
pub fn wait_with_timeout(mut child: Child, timeout: Duration, what: &str) -> Out {
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: still running after {timeout:?}; killed");
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{what}: wait failed: {e}"),
        }
    };
    let stdout = t_out.join().unwrap();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    Out {
        code: code_of(&status),
        signal: std::os::unix::process::ExitStatusExt::signal(&status),
        stdout,
        stderr,
    }
}

/// Runs a prepared command with standard input closed, collecting its output, within the
/// default deadline.
/// Runs `cmd` fed `input`, capturing its output, killed after `timeout`.
pub fn run_command_input(mut cmd: Command, input: Input, timeout: Duration, what: &str) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    match input {
        Input::Null => {
            cmd.stdin(Stdio::null());
            wait_with_timeout(cmd.spawn().unwrap(), timeout, what)
        }
        Input::File(p) => {
            cmd.stdin(fs::File::open(&p).unwrap());
            wait_with_timeout(cmd.spawn().unwrap(), timeout, what)
        }
        Input::Bytes(b) => {
            cmd.stdin(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let feeder = thread::spawn(move || {
                let _ = stdin.write_all(&b);
            });
            let out = wait_with_timeout(child, timeout, what);
            feeder.join().unwrap();
            out
        }
    }
}

/// The restored copy of a backed-up directory `src`'s file `rel` somewhere under `target`.
pub fn restored_src_file(target: &Path, rel: &str) -> PathBuf {
    all_files(target)
        .into_iter()
        .find(|p| p.ends_with(Path::new("src").join(rel)))
        .unwrap_or_else(|| panic!("{rel} was not restored under {}", target.display()))
}

pub fn run_command(mut cmd: Command, what: &str) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_with_timeout(cmd.spawn().unwrap(), DEFAULT_TIMEOUT, what)
}

/// How the password reaches the binary.
#[derive(Clone, Debug)]
pub enum Password {
    Env(String),
    File(PathBuf),
    None,
}

/// A directory for temporary files that other users (postgres, nobody) can reach and whose
/// paths are short enough for a unix socket: the system temp dir if every ancestor is
/// world-searchable and its path is short, else /tmp.
pub fn shared_tmp() -> PathBuf {
    let t = std::env::temp_dir();
    let reachable = t.ancestors().all(|a| {
        fs::metadata(a)
            .map(|m| m.mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if reachable && t.as_os_str().len() <= 40 {
        t
    } else {
        PathBuf::from("/tmp")
    }
}

/// One test's world: a temp dir holding the repository, the cache and any source files.
pub struct Env {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub password: String,
    pub pass: Password,
    /// Run the binary as this user (via `runuser -u USER --`) when set.
    pub user: Option<String>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("tresor-it-")
            .tempdir_in(shared_tmp())
            .unwrap();
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        let password = format!("pw-{}", random_hex(8));
        Env {
            pass: Password::Env(password.clone()),
            dir,
            repo,
            cache,
            password,
            user: None,
        }
    }

    /// Like `new`, but the password comes from a file (TRESOR_PASSWORD_FILE).
    pub fn with_password_file() -> Env {
        let mut e = Env::new();
        let f = e.path("password.txt");
        fs::write(&f, format!("{}\n", e.password)).unwrap();
        e.pass = Password::File(f);
        e
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the test directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The command with the test environment, not yet run.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", BIN]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(args);
        self.apply_env(&mut cmd);
        cmd
    }

    /// The binary run by `prefix` (`unshare -p -f --mount-proc`, `setpriv …`: the binary's
    /// path and `args` follow it), with the test environment; `user` is not applied.
    pub fn command_under<S: AsRef<OsStr>>(&self, prefix: &[&str], args: &[S]) -> Command {
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..]).arg(BIN).args(args);
        self.apply_env(&mut cmd);
        cmd
    }

    /// Sets the test's `TRESOR_*` environment on a command, and nothing inherited.
    fn apply_env(&self, cmd: &mut Command) {
        scrub_env(cmd);
        cmd.env("TRESOR_REPO", &self.repo)
            .env("TRESOR_CACHE_DIR", &self.cache);
        match &self.pass {
            Password::Env(p) => {
                cmd.env("TRESOR_PASSWORD", p);
            }
            Password::File(f) => {
                cmd.env("TRESOR_PASSWORD_FILE", f);
            }
            Password::None => {}
        }
        cmd.current_dir(self.root());
    }

    /// Runs the binary with `input` on stdin and a deadline.
    pub fn run_full<S: AsRef<OsStr>>(&self, args: &[S], input: Input, timeout: Duration) -> Out {
        let what = format!(
            "tresor {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        run_command_input(self.command(args), input, timeout, &what)
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        self.run_full(args, Input::Null, DEFAULT_TIMEOUT)
    }

    /// [`Env::run`] with some of the test's variables replaced (`TRESOR_REPO`, a password…).
    pub fn run_with<S: AsRef<OsStr>>(&self, args: &[S], vars: &[(&str, &OsStr)]) -> Out {
        let mut cmd = self.command(args);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        run_command(cmd, &format!("tresor with {vars:?}"))
    }

    pub fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Out {
        self.run_full(args, Input::Bytes(input.to_vec()), DEFAULT_TIMEOUT)
    }

    /// `repo init` with the cheap KDF; asserts success.
    pub fn init(&self) {
        self.run(&init_args()).ok("repo init");
        assert!(
            self.repo.join("config").is_file(),
            "repo init wrote no config"
        );
    }

    /// `snapshot create ARGS --json`; asserts exit 0 and returns the JSON.
    pub fn create<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut a: Vec<&OsStr> = vec![
            OsStr::new("snapshot"),
            OsStr::new("create"),
            OsStr::new("--json"),
        ];
        a.extend(args.iter().map(|s| s.as_ref()));
        self.run(&a).ok("snapshot create").json()
    }

    /// `snapshot create --stdin --stdin-name NAME --json` fed `data`.
    pub fn create_stdin(&self, name: &str, data: &[u8]) -> Value {
        self.run_stdin(
            &[
                "snapshot",
                "create",
                "--json",
                "--stdin",
                "--stdin-name",
                name,
            ],
            data,
        )
        .ok("snapshot create --stdin")
        .json()
    }

    /// `snapshot list --json`.
    pub fn list(&self) -> Vec<Value> {
        match self
            .run(&["snapshot", "list", "--json"])
            .ok("snapshot list")
            .json()
        {
            Value::Array(v) => v,
            other => panic!("snapshot list --json is not an array: {other}"),
        }
    }

    pub fn snapshot_count(&self) -> usize {
        self.list().len()
    }

    /// `snapshot show REF --json`.
    pub fn show(&self, reference: &str) -> Value {
        self.run(&["snapshot", "show", reference, "--json"])
            .ok("snapshot show")
            .json()
    }

    /// `snapshot restore REF --stdout [--path P]`; asserts success and returns the bytes.
    pub fn restore_stdout(&self, reference: &str, path: Option<&str>) -> Vec<u8> {
        let out = self.try_restore_stdout(reference, path);
        out.ok("snapshot restore --stdout");
        out.stdout
    }

    /// `snapshot restore REF --stdout [--path P]`, whatever its outcome.
    pub fn try_restore_stdout(&self, reference: &str, path: Option<&str>) -> Out {
        let mut a = vec!["snapshot", "restore", reference, "--stdout"];
        if let Some(p) = path {
            a.extend(["--path", p]);
        }
        self.run(&a)
    }

    /// Every pack file under repo/data (no temporary files).
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        let Ok(rd) = fs::read_dir(self.repo.join("data")) else {
            return v;
        };
        for d in rd.flatten() {
            if let Ok(inner) = fs::read_dir(d.path()) {
                for f in inner.flatten() {
                    if !f.file_name().to_string_lossy().starts_with('.') && f.path().is_file() {
                        v.push(f.path());
                    }
                }
            }
        }
        v.sort();
        v
    }

    /// The path under which a source path is stored in a snapshot (absolute, minus the `/`).
    pub fn stored(&self, p: &Path) -> String {
        p.to_str().unwrap().trim_start_matches('/').to_string()
    }
}

impl Env {
    /// Starts `snapshot create --stdin` fed `data` by a thread (stdin closes when all is sent).
    pub fn spawn_stdin_create(
        &self,
        name: &str,
        data: Arc<Vec<u8>>,
    ) -> (KillOnDrop, thread::JoinHandle<()>) {
        let mut cmd = self.command(&["snapshot", "create", "--stdin", "--stdin-name", name]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        (KillOnDrop(Some(child)), feeder)
    }

    /// Bytes of final (non-temporary) objects under one repository directory.
    pub fn stored_bytes(&self, dir: &str) -> u64 {
        all_files(&self.repo.join(dir))
            .into_iter()
            .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'))
            .map(|f| fs::metadata(f).unwrap().len())
            .sum()
    }

    /// Every object under its final name is complete: its name is the BLAKE3 hash of its bytes.
    pub fn assert_objects_whole(&self, when: &str) {
        for kind in ["data", "index", "snapshots", "keys", "locks"] {
            if !self.repo.join(kind).exists() {
                continue;
            }
            for f in all_files(&self.repo.join(kind)) {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let hash = blake3::hash(&fs::read(&f).unwrap()).to_hex().to_string();
                assert_eq!(hash, name, "{when}: {} is torn or damaged", f.display());
            }
        }
    }
}

impl KillOnDrop {
    /// Waits `delay`, then SIGKILLs the process (unless it already ended) and reaps it.
    pub fn kill_after(&mut self, delay: Duration) -> ExitStatus {
        self.kill_after_timed(delay).0
    }

    /// [`KillOnDrop::kill_after`], also saying how long the process ran when it ended on its
    /// own before the delay (`None` when it was killed).
    pub fn kill_after_timed(&mut self, delay: Duration) -> (ExitStatus, Option<Duration>) {
        let started = Instant::now();
        let mut child = self.0.take().unwrap();
        while started.elapsed() < delay {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, Some(started.elapsed()));
            }
            thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        (child.wait().unwrap(), None)
    }
}

impl KillOnDrop {
    /// Kills the process `extra` after `ready` first says true (polled every millisecond), or
    /// at `limit` if it never does; like [`KillOnDrop::kill_after_timed`], says how long the
    /// process ran when it ended on its own first. Aims a kill at a window that a random delay
    /// would rarely hit (the writes at the end of a short run).
    pub fn kill_when(
        &mut self,
        ready: impl Fn() -> bool,
        extra: Duration,
        limit: Duration,
    ) -> (ExitStatus, Option<Duration>) {
        let started = Instant::now();
        let mut child = self.0.take().unwrap();
        let mut deadline = limit;
        while started.elapsed() < deadline {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, Some(started.elapsed()));
            }
            if deadline == limit && ready() {
                deadline = started.elapsed() + extra;
                continue;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        (child.wait().unwrap(), None)
    }
}

/// Trials from `trials_var` (else `default`) and a seed from `TRESOR_CRASH_SEED` (else
/// random), printed so that a failing run can be replayed.
pub fn trials_and_seed(what: &str, trials_var: &str, default: u64) -> (u64, u64) {
    let trials = env_u64(trials_var, default);
    let seed = env_u64(
        "TRESOR_CRASH_SEED",
        u64::from_str_radix(&random_hex(4), 16).unwrap(),
    );
    eprintln!("{what} trials: {trials}, seed {seed} (TRESOR_CRASH_SEED={seed} replays them)");
    (trials, seed)
}

impl Env {
    /// `repo init` with 1 MiB packs: many pack and index writes per run, so random kills land
    /// on every kind of write.
    pub fn init_small_packs(&self) {
        let mut init = init_args();
        init.extend(["--pack-size-mib", "1"]);
        self.run(&init).ok("init with 1 MiB packs");
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `repo init` arguments with the cheap KDF.
pub fn init_args() -> Vec<&'static str> {
    vec![
        "repo",
        "init",
        "--kdf-memory-kib",
        "64",
        "--kdf-iterations",
        "1",
    ]
}

/// Random hex from the OS.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

/// A fast deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Incompressible bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// Text made of words from a small vocabulary: unique, but compresses several times.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 32] = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
            "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "0", "1",
            "2", "3", "\n", ",",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            let mut r = self.next_u64();
            for _ in 0..12 {
                v.extend_from_slice(WORDS[(r & 31) as usize].as_bytes());
                v.push(b' ');
                r >>= 5;
            }
        }
        v.truncate(n);
        v
    }
}

/// Whether a test may go on: `ok` says its precondition holds (a file system feature, root).
/// When it does not, the test fails loudly — CI (root, ext4) has every precondition, and a test
/// that passes without testing anything lies — unless `TRESOR_TEST_ALLOW_SKIP=1` says this
/// machine may skip it: then it says so and returns false.
#[track_caller]
pub fn precondition(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("TRESOR_TEST_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipped (TRESOR_TEST_ALLOW_SKIP=1): {what}");
        return false;
    }
    panic!(
        "precondition missing: {what}. CI has it; on a machine that cannot provide it, \
         TRESOR_TEST_ALLOW_SKIP=1 skips this test"
    );
}

/// Runs a command (not tresor) and says whether it succeeded.
pub fn succeeds(program: &str, args: &[&OsStr]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Unmounts a path when dropped (lazily, so a test failing with files open still cleans up).
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Every temporary file (`.tmp-…`) under a directory.
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect()
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Panics with a clear message unless running as root.
#[track_caller]
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (chown, runuser); CI runs the suite as root"
    );
}

/// uid and gid of a user, from `id`.
pub fn user_ids(user: &str) -> (u32, u32) {
    let get = |flag: &str| -> u32 {
        let o = Command::new("id").args([flag, user]).output().unwrap();
        assert!(
            o.status.success(),
            "no user {user}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    (get("-u"), get("-g"))
}

/// chown -R without following symlinks.
pub fn chown_r(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_r(&e.unwrap().path(), uid, gid);
        }
    }
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Bytes of every regular file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    all_files(dir)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
}

/// Every regular file under `dir`, recursively (symlinks not followed), sorted.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Finds `needle` in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Kills a child process group member on drop unless it already ended.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A flag shared with a feeder thread.
pub fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

pub fn raised(f: &AtomicBool) -> bool {
    f.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The PostgreSQL server binaries (`pg_config --bindir`); panics with a clear message if absent.
pub fn pg_bindir() -> PathBuf {
    let hint = "PostgreSQL server binaries are required for this test (CI installs them: \
                `apt-get install -y postgresql`)";
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .unwrap_or_else(|e| panic!("{hint}: cannot run pg_config: {e}"));
    assert!(
        out.status.success(),
        "{hint}: pg_config --bindir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    for b in ["initdb", "pg_ctl", "postgres", "pg_dump", "psql"] {
        assert!(
            dir.join(b).is_file(),
            "{hint}: {} does not exist",
            dir.join(b).display()
        );
    }
    dir
}

/// A throwaway cluster on a unix socket only; stopped (`-m immediate`) when dropped.
pub struct Pg {
    pub bindir: PathBuf,
    pub sock: PathBuf,
    pub data: PathBuf,
    log: PathBuf,
    as_root: bool,
    started: bool,
    dir: TempDir,
}

impl Pg {
    pub fn start() -> Pg {
        let bindir = pg_bindir();
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("tresor-pg-")
            .tempdir_in(shared_tmp())
            .unwrap();
        chmod(dir.path(), 0o755);
        let base = dir.path().join("pg");
        fs::create_dir(&base).unwrap();
        let sock = base.join("sock");
        fs::create_dir(&sock).unwrap();
        let data = base.join("data");
        let log = base.join("server.log");
        if as_root {
            let (uid, gid) = user_ids("postgres");
            chown_r(&base, uid, gid);
        }
        let mut pg = Pg {
            bindir,
            sock,
            data,
            log,
            as_root,
            started: false,
            dir,
        };
        let out = pg.server_cmd(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c autovacuum=off -c shared_buffers=64MB -c max_wal_size=2GB \
             -c max_parallel_workers_per_gather=0",
            pg.sock.display()
        );
        pg.started = true; // from here on, Drop tries to stop it
        let out = pg.server_cmd(
            "pg_ctl",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-l",
                pg.log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
        if !out.status.success() {
            let log = fs::read_to_string(&pg.log).unwrap_or_default();
            panic!(
                "pg_ctl start failed:\n{}{}\n--- server log\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pg
    }

    /// Runs a server binary, as `postgres` when we are root (the server refuses to run as root).
    fn server_cmd(&self, bin: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bindir.join(bin);
        let mut c = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The shell command that dumps `db` (for `--command`).
    pub fn dump_command(&self, db: &str) -> String {
        format!(
            "{} -h {} -U postgres {db}",
            self.bin("pg_dump").display(),
            self.sock.display()
        )
    }

    /// A `pg_dump` process for `db` with extra args, stdout piped.
    pub fn pg_dump(&self, db: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(self.bin("pg_dump"));
        c.args(["-h", self.sock.to_str().unwrap(), "-U", "postgres"])
            .args(extra)
            .arg(db);
        c.stdin(Stdio::null());
        c
    }

    /// A `psql` process for `db` that stops at the first error.
    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin("psql"));
        c.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            self.sock.to_str().unwrap(),
            "-U",
            "postgres",
            "-d",
            db,
        ]);
        c
    }

    /// Runs SQL; panics on failure; returns the unaligned tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .psql_cmd(db)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed on {sql}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn createdb(&self, name: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
    }

    /// Complete `pg_dump` output of `db` (plain format).
    pub fn dump(&self, db: &str, extra: &[&str]) -> Vec<u8> {
        let out = self.pg_dump(db, extra).output().unwrap();
        assert!(
            out.status.success(),
            "pg_dump {db} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.started {
            let out = self.server_cmd(
                "pg_ctl",
                &[
                    "-D",
                    self.data.to_str().unwrap_or(""),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
            if !out.status.success() {
                eprintln!(
                    "pg_ctl stop failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
