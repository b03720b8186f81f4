//! Backup of file trees: change detection against the parent snapshot, excludes, paths longer
//! than PATH_MAX, and access times left alone. Every expectation is computed by the test from
//! the file system itself, never copied from the program's output.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{self, Env, Rng};

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing or not a number in {v}"))
}

/// `snapshot ls SNAP STORED --recursive --json`.
fn ls(env: &Env, snap: &str, stored: &str) -> Vec<Value> {
    env.run(&["snapshot", "ls", snap, stored, "--recursive", "--json"])
        .ok("snapshot ls --recursive")
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// The paths a snapshot holds below `stored`, relative to it.
fn ls_paths(env: &Env, snap: &str, stored: &str) -> BTreeSet<String> {
    ls(env, snap, stored)
        .iter()
        .map(|e| {
            s(&e["path"])
                .strip_prefix(&format!("{stored}/"))
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every path below `root`, relative, walked by the test; `keep(rel, abs, is_dir)` decides
/// whether an entry is kept and whether a kept directory is descended into.
fn walk(root: &Path, keep: &dyn Fn(&str, &Path) -> Keep) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            match keep(&rel, &p) {
                Keep::No => continue,
                Keep::Yes => {
                    if fs::symlink_metadata(&p).unwrap().is_dir() {
                        stack.push(p.clone());
                    }
                }
                Keep::Only(names) => {
                    for n in names {
                        out.insert(format!("{rel}/{n}"));
                    }
                }
            }
            out.insert(rel);
        }
    }
    out
}

enum Keep {
    No,
    Yes,
    /// The directory with only these entries.
    Only(Vec<String>),
}

fn write_tree(root: &Path, dirs: usize, per_dir: usize) -> u64 {
    let mut total = 0;
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let body = format!("file {d}/{f}\n").repeat(1 + f % 5);
            total += body.len() as u64;
            fs::write(dir.join(format!("f{f:04}.txt")), body).unwrap();
        }
    }
    total
}

#[test]
fn unchanged_tree_of_20000_files_is_not_read_again_and_lists_identically() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let total = write_tree(&src, 100, 200);
    let first = env.create(&[&src]);
    assert_eq!(n(&first, "files"), 20_000);
    assert_eq!(n(&first, "files_new"), 20_000, "{first}");
    assert_eq!(n(&first, "bytes_read"), total);
    assert!(first["parent"].is_null(), "{first}");

    let second = env.create(&[&src]);
    assert_eq!(n(&second, "bytes_read"), 0, "{second}");
    assert_eq!(n(&second, "files_unchanged"), 20_000, "{second}");
    assert_eq!(n(&second, "files_changed") + n(&second, "files_new"), 0);
    assert_eq!(second["parent"], first["id"]);
    // Unchanged directories serialize to the same trees: only the trees of the directories
    // above the source (whose metadata moved: the repository and cache live there) are new.
    let above = src.components().count() as u64;
    assert!(
        n(&second, "blobs_added") <= above + 1,
        "{second} (at most {above} + root tree blobs may be new)"
    );

    let (a, b) = (s(&first["id"]), s(&second["id"]));
    let stored = env.stored(&src);
    let (la, lb) = (ls(&env, &a, &stored), ls(&env, &b, &stored));
    assert_eq!(la.len(), 20_100);
    assert_eq!(la, lb, "ls of the two snapshots differ");
    // Content, not just metadata: diff compares chunk lists; nothing below src may differ.
    let diff = env
        .run(&["snapshot", "diff", &a, &b, "--json"])
        .ok("diff")
        .json();
    let below: Vec<&Value> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| s(&c["path"]).starts_with(&stored))
        .collect();
    assert!(below.is_empty(), "{below:?}");
    let p = format!("{stored}/d042/f0123.txt");
    assert_eq!(
        env.restore_stdout(&b, Some(&p)),
        fs::read(src.join("d042/f0123.txt")).unwrap()
    );
    // The summary line and `show` carry the counts and the parent.
    let shown = env.show(&b);
    assert_eq!(shown["parent"], first["id"]);
    assert_eq!(n(&shown["summary"], "files_unchanged"), 20_000);
    let text = env.run(&["snapshot", "show", &b]).ok("show").stdout_str();
    assert!(text.contains("0 new, 0 changed, 20000 unchanged"), "{text}");
}

