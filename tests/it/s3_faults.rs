//! The S3 backend under faults, crashes and concurrency (issue 15), against the real test
//! server, through the fault proxy of tests/harness/proxy.rs where faults are wanted.
//!
//! - Backup, restore, `check --read-data` and `forget --prune` with 5 % of the requests failing
//!   (resets before forwarding, lost replies, 500, 503, truncated replies) and 5 % delayed: each
//!   command succeeds, or fails with a non-zero exit and a message naming the S3 location —
//!   never a panic, never a false damage report, never a snapshot from a failed backup, never a
//!   partial restore reported as success. Afterwards, without faults, `check --read-data`
//!   passes and every kept snapshot restores byte-exact.
//! - The server goes away in the middle of a backup: non-zero exit, no snapshot; once it is
//!   back the next run completes and checks clean.
//! - A backup to S3 killed with SIGKILL once packs are stored: the next run adopts them.
//! - Four `--host`s back up into one prefix at once while a fifth process runs
//!   `forget --keep-last 1 --prune` in a loop: every kept snapshot restores byte-exact.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tresor::backend::s3::{S3Backend, S3Location};
use tresor::backend::{Backend, ObjectKind};

use crate::harness::proxy::{Faults, Proxy};
use crate::harness::{self, Env, KillOnDrop, Out, Rng, exit, s3};
use crate::s3::command;

/// A repository prefix, reachable directly and through a proxy.
struct Repo {
    prefix: String,
}

impl Repo {
    fn new(what: &str) -> Repo {
        Repo {
            prefix: format!("{what}-{}", harness::random_hex(6)),
        }
    }

    /// `s3:` location through `port` (the server's or a proxy's).
    fn at(&self, port: u16) -> String {
        format!("s3:http://127.0.0.1:{port}/{}/{}", s3::BUCKET, self.prefix)
    }

    /// A backend straight to the server (no faults), for looking at what is stored.
    fn direct(&self) -> S3Backend {
        let server = s3::server().unwrap();
        let loc = S3Location::parse(&self.at(server.port)["s3:".len()..]).unwrap();
        S3Backend::with_settings(loc, &server.settings()).unwrap()
    }
}

/// Runs `tresor ARGS` against `repo` with the server's credentials, fed `stdin`.
fn run(env: &Env, repo: &str, args: &[&str], stdin: &[u8]) -> Out {
    harness::run_command_input(
        command(env, repo, args),
        harness::Input::Bytes(stdin.to_vec()),
        Duration::from_secs(300),
        &format!("tresor {}", args.join(" ")),
    )
}

/// `repo init` with 1 MiB packs.
fn init(env: &Env, repo: &str) {
    let mut args = harness::init_args();
    args.extend(["--pack-size-mib", "1"]);
    run(env, repo, &args, b"").ok("repo init on s3");
}

/// A failure is clean: a non-zero exit that is no panic and no damage report, and a message
/// that names the repository's S3 location.
#[track_caller]
fn assert_clean_failure(out: &Out, what: &str) {
    assert_ne!(out.code, exit::OK, "{what}");
    assert!(
        out.code != 101 && !out.stderr.contains("panicked"),
        "{what}: a panic: {}",
        out.stderr
    );
    assert_ne!(
        out.code,
        exit::DAMAGED,
        "{what}: injected faults were reported as damage: {}{}",
        out.stderr,
        out.stdout_str()
    );
    assert!(
        out.stderr.contains("s3:http://"),
        "{what}: the message does not name the S3 location: {}",
        out.stderr
    );
}

