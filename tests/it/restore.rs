//! `snapshot restore` into directories: selections, overwrite modes, verification, holes, hard
//! links, special files, xattrs, symlinks in the target, and re-restores that write nothing.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, FileTimes};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{self, Env, Out, Rng};

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// `snapshot restore ID --target T --json EXTRA…`; asserts exit 0 and returns the summary.
/// Runs `snapshot restore ID --target TARGET EXTRA…`, whatever its outcome.
fn run_restore(env: &Env, id: &str, target: &Path, extra: &[&str]) -> Out {
    let mut a = vec![
        "snapshot",
        "restore",
        id,
        "--target",
        target.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    env.run(&a)
}

/// A restore that must succeed; its JSON summary.
fn restore(env: &Env, id: &str, target: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(extra);
    let out = run_restore(env, id, target, &a);
    out.ok(&format!("restore {}", extra.join(" ")));
    out.json()["summary"].clone()
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// Every entry under `dir` (not following symlinks), relative to it.
fn entries(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn set_mtime(p: &Path, t: std::time::SystemTime) {
    File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_times(FileTimes::new().set_modified(t))
        .unwrap();
}

fn id_of(created: &Value) -> String {
    created["id"].as_str().unwrap().to_string()
}

#[test]
fn include_and_exclude_select_what_an_independent_rule_expects() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for rel in [
        "etc/nginx/nginx.conf",
        "etc/nginx/sites/default",
        "etc/hosts",
        "etc/app.conf",
        "etc/secret.conf",
        "var/cache/x.conf",
        "var/cache/blob",
        "var/log/syslog",
        "var/log/old/rotated.conf",
        "home/u/notes.txt",
        "home/u/deep/er/still.conf",
    ] {
        write(&src.join(rel), rel.as_bytes());
    }
    for d in ["etc/nginx/empty", "empty_top", "home/u/emptydir"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    write(
        &src.join(OsString::from_vec(b"raw-\xff.conf".to_vec())),
        b"non-utf8 name",
    );
    let secret_dir = src.join(OsString::from_vec(b"secret-\xfe".to_vec()));
    write(
        &secret_dir.join("inside.conf"),
        b"excluded with its directory",
    );

    let id = id_of(&env.create(&[&src]));
    let stored = env.stored(&src);
    let target = env.path("out");
    let nginx = format!("{stored}/etc/nginx/**");
    let cache = format!("/{stored}/var/cache/");
    let sum = restore(
        &env,
        &id,
        &target,
        &[
            "--include",
            "*.conf",
            "--include",
            &nginx,
            "--exclude",
            "secret*",
            "--exclude",
            &cache,
        ],
    );

    // The rule, written out by hand on the source tree.
    let all = entries(&src);
    let excluded = |rel: &Path| {
        rel.components()
            .any(|c| c.as_os_str().as_bytes().starts_with(b"secret"))
            || rel.starts_with("var/cache")
    };
    let included = |rel: &Path| {
        rel.as_os_str().as_bytes().ends_with(b".conf")
            || (rel.starts_with("etc/nginx") && rel != Path::new("etc/nginx"))
    };
    let mut expected = BTreeSet::new();
    for rel in &all {
        if excluded(rel) || !included(rel) {
            continue;
        }
        for a in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            expected.insert(a.to_path_buf());
        }
    }
    assert!(expected.contains(Path::new("etc/nginx/empty")));
    assert!(expected.contains(&PathBuf::from(OsString::from_vec(
        b"raw-\xff.conf".to_vec()
    ))));
    assert!(!expected.contains(Path::new("var/log/syslog")));
    let got = entries(&target.join(&stored));
    assert_eq!(
        got, expected,
        "restored entries differ from the selection rule"
    );
    // Nothing outside the stored path either: only its parent chain.
    for e in entries(&target) {
        assert!(
            Path::new(&stored).starts_with(&e) || e.starts_with(&stored),
            "{} restored outside the selection",
            e.display()
        );
    }
    let files = expected
        .iter()
        .filter(|p| src.join(p).is_file())
        .collect::<Vec<_>>();
    assert_eq!(n(&sum, "files"), files.len() as u64, "{sum}");
    for f in files {
        assert_eq!(
            fs::read(target.join(&stored).join(f)).unwrap(),
            fs::read(src.join(f)).unwrap()
        );
    }

    // A bad glob is a usage-level error naming it.
    run_restore(&env, &id, &target, &["--include", "a["])
        .expect_code(harness::exit::FATAL, "bad glob")
        .stderr_has("a[");
}

#[test]
fn overwrite_modes_and_verify() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(7);
    write(&src.join("f1"), &rng.bytes(10_000));
    write(&src.join("f2"), &rng.bytes(20_000));
    write(&src.join("d/f3"), &rng.bytes(30_000));
    // Over one decode batch (32 MiB): the big-file path.
    write(&src.join("big"), &rng.bytes(33 << 20));
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    let t = target.join(env.stored(&src));
    let same = |rel: &str| fs::read(src.join(rel)).unwrap() == fs::read(t.join(rel)).unwrap();
    let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();

    let s = restore(&env, &id, &target, &["--verify"]);
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (4, 0), "{s}");
    assert!(["f1", "f2", "d/f3", "big"].iter().all(|f| same(f)));

    // always: identical files are kept…
    let s = restore(&env, &id, &target, &[]);
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (0, 4), "{s}");
    assert_eq!(n(&s, "bytes"), 0);
    // …same size and mtime but other content is rewritten (the content is read), as is a
    // missing file.
    let m1 = mtime(&t.join("f1"));
    let mut b = fs::read(t.join("f1")).unwrap();
    b[5000] ^= 0xff;
    fs::write(t.join("f1"), &b).unwrap();
    set_mtime(&t.join("f1"), m1);
    let mb = mtime(&t.join("big"));
    File::options()
        .write(true)
        .open(t.join("big"))
        .unwrap()
        .write_all_at(b"X", 20 << 20)
        .unwrap();
    set_mtime(&t.join("big"), mb);
    fs::remove_file(t.join("d/f3")).unwrap();
    let s = restore(&env, &id, &target, &["--overwrite", "always"]);
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (3, 1), "{s}");
    assert_eq!(n(&s, "bytes"), 10_000 + 30_000 + (33 << 20));
    assert!(["f1", "f2", "d/f3", "big"].iter().all(|f| same(f)));

    // if-changed: size and mtime decide, without reading.
    let m1 = mtime(&t.join("f1"));
    let mut b = fs::read(t.join("f1")).unwrap();
    b[0] ^= 1;
    fs::write(t.join("f1"), &b).unwrap();
    set_mtime(&t.join("f1"), m1);
    let mut b2 = fs::read(t.join("f2")).unwrap();
    b2[0] ^= 1;
    fs::write(t.join("f2"), &b2).unwrap();
    set_mtime(&t.join("f2"), UNIX_EPOCH + Duration::from_secs(1_000_000));
    let s = restore(&env, &id, &target, &["--overwrite", "if-changed"]);
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (1, 3), "{s}");
    assert_eq!(
        fs::read(t.join("f1")).unwrap(),
        b,
        "if-changed kept f1 as it was"
    );
    assert!(same("f2"), "if-changed rewrote f2 (its mtime differs)");

    // never: existing files stay as they are, missing ones are restored; an existing directory
    // keeps its own metadata.
    fs::write(t.join("f2"), b"modified").unwrap();
    harness::chmod(&t.join("d"), 0o753);
    fs::remove_file(t.join("d/f3")).unwrap();
    let s = restore(&env, &id, &target, &["--overwrite", "never"]);
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (1, 3), "{s}");
    assert_eq!(fs::read(t.join("f2")).unwrap(), b"modified");
    assert_eq!(fs::read(t.join("f1")).unwrap(), b);
    assert!(same("d/f3"));
    let dir_mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(dir_mode(&t.join("d")), 0o753);

    // --verify names the files that differ and exits 13.
    let out = run_restore(&env, &id, &target, &["--overwrite", "never", "--verify"]);
    out.expect_code(harness::exit::DAMAGED, "verify after never")
        .stderr_has(t.join("f1").to_str().unwrap())
        .stderr_has(t.join("f2").to_str().unwrap());

    // always + --verify repairs everything and passes.
    let out = run_restore(&env, &id, &target, &["--verify", "--json"]);
    out.ok("always --verify");
    let v = out.json();
    assert_eq!(v["verify"]["files"], 4, "{v}");
    assert_eq!(v["verify"]["mismatches"].as_array().unwrap().len(), 0);
    assert!(["f1", "f2", "d/f3", "big"].iter().all(|f| same(f)));
    assert_eq!(dir_mode(&t.join("d")), dir_mode(&src.join("d")));
}

