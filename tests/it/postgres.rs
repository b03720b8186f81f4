//! Database dumps through `--command`: a real PostgreSQL round trip, and commands that fail.

use std::process::Stdio;

use crate::harness::{self, Env, Pg, exit, wait_with_timeout};

/// Schema and a few hundred thousand rows of varied types, built inside the server.
pub(crate) const SHOP_SQL: &str = r#"
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    balance numeric(14,2),
    score double precision,
    born date,
    created timestamptz,
    prefs jsonb,
    tags text[],
    note text
);
INSERT INTO customers (name, email, balance, score, born, created, prefs, tags, note)
SELECT 'Kunde ' || i || ' ' || md5(i::text),
       'user' || i || '@example.org',
       (i * 37 % 100000) / 100.0,
       sqrt(i) * 1.5,
       date '1950-01-01' + (i % 20000),
       timestamptz '2020-01-01 00:00:00+00' + i * interval '17 seconds',
       jsonb_build_object('lang', (ARRAY['de','en','fr','ja'])[1 + i % 4], 'newsletter', i % 3 = 0, 'n', i),
       ARRAY['t' || (i % 7), 't' || (i % 11)],
       CASE WHEN i % 10 = 0 THEN NULL
            WHEN i % 10 = 1 THEN E'tab\there\nnewline \\ backslash ✓ Ünïcødé 日本語 ' || i
            ELSE repeat('x', i % 50) END
FROM generate_series(1, 100000) AS i;

CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    amount numeric(12,2),
    status text,
    items jsonb,
    created timestamptz
);
INSERT INTO orders (customer_id, amount, status, items, created)
SELECT 1 + i % 100000,
       (i % 9999) / 3.0,
       (ARRAY['new','paid','shipped','returned'])[1 + i % 4],
       jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (i % 5000), 'qty', 1 + i % 5),
                         jsonb_build_object('sku', md5(i::text), 'qty', 1)),
       timestamptz '2021-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, 200000) AS i;
CREATE INDEX orders_customer ON orders (customer_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 3000;
"#;

/// Table names of the public schema, and per table: row count and md5 over the rows in id order.
pub(crate) fn fingerprint(pg: &Pg, db: &str) -> Vec<(String, String)> {
    let tables = pg.sql(db, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");
    tables
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let q = format!("SELECT count(*) || ' ' || md5(string_agg(x::text, E'\\n' ORDER BY x.id)) FROM {t} x");
            (t.to_string(), pg.sql(db, &q))
        })
        .collect()
}

/// Drops the `\restrict KEY` / `\unrestrict KEY` lines that newer pg_dump versions write with a
/// random key per run.
pub(crate) fn without_restrict_keys(dump: &[u8]) -> Vec<u8> {
    dump.split_inclusive(|b| *b == b'\n')
        .filter(|l| !l.starts_with(b"\\restrict ") && !l.starts_with(b"\\unrestrict "))
        .flatten()
        .copied()
        .collect()
}

#[test]
fn postgres_dump_round_trip_through_command() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SHOP_SQL);
    let env = Env::new();
    env.init();

    let cmd = pg.dump_command("shop");
    let created = env.create(&["--command", &cmd, "--stdin-name", "shop.sql", "--tag", "db"]);
    assert_eq!(created["files"], 1, "{created}");
    assert_eq!(
        created["command_exit_status"],
        serde_json::json!([0]),
        "{created}"
    );
    let dump_size = created["bytes_read"].as_u64().unwrap();
    assert!(
        dump_size > 20_000_000,
        "the dump should be tens of MB, got {dump_size}"
    );
    let shown = env.show("latest");
    assert_eq!(shown["sources"][0]["kind"], "command", "{shown}");
    assert_eq!(shown["sources"][0]["command"], cmd.as_str(), "{shown}");
    assert_eq!(shown["paths"], serde_json::json!(["shop.sql"]), "{shown}");

    // tresor snapshot restore latest --stdout --path shop.sql | psql  (into a new database)
    pg.createdb("shop_restored");
    let mut restore = env.command(&[
        "snapshot", "restore", "latest", "--stdout", "--path", "shop.sql",
    ]);
    restore
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut restore = restore.spawn().unwrap();
    let pipe = restore.stdout.take().unwrap();
    let mut psql = pg.psql_cmd("shop_restored");
    psql.stdin(Stdio::from(pipe))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let psql = wait_with_timeout(
        psql.spawn().unwrap(),
        harness::DEFAULT_TIMEOUT,
        "psql < restored dump",
    );
    let restore = wait_with_timeout(
        restore,
        harness::DEFAULT_TIMEOUT,
        "snapshot restore --stdout",
    );
    restore.ok("snapshot restore latest --stdout --path shop.sql");
    psql.ok("psql loading the restored dump");

    let a = fingerprint(&pg, "shop");
    let b = fingerprint(&pg, "shop_restored");
    assert_eq!(a.len(), 2, "expected two tables, got {a:?}");
    assert!(
        a.iter()
            .any(|(t, f)| t == "orders" && f.starts_with("200000 ")),
        "{a:?}"
    );
    assert_eq!(a, b, "table contents differ after the round trip");
    // Schema and data as a whole: both databases dump to the same bytes.
    let da = without_restrict_keys(&pg.dump("shop", &[]));
    let db = without_restrict_keys(&pg.dump("shop_restored", &[]));
    assert!(
        da == db,
        "pg_dump of the original ({} bytes) and the restored database ({} bytes) differ",
        da.len(),
        db.len()
    );
}

