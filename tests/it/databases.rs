//! Databases as sources (`--postgres`, `--sqlite`), `db list`, `db restore` and `drill`, against
//! real throwaway PostgreSQL clusters and real SQLite files written by another process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, Env, Pg, exit, wait_with_timeout};
use crate::postgres::{SHOP_SQL, fingerprint};

/// A small shop: two tables with a foreign key, a view, a sequence.
const SMALL_SHOP: &str = "
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text);
INSERT INTO customers (name, note) SELECT 'c' || i, md5(i::text) FROM generate_series(1, 2000) i;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), amount numeric(10,2));
INSERT INTO orders (customer_id, amount) SELECT 1 + i % 2000, i / 7.0 FROM generate_series(1, 5000) i;
CREATE VIEW big AS SELECT * FROM orders WHERE amount > 100;
";

/// The connection options of `pg` for tresor.
fn conn(pg: &Pg) -> Vec<String> {
    vec![
        "--pg-host".into(),
        pg.sock.display().to_string(),
        "--pg-user".into(),
        "postgres".into(),
        "--pg-bindir".into(),
        pg.bindir.display().to_string(),
    ]
}

fn args<'a>(fixed: &[&'a str], more: &'a [String]) -> Vec<&'a str> {
    let mut v = fixed.to_vec();
    v.extend(more.iter().map(String::as_str));
    v
}

fn scratch_databases(pg: &Pg) -> String {
    pg.sql(
        "postgres",
        "SELECT coalesce(string_agg(datname, ','), '') FROM pg_database WHERE datname LIKE 'tresor\\_drill\\_%'",
    )
}

#[test]
fn a_postgres_source_round_trips_with_its_row_counts_and_refuses_a_non_empty_target() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    let created = env.create(&args(&["--postgres", "shop", "--count-rows"], &c));
    assert_eq!(created["files"], 1, "{created}");
    let first = created["id"].as_str().unwrap().to_string();

    let shown = env.show("latest");
    let src = &shown["sources"][0];
    assert_eq!(src["kind"], "database", "{shown}");
    assert_eq!(src["engine"], "postgres");
    assert_eq!(src["name"], "postgres/local/shop.sql");
    assert_eq!(src["database"], "shop");
    assert_eq!(src["format"], "plain");
    assert!(src["dumper"].as_str().unwrap().contains("pg_dump"), "{src}");
    assert!(!src["server_version"].as_str().unwrap().is_empty(), "{src}");
    assert_eq!(
        src["tables"],
        serde_json::json!({"public.customers": 2000, "public.orders": 5000})
    );
    let listed = env
        .run(&["db", "list", "latest", "--json"])
        .ok("db list")
        .json();
    assert_eq!(listed[0]["name"], "postgres/local/shop.sql", "{listed}");
    let text = env
        .run(&["db", "list", "latest"])
        .ok("db list")
        .stdout_str();
    assert!(text.contains("postgres/local/shop.sql"), "{text}");

    // Into a database that does not exist: refused unless --create.
    env.run(&args(
        &["db", "restore", "latest", "shop", "--into", "copy"],
        &c,
    ))
    .expect_code(exit::FATAL, "restore into a missing database")
    .stderr_has("does not exist")
    .stderr_has("--create");
    env.run(&args(
        &[
            "db", "restore", "latest", "shop", "--into", "copy", "--create",
        ],
        &c,
    ))
    .ok("db restore --create");
    assert_eq!(fingerprint(&pg, "shop"), fingerprint(&pg, "copy"));

    // Again into the now non-empty database: refused, and it is left as it was.
    pg.sql(
        "copy",
        "INSERT INTO customers (name) VALUES ('added after restore')",
    );
    env.run(&args(
        &[
            "db", "restore", "latest", "shop", "--into", "copy", "--create",
        ],
        &c,
    ))
    .expect_code(exit::FATAL, "restore into a non-empty database")
    .stderr_has("is not empty")
    .stderr_has("--drop-existing");
    assert_eq!(pg.sql("copy", "SELECT count(*) FROM customers"), "2001");
    env.run(&args(
        &[
            "db",
            "restore",
            "latest",
            "postgres/local/shop.sql",
            "--into",
            "copy",
            "--drop-existing",
        ],
        &c,
    ))
    .ok("db restore --drop-existing");
    assert_eq!(fingerprint(&pg, "shop"), fingerprint(&pg, "copy"));

    // The next day's dump has the previous one as its parent: stored as a changed file
    // against it, like a `--command` stream.
    pg.sql("shop", "UPDATE customers SET note = 'changed' WHERE id = 7");
    let again = env.create(&args(&["--postgres", "shop", "--count-rows"], &c));
    assert_eq!(again["parent"], first.as_str(), "{again}");
    assert_eq!(again["files_changed"], 1, "{again}");
    env.run(&args(
        &[
            "db",
            "restore",
            "latest",
            "shop",
            "--into",
            "copy",
            "--drop-existing",
        ],
        &c,
    ))
    .ok("restore of the second snapshot");
    assert_eq!(fingerprint(&pg, "shop"), fingerprint(&pg, "copy"));
}