#[test]
fn sparse_file_restores_sparse() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let p = src.join("sparse.img");
    let f = File::create(&p).unwrap();
    f.set_len(64 << 20).unwrap();
    let mut rng = Rng::new(3);
    for off in [0u64, 4096 * 1000, 40 << 20, (64 << 20) - 4096] {
        f.write_all_at(&rng.bytes(4096), off).unwrap();
    }
    drop(f);
    let src_alloc = fs::metadata(&p).unwrap().blocks() * 512;
    if !harness::precondition(
        src_alloc <= 8 << 20,
        &format!("a file system that keeps holes (the source took {src_alloc} bytes)"),
    ) {
        return;
    }
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    restore(&env, &id, &target, &[]);
    let r = target.join(env.stored(&src)).join("sparse.img");
    let alloc = fs::metadata(&r).unwrap().blocks() * 512;
    assert!(
        alloc <= 1 << 20,
        "a 64 MiB file with 16 KiB of data took {alloc} bytes on restore"
    );
    assert_eq!(fs::metadata(&r).unwrap().len(), 64 << 20);
    assert!(
        fs::read(&r).unwrap() == fs::read(&p).unwrap(),
        "content differs"
    );
}

#[test]
fn hard_links_restore_as_links() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"shared by three names");
    write(&src.join("x"), b"shared by two");
    fs::create_dir(src.join("sub")).unwrap();
    fs::hard_link(src.join("a"), src.join("sub/b")).unwrap();
    fs::hard_link(src.join("a"), src.join("c")).unwrap();
    fs::hard_link(src.join("x"), src.join("sub/y")).unwrap();
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    let s = restore(&env, &id, &target, &[]);
    let t = target.join(env.stored(&src));
    let md = |rel: &str| fs::metadata(t.join(rel)).unwrap();
    assert_eq!(n(&s, "hardlinks"), 3, "{s}");
    assert_eq!(n(&s, "files"), 2, "{s}");
    assert_eq!(md("a").ino(), md("sub/b").ino());
    assert_eq!(md("a").ino(), md("c").ino());
    assert_eq!(md("a").nlink(), 3);
    assert_eq!(md("x").ino(), md("sub/y").ino());
    assert_eq!(md("x").nlink(), 2);
    assert_ne!(md("a").ino(), md("x").ino());
    assert_eq!(fs::read(t.join("c")).unwrap(), b"shared by three names");

    // Again into the same target: nothing written, the links stay links.
    let s = restore(&env, &id, &target, &[]);
    assert_eq!(n(&s, "files"), 0, "{s}");
    assert_eq!(md("a").nlink(), 3);

    // Excluding the first name: the others are still linked to each other.
    let target2 = env.path("out2");
    let only = format!("{}/a", env.stored(&src));
    restore(&env, &id, &target2, &["--exclude", &only]);
    let t2 = target2.join(env.stored(&src));
    assert!(!t2.join("a").exists());
    let b = fs::metadata(t2.join("sub/b")).unwrap();
    assert_eq!(b.ino(), fs::metadata(t2.join("c")).unwrap().ino());
    assert_eq!(b.nlink(), 2);
}

