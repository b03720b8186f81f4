//! Delta blobs (repository version 2): a changed chunk of a dump or file is stored as a zstd
//! patch against the chunk of the previous version that starts the same way.
//!
//! The data is dump-like text: ~110-byte `INSERT` rows, ~9 MB, many chunks (see [`CHUNKS`]).
//! "The next day" modifies ~2% of the rows in place, scattered over the whole table (so
//! nearly every chunk changes and whole-chunk dedup finds almost nothing), deletes a few,
//! moves a few elsewhere and appends ~0.5% new rows.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::thread;

use serde_json::Value;

use crate::harness::{self, Env, Rng, exit};
use crate::integrity::affected_paths;

/// Rows of the first day's table.
const ROWS: u64 = 80_000;

/// One day's table: (row id, revision) in dump order. A row's text depends on both, so bumping
/// the revision is an `UPDATE` of that row.
#[derive(Clone)]
pub(crate) struct Table(Vec<(u64, u64)>);

impl Table {
    pub(crate) fn day0() -> Table {
        Table((1..=ROWS).map(|id| (id, 0)).collect())
    }

    /// The next day: ~2% of the rows modified in place at random positions, 20 deleted, 20
    /// moved to another place, ~0.5% new rows appended.
    pub(crate) fn next(&self, seed: u64) -> Table {
        let mut rng = Rng::new(seed);
        let mut rows = self.0.clone();
        let mut pick = |len: usize| (rng.next_u64() % len as u64) as usize;
        for _ in 0..rows.len() / 50 {
            let i = pick(rows.len());
            rows[i].1 += 1;
        }
        for _ in 0..20 {
            let i = pick(rows.len());
            rows.remove(i);
        }
        for _ in 0..20 {
            let i = pick(rows.len());
            let r = rows.remove(i);
            let j = pick(rows.len());
            rows.insert(j, r);
        }
        let next_id = rows.iter().map(|r| r.0).max().unwrap() + 1;
        rows.extend((next_id..next_id + ROWS / 200).map(|id| (id, 0)));
        Table(rows)
    }

    pub(crate) fn dump(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 112 + 256);
        out.extend_from_slice(
            b"--\n-- PostgreSQL database dump\n--\n\nSET client_encoding = 'UTF8';\n\nBEGIN;\n\n",
        );
        for &(id, rev) in &self.0 {
            out.extend_from_slice(row(id, rev).as_bytes());
        }
        out.extend_from_slice(b"\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n");
        out
    }
}

/// One `INSERT` row (~110 bytes): customer and time depend on the id only; status, amount and
/// reference change with each revision.
fn row(id: u64, rev: u64) -> String {
    const STATUS: [&str; 5] = ["new", "paid", "packed", "shipped", "delivered"];
    let mut fixed = Rng::new(id);
    let customer = 1 + fixed.next_u64() % 50_000;
    let t = fixed.next_u64() % (336 * 86_400);
    let day = t / 86_400;
    let mut var = Rng::new(id ^ ((rev + 1) << 40));
    let amount = var.next_u64() % 100_000;
    format!(
        "INSERT INTO orders VALUES ({id}, {customer}, '2024-{:02}-{:02} {:02}:{:02}:{:02}+00', \
         '{}', {}.{:02}, 'EUR', 'ref {:012x}');\n",
        1 + day / 28,
        1 + day % 28,
        t / 3600 % 24,
        t / 60 % 60,
        t % 60,
        STATUS[((id + rev) % 5) as usize],
        amount / 100,
        amount % 100,
        var.next_u64() & 0xffff_ffff_ffff
    )
}

/// Three consecutive days of the same table.
pub(crate) fn three_days() -> [Vec<u8>; 3] {
    let t0 = Table::day0();
    let t1 = t0.next(1);
    let t2 = t1.next(2);
    [t0.dump(), t1.dump(), t2.dump()]
}

/// Chunk sizes of these tests: 16 / 64 / 256 KiB (as the archiver's library tests), so the
/// ~9 MB dump makes ~70 chunks. Cut points depend on the repository key, and each day a few of
/// them vanish or appear where a changed row touches them; the chunk around such a point
/// spans content no single base holds and is stored whole. Over many chunks that costs a
/// small, steady share; with the default 1 MiB chunks a 9 MB dump has ~6, and one such chunk
/// swings day 1's cost by up to 40% from one repository to the next.
pub(crate) const CHUNKS: [&str; 6] = [
    "--chunk-min",
    "16384",
    "--chunk-avg",
    "65536",
    "--chunk-max",
    "262144",
];