#[test]
fn postgres_all_stores_every_database_and_the_globals_that_a_fresh_cluster_needs() {
    let pg = Pg::start();
    pg.sql("postgres", "CREATE ROLE shop_owner LOGIN");
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    pg.sql(
        "shop",
        "ALTER TABLE customers OWNER TO shop_owner; ALTER TABLE orders OWNER TO shop_owner",
    );
    pg.createdb("crm");
    pg.sql(
        "crm",
        "CREATE TABLE contacts (id int PRIMARY KEY); INSERT INTO contacts SELECT generate_series(1, 300)",
    );
    let env = Env::new();
    env.init();
    let created = env.create(&args(&["--postgres", "all", "--count-rows"], &conn(&pg)));
    let shown = env.show(created["id"].as_str().unwrap());
    let names: Vec<&str> = shown["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "postgres/local/crm.sql",
            "postgres/local/postgres.sql",
            "postgres/local/shop.sql",
            "postgres/local/globals.sql"
        ],
        "{shown}"
    );
    let globals = env.restore_stdout("latest", Some("postgres/local/globals.sql"));
    assert!(
        String::from_utf8_lossy(&globals).contains("CREATE ROLE shop_owner"),
        "{}",
        String::from_utf8_lossy(&globals)
    );

    // A new server: without the role, the shop would not load as dumped.
    let fresh = Pg::start();
    let fc = conn(&fresh);
    env.run(&args(
        &[
            "db", "restore", "latest", "shop", "--into", "shop", "--create",
        ],
        &fc,
    ))
    .expect_code(exit::FATAL, "restore without the owner role")
    .stderr_has("shop_owner");
    assert_eq!(
        fresh.sql(
            "shop",
            "SELECT count(*) FROM pg_class WHERE relname = 'customers'"
        ),
        "0",
        "a failed load leaves nothing behind (one transaction)"
    );
    env.run(&args(
        &[
            "db",
            "restore",
            "latest",
            "shop",
            "--into",
            "shop",
            "--create",
            "--globals",
        ],
        &fc,
    ))
    .ok("restore with --globals");
    assert_eq!(fingerprint(&pg, "shop"), fingerprint(&fresh, "shop"));
    assert_eq!(
        fresh.sql(
            "shop",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"
        ),
        "shop_owner"
    );
    // The globals load again on a server that has them (existing roles are skipped).
    env.run(&args(
        &["db", "restore", "latest", "postgres/local/globals.sql"],
        &fc,
    ))
    .ok("globals again");
    env.run(&args(
        &[
            "db", "restore", "latest", "crm", "--into", "crm", "--create",
        ],
        &fc,
    ))
    .ok("crm");
    assert_eq!(fingerprint(&pg, "crm"), fingerprint(&fresh, "crm"));
}

#[test]
fn a_failing_dumper_fails_the_snapshot_with_what_it_said() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    env.create(&args(&["--postgres", "shop"], &c));
    let before = env.snapshot_count();

    // A database that does not exist: the session that would export the snapshot fails.
    env.run(&args(
        &[
            "snapshot",
            "create",
            "--postgres",
            "shop",
            "--postgres",
            "nosuchdb",
        ],
        &c,
    ))
    .expect_code(exit::FATAL, "a missing database")
    .stderr_has("postgres/local/nosuchdb.sql")
    .stderr_has("does not exist")
    .stderr_has("no snapshot was written");
    // pg_dump itself fails (after the session started): its exit and message are shown.
    env.run(&args(
        &[
            "snapshot",
            "create",
            "--postgres",
            "shop",
            "--pg-dump-option=--strict-names",
            "--pg-dump-option=--table=nosuchtable",
        ],
        &c,
    ))
    .expect_code(exit::FATAL, "pg_dump failing")
    .stderr_has("pg_dump exited with status 1")
    .stderr_has("nosuchtable")
    .stderr_has("no snapshot was written");
    assert_eq!(env.snapshot_count(), before);
    env.run(&["check"]).ok("check after failed dumps");
}