#[test]
fn fifo_and_socket_are_recreated() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    harness::chmod(&src.join("pipe"), 0o640);
    let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    drop(sock);
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    let s = restore(&env, &id, &target, &[]);
    let t = target.join(env.stored(&src));
    let pipe = fs::symlink_metadata(t.join("pipe")).unwrap();
    assert!(pipe.file_type().is_fifo(), "{s}");
    assert_eq!(pipe.mode() & 0o7777, 0o640);
    let sock_path = t.join("sock");
    if sock_path.as_os_str().len() < 108 {
        assert!(
            fs::symlink_metadata(&sock_path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        assert_eq!(n(&s, "specials"), 2, "{s}");
    } else {
        assert_eq!(s["warnings"].as_array().unwrap().len(), 1, "{s}");
    }
}

#[test]
fn device_nodes_as_root() {
    if !harness::precondition(harness::is_root(), "root, to create device nodes") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let chr = rustix::fs::makedev(1, 3);
    let blk = rustix::fs::makedev(7, 200);
    for (name, ft, dev) in [
        ("null", rustix::fs::FileType::CharacterDevice, chr),
        ("loop", rustix::fs::FileType::BlockDevice, blk),
    ] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join(name),
            ft,
            rustix::fs::Mode::from_raw_mode(0o620),
            dev,
        )
        .unwrap();
        harness::chmod(&src.join(name), 0o620);
    }
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    let s = restore(&env, &id, &target, &[]);
    assert_eq!(n(&s, "specials"), 2, "{s}");
    let t = target.join(env.stored(&src));
    let c = fs::symlink_metadata(t.join("null")).unwrap();
    assert!(c.file_type().is_char_device());
    assert_eq!(c.rdev(), chr);
    assert_eq!(c.mode() & 0o7777, 0o620);
    let b = fs::symlink_metadata(t.join("loop")).unwrap();
    assert!(b.file_type().is_block_device());
    assert_eq!(b.rdev(), blk);
}

