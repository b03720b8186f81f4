//! Integrity: the corruption catalogue (each kind of damage is found by `check`, named, and
//! refused by restore), the verification ledger, `repair index` and `repair snapshots`.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{self, Env, Rng, exit};

/// A repository with three snapshots: a tree (two files), and two streams.
struct Fixture {
    env: Env,
    src: PathBuf,
    a: Vec<u8>,
    b: Vec<u8>,
    s1: String,
    stream: Vec<u8>,
    s2: String,
    other: Vec<u8>,
    s3: String,
}

impl Fixture {
    fn new() -> Fixture {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("d")).unwrap();
        let a = Rng::new(1).bytes(3 << 20);
        let b = Rng::new(2).text(1 << 20);
        fs::write(src.join("a.bin"), &a).unwrap();
        fs::write(src.join("d/b.txt"), &b).unwrap();
        let s1 = id_of(&env.create(&[&src]));
        let stream = Rng::new(3).text(6 << 20);
        let s2 = id_of(&env.create_stdin("dump.sql", &stream));
        let other = Rng::new(4).bytes(2 << 20);
        let s3 = id_of(&env.create_stdin("other.bin", &other));
        env.run(&["check", "--read-data"])
            .ok("check of the fixture");
        Fixture {
            env,
            src,
            a,
            b,
            s1,
            stream,
            s2,
            other,
            s3,
        }
    }

    /// The pack file that holds `dump.sql` (the stream of s2): the largest one written by it.
    fn pack_of_stream(&self) -> PathBuf {
        let restore_err = |f: &Fixture| f.env.try_restore_stdout(&f.s2, None).code;
        assert_eq!(restore_err(self), exit::OK);
        // Packs sorted by size: the 6 MiB text stream compresses to the second largest
        // or largest; find it by moving each pack away until the stream no longer restores.
        for p in self.env.packs() {
            let aside = p.with_extension("aside");
            fs::rename(&p, &aside).unwrap();
            let code = restore_err(self);
            fs::rename(&aside, &p).unwrap();
            if code != exit::OK {
                return p;
            }
        }
        panic!("no single pack holds the stream");
    }

    fn a_path(&self) -> String {
        format!("{}/a.bin", self.env.stored(&self.src))
    }

    fn check_json(&self, args: &[&str]) -> (i32, Value) {
        let mut a = vec!["check", "--json"];
        a.extend_from_slice(args);
        let out = self.env.run(&a);
        no_panic(&out.stderr);
        (out.code, out.json())
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

fn no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !name_of(p).starts_with('.'))
        .collect();
    v.sort();
    v
}

