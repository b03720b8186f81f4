//! Every command against a repository in the real S3 server, beyond the life in `s3.rs`:
//! `--command` backups (and a failing dumper writing no snapshot), `stats`, `check
//! --read-data-subset`, `repair index` and `repair snapshots`, `key add/list/remove` (the
//! removed key's password is refused), `snapshot ls/diff`, and a FUSE mount of a snapshot whose
//! files read back byte-exact.

use std::fs;

use crate::harness::{self, Env, Rng, exit};
use crate::mount::Mounted;
use crate::s3::{command, run};

#[test]
fn every_command_works_on_s3() {
    let Some(server) = harness::s3::server() else {
        return;
    };
    let env = Env::new();
    let repo = format!("s3:{}", server.location("commands"));
    let r = |args: &[&str]| run(&env, &repo, None, args, b"");
    r(&harness::init_args()).ok("repo init");

    // A dump through --command, twice with a change, and a failing dumper.
    let mut rng = Rng::new(11);
    let dump = env.path("dump.sql");
    let mut data = rng.text(3 << 20);
    fs::write(&dump, &data).unwrap();
    let cat = format!("cat {}", dump.display());
    let backup = |what: &str| {
        let out = r(&[
            "snapshot",
            "create",
            "--json",
            "--command",
            &cat,
            "--stdin-name",
            "shop.sql",
            "--tag",
            "db",
        ]);
        out.ok(what);
        out.json()["id"].as_str().unwrap().to_string()
    };
    let day0 = backup("snapshot create --command");
    data[1_000_000..1_000_100].copy_from_slice(&[b'x'; 100]);
    fs::write(&dump, &data).unwrap();
    let day1 = backup("second snapshot create --command");
    let failed = r(&["snapshot", "create", "--command", "cat /nonexistent/dump"]);
    assert_ne!(failed.code, 0, "a failing dump command fails the backup");
    failed.stderr_has("no snapshot was written");
    let listed = r(&["snapshot", "list", "--json"]);
    listed.ok("snapshot list");
    assert_eq!(listed.json().as_array().unwrap().len(), 2);

    let out = run(
        &env,
        &repo,
        None,
        &["snapshot", "restore", &day1, "--stdout"],
        b"",
    );
    out.ok("restore --stdout of the --command dump");
    assert!(out.stdout == data, "day 1 restored byte-exact");

    // A file tree, to browse, diff and mount.
    let src = env.path("src");
    let files = [
        ("etc/a.conf", rng.text(2000)),
        ("var/b.bin", rng.bytes(700_000)),
    ];
    for (rel, content) in &files {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    let tree = r(&["snapshot", "create", "--json", src.to_str().unwrap()]);
    tree.ok("snapshot create of a tree");
    let tree_id = tree.json()["id"].as_str().unwrap().to_string();
    let ls = r(&["snapshot", "ls", &tree_id, "-R", "--json"]);
    ls.ok("snapshot ls");
    assert!(ls.stdout_str().contains("b.bin"), "ls lists the file");
    r(&["snapshot", "diff", &day0, &day1]).ok("snapshot diff");

    let stats = r(&["stats", "--json"]);
    stats.ok("stats");
    assert_eq!(
        stats.json()["snapshots"].as_u64(),
        Some(3),
        "{}",
        stats.stdout_str()
    );

    for part in ["1/2", "2/2"] {
        r(&["check", "--read-data-subset", part]).ok("check --read-data-subset");
    }

    // repair index rebuilds the index from the packs in the bucket; the data stays whole.
    r(&["repair", "index"]).ok("repair index");
    r(&["repair", "snapshots", "--dry-run"]).ok("repair snapshots --dry-run");
    r(&["check", "--read-data"]).ok("check --read-data after repair");

    // Keys: add a second password, open with it, remove the first.
    let newpass = env.path("newpass");
    fs::write(&newpass, "second password\n").unwrap();
    r(&[
        "key",
        "add",
        "--new-password-file",
        newpass.to_str().unwrap(),
    ])
    .ok("key add");
    let keys = r(&["key", "list", "--json"]);
    keys.ok("key list");
    let keys = keys.json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "two key files");
    let with_second = |args: &[&str]| {
        let mut cmd = command(&env, &repo, args);
        cmd.env("TRESOR_PASSWORD", "second password");
        harness::run_command(cmd, "tresor with the second password")
    };
    with_second(&["snapshot", "list"]).ok("opening with the added key");
    let first_key = keys
        .iter()
        .find(|k| k["in_use"].as_bool() == Some(true))
        .expect("the key in use is marked")["id"]
        .as_str()
        .unwrap()
        .to_string();
    with_second(&["key", "remove", &first_key]).ok("key remove of the first key");
    r(&["snapshot", "list"]).expect_code(
        exit::WRONG_PASSWORD,
        "the removed key's password no longer opens the repository",
    );
    with_second(&["check"]).ok("check with the remaining key");

    // A FUSE mount of the bucket's snapshot.
    {
        harness::require_root("mounting with FUSE");
        let point = env.path("mnt");
        let mut cmd = command(&env, &repo, &["mount", point.to_str().unwrap()]);
        cmd.env("TRESOR_PASSWORD", "second password");
        let m = Mounted::start_with(cmd, &point);
        let mounted: Vec<_> = harness::all_files(&point.join("snapshots"))
            .into_iter()
            .filter(|p| p.ends_with("var/b.bin"))
            .collect();
        assert!(!mounted.is_empty(), "the tree's file is in the mount");
        for p in &mounted {
            assert!(
                fs::read(p).unwrap() == files[1].1,
                "{} reads byte-exact",
                p.display()
            );
        }
        m.unmount();
    }
}
