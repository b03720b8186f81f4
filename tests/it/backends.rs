//! Backends: the conformance suite over every backend and wrapper, and whole operations through
//! the library over storage that fails.
//!
//! What they prove: the local and memory backends keep the contract; so does a retrying backend
//! over one that fails 30 % of calls (before or after doing them), so the suite itself is
//! repeat-safe; a real repository on a local directory failing 20 % of calls, behind
//! `RetryBackend`, goes through init, open, lock, backups, restore, `check --read-data`, forget
//! and prune with every operation succeeding and the data intact; and without retry, the same
//! faults make operations fail with errors (never a panic) and leave a repository that checks
//! clean when opened over the plain directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tresor::backend::faulty::{FaultPlan, FaultPoint, FaultyBackend};
use tresor::backend::local::LocalBackend;
use tresor::backend::mem::MemBackend;
use tresor::backend::{Backend, ObjectKind, RetryBackend, RetryPolicy};
use tresor::backup::{self, CreateOptions, NoProgress};
use tresor::check::{self, CheckOptions, CheckReport, Silent};
use tresor::format::chunker::ChunkerParams;
use tresor::format::id::ObjectId;
use tresor::repo::keys::KdfParams;
use tresor::repo::lock::LockTiming;
use tresor::repo::{InitOptions, Repo};
use tresor::restore::{self, RestoreOptions};
use tresor::source::SourceSpec;

use crate::conformance;
use crate::harness::Rng;

#[test]
fn local_conforms() {
    let t = tempfile::tempdir().unwrap();
    conformance::run(&LocalBackend::new(t.path().join("repo")));
}

#[test]
fn mem_conforms() {
    conformance::run(&MemBackend::new());
}

/// Retries fast enough for tests, and often enough that a 30 % fault rate never exhausts them
/// (0.3^16 per call).
fn test_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 16,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
    }
}

#[test]
fn retry_over_faults_conforms() {
    for seed in [1, 2, 3] {
        let faulty = Arc::new(FaultyBackend::new(
            Arc::new(MemBackend::new()),
            FaultPlan::new(0.3, seed),
        ));
        let b = RetryBackend::new(faulty.clone(), test_policy());
        conformance::run(&b);
        assert!(
            faulty.injected() > 20 && faulty.injected_after() > 5,
            "seed {seed}: {} faults, {} after the operation, in {} calls",
            faulty.injected(),
            faulty.injected_after(),
            faulty.calls()
        );
        assert!(b.retries() >= faulty.injected());
    }
    // Lost answers on a real directory: every put and delete is done and then reported failed.
    let t = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBackend::new(
        Arc::new(LocalBackend::new(t.path().join("repo"))),
        FaultPlan::new(0.3, 4).at(FaultPoint::After),
    ));
    conformance::run(&RetryBackend::new(faulty.clone(), test_policy()));
    assert!(faulty.injected_after() > 20);
}

fn init_options() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        // Small packs and chunks: many objects, so many calls can fail.
        pack_size: 1 << 20,
        chunker: ChunkerParams {
            min_size: 8 << 10,
            avg_size: 16 << 10,
            max_size: 64 << 10,
        },
        ..Default::default()
    }
}

/// A source tree: a few directories of files of every size class.
fn make_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for d in ["a", "a/b", "c"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("a/small.txt"), b"hello\n").unwrap();
    fs::write(root.join("a/b/text"), rng.text(700 << 10)).unwrap();
    fs::write(root.join("c/random.bin"), rng.bytes(1 << 20)).unwrap();
    fs::write(root.join("a/b/random2.bin"), rng.bytes(2 << 20)).unwrap();
    for i in 0..20 {
        fs::write(root.join(format!("c/f{i}")), rng.text(3000 + i * 500)).unwrap();
    }
}

/// Changes part of the tree (so a second snapshot shares most data with the first).
fn change_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut text = fs::read(root.join("a/b/text")).unwrap();
    let at = text.len() / 2;
    text.splice(at..at + 1000, rng.text(3000));
    fs::write(root.join("a/b/text"), text).unwrap();
    fs::write(root.join("c/random.bin"), rng.bytes(1 << 20)).unwrap();
    fs::write(root.join(format!("c/new{seed}")), rng.text(40_000)).unwrap();
    let _ = fs::remove_file(root.join("c/f3"));
}

