//! Bad input and damage: each gives a clear message and its documented exit code.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{self, Env, Input, Password, Rng, chmod, chown_r, exit};

#[test]
fn wrong_password_and_missing_repository() {
    let mut env = Env::with_password_file();
    env.init();
    env.create_stdin("x.txt", b"x");
    assert_eq!(env.snapshot_count(), 1);

    // Wrong password: from the variable and from a file.
    let good = env.pass.clone();
    env.pass = Password::Env("not the password".into());
    let out = env.run(&["snapshot", "list"]);
    out.expect_code(exit::WRONG_PASSWORD, "wrong password (variable)")
        .stderr_has("wrong password");
    let wrong_file = env.path("wrong.txt");
    fs::write(&wrong_file, "nope\n").unwrap();
    env.pass = Password::File(wrong_file);
    env.run(&["snapshot", "restore", "latest", "--stdout"])
        .expect_code(exit::WRONG_PASSWORD, "wrong password (file)")
        .stderr_has("wrong password");
    env.pass = good;
    env.run(&["snapshot", "list"])
        .ok("the right password still works");

    // Missing repository.
    let real = env.repo.clone();
    env.repo = env.path("no-such-repo");
    let out = env.run(&["snapshot", "list"]);
    out.expect_code(exit::NO_REPO, "missing repository")
        .stderr_has("no tresor repository")
        .stderr_has("no-such-repo");
    // An empty directory is no repository either.
    fs::create_dir(&env.repo).unwrap();
    env.run(&["snapshot", "create", "--stdin"])
        .expect_code(exit::NO_REPO, "empty directory as repository");
    // The real one is unaffected.
    env.repo = real;
    assert_eq!(env.snapshot_count(), 1);
}

#[test]
fn init_over_an_existing_repository_is_refused() {
    let env = Env::new();
    env.init();
    env.create_stdin("keep.txt", b"keep me\n");
    let config_before = fs::read(env.repo.join("config")).unwrap();
    let keys_before = harness::all_files(&env.repo.join("keys"));

    let out = env.run(&harness::init_args());
    assert_ne!(out.code, exit::OK, "repo init over a repository must fail");
    out.stderr_has("already exists");
    // A different password does not sneak in a second key either.
    let mut other = Env::new();
    other.repo = env.repo.clone();
    other.cache = env.cache.clone();
    other.pass = Password::Env("another password".into());
    assert_ne!(other.run(&harness::init_args()).code, exit::OK);

    assert_eq!(
        fs::read(env.repo.join("config")).unwrap(),
        config_before,
        "the config was touched"
    );
    assert_eq!(
        harness::all_files(&env.repo.join("keys")),
        keys_before,
        "the key files changed"
    );
    assert_eq!(
        env.restore_stdout("latest", None),
        b"keep me\n",
        "the repository must still open"
    );

    // A non-empty directory that is not a repository is refused too.
    let mut busy = Env::new();
    busy.repo = busy.path("busy");
    fs::create_dir(&busy.repo).unwrap();
    fs::write(busy.repo.join("precious.txt"), b"mine").unwrap();
    let out = busy.run(&harness::init_args());
    assert_ne!(out.code, exit::OK);
    out.stderr_has("not empty");
    assert_eq!(
        fs::read_dir(&busy.repo).unwrap().count(),
        1,
        "repo init wrote into a non-empty directory"
    );
}