/// The snapshot ids stored under the prefix (straight from the server).
fn snapshot_ids(repo: &Repo) -> HashSet<String> {
    repo.direct()
        .list(ObjectKind::Snapshot)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// How the commands run under faults ended: [succeeded, failed cleanly].
type Outcomes = HashMap<&'static str, [u32; 2]>;

/// Runs a command under faults until it succeeds (at most `tries` times); every failure must
/// be clean and pass `after_failure`. Returns the successful run.
fn until_ok(
    outcomes: &mut Outcomes,
    what: &'static str,
    tries: u32,
    mut attempt: impl FnMut() -> Out,
    mut after_failure: impl FnMut(&Out),
) -> Out {
    for i in 1..=tries {
        let out = attempt();
        let slot = outcomes.entry(what).or_default();
        if out.code == exit::OK {
            slot[0] += 1;
            return out;
        }
        slot[1] += 1;
        assert_clean_failure(&out, &format!("{what} (attempt {i})"));
        eprintln!(
            "s3 faults: {what} attempt {i} failed cleanly: {}",
            out.stderr.trim()
        );
        after_failure(&out);
    }
    panic!("{what} failed {tries} times under faults");
}

#[test]
fn s3_commands_under_five_percent_faults() {
    let Some(server) = s3::server() else { return };
    let rounds = harness::env_u64("TRESOR_S3_FAULT_ROUNDS", 1);
    let seed = harness::env_u64(
        "TRESOR_S3_FAULT_SEED",
        u64::from_str_radix(&harness::random_hex(4), 16).unwrap(),
    );
    eprintln!("s3 faults: {rounds} rounds, seed {seed} (TRESOR_S3_FAULT_SEED replays them)");
    let proxy = Proxy::start(server.port, seed);
    let mut outcomes = Outcomes::new();
    for round in 0..rounds {
        fault_round(&proxy, seed.wrapping_add(round), 50, &mut outcomes);
    }
    let tally = proxy.tally();
    report("5 %", &tally, &outcomes);
    assert!(
        tally.failures() > 0 && tally.delayed > 0,
        "no fault was injected: {tally}"
    );
}

/// The same at 40 % faults, where some commands run out of retries: each of those must fail
/// cleanly (and a backup leave no snapshot); the commands are repeated until they succeed, and
/// the repository is whole afterwards. Rounds go on (up to 6) until at least one command has
/// failed; retries may absorb every fault of 6 rounds (seldom, but it happened), so then one
/// round at 55 % faults follows, where commands nearly always run out of retries (and each
/// command still succeeds within its 10 attempts). The test fails if no
/// command failed: else it proved nothing about failures.
#[test]
fn s3_commands_under_forty_percent_faults_fail_cleanly() {
    let Some(server) = s3::server() else { return };
    let rounds = harness::env_u64("TRESOR_S3_HARSH_ROUNDS", 1);
    let seed = harness::env_u64(
        "TRESOR_S3_FAULT_SEED",
        u64::from_str_radix(&harness::random_hex(4), 16).unwrap(),
    );
    eprintln!("s3 harsh faults: {rounds} rounds, seed {seed} (TRESOR_S3_FAULT_SEED replays them)");
    let proxy = Proxy::start(server.port, seed);
    let mut outcomes = Outcomes::new();
    let failed = |o: &Outcomes| o.values().map(|o| o[1]).sum::<u32>();
    // Rounds go on (up to 6) until a command has failed.
    let mut round = 0;
    while round < rounds || (failed(&outcomes) == 0 && round < 6) {
        fault_round(&proxy, seed.wrapping_add(round), 400, &mut outcomes);
        round += 1;
    }
    if failed(&outcomes) == 0 {
        fault_round(&proxy, seed.wrapping_add(round), 550, &mut outcomes);
        round += 1;
    }
    let tally = proxy.tally();
    report(&format!("40 %, {round} rounds"), &tally, &outcomes);
    assert!(
        failed(&outcomes) > 0,
        "no command failed at 40 % faults in {round} rounds: {outcomes:?}"
    );
}

fn report(what: &str, tally: &crate::harness::proxy::Tally, outcomes: &Outcomes) {
    eprintln!("s3 faults ({what}): {tally}");
    let mut lines: Vec<_> = outcomes.iter().collect();
    lines.sort();
    for (cmd, [ok, failed]) in lines {
        eprintln!("s3 faults ({what}): {cmd}: {ok} succeeded, {failed} failed cleanly");
    }
}

fn fault_round(proxy: &Proxy, seed: u64, permille: u32, outcomes: &mut Outcomes) {
    let server = s3::server().unwrap();
    let env = Env::new();
    let r = Repo::new("faults");
    let (direct, faulty) = (r.at(server.port), r.at(proxy.port));
    proxy.set_faults(Faults::none());
    init(&env, &faulty);
    proxy.set_faults(Faults::spread(permille));

    let src = env.path("src");
    let mut rng = Rng::new(seed);
    let files = [
        ("a.txt", rng.text(3000)),
        ("sub/b.bin", rng.bytes(300_000)),
        ("sub/deeper/c.bin", rng.bytes(3 << 20)),
        ("sub/d.txt", rng.text(2 << 20)),
        ("empty", Vec::new()),
    ];
    for (rel, data) in &files {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    let src_s = src.to_str().unwrap().to_string();
    let mut stream = rng.text(3 << 20);
    stream.extend(rng.bytes(3 << 20));

    // Backups: a failed one leaves no snapshot.
    let backup = |outcomes: &mut Outcomes, args: &[&str], input: &[u8], what: &'static str| {
        let before = snapshot_ids(&r);
        let out = until_ok(
            outcomes,
            what,
            10,
            || run(&env, &faulty, args, input),
            |_| {
                assert_eq!(
                    snapshot_ids(&r),
                    before,
                    "{what}: a failed backup left a snapshot"
                );
            },
        );
        let id = out.json()["id"].as_str().unwrap().to_string();
        assert!(snapshot_ids(&r).contains(&id), "{what}: {id} is not stored");
        id
    };
    let tree = backup(
        outcomes,
        &["snapshot", "create", "--json", &src_s],
        b"",
        "backup of a tree",
    );
    let dump = backup(
        outcomes,
        &[
            "snapshot",
            "create",
            "--json",
            "--stdin",
            "--stdin-name",
            "dump.sql",
        ],
        &stream,
        "backup of a stream",
    );

    // Restores: a success is byte-exact.
    let target = env.path("target");
    until_ok(
        outcomes,
        "restore of a tree",
        10,
        || {
            let _ = fs::remove_dir_all(&target);
            run(
                &env,
                &faulty,
                &[
                    "snapshot",
                    "restore",
                    &tree,
                    "--target",
                    target.to_str().unwrap(),
                ],
                b"",
            )
        },
        |_| {},
    );
    for (rel, data) in &files {
        assert!(
            fs::read(harness::restored_src_file(&target, rel)).unwrap() == *data,
            "{rel} restored byte-exact under faults"
        );
    }
    let out = until_ok(
        outcomes,
        "restore of a stream",
        10,
        || {
            run(
                &env,
                &faulty,
                &["snapshot", "restore", &dump, "--stdout"],
                b"",
            )
        },
        |_| {},
    );
    assert!(
        out.stdout == stream,
        "the stream restored byte-exact under faults"
    );

    until_ok(
        outcomes,
        "check --read-data",
        10,
        || run(&env, &faulty, &["check", "--read-data"], b""),
        |_| {},
    );

    // A second tree backup (one file changed), then forget the first tree and prune.
    fs::write(src.join("a.txt"), b"changed").unwrap();
    let tree2 = backup(
        outcomes,
        &["snapshot", "create", "--json", &src_s],
        b"",
        "backup of a tree",
    );
    until_ok(
        outcomes,
        "forget --keep-last 1 --prune",
        10,
        || {
            run(
                &env,
                &faulty,
                &[
                    "--retry-lock",
                    "30s",
                    "snapshot",
                    "forget",
                    "--keep-last",
                    "1",
                    "--prune",
                ],
                b"",
            )
        },
        |_| {},
    );
    let mut want: Vec<String> = vec![dump.clone(), tree2.clone()];
    want.sort();
    let mut have: Vec<String> = snapshot_ids(&r).into_iter().collect();
    have.sort();
    assert_eq!(have, want, "forget kept the latest of each group");

    // Without faults: everything is there.
    proxy.set_faults(Faults::none());
    run(&env, &direct, &["check", "--read-data"], b"").ok("check --read-data without faults");
    let out = run(
        &env,
        &direct,
        &["snapshot", "restore", &dump, "--stdout"],
        b"",
    );
    out.ok("restore of the stream without faults");
    assert!(out.stdout == stream, "the stream survives faults and prune");
    let target = env.path("target2");
    run(
        &env,
        &direct,
        &[
            "snapshot",
            "restore",
            &tree2,
            "--target",
            target.to_str().unwrap(),
        ],
        b"",
    )
    .ok("restore of the kept tree without faults");
    assert_eq!(
        fs::read(harness::restored_src_file(&target, "a.txt")).unwrap(),
        b"changed"
    );
    for (rel, data) in &files[1..] {
        assert!(
            fs::read(harness::restored_src_file(&target, rel)).unwrap() == *data,
            "{rel} restored byte-exact after faults and prune"
        );
    }
}

/// Packs under the prefix, straight from the server.
fn pack_names(r: &Repo) -> HashSet<String> {
    r.direct()
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// Starts `snapshot create --stdin` against `repo`, fed `data` by a thread that then keeps
/// stdin open until `hold` is lowered (so the run cannot finish on its own while it is up).
fn spawn_stream_backup(
    env: &Env,
    repo: &str,
    data: Arc<Vec<u8>>,
    hold: Arc<AtomicBool>,
) -> (KillOnDrop, thread::JoinHandle<()>) {
    let mut cmd = command(
        env,
        repo,
        &[
            "snapshot",
            "create",
            "--json",
            "--stdin",
            "--stdin-name",
            "dump.sql",
        ],
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        if stdin.write_all(&data).is_err() {
            return;
        }
        while hold.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
    });
    (KillOnDrop(Some(child)), feeder)
}

/// Waits until at least `n` packs not in `before` are stored (the process still running).
fn wait_for_new_packs(r: &Repo, before: &HashSet<String>, n: usize, guard: &mut KillOnDrop) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let new = pack_names(r).difference(before).count();
        if new >= n {
            return;
        }
        if let Some(st) = guard.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("the backup ended ({st}) before {n} packs were stored");
        }
        if Instant::now() > deadline {
            let mut child = guard.0.take().unwrap();
            let _ = child.kill();
            let out = harness::wait_with_timeout(child, Duration::from_secs(10), "the backup");
            panic!(
                "no {n} new packs after 120 s (found {new}); the backup said: {}",
                out.stderr
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn s3_server_gone_mid_backup_then_back() {
    let Some(server) = s3::server() else { return };
    let proxy = Proxy::start(server.port, 1);
    let env = Env::new();
    let r = Repo::new("away");
    let (direct, faulty) = (r.at(server.port), r.at(proxy.port));
    init(&env, &faulty);
    let data = Arc::new(Rng::new(15).bytes(24 << 20));

    let hold = Arc::new(AtomicBool::new(true));
    let (mut guard, feeder) =
        spawn_stream_backup(&env, &faulty, Arc::clone(&data), Arc::clone(&hold));
    wait_for_new_packs(&r, &HashSet::new(), 2, &mut guard);
    proxy.set_down(true);
    hold.store(false, Ordering::SeqCst);
    feeder.join().unwrap();
    let child = guard.0.take().unwrap();
    let out = harness::wait_with_timeout(child, Duration::from_secs(300), "backup, server gone");
    let tally = proxy.tally();
    eprintln!(
        "s3 away: exit {}, {tally}; stderr: {}",
        out.code,
        out.stderr.trim()
    );
    assert!(tally.refused > 0, "nothing was refused: {tally}");
    assert_clean_failure(&out, "backup while the server is gone");
    // Every attempt was made: a dropped pooled connection ("connection was not ready") was
    // once taken for a permanent error and the retries stopped early.
    out.stderr_has("times with a transient error; gave up");
    assert!(
        snapshot_ids(&r).is_empty(),
        "a backup that lost its server left a snapshot"
    );

    proxy.set_down(false);
    let out = run(
        &env,
        &faulty,
        &[
            "snapshot",
            "create",
            "--json",
            "--stdin",
            "--stdin-name",
            "dump.sql",
        ],
        &data,
    );
    out.ok("backup once the server is back");
    let id = out.json()["id"].as_str().unwrap().to_string();
    eprintln!("s3 away: the next run: {}", out.stdout_str().trim());
    run(&env, &direct, &["check", "--read-data"], b"").ok("check --read-data after the outage");
    let got = run(
        &env,
        &direct,
        &["snapshot", "restore", &id, "--stdout"],
        b"",
    );
    got.ok("restore after the outage");
    assert!(got.stdout == *data, "the stream restores byte-exact");
}

#[test]
fn s3_backup_killed_then_packs_adopted() {
    let Some(server) = s3::server() else { return };
    let env = Env::new();
    let r = Repo::new("killed");
    let repo = r.at(server.port);
    init(&env, &repo);
    let data = Arc::new(Rng::new(16).bytes(32 << 20));

    let hold = Arc::new(AtomicBool::new(true));
    let (mut guard, feeder) =
        spawn_stream_backup(&env, &repo, Arc::clone(&data), Arc::clone(&hold));
    wait_for_new_packs(&r, &HashSet::new(), 3, &mut guard);
    let child = guard.0.as_mut().unwrap();
    child.kill().unwrap();
    let st = child.wait().unwrap();
    guard.0 = None;
    hold.store(false, Ordering::SeqCst);
    feeder.join().unwrap();
    assert_eq!(harness::code_of(&st), 128 + 9, "killed by SIGKILL: {st}");
    let stored = pack_names(&r);
    assert!(
        snapshot_ids(&r).is_empty(),
        "a killed backup left a snapshot"
    );

    let out = run(
        &env,
        &repo,
        &[
            "snapshot",
            "create",
            "--json",
            "--stdin",
            "--stdin-name",
            "dump.sql",
        ],
        &data,
    );
    out.ok("backup after the kill");
    let j = out.json();
    eprintln!(
        "s3 kill: {} packs stored before the kill; the next run adopted {} and added {} B",
        stored.len(),
        j["adopted_packs"],
        j["bytes_added"]
    );
    let adopted = j["adopted_packs"].as_u64().unwrap();
    assert!(
        adopted > 0,
        "the packs stored before the kill were not adopted: {j}"
    );
    // Every pack the killed run stored is still there and indexed (check names unindexed ones).
    assert!(
        pack_names(&r).is_superset(&stored),
        "a stored pack vanished"
    );
    let out = run(&env, &repo, &["check", "--read-data", "--json"], b"");
    out.ok("check --read-data after the kill");
    let report = out.json();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["unindexed_packs"],
        serde_json::json!([]),
        "packs of the killed run stayed unindexed: {report}"
    );
    let id = j["id"].as_str().unwrap();
    let got = run(&env, &repo, &["snapshot", "restore", id, "--stdout"], b"");
    got.ok("restore after the kill");
    assert!(got.stdout == *data, "the stream restores byte-exact");
}

/// Another machine's view of `env`'s repository: its own directory and cache, the password.
fn sibling(env: &Env) -> Env {
    let mut e = Env::new();
    e.password = env.password.clone();
    e.pass = harness::Password::Env(env.password.clone());
    e
}

/// Four hosts back up into one prefix at once (`--retry-lock`: they wait out the pruner),
/// each at least [`ROUNDS`] times and on until the pruner has run twice between their backups
/// (at most 12 rounds), giving the pruner a gap after each round; a fifth process runs `forget --keep-last 1 --prune` in a loop meanwhile
/// (waiting up to a minute for the backups' locks). Every host's latest snapshot restores
/// byte-exact, and `check --read-data` passes.
#[test]
fn s3_four_hosts_back_up_while_a_fifth_prunes() {
    const ROUNDS: usize = 3;
    let Some(server) = s3::server() else { return };
    let env = Env::new();
    let r = Repo::new("hosts");
    let repo = r.at(server.port);
    init(&env, &repo);
    // A part common to every backup, so the hosts race to store the same chunks.
    let common = Rng::new(17).bytes(2 << 20);

    let done = Arc::new(AtomicBool::new(false));
    let pruned = Arc::new(AtomicU64::new(0));
    let pruner = {
        let (repo, done, pruned) = (repo.clone(), Arc::clone(&done), Arc::clone(&pruned));
        // Its own cache, as on a machine of its own.
        let env = sibling(&env);
        thread::spawn(move || {
            let mut locked_out = 0u32;
            while !done.load(Ordering::SeqCst) {
                let out = run(
                    &env,
                    &repo,
                    &[
                        "--retry-lock",
                        "1m",
                        "snapshot",
                        "forget",
                        "--keep-last",
                        "1",
                        "--prune",
                    ],
                    b"",
                );
                match out.code {
                    exit::OK => {
                        pruned.fetch_add(1, Ordering::SeqCst);
                    }
                    exit::LOCKED => locked_out += 1,
                    _ => panic!("forget --prune failed: {}", out.stderr),
                }
            }
            locked_out
        })
    };
    let hosts: Vec<_> = (0..4)
        .map(|h| {
            let (repo, common, pruned) = (repo.clone(), common.clone(), Arc::clone(&pruned));
            let env = sibling(&env);
            thread::spawn(move || {
                let host = format!("host{h}");
                let mut last = None;
                let mut round = 0;
                while round < ROUNDS || (pruned.load(Ordering::SeqCst) < 2 && round < 12) {
                    let mut data = Rng::new(100 + (h * 100 + round) as u64).bytes(1 << 20);
                    data.extend_from_slice(&common);
                    let out = run(
                        &env,
                        &repo,
                        &[
                            "--retry-lock",
                            "5m",
                            "snapshot",
                            "create",
                            "--json",
                            "--host",
                            &host,
                            "--stdin",
                            "--stdin-name",
                            "dump.sql",
                        ],
                        &data,
                    );
                    out.ok(&format!("backup {round} of {host}"));
                    last = Some((out.json()["id"].as_str().unwrap().to_string(), data));
                    round += 1;
                    // A pause, as between two cron jobs: the pruner's chance. Four hosts
                    // whose backups keep overlapping hold a shared lock without a gap, and an
                    // exclusive lock waits for a gap (as restic's does), so after each round a
                    // host waits (up to a minute) for the pruner to have run once more.
                    let seen = pruned.load(Ordering::SeqCst);
                    let until = Instant::now() + Duration::from_secs(60);
                    thread::sleep(Duration::from_millis(100 * (h as u64 + 1)));
                    while pruned.load(Ordering::SeqCst) == seen && Instant::now() < until {
                        thread::sleep(Duration::from_millis(50));
                    }
                }
                (host, round, last.unwrap())
            })
        })
        .collect();
    let latest: Vec<_> = hosts.into_iter().map(|h| h.join().unwrap()).collect();
    let pruned_meanwhile = pruned.load(Ordering::SeqCst);
    done.store(true, Ordering::SeqCst);
    let locked_out = pruner.join().unwrap();
    let rounds: Vec<usize> = latest.iter().map(|l| l.1).collect();
    eprintln!(
        "s3 hosts: 4 hosts, {rounds:?} backups each; forget --prune ran {pruned_meanwhile} times \
         meanwhile and gave up on the lock {locked_out} times"
    );
    assert!(
        pruned_meanwhile >= 1,
        "the pruner never ran between the backups"
    );
    run(
        &env,
        &repo,
        &["snapshot", "forget", "--keep-last", "1", "--prune"],
        b"",
    )
    .ok("a last forget --prune");
    let ids = snapshot_ids(&r);
    assert_eq!(ids.len(), 4, "one snapshot per host is kept: {ids:?}");
    for (host, _, (id, data)) in &latest {
        assert!(
            ids.contains(id),
            "{host}'s latest snapshot {id} was forgotten"
        );
        let got = run(&env, &repo, &["snapshot", "restore", id, "--stdout"], b"");
        got.ok(&format!("restore of {host}'s latest"));
        assert!(got.stdout == *data, "{host}'s latest restores byte-exact");
    }
    run(&env, &repo, &["check", "--read-data"], b"").ok("check --read-data");
}

/// A server that accepts requests and never answers: with `TRESOR_S3_TIMEOUT=2` each request
/// gives up after 2 s, the retries are spent, and the command fails naming the timeout (the
/// harness's own deadline of 300 s would fail the test if it hung). Once the server answers
/// again the same command succeeds.
#[test]
fn s3_hung_server_times_out() {
    let Some(server) = s3::server() else { return };
    let proxy = Proxy::start(server.port, 2);
    let env = Env::new();
    let r = Repo::new("hung");
    let faulty = r.at(proxy.port);
    init(&env, &faulty);
    proxy.set_hang(true);
    let mut cmd = command(&env, &faulty, &["snapshot", "list"]);
    cmd.env("TRESOR_S3_TIMEOUT", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = harness::wait_with_timeout(
        cmd.spawn().unwrap(),
        Duration::from_secs(300),
        "snapshot list, server hung",
    );
    proxy.set_hang(false);
    let tally = proxy.tally();
    eprintln!(
        "s3 hung: exit {}, {tally}; stderr: {}",
        out.code,
        out.stderr.trim()
    );
    assert!(tally.hung > 1, "the requests were not held: {tally}");
    assert_clean_failure(&out, "snapshot list against a hung server");
    out.stderr_has("timed out");
    let mut bad = command(&env, &faulty, &["snapshot", "list"]);
    bad.env("TRESOR_S3_TIMEOUT", "soon");
    let out = harness::run_command(bad, "snapshot list, a bad TRESOR_S3_TIMEOUT");
    assert_ne!(
        out.code,
        exit::OK,
        "a malformed TRESOR_S3_TIMEOUT is refused"
    );
    out.stderr_has("TRESOR_S3_TIMEOUT");
    run(&env, &faulty, &["snapshot", "list"], b"").ok("snapshot list once the server answers");
}