/// Every regular file under `root` (relative path → content), and every directory.
fn contents(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                todo.push(p);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Restores a whole snapshot into a fresh directory and returns where its copy of `src` is.
fn restore_tree(repo: &Repo, id: &ObjectId, src: &Path, target: &Path) -> PathBuf {
    let (_, snap) = repo.find_snapshot(&id.to_hex()).unwrap();
    restore::restore_to_dir(repo, &snap, None, target, &RestoreOptions::default()).unwrap();
    target.join(src.strip_prefix("/").unwrap())
}

fn check_data(repo: &mut Repo) -> CheckReport {
    let opts = CheckOptions {
        read_data: true,
        ..Default::default()
    };
    check::check(repo, &opts, &Silent).unwrap()
}

fn assert_clean(r: &CheckReport, when: &str) {
    assert!(
        r.is_clean(),
        "{when}: check found problems: {:?}\naffected: {:?}\nmissing snapshots: {:?}",
        r.problems,
        r.affected_snapshots,
        r.missing_snapshots
    );
}

/// What it proves: over a local directory that fails a fifth of all calls (before or after
/// doing them), a `RetryBackend` makes every library operation succeed: init, open, a shared
/// lock, two backups, restores identical to the sources, a clean `check` that reads every
/// pack, and under an exclusive lock a forget and a prune that repacks; after them the kept
/// snapshot still restores and checks clean, also when opened over the plain directory.
#[test]
fn a_repository_over_retried_faults_works_end_to_end() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 1);
    let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(t.path().join("repo")));
    let faulty = Arc::new(FaultyBackend::new(local.clone(), FaultPlan::new(0.2, 11)));
    let backend: Arc<dyn Backend> = Arc::new(RetryBackend::new(faulty.clone(), test_policy()));
    let cache = t.path().join("cache");

    Repo::init(backend.as_ref(), b"pw", &init_options()).unwrap();
    let mut repo = Repo::open(backend.clone(), b"pw", &cache).unwrap();
    repo.lock(
        "snapshot create",
        false,
        Duration::ZERO,
        LockTiming::default(),
    )
    .unwrap();
    let opts = CreateOptions {
        sources: vec![SourceSpec::Path(src.clone())],
        ..Default::default()
    };
    let first = backup::create(&mut repo, &opts, &NoProgress).unwrap();
    let first_tree = contents(&src);
    change_tree(&src, 2);
    let second = backup::create(&mut repo, &opts, &NoProgress).unwrap();
    let second_tree = contents(&src);
    assert_ne!(first_tree, second_tree);

    let r1 = restore_tree(&repo, &first.id, &src, &t.path().join("r1"));
    assert!(
        contents(&r1) == first_tree,
        "first snapshot restores exactly"
    );
    let r2 = restore_tree(&repo, &second.id, &src, &t.path().join("r2"));
    assert!(
        contents(&r2) == second_tree,
        "second snapshot restores exactly"
    );
    let report = check_data(&mut repo);
    assert_clean(&report, "after two backups");
    assert!(report.packs_read > 3, "{report:?}");
    assert_eq!(report.snapshots, 2);

    repo.release_lock();
    repo.lock("prune", true, Duration::ZERO, LockTiming::default())
        .unwrap();
    assert_eq!(repo.forget_snapshots(&[first.id], "test").unwrap(), 1);
    let roots = tresor::prune::all_roots(&repo).unwrap();
    let plan = tresor::prune::plan(&repo, &roots, 0.0).unwrap();
    let pruned = tresor::prune::execute(&mut repo, plan).unwrap();
    assert!(pruned.bytes_freed > 0, "{pruned:?}");
    let report = check_data(&mut repo);
    assert_clean(&report, "after forget and prune");
    assert_eq!(report.snapshots, 1);
    let r3 = restore_tree(&repo, &second.id, &src, &t.path().join("r3"));
    assert!(
        contents(&r3) == second_tree,
        "kept snapshot restores after prune"
    );
    drop(repo);

    assert!(
        faulty.injected() > 30 && faulty.injected_after() > 10,
        "{} faults ({} after the operation) in {} calls",
        faulty.injected(),
        faulty.injected_after(),
        faulty.calls()
    );
    // The plain directory, with a fresh cache: the same repository.
    let mut plain = Repo::open(Arc::clone(&local), b"pw", &t.path().join("cache2")).unwrap();
    assert_clean(&check_data(&mut plain), "over the plain directory");
    assert!(
        local.list(ObjectKind::Lock).unwrap().is_empty(),
        "no lock left behind"
    );
}