#[test]
fn changed_files_are_read_again_even_with_size_and_mtime_put_back() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(7);
    fs::write(src.join("same-size.bin"), rng.bytes(100_000)).unwrap();
    fs::write(src.join("grown.bin"), rng.bytes(50_000)).unwrap();
    fs::write(src.join("untouched.bin"), rng.bytes(70_000)).unwrap();
    let first = env.create(&[&src]);
    assert_eq!(n(&first, "bytes_read"), 220_000);

    // Timestamps are coarse (a clock tick): let it move so the writes get a new ctime.
    std::thread::sleep(Duration::from_millis(50));
    // Same size, mtime put back as `touch -d` would: only ctime tells.
    let p = src.join("same-size.bin");
    let before = fs::metadata(&p).unwrap();
    let new_same = rng.bytes(100_000);
    fs::write(&p, &new_same).unwrap();
    filetime::set_file_mtime(&p, filetime::FileTime::from_last_modification_time(&before)).unwrap();
    let after = fs::metadata(&p).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );
    assert_ne!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec())
    );
    let grown = rng.bytes(60_000);
    fs::write(src.join("grown.bin"), &grown).unwrap();
    fs::write(src.join("new.bin"), b"brand new").unwrap();

    let second = env.create(&[&src]);
    assert_eq!(n(&second, "bytes_read"), 100_000 + 60_000 + 9, "{second}");
    assert_eq!(n(&second, "files_changed"), 2, "{second}");
    assert_eq!(n(&second, "files_new"), 1, "{second}");
    assert_eq!(n(&second, "files_unchanged"), 1, "{second}");
    let id = s(&second["id"]);
    let stored = env.stored(&src);
    assert_eq!(
        env.restore_stdout(&id, Some(&format!("{stored}/same-size.bin"))),
        new_same
    );
    assert_eq!(
        env.restore_stdout(&id, Some(&format!("{stored}/grown.bin"))),
        grown
    );

    // Only the changed file is read the next time.
    std::thread::sleep(Duration::from_millis(50));
    let again = rng.bytes(12_345);
    fs::write(src.join("untouched.bin"), &again).unwrap();
    let third = env.create(&[&src]);
    assert_eq!(n(&third, "bytes_read"), 12_345, "{third}");
    assert_eq!(
        (n(&third, "files_changed"), n(&third, "files_unchanged")),
        (1, 3)
    );

    // --force reads everything and records no parent.
    let forced = env.create(&[src.as_os_str(), "--force".as_ref()]);
    assert_eq!(
        n(&forced, "bytes_read"),
        100_000 + 60_000 + 9 + 12_345,
        "{forced}"
    );
    assert_eq!(n(&forced, "files_unchanged"), 0);
    assert!(forced["parent"].is_null());

    // --parent names the snapshot to compare with: against the first one, every file
    // but the untouched-then-changed one differs or is new.
    let vs_first = env.create(&[
        src.as_os_str(),
        "--parent".as_ref(),
        s(&first["id"]).as_ref(),
    ]);
    assert_eq!(vs_first["parent"], first["id"]);
    assert_eq!(n(&vs_first, "files_unchanged"), 0, "{vs_first}");
    assert_eq!(n(&vs_first, "files_changed"), 3, "{vs_first}");
}