#[test]
fn a_drill_passes_reports_its_time_and_drops_its_scratch_database() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    env.create(&args(&["--postgres", "shop", "--count-rows"], &c));
    let out = env.run(&args(&["drill", "--json"], &c));
    out.ok("drill");
    let v = out.json();
    assert_eq!(v["passed"], true, "{v}");
    let s = &v["sources"][0];
    assert_eq!(s["result"], "ok", "{v}");
    assert_eq!(s["tables_checked"], 2, "{v}");
    assert!(s["restore_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        s["scratch"]
            .as_str()
            .unwrap()
            .starts_with("tresor_drill_shop_"),
        "{v}"
    );
    assert_eq!(
        scratch_databases(&pg),
        "",
        "the scratch database must be gone"
    );
    let text = env
        .run(&args(&["drill", "latest"], &c))
        .ok("drill")
        .stdout_str();
    assert!(text.contains("drill postgres/local/shop.sql: ok"), "{text}");
}

#[test]
fn a_drill_fails_when_the_dump_lacks_a_table_whose_rows_were_counted() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    pg.sql(
        "shop",
        "CREATE TABLE audit (id int); INSERT INTO audit SELECT generate_series(1, 100)",
    );
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    // A broken dump: the counts include `audit`, the dump leaves it out.
    env.create(&args(
        &[
            "--postgres",
            "shop",
            "--count-rows",
            "--pg-dump-option=--exclude-table=audit",
        ],
        &c,
    ));
    let out = env.run(&args(&["drill", "--json"], &c));
    out.expect_code(exit::DRILL_FAILED, "drill of a dump without audit");
    let v = out.json();
    assert_eq!(v["passed"], false, "{v}");
    let s = &v["sources"][0];
    assert_eq!(s["result"], "mismatch", "{v}");
    assert_eq!(
        s["mismatches"],
        serde_json::json!([{"table": "public.audit", "recorded": 100, "restored": null}]),
        "{v}"
    );
    assert_eq!(
        scratch_databases(&pg),
        "",
        "the scratch database must be gone"
    );
    let text = env.run(&args(&["drill"], &c));
    text.expect_code(exit::DRILL_FAILED, "drill, text");
    assert!(
        text.stdout_str()
            .contains("public.audit: recorded 100, restored missing"),
        "{}",
        text.stdout_str()
    );

    // A dump that lacks a table a view needs does not even load: the drill says so.
    env.create(&args(
        &[
            "--postgres",
            "shop",
            "--count-rows",
            "--pg-dump-option=--exclude-table=orders",
        ],
        &c,
    ));
    let out = env.run(&args(&["drill", "--json"], &c));
    out.expect_code(exit::DRILL_FAILED, "drill of a dump that does not load");
    let v = out.json();
    let s = &v["sources"][0];
    assert_eq!(s["result"], "failed", "{v}");
    let error = s["error"].as_str().unwrap();
    assert!(
        error.contains("relation \"public.orders\" does not exist"),
        "{error}"
    );
    assert_eq!(
        scratch_databases(&pg),
        "",
        "the scratch database must be gone"
    );
}

#[test]
fn a_drill_interrupted_half_way_leaves_no_scratch_database() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SHOP_SQL);
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    env.create(&args(&["--postgres", "shop", "--count-rows"], &c));
    let mut cmd = env.command(&args(&["drill"], &c));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    // Wait for the scratch database to appear, and let the load start.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scratch_databases(&pg).is_empty() {
        assert!(Instant::now() < deadline, "no scratch database appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = wait_with_timeout(child, harness::DEFAULT_TIMEOUT, "drill after SIGINT");
    out.expect_code(130, "an interrupted drill");
    assert_eq!(
        scratch_databases(&pg),
        "",
        "the scratch database must be dropped on Ctrl-C"
    );
}

