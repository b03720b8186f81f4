//! File trees: every kind of entry and metadata survives backup and restore.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, FileTimes};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::{self, Env, Rng, chmod};

fn ns_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// Gives every file and directory under `p` (and `p`) a distinct mtime with nanoseconds,
/// children before parents.
fn set_mtimes(p: &Path, counter: &mut i64) {
    let md = fs::symlink_metadata(p).unwrap();
    if md.file_type().is_symlink() {
        return;
    }
    if md.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            set_mtimes(&n, counter);
        }
    }
    *counter += 1;
    let ns = 1_500_000_000_000_000_000
        + *counter * 86_400_000_000_007
        + (*counter * 7919 % 1_000_000_000);
    // By path (utimensat), never through an open file: opening a fifo waits for a writer.
    let t = filetime::FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// Extended attributes of `p` (not following a symlink), sorted by name.
fn xattrs_of(p: &Path) -> Vec<(OsString, Vec<u8>)> {
    let mut v: Vec<_> = xattr::list(p)
        .map(|names| {
            names
                .map(|n| {
                    let val = xattr::get(p, &n).unwrap().unwrap_or_default();
                    (n, val)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Hard-link groups seen so far: source inode → restored inode.
type LinkMap = HashMap<u64, u64>;

/// Compares two trees entry by entry; returns the differences and the number of entries seen.
fn compare(a: &Path, b: &Path, diffs: &mut Vec<String>) -> usize {
    compare_with_links(a, b, diffs, &mut LinkMap::new())
}

fn compare_with_links(a: &Path, b: &Path, diffs: &mut Vec<String>, links: &mut LinkMap) -> usize {
    let ma = fs::symlink_metadata(a).unwrap();
    let mb = match fs::symlink_metadata(b) {
        Ok(m) => m,
        Err(e) => {
            diffs.push(format!("{}: missing after restore ({e})", b.display()));
            return 1;
        }
    };
    let (ta, tb) = (ma.file_type(), mb.file_type());
    let kind = |t: fs::FileType| {
        if t.is_dir() {
            "dir"
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_file() {
            "file"
        } else if t.is_fifo() {
            "fifo"
        } else if t.is_char_device() {
            "chardev"
        } else if t.is_block_device() {
            "blockdev"
        } else if t.is_socket() {
            "socket"
        } else {
            "other"
        }
    };
    if kind(ta) != kind(tb) {
        diffs.push(format!("{}: {} became {}", a.display(), kind(ta), kind(tb)));
        return 1;
    }
    let mut n = 1;
    if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
        diffs.push(format!(
            "{}: owner {}:{} became {}:{}",
            a.display(),
            ma.uid(),
            ma.gid(),
            mb.uid(),
            mb.gid()
        ));
    }
    if xattrs_of(a) != xattrs_of(b) {
        diffs.push(format!(
            "{}: xattrs {:?} became {:?}",
            a.display(),
            xattrs_of(a),
            xattrs_of(b)
        ));
    }
    if ta.is_symlink() {
        let (la, lb) = (fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
        if la != lb {
            diffs.push(format!("{}: link target {la:?} became {lb:?}", a.display()));
        }
        if mtime_ns(&ma) != mtime_ns(&mb) {
            diffs.push(format!("{}: symlink mtime differs", a.display()));
        }
        return n; // a symlink's mode is always 0777 on Linux
    }
    if (ta.is_char_device() || ta.is_block_device()) && ma.rdev() != mb.rdev() {
        diffs.push(format!(
            "{}: device {:#x} became {:#x}",
            a.display(),
            ma.rdev(),
            mb.rdev()
        ));
    }
    if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        diffs.push(format!(
            "{}: mode {:o} became {:o}",
            a.display(),
            ma.mode() & 0o7777,
            mb.mode() & 0o7777
        ));
    }
    if mtime_ns(&ma) != mtime_ns(&mb) {
        diffs.push(format!(
            "{}: mtime {} ns became {} ns",
            a.display(),
            mtime_ns(&ma),
            mtime_ns(&mb)
        ));
    }
    if ta.is_file() {
        if ma.nlink() != mb.nlink() {
            diffs.push(format!(
                "{}: {} links became {}",
                a.display(),
                ma.nlink(),
                mb.nlink()
            ));
        }
        if ma.nlink() > 1 {
            let first = *links.entry(ma.ino()).or_insert(mb.ino());
            if first != mb.ino() {
                diffs.push(format!(
                    "{}: no longer a hard link of its group",
                    a.display()
                ));
            }
        }
        // A sparse source stays sparse: at most one 4 KiB block more than the source holds.
        if ma.blocks() * 512 < ma.len() && mb.blocks() > ma.blocks() + 8 {
            diffs.push(format!(
                "{}: sparse file took {} blocks, the source {}",
                a.display(),
                mb.blocks(),
                ma.blocks()
            ));
        }
        if fs::read(a).unwrap() != fs::read(b).unwrap() {
            diffs.push(format!(
                "{}: content differs ({} vs {} bytes)",
                a.display(),
                ma.len(),
                mb.len()
            ));
        }
    } else if ta.is_dir() {
        let names = |d: &Path| {
            let mut v: Vec<OsString> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        if na != nb {
            diffs.push(format!("{}: entries {na:?} became {nb:?}", a.display()));
        }
        for name in na.iter().filter(|x| nb.contains(x)) {
            n += compare_with_links(&a.join(name), &b.join(name), diffs, links);
        }
    }
    n
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap();
}

/// The source tree; returns the number of entries it holds (itself included).
fn build_tree(src: &Path) -> usize {
    let mut rng = Rng::new(42);
    fs::create_dir(src).unwrap();
    write(&src.join("empty.txt"), b"");
    fs::create_dir(src.join("empty_dir")).unwrap();
    write(&src.join("big.bin"), &rng.bytes(50 << 20));
    write(&src.join("Ünïcødé ✓.txt"), "unicode content ✓\n".as_bytes());
    write(
        &src.join("日本語のファイル名.txt"),
        "こんにちは\n".as_bytes(),
    );
    write(
        &src.join(OsString::from_vec(b"raw-\xff\xfe-name.bin".to_vec())),
        b"non-utf8 name\n",
    );
    fs::create_dir(src.join(OsString::from_vec(b"dir-\xff".to_vec()))).unwrap();
    write(
        &src.join(OsString::from_vec(b"dir-\xff/inside.txt".to_vec())),
        b"inside a non-utf8 dir\n",
    );

    fs::create_dir(src.join("links")).unwrap();
    symlink("../empty.txt", src.join("links/relative")).unwrap();
    symlink("/etc/hostname", src.join("links/absolute")).unwrap();
    symlink("does/not/exist", src.join("links/dangling")).unwrap();
    symlink(
        OsString::from_vec(b"odd-\xff-target".to_vec()),
        src.join("links/non-utf8-target"),
    )
    .unwrap();

    let mut deep = src.join("deep");
    for i in 0..45 {
        deep.push(format!("level{i:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    write(&deep.join("leaf.txt"), b"at the bottom\n");

    let perms = src.join("perms");
    fs::create_dir(&perms).unwrap();
    write(&perms.join("private"), b"0600\n");
    write(&perms.join("exec"), b"#!/bin/sh\necho 0751\n");
    write(&perms.join("setuid"), b"setuid\n");
    fs::create_dir(perms.join("readonly_dir")).unwrap();
    write(&perms.join("readonly_dir/file"), b"in a 0500 directory\n");

    let owned = src.join("owned");
    fs::create_dir(&owned).unwrap();
    write(&owned.join("theirs.txt"), b"owned by 1234:5678\n");
    symlink("theirs.txt", owned.join("link")).unwrap();
    // chown before chmod: chown clears setuid bits.
    std::os::unix::fs::chown(&owned, Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(owned.join("theirs.txt"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(owned.join("link"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(perms.join("setuid"), Some(1234), Some(5678)).unwrap();

    let sub = src.join("sub");
    fs::create_dir_all(sub.join("inner")).unwrap();
    write(&sub.join("a.txt"), b"sub a\n");
    write(&sub.join("inner/b.txt"), &rng.text(300_000));

    // Fidelity of tree format 2: hard links across directories, a sparse file, special files,
    // extended attributes, a name of the maximum length.
    let special = src.join("special");
    fs::create_dir(&special).unwrap();
    write(&special.join("linked"), b"one file, three names\n");
    fs::hard_link(special.join("linked"), special.join("linked-again")).unwrap();
    fs::hard_link(special.join("linked"), src.join("deep/linked-elsewhere")).unwrap();
    let sparse = File::create(special.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    for off in [0u64, 20 << 20, (64 << 20) - 4096] {
        std::os::unix::fs::FileExt::write_all_at(&sparse, &rng.bytes(4096), off).unwrap();
    }
    drop(sparse);
    let ok = std::process::Command::new("mkfifo")
        .arg(special.join("fifo"))
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = std::process::Command::new("mknod")
        .args([
            special.join("null-like").as_os_str(),
            "c".as_ref(),
            "1".as_ref(),
            "3".as_ref(),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    drop(std::os::unix::net::UnixListener::bind(special.join("sock")).unwrap());
    write(&special.join("x".repeat(255)), b"a name of 255 bytes\n");
    if harness::precondition(
        xattr::set(special.join("linked"), "user.probe", b"1").is_ok(),
        "a file system that takes user xattrs",
    ) {
        xattr::set(special.join("linked"), "user.origin", b"\x00binary\xff").unwrap();
        xattr::set(&special, "user.dir-note", b"on a directory").unwrap();
    }

    let old = src.join("before-1970.txt");
    write(&old, b"old\n");

    chmod(&perms.join("private"), 0o600);
    chmod(&perms.join("exec"), 0o751);
    chmod(&perms.join("setuid"), 0o4755);
    chmod(&owned.join("theirs.txt"), 0o640);
    chmod(&perms.join("readonly_dir"), 0o500);
    chmod(&src.join("empty_dir"), 0o751);

    let mut counter = 0;
    set_mtimes(src, &mut counter);
    File::open(&old)
        .unwrap()
        .set_times(FileTimes::new().set_modified(ns_time(-86_400 * 365 * 3 - 123_456_789)))
        .unwrap();
    // Sanity: the setup did what it says.
    assert_eq!(
        fs::metadata(perms.join("setuid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(fs::metadata(owned.join("theirs.txt")).unwrap().uid(), 1234);
    let mut d = Vec::new();
    compare(src, src, &mut d) // counts the entries
}

#[test]
fn file_tree_round_trip() {
    harness::require_root("the file tree test (chown to 1234:5678)");
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let entries = build_tree(&src);
    assert!(
        entries > 60,
        "the tree should have many entries, has {entries}"
    );

    let created = env.create(&[&src]);
    let id = created["id"].as_str().unwrap().to_string();
    assert!(
        created["bytes_read"].as_u64().unwrap() > 50 << 20,
        "{created}"
    );
    assert_eq!(created["incomplete"], false, "{created}");
    let stored = env.stored(&src);

    // Whole snapshot.
    let target = env.path("restore-all");
    env.run(&[
        "snapshot",
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
    ])
    .ok("restore --target");
    let restored = target.join(&stored);
    let mut diffs = Vec::new();
    let seen = compare(&src, &restored, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{} differences after restore:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert_eq!(
        seen, entries,
        "the comparison saw fewer entries than the source has"
    );

    // One subdirectory with --path: lands at target/<stored path>, nothing else besides its parents.
    let target2 = env.path("restore-sub");
    let sub_stored = format!("{stored}/sub");
    env.run(&[
        "snapshot",
        "restore",
        &id,
        "--path",
        &sub_stored,
        "--target",
        target2.to_str().unwrap(),
    ])
    .ok("restore --path sub");
    let mut diffs = Vec::new();
    compare(&src.join("sub"), &target2.join(&sub_stored), &mut diffs);
    assert!(
        diffs.is_empty(),
        "--path restore differs:\n{}",
        diffs.join("\n")
    );
    let wanted = PathBuf::from(&sub_stored);
    let mut stack = vec![target2.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(&target2).unwrap();
            assert!(
                wanted.starts_with(rel) || rel.starts_with(&wanted),
                "--path {sub_stored} restored something outside it: {}",
                rel.display()
            );
            if p.is_dir() && !fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
                stack.push(p);
            }
        }
    }

    // Single files to stdout.
    for rel in ["Ünïcødé ✓.txt", "sub/inner/b.txt", "perms/setuid"] {
        let got = env.restore_stdout(&id, Some(&format!("{stored}/{rel}")));
        assert!(
            got == fs::read(src.join(rel)).unwrap(),
            "--stdout --path {rel}: wrong bytes"
        );
    }
    let mut deep_rel = String::from("deep");
    for i in 0..45 {
        deep_rel.push_str(&format!("/level{i:02}"));
    }
    deep_rel.push_str("/leaf.txt");
    assert_eq!(
        env.restore_stdout(&id, Some(&format!("{stored}/{deep_rel}"))),
        b"at the bottom\n"
    );

    // A second backup of the unchanged tree adds (almost) nothing.
    let again = env.create(&[&src]);
    let added = again["bytes_added"].as_u64().unwrap();
    assert!(added < 100_000, "an unchanged tree added {added} bytes");
}
