//! Retention and space: concurrent backups, locks, forget policies, prune (with crashes in the
//! middle), and the cost figures of `snapshot show` and `stats`.

use std::fs;
use std::process::Stdio;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, Env, KillOnDrop, Rng, exit};

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Bytes the repository occupies (packs, index objects, snapshots).
fn repo_bytes(env: &Env) -> u64 {
    ["data", "index", "snapshots"]
        .iter()
        .map(|d| env.stored_bytes(d))
        .sum()
}

/// A day's dump: the same rows as `base` with a few percent rewritten, like a database
/// with daily churn.
fn churned(base: &[u8], day: u64) -> Vec<u8> {
    let mut v = base.to_vec();
    let mut rng = Rng::new(1000 + day);
    for _ in 0..20 {
        let at = (rng.next_u64() as usize) % (v.len() - 70_000);
        let patch = rng.text(64 << 10);
        v[at..at + patch.len()].copy_from_slice(&patch);
    }
    v
}

fn concurrent_creates(env: &Env, n: usize, round: u64) {
    let shared = Rng::new(round).text(6 << 20);
    let streams: Vec<Arc<Vec<u8>>> = (0..n)
        .map(|i| {
            // A shared part (the processes race to store the same chunks) and an own part.
            let mut v = shared.clone();
            v.extend(Rng::new(round * 100 + i as u64).text(8 << 20));
            Arc::new(v)
        })
        .collect();
    let before: Vec<String> = env.list().iter().map(id_of).collect();
    let runs: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut cmd = env.command(&[
                "snapshot",
                "create",
                "--json",
                "--stdin",
                "--stdin-name",
                &format!("s{round}-{i}.txt"),
            ]);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let data = Arc::clone(s);
            let feeder = thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&data);
            });
            (child, feeder)
        })
        .collect();
    let mut ids = Vec::new();
    for (child, feeder) in runs {
        let out = harness::wait_with_timeout(child, harness::DEFAULT_TIMEOUT, "concurrent create");
        feeder.join().unwrap();
        out.ok("concurrent snapshot create");
        ids.push(id_of(&out.json()));
    }
    assert_eq!(env.list().len(), before.len() + n);
    for (id, s) in ids.iter().zip(&streams) {
        assert!(env.restore_stdout(id, None) == **s, "snapshot {id} differs");
    }
    let out = env.run(&["check", "--read-data", "--json"]);
    out.ok("check after concurrent backups");
}

#[test]
fn two_then_four_concurrent_backups_into_one_repository() {
    let env = Env::new();
    env.init();
    concurrent_creates(&env, 2, 1);
    concurrent_creates(&env, 4, 2);
    // No lock is left behind.
    assert!(harness::all_files(&env.repo.join("locks")).is_empty());
}

