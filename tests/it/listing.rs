//! `snapshot ls` and `snapshot diff`, checked against what the file system itself says.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use crate::harness::{Env, Rng};

/// The test's own view of a tree: path → (type, size, mode, mtime, content hash or target).
fn scan(root: &Path) -> BTreeMap<String, (String, u64, u32, i64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let (kind, size, what) = if md.is_dir() {
                stack.push(p.clone());
                ("dir", 0, String::new())
            } else if md.file_type().is_symlink() {
                (
                    "symlink",
                    0,
                    fs::read_link(&p).unwrap().to_str().unwrap().to_string(),
                )
            } else {
                (
                    "file",
                    md.len(),
                    blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
                )
            };
            out.insert(
                rel,
                (
                    kind.to_string(),
                    size,
                    md.mode() & 0o7777,
                    md.mtime_nsec() + md.mtime() * 1_000_000_000,
                    what,
                ),
            );
        }
    }
    out
}

#[test]
fn ls_and_diff_match_the_file_system() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in ["d", "d/sub", "gone"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("d/b.bin"), Rng::new(1).bytes(300_000)).unwrap();
    fs::write(src.join("d/sub/c.txt"), b"c").unwrap();
    fs::write(src.join("gone/x"), b"x").unwrap();
    fs::write(src.join("same.txt"), b"unchanged").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let before = scan(&src);
    let s1 = env.create(&[&src])["id"].as_str().unwrap().to_string();

    // ls of the top and recursive ls agree with the file system.
    let stored = env.stored(&src);
    let ls: Vec<Value> = env
        .run(&["snapshot", "ls", &s1, &stored, "-R", "--json"])
        .ok("ls -r")
        .json()
        .as_array()
        .unwrap()
        .clone();
    let listed: BTreeMap<String, (String, u64, String)> = ls
        .iter()
        .map(|e| {
            let p = e["path"]
                .as_str()
                .unwrap()
                .strip_prefix(&format!("{stored}/"))
                .unwrap()
                .to_string();
            (
                p,
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["size"].as_u64().unwrap(),
                    e["mode"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, u64, String)> = before
        .iter()
        .map(|(p, (k, s, m, _, _))| (p.clone(), (k.clone(), *s, format!("{m:04o}"))))
        .collect();
    assert_eq!(listed, expected);
    let top = env
        .run(&["snapshot", "ls", &s1, &stored])
        .ok("ls")
        .stdout_str();
    assert_eq!(top.lines().count(), 5, "{top}"); // a.txt d gone link same.txt, nothing below

    // Change the tree: modify, remove (a file and a whole directory), add, chmod, retarget.
    fs::write(src.join("d/b.bin"), Rng::new(2).bytes(200_000)).unwrap();
    fs::remove_file(src.join("d/sub/c.txt")).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::create_dir_all(src.join("new/deep")).unwrap();
    fs::write(src.join("new/deep/n.txt"), b"new file").unwrap();
    fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("same.txt", src.join("link")).unwrap();
    let after = scan(&src);
    let s2 = env.create(&[&src])["id"].as_str().unwrap().to_string();

    // The expectation, from the two scans alone. Directories count as changed only through
    // what they hold (their own mtime changes with every entry added or removed).
    let mut expect: BTreeMap<String, &str> = BTreeMap::new();
    for (p, v) in &before {
        match after.get(p) {
            None => {
                expect.insert(p.clone(), "removed");
            }
            Some(w) if v.0 != "dir" && v != w => {
                expect.insert(p.clone(), "modified");
            }
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        expect.insert(p.clone(), "added");
    }
    let out = env
        .run(&["snapshot", "diff", &s1, &s2, "--json"])
        .ok("diff")
        .json();
    let got: BTreeMap<String, &str> = out["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let p = c["path"]
                .as_str()
                .unwrap()
                .strip_prefix(&format!("{stored}/"))
                .unwrap()
                .to_string();
            (p, c["change"].as_str().unwrap())
        })
        .collect();
    assert_eq!(got, expect, "{out}");
    let s = &out["summary"];
    assert_eq!(
        s["added"],
        expect.values().filter(|v| **v == "added").count()
    );
    assert_eq!(
        s["removed"],
        expect.values().filter(|v| **v == "removed").count()
    );
    assert_eq!(s["bytes_added"], 8); // new/deep/n.txt
    assert_eq!(s["bytes_removed"], 2); // c.txt and gone/x
    // Identical snapshots differ in nothing.
    let none = env
        .run(&["snapshot", "diff", &s2, &s2, "--json"])
        .ok("diff")
        .json();
    assert_eq!(none["changes"], serde_json::json!([]));
    let text = env
        .run(&["snapshot", "diff", &s1, &s2])
        .ok("diff")
        .stdout_str();
    assert!(
        text.contains("+ ") && text.contains("- ") && text.contains("M "),
        "{text}"
    );
}
