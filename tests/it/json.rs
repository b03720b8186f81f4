//! The JSON interface and snapshot references.

use std::fs;

use serde_json::Value;

use crate::harness::Env;

fn is_hex_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn json_output_and_snapshot_references() {
    let env = Env::new();
    env.init();
    assert_eq!(
        env.list(),
        Vec::<Value>::new(),
        "a new repository lists no snapshots"
    );

    let c1 = env.create_stdin("one.txt", b"hello world\n");
    assert!(is_hex_id(&c1["id"]), "{c1}");
    assert_eq!(c1["files"], 1, "{c1}");
    assert_eq!(c1["bytes_read"], 12, "{c1}");
    assert!(c1["bytes_added"].as_u64().unwrap() > 12, "{c1}");
    assert!(c1["duration_seconds"].as_f64().unwrap() >= 0.0, "{c1}");

    let dir = env.path("tree");
    fs::create_dir_all(dir.join("d")).unwrap();
    fs::write(dir.join("a.txt"), b"aaaa").unwrap();
    fs::write(dir.join("d/b.txt"), b"bbbbbbbb").unwrap();
    let c2 = env.create(&[&dir]);
    assert!(is_hex_id(&c2["id"]), "{c2}");
    assert_eq!(c2["files"], 2, "{c2}");
    assert_eq!(c2["bytes_read"], 12, "{c2}");
    assert!(c2["duration_seconds"].is_f64(), "{c2}");
    assert_ne!(c1["id"], c2["id"]);

    // list: an array, oldest first.
    let list = env.list();
    let ids: Vec<&Value> = list.iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, vec![&c1["id"], &c2["id"]]);

    // show latest: an object with id, sources and paths.
    let latest = env.show("latest");
    assert!(latest.is_object(), "{latest}");
    assert_eq!(latest["id"], c2["id"]);
    let stored = env.stored(&dir);
    assert_eq!(latest["paths"], serde_json::json!([stored]), "{latest}");
    assert_eq!(latest["sources"][0]["kind"], "path", "{latest}");
    assert_eq!(
        latest["sources"][0]["path"],
        dir.to_str().unwrap(),
        "{latest}"
    );
    assert_eq!(latest["summary"]["files"], 2, "{latest}");

    // The short id (and the full id, in upper case) find the snapshot.
    let short = c1["short_id"].as_str().unwrap();
    assert!(
        short.len() >= 8 && c1["id"].as_str().unwrap().starts_with(short),
        "{c1}"
    );
    let by_short = env.show(short);
    assert_eq!(by_short["id"], c1["id"]);
    assert_eq!(
        by_short["paths"],
        serde_json::json!(["one.txt"]),
        "{by_short}"
    );
    assert_eq!(by_short["sources"][0]["kind"], "stdin", "{by_short}");
    assert_eq!(
        env.show(&c2["id"].as_str().unwrap().to_uppercase())["id"],
        c2["id"]
    );

    // --stdout without --path: fine for a one-file snapshot, refused for a tree.
    assert_eq!(env.restore_stdout(short, None), b"hello world\n");
    let out = env.run(&["snapshot", "restore", "latest", "--stdout"]);
    assert_ne!(out.code, 0, "--stdout of a multi-file snapshot must fail");
    out.stderr_has("--path").stderr_has("exactly one file");
    assert!(out.stdout.is_empty(), "nothing may be written to stdout");
    // With --path it works for the same snapshot.
    assert_eq!(
        env.restore_stdout("latest", Some(&format!("{stored}/d/b.txt"))),
        b"bbbbbbbb"
    );
    // --stdout of a directory is refused.
    let out = env.try_restore_stdout("latest", Some(&format!("{stored}/d")));
    assert_ne!(out.code, 0);
    out.stderr_has("not a regular file");
    // A path that is not in the snapshot.
    let out = env.try_restore_stdout("latest", Some("no/such/file"));
    assert_ne!(out.code, 0);
    out.stderr_has("not in the snapshot");
}
