//! Hardening: locks across PID namespaces and `hidepid`, a lock lost while its backup runs,
//! `repair index` on a truncated pack, a replayed index object, snapshots deleted behind
//! tresor's back, planted key files, file modes, KDF limits, read-only repositories, signals and
//! stale temporary files, and the messages and exit codes of those cases.
//!
//! Each test reproduces what a hostile review found (see docs/reliability.md, "Hardening").

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, Env, KillOnDrop, Rng, exit};

/// A `--command` that writes `mib` MiB of random data, then sleeps `secs` (the window in which
/// the test acts), then writes a little more. The chunker holds back up to its largest chunk
/// (4 MiB) while it waits for more, and the reader hands chunks on in batches of 8 MiB: `mib`
/// must exceed both for packs to be written before the sleep.
fn slow_command(mib: usize, secs: u32) -> String {
    format!(
        "head -c {} /dev/urandom; sleep {secs}; head -c 65536 /dev/urandom",
        mib << 20
    )
}

fn create_args(command: &str) -> Vec<String> {
    [
        "snapshot",
        "create",
        "--json",
        "--command",
        command,
        "--stdin-name",
        "dump.sql",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(mut cmd: std::process::Command) -> KillOnDrop {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    KillOnDrop(Some(cmd.spawn().unwrap()))
}

/// Lock objects in the repository.
fn locks(env: &Env) -> usize {
    fs::read_dir(env.repo.join("locks"))
        .map(|d| d.flatten().count())
        .unwrap_or(0)
}

/// Waits until the running backup holds its lock and has made `packs` packs durable.
fn wait_for_backup(env: &Env, child: &mut Child, packs: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while locks(env) == 0 || env.packs().len() < packs {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the backup ended ({st}) before the test could act");
        }
        assert!(Instant::now() < deadline, "the backup never got going");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a spawned command and returns its outcome.
fn finish(mut guard: KillOnDrop, what: &str) -> harness::Out {
    let child = guard.0.take().unwrap();
    harness::wait_with_timeout(child, harness::DEFAULT_TIMEOUT, what)
}

/// A backup in one PID namespace and a prune in another (or from a `/proc` that hides the
/// backup's process): the prune must see a live lock and refuse, and the backup must end with
/// a snapshot that checks clean and restores. Before the fix the prune judged the lock stale
/// ("process is gone"), removed it, adopted and deleted the backup's packs, and the backup
/// wrote a snapshot whose data was gone.
fn prune_must_wait_for_a_backup_it_cannot_see(
    env: &Env,
    backup: std::process::Command,
    prune: std::process::Command,
    precondition: impl FnOnce(u32),
    run: &dyn Fn(&[&str]) -> harness::Out,
) {
    let mut guard = spawn(backup);
    let child = guard.0.as_mut().unwrap();
    let pid = child.id();
    wait_for_backup(env, child, 1);
    precondition(pid);
    let out = harness::run_command(prune, "prune beside the backup");
    out.expect_code(
        exit::LOCKED,
        "prune while a backup runs where its pid means nothing",
    )
    .stderr_has("snapshot create");
    assert_eq!(locks(env), 1, "the backup's lock must still be there");
    let created = finish(guard, "the backup");
    created.ok("the backup beside the refused prune");
    let id = created.json()["id"].as_str().unwrap().to_string();
    run(&["check", "--read-data"]).ok("check after the backup");
    let restored = run(&["snapshot", "restore", &id, "--stdout"]);
    restored.ok("restore after the backup");
    assert!(restored.stdout.len() > 20 << 20);
}

fn small_pack_env() -> Env {
    let env = Env::new();
    env.init_small_packs();
    env
}

#[test]
fn a_backup_in_another_pid_namespace_keeps_its_lock() {
    harness::require_root("the PID namespace test (unshare -p)");
    let env = small_pack_env();
    let backup = env.command_under(
        &["unshare", "-p", "-f", "--mount-proc"],
        &create_args(&slow_command(20, 4)),
    );
    let prune = env.command(&["prune"]);
    prune_must_wait_for_a_backup_it_cannot_see(&env, backup, prune, |_| {}, &|a| env.run(a));
}

#[test]
fn a_prune_in_another_pid_namespace_leaves_the_backup_alone() {
    harness::require_root("the PID namespace test (unshare -p)");
    let env = small_pack_env();
    let backup = env.command(&create_args(&slow_command(20, 4)));
    let prune = env.command_under(&["unshare", "-p", "-f", "--mount-proc"], &["prune"]);
    prune_must_wait_for_a_backup_it_cannot_see(&env, backup, prune, |_| {}, &|a| env.run(a));
}

/// `/proc` mounted with `hidepid=2` hides other users' processes: the backup runs as one user
/// and the prune as another of the same backup group (the repository is group-writable), in a
/// mount namespace whose `/proc` has `hidepid=2`. Both users are plain uids (setpriv needs no
/// account), so the test runs on any machine where it can be root.
#[test]
fn a_backup_hidden_by_hidepid_keeps_its_lock() {
    harness::require_root("the hidepid test (mount, setpriv)");
    let env = Env::new();
    harness::chmod(env.root(), 0o755);
    const BACKUP_UID: u32 = 64_101;
    const PRUNE_UID: u32 = 64_102;
    const GROUP: u32 = 64_100;
    fs::create_dir(&env.repo).unwrap();
    std::os::unix::fs::chown(&env.repo, Some(BACKUP_UID), Some(GROUP)).unwrap();
    harness::chmod(&env.repo, 0o770);
    let caches = [env.path("cache-backup"), env.path("cache-prune")];
    for (c, uid) in caches.iter().zip([BACKUP_UID, PRUNE_UID]) {
        fs::create_dir(c).unwrap();
        std::os::unix::fs::chown(c, Some(uid), Some(GROUP)).unwrap();
    }
    let ids = |uid: u32| {
        [
            format!("--reuid={uid}"),
            format!("--regid={GROUP}"),
            "--clear-groups".to_string(),
        ]
    };
    let as_backup_user = |args: &[&str]| {
        let ids = ids(BACKUP_UID);
        let mut prefix = vec!["setpriv"];
        prefix.extend(ids.iter().map(String::as_str));
        let mut c = env.command_under(&prefix, args);
        c.env("TRESOR_CACHE_DIR", &caches[0]);
        c
    };
    let run = |args: &[&str]| harness::run_command(as_backup_user(args), "as the user");
    let mut init = harness::init_args();
    init.extend(["--pack-size-mib", "1"]);
    run(&init).ok("init as the backup user");
    assert_eq!(
        fs::metadata(env.repo.join("config"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o660,
        "a group-writable repository gives its files to the group"
    );
    let args = create_args(&slow_command(20, 4));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let backup = as_backup_user(&args);
    let hide = format!(
        "mount -t proc -o hidepid=2 proc /proc && exec setpriv --reuid={PRUNE_UID} \
         --regid={GROUP} --clear-groups \"$0\" \"$@\""
    );
    let hidden = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        hide.as_str(),
    ];
    let mut prune = env.command_under(&hidden, &["prune"]);
    prune.env("TRESOR_CACHE_DIR", &caches[1]);
    let root_dir = env.root().to_path_buf();
    let precondition = |pid: u32| {
        // Where the prune runs, the backup's process is invisible.
        let visible = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", hide.as_str()])
            .args(["test", "-e", &format!("/proc/{pid}")])
            .current_dir(&root_dir)
            .status()
            .unwrap();
        assert_eq!(
            visible.code(),
            Some(1),
            "/proc/{pid} should be hidden by hidepid=2 from another user"
        );
    };
    prune_must_wait_for_a_backup_it_cannot_see(&env, backup, prune, precondition, &run);
}

/// The lock vanishes under a running backup (`repo unlock --remove-all` here; a prune that
/// misjudged it in the field): the backup stops with a clear error and writes no snapshot.
#[test]
fn a_backup_whose_lock_vanishes_writes_no_snapshot() {
    let env = small_pack_env();
    let mut guard = spawn(env.command(&create_args(&slow_command(20, 3))));
    wait_for_backup(&env, guard.0.as_mut().unwrap(), 1);
    env.run(&["repo", "unlock", "--remove-all"])
        .ok("unlock --remove-all");
    let out = finish(guard, "the backup that lost its lock");
    out.expect_code(exit::FATAL, "backup after its lock was removed")
        .stderr_has("lock of this operation was lost")
        .stderr_has("no snapshot was written");
    assert_eq!(
        env.snapshot_count(),
        0,
        "a snapshot was written without a lock"
    );
    assert_eq!(locks(&env), 0, "the lost lock must not be recreated");
    env.run(&["check"]).ok("check after the aborted backup");
}

/// Two snapshots, then one byte cut off the end of a pack: its header cannot be read. Every
/// snapshot restores before `repair index`, and still after it; `repair snapshots --forget`
/// forgets nothing; `repair index` names the pack.
#[test]
fn repair_index_keeps_the_entries_of_a_pack_with_a_damaged_header() {
    let env = Env::new();
    env.init();
    let a = Rng::new(1).text(3 << 20);
    let b = Rng::new(2).text(2 << 20);
    let sa = env.create_stdin("a.txt", &a)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sb = env.create_stdin("b.txt", &b)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let packs = env.packs();
    assert!(!packs.is_empty());
    let victim = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let len = fs::metadata(&victim).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert!(env.restore_stdout(&sa, None) == a, "a before repair");
    assert!(env.restore_stdout(&sb, None) == b, "b before repair");

    let out = env.run(&["repair", "index"]);
    out.expect_code(exit::DAMAGED, "repair index with a truncated pack");
    assert!(out.stdout_str().contains(&name), "{}", out.stdout_str());
    assert!(out.stdout_str().contains("kept"), "{}", out.stdout_str());
    assert!(env.restore_stdout(&sa, None) == a, "a after repair index");
    assert!(env.restore_stdout(&sb, None) == b, "b after repair index");

    let forgot = env.run(&["repair", "snapshots", "--forget", "--json"]);
    let r = forgot.json();
    assert_eq!(r["forgotten"], serde_json::json!([]), "{r}");
    assert_eq!(env.snapshot_count(), 2);
    // The damage is still reported (exit 13), but no snapshot is affected.
    let check = env.run(&["check", "--json"]);
    check.expect_code(exit::DAMAGED, "check with a pack whose header is cut");
    let r = check.json();
    assert_eq!(r["affected_snapshots"], serde_json::json!([]), "{r}");
    assert!(r["damaged_packs"].to_string().contains(&name), "{r}");
}

/// After a prune, an old index object put back (a replay) names packs that are gone: the next
/// backup of the same data must store it again, not "dedup" against nothing; `check` names the
/// stale index object; `repair index` clears it.
#[test]
fn a_replayed_index_object_does_not_poison_the_next_backup() {
    let env = Env::new();
    env.init();
    let a = Rng::new(11).bytes(3 << 20);
    let b = Rng::new(12).bytes(1 << 20);
    let sa = env.create_stdin("a.bin", &a)["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.create_stdin("b.bin", &b);
    let saved = env.path("saved-index");
    fs::create_dir(&saved).unwrap();
    for f in harness::all_files(&env.repo.join("index")) {
        fs::copy(&f, saved.join(f.file_name().unwrap())).unwrap();
    }
    env.run(&["snapshot", "forget", &sa]).ok("forget a");
    env.run(&["prune"]).ok("prune");
    let mut replayed = Vec::new();
    for f in harness::all_files(&saved) {
        let to = env.repo.join("index").join(f.file_name().unwrap());
        if !to.exists() {
            fs::copy(&f, &to).unwrap();
            replayed.push(f.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(!replayed.is_empty(), "the prune rewrote no index object");

    let again = env.create_stdin("a.bin", &a);
    assert!(
        again["bytes_added"].as_u64().unwrap() >= a.len() as u64,
        "the backup reused blobs of deleted packs: {again}"
    );
    let id = again["id"].as_str().unwrap();
    assert!(
        env.restore_stdout(id, None) == a,
        "the new snapshot does not restore"
    );

    let out = env.run(&["check", "--json"]);
    out.expect_code(exit::DAMAGED, "check with a replayed index object");
    let r = out.json();
    let problems = r["problems"].to_string();
    assert!(
        replayed.iter().any(|n| problems.contains(n.as_str())),
        "check must name the stale index object: {r}"
    );
    assert_eq!(r["affected_snapshots"], serde_json::json!([]), "{r}");
    env.run(&["repair", "index"]).ok("repair index");
    env.run(&["check", "--read-data"])
        .ok("check after repair index");
}

fn ids(env: &Env) -> Vec<String> {
    env.list()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// A snapshot object deleted outside tresor (or the newest ones rolled back): `check` exits 13
/// naming it, from this machine (it saw it) and from a fresh cache (a later snapshot lists
/// it); `prune` refuses and frees nothing until `--allow-missing-snapshots`. `forget` leaves a
/// record, so a snapshot it removed is never reported.
#[test]
fn a_snapshot_deleted_behind_tresors_back_is_reported_and_stops_prune() {
    let env = Env::new();
    env.init();
    for i in 0..4 {
        env.create_stdin("d.txt", &Rng::new(20 + i).text(1 << 20));
    }
    let all = ids(&env);
    // `forget` leaves a record: the forgotten snapshot is not "missing".
    env.run(&["snapshot", "forget", &all[0]])
        .ok("forget the first");
    assert_eq!(harness::all_files(&env.repo.join("forgotten")).len(), 1);
    env.run(&["check"]).ok("check after a forget");

    // Delete the second behind tresor's back.
    let victim = all[1].clone();
    fs::remove_file(env.repo.join("snapshots").join(&victim)).unwrap();
    let out = env.run(&["check", "--json"]);
    out.expect_code(exit::DAMAGED, "check after a snapshot was deleted");
    let r = out.json();
    assert_eq!(r["missing_snapshots"][0]["id"], victim.as_str(), "{r}");
    // A fresh cache knows it too: later snapshots list it.
    let fresh_cache = env.path("fresh-cache");
    let out = env.run_with(
        &["check", "--json"],
        &[("TRESOR_CACHE_DIR", fresh_cache.as_os_str())],
    );
    out.expect_code(exit::DAMAGED, "check from a fresh cache");
    assert!(out.json()["problems"].to_string().contains(&victim));

    // Roll back the newest: only the machine that saw it can tell, and it does.
    let newest = all[3].clone();
    fs::remove_file(env.repo.join("snapshots").join(&newest)).unwrap();
    let r = env.run(&["check", "--json"]).json();
    let missing: Vec<&str> = r["missing_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(missing.contains(&newest.as_str()), "{r}");

    let before = env.stored_bytes("data");
    let out = env.run(&["prune"]);
    out.expect_code(exit::DAMAGED, "prune with missing snapshots")
        .stderr_has("--allow-missing-snapshots")
        .stderr_has(&victim[..8]);
    assert_eq!(
        env.stored_bytes("data"),
        before,
        "the refused prune freed data"
    );
    env.run(&["prune", "--allow-missing-snapshots"])
        .ok("prune --allow-missing-snapshots");
    assert!(env.stored_bytes("data") < before, "nothing was freed");
    env.run(&["check", "--read-data"])
        .ok("check once the missing snapshots are recorded");
    assert_eq!(ids(&env), [all[2].clone()]);
}

/// A key file as a planted one would look: valid JSON, a huge KDF, a far-future date.
fn planted_key(memory_kib: u32, iterations: u32, salt: u8) -> (String, Vec<u8>) {
    let json = format!(
        r#"{{"version":1,"kdf":"argon2id","memory_kib":{memory_kib},"iterations":{iterations},"parallelism":1,"salt":"{}","created":"2099-01-01T00:00:00+00:00","host":"planted","master":"00"}}"#,
        hex::encode([salt; 16])
    );
    let bytes = json.into_bytes();
    (blake3::hash(&bytes).to_hex().to_string(), bytes)
}

/// Planted key files cost a bounded amount: the cheapest (the real one) is tried first, the
/// total KDF work is capped and what was not tried is named; a stray file in `keys/` does not
/// turn a wrong password (12) into a damaged repository (13).
#[test]
fn planted_key_files_are_bounded_and_stray_files_do_not_hide_a_wrong_password() {
    let env = Env::new();
    env.init();
    env.create_stdin("x", b"some data");
    let keys = env.repo.join("keys");
    fs::write(keys.join("README"), b"not a key file\n").unwrap();
    let other_cache = env.path("other-cache");
    let wrong = |env: &Env| {
        env.run_with(
            &["snapshot", "list"],
            &[
                ("TRESOR_PASSWORD", OsStr::new("not the password")),
                ("TRESOR_CACHE_DIR", other_cache.as_os_str()),
            ],
        )
    };
    wrong(&env)
        .expect_code(exit::WRONG_PASSWORD, "wrong password beside a stray file")
        .stderr_has("README");
    // The right password still opens, and says what it ignored.
    env.run(&["snapshot", "list"])
        .ok("list beside a stray file")
        .stderr_has("README");

    // Three planted key files of 3 GiB·passes each: together over the cap of one open.
    let mut planted = Vec::new();
    for i in 0..3 {
        let (name, bytes) = planted_key(1 << 20, 3, i);
        fs::write(keys.join(&name), bytes).unwrap();
        planted.push(name);
    }
    let fresh_cache = env.path("fresh-cache");
    let out = env.run_with(
        &["snapshot", "list", "--json"],
        &[("TRESOR_CACHE_DIR", fresh_cache.as_os_str())],
    );
    out.ok("the right password beside planted key files, from a fresh cache");
    let out = wrong(&env);
    out.expect_code(
        exit::WRONG_PASSWORD,
        "wrong password beside planted key files",
    )
    .stderr_has("1 key files not tried")
    .stderr_has("--key-hint");
    assert!(
        planted.iter().any(|p| out.stderr.contains(&p[..12])),
        "the skipped key file is not named: {}",
        out.stderr
    );
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Everything a repository holds is private to its owner whatever the umask (the key file
/// was 0644: any local user could copy it and guess the password offline); `--group-readable`
/// shares it with the group, read-only.
#[test]
fn repository_files_are_private_unless_the_group_is_asked_for() {
    let env = Env::new();
    env.init();
    env.create_stdin("x", &Rng::new(5).bytes(2 << 20));
    env.run(&["snapshot", "forget", "latest"]).ok("forget");
    let walk = |root: &Path| -> Vec<PathBuf> {
        let mut v = vec![root.to_path_buf()];
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
                v.push(e.path());
            }
        }
        v
    };
    for p in walk(&env.repo) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
    assert_eq!(mode(&env.cache), 0o700, "the cache names every blob");

    let shared = Env::new();
    let mut init = harness::init_args();
    init.push("--group-readable");
    shared.run(&init).ok("init --group-readable");
    shared.create_stdin("x", b"shared");
    for p in walk(&shared.repo) {
        let want = if p.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

/// `repo init` refuses KDF settings that no reader accepts, and creates nothing.
#[test]
fn init_refuses_kdf_settings_the_reader_would_refuse() {
    for (flag, value) in [
        ("--kdf-iterations", "25"),
        ("--kdf-iterations", "0"),
        ("--kdf-memory-kib", "4"),
        ("--kdf-memory-kib", "4194304"),
    ] {
        let env = Env::new();
        let out = env.run(&["repo", "init", flag, value]);
        out.expect_code(exit::FATAL, &format!("init {flag} {value}"))
            .stderr_has("KDF parameters");
        assert!(
            !env.repo.exists(),
            "{flag} {value}: a repository was created"
        );
    }
}

/// A repository on read-only media (here a read-only bind mount) restores, checks and mounts
/// without a lock, with a note; `--no-lock` does the same on purpose and refuses writers.
#[test]
fn a_read_only_repository_is_read_without_a_lock() {
    harness::require_root("the read-only bind mount");
    let env = Env::new();
    env.init();
    let data = Rng::new(7).text(3 << 20);
    env.create_stdin("dump.sql", &data);
    let ro = env.path("ro");
    fs::create_dir(&ro).unwrap();
    let ok = harness::succeeds(
        "mount",
        &[OsStr::new("--bind"), env.repo.as_os_str(), ro.as_os_str()],
    );
    assert!(ok, "mount --bind");
    let _unmount = harness::Unmount(ro.clone());
    assert!(
        harness::succeeds(
            "mount",
            &[
                OsStr::new("-o"),
                OsStr::new("remount,bind,ro"),
                ro.as_os_str()
            ]
        ),
        "remount read-only"
    );
    let run_ro = |args: &[&str]| env.run_with(args, &[("TRESOR_REPO", ro.as_os_str())]);
    let out = run_ro(&["snapshot", "restore", "latest", "--stdout"]);
    out.ok("restore --stdout from a read-only repository")
        .stderr_has("without a lock");
    assert!(
        out.stdout == data,
        "restore gave {} bytes",
        out.stdout.len()
    );
    let target = env.path("restored");
    run_ro(&[
        "snapshot",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
    .ok("restore to a directory");
    assert!(fs::read(target.join("dump.sql")).unwrap() == data);
    run_ro(&["check", "--read-data"]).ok("check --read-data, read-only");
    run_ro(&["snapshot", "list"]).ok("list, read-only");
    let out = run_ro(&["snapshot", "create", "--stdin"]);
    assert_ne!(
        out.code,
        exit::OK,
        "a backup into a read-only repository succeeded"
    );

    // --no-lock on purpose, on the writable one: no note, no lock; writers refuse it.
    let out = env.run(&["--no-lock", "snapshot", "restore", "latest", "--stdout"]);
    out.ok("restore --no-lock");
    assert!(out.stdout == data);
    assert!(!out.stderr.contains("without a lock"), "{}", out.stderr);
    env.run(&["--no-lock", "prune"])
        .expect_code(exit::FATAL, "prune --no-lock")
        .stderr_has("reading commands only");
}

/// SIGINT and SIGTERM stop a backup cleanly: exit 130 / 143 (an exit, not a death by the
/// signal), no snapshot, no lock, no temporary file, and the dump command ended with it.
#[test]
fn a_signal_stops_a_backup_cleanly() {
    let env = small_pack_env();
    for (signal, name, code) in [(2, "SIGINT", 130), (15, "SIGTERM", 143)] {
        let marker = env.path(format!("still-running-{signal}"));
        let cmd = format!(
            "head -c 20971520 /dev/urandom; sleep 5; touch {}; head -c 1000 /dev/urandom",
            marker.display()
        );
        let mut guard = spawn(env.command(&create_args(&cmd)));
        let child = guard.0.as_mut().unwrap();
        wait_for_backup(&env, child, 1);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
            rustix::process::Signal::from_named_raw(signal).unwrap(),
        )
        .unwrap();
        let out = finish(guard, name);
        assert_eq!(
            (out.code, out.signal),
            (code, None),
            "{name}: tresor should exit {code} (not die of the signal): {out:?}"
        );
        assert!(out.stderr.contains("interrupted by"), "{}", out.stderr);
        assert_eq!(env.snapshot_count(), 0, "{name}: a snapshot was written");
        assert_eq!(locks(&env), 0, "{name}: the lock was left behind");
        assert!(
            harness::temporaries(&env.repo).is_empty(),
            "{name}: temporary files left: {:?}",
            harness::temporaries(&env.repo)
        );
        thread::sleep(Duration::from_secs(6));
        assert!(!marker.exists(), "{name}: the dump command kept running");
        env.run(&["check"]).ok("check after the interrupted backup");
    }
}

/// What a kill -9 leaves (a `.tmp-` file of up to a pack) is removed by the next backup and
/// by prune, once it is older than a minute; a fresh one (a write in flight) is left alone.
#[test]
fn stale_temporary_files_are_removed_by_the_next_run() {
    let env = Env::new();
    env.init();
    let old = filetime::FileTime::from_unix_time(chrono::Utc::now().timestamp() - 3600, 0);
    let plant = |rel: &str, size: usize, stale: bool| -> PathBuf {
        let p = env.repo.join(rel);
        fs::write(&p, vec![7u8; size]).unwrap();
        if stale {
            filetime::set_file_mtime(&p, old).unwrap();
        }
        p
    };
    let pack_tmp = plant("data/ab/.tmp-ab00-0123456789ab", 8 << 20, true);
    let index_tmp = plant("index/.tmp-cd00-0123456789ab", 1000, true);
    let fresh = plant("data/cd/.tmp-cd00-ba9876543210", 1000, false);
    let out = env.run(&["snapshot", "create", "--stdin", "--stdin-name", "x"]);
    out.ok("backup after a kill -9")
        .stderr_has(".tmp-ab00-0123456789ab");
    assert!(!pack_tmp.exists() && !index_tmp.exists());
    assert!(
        fresh.exists(),
        "a fresh temporary file may be a write in flight"
    );
    let again = plant("snapshots/.tmp-ef00-0123456789ab", 100, true);
    env.run(&["prune"]).ok("prune").stderr_has(".tmp-ef00");
    assert!(!again.exists());
}

/// Exit codes and messages: a prune refusing a damaged snapshot is damage (13); an OS error is
/// said once; `check` beside a running backup says its packs belong to it.
#[test]
fn messages_and_exit_codes_say_what_happened() {
    let env = Env::new();
    env.init();
    env.create_stdin("x", b"one");
    let id = env.create_stdin("y", b"two")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = env.repo.join("snapshots").join(&id);
    let mut bytes = fs::read(&snap).unwrap();
    bytes[40] ^= 1;
    fs::write(&snap, bytes).unwrap();
    env.run(&["prune"])
        .expect_code(exit::DAMAGED, "prune with a damaged snapshot")
        .stderr_has(&id);

    // The parent of the repository is a file: "Not a directory", said once.
    let file = env.path("plain-file");
    fs::write(&file, b"").unwrap();
    let below_a_file = file.join("repo");
    let out = env.run_with(
        &harness::init_args(),
        &[("TRESOR_REPO", below_a_file.as_os_str())],
    );
    assert_ne!(out.code, exit::OK);
    assert_eq!(
        out.stderr.matches("Not a directory").count(),
        1,
        "{}",
        out.stderr
    );

    // A backup between its first packs and its first index object: check knows whose they are.
    let busy = small_pack_env();
    let mut guard = spawn(busy.command(&create_args(&slow_command(20, 4))));
    wait_for_backup(&busy, guard.0.as_mut().unwrap(), 1);
    let out = busy.run(&["check"]);
    out.ok("check beside a running backup");
    assert!(
        out.stdout_str()
            .contains("belong to a backup that is running now"),
        "{}",
        out.stdout_str()
    );
    finish(guard, "the backup").ok("the backup beside check");
}

fn key_json(env: &Env, args: &[&str]) -> Value {
    let mut a = vec!["key"];
    a.extend(args);
    a.push("--json");
    env.run(&a).ok(&format!("key {args:?}")).json()
}

/// `key list/add/remove/passwd`: another password opens the same repository; the last key and
/// the one in use are not removed without reason; `passwd` retires the old password.
#[test]
fn key_management() {
    let env = Env::with_password_file();
    env.init();
    let data = Rng::new(9).text(1 << 20);
    env.create_stdin("d.sql", &data);
    let keys = key_json(&env, &["list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["in_use"], true);
    let first = keys[0]["id"].as_str().unwrap().to_string();
    assert_eq!(keys[0]["iterations"], 1, "{keys}");

    // The only key cannot go, not even with --force.
    env.run(&["key", "remove", &first[..8], "--force"])
        .expect_code(exit::FATAL, "remove the only key")
        .stderr_has("only key");

    let other_pw = env.path("other.txt");
    let new_pw = env.path("new.txt");
    fs::write(&other_pw, "second password\n").unwrap();
    let added = key_json(
        &env,
        &[
            "add",
            "--new-password-file",
            other_pw.to_str().unwrap(),
            "--host",
            "offsite-admin",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
        ],
    );
    assert_eq!(added["host"], "offsite-admin");
    let second = added["id"].as_str().unwrap().to_string();
    let as_other =
        |args: &[&str]| env.run_with(args, &[("TRESOR_PASSWORD_FILE", other_pw.as_os_str())]);
    let as_new =
        |args: &[&str]| env.run_with(args, &[("TRESOR_PASSWORD_FILE", new_pw.as_os_str())]);
    let out = as_other(&["snapshot", "restore", "latest", "--stdout"]);
    out.ok("restore with the second password");
    assert!(out.stdout == data);
    let listed = as_other(&["key", "list", "--json"]).json();
    let in_use: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["in_use"] == true)
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(in_use, [second.as_str()], "{listed}");

    // The key in use is not removed without --force.
    env.run(&["key", "remove", &first[..10]])
        .expect_code(exit::FATAL, "remove the key in use")
        .stderr_has("--force");

    // passwd: the new password works, the old one no longer does.
    fs::write(&new_pw, "third password\n").unwrap();
    let changed = key_json(
        &env,
        &["passwd", "--new-password-file", new_pw.to_str().unwrap()],
    );
    assert_eq!(changed["removed"], first.as_str(), "{changed}");
    env.run(&["snapshot", "list"])
        .expect_code(exit::WRONG_PASSWORD, "the old password after passwd");
    let out = as_new(&["snapshot", "restore", "latest", "--stdout"]);
    out.ok("restore with the new password");
    assert!(out.stdout == data);
    // Remove the second key with the new password: one key left, which opens.
    as_new(&["key", "remove", &second]).ok("remove the second key");
    as_other(&["snapshot", "list"]).expect_code(exit::WRONG_PASSWORD, "the removed password");
    assert_eq!(harness::all_files(&env.repo.join("keys")).len(), 1);
}
