//! Crash safety: a backup killed with SIGKILL in the middle leaves a repository that checks
//! clean (at most unindexed packs), restores every earlier snapshot and takes new ones.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, Env, KillOnDrop, Rng, flag, raised};

const STREAM: usize = 300 << 20;

#[test]
fn backup_killed_midway_leaves_a_healthy_repository() {
    let env = Env::new();
    env.init();

    // Earlier snapshots: a small tree and a stream.
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let a = Rng::new(10).bytes(3 << 20);
    let b = Rng::new(11).text(1 << 20);
    fs::write(src.join("a.bin"), &a).unwrap();
    fs::write(src.join("d/b.txt"), &b).unwrap();
    let s1 = env.create(&[&src])["id"].as_str().unwrap().to_string();
    let early = Rng::new(12).text(20 << 20);
    let s2 = env.create_stdin("early.txt", &early)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snapshots_before = env.snapshot_count();
    let packs_before: HashSet<_> = env.packs().into_iter().collect();

    // The doomed backup: ~300 MB through a pipe; stdin stays open until the kill, so tresor
    // cannot finish on its own.
    let mut cmd = env.command(&[
        "snapshot",
        "create",
        "--stdin",
        "--stdin-name",
        "doomed.txt",
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut guard = KillOnDrop(Some(cmd.spawn().unwrap()));
    let child = guard.0.as_mut().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stop = flag();
    let sent = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            let mut rng = Rng::new(99);
            while (sent.load(Ordering::SeqCst) as usize) < STREAM && !raised(&stop) {
                let buf = rng.text(1 << 20);
                if stdin.write_all(&buf).is_err() {
                    return;
                }
                sent.fetch_add(buf.len() as u64, Ordering::SeqCst);
            }
            while !raised(&stop) {
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let new_packs = loop {
        let new: Vec<_> = env
            .packs()
            .into_iter()
            .filter(|p| !packs_before.contains(p))
            .collect();
        if new.len() >= 2 {
            break new.len();
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("tresor ended ({st}) before it was killed");
        }
        assert!(
            Instant::now() < deadline,
            "no new packs after 120 s ({} bytes fed)",
            sent.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    let st = child.wait().unwrap();
    guard.0 = None;
    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    assert_eq!(
        harness::code_of(&st),
        128 + 9,
        "tresor should have died of SIGKILL, it ended with {st}"
    );
    eprintln!(
        "crash: killed after {} bytes fed, {new_packs} new packs",
        sent.load(Ordering::SeqCst)
    );

    // Every object under its final name is complete: its name is the BLAKE3 hash of its bytes
    // (temporary files of the interrupted write do not count).
    for kind in ["data", "index", "snapshots"] {
        for f in harness::all_files(&env.repo.join(kind)) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let hash = blake3::hash(&fs::read(&f).unwrap()).to_hex().to_string();
            assert_eq!(
                hash,
                name,
                "{} is torn or damaged after the crash",
                f.display()
            );
        }
    }

    // No snapshot from the killed run.
    assert_eq!(
        env.snapshot_count(),
        snapshots_before,
        "a killed backup must not leave a snapshot"
    );

    // check: no damage; the only leftovers are unindexed packs of the killed run.
    let out = env.run(&["check", "--json"]);
    out.ok("check after the crash");
    let report = out.json();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let old_names: HashSet<String> = packs_before
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for p in report["unindexed_packs"].as_array().unwrap() {
        assert!(
            !old_names.contains(p.as_str().unwrap()),
            "a pack of an earlier backup is unindexed: {p}"
        );
    }
    eprintln!(
        "crash: check reports {} unindexed packs",
        report["unindexed_packs"].as_array().unwrap().len()
    );

    // Earlier snapshots restore byte-exact.
    let target = env.path("restored");
    env.run(&[
        "snapshot",
        "restore",
        &s1,
        "--target",
        target.to_str().unwrap(),
    ])
    .ok("restore s1 after the crash");
    let root = target.join(env.stored(&src));
    assert!(fs::read(root.join("a.bin")).unwrap() == a, "a.bin differs");
    assert!(
        fs::read(root.join("d/b.txt")).unwrap() == b,
        "d/b.txt differs"
    );
    assert!(
        env.restore_stdout(&s2, None) == early,
        "the early stream differs"
    );

    // New backups work, including of data the killed run had half stored.
    let again = Rng::new(99).text(40 << 20);
    let s3 = env.create_stdin("again.txt", &again)["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        env.restore_stdout(&s3, None) == again,
        "the new snapshot does not restore"
    );
    assert_eq!(env.snapshot_count(), snapshots_before + 1);
    let out = env.run(&["check", "--read-data", "--json"]);
    out.ok("check --read-data after the crash and a new backup");
    assert_eq!(out.json()["problems"], serde_json::json!([]));
}