/// What it proves: without retry, the same kind of faults make operations fail with errors —
/// never a panic — and whatever each failure left behind (a pack, index or snapshot stored
/// although its put "failed", a forget record without its deletion, a half-done prune) is
/// harmless: the repository, opened over the plain directory, passes `check --read-data`, and
/// its latest snapshot restores.
#[test]
fn failures_without_retry_leave_a_sound_repository() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 3);
    let root = t.path().join("repo");
    let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(&root));
    Repo::init(local.as_ref(), b"pw", &init_options()).unwrap();
    let opts = CreateOptions {
        sources: vec![SourceSpec::Path(src.clone())],
        ..Default::default()
    };
    {
        let mut repo = Repo::open(local.clone(), b"pw", &t.path().join("plain-cache")).unwrap();
        repo.lock("first", false, Duration::ZERO, LockTiming::default())
            .unwrap();
        backup::create(&mut repo, &opts, &NoProgress).unwrap();
    }
    // A fifth of the calls failing stops nearly every operation; one in a hundred lets many
    // through, so that later runs build on what earlier failures left.
    let faulty = [
        Arc::new(FaultyBackend::new(local.clone(), FaultPlan::new(0.2, 5))),
        Arc::new(FaultyBackend::new(local.clone(), FaultPlan::new(0.01, 6))),
    ];
    let cache = t.path().join("cache");
    let (mut failed, mut succeeded) = (Vec::new(), 0);
    let mut note = |what: &str, r: tresor::Result<()>| match r {
        Ok(()) => succeeded += 1,
        Err(e) => failed.push(format!("{what}: {e}")),
    };
    for round in 0..36u64 {
        // One run of tresor per round. Runs end, and the next run judges their leftover locks
        // stale because their pid is gone; here every run shares one pid, so the leftovers are
        // removed as `repo unlock` would.
        for (name, _) in local.list(ObjectKind::Lock).unwrap() {
            local.delete(ObjectKind::Lock, &name).unwrap();
        }
        let backend: Arc<dyn Backend> = faulty[round as usize % 2].clone();
        let mut repo = match Repo::open(backend, b"pw", &cache) {
            Ok(r) => r,
            Err(e) => {
                note("open", Err(e));
                continue;
            }
        };
        let exclusive = round % 3 == 2;
        if let Err(e) = repo.lock("test", exclusive, Duration::ZERO, LockTiming::default()) {
            note("lock", Err(e));
            continue;
        }
        if !exclusive {
            change_tree(&src, 100 + round);
            note(
                "backup",
                backup::create(&mut repo, &opts, &NoProgress).map(|_| ()),
            );
            continue;
        }
        let forget = (|| {
            let (snaps, _) = repo.snapshots()?;
            let old: Vec<ObjectId> = snaps
                .iter()
                .map(|(id, _)| *id)
                .take(snaps.len().saturating_sub(2))
                .collect();
            repo.forget_snapshots(&old, "test").map(|_| ())
        })();
        note("forget", forget);
        let prune = (|| {
            let roots = tresor::prune::all_roots(&repo)?;
            let plan = tresor::prune::plan(&repo, &roots, 0.0)?;
            tresor::prune::execute(&mut repo, plan).map(|_| ())
        })();
        note("prune", prune);
        let checked = check::check(&mut repo, &CheckOptions::default(), &Silent).map(|_| ());
        note("check", checked);
    }
    // The numbers vary from run to run (pack names are hashes of randomly sealed bytes, so the
    // faults strike other calls), but never by this much.
    assert!(
        succeeded >= 5 && failed.len() >= 10,
        "{succeeded} operations succeeded, {} failed: {failed:#?}",
        failed.len()
    );
    assert!(
        faulty.iter().all(|f| f.injected_after() > 0),
        "some faults struck after the operation"
    );

    // Over the plain directory, with the cache the failed runs used and with a fresh one.
    for (i, cache) in [cache, t.path().join("fresh-cache")].iter().enumerate() {
        let mut plain = Repo::open(local.clone(), b"pw", cache).unwrap();
        let report = check_data(&mut plain);
        assert_clean(&report, &format!("after the failures {failed:#?}"));
        let (snaps, damaged) = plain.snapshots().unwrap();
        assert!(damaged.is_empty(), "{damaged:?}");
        assert!(!snaps.is_empty());
        for (id, _) in &snaps {
            let target = t.path().join(format!("restored-{i}-{}", id.to_hex()));
            restore_tree(&plain, id, &src, &target);
        }
    }
}