/// `repo init` with the cheap KDF, [`CHUNKS`] and `extra`.
fn init(env: &Env, extra: &[&str]) {
    let mut args = harness::init_args();
    args.extend(CHUNKS);
    args.extend(extra);
    env.run(&args).ok("repo init");
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field:?} in {v}"))
}

/// The summary `snapshot show --json` records for a snapshot.
fn summary(env: &Env, id: &str) -> Value {
    env.show(id)["summary"].clone()
}

fn no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// `check --read-data` must pass.
#[track_caller]
fn check_clean(env: &Env, when: &str) {
    let out = env.run(&["check", "--read-data"]);
    no_panic(&out.stderr);
    out.ok(when);
}

/// Restoring the stream of `id` must give exactly `want`.
#[track_caller]
fn assert_restores(env: &Env, id: &str, want: &[u8], what: &str) {
    let got = env.restore_stdout(id, None);
    assert!(
        got == want,
        "{what}: snapshot {id} restored {} bytes that differ from the {} bytes backed up",
        got.len(),
        want.len()
    );
}

pub(crate) fn catalog(env: &Env) -> rusqlite::Connection {
    let path = harness::all_files(&env.cache)
        .into_iter()
        .find(|p| p.file_name().unwrap() == "catalog.sqlite")
        .expect("no catalog");
    rusqlite::Connection::open(path).unwrap()
}

/// Every delta blob the catalog knows, with its base: (delta id, base id) in hex.
fn deltas_in_catalog(env: &Env) -> Vec<(String, String)> {
    deltas_in(&catalog(env))
}