#[test]
fn parent_is_the_latest_snapshot_with_the_same_path_sources_and_host() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("x"), b"x in a").unwrap();
    fs::write(b.join("y"), b"y in b").unwrap();
    let only_a = env.create(&[&a]);
    // Another set of paths: no parent, everything read.
    let both = env.create(&[&a, &b]);
    assert!(both["parent"].is_null(), "{both}");
    assert_eq!(n(&both, "bytes_read"), 12);
    // Same set again (given in another order): that snapshot, not the older one of `a` alone.
    let both2 = env.create(&[&b, &a]);
    assert_eq!(both2["parent"], both["id"]);
    assert_eq!(n(&both2, "bytes_read"), 0);
    // A stream source does not change the match.
    let with_cmd = env.create(&[a.as_os_str(), "--command".as_ref(), "echo hi".as_ref()]);
    assert_eq!(with_cmd["parent"], only_a["id"], "{with_cmd}");
    assert_eq!(
        n(&with_cmd, "bytes_read"),
        3,
        "only the command output is read"
    );
    // The one-line summary says the same.
    let line = env
        .run(&[
            "snapshot",
            "create",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ])
        .ok("create")
        .stdout_str();
    assert!(
        line.contains("2 files (0 new, 0 changed, 2 unchanged), 0 B read"),
        "{line}"
    );
    // Another host: no parent.
    let other = env.create(&[a.as_os_str(), "--host".as_ref(), "elsewhere".as_ref()]);
    assert!(other["parent"].is_null(), "{other}");
    assert_eq!(n(&other, "bytes_read"), 6);
}

#[test]
fn parent_chunks_gone_from_the_repository_are_not_trusted() {
    // Data loss: a pack of the parent is destroyed and `repair index` drops its blobs. The
    // parent's trees still say the file is there; the next backup must read it again rather
    // than write a snapshot that refers to chunks the repository no longer has.
    let env = Env::new();
    // Small packs and chunks: the 6 MiB file spans several packs, trees land in the last ones.
    let mut init = crate::harness::init_args();
    init.extend(["--pack-size-mib", "1", "--chunk-min", "65536"]);
    init.extend(["--chunk-avg", "131072", "--chunk-max", "262144"]);
    env.run(&init).ok("init");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = Rng::new(3).bytes(6 << 20);
    fs::write(src.join("a-big.bin"), &big).unwrap();
    fs::write(src.join("z-small.txt"), b"small and intact").unwrap();
    let first = env.create(&[&src]);
    // Destroy one pack that holds none of the snapshot's trees (which one does depends on
    // encoder timing): a pack moved away whose absence still lets `ls` read every tree.
    let stored = env.stored(&src);
    let first_id = s(&first["id"]);
    let packs = env.packs();
    assert!(packs.len() >= 4, "{packs:?}");
    let aside = env.path("aside");
    let victim = packs
        .iter()
        .find(|p| {
            fs::rename(p, &aside).unwrap();
            let trees_ok = env
                .run(&["snapshot", "ls", &first_id, &stored, "--recursive"])
                .code
                == 0;
            if !trees_ok {
                fs::rename(&aside, p).unwrap();
            }
            trees_ok
        })
        .expect("some pack holds only data");
    fs::remove_file(&aside).unwrap();
    assert!(!victim.exists());
    env.run(&["repair", "index"]).ok("repair index");

    let second = env.create(&[&src]);
    assert_eq!(second["parent"], first["id"]);
    // The file(s) with a lost chunk are read again (a-big.bin has most of them); any left
    // unread must still be whole, which the restores below check.
    let changed = n(&second, "files_changed");
    assert!(changed >= 1, "{second}");
    assert_eq!(changed + n(&second, "files_unchanged"), 2, "{second}");
    assert!(n(&second, "bytes_read") >= 16, "{second}");
    let id = s(&second["id"]);
    assert_eq!(
        env.restore_stdout(&id, Some(&format!("{stored}/a-big.bin"))),
        big
    );
    assert_eq!(
        env.restore_stdout(&id, Some(&format!("{stored}/z-small.txt"))),
        b"small and intact"
    );
}