/// A writer in another process: every transaction adds one row to `a` and one to `b`, so a
/// consistent copy has as many rows in each.
const WRITER: &str = r#"
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("PRAGMA journal_mode=WAL")
i = 0
while True:
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO a (v) VALUES (?)", ("x" * 200,))
    c.execute("INSERT INTO b (v) VALUES (?)", (i,))
    c.execute("COMMIT")
    i += 1
    if i == 50:
        print("writing", flush=True)
"#;

#[test]
fn an_sqlite_database_written_by_another_process_is_copied_consistently() {
    let env = Env::new();
    env.init();
    let dbp = env.path("app.db");
    {
        let c = rusqlite::Connection::open(&dbp).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE b (id INTEGER PRIMARY KEY, v INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO a (v) SELECT printf('%.200c', 'y') FROM n;
             INSERT INTO b (v) SELECT id FROM a;",
        )
        .unwrap();
    }
    let mut writer = Command::new("python3")
        .args(["-c", WRITER])
        .arg(&dbp)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the concurrent writer");
    let mut line = String::new();
    BufReader::new(writer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "writing");
    let created = env.create(&["--sqlite", dbp.to_str().unwrap(), "--count-rows"]);
    let _ = writer.kill();
    let _ = writer.wait();
    assert_eq!(created["files"], 1, "{created}");

    let shown = env.show("latest");
    let src = &shown["sources"][0];
    let stored = format!("sqlite/{}", env.stored(&dbp));
    assert_eq!(src["name"], stored.as_str(), "{shown}");
    assert_eq!(src["engine"], "sqlite");
    let (na, nb) = (
        src["tables"]["a"].as_u64().unwrap(),
        src["tables"]["b"].as_u64().unwrap(),
    );
    assert_eq!(na, nb, "the copy saw half a transaction: {src}");
    assert!(na > 20_000, "the writer's rows before the copy are in it");

    let out = env.path("restored.db");
    env.run(&[
        "db",
        "restore",
        "latest",
        dbp.to_str().unwrap(),
        "--into",
        out.to_str().unwrap(),
    ])
    .ok("db restore of the SQLite file");
    let c = rusqlite::Connection::open(&out).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let count = |t: &str| -> u64 {
        c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!((count("a"), count("b")), (na, nb));
    drop(c);
    env.run(&[
        "db",
        "restore",
        "latest",
        &stored,
        "--into",
        out.to_str().unwrap(),
    ])
    .expect_code(exit::FATAL, "restore over an existing file")
    .stderr_has("--drop-existing");

    let drill = env.run(&["drill", "--json"]);
    drill.ok("sqlite drill");
    let v = drill.json();
    assert_eq!(v["sources"][0]["result"], "ok", "{v}");
    assert_eq!(v["sources"][0]["tables_checked"], 2, "{v}");
}

#[test]
fn a_custom_format_dump_restores_with_parallel_jobs_and_drills() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    env.create(&args(
        &[
            "--postgres",
            "shop",
            "--pg-format",
            "custom",
            "--count-rows",
        ],
        &c,
    ));
    let shown = env.show("latest");
    assert_eq!(shown["sources"][0]["name"], "postgres/local/shop.dump");
    assert_eq!(
        shown["sources"][0]["options"],
        serde_json::json!(["--format=custom", "--compress=0"])
    );
    let stored = env.restore_stdout("latest", Some("postgres/local/shop.dump"));
    assert!(stored.starts_with(b"PGDMP"), "a pg_dump archive");
    for (into, jobs) in [("one", "1"), ("two", "2")] {
        env.run(&args(
            &[
                "db", "restore", "latest", "shop", "--into", into, "--create", "--jobs", jobs,
            ],
            &c,
        ))
        .ok("db restore of a custom dump");
        assert_eq!(
            fingerprint(&pg, "shop"),
            fingerprint(&pg, into),
            "--jobs {jobs}"
        );
    }
    let v = env.run(&args(&["drill", "--json"], &c)).ok("drill").json();
    assert_eq!(v["sources"][0]["result"], "ok", "{v}");
    assert_eq!(scratch_databases(&pg), "");
}

/// A MariaDB shop: InnoDB tables with a foreign key, a trigger and a procedure.
const MY_SHOP: &str = "
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, note TEXT) ENGINE=InnoDB;
INSERT INTO customers (name, note) SELECT CONCAT('c', seq), MD5(seq) FROM seq_1_to_2000;
CREATE TABLE orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL,
    amount DECIMAL(10,2), FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB;