/// Every delta blob of catalog `c`, with its base: (delta id, base id) in hex.
/// Deltas whose recorded depth is not their base's plus one (chains must descend by one).
pub(crate) fn deltas_not_one_deeper(c: &rusqlite::Connection) -> i64 {
    c.query_row(
        "SELECT count(*) FROM blobs d JOIN blobs b ON b.id = d.base
         WHERE d.kind = 2 AND d.depth != b.depth + 1",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

pub(crate) fn deltas_in(c: &rusqlite::Connection) -> Vec<(String, String)> {
    let mut st = c
        .prepare("SELECT id, base FROM blobs WHERE kind = 2 ORDER BY id")
        .unwrap();
    st.query_map([], |r| {
        Ok((
            hex::encode(r.get::<_, Vec<u8>>(0)?),
            hex::encode(r.get::<_, Vec<u8>>(1)?),
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// What it proves: a stream backed up again with the same name takes the previous snapshot as
/// parent, and its changed chunks are stored as deltas — `blobs_delta` counts them and the
/// bytes added are a small fraction of the first day's (nearly every chunk changed: without
/// deltas day 1 adds about as much as day 0, see the next test). Every day restores byte-exact, including day 2,
/// whose deltas are taken against chunks of day 1 that are themselves deltas (the base must
/// then be day 0's chunk), and `check --read-data` verifies every delta against its base.
#[test]
fn changed_dumps_are_stored_as_deltas_and_restore_exactly() {
    let env = Env::new();
    init(&env, &[]);
    let days = three_days();
    let mut ids = Vec::new();
    let mut created = Vec::new();
    for d in &days {
        let c = env.create_stdin("db.sql", d);
        ids.push(id_of(&c));
        created.push(c);
    }
    assert_ne!(days[0], days[1]);
    assert_ne!(days[1], days[2]);
    let s: Vec<Value> = ids.iter().map(|id| summary(&env, id)).collect();
    eprintln!(
        "delta: dump {} bytes; added day0 {} / day1 {} / day2 {} bytes; blobs day0 {}, \
         day1 {} ({} deltas), day2 {} ({} deltas)",
        days[0].len(),
        num(&s[0], "bytes_added"),
        num(&s[1], "bytes_added"),
        num(&s[2], "bytes_added"),
        num(&s[0], "blobs_added"),
        num(&s[1], "blobs_added"),
        num(&s[1], "blobs_delta"),
        num(&s[2], "blobs_added"),
        num(&s[2], "blobs_delta"),
    );
    // Several chunks (plus the tree), or there is nothing to patch.
    assert!(num(&s[0], "blobs_added") >= 4, "{}", s[0]);
    assert_eq!(num(&s[0], "blobs_delta"), 0, "day 0 has no parent");
    assert_eq!(created[0]["parent"], Value::Null);
    for d in 1..3 {
        assert_eq!(
            created[d]["parent"].as_str(),
            Some(ids[d - 1].as_str()),
            "day {d} takes the previous day's snapshot of db.sql as parent"
        );
        assert!(num(&s[d], "blobs_delta") > 0, "day {d}: {}", s[d]);
        assert_eq!(
            created[d]["blobs_delta"], s[d]["blobs_delta"],
            "snapshot create --json reports the deltas it wrote"
        );
        assert!(
            num(&s[d], "bytes_added") * 4 < num(&s[0], "bytes_added"),
            "day {d} added {} bytes, day 0 {}: the changed chunks were not stored as deltas",
            num(&s[d], "bytes_added"),
            num(&s[0], "bytes_added")
        );
    }
    for (d, (id, dump)) in ids.iter().zip(&days).enumerate() {
        assert_restores(&env, id, dump, &format!("day {d}"));
    }
    // Chains: a day-2 delta is made against the day-1 version, itself a delta, one deeper;
    // every delta is exactly one deeper than its base.
    let c = catalog(&env);
    let chained: i64 = c
        .query_row(
            "SELECT count(*) FROM blobs d JOIN blobs b ON b.id = d.base
             WHERE d.kind = 2 AND b.kind = 2 AND d.depth = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(chained >= 3, "{chained} day-2 deltas against day-1 deltas");
    assert_eq!(
        deltas_not_one_deeper(&c),
        0,
        "a delta not one deeper than its base"
    );
    check_clean(&env, "check --read-data of three days of deltas");
}

/// What it proves: deltas need a parent. With `--force` (no parent) or under another stream
/// name (no snapshot with the same streams), the same changed dump is stored whole: no delta,
/// about as many bytes as day 0. The positive control at the end — the next day under the
/// original name — does get deltas, so the zeros are due to the missing parent.
#[test]
fn without_a_parent_nothing_is_stored_as_a_delta() {
    let env = Env::new();
    init(&env, &[]);
    let days = three_days();
    let s0 = env.create_stdin("db.sql", &days[0]);
    let added0 = num(&s0, "bytes_added");

    let out = env.run_stdin(
        &[
            "snapshot",
            "create",
            "--json",
            "--stdin",
            "--stdin-name",
            "db.sql",
            "--force",
        ],
        &days[1],
    );
    let forced = out.ok("snapshot create --stdin --force").json();
    assert_eq!(forced["parent"], Value::Null, "--force uses no parent");
    let forced_sum = summary(&env, &id_of(&forced));
    assert_eq!(num(&forced_sum, "blobs_delta"), 0, "{forced_sum}");
    assert!(
        num(&forced_sum, "bytes_added") * 2 > added0,
        "without a parent the changed dump is stored whole: {forced_sum}"
    );
    assert_restores(&env, &id_of(&forced), &days[1], "forced day 1");

    let other = env.create_stdin("other.sql", &days[2]);
    assert_eq!(
        other["parent"],
        Value::Null,
        "no snapshot has stream other.sql"
    );
    let os = summary(&env, &id_of(&other));
    assert_eq!(num(&os, "blobs_delta"), 0, "{os}");
    assert!(num(&os, "bytes_added") * 2 > added0, "{os}");

    // Control: day 3 (day 2 is stored already, whole) as db.sql has the forced snapshot as
    // parent and gets deltas.
    let again = env.create_stdin("db.sql", &Table::day0().next(1).next(2).next(3).dump());
    assert_eq!(again["parent"].as_str(), Some(id_of(&forced).as_str()));
    assert!(
        num(&summary(&env, &id_of(&again)), "blobs_delta") > 0,
        "{again}"
    );
    check_clean(&env, "check after backups without parents");
}

/// What it proves: with compression off (`--compression-level 0`) no delta is written even
/// with a parent (deltas are zstd frames), and the backups still restore exactly.
#[test]
fn no_deltas_when_compression_is_off() {
    let env = Env::new();
    init(&env, &["--compression-level", "0"]);
    let days = three_days();
    let s0 = env.create_stdin("db.sql", &days[0]);
    let s1 = env.create_stdin("db.sql", &days[1]);
    assert_eq!(s1["parent"].as_str(), Some(id_of(&s0).as_str()));
    assert_eq!(num(&summary(&env, &id_of(&s1)), "blobs_delta"), 0);
    assert_restores(&env, &id_of(&s1), &days[1], "day 1 without compression");
    check_clean(&env, "check without compression");
}

/// What it proves: a delta keeps its base alive through forget and prune. Day 1 and day 2 are
/// stored as deltas whose bases are day 0's chunks. Forgetting day 0 and pruning with
/// `--max-unused 0%` repacks day 0's pack (its tree is now unused): the bases must be copied,
/// not dropped. Forgetting day 1 too leaves day 2's deltas, whose chains run through day 1's
/// deltas down to day 0's chunks, which must survive a second prune.
#[test]
fn prune_keeps_the_bases_of_kept_deltas() {
    let env = Env::new();
    init(&env, &[]);
    let days = three_days();
    let mut ids = vec![id_of(&env.create_stdin("db.sql", &days[0]))];
    let day0_packs = env.packs();
    for d in &days[1..] {
        ids.push(id_of(&env.create_stdin("db.sql", d)));
    }
    for id in &ids[1..] {
        assert!(num(&summary(&env, id), "blobs_delta") > 0);
    }

    env.run(&["snapshot", "forget", &ids[0]]).ok("forget day 0");
    let out = env.run(&["prune", "--max-unused", "0%", "--json"]);
    no_panic(&out.stderr);
    let report = out.ok("prune after forgetting day 0").json();
    assert!(
        num(&report, "packs_deleted") >= 1 && num(&report, "packs_written") >= 1,
        "day 0's pack holds its now unused tree, so it is repacked: {report}"
    );
    assert!(
        day0_packs.iter().all(|p| !p.exists()),
        "day 0's pack was repacked: the bases now live in a new pack"
    );
    for (d, id) in ids.iter().enumerate().skip(1) {
        assert_restores(
            &env,
            id,
            &days[d],
            &format!("day {d} after day 0 was pruned"),
        );
    }
    check_clean(&env, "check after pruning day 0");

    env.run(&["snapshot", "forget", &ids[1]]).ok("forget day 1");
    let out = env.run(&["prune", "--max-unused", "0%", "--json"]);
    no_panic(&out.stderr);
    let report = out.ok("prune after forgetting day 1").json();
    assert!(num(&report, "bytes_freed") > 0, "{report}");
    assert_restores(
        &env,
        &ids[2],
        &days[2],
        "day 2 after days 0 and 1 were pruned",
    );
    check_clean(&env, "check after pruning day 1");
    let again = env
        .run(&["prune", "--dry-run", "--json"])
        .ok("prune --dry-run")
        .json();
    assert_eq!(again["delete_packs"], 0, "{again}");
}

/// What it proves: after the older days of a chained series are forgotten, prune stores the
/// oldest kept day's deltas whole again (their chains run through the forgotten days down to
/// day 0) and frees the forgotten past: the repository shrinks to about what the kept days
/// alone take, every kept day restores byte-exact, `check --read-data` is clean, and a second
/// prune finds nothing to do. The control: while every day is kept, no delta is stored whole.
#[test]
fn prune_frees_a_forgotten_past_by_storing_the_oldest_kept_deltas_whole() {
    let env = Env::new();
    init(&env, &[]);
    let mut t = Table::day0();
    let mut days = vec![t.dump()];
    for d in 1..9 {
        t = t.next(d);
        days.push(t.dump());
    }
    let ids: Vec<String> = days
        .iter()
        .map(|d| id_of(&env.create_stdin("db.sql", d)))
        .collect();
    let all = env
        .run(&["prune", "--dry-run", "--json"])
        .ok("prune --dry-run with every day kept")
        .json();
    assert_eq!(all["rerooted_blobs"], 0, "{all}");
    let before = harness::dir_bytes(&env.repo);

    for id in &ids[..6] {
        env.run(&["snapshot", "forget", id]).ok("forget");
    }
    let out = env.run(&["prune", "--json"]);
    no_panic(&out.stderr);
    let report = out.ok("prune after forgetting six days").json();
    assert!(
        num(&report["plan"], "rerooted_blobs") >= 3,
        "day 6's deltas are stored whole again: {report}"
    );
    let after = harness::dir_bytes(&env.repo);
    for (d, id) in ids.iter().enumerate().skip(6) {
        assert_restores(&env, id, &days[d], &format!("day {d} after the prune"));
    }
    check_clean(&env, "check after storing deltas whole again");

    // The kept days alone, in a fresh repository.
    let fresh = Env::new();
    init(&fresh, &[]);
    for d in &days[6..] {
        fresh.create_stdin("db.sql", d);
    }
    let alone = harness::dir_bytes(&fresh.repo);
    assert!(
        after < before && after * 10 <= alone * 13,
        "after prune {after} bytes; all nine days {before}; the three kept days alone {alone}"
    );
    let again = env
        .run(&["prune", "--dry-run", "--json"])
        .ok("second prune --dry-run")
        .json();
    assert_eq!(again["rerooted_blobs"], 0, "{again}");
    assert_eq!(again["delete_packs"], 0, "{again}");
}

/// What it proves: a delta whose base is gone is damage that is reported and refused, never
/// hidden. Day 1 needs day 0's pack only through its deltas' bases (it reuses no blob of day 0
/// whole). With day 0's pack deleted, `check` names the missing pack and day 1's `db.sql` as
/// affected, and the restore of day 1 fails with exit 13 naming the pack. After `repair index`
/// the bases are gone from the index too: `check` names each delta whose base is not indexed,
/// and the restore fails naming the missing base.
#[test]
fn a_lost_base_is_reported_and_refused() {
    let env = Env::new();
    // The default 1 MiB chunks: each holds thousands of rows, so ~2% changed rows leave none
    // unchanged and day 1 reuses nothing of day 0 whole (small chunks sometimes escape).
    env.init();
    let days = three_days();
    let s0 = id_of(&env.create_stdin("db.sql", &days[0]));
    let day0_packs = env.packs();
    let c1 = env.create_stdin("db.sql", &days[1]);
    let s1 = id_of(&c1);
    let sum1 = summary(&env, &s1);
    assert!(num(&sum1, "blobs_delta") > 0, "{sum1}");
    assert_eq!(
        num(&sum1, "blobs_reused"),
        0,
        "day 1 must need day 0's data only as delta bases"
    );
    assert_restores(&env, &s1, &days[1], "day 1 before the damage");

    for p in &day0_packs {
        fs::remove_file(p).unwrap();
    }
    let lost: Vec<String> = day0_packs.iter().map(|p| name_of(p)).collect();

    let out = env.run(&["check", "--json"]);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "check with day 0's pack gone");
    let r = out.json();
    let mut damaged = strings(&r["damaged_packs"]);
    damaged.sort();
    assert_eq!(damaged, lost, "{r}");
    assert_eq!(affected_paths(&r, &s1), ["db.sql"], "{r}");
    assert_eq!(affected_paths(&r, &s0), ["/"], "{r}");

    let out = env.try_restore_stdout(&s1, None);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "restore of day 1 without its bases")
        .stderr_has(&lost[0]);

    // The index forgets the lost pack: now the bases are unknown, not just unreadable.
    env.run(&["repair", "index"]).ok("repair index");
    let deltas = deltas_in_catalog(&env);
    assert_eq!(
        deltas.len() as u64,
        num(&sum1, "blobs_delta"),
        "the repaired index lists day 1's deltas"
    );
    let out = env.run(&["check", "--json"]);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "check with the bases unindexed");
    let r = out.json();
    let (problems, damaged_blobs) = (strings(&r["problems"]), strings(&r["damaged_blobs"]));
    for (delta, base) in &deltas {
        let line = format!("blob {delta}: its delta base {base} is not in any index");
        assert!(problems.contains(&line), "no {line:?} in {r}");
        assert!(damaged_blobs.contains(delta), "{delta} in {r}");
    }
    assert_eq!(affected_paths(&r, &s1), ["db.sql"], "{r}");

    let out = env.try_restore_stdout(&s1, None);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "restore of day 1 with its bases unindexed")
        .stderr_has("is not in the index");
    assert!(
        deltas
            .iter()
            .any(|(_, base)| out.stderr.contains(base.as_str())),
        "the message names the missing base: {}",
        out.stderr
    );
}

/// What it proves: a path backup stores a changed file as deltas against the parent's version
/// of the same path (the file is rewritten, so it is read again), leaves an unchanged file
/// alone, and both versions restore byte-exact into a directory.
#[test]
fn a_changed_file_in_a_path_backup_is_stored_as_deltas() {
    let env = Env::new();
    init(&env, &[]);
    let days = three_days();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let notes = Rng::new(5).text(200_000);
    fs::write(src.join("notes.txt"), &notes).unwrap();
    fs::write(src.join("db.sql"), &days[0]).unwrap();
    let s0 = env.create(&[&src]);
    fs::write(src.join("db.sql"), &days[1]).unwrap();
    let s1 = env.create(&[&src]);
    assert_eq!(s1["parent"].as_str(), Some(id_of(&s0).as_str()));
    assert_eq!(
        (num(&s1, "files_changed"), num(&s1, "files_unchanged")),
        (1, 1),
        "{s1}"
    );
    let sum1 = summary(&env, &id_of(&s1));
    assert!(num(&sum1, "blobs_delta") > 0, "{sum1}");
    assert!(
        num(&sum1, "bytes_added") * 4 < num(&s0, "bytes_added"),
        "{sum1} vs {s0}"
    );

    let stored = env.stored(&src);
    for (s, dump) in [(&s0, &days[0]), (&s1, &days[1])] {
        let target = env.path(format!("restored-{}", &id_of(s)[..8]));
        env.run(&[
            "snapshot",
            "restore",
            &id_of(s),
            "--target",
            target.to_str().unwrap(),
        ])
        .ok("snapshot restore --target");
        let got = fs::read(target.join(&stored).join("db.sql")).unwrap();
        assert!(got == *dump, "restored db.sql of {} differs", id_of(s));
        assert!(fs::read(target.join(&stored).join("notes.txt")).unwrap() == notes);
    }
    check_clean(&env, "check after a path backup with deltas");
}

/// What it proves: the FUSE mount decodes deltas through their bases, whole and at random
/// offsets, for the day that is stored as deltas as well as for the day of its bases.
#[test]
fn mount_reads_deltas() {
    use std::io::{Read, Seek, SeekFrom};
    harness::require_root("mounting with FUSE");
    let env = Env::new();
    init(&env, &[]);
    let days = three_days();
    let s0 = id_of(&env.create_stdin("db.sql", &days[0]));
    let s1 = id_of(&env.create_stdin("db.sql", &days[1]));
    assert!(num(&summary(&env, &s1), "blobs_delta") > 0);

    let point = env.path("mnt");
    let m = crate::mount::Mounted::start(&env, &point);
    let dir_of = |id: &str| -> PathBuf {
        fs::read_dir(point.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| name_of(p).ends_with(&id[..8]))
            .unwrap_or_else(|| panic!("no directory for snapshot {id} in the mount"))
    };
    let file1 = dir_of(&s1).join("db.sql");
    assert!(
        fs::read(&file1).unwrap() == days[1],
        "day 1 through the mount"
    );
    assert!(
        fs::read(dir_of(&s0).join("db.sql")).unwrap() == days[0],
        "day 0 through the mount"
    );
    let mut f = fs::File::open(&file1).unwrap();
    let mut rng = Rng::new(11);
    for _ in 0..40 {
        let off = rng.next_u64() % (days[1].len() as u64 - 5000);
        let mut buf = vec![0u8; 5000];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(
            buf == days[1][off as usize..off as usize + 5000],
            "read at {off}"
        );
    }
    drop(f);
    let stderr = m.unmount();
    no_panic(&stderr);
}

/// What it proves: a version-1 repository (made by rewriting a fresh repository's config with
/// the library, as an older build would have written it) is still opened and backed up, gets
/// no delta blobs even with a parent, keeps its version, restores exactly and checks clean.
/// Its new trees are version 2 without anchors: builds that know only repository version 1
/// refuse trees of version 3 ("unsupported tree version 3"), which would make them call every
/// snapshot the new build wrote damaged.
#[test]
fn a_version_1_repository_gets_no_deltas() {
    use tresor::backend::local::LocalBackend;
    use tresor::backend::{Backend, ObjectKind};
    let env = Env::new();
    init(&env, &[]);
    let open = || {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&env.repo));
        tresor::repo::Repo::open(backend, env.password.as_bytes(), &env.cache).unwrap()
    };
    {
        let repo = open();
        let mut config = repo.config().clone();
        assert_eq!(config.version, 3, "a new repository is version 3");
        config.version = 1;
        LocalBackend::new(&env.repo)
            .put(
                ObjectKind::Config,
                "config",
                &config.encode(repo.key()).unwrap(),
            )
            .unwrap();
    }
    let days = three_days();
    let s0 = env.create_stdin("db.sql", &days[0]);
    let s1 = env.create_stdin("db.sql", &days[1]);
    assert_eq!(s1["parent"].as_str(), Some(id_of(&s0).as_str()));
    let sum1 = summary(&env, &id_of(&s1));
    assert_eq!(num(&sum1, "blobs_delta"), 0, "{sum1}");
    assert!(deltas_in_catalog(&env).is_empty());
    assert_restores(
        &env,
        &id_of(&s1),
        &days[1],
        "day 1 of a version-1 repository",
    );
    check_clean(&env, "check of a version-1 repository");
    let repo = open();
    assert_eq!(
        repo.config().version,
        1,
        "a backup does not upgrade the repository"
    );
    for s in [&s0, &s1] {
        let (_, snap) = repo.find_snapshot(&id_of(s)).unwrap();
        let tree = repo.load_tree(&snap.root).unwrap();
        assert_eq!(tree.version, 2, "tree of a version-1 repository");
        assert!(tree.nodes.iter().all(|n| n.anchors.is_empty()));
    }
}

/// Flips one bit in the middle of a blob's stored bytes; returns the pack's name.
fn flip_blob(env: &Env, blob: &str) -> String {
    let (pack, offset, len): (Vec<u8>, i64, i64) = catalog(env)
        .query_row(
            "SELECT p.id, b.offset, b.stored_len FROM blobs b JOIN packs p ON p.rowid = b.pack
             WHERE b.id = ?1",
            [hex::decode(blob).unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let pack = hex::encode(pack);
    let path = env
        .packs()
        .into_iter()
        .find(|p| name_of(p) == pack)
        .unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[(offset + len / 2) as usize] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    pack
}

/// `check --read-data --json`: its exit code and report.
fn check_read_data(env: &Env) -> (i32, Value) {
    let out = env.run(&["check", "--read-data", "--json"]);
    no_panic(&out.stderr);
    (out.code, out.json())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// What it proves: `check --read-data` decodes every delta against its base. A flipped bit in
/// a delta is found and blamed on that delta alone (day 0 stays restorable); a flipped bit in
/// a base is found in the base and in every delta made from it, and both days' `db.sql` are
/// named. A structural check cannot see either (it reads no blob), and restores refuse the
/// damaged data with exit 13.
#[test]
fn damaged_deltas_and_bases_are_found_by_read_data() {
    let days = three_days();
    let two_days = || {
        let env = Env::new();
        init(&env, &[]);
        let s0 = id_of(&env.create_stdin("db.sql", &days[0]));
        let s1 = id_of(&env.create_stdin("db.sql", &days[1]));
        let deltas = deltas_in_catalog(&env);
        assert!(!deltas.is_empty());
        (env, s0, s1, deltas)
    };

    // A damaged delta.
    let (env, s0, s1, deltas) = two_days();
    let (delta, _) = &deltas[deltas.len() / 2];
    let pack = flip_blob(&env, delta);
    env.run(&["check"]).ok("a structural check reads no blob");
    let (code, r) = check_read_data(&env);
    assert_eq!(code, exit::DAMAGED, "{r}");
    assert_eq!(
        strings(&r["damaged_blobs"]),
        std::slice::from_ref(delta),
        "{r}"
    );
    assert_eq!(affected_paths(&r, &s1), ["db.sql"], "{r}");
    assert!(affected_paths(&r, &s0).is_empty(), "{r}");
    assert_restores(&env, &s0, &days[0], "day 0 beside a damaged delta");
    let out = env.try_restore_stdout(&s1, None);
    no_panic(&out.stderr);
    out.expect_code(exit::DAMAGED, "restore of a damaged delta")
        .stderr_has(&pack);

    // A damaged base: the deltas made from it cannot be decoded either.
    let (env, s0, s1, deltas) = two_days();
    let base = deltas[0].1.clone();
    let pack = flip_blob(&env, &base);
    env.run(&["check"]).ok("a structural check reads no blob");
    let (code, r) = check_read_data(&env);
    assert_eq!(code, exit::DAMAGED, "{r}");
    let mut want: Vec<String> = deltas
        .iter()
        .filter(|(_, b)| *b == base)
        .map(|(d, _)| d.clone())
        .chain([base.clone()])
        .collect();
    want.sort();
    assert_eq!(strings(&r["damaged_blobs"]), want, "{r}");
    assert_eq!(affected_paths(&r, &s0), ["db.sql"], "{r}");
    assert_eq!(affected_paths(&r, &s1), ["db.sql"], "{r}");
    for s in [&s0, &s1] {
        let out = env.try_restore_stdout(s, None);
        no_panic(&out.stderr);
        out.expect_code(exit::DAMAGED, "restore that needs a damaged base")
            .stderr_has(&pack);
    }
}

/// Runs the binary with another cache directory (another user or machine's catalog).
fn run_with_cache(env: &Env, cache: &Path, args: &[&str]) -> harness::Out {
    let mut cmd = env.command(args);
    cmd.env("TRESOR_CACHE_DIR", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    harness::wait_with_timeout(
        cmd.spawn().unwrap(),
        harness::DEFAULT_TIMEOUT,
        &args.join(" "),
    )
}

/// `snapshot create --json --stdin --stdin-name db.sql EXTRA` with its own cache, fed `data`
/// by a thread that hands back the still open stdin once everything is written.
fn start_held(
    env: &Env,
    cache: &Path,
    extra: &[&str],
    data: Arc<Vec<u8>>,
) -> (Child, thread::JoinHandle<ChildStdin>) {
    let mut args = vec![
        "snapshot",
        "create",
        "--json",
        "--stdin",
        "--stdin-name",
        "db.sql",
    ];
    args.extend_from_slice(extra);
    let mut cmd = env.command(&args);
    cmd.env("TRESOR_CACHE_DIR", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        stdin.write_all(&data).unwrap();
        stdin
    });
    (child, feeder)
}

/// What it proves: two backups running at the same time may store the same changed chunks
/// twice — one as deltas (it has a parent), the other whole (`--force`, or another host) —
/// and the index then lists both copies. Whatever order a catalog loads them in: `check
/// --read-data` verifies the delta copies against their bases and finds no damage; after day
/// 0 is forgotten and pruned (its chunks are the bases of the delta copies), every day-1
/// snapshot still restores from a fresh catalog and `check` stays clean. Six fresh catalogs
/// each time: which copy a catalog uses must not depend on the order it loads index objects
/// in (it did: a catalog that used the whole copies let prune delete the bases, and a later
/// catalog that used the delta copies could not restore day 1).
#[test]
fn concurrent_whole_and_delta_copies_of_the_same_chunks() {
    let env = Env::new();
    // 1 MiB chunks: day 1 reuses no chunk of day 0 (see a_lost_base_is_reported_and_refused).
    env.init();
    let days = three_days();
    let s0 = id_of(&env.create_stdin("db.sql", &days[0]));
    let day1 = Arc::new(days[1].clone());
    // Both read all of day 1 before either ends: neither sees what the other stores.
    let (a, feed_a) = start_held(&env, &env.path("cache-a"), &[], day1.clone());
    let (b, feed_b) = start_held(&env, &env.path("cache-b"), &["--force"], day1);
    let (stdin_a, stdin_b) = (feed_a.join().unwrap(), feed_b.join().unwrap());
    drop(stdin_a);
    let out_a = harness::wait_with_timeout(a, harness::DEFAULT_TIMEOUT, "backup with deltas");
    let sa = out_a.ok("backup with deltas").json();
    drop(stdin_b);
    let out_b = harness::wait_with_timeout(b, harness::DEFAULT_TIMEOUT, "backup without parent");
    let sb = out_b.ok("backup without parent").json();
    assert_eq!(sa["parent"].as_str(), Some(s0.as_str()));
    assert!(num(&sa, "blobs_delta") > 0, "{sa}");
    assert_eq!(sb["parent"], Value::Null);
    assert_eq!(
        num(&sb, "blobs_reused"),
        0,
        "the whole copies were stored: {sb}"
    );

    let fresh = |round: &str, k: usize| env.path(format!("cache-{round}-{k}"));
    for k in 0..6 {
        let out = run_with_cache(
            &env,
            &fresh("check", k),
            &["check", "--read-data", "--json"],
        );
        no_panic(&out.stderr);
        out.ok(&format!("check --read-data from fresh catalog {k}"));
    }

    env.run(&["snapshot", "forget", &s0]).ok("forget day 0");
    // Nothing repacked: a pack that holds the unused copies among much used data stays.
    let out = env.run(&["prune", "--max-unused", "100%", "--json"]);
    no_panic(&out.stderr);
    out.ok("prune");
    for k in 0..6 {
        let cache = fresh("pruned", k);
        for s in [&sa, &sb] {
            let out = run_with_cache(
                &env,
                &cache,
                &["snapshot", "restore", &id_of(s), "--stdout"],
            );
            no_panic(&out.stderr);
            out.ok(&format!("restore from fresh catalog {k} after the prune"));
            assert!(out.stdout == days[1], "catalog {k}: restored bytes differ");
        }
        let out = run_with_cache(&env, &cache, &["check", "--read-data", "--json"]);
        no_panic(&out.stderr);
        out.ok(&format!(
            "check --read-data after the prune, fresh catalog {k}"
        ));
        // The prune did leave delta copies without their bases (the whole copies are used):
        // check notes them, as unused, instead of calling them damage.
        let r = out.json();
        assert!(
            strings(&r["notes"])
                .iter()
                .any(|n| n.contains("unused second copy")),
            "{r}"
        );
    }
}