/// A tree with something for every exclude rule.
fn exclude_tree(src: &Path) {
    for d in [
        "keep/a/drop",
        "keep/a/b/drop",
        "keep/node_modules/pkg",
        "deep/x/y",
        "marked/sub",
        "cache/data",
        "fakecache",
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in [
        "top.txt",
        "top.tmp",
        "keep/a/drop/f",
        "keep/a/b/drop/g",
        "keep/a/file.tmp",
        "keep/node_modules/pkg/index.js",
        "deep/x/y/z.txt",
        "marked/.nobackup",
        "marked/sub/h",
        "cache/data/blob",
        "fakecache/data",
    ] {
        fs::write(src.join(f), f.as_bytes()).unwrap();
    }
    fs::write(
        src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    )
    .unwrap();
    fs::write(
        src.join("fakecache/CACHEDIR.TAG"),
        "Signature: not the one\n",
    )
    .unwrap();
}

#[test]
fn exclude_patterns_and_exclude_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    exclude_tree(&src);
    let file = env.path("excludes.txt");
    fs::write(&file, "# comment\n\n   node_modules  \n  # another\n").unwrap();
    let abs_pat = format!("{}/keep/*/drop", src.display());
    let r = env.create(&[
        src.as_os_str(),
        "--exclude".as_ref(),
        "*.tmp".as_ref(),
        "--exclude".as_ref(),
        abs_pat.as_ref(),
        "--exclude-file".as_ref(),
        file.as_os_str(),
    ]);
    let stored = env.stored(&src);
    let got = ls_paths(&env, &s(&r["id"]), &stored);
    let want = walk(&src, &|rel, abs| {
        let name = abs.file_name().unwrap().to_str().unwrap();
        let parts: Vec<&str> = rel.split('/').collect();
        // `*` is one component: keep/<one>/drop only.
        let abs_rule = parts.len() == 3 && parts[0] == "keep" && parts[2] == "drop";
        if name.ends_with(".tmp") || name == "node_modules" || abs_rule {
            Keep::No
        } else {
            Keep::Yes
        }
    });
    assert!(want.contains("keep/a/b/drop/g") && !want.contains("keep/a/drop"));
    assert_eq!(got, want);
    let shown = env.show(&s(&r["id"]));
    assert_eq!(
        shown["excludes"]["patterns"],
        serde_json::json!(["*.tmp", abs_pat, "node_modules"])
    );

    // A source path that is itself excluded stores nothing; the others are kept.
    let other = env.path("other.txt");
    fs::write(&other, b"other").unwrap();
    let r = env.create(&[
        src.as_os_str(),
        other.as_os_str(),
        "--exclude".as_ref(),
        "src".as_ref(),
    ]);
    assert_eq!(n(&r, "files"), 1, "{r}");
    assert_eq!(n(&r, "bytes_read"), 5);
}

#[test]
fn exclude_if_present_and_caches() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    exclude_tree(&src);
    let r = env.create(&[
        src.as_os_str(),
        "--exclude-if-present".as_ref(),
        ".nobackup".as_ref(),
        "--exclude-caches".as_ref(),
    ]);
    let got = ls_paths(&env, &s(&r["id"]), &env.stored(&src));
    let want = walk(&src, &|_rel, abs| {
        if !abs.is_dir() {
            return Keep::Yes;
        }
        if abs.join(".nobackup").exists() {
            return Keep::No;
        }
        let tag = fs::read(abs.join("CACHEDIR.TAG")).unwrap_or_default();
        if tag.starts_with(b"Signature: 8a477f597d28d172789f06886806bc55") {
            return Keep::Only(vec!["CACHEDIR.TAG".into()]);
        }
        Keep::Yes
    });
    assert!(want.contains("cache/CACHEDIR.TAG") && !want.contains("cache/data"));
    assert!(want.contains("fakecache/data") && !want.contains("marked"));
    assert_eq!(got, want);
}

#[test]
fn one_file_system_stores_mount_points_empty() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mnt = src.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    fs::write(src.join("here.txt"), b"here").unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tresor-test", mnt.to_str().unwrap()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !harness::precondition(ok, "mounting a tmpfs (root) for the --one-file-system test") {
        return;
    }
    let _guard = harness::Unmount(mnt.clone());
    fs::create_dir_all(mnt.join("inner")).unwrap();
    fs::write(mnt.join("inner/there.txt"), b"there").unwrap();
    let root_dev = fs::metadata(&src).unwrap().dev();
    let stored = env.stored(&src);

    let all = env.create(&[&src]);
    let want_all = walk(&src, &|_, _| Keep::Yes);
    assert!(want_all.contains("mnt/inner/there.txt"));
    assert_eq!(ls_paths(&env, &s(&all["id"]), &stored), want_all);

    let x = env.create(&[src.as_os_str(), "--one-file-system".as_ref()]);
    let want = walk(&src, &|_, abs| {
        let md = fs::symlink_metadata(abs).unwrap();
        if md.is_dir() && md.dev() != root_dev {
            Keep::Only(vec![])
        } else {
            Keep::Yes
        }
    });
    assert!(want.contains("mnt") && !want.contains("mnt/inner"));
    assert_eq!(ls_paths(&env, &s(&x["id"]), &stored), want);
    assert_eq!(env.show(&s(&x["id"]))["excludes"]["one_file_system"], true);
}