fn affected_ids(report: &Value) -> Vec<String> {
    report["affected_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The paths `check --json` lists as affected in snapshot `snap` (none when it is not listed).
pub(crate) fn affected_paths(report: &Value, snap: &str) -> Vec<String> {
    report["affected_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == snap)
        .map(|s| {
            s["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn mentions(report: &Value, needle: &str) -> bool {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.as_str().unwrap().contains(needle))
}

/// Restoring `path` of `snap` must fail as damage naming `object`, never give bytes.
fn restore_refused(f: &Fixture, snap: &str, path: Option<&str>, object: &str) {
    let out = f.env.try_restore_stdout(snap, path);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "restore of damaged data")
        .stderr_has(object);
}

#[test]
fn flipped_bit_in_a_pack() {
    let f = Fixture::new();
    let pack = f.pack_of_stream();
    // Inside a data blob: the tree (often first in the pack) stays intact.
    let (offset, len): (i64, i64) = rusqlite::Connection::open(catalog_path(&f.env))
        .unwrap()
        .query_row(
            "SELECT b.offset, b.stored_len FROM blobs b JOIN packs p ON p.rowid = b.pack
             WHERE p.id = ?1 AND b.kind = 0 LIMIT 1",
            [hex::decode(name_of(&pack)).unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[(offset + len / 2) as usize] ^= 0x08;
    fs::write(&pack, &bytes).unwrap();
    let name = name_of(&pack);

    // Same size, intact header: the structure is fine; only reading finds it.
    let (code, _) = f.check_json(&[]);
    assert_eq!(code, exit::OK, "a structural check does not read blobs");
    let (code, r) = f.check_json(&["--read-data"]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert!(mentions(&r, &name), "{r}");
    assert_eq!(r["damaged_blobs"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(affected_ids(&r), std::slice::from_ref(&f.s2), "{r}");
    assert_eq!(affected_paths(&r, &f.s2), ["dump.sql"]);
    restore_refused(&f, &f.s2, None, &name);
    // Unaffected snapshots restore.
    assert!(f.env.restore_stdout(&f.s3, None) == f.other);
    assert!(f.env.restore_stdout(&f.s1, Some(&f.a_path())) == f.a);
}

#[test]
fn truncated_and_deleted_packs() {
    let f = Fixture::new();
    let pack = f.pack_of_stream();
    let name = name_of(&pack);
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, r) = f.check_json(&[]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert!(
        mentions(&r, &format!("pack {name}: has {}", len / 2)),
        "{r}"
    );
    assert_eq!(r["damaged_packs"], serde_json::json!([name]));
    assert_eq!(affected_ids(&r), std::slice::from_ref(&f.s2), "{r}");
    restore_refused(&f, &f.s2, None, &name);
    // Read in full, the pack is judged blob by blob: the blobs past the cut are named.
    let (code, r) = f.check_json(&["--read-data"]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert!(!r["damaged_blobs"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(affected_ids(&r), std::slice::from_ref(&f.s2), "{r}");

    fs::remove_file(&pack).unwrap();
    let (code, r) = f.check_json(&[]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert!(mentions(&r, &format!("pack {name}: is missing")), "{r}");
    // The pack also held the snapshot's root tree: the whole snapshot ("/") is affected.
    assert_eq!(affected_ids(&r), std::slice::from_ref(&f.s2), "{r}");
    assert_eq!(affected_paths(&r, &f.s2), ["/"]);
    restore_refused(&f, &f.s2, None, &name);
    assert!(f.env.restore_stdout(&f.s3, None) == f.other);
}

#[test]
fn two_packs_swapped() {
    let f = Fixture::new();
    let packs = f.env.packs();
    assert!(packs.len() >= 2, "{packs:?}");
    let (p, q) = (&packs[0], &packs[1]);
    let (bp, bq) = (fs::read(p).unwrap(), fs::read(q).unwrap());
    fs::write(p, &bq).unwrap();
    fs::write(q, &bp).unwrap();
    let (code, r) = f.check_json(&[]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert!(
        mentions(&r, &name_of(p)) && mentions(&r, &name_of(q)),
        "{r}"
    );
    let (code, r) = f.check_json(&["--read-data"]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert!(!affected_ids(&r).is_empty(), "{r}");
    // Every affected snapshot refuses to restore; none gives bytes of another blob.
    for s in affected_ids(&r) {
        let out = f.env.try_restore_stdout(&s, None);
        no_panic(&out.stderr);
        let tree = f.env.path(format!("out-{s}"));
        let out2 = f.env.run(&[
            "snapshot",
            "restore",
            &s,
            "--target",
            tree.to_str().unwrap(),
        ]);
        no_panic(&out2.stderr);
        assert!(
            out.code == exit::DAMAGED || out2.code == exit::DAMAGED,
            "snapshot {s} restored from swapped packs"
        );
    }
}

#[test]
fn corrupted_index_object() {
    let f = Fixture::new();
    let indexes = files_in(&f.env.repo.join("index"));
    // The index object written by the last backup (s3) lists the other.bin blobs.
    let mut damaged = None;
    for ix in &indexes {
        let mut bytes = fs::read(ix).unwrap();
        let keep = bytes.clone();
        bytes[40] ^= 1;
        fs::write(ix, &bytes).unwrap();
        // A fresh cache, so the catalog cannot hide the damage.
        let _ = fs::remove_dir_all(&f.env.cache);
        let (code, r) = f.check_json(&[]);
        if affected_ids(&r) == [f.s3.clone()] {
            assert_eq!(code, exit::DAMAGED);
            assert!(
                mentions(&r, &format!("index object {}", name_of(ix))),
                "{r}"
            );
            damaged = Some(ix.clone());
            break;
        }
        fs::write(ix, &keep).unwrap();
    }
    let ix = damaged.expect("no index object affects only s3");
    // Opening warns about it; the restore fails naming a blob that is not indexed.
    let out = f.env.try_restore_stdout(&f.s3, None);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "restore needing a damaged index object")
        .stderr_has(&name_of(&ix))
        .stderr_has("not in any index");
    assert!(f.env.restore_stdout(&f.s2, None) == f.stream);
    // repair index rebuilds it from the pack headers.
    f.env
        .run(&["repair", "index"])
        .ok("repair index after a damaged index object");
    let (code, r) = f.check_json(&["--read-data"]);
    assert_eq!(code, exit::OK, "{r}");
    assert!(f.env.restore_stdout(&f.s3, None) == f.other);
}

#[test]
fn corrupted_snapshot_object() {
    let f = Fixture::new();
    let snap = f.env.repo.join("snapshots").join(&f.s2);
    let mut bytes = fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    fs::write(&snap, &bytes).unwrap();
    let (code, r) = f.check_json(&[]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert!(mentions(&r, &format!("snapshot object {}", f.s2)), "{r}");
    assert_eq!(affected_ids(&r), std::slice::from_ref(&f.s2));
    restore_refused(&f, &f.s2, None, &f.s2);
    assert!(f.env.restore_stdout(&f.s3, None) == f.other);
    // The list still shows the others, names the damaged object and says so in its exit code.
    let out = f.env.run(&["snapshot", "list", "--json"]);
    out.expect_code(
        exit::DAMAGED,
        "snapshot list with a damaged snapshot object",
    )
    .stderr_has(&f.s2);
    let ids: Vec<_> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [Value::from(f.s1.clone()), Value::from(f.s3.clone())]);
    // `latest` refuses to guess rather than silently meaning an older snapshot.
    restore_refused(&f, "latest", None, &f.s2);
}

#[test]
fn corrupted_key_file() {
    let f = Fixture::new();
    let key = files_in(&f.env.repo.join("keys")).pop().unwrap();
    let mut bytes = fs::read(&key).unwrap();
    bytes[20] ^= 0x01;
    fs::write(&key, &bytes).unwrap();
    let out = f.env.run(&["check"]);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "check with a damaged key file")
        .stderr_has(&format!("key file {}", name_of(&key)));
    restore_refused(&f, &f.s3, None, &name_of(&key));
}

fn catalog_path(env: &Env) -> PathBuf {
    harness::all_files(&env.cache)
        .into_iter()
        .find(|p| p.file_name().unwrap() == "catalog.sqlite")
        .expect("no catalog")
}

#[test]
fn stale_catalog_is_rebuilt_by_check() {
    let f = Fixture::new();
    let conn = rusqlite::Connection::open(catalog_path(&f.env)).unwrap();
    // Stale in two ways: blobs it has forgotten, and a blob placed at the wrong offset.
    let forgotten = conn
        .execute(
            "DELETE FROM blobs WHERE id IN (SELECT id FROM blobs WHERE kind = 0 LIMIT 3)",
            [],
        )
        .unwrap();
    assert_eq!(forgotten, 3);
    conn.execute(
        "UPDATE blobs SET offset = offset + 1 WHERE id = (SELECT id FROM blobs WHERE kind = 0 LIMIT 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, r) = f.check_json(&[]);
    assert_eq!(
        code,
        exit::OK,
        "a stale cache is not repository damage: {r}"
    );
    assert_eq!(r["catalog_rebuilt"], true, "{r}");
    assert!(r["notes"][0].as_str().unwrap().contains("catalog"), "{r}");
    let (code, r) = f.check_json(&["--read-data"]);
    assert_eq!(
        (code, &r["catalog_rebuilt"]),
        (exit::OK, &Value::Bool(false))
    );
    assert!(f.env.restore_stdout(&f.s2, None) == f.stream);
    assert!(f.env.restore_stdout(&f.s3, None) == f.other);
    assert!(
        f.env
            .restore_stdout(&f.s1, Some(&format!("{}/d/b.txt", f.env.stored(&f.src))))
            == f.b
    );
}

#[test]
fn ledger_rereads_every_pack_within_the_window() {
    let env = Env::new();
    let mut init = harness::init_args();
    init.extend(["--pack-size-mib", "1"]);
    env.run(&init).ok("init with 1 MiB packs");
    env.create_stdin("big.bin", &Rng::new(7).bytes(40 << 20));
    let packs = env.packs().len() as u64;
    assert!(packs >= 10, "{packs} packs");
    let largest = env
        .packs()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    let read = |args: &[&str]| -> Value {
        let mut a = vec!["check", "--json"];
        a.extend_from_slice(args);
        env.run(&a).ok("check").json()
    };

    // Slices: 1/3, 2/3 and 3/3 read every pack exactly once between them.
    let total: u64 = (1..=3)
        .map(|n| {
            read(&["--read-data-subset", &format!("{n}/3")])["packs_read"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, packs);

    // A fresh cache forgets the ledger: everything is due again. Budgeted runs of --max-age
    // then read the least recently verified packs until none is due, never one twice.
    fs::remove_dir_all(&env.cache).unwrap();
    let mut runs = 0;
    let mut total = 0;
    loop {
        let r = read(&["--max-age", "30d", "--budget", "3MiB"]);
        let n = r["packs_read"].as_u64().unwrap();
        // The budget is crossed by at most the last pack taken.
        assert!(
            r["bytes_read"].as_u64().unwrap() < (3 << 20) + largest,
            "{r}"
        );
        if n == 0 {
            break;
        }
        total += n;
        runs += 1;
        assert!(runs <= packs, "the ledger does not advance");
    }
    assert_eq!(total, packs, "every pack read once within the window");
    assert!(runs >= 3, "the budget should split the work: {runs} runs");

    // Everything verified just now: nothing is due; damage there waits for the window
    // (documented), but a full read or a percentage run in ledger order finds it.
    // A pack of data blobs only: damage to the tree pack would be seen by the structural walk.
    let data_only: Vec<u8> = rusqlite::Connection::open(catalog_path(&env))
        .unwrap()
        .query_row(
            "SELECT p.id FROM packs p WHERE NOT EXISTS
             (SELECT 1 FROM blobs b WHERE b.pack = p.rowid AND b.kind = 1) LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let pack = env
        .packs()
        .into_iter()
        .find(|p| name_of(p) == hex::encode(&data_only))
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[10] ^= 0x80;
    fs::write(&pack, &bytes).unwrap();
    let r = read(&["--max-age", "30d"]);
    assert_eq!(r["packs_read"], 0);
    let out = env.run(&["check", "--json", "--read-data-subset", "100%"]);
    out.expect_code(exit::DAMAGED, "check --read-data-subset 100%");
    assert!(
        out.json()["damaged_packs"]
            .as_array()
            .unwrap()
            .contains(&Value::from(name_of(&pack)))
    );
    let tenth = env
        .run(&["check", "--json", "--read-data-subset", "10%"])
        .json();
    assert_eq!(tenth["packs_read"].as_u64().unwrap(), packs.div_ceil(10));
}

#[test]
fn repair_index_from_pack_headers_alone() {
    let f = Fixture::new();
    for ix in files_in(&f.env.repo.join("index")) {
        fs::remove_file(ix).unwrap();
    }
    let _ = fs::remove_dir_all(&f.env.cache);
    let (code, r) = f.check_json(&[]);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert_eq!(
        r["unindexed_packs"].as_array().unwrap().len(),
        f.env.packs().len()
    );
    let out = f.env.run(&["repair", "index", "--json"]);
    out.ok("repair index");
    let rep = out.json();
    assert_eq!(rep["packs"].as_u64().unwrap(), f.env.packs().len() as u64);
    assert!(rep["index_objects_written"].as_u64().unwrap() >= 1);
    let (code, r) = f.check_json(&["--read-data"]);
    assert_eq!(code, exit::OK, "{r}");
    assert!(f.env.restore_stdout(&f.s2, None) == f.stream);
    assert!(f.env.restore_stdout(&f.s1, Some(&f.a_path())) == f.a);
    // Repairing an intact repository changes nothing a user can see.
    f.env.run(&["repair", "index"]).ok("second repair");
    assert_eq!(f.check_json(&["--read-data"]).0, exit::OK);
}

#[test]
fn repair_snapshots_reports_then_forgets_only_the_damaged() {
    let f = Fixture::new();
    let pack = f.pack_of_stream();
    fs::remove_file(&pack).unwrap();
    let before = f.env.snapshot_count();

    let out = f.env.run(&["repair", "snapshots", "--json"]);
    out.expect_code(exit::DAMAGED, "repair snapshots (report only)");
    let r = out.json();
    let damaged: Vec<_> = r["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(damaged, [Value::from(f.s2.clone())], "{r}");

    let out = f.env.run(&["repair", "snapshots", "--forget", "--dry-run"]);
    out.expect_code(exit::DAMAGED, "repair snapshots --dry-run");
    assert!(
        out.stdout_str().contains("would be forgotten"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(f.env.snapshot_count(), before, "a dry run removes nothing");

    f.env
        .run(&["repair", "snapshots", "--forget"])
        .ok("repair snapshots --forget");
    assert_eq!(f.env.snapshot_count(), before - 1);
    // The index still names the deleted pack until the index is rebuilt from what exists.
    f.env.run(&["repair", "index"]).ok("repair index");
    let (code, r) = f.check_json(&["--read-data"]);
    assert_eq!(code, exit::OK, "{r}");
    assert!(f.env.restore_stdout(&f.s3, None) == f.other);
    assert!(f.env.restore_stdout(&f.s1, Some(&f.a_path())) == f.a);
}