#[test]
fn unknown_and_ambiguous_snapshot_references() {
    let env = Env::new();
    env.init();
    let out = env.run(&["snapshot", "show", "latest"]);
    assert_eq!(
        out.code,
        exit::FATAL,
        "latest in an empty repository: {}",
        out.stderr
    );
    out.stderr_has("no snapshots");

    // 17 snapshots: two of them must share their first hex digit.
    let mut by_first: HashMap<char, Vec<String>> = HashMap::new();
    for i in 0..17 {
        let v = env.create_stdin("n.txt", format!("{i}\n").as_bytes());
        let id = v["id"].as_str().unwrap().to_string();
        by_first
            .entry(id.chars().next().unwrap())
            .or_default()
            .push(id);
    }
    for reference in [
        "0123456789abcdef0123",
        "deadbeef".repeat(8).as_str(),
        "not-hex",
        "lat",
    ] {
        // Unknown: a long prefix no id has, a full-length id, garbage.
        if by_first
            .values()
            .flatten()
            .any(|id| id.starts_with(reference))
        {
            continue;
        }
        let out = env.run(&["snapshot", "show", reference]);
        out.expect_code(exit::FATAL, "unknown snapshot")
            .stderr_has("no snapshot matches");
        let out = env.run(&["snapshot", "restore", reference, "--stdout"]);
        out.expect_code(exit::FATAL, "restore of an unknown snapshot");
        assert!(out.stdout.is_empty());
    }
    let (digit, ids) = by_first.iter().find(|(_, v)| v.len() >= 2).unwrap();
    let out = env.run(&["snapshot", "show", &digit.to_string()]);
    out.expect_code(exit::FATAL, "ambiguous prefix")
        .stderr_has("ambiguous");
    // The same prefix, extended until unique, works.
    let id = &ids[0];
    let unique = (1..=64)
        .map(|n| &id[..n])
        .find(|p| ids.iter().filter(|i| i.starts_with(p)).count() == 1)
        .unwrap();
    assert_eq!(env.show(unique)["id"], id.as_str());
}

/// The largest pack file.
fn largest_pack(env: &Env) -> PathBuf {
    env.packs()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn truncated_pack_is_reported_as_damage() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("data.bin"), Rng::new(1).bytes(6 << 20)).unwrap();
    let id = env.create(&[&src])["id"].as_str().unwrap().to_string();
    env.run(&["check", "--read-data"])
        .ok("check of an intact repository");

    let pack = largest_pack(&env);
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let len = fs::metadata(&pack).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let target = env.path("out");
    let out = env.run(&[
        "snapshot",
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
    ]);
    out.expect_code(exit::DAMAGED, "restore from a truncated pack")
        .stderr_has(&name);
    let out = env.run(&[
        "snapshot",
        "restore",
        &id,
        "--stdout",
        "--path",
        &format!("{}/data.bin", env.stored(&src)),
    ]);
    out.expect_code(exit::DAMAGED, "restore --stdout from a truncated pack")
        .stderr_has(&name);

    let out = env.run(&["check", "--read-data"]);
    out.expect_code(exit::DAMAGED, "check --read-data of a truncated pack");
    assert!(
        out.stdout_str().contains(&name),
        "check should name the pack:\n{}",
        out.stdout_str()
    );
    let out = env.run(&["check", "--read-data", "--json"]);
    out.expect_code(exit::DAMAGED, "check --read-data --json");
    let problems = out.json()["problems"].as_array().unwrap().clone();
    assert!(
        problems.iter().any(|p| p.as_str().unwrap().contains(&name)),
        "{problems:?}"
    );
    // The size alone gives it away, without reading data.
    env.run(&["check"])
        .expect_code(exit::DAMAGED, "structural check of a truncated pack");
}

#[test]
fn flipped_byte_in_a_pack_never_yields_wrong_bytes() {
    let env = Env::new();
    env.init();
    let data = Rng::new(2).bytes(40 << 20);
    let id = env.create_stdin("data.bin", &data)["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(env.restore_stdout(&id, None), data);
    assert!(
        env.packs().len() >= 2,
        "40 MiB of random data should fill several packs"
    );

    let pack = largest_pack(&env);
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let len = fs::metadata(&pack).unwrap().len();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len / 2).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], len / 2).unwrap();
    drop(f);

    let out = env.run(&["snapshot", "restore", &id, "--stdout"]);
    assert_ne!(out.code, exit::OK, "restore over a flipped byte must fail");
    out.expect_code(exit::DAMAGED, "restore over a flipped byte")
        .stderr_has(&name);
    assert!(
        out.stdout.len() < data.len(),
        "the whole file was written despite the damage"
    );
    assert!(
        data.starts_with(&out.stdout),
        "restore wrote wrong bytes: its output is not a prefix of the original"
    );

    let out = env.run(&["check", "--read-data", "--json"]);
    out.expect_code(exit::DAMAGED, "check --read-data over a flipped byte");
    let problems = out.json()["problems"].as_array().unwrap().clone();
    assert!(
        problems.iter().any(|p| p.as_str().unwrap().contains(&name)),
        "{problems:?}"
    );
}