INSERT INTO orders (customer_id, amount) SELECT 1 + seq % 2000, seq / 7 FROM seq_1_to_5000;
CREATE TABLE audit (id BIGINT) ENGINE=InnoDB;
INSERT INTO audit SELECT seq FROM seq_1_to_100;
CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit VALUES (NEW.id);
CREATE PROCEDURE big_orders() SELECT * FROM orders WHERE amount > 100;
";

fn my_conn(m: &harness::mariadb::Maria) -> Vec<String> {
    vec![
        "--my-socket".into(),
        m.sock.display().to_string(),
        "--my-user".into(),
        "root".into(),
    ]
}

/// `CHECKSUM TABLE` of the shop's tables in `db`: the checksums, without the database name.
fn my_checksums(m: &harness::mariadb::Maria, db: &str) -> Vec<String> {
    m.sql(db, "CHECKSUM TABLE audit, customers, orders")
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap_or("").to_string())
        .collect()
}

fn my_scratch(m: &harness::mariadb::Maria) -> String {
    m.sql("mysql", "SHOW DATABASES LIKE 'tresor\\_drill\\_%'")
}

#[test]
fn a_mariadb_source_round_trips_with_routines_and_triggers_and_drills() {
    let m = harness::mariadb::Maria::start();
    m.createdb("shop");
    m.sql("shop", MY_SHOP);
    let env = Env::new();
    env.init();
    let c = my_conn(&m);
    env.create(&args(&["--mariadb", "shop", "--count-rows"], &c));
    let shown = env.show("latest");
    let src = &shown["sources"][0];
    assert_eq!(src["engine"], "mariadb", "{shown}");
    assert_eq!(src["name"], "mariadb/local/shop.sql");
    assert_eq!(
        src["options"],
        serde_json::json!([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events"
        ])
    );
    assert_eq!(
        src["tables"],
        serde_json::json!({"audit": 100, "customers": 2000, "orders": 5000})
    );
    assert!(
        src["server_version"].as_str().unwrap().contains("MariaDB"),
        "{src}"
    );

    env.run(&args(
        &[
            "db", "restore", "latest", "shop", "--into", "copy", "--create",
        ],
        &c,
    ))
    .ok("db restore into MariaDB");
    assert_eq!(my_checksums(&m, "shop"), my_checksums(&m, "copy"));
    assert_eq!(
        m.sql(
            "copy",
            "SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'copy'"
        ),
        "1"
    );
    assert_eq!(
        m.sql(
            "copy",
            "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'copy'"
        ),
        "1"
    );
    env.run(&args(
        &[
            "db", "restore", "latest", "shop", "--into", "copy", "--create",
        ],
        &c,
    ))
    .expect_code(exit::FATAL, "restore into a non-empty MariaDB database")
    .stderr_has("is not empty");

    let v = env.run(&args(&["drill", "--json"], &c)).ok("drill").json();
    assert_eq!(v["sources"][0]["result"], "ok", "{v}");
    assert_eq!(v["sources"][0]["tables_checked"], 3, "{v}");
    assert_eq!(my_scratch(&m), "", "the scratch database must be gone");
}

#[test]
fn a_mariadb_dump_that_fails_or_lacks_a_table_is_caught() {
    let m = harness::mariadb::Maria::start();
    m.createdb("shop");
    m.sql("shop", MY_SHOP);
    let env = Env::new();
    env.init();
    let c = my_conn(&m);
    env.run(&args(&["snapshot", "create", "--mariadb", "nosuchdb"], &c))
        .expect_code(exit::FATAL, "a missing MariaDB database")
        .stderr_has("mariadb/local/nosuchdb.sql")
        .stderr_has("nosuchdb")
        .stderr_has("no snapshot was written");
    assert_eq!(env.snapshot_count(), 0);

    env.create(&args(
        &[
            "--mariadb",
            "shop",
            "--count-rows",
            "--mariadb-dump-option=--ignore-table=shop.audit",
        ],
        &c,
    ));
    let out = env.run(&args(&["drill", "--json"], &c));
    out.expect_code(exit::DRILL_FAILED, "drill of a dump without audit");
    let v = out.json();
    assert_eq!(
        v["sources"][0]["mismatches"],
        serde_json::json!([{"table": "audit", "recorded": 100, "restored": null}]),
        "{v}"
    );
    assert_eq!(my_scratch(&m), "", "the scratch database must be gone");
}