#[test]
fn user_xattrs_round_trip() {
    let env = Env::new();
    let probe = env.path("probe");
    fs::write(&probe, b"").unwrap();
    let probed = xattr::set(&probe, "user.probe", b"1");
    if !harness::precondition(
        probed.is_ok(),
        &format!("a file system that takes user xattrs ({probed:?})"),
    ) {
        return;
    }
    env.init();
    let src = env.path("src");
    write(&src.join("d/file"), b"with attributes");
    xattr::set(src.join("d/file"), "user.comment", b"hello").unwrap();
    xattr::set(src.join("d/file"), "user.binary", b"\x00\xff\x01").unwrap();
    xattr::set(src.join("d"), "user.dir", b"on a directory").unwrap();
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    // Stale user attributes on an identical kept file are removed.
    let s = restore(&env, &id, &target, &[]);
    assert_eq!(s["warnings"].as_array().unwrap().len(), 0, "{s}");
    let t = target.join(env.stored(&src));
    xattr::set(t.join("d/file"), "user.stale", b"x").unwrap();
    let s = restore(&env, &id, &target, &[]);
    assert_eq!(n(&s, "files_skipped"), 1, "{s}");
    let get = |p: &Path, name: &str| xattr::get(p, name).unwrap();
    assert_eq!(
        get(&t.join("d/file"), "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        get(&t.join("d/file"), "user.binary").as_deref(),
        Some(&b"\x00\xff\x01"[..])
    );
    assert_eq!(get(&t.join("d/file"), "user.stale"), None);
    assert_eq!(
        get(&t.join("d"), "user.dir").as_deref(),
        Some(&b"on a directory"[..])
    );
}

#[test]
fn symlinks_in_the_target_are_replaced_never_followed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("file"), b"restored content");
    write(&src.join("dir/inner"), b"inner");
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    let t = target.join(env.stored(&src));
    fs::create_dir_all(&t).unwrap();
    let victim = env.path("victim");
    fs::write(&victim, b"must not change").unwrap();
    let victim_dir = env.path("victim_dir");
    fs::create_dir(&victim_dir).unwrap();
    std::os::unix::fs::symlink(&victim, t.join("file")).unwrap();
    std::os::unix::fs::symlink(&victim_dir, t.join("dir")).unwrap();

    // never: a symlink in the way of a directory blocks it; nothing goes through it.
    let s = restore(&env, &id, &target, &["--overwrite", "never"]);
    assert!(!s["warnings"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);
    assert_eq!(fs::read(&victim).unwrap(), b"must not change");

    restore(&env, &id, &target, &[]);
    assert_eq!(fs::read(&victim).unwrap(), b"must not change");
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);
    assert!(fs::symlink_metadata(t.join("file")).unwrap().is_file());
    assert!(fs::symlink_metadata(t.join("dir")).unwrap().is_dir());
    assert_eq!(fs::read(t.join("file")).unwrap(), b"restored content");
    assert_eq!(fs::read(t.join("dir/inner")).unwrap(), b"inner");

    // --path: a symlink in place of a stored parent is not followed either.
    let target2 = env.path("out2");
    let t2 = target2.join(env.stored(&src));
    fs::create_dir_all(t2.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim_dir, &t2).unwrap();
    let sub = format!("{}/dir", env.stored(&src));
    let args = |mode: &'static str| {
        vec![
            "snapshot".to_string(),
            "restore".into(),
            id.clone(),
            "--target".into(),
            target2.to_str().unwrap().into(),
            "--path".into(),
            sub.clone(),
            "--overwrite".into(),
            mode.into(),
        ]
    };
    env.run(&args("never"))
        .expect_code(harness::exit::FATAL, "--path under a symlink with never")
        .stderr_has("not a directory");
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);
    env.run(&args("always")).ok("--path under a symlink");
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);
    assert!(fs::symlink_metadata(&t2).unwrap().is_dir());
    assert_eq!(fs::read(t2.join("dir/inner")).unwrap(), b"inner");
}

