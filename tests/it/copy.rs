//! `tresor repo copy` between real repositories on disk (and into the real S3 server): what is
//! copied restores byte-exact and checks clean; a second run copies nothing and writes no
//! pack; selection by id, host and tag; delta blobs arrive with their bases; a target made with
//! `repo init --copy-chunker-params-from` dedups copied data with its own backups; a wrong
//! source password is a clear error; a killed copy is completed by the next run; and the
//! target's retention is its own.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::delta::{CHUNKS, three_days};
use crate::harness::{self, Env, KillOnDrop, Out, Rng, s3};

/// `repo copy ARGS --json` in `dst` from `src` (its password through TRESOR_FROM_PASSWORD).
fn copy_out(dst: &Env, src: &Env, args: &[&str]) -> Out {
    let mut a: Vec<&OsStr> = vec!["repo".as_ref(), "copy".as_ref(), "--from".as_ref()];
    a.push(src.repo.as_os_str());
    a.push("--json".as_ref());
    a.extend(args.iter().map(OsStr::new));
    dst.run_with(&a, &[("TRESOR_FROM_PASSWORD", OsStr::new(&src.password))])
}

/// [`copy_out`], asserting success; the JSON report.
#[track_caller]
fn copy(dst: &Env, src: &Env, args: &[&str]) -> Value {
    let out = copy_out(dst, src, args);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out.ok("repo copy").json()
}

fn num(v: &Value, f: &str) -> u64 {
    v[f].as_u64()
        .unwrap_or_else(|| panic!("no number {f} in {v}"))
}

fn copied(v: &Value) -> usize {
    v["copied"].as_array().unwrap().len()
}

/// `repo init` in `env` with the cheap KDF and `extra`.
fn init(env: &Env, extra: &[&str]) {
    let mut a = harness::init_args();
    a.extend(extra);
    env.run(&a).ok("repo init");
}

/// `repo init --copy-chunker-params-from SRC` in `dst`.
fn init_like(dst: &Env, src: &Env) {
    let mut a: Vec<&OsStr> = harness::init_args().into_iter().map(OsStr::new).collect();
    a.push("--copy-chunker-params-from".as_ref());
    a.push(src.repo.as_os_str());
    dst.run_with(&a, &[("TRESOR_FROM_PASSWORD", OsStr::new(&src.password))])
        .ok("repo init --copy-chunker-params-from");
}

#[track_caller]
fn check_read_data(env: &Env, when: &str) {
    let out = env.run(&["check", "--read-data"]);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out.ok(when);
}

/// The target snapshot whose `original` is `source_id` (or that is `source_id`).
fn copy_of(dst: &Env, source_id: &str) -> String {
    dst.list()
        .iter()
        .find(|s| s["original"].as_str() == Some(source_id))
        .map(|s| s["id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no copy of {source_id} in the target"))
}

/// A small tree: text, random bytes, an empty file, a subdirectory.
fn make_tree(dir: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    fs::write(dir.join("a.txt"), rng.text(5000)).unwrap();
    fs::write(dir.join("sub/b.bin"), rng.bytes(700_000)).unwrap();
    fs::write(dir.join("sub/deeper/c.bin"), rng.bytes(3 << 20)).unwrap();
    fs::write(dir.join("empty"), b"").unwrap();
}

/// Restores `id` of `env` into a fresh directory and compares every file with `src`.
#[track_caller]
fn assert_tree_restores(env: &Env, id: &str, src: &Path, what: &str) {
    let target = env.path(format!("restore-{}", harness::random_hex(4)));
    env.run(&[
        "snapshot",
        "restore",
        id,
        "--target",
        target.to_str().unwrap(),
    ])
    .ok("restore");
    let mut n = 0;
    for f in harness::all_files(src) {
        let rel = f.strip_prefix("/").unwrap();
        let got = fs::read(target.join(rel)).unwrap_or_else(|e| panic!("{what}: {rel:?}: {e}"));
        assert!(got == fs::read(&f).unwrap(), "{what}: {rel:?} differs");
        n += 1;
    }
    assert!(n >= 4, "{what}: only {n} files compared");
}