#[test]
fn missing_source_path_writes_no_snapshot() {
    let env = Env::new();
    env.init();
    let missing = env.path("does-not-exist");
    let out = env.run(&["snapshot", "create", missing.to_str().unwrap()]);
    assert_ne!(out.code, exit::OK, "a missing source must fail");
    assert_ne!(
        out.code,
        exit::INCOMPLETE,
        "a missing source is not an incomplete snapshot"
    );
    out.stderr_has("does-not-exist");
    assert_eq!(env.snapshot_count(), 0);
    assert!(env.packs().is_empty(), "nothing may be stored");
}

#[test]
fn unreadable_entries_give_an_incomplete_snapshot() {
    harness::require_root("the unreadable-entries test (runuser -u nobody)");
    let mut env = Env::new();
    chmod(env.root(), 0o755);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ok.txt"), b"readable\n").unwrap();
    fs::write(src.join("secret.txt"), b"root only\n").unwrap();
    chmod(&src.join("secret.txt"), 0o000);
    fs::create_dir(src.join("locked")).unwrap();
    fs::write(src.join("locked/inner.txt"), b"hidden\n").unwrap();
    chmod(&src.join("locked"), 0o000);
    let (uid, gid) = harness::user_ids("nobody");
    for d in [&env.repo, &env.cache] {
        fs::create_dir(d).unwrap();
        chown_r(d, uid, gid);
    }
    env.user = Some("nobody".into());
    env.init();

    let out = env.run(&["snapshot", "create", "--json", src.to_str().unwrap()]);
    out.expect_code(exit::INCOMPLETE, "backup with unreadable entries");
    out.stderr_has("secret.txt").stderr_has("locked");
    let created = out.json();
    assert_eq!(created["incomplete"], true, "{created}");

    let shown = env.show("latest");
    assert_eq!(shown["id"], created["id"]);
    assert_eq!(shown["summary"]["incomplete"], true, "{shown}");
    let errors = shown["summary"]["errors"].to_string();
    assert!(
        errors.contains("secret.txt"),
        "the errors should name the file: {errors}"
    );
    assert!(
        errors.contains("locked"),
        "the errors should name the directory: {errors}"
    );
    assert!(!errors.contains("ok.txt"), "{errors}");

    // What could be read is there; what could not is absent, not empty.
    env.user = None;
    let stored = env.stored(&src);
    assert_eq!(
        env.restore_stdout("latest", Some(&format!("{stored}/ok.txt"))),
        b"readable\n"
    );
    let out = env.try_restore_stdout("latest", Some(&format!("{stored}/secret.txt")));
    assert_ne!(
        out.code,
        exit::OK,
        "an unreadable file must not be in the snapshot"
    );
}

#[test]
fn no_password_and_no_terminal_fails_fast() {
    let mut env = Env::new();
    env.init();
    env.pass = Password::None;
    for args in [
        vec!["snapshot", "list"],
        vec!["snapshot", "create", "--stdin"],
    ] {
        let started = Instant::now();
        let out = env.run_full(&args, Input::Null, Duration::from_secs(30));
        assert_ne!(out.code, exit::OK, "{args:?} without a password");
        out.stderr_has("no password");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }
    // repo init without a password creates nothing.
    let mut fresh = Env::new();
    fresh.pass = Password::None;
    let out = fresh.run_full(&harness::init_args(), Input::Null, Duration::from_secs(30));
    assert_ne!(out.code, exit::OK);
    out.stderr_has("no password");
    assert!(
        !fresh.repo.exists(),
        "repo init without a password created {}",
        fresh.repo.display()
    );
    // An empty password is refused too.
    fresh.pass = Password::Env(String::new());
    let out = fresh.run_full(&harness::init_args(), Input::Null, Duration::from_secs(30));
    assert_ne!(out.code, exit::OK);
    out.stderr_has("empty");
}
