//! Deduplication of successive database dumps: an append-mostly table where ~1% of rows change,
//! clustered at the tail, must cost a small fraction of the first backup's stored bytes.

use std::io::{Read, Write};
use std::process::Stdio;
use std::thread;

use serde_json::Value;

use crate::harness::{self, Env, Pg};

const ROWS: i64 = 400_000;

/// Inserts orders `from..=to`; rows are ~250 bytes in a dump.
fn insert_orders(from: i64, to: i64) -> String {
    format!(
        r#"INSERT INTO orders
SELECT i,
       1 + (i * 7919) % 50000,
       timestamptz '2022-01-01 00:00:00+00' + i * interval '73 seconds',
       (ARRAY['new','paid','packed','shipped','delivered'])[1 + (i % 5)::int],
       ((i * 7717) % 100000) / 100.0,
       (ARRAY['EUR','USD','CHF'])[1 + (i % 3)::int],
       'Street ' || (i % 997) || ', ' || (10000 + i % 89999) || ' City ' || substr(md5(i::text), 1, 8),
       jsonb_build_array(
           jsonb_build_object('sku', 'SKU-' || (i % 5000), 'qty', 1 + i % 4, 'price', (i % 500) / 10.0),
           jsonb_build_object('sku', 'SKU-' || ((i * 31) % 5000), 'qty', 1)),
       'ref ' || md5((i * 2)::text) || ' ' || md5((i * 3)::text)
FROM generate_series({from}::bigint, {to}::bigint) AS i"#
    )
}

/// pg_dump piped into `tresor snapshot create --stdin --json`, keeping a copy of the dump.
fn dump_into_tresor(env: &Env, pg: &Pg, db: &str) -> (Vec<u8>, Value) {
    let mut dump = pg
        .pg_dump(db, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut tresor = env.command(&[
        "snapshot",
        "create",
        "--stdin",
        "--stdin-name",
        "orders.sql",
        "--json",
    ]);
    tresor
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tresor = tresor.spawn().unwrap();
    let mut to_tresor = tresor.stdin.take().unwrap();
    let mut from_dump = dump.stdout.take().unwrap();
    let tee = thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from_dump.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            to_tresor.write_all(&buf[..n]).unwrap();
        }
        all // dropping to_tresor closes tresor's stdin
    });
    let out =
        harness::wait_with_timeout(tresor, harness::DEFAULT_TIMEOUT, "snapshot create --stdin");
    let all = tee.join().unwrap();
    assert!(dump.wait().unwrap().success(), "pg_dump failed");
    out.ok("snapshot create --stdin (pg_dump)");
    let v = out.json();
    assert_eq!(
        v["bytes_read"].as_u64().unwrap(),
        all.len() as u64,
        "tresor read a different number of bytes than pg_dump wrote"
    );
    (all, v)
}

#[test]
fn postgres_dumps_deduplicate() {
    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql(
        "shop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, created_at timestamptz NOT NULL, \
         status text NOT NULL, amount numeric(12,2) NOT NULL, currency char(3) NOT NULL, \
         shipping_address text NOT NULL, items jsonb NOT NULL, note text)",
    );
    pg.sql("shop", &insert_orders(1, ROWS));
    let env = Env::new();
    env.init();

    let (dump1, s1) = dump_into_tresor(&env, &pg, "shop");
    assert!(
        dump1.len() > 90_000_000,
        "the first dump should be ~100 MB, got {} bytes",
        dump1.len()
    );

    // What an application does in a day: 0.5% new orders, and 0.5% of rows change status,
    // chosen among the most recent 2% of orders (recent orders are the ones
    // that get paid, shipped or cancelled).
    let changed = ROWS / 200;
    pg.sql(
        "shop",
        &format!(
            "UPDATE orders SET status = 'cancelled' WHERE id IN (SELECT id FROM orders WHERE id > {} \
             ORDER BY md5(id::text) LIMIT {changed})",
            ROWS - ROWS / 50
        ),
    );
    pg.sql("shop", &insert_orders(ROWS + 1, ROWS + changed));
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT count(*) FROM orders WHERE status = 'cancelled'"
        ),
        changed.to_string()
    );

    let (dump2, s2) = dump_into_tresor(&env, &pg, "shop");
    assert_ne!(dump1, dump2, "the second dump must differ");

    let added1 = s1["bytes_added"].as_u64().unwrap();
    let added2 = s2["bytes_added"].as_u64().unwrap();
    let ratio = added2 as f64 / added1 as f64;
    eprintln!(
        "dedup: dump1 {} bytes, stored {added1} bytes ({:.1}x smaller); dump2 {} bytes, stored {added2} bytes; \
         ratio {:.4} ({:.2}%); blobs reused {} / added {}",
        dump1.len(),
        dump1.len() as f64 / added1 as f64,
        dump2.len(),
        ratio,
        ratio * 100.0,
        s2["blobs_reused"],
        s2["blobs_added"],
    );
    assert!(added1 > 0);
    assert!(
        ratio < 0.10,
        "snapshot 2 added {added2} bytes, {:.2}% of snapshot 1's {added1}: deduplication is not working",
        ratio * 100.0
    );

    // Snapshot 2, by its id, restores to exactly the second dump.
    let restored = env.restore_stdout(s2["id"].as_str().unwrap(), Some("orders.sql"));
    assert!(
        restored == dump2,
        "restored {} bytes differ from the second dump ({} bytes)",
        restored.len(),
        dump2.len()
    );
}