/// Starts a backup whose stdin stays open, and waits until it holds its lock.
fn running_backup(env: &Env) -> (KillOnDrop, std::process::ChildStdin) {
    let mut cmd = env.command(&["snapshot", "create", "--stdin", "--stdin-name", "slow.txt"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    {
        use std::io::Write;
        stdin.write_all(&Rng::new(5).text(2 << 20)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while harness::all_files(&env.repo.join("locks")).is_empty() {
        assert!(Instant::now() < deadline, "the backup never took its lock");
        thread::sleep(Duration::from_millis(20));
    }
    (KillOnDrop(Some(child)), stdin)
}

#[test]
fn prune_waits_for_a_running_backup_and_stale_locks_go() {
    let env = Env::new();
    env.init();
    let old = env.create_stdin("old.txt", &Rng::new(4).text(3 << 20));
    let (mut guard, mut stdin) = running_backup(&env);

    // Refused at once, naming the holder.
    let out = env.run(&["prune"]);
    out.expect_code(exit::LOCKED, "prune during a backup")
        .stderr_has("snapshot create");
    assert!(
        out.stderr
            .contains(&format!("pid {}", guard.0.as_ref().unwrap().id())),
        "{}",
        out.stderr
    );

    // With --retry-lock it waits; the backup finishes meanwhile.
    let waiting = {
        let mut cmd = env.command(&["prune", "--retry-lock", "2m", "--json"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    thread::sleep(Duration::from_millis(500));
    {
        use std::io::Write;
        stdin.write_all(&Rng::new(6).text(1 << 20)).unwrap();
    }
    drop(stdin);
    let child = guard.0.take().unwrap();
    let backup = harness::wait_with_timeout(child, harness::DEFAULT_TIMEOUT, "backup");
    backup.ok("the backup prune waited for");
    let pruned =
        harness::wait_with_timeout(waiting, harness::DEFAULT_TIMEOUT, "prune --retry-lock");
    pruned.ok("prune after waiting");
    let latest = env.list().pop().unwrap();
    let mut expect = Rng::new(5).text(2 << 20);
    expect.extend(Rng::new(6).text(1 << 20));
    assert!(env.restore_stdout(&id_of(&latest), None) == expect);
    assert!(env.restore_stdout(&id_of(&old), None) == Rng::new(4).text(3 << 20));

    // A backup killed with SIGKILL leaves its lock; the next exclusive run removes it, saying so.
    let (mut guard, _stdin) = running_backup(&env);
    let pid = guard.0.as_ref().unwrap().id();
    let child = guard.0.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    guard.0 = None;
    assert_eq!(harness::all_files(&env.repo.join("locks")).len(), 1);
    let out = env.run(&["prune"]);
    out.ok("prune after a crashed backup")
        .stderr_has(&format!("process {pid} is gone"));
    assert!(harness::all_files(&env.repo.join("locks")).is_empty());
    env.run(&["check", "--read-data"]).ok("check");
    let out = env.run(&["repo", "unlock"]);
    out.ok("repo unlock");
    assert!(
        out.stdout_str().contains("0 locks removed"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn forget_then_prune_frees_what_the_dry_run_predicted() {
    let env = Env::new();
    env.init();
    let base = Rng::new(77).text(24 << 20);
    let mut days = Vec::new();
    for d in 0..7 {
        let dump = churned(&base, d);
        let id = id_of(&env.create_stdin("shop.sql", &dump));
        days.push((id, dump));
    }
    let out = env.run(&[
        "snapshot",
        "forget",
        "--keep-last",
        "3",
        "--dry-run",
        "--json",
    ]);
    out.ok("forget --dry-run");
    let dry = out.json();
    let predicted = dry["prune_would_free"].as_u64().unwrap();
    let verdicts = dry["snapshots"].as_array().unwrap();
    let kept: Vec<&str> = verdicts
        .iter()
        .filter(|v| v["keep"] == true)
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    let newest: Vec<&str> = days[4..].iter().rev().map(|(id, _)| id.as_str()).collect();
    assert_eq!(kept, newest, "keep-last 3 keeps the three newest");
    assert!(
        verdicts
            .iter()
            .filter(|v| v["keep"] == false)
            .all(|v| v["reasons"] == serde_json::json!([]))
    );
    assert_eq!(env.list().len(), 7, "a dry run removes nothing");

    let before = repo_bytes(&env);
    env.run(&["snapshot", "forget", "--keep-last", "3", "--prune"])
        .ok("forget --prune");
    let shrink = before - repo_bytes(&env);
    let diff = shrink.abs_diff(predicted) as f64 / predicted as f64;
    eprintln!(
        "forget+prune: predicted {predicted} B, repository shrank {shrink} B ({:.3}% apart)",
        diff * 100.0
    );
    assert!(diff < 0.01, "predicted {predicted}, shrank {shrink}");
    assert_eq!(env.list().len(), 3);
    for (id, dump) in &days[4..] {
        assert!(
            env.restore_stdout(id, None) == *dump,
            "kept snapshot {id} differs"
        );
    }
    env.run(&["check", "--read-data"]).ok("check after prune");
    // Nothing left to free.
    let again = env
        .run(&["prune", "--dry-run", "--json"])
        .ok("prune --dry-run")
        .json();
    assert_eq!(again["delete_packs"], 0, "{again}");
}

#[test]
fn forget_refuses_without_a_policy_and_forgets_named_snapshots() {
    let env = Env::new();
    env.init();
    let a = id_of(&env.create_stdin("a.txt", &Rng::new(1).text(1 << 20)));
    let b = id_of(&env.create_stdin("b.txt", &Rng::new(2).text(1 << 20)));
    env.run(&["snapshot", "forget"])
        .expect_code(exit::FATAL, "forget without a policy")
        .stderr_has("no retention policy");
    env.run(&["snapshot", "forget", &a[..10]])
        .ok("forget by id");
    let left: Vec<String> = env.list().iter().map(id_of).collect();
    assert_eq!(left, std::slice::from_ref(&b));
    env.run(&["prune"]).ok("prune");
    assert!(env.restore_stdout(&b, None) == Rng::new(2).text(1 << 20));
}

#[test]
fn prune_repacks_packs_that_are_mostly_unused() {
    let env = Env::new();
    env.init();
    // One backup puts two files in one pack; the next has only the first.
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let keep = Rng::new(8).bytes(1 << 20);
    fs::write(src.join("keep.bin"), &keep).unwrap();
    fs::write(src.join("gone.bin"), Rng::new(9).bytes(3 << 20)).unwrap();
    let first = id_of(&env.create(&[&src]));
    fs::remove_file(src.join("gone.bin")).unwrap();
    let second = id_of(&env.create(&[&src]));
    env.run(&["snapshot", "forget", &first])
        .ok("forget the first");
    let before = repo_bytes(&env);
    let out = env.run(&["prune", "--json"]);
    out.ok("prune");
    let r = out.json();
    assert!(r["plan"]["repack_packs"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["packs_written"].as_u64().unwrap() >= 1, "{r}");
    let shrink = before - repo_bytes(&env);
    assert!(
        shrink > 3 << 20,
        "the 3 MiB file's space is freed: {shrink} ({r})"
    );
    let path = format!("{}/keep.bin", env.stored(&src));
    assert!(env.restore_stdout(&second, Some(&path)) == keep);
    env.run(&["check", "--read-data"]).ok("check after repack");
}

#[test]
fn snapshot_costs_and_stats_add_up() {
    let env = Env::new();
    env.init();
    let a = Rng::new(21).bytes(6 << 20);
    let b = Rng::new(22).bytes(4 << 20);
    let sa = id_of(&env.create_stdin("x.bin", &a));
    let sb = id_of(&env.create_stdin("y.bin", &b));
    let sc = id_of(&env.create_stdin("x.bin", &a)); // the same data again
    let cost = |id: &str, since: Option<&str>| -> Value {
        let mut args = vec!["snapshot", "show", id, "--json"];
        if let Some(s) = since {
            args.extend(["--since", s]);
        }
        env.run(&args).ok("show").json()["cost"].clone()
    };
    let (ca, cb, cc) = (cost(&sa, None), cost(&sb, None), cost(&sc, None));
    // B shares nothing: everything it needs is its own.
    assert_eq!(cb["unique"], cb["referenced"], "{cb}");
    // C repeats A's data: it adds only its tree and holds only its tree alone.
    assert_eq!(cc["unique"]["blobs"], 1, "{cc}");
    assert_eq!(cc["referenced"]["blobs"], ca["referenced"]["blobs"]);
    assert_eq!(ca["unique"]["blobs"], 1, "A's data is also C's: {ca}");
    let since = cost(&sc, Some(&sa));
    assert_eq!(since["beyond_base"]["blobs"], 1, "{since}");
    let since_b = cost(&sc, Some(&sb));
    assert_eq!(
        since_b["beyond_base"], cc["referenced"],
        "B has nothing of C's"
    );
    // The incremental size of C (what its backup added) is small; of A, all of it.
    assert!(
        cc["added_when_created"].as_u64().unwrap() < 64 << 10,
        "{cc}"
    );
    assert!(ca["added_when_created"].as_u64().unwrap() > 6 << 20, "{ca}");
    // Raw bytes of what B needs are exactly its stream plus its tree.
    let tree_raw = cb["referenced"]["raw"].as_u64().unwrap() - b.len() as u64;
    assert!(tree_raw < 4096, "{cb}");

    let st = env.run(&["stats", "--json"]).ok("stats").json();
    assert_eq!(st["snapshots"], 3);
    let logical = st["logical_bytes"].as_u64().unwrap();
    assert_eq!(logical, (2 * a.len() + b.len()) as u64);
    let raw = st["raw_bytes"].as_u64().unwrap();
    assert!(raw >= (a.len() + b.len()) as u64 && raw < (a.len() + b.len()) as u64 + 16384);
    let dedup = st["dedup_ratio"].as_f64().unwrap();
    assert!((dedup - 16.0 / 10.0).abs() < 0.01, "{st}");

    // Forgetting B frees what `unique` said, give or take pack and index overhead.
    env.run(&["snapshot", "forget", &sb]).ok("forget B");
    let before = repo_bytes(&env);
    env.run(&["prune"]).ok("prune");
    let freed = before - repo_bytes(&env);
    let unique = cb["unique"]["stored"].as_u64().unwrap();
    assert!(
        freed >= unique && freed < unique + 16384,
        "freed {freed}, unique {unique}"
    );
}

/// Crash injection during prune (`TRESOR_PRUNE_TRIALS`, default 4; scripts/crash-trials.sh
/// runs 30): kill -9 at a random moment; every kept snapshot restores and check passes.
///
/// A trial counts as *interrupted mid-write* only when prune did not exit on its own, had
/// already changed the repository (new packs or index objects, deleted ones, a temporary file)
/// and had not finished (its plan still has work, or packs it unindexed are still there). The
/// kill window follows prune's own running time, and trials go on (up to four times the number
/// asked for) until a quarter of them (at least one) were interrupted mid-write.
#[test]
fn prune_killed_at_random_moments_keeps_every_kept_snapshot() {
    let (trials, seed) = harness::trials_and_seed("prune", "TRESOR_PRUNE_TRIALS", 4);
    let env = Env::new();
    env.init_small_packs();
    let mut rng = Rng::new(seed);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
    let mut span = 500u64;
    let need = (trials / 4).max(1);
    // [interrupted mid-write, killed before its first write or after its last, finished]
    let mut outcomes = [0u32; 3];
    let mut t = 0u64;
    while t < trials || (t < trials * 4 && u64::from(outcomes[0]) < need) {
        // New data: a stream to keep, a tree whose second half is forgotten (repack work),
        // and a stream to forget (delete work).
        let keep = Rng::new(seed ^ (t * 3 + 1)).text(4 << 20);
        kept.push((id_of(&env.create_stdin("keep.txt", &keep)), keep));
        for i in 0..6 {
            fs::write(
                src.join(format!("f{i}")),
                Rng::new(seed ^ (t * 10 + i)).bytes(300 << 10),
            )
            .unwrap();
        }
        let doomed_tree = id_of(&env.create(&[&src]));
        for i in 3..6 {
            fs::remove_file(src.join(format!("f{i}"))).unwrap();
        }
        let half = id_of(&env.create(&[&src]));
        let half_data: Vec<Vec<u8>> = (0..3)
            .map(|i| fs::read(src.join(format!("f{i}"))).unwrap())
            .collect();
        let doomed =
            id_of(&env.create_stdin("doomed.txt", &Rng::new(seed ^ (t * 3 + 2)).text(4 << 20)));
        env.run(&["snapshot", "forget", &doomed, &doomed_tree])
            .ok("forget");

        let packs_before: std::collections::HashSet<_> = env.packs().into_iter().collect();
        let index_before = crate::crash::names(&env.repo.join("index"));
        let mut cmd = env.command(&["prune", "--max-unused", "0%"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut guard = KillOnDrop(Some(cmd.spawn().unwrap()));
        let (st, ran) = guard.kill_after_timed(Duration::from_millis(rng.next_u64() % span));
        if let Some(ran) = ran.filter(|_| st.success()) {
            // It finished first: aim the next kills inside its running time.
            span = (ran.as_millis() as u64 * 6 / 5).max(50);
        }
        let what = format!("prune trial {t} ({st})");
        env.assert_objects_whole(&what);
        let out = env.run(&["check", "--json"]);
        let report = out.json();
        assert_eq!(out.code, exit::OK, "{what}: {report}");
        let killed = std::os::unix::process::ExitStatusExt::signal(&st) == Some(9);
        let changed = env
            .packs()
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            != packs_before
            || crate::crash::names(&env.repo.join("index")) != index_before
            || !harness::temporaries(&env.repo).is_empty();
        let plan = env
            .run(&["prune", "--max-unused", "0%", "--dry-run", "--json"])
            .ok(&format!("{what}: prune --dry-run"))
            .json();
        let work_left = plan["delete_packs"].as_u64().unwrap() > 0
            || plan["repack_packs"].as_u64().unwrap() > 0
            || plan["missing_packs"].as_u64().unwrap() > 0
            || !report["unindexed_packs"].as_array().unwrap().is_empty();
        outcomes[match (killed, changed && work_left) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        }] += 1;
        for (id, data) in &kept {
            assert!(
                env.restore_stdout(id, None) == *data,
                "{what}: {id} differs"
            );
        }
        for (i, data) in half_data.iter().enumerate() {
            let p = format!("{}/f{i}", env.stored(&src));
            assert!(
                env.restore_stdout(&half, Some(&p)) == *data,
                "{what}: f{i} differs"
            );
        }
        // A stale lock of the killed prune must not block the next run; it finishes the job.
        env.run(&["prune"])
            .ok(&format!("{what}: prune after the kill"));
        t += 1;
    }
    eprintln!(
        "prune trials: {t} trials: {} interrupted mid-write, {} killed before their first \
         write or after their last, {} finished before the kill",
        outcomes[0], outcomes[1], outcomes[2]
    );
    assert!(
        u64::from(outcomes[0]) >= need,
        "only {} of {t} prunes were interrupted mid-write (need {need}): {outcomes:?}",
        outcomes[0]
    );
    env.run(&["check", "--read-data"]).ok("final check");
}