#[test]
fn an_entry_that_cannot_be_restored_exits_3_and_the_rest_is_restored() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    write(&src.join("blocked"), b"a file in the snapshot");
    write(&src.join("z"), b"z");
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    let t = target.join(env.stored(&src));
    // A non-empty directory where the snapshot has a file: never removed recursively.
    write(&t.join("blocked/keep"), b"user data");
    let out = run_restore(&env, &id, &target, &[]);
    out.expect_code(harness::exit::INCOMPLETE, "restore over a directory")
        .stderr_has("blocked");
    assert_eq!(fs::read(t.join("blocked/keep")).unwrap(), b"user data");
    assert_eq!(fs::read(t.join("a")).unwrap(), b"a");
    assert_eq!(fs::read(t.join("z")).unwrap(), b"z");
}

#[test]
fn re_restore_of_2000_files_writes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut rng = Rng::new(11);
    for i in 0..2000 {
        let size = 100 + (rng.next_u64() % 4000) as usize;
        write(
            &src.join(format!("d{:02}/f{i:04}", i % 20)),
            &rng.bytes(size),
        );
    }
    let id = id_of(&env.create(&[&src]));
    let target = env.path("out");
    let started = Instant::now();
    let s = restore(&env, &id, &target, &[]);
    let fresh = started.elapsed();
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (2000, 0), "{s}");
    let started = Instant::now();
    let s = restore(&env, &id, &target, &[]);
    let again = started.elapsed();
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (0, 2000), "{s}");
    assert_eq!(n(&s, "bytes"), 0);
    eprintln!("2000 files: fresh restore {fresh:?}, re-restore {again:?}");
    let t = target.join(env.stored(&src));
    for f in harness::all_files(&src).iter().step_by(97) {
        let rel = f.strip_prefix(&src).unwrap();
        assert_eq!(fs::read(t.join(rel)).unwrap(), fs::read(f).unwrap());
    }
}

