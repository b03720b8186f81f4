//! Requests and connections: the `"requests"` counts of `--json`, coalesced reads (a restore
//! over S3 makes fewer ranged reads than it reads blobs), and parallel uploads
//! (`--connections`) that leave a repository `check --read-data` passes.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::harness::{self, Env, Out, Rng, s3};

/// `repo init` with 64 KiB average chunks and 1 MiB packs: many blobs per pack, many packs.
fn init_small(env: &Env, repo: &str, vars: &[(&str, &str)]) {
    let mut args = harness::init_args();
    args.extend([
        "--chunk-min",
        "16384",
        "--chunk-avg",
        "65536",
        "--chunk-max",
        "262144",
        "--pack-size-mib",
        "1",
    ]);
    run(env, repo, vars, &args, b"").ok("repo init with small chunks and packs");
}

/// Runs `tresor ARGS` against `repo` with `vars`, fed `stdin`.
fn run(env: &Env, repo: &str, vars: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Out {
    let mut cmd = env.command(args);
    cmd.env("TRESOR_REPO", repo);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    harness::run_command_input(
        cmd,
        harness::Input::Bytes(stdin.to_vec()),
        std::time::Duration::from_secs(180),
        &format!("tresor {}", args.join(" ")),
    )
}

fn count(v: &Value, kind: &str) -> u64 {
    v["requests"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("no requests.{kind} in {v}"))
}

/// A tree of one 6 MiB file and 40 small ones.
fn make_tree(src: &Path) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(15);
    let mut files = vec![("big.bin".to_string(), rng.bytes(6 << 20))];
    for i in 0..40 {
        files.push((format!("small/{i}.txt"), rng.text(2000 + i * 500)));
    }
    for (rel, data) in &files {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    files
}

fn assert_restored(target: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let found = harness::all_files(target)
            .into_iter()
            .find(|p| p.ends_with(Path::new("src").join(rel)))
            .unwrap_or_else(|| panic!("{rel} not restored"));
        assert!(
            fs::read(found).unwrap() == *data,
            "{rel} restored byte-exact"
        );
    }
}

#[test]
fn restore_over_s3_coalesces_reads_and_counts_requests() {
    let Some(server) = s3::server() else { return };
    let env = Env::new();
    let repo = format!("s3:{}", server.location("requests"));
    let vars = server.vars();
    init_small(&env, &repo, &vars);
    let src = env.path("src");
    let files = make_tree(&src);
    let created = run(
        &env,
        &repo,
        &vars,
        &["snapshot", "create", "--json", src.to_str().unwrap()],
        b"",
    );
    created.ok("snapshot create");
    let c = created.json();
    let blobs = c["blobs_added"].as_u64().unwrap();
    assert!(blobs > 60, "{blobs} blobs: the test needs many");
    // Every pack (1 MiB target, ~6.5 MiB stored) is one put, plus index and snapshot objects.
    assert!(count(&c, "put") >= 7, "{c}");
    assert!(count(&c, "total") >= count(&c, "put") + count(&c, "list"));

    let target = env.path("target");
    let restored = run(
        &env,
        &repo,
        &vars,
        &[
            "snapshot",
            "restore",
            "latest",
            "--json",
            "--target",
            target.to_str().unwrap(),
        ],
        b"",
    );
    restored.ok("snapshot restore");
    let r = restored.json();
    let ranged = count(&r, "get_range");
    assert!(
        ranged * 4 < blobs,
        "{ranged} ranged reads for {blobs} blobs: reads are not coalesced ({r})"
    );
    assert_restored(&target, &files);
    let checked = run(&env, &repo, &vars, &["check", "--json"], b"");
    checked.ok("check");
    let k = checked.json();
    assert!(count(&k, "get_range") >= 7, "one header read per pack: {k}");
    assert_eq!(count(&k, "put"), 1, "check writes only its lock: {k}");
}

#[test]
fn parallel_uploads_make_a_repository_that_checks_clean() {
    let env = Env::new();
    let repo = env.path("repo");
    let repo = repo.to_str().unwrap();
    init_small(&env, repo, &[]);
    let src = env.path("src");
    let files = make_tree(&src);
    let created = run(
        &env,
        repo,
        &[],
        &[
            "--connections",
            "6",
            "snapshot",
            "create",
            "--json",
            src.to_str().unwrap(),
        ],
        b"",
    );
    created.ok("snapshot create with 6 upload threads");
    let c = created.json();
    let packs = fs::read_dir(env.path("repo/data"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .count() as u64;
    assert!(packs >= 5, "{packs} packs: the test needs several");
    assert!(count(&c, "put") >= packs, "every pack is a put: {c}");
    let checked = run(
        &env,
        repo,
        &[],
        &["--connections", "3", "check", "--read-data", "--json"],
        b"",
    );
    checked.ok("check --read-data");
    let k = checked.json();
    assert_eq!(k["packs_read"].as_u64(), Some(packs), "{k}");
    assert!(count(&k, "get") >= packs, "each pack read whole: {k}");
    let target = env.path("target");
    run(
        &env,
        repo,
        &[],
        &[
            "snapshot",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
        b"",
    )
    .ok("restore");
    assert_restored(&target, &files);
    let bad = run(&env, repo, &[], &["--connections", "0", "check"], b"");
    assert_ne!(bad.code, 0, "--connections 0 is refused");
}