/// One cron run, one snapshot: two databases and a directory; any failing dump voids it.
#[test]
fn several_dumps_and_a_directory_in_one_snapshot() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", "CREATE TABLE t (id int, v text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 5000) i;");
    pg.createdb("crm");
    pg.sql(
        "crm",
        "CREATE TABLE c (id int); INSERT INTO c SELECT generate_series(1, 300);",
    );
    let env = Env::new();
    env.init();
    let etc = env.path("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("app.conf"), b"port = 5432\n").unwrap();
    let (shop_cmd, crm_cmd) = (pg.dump_command("shop"), pg.dump_command("crm"));
    let created = env.create(&[
        etc.to_str().unwrap(),
        "--command",
        &format!("shop.sql={shop_cmd}"),
        "--command",
        &format!("crm.sql={crm_cmd}"),
    ]);
    assert_eq!(
        created["command_exit_status"],
        serde_json::json!([0, 0]),
        "{created}"
    );
    let id = created["id"].as_str().unwrap();
    let paths = env.show(id)["paths"].clone();
    assert_eq!(
        paths,
        serde_json::json!([env.stored(&etc), "shop.sql", "crm.sql"]),
        "{paths}"
    );
    // Each stream is its own file and is the database's dump.
    for (db, file) in [("shop", "shop.sql"), ("crm", "crm.sql")] {
        let restored = env.restore_stdout(id, Some(file));
        let fresh = pg.dump(db, &[]);
        assert_eq!(
            without_restrict_keys(&restored),
            without_restrict_keys(&fresh),
            "{file}"
        );
    }

    // A failing second command: no snapshot, and the error names that command.
    let before = env.snapshot_count();
    let bad = pg.dump_command("nosuchdb");
    let out = env.run(&[
        "snapshot",
        "create",
        etc.to_str().unwrap(),
        "--command",
        &format!("shop.sql={shop_cmd}"),
        "--command",
        &format!("bad.sql={bad}"),
    ]);
    out.expect_code(exit::FATAL, "a failing second command")
        .stderr_has(&bad)
        .stderr_has("no snapshot was written");
    assert_eq!(env.snapshot_count(), before);
    // Two unnamed commands are refused: their files would collide.
    env.run(&[
        "snapshot",
        "create",
        "--command",
        "echo a",
        "--command",
        "echo b",
    ])
    .expect_code(exit::FATAL, "two unnamed commands")
    .stderr_has("NAME=CMD");
}

#[test]
fn failing_pg_dump_writes_no_snapshot() {
    let pg = Pg::start();
    let env = Env::new();
    env.init();
    env.create_stdin("before.txt", b"an earlier snapshot\n");
    let before = env.snapshot_count();

    let cmd = pg.dump_command("nosuchdb");
    let out = env.run(&[
        "snapshot",
        "create",
        "--command",
        &cmd,
        "--stdin-name",
        "shop.sql",
    ]);
    out.expect_code(exit::FATAL, "snapshot create with a failing pg_dump");
    // pg_dump's own complaint reaches the user, and tresor says what happened.
    out.stderr_has("nosuchdb").stderr_has("does not exist");
    out.stderr_has("exited with status")
        .stderr_has("no snapshot was written");
    assert_eq!(
        env.snapshot_count(),
        before,
        "a failed command must not leave a snapshot"
    );
}

#[test]
fn command_failing_or_killed_by_a_signal_writes_no_snapshot() {
    let env = Env::new();
    env.init();
    env.create_stdin("before.txt", b"an earlier snapshot\n");
    let before = env.snapshot_count();
    let cases = [
        // Output first (more than one pack's worth), then death by SIGKILL.
        (
            "head -c 20000000 /dev/urandom; kill -9 $$",
            &["killed by signal 9"][..],
        ),
        // The inner shell dies of SIGKILL; the outer one reports it as 137 unless it exec'd.
        (
            "sh -c 'kill -9 $$'",
            &["killed by signal 9", "exited with status 137"][..],
        ),
        ("echo partial; exit 3", &["exited with status 3"][..]),
    ];
    for (cmd, why) in cases {
        let out = env.run(&[
            "snapshot",
            "create",
            "--command",
            cmd,
            "--stdin-name",
            "out.bin",
        ]);
        assert_ne!(
            out.code,
            exit::OK,
            "{cmd}: must fail; stderr:\n{}",
            out.stderr
        );
        assert_ne!(
            out.code,
            exit::INCOMPLETE,
            "{cmd}: a failed command is not an incomplete snapshot"
        );
        assert!(
            why.iter().any(|w| out.stderr.contains(w)),
            "{cmd}: stderr should say one of {why:?}:\n{}",
            out.stderr
        );
        out.stderr_has("no snapshot was written");
        assert_eq!(
            env.snapshot_count(),
            before,
            "{cmd}: no snapshot may be written"
        );
    }
    // The repository is still healthy and usable.
    env.run(&["check"]).ok("check after failed commands");
    env.create(&["--command", "echo fine", "--stdin-name", "ok.txt"]);
    assert_eq!(env.restore_stdout("latest", Some("ok.txt")), b"fine\n");
}