#[test]
fn a_job_of_the_configuration_file_dumps_its_databases() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    let env = Env::with_password_file();
    env.init();
    let app = env.path("app.db");
    rusqlite::Connection::open(&app)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    let config = env.path("tresor.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nrepository = {:?}\npassword-file = {:?}\ncache-dir = {:?}\nstate-dir = {:?}\n\n\
             [jobs.db]\npostgres = [\"shop\"]\nsqlite = [{:?}]\ncount-rows = true\n\
             pg-host = {:?}\npg-user = \"postgres\"\ndrill = \"weekly\"\n",
            env.repo.display().to_string(),
            env.path("password.txt").display().to_string(),
            env.cache.display().to_string(),
            env.path("state").display().to_string(),
            app.display().to_string(),
            pg.sock.display().to_string(),
        ),
    )
    .unwrap();
    // The connection comes from the file, the tools from PATH, as in cron.
    let run = |what: &str| {
        let mut cmd = env.command(&["--config", config.to_str().unwrap(), "run", "db", "--json"]);
        cmd.env_remove("PGHOST").env_remove("PGUSER").env(
            "PATH",
            format!(
                "{}:{}",
                pg.bindir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        harness::run_command(cmd, what)
    };
    let step = |v: &serde_json::Value, name: &str| {
        v["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["step"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} step in {v}"))
    };
    let first = run("tresor run db (first)");
    first.expect_code(exit::OK, "the first run");
    let v = first.json();
    let drill = step(&v, "drill");
    assert_eq!(drill["result"], "ok", "{v}");
    assert!(
        drill["message"]
            .as_str()
            .unwrap()
            .starts_with("drilled 2 sources"),
        "{drill}"
    );
    assert_eq!(
        scratch_databases(&pg),
        "",
        "the job's drill left a scratch database"
    );
    // Weekly: the next run the same day does not drill again.
    let v = run("tresor run db (second)").json();
    assert_eq!(step(&v, "drill")["result"], "not-due", "{v}");
    let shown = env.show("latest");
    let names: Vec<&str> = shown["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "postgres/local/shop.sql".to_string(),
            format!("sqlite/{}", env.stored(&app))
        ],
        "{shown}"
    );
    assert_eq!(shown["sources"][1]["tables"], serde_json::json!({"t": 2}));
    let v = env
        .run(&args(&["drill", "--json"], &conn(&pg)))
        .ok("drill of the job's snapshot")
        .json();
    assert_eq!(v["passed"], true, "{v}");
}

#[test]
fn a_postgres_dump_during_writes_counts_the_rows_of_its_own_snapshot() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql(
        "shop",
        "CREATE TABLE filler (id int, v text);
         INSERT INTO filler SELECT i, md5(i::text) FROM generate_series(1, 200000) i;
         CREATE TABLE a (id bigserial PRIMARY KEY, t timestamptz DEFAULT now());
         CREATE TABLE b (id bigserial PRIMARY KEY, t timestamptz DEFAULT now());
         CREATE PROCEDURE writer() LANGUAGE plpgsql AS $$
         BEGIN
           LOOP
             INSERT INTO a DEFAULT VALUES; INSERT INTO b DEFAULT VALUES; COMMIT;
             PERFORM pg_sleep(0.001);
           END LOOP;
         END $$;",
    );
    // Every transaction of the writer adds one row to `a` and one to `b`.
    let mut writer = pg.psql_cmd("shop");
    writer
        .arg("-c")
        .arg("CALL writer()")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut writer = writer.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg
        .sql("shop", "SELECT count(*) FROM a")
        .parse::<u64>()
        .unwrap()
        < 20
    {
        assert!(Instant::now() < deadline, "the writer does not write");
        std::thread::sleep(Duration::from_millis(10));
    }
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    env.create(&args(&["--postgres", "shop", "--count-rows"], &c));
    std::thread::sleep(Duration::from_millis(100));
    let after: u64 = pg.sql("shop", "SELECT count(*) FROM a").parse().unwrap();
    let _ = writer.kill();
    let _ = writer.wait();
    let tables = env.show("latest")["sources"][0]["tables"].clone();
    let (na, nb) = (
        tables["public.a"].as_u64().unwrap(),
        tables["public.b"].as_u64().unwrap(),
    );
    assert_eq!(na, nb, "counts from half a transaction: {tables}");
    assert!(
        na < after,
        "the writer went on after the dump ({na} vs {after})"
    );
    // The dump holds exactly the rows counted: a drill finds no difference.
    let v = env.run(&args(&["drill", "--json"], &c)).ok("drill").json();
    assert_eq!(v["sources"][0]["result"], "ok", "{v}");
    assert_eq!(v["sources"][0]["tables_checked"], 3, "{v}");
}