#[test]
fn reading_a_file_leaves_its_access_time_alone() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("f.txt");
    fs::write(&f, b"read me").unwrap();
    // atime older than mtime: relatime would update it on the next read.
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    let set_old = || {
        filetime::set_file_times(
            &f,
            old,
            filetime::FileTime::from_last_modification_time(&fs::metadata(&f).unwrap()),
        )
        .unwrap()
    };
    set_old();
    let r = env.create(&[&src]);
    assert_eq!(n(&r, "bytes_read"), 7, "the file was read");
    let atime = filetime::FileTime::from_last_access_time(&fs::metadata(&f).unwrap());
    assert_eq!(atime, old, "backup changed the access time");
    // Control: a plain read does update it here, so the check above can fail.
    fs::read(&f).unwrap();
    let after_read = filetime::FileTime::from_last_access_time(&fs::metadata(&f).unwrap());
    harness::precondition(
        after_read != old,
        "a file system that updates atime on read (not noatime): without it this check is vacuous",
    );
}

/// Opens directory `name` relative to `at` (reaches paths longer than PATH_MAX step by step).
fn open_dir<P: rustix::path::Arg>(at: impl rustix::fd::AsFd, name: P) -> rustix::fd::OwnedFd {
    use rustix::fs::{Mode, OFlags, openat};
    openat(at, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
}

#[test]
fn paths_longer_than_path_max_round_trip() {
    use rustix::fs::{Mode, OFlags, mkdirat, openat};
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // 30 levels of 200-byte names: about 6 KB of path, beyond PATH_MAX (4096).
    let mut dir = open_dir(rustix::fs::CWD, src.as_path());
    let mut rel = Vec::new();
    for i in 0..30 {
        let name = format!("{i:02}{}", "x".repeat(198));
        mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = open_dir(&dir, name.as_str());
        rel.push(name);
    }
    let leaf = openat(
        &dir,
        "leaf.txt",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let content = b"at the bottom of a very long path\n";
    rustix::io::write(&leaf, content).unwrap();
    drop(leaf);
    let deep = format!("{}/{}/leaf.txt", src.display(), rel.join("/"));
    assert!(deep.len() > 4096);
    assert!(
        fs::metadata(&deep).is_err(),
        "the path is not reachable by path"
    );

    let first = env.create(&[&src]);
    assert_eq!(n(&first, "files"), 1, "{first}");
    // The 30 levels plus src and the directories above it (stored from the root down).
    assert_eq!(
        n(&first, "dirs") as usize,
        30 + src.components().count() - 1
    );
    assert!(
        first["errors"].as_array().is_none_or(|e| e.is_empty()),
        "{first}"
    );
    let stored = env.stored(&src);
    let want: BTreeSet<String> = (1..=30)
        .map(|k| rel[..k].join("/"))
        .chain([format!("{}/leaf.txt", rel.join("/"))])
        .collect();
    assert_eq!(ls_paths(&env, &s(&first["id"]), &stored), want);
    let inside = format!("{stored}/{}/leaf.txt", rel.join("/"));
    assert_eq!(env.restore_stdout(&s(&first["id"]), Some(&inside)), content);
    // The parent is followed down there too.
    let second = env.create(&[&src]);
    assert_eq!(n(&second, "files_unchanged"), 1, "{second}");
    assert_eq!(n(&second, "bytes_read"), 0);

    // And the whole deep tree restores to a directory, verified, byte-exact at the bottom.
    let target = env.path("restored");
    env.run(&[
        "snapshot",
        "restore",
        &s(&second["id"]),
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ])
    .ok("restore of a tree deeper than PATH_MAX");
    let mut dir = open_dir(rustix::fs::CWD, target.join(&stored).as_path());
    for name in &rel {
        dir = open_dir(&dir, name.as_str());
    }
    let leaf = openat(&dir, "leaf.txt", OFlags::RDONLY, Mode::empty()).unwrap();
    let mut back = vec![0u8; 100];
    let got = rustix::io::read(&leaf, &mut back).unwrap();
    assert_eq!(&back[..got], content);
}

#[test]
fn a_file_that_changes_while_it_is_read_is_named_in_a_warning() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let busy = src.join("busy.log");
    let calm = src.join("calm.txt");
    // Large and compressible: reading it takes long enough for the toucher below to land
    // between the status taken before the read and the one taken after it.
    fs::write(&busy, Rng::new(3).text(192 << 20)).unwrap();
    fs::write(&calm, b"nobody writes to me\n").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let toucher = {
        let (done, busy) = (done.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut k = 0i64;
            while !done.load(Ordering::Relaxed) {
                k += 1;
                let t = filetime::FileTime::from_unix_time(1_700_000_000 + k, 0);
                filetime::set_file_mtime(&busy, t).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let out = env.run(&["snapshot", "create", src.to_str().unwrap(), "--json"]);
    done.store(true, Ordering::Relaxed);
    toucher.join().unwrap();
    // A warning, not a failure: the snapshot holds what was read, and exit 0 (not "incomplete":
    // every byte was read; what it means is for the operator to judge, so it is named).
    out.ok("backup of a file that changes meanwhile")
        .stderr_has("busy.log: changed while it was being read");
    let v = out.json();
    assert_eq!(v["incomplete"], false, "{v}");
    let errors: Vec<String> = v["errors"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("busy.log"), "{errors:?}");
    assert_eq!(n(&v, "files"), 2);
}

/// Standard input redirected from a regular file is chunked from a mapping of it (no `read`
/// copy): it must give exactly the chunks a pipe gives (so the two dedup against each other),
/// start at the file's current offset like `read` would, and restore byte-exact.
#[test]
fn stdin_from_a_file_chunks_like_a_pipe_and_starts_at_its_offset() {
    use std::io::{Seek, SeekFrom};
    use std::process::Stdio;

    let env = Env::new();
    env.init();
    // Over tresor::format::chunker::TWO_THREAD_MIN, so a mapped input is cut on two threads.
    let data = Rng::new(7).text(72 << 20);
    let file = env.path("dump.sql");
    fs::write(&file, &data).unwrap();

    let piped = env.create_stdin("db.sql", &data);
    assert!(n(&piped, "bytes_added") > data.len() as u64 / 20);
    let create = [
        "snapshot",
        "create",
        "--json",
        "--stdin",
        "--stdin-name",
        "db.sql",
    ];
    let mapped = env
        .run_full(
            &create,
            crate::harness::Input::File(file.clone()),
            Duration::from_secs(120),
        )
        .ok("snapshot create from a redirected file")
        .json();
    assert_eq!(n(&mapped, "bytes_read"), data.len() as u64);
    // The second backup of the stream has the first as parent: the stream changed, not new.
    assert_eq!(
        (n(&piped, "files_new"), n(&piped, "files_changed")),
        (1, 0),
        "{piped}"
    );
    assert_eq!(
        (n(&mapped, "files_new"), n(&mapped, "files_changed")),
        (0, 1),
        "{mapped}"
    );
    // Same chunks as the pipe: only a tree and the snapshot's own bytes are new.
    assert!(n(&mapped, "bytes_added") < 4096, "{mapped}");
    assert_eq!(env.restore_stdout(&s(&mapped["id"]), Some("db.sql")), data);

    // A file already read up to an offset: the rest is the stream.
    let mut f = fs::File::open(&file).unwrap();
    f.seek(SeekFrom::Start(1_000_001)).unwrap();
    let mut cmd = env.command(&create);
    cmd.stdin(Stdio::from(f))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = crate::harness::wait_with_timeout(
        cmd.spawn().unwrap(),
        Duration::from_secs(120),
        "snapshot create from an offset",
    );
    let tail = out.ok("snapshot create from an offset").json();
    assert_eq!(n(&tail, "bytes_read"), (data.len() - 1_000_001) as u64);
    assert_eq!(
        env.restore_stdout(&s(&tail["id"]), Some("db.sql")),
        &data[1_000_001..]
    );
}