/// Copy all into a target with its own keys: everything restores byte-exact from the target
/// and checks clean; a second run copies nothing and writes no pack; a new source snapshot is
/// then the only one copied.
#[test]
fn copy_all_is_exact_and_incremental() {
    let src = Env::new();
    let dst = Env::new();
    src.init();
    dst.init();
    let tree = src.path("tree");
    make_tree(&tree, 1);
    let s1 = src.create(&[&tree])["id"].as_str().unwrap().to_string();
    let stream = Rng::new(2).text(6 << 20);
    let s2 = src.create_stdin("db.sql", &stream)["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = copy(&dst, &src, &[]);
    assert_eq!(copied(&r), 2, "{r}");
    assert_eq!(r["shared_content"], false);
    assert!(num(&r, "blobs_copied") >= 6, "{r}");
    assert_eq!(dst.snapshot_count(), 2);
    let c1 = copy_of(&dst, &s1);
    let c2 = copy_of(&dst, &s2);
    assert_tree_restores(&dst, &c1, &tree, "copied tree");
    assert!(
        dst.restore_stdout(&c2, None) == stream,
        "copied stream differs"
    );
    check_read_data(&dst, "check of the target");
    // The copy keeps what the snapshot says about itself.
    let (a, b) = (src.show(&s1), dst.show(&c1));
    for f in ["time", "host", "username", "tags", "sources"] {
        assert_eq!(a[f], b[f], "{f}");
    }

    let packs = dst.packs().len();
    let again = copy(&dst, &src, &[]);
    assert_eq!((copied(&again), num(&again, "skipped")), (0, 2), "{again}");
    assert_eq!(num(&again, "blobs_copied"), 0);
    assert_eq!(dst.packs().len(), packs, "an idempotent copy wrote packs");
    assert_eq!(dst.snapshot_count(), 2);

    fs::write(tree.join("new.txt"), Rng::new(3).text(40_000)).unwrap();
    let s3 = src.create(&[&tree])["id"].as_str().unwrap().to_string();
    let third = copy(&dst, &src, &[]);
    assert_eq!((copied(&third), num(&third, "skipped")), (1, 2), "{third}");
    assert_eq!(third["copied"][0]["source_id"], s3.as_str());
    assert_tree_restores(&dst, &copy_of(&dst, &s3), &tree, "third snapshot");
    check_read_data(&dst, "check after the third copy");

    // A copy of a copy keeps the original id: copying the target into a third repository and
    // that one back into the target copies nothing.
    let third_repo = Env::new();
    third_repo.init();
    assert_eq!(copied(&copy(&third_repo, &dst, &[])), 3);
    let back = copy(&dst, &third_repo, &[]);
    assert_eq!((copied(&back), num(&back, "skipped")), (0, 3), "{back}");
}

/// Selection by id (prefix), host and tag; `--dry-run` writes nothing.
#[test]
fn copy_selects_by_id_host_and_tag() {
    let src = Env::new();
    let dst = Env::new();
    src.init();
    dst.init();
    let mk = |name: &str, extra: &[&str]| {
        let mut a = vec![
            "snapshot",
            "create",
            "--json",
            "--stdin",
            "--stdin-name",
            name,
        ];
        a.extend(extra);
        src.run_stdin(&a, &Rng::new(name.len() as u64).text(200_000))
            .ok("create")
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = mk("a", &["--host", "alpha"]);
    let b = mk("bb", &["--host", "beta", "--tag", "keep"]);
    let c = mk("ccc", &["--host", "beta"]);
    let d = mk("dddd", &["--host", "gamma", "--tag", "other"]);

    let dry = copy(&dst, &src, &["--dry-run"]);
    assert_eq!(copied(&dry), 4);
    assert!(dry["copied"][0]["target_id"].is_null());
    assert_eq!(dst.snapshot_count(), 0, "--dry-run copied");
    assert!(dst.packs().is_empty(), "--dry-run wrote packs");

    let r = copy(&dst, &src, &[&a[..10]]);
    assert_eq!(copied(&r), 1);
    assert_eq!(r["copied"][0]["source_id"], a.as_str());
    let r = copy(&dst, &src, &["--tag", "keep"]);
    assert_eq!(copied(&r), 1);
    assert_eq!(r["copied"][0]["source_id"], b.as_str());
    let r = copy(&dst, &src, &["--host", "beta"]);
    assert_eq!((copied(&r), num(&r, "skipped")), (1, 1), "{r}");
    assert_eq!(r["copied"][0]["source_id"], c.as_str());
    assert_eq!(dst.snapshot_count(), 3);
    let r = copy(&dst, &src, &[]);
    assert_eq!((copied(&r), num(&r, "skipped")), (1, 3), "{r}");
    assert_eq!(r["copied"][0]["source_id"], d.as_str());
    let unknown = copy_out(&dst, &src, &["feedbeef"]);
    assert_ne!(unknown.code, 0);
    check_read_data(&dst, "check after selective copies");
}

/// Every delta blob in a repository's catalog, with its base: (delta, base) in hex.
fn catalog(env: &Env) -> rusqlite::Connection {
    let path = harness::all_files(&env.cache)
        .into_iter()
        .filter(|p| p.file_name().unwrap() == "catalog.sqlite")
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("no catalog");
    rusqlite::Connection::open(path).unwrap()
}

fn deltas(env: &Env) -> Vec<(String, String)> {
    crate::delta::deltas_in(&catalog(env))
}

/// A dump series stored with deltas, copied: the deltas stay deltas in the target (also when
/// only the last day is copied: its bases, chunks of day 0 no copied snapshot names, come
/// along), and every day restores byte-exact; with and without shared chunker params.
#[test]
fn deltas_are_copied_with_their_bases() {
    let days = three_days();
    let src = Env::new();
    init(&src, &CHUNKS);
    let ids: Vec<String> = days
        .iter()
        .map(|d| {
            src.create_stdin("db.sql", d)["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let src_deltas = deltas(&src);
    assert!(
        src_deltas.len() >= 5,
        "the source holds few deltas: {src_deltas:?}"
    );

    for shared in [true, false] {
        let dst = Env::new();
        if shared {
            init_like(&dst, &src);
        } else {
            init(&dst, &CHUNKS);
        }
        let what = if shared { "shared" } else { "independent" };
        // Day 2 alone: its deltas need bases that only day 0 names.
        let r = copy(&dst, &src, &[&ids[2]]);
        assert_eq!(copied(&r), 1, "{what}: {r}");
        assert_eq!(r["shared_content"], shared, "{what}");
        assert!(
            num(&r, "blobs_delta") >= 3,
            "{what}: deltas were not kept: {r}"
        );
        let c2 = copy_of(&dst, &ids[2]);
        assert!(
            dst.restore_stdout(&c2, None) == days[2],
            "{what}: day 2 differs"
        );
        check_read_data(&dst, &format!("{what}: check after day 2"));
        let dd = deltas(&dst);
        assert!(dd.len() >= 3, "{what}: {dd:?}");
        if shared {
            // Same ids: the target's deltas are the source's.
            for d in &dd {
                assert!(
                    src_deltas.contains(d),
                    "{what}: {d:?} is not a source delta"
                );
            }
        }
        let r = copy(&dst, &src, &[]);
        assert_eq!((copied(&r), num(&r, "skipped")), (2, 1), "{what}: {r}");
        for (i, d) in days.iter().enumerate() {
            let c = copy_of(&dst, &ids[i]);
            assert!(
                dst.restore_stdout(&c, None) == *d,
                "{what}: day {i} differs"
            );
        }
        check_read_data(&dst, &format!("{what}: check after every day"));
    }
}

/// Chains across a copy: when the target holds a copied delta's base as a delta itself (its
/// own backups stored that chunk so), the copied delta is chained on it one deeper than the
/// target's copy (not the source's depth), and restores exactly.
#[test]
fn a_delta_whose_base_is_a_delta_in_the_target_is_chained_on_it() {
    let days = three_days();
    let src = Env::new();
    init(&src, &CHUNKS);
    let dst = Env::new();
    init_like(&dst, &src);
    // The target: day 0, then day 1 as deltas against it.
    dst.create_stdin("db.sql", &days[0]);
    let d1 = dst.create_stdin("db.sql", &days[1]);
    assert!(num(&d1, "blobs_delta") >= 3, "{d1}");
    // The source: day 1 whole, then day 2 as deltas against day 1's chunks.
    src.create_stdin("db.sql", &days[1]);
    let s2 = src.create_stdin("db.sql", &days[2]);
    assert!(num(&s2, "blobs_delta") >= 3, "{s2}");
    let s2 = s2["id"].as_str().unwrap().to_string();

    let r = copy(&dst, &src, &[&s2]);
    assert_eq!(copied(&r), 1, "{r}");
    let c = copy_of(&dst, &s2);
    assert!(dst.restore_stdout(&c, None) == days[2], "day 2 differs");
    check_read_data(&dst, "check after copying deltas on deltas");
    // Some copied delta has a target delta as base, and every delta is one deeper than its base.
    let all = deltas(&dst);
    assert!(
        all.iter().any(|(_, b)| all.iter().any(|(x, _)| x == b)),
        "no delta was chained on a delta of the target"
    );
    assert_eq!(
        crate::delta::deltas_not_one_deeper(&catalog(&dst)),
        0,
        "a delta not one deeper than its base in the target"
    );
}

/// A target made with `--copy-chunker-params-from` ids and cuts like the source: after a copy,
/// a backup of the same data made directly into the target stores (almost) no data blob, and
/// a second copy reuses what the target has without reading it. A target with its own keys
/// pays both: the same backup stores its data again.
#[test]
fn shared_chunker_params_dedup_copied_data_with_direct_backups() {
    let src = Env::new();
    init(&src, &CHUNKS);
    let data = Rng::new(9).text(5 << 20);
    src.create_stdin("db.sql", &data);

    let shared = Env::new();
    init_like(&shared, &src);
    let r = copy(&shared, &src, &[]);
    assert_eq!(r["shared_content"], true);
    let direct = shared.create_stdin("db.sql", &data);
    eprintln!("shared: direct backup after copy: {direct}");
    assert!(
        num(&direct, "blobs_added") <= 1 && num(&direct, "data_added") < 64 * 1024,
        "a backup of copied data stored data again: {direct}"
    );
    // The source's password does not open the target, nor the target's the source.
    assert_ne!(
        shared
            .run_with(
                &["snapshot", "list"],
                &[("TRESOR_PASSWORD", OsStr::new(&src.password))]
            )
            .code,
        0
    );
    // The target's own backup copied back into the source reuses every chunk.
    let back = copy(&src, &shared, &[]);
    assert_eq!(copied(&back), 1, "{back}");
    assert!(num(&back, "blobs_copied") <= 1, "{back}");
    assert_eq!(back["shared_content"], true);

    let own = Env::new();
    init(&own, &CHUNKS);
    let r = copy(&own, &src, &[]);
    assert_eq!(r["shared_content"], false);
    let direct = own.create_stdin("db.sql", &data);
    assert!(
        num(&direct, "blobs_added") >= 10,
        "independent keys: expected the data stored again, got {direct}"
    );
    check_read_data(&shared, "shared target");
    check_read_data(&own, "independent target");
}

/// A wrong source password: a clear error naming the source, exit 12, nothing copied.
#[test]
fn wrong_source_password_is_a_clear_error() {
    let src = Env::new();
    let dst = Env::new();
    src.init();
    dst.init();
    src.create_stdin("x", b"hello");
    let mut a: Vec<&OsStr> = vec!["repo".as_ref(), "copy".as_ref(), "--from".as_ref()];
    a.push(src.repo.as_os_str());
    let out = dst.run_with(&a, &[("TRESOR_FROM_PASSWORD", OsStr::new("not-it"))]);
    out.expect_code(harness::exit::WRONG_PASSWORD, "wrong source password");
    out.stderr_has("source repository");
    // Without a source password, the target's is tried, and fails the same way.
    let out = dst.run(&a);
    out.expect_code(
        harness::exit::WRONG_PASSWORD,
        "target password for the source",
    );
    out.stderr_has("--from-password-file");
    assert_eq!(dst.snapshot_count(), 0);
}

/// A copy killed while it writes packs leaves a target that checks clean; the next run adopts
/// what it wrote and completes, and everything restores.
#[test]
fn killed_copy_is_completed_by_the_next_run() {
    let src = Env::new();
    let dst = Env::new();
    src.init();
    dst.init_small_packs();
    let data = Rng::new(5).bytes(60 << 20);
    let id = src.create_stdin("big.bin", &data)["id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut cmd = dst.command(&["repo", "copy", "--from", src.repo.to_str().unwrap()]);
    cmd.env("TRESOR_FROM_PASSWORD", &src.password)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut guard = KillOnDrop(Some(cmd.spawn().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while dst.packs().len() < 3 {
        assert!(Instant::now() < deadline, "the copy never wrote packs");
        assert!(
            guard.0.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the copy finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let child = guard.0.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    guard.0 = None;
    assert_eq!(dst.snapshot_count(), 0, "a killed copy saved a snapshot");
    dst.assert_objects_whole("after the kill");
    dst.run(&["check"]).ok("check after the kill");

    let r = copy(&dst, &src, &[]);
    assert_eq!(copied(&r), 1, "{r}");
    let c = copy_of(&dst, &id);
    assert!(
        dst.restore_stdout(&c, None) == data,
        "copy differs after resume"
    );
    check_read_data(&dst, "check after the resumed copy");
}

/// Forgetting in the target is the target's business: the source keeps its snapshots, and a
/// later copy does not bring the forgotten ones back.
#[test]
fn target_retention_is_independent_of_the_source() {
    let src = Env::new();
    let dst = Env::new();
    src.init();
    dst.init();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            src.create_stdin("f", &Rng::new(i).text(100_000))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(copied(&copy(&dst, &src, &[])), 3);
    dst.run(&["snapshot", "forget", "--keep-last", "1", "--prune"])
        .ok("forget in the target");
    assert_eq!(dst.snapshot_count(), 1);
    assert_eq!(src.snapshot_count(), 3);
    let r = copy(&dst, &src, &[]);
    assert_eq!(copied(&r), 0, "{r}");
    assert_eq!(
        (num(&r, "skipped"), num(&r, "skipped_forgotten")),
        (1, 2),
        "{r}"
    );
    assert_eq!(dst.snapshot_count(), 1);
    copy_of(&dst, &ids[2]);
    check_read_data(&dst, "target after forget");
    check_read_data(&src, "source untouched");
}

/// Runs `tresor ARGS` in `env` with `repo` as the repository and the S3 server's credentials.
fn run_s3(env: &Env, repo: &str, vars: &[(&str, &str)], args: &[&str]) -> Out {
    let server = s3::server().unwrap();
    let mut cmd = env.command(args);
    cmd.env("TRESOR_REPO", repo).env_remove("AWS_SESSION_TOKEN");
    for (k, v) in server.vars().into_iter().chain(vars.iter().copied()) {
        cmd.env(k, v);
    }
    harness::run_command(cmd, &format!("tresor {}", args.join(" ")))
}

/// Local → S3, as from cron: copy all, restore from the bucket, check it, copy again (nothing),
/// a new snapshot (only it); and S3 → local back.
#[test]
fn copy_local_to_s3_and_back() {
    let Some(server) = s3::server() else { return };
    let src = Env::new();
    src.init();
    let tree = src.path("tree");
    make_tree(&tree, 4);
    let s1 = src.create(&[&tree])["id"].as_str().unwrap().to_string();
    let stream = Rng::new(6).text(3 << 20);
    let s2 = src.create_stdin("db.sql", &stream)["id"]
        .as_str()
        .unwrap()
        .to_string();

    let bucket = format!("s3:{}", server.location("copy"));
    let from_pw = [("TRESOR_FROM_PASSWORD", src.password.as_str())];
    let dst = Env::new();
    let mut init_like_args = harness::init_args();
    init_like_args.extend(["--copy-chunker-params-from", src.repo.to_str().unwrap()]);
    run_s3(&dst, &bucket, &from_pw, &init_like_args).ok("init on s3");
    let from = src.repo.to_str().unwrap();
    let r = run_s3(
        &dst,
        &bucket,
        &from_pw,
        &["repo", "copy", "--from", from, "--json"],
    )
    .ok("copy to s3")
    .json();
    assert_eq!(
        (copied(&r), r["shared_content"].as_bool()),
        (2, Some(true)),
        "{r}"
    );
    // The bucket's requests, and the local source's, are reported apart.
    assert!(
        num(&r["requests"], "put") >= 3,
        "packs, index, snapshots: {r}"
    );
    assert!(num(&r["source_requests"], "get_range") > 0, "{r}");
    assert_eq!(
        num(&r["source_requests"], "put"),
        1,
        "the source gets only its lock: {r}"
    );
    let list = run_s3(&dst, &bucket, &[], &["snapshot", "list", "--json"])
        .ok("list")
        .json();
    let c2 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["original"] == s2.as_str())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .expect("no copy of the stream");
    let got = run_s3(
        &dst,
        &bucket,
        &[],
        &["snapshot", "restore", &c2, "--stdout"],
    );
    got.ok("restore from s3");
    assert!(got.stdout == stream, "stream restored from s3 differs");
    run_s3(&dst, &bucket, &[], &["check", "--read-data"]).ok("check s3");

    let again = run_s3(
        &dst,
        &bucket,
        &from_pw,
        &["repo", "copy", "--from", from, "--json"],
    )
    .ok("second copy")
    .json();
    assert_eq!(
        (copied(&again), num(&again, "packs_written")),
        (0, 0),
        "{again}"
    );

    fs::write(tree.join("more.txt"), Rng::new(8).text(30_000)).unwrap();
    src.create(&[&tree]);
    let third = run_s3(
        &dst,
        &bucket,
        &from_pw,
        &["repo", "copy", "--from", from, "--json"],
    )
    .ok("third copy")
    .json();
    assert_eq!((copied(&third), num(&third, "skipped")), (1, 2), "{third}");
    assert!(num(&third, "blobs_reused") >= 3, "{third}");

    // Back from the bucket into a fresh local repository: copies of copies keep the original.
    let back = Env::new();
    back.init();
    let mut cmd = back.command(&["repo", "copy", "--from", &bucket, "--json"]);
    for (k, v) in server.vars() {
        cmd.env(k, v);
    }
    cmd.env("TRESOR_FROM_PASSWORD", &dst.password);
    let r = harness::run_command(cmd, "copy from s3")
        .ok("copy from s3")
        .json();
    assert_eq!(copied(&r), 3, "{r}");
    fs::remove_file(tree.join("more.txt")).unwrap();
    assert_tree_restores(&back, &copy_of(&back, &s1), &tree, "tree back from s3");
    assert!(back.restore_stdout(&copy_of(&back, &s2), None) == stream);
}