#[test]
fn with_container_the_tools_run_through_the_container_cli() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    let env = Env::new();
    env.init();
    // A stand-in container CLI: `docker exec -i NAME TOOL ARGS…` logs NAME and runs TOOL here,
    // the real one (PATH has the server's client tools).
    let bin = env.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = env.path("container.log");
    let stub = bin.join("docker");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\n[ \"$1\" = exec ] || exit 99\nshift\n[ \"$1\" = -i ] || exit 98\nshift\necho \"$1 $2\" >> {:?}\nshift\nexec \"$@\"\n",
            log.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        pg.bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |a: &[&str]| {
        let mut cmd = env.command(a);
        cmd.env("PATH", &path);
        harness::run_command(cmd, "tresor with --container")
    };
    let sock = pg.sock.display().to_string();
    let common = [
        "--container",
        "pgbox",
        "--pg-host",
        &sock,
        "--pg-user",
        "postgres",
    ];
    let mut create = vec!["snapshot", "create", "--postgres", "shop", "--count-rows"];
    create.extend(common);
    run(&create).ok("snapshot create --container");
    let mut restore = vec![
        "db", "restore", "latest", "shop", "--into", "copy", "--create",
    ];
    restore.extend(common);
    run(&restore).ok("db restore --container");
    assert_eq!(fingerprint(&pg, "shop"), fingerprint(&pg, "copy"));
    let logged = std::fs::read_to_string(&log).unwrap();
    for tool in ["pgbox psql", "pgbox pg_dump"] {
        assert!(
            logged.contains(tool),
            "{tool} not run in the container:\n{logged}"
        );
    }
    // Without the container CLI, the error names it.
    let mut cmd = env.command(&create);
    cmd.env("PATH", pg.bindir.display().to_string());
    harness::run_command(cmd, "no container CLI")
        .expect_code(exit::FATAL, "no container CLI")
        .stderr_has("docker could not be started");
}

#[test]
fn a_dumper_killed_by_a_signal_fails_the_snapshot() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SMALL_SHOP);
    let env = Env::new();
    env.init();
    // The real psql (which holds the snapshot), and a pg_dump that writes a little and dies.
    let bin = env.path("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(pg.bin("psql"), bin.join("psql")).unwrap();
    let dump = bin.join("pg_dump");
    std::fs::write(
        &dump,
        "#!/bin/sh\necho 'CREATE TABLE half (x int);'\nkill -9 $$\n",
    )
    .unwrap();
    std::fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = pg.sock.display().to_string();
    env.run(&[
        "snapshot",
        "create",
        "--postgres",
        "shop",
        "--count-rows",
        "--pg-host",
        &sock,
        "--pg-user",
        "postgres",
        "--pg-bindir",
        bin.to_str().unwrap(),
    ])
    .expect_code(exit::FATAL, "a killed pg_dump")
    .stderr_has("pg_dump was killed by signal 9")
    .stderr_has("no snapshot was written");
    assert_eq!(env.snapshot_count(), 0);
    // The session that held the snapshot is gone too (its backend notices within moments).
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop'",
    ) != "0"
    {
        assert!(
            Instant::now() < deadline,
            "the snapshot's session is still open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_during_a_dump_writes_no_snapshot_and_ends_the_dumper() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SHOP_SQL);
    let env = Env::new();
    env.init();
    let c = conn(&pg);
    let mut cmd = env.command(&args(
        &["snapshot", "create", "--postgres", "shop", "--count-rows"],
        &c,
    ));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let sessions = || {
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND application_name = 'pg_dump'",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while sessions() == "0" {
        assert!(Instant::now() < deadline, "pg_dump never connected");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = wait_with_timeout(
        child,
        harness::DEFAULT_TIMEOUT,
        "snapshot create after SIGINT",
    );
    out.expect_code(130, "an interrupted dump");
    assert_eq!(env.snapshot_count(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop'",
    ) != "0"
    {
        assert!(
            Instant::now() < deadline,
            "pg_dump or the session holding its snapshot is still connected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