#[test]
fn device_nodes_without_root_are_warnings_not_failures() {
    if !harness::precondition(
        harness::is_root(),
        "root, to create the device node and to run as nobody",
    ) {
        return;
    }
    let mut env = Env::new();
    harness::chmod(env.root(), 0o755);
    let src = env.path("src");
    write(&src.join("plain"), b"a plain file");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o644),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let target = env.path("out");
    let (uid, gid) = harness::user_ids("nobody");
    for d in [&env.repo, &env.cache, &target] {
        fs::create_dir(d).unwrap();
        harness::chown_r(d, uid, gid);
    }
    env.user = Some("nobody".into());
    env.init();
    let id = id_of(&env.create(&[&src]));
    let out = run_restore(&env, &id, &target, &["--json"]);
    out.ok("restore with a device node as nobody")
        .stderr_has("warning")
        .stderr_has("needs root");
    let s = out.json()["summary"].clone();
    assert_eq!(s["warnings"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(n(&s, "specials"), 0, "{s}");
    let t = target.join(env.stored(&src));
    assert_eq!(fs::read(t.join("plain")).unwrap(), b"a plain file");
    assert!(fs::symlink_metadata(t.join("null")).is_err());
}

/// Opens `rel` (a relative path under PATH_MAX) inside `dir` without building a full path.
fn open_under(dir: &Path, rel: &Path) -> File {
    let d = File::open(dir).unwrap();
    File::from(
        rustix::fs::openat(
            &d,
            rel,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
        )
        .unwrap(),
    )
}

#[test]
fn paths_longer_than_path_max_restore() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let seg = |c: char| std::iter::repeat_n(c, 200).collect::<String>();
    let inner = PathBuf::from(seg('a')).join(seg('b')).join(seg('c'));
    write(&src.join(&inner).join("leaf.txt"), b"deeper than PATH_MAX");
    let mut rng = Rng::new(9);
    let big = rng.bytes(100_000);
    write(&src.join(&inner).join("data.bin"), &big);
    fs::hard_link(
        src.join(&inner).join("data.bin"),
        src.join(&inner).join("data-link.bin"),
    )
    .unwrap();
    std::os::unix::fs::symlink("leaf.txt", src.join(&inner).join("link")).unwrap();
    let id = id_of(&env.create(&[&src]));

    // A target whose own path is long: with the stored path and `inner`, entries end up
    // beyond 4096 bytes.
    let mut target = env.path("t");
    while target.as_os_str().len() < 3600 {
        target.push(seg('t'));
    }
    fs::create_dir_all(&target).unwrap();
    let t = target.join(env.stored(&src));
    let leaf_len = t.join(&inner).join("leaf.txt").as_os_str().len();
    assert!(leaf_len > 4096, "the test path is only {leaf_len} bytes");

    let s = restore(&env, &id, &target, &["--verify"]);
    assert_eq!((n(&s, "files"), n(&s, "hardlinks")), (2, 1), "{s}");
    assert_eq!(s["failures"].as_array().unwrap().len(), 0, "{s}");
    let read = |name: &str| {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut open_under(&t, &inner.join(name)), &mut v).unwrap();
        v
    };
    assert_eq!(read("leaf.txt"), b"deeper than PATH_MAX");
    assert!(read("data.bin") == big);
    let ino = |name: &str| open_under(&t, &inner.join(name)).metadata().unwrap().ino();
    assert_eq!(ino("data.bin"), ino("data-link.bin"));
    let d = File::open(&t).unwrap();
    assert_eq!(
        rustix::fs::readlinkat(&d, inner.join("link"), Vec::new())
            .unwrap()
            .as_bytes(),
        b"leaf.txt"
    );
    // Again: nothing written.
    let s = restore(&env, &id, &target, &[]);
    assert_eq!((n(&s, "files"), n(&s, "files_skipped")), (0, 2), "{s}");
}
