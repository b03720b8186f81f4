//! The S3 backend against a real S3 server (SeaweedFS, tests/harness/s3.rs): the conformance
//! suite through the library, and a repository's life through the CLI (init, backups of a
//! tree and of stdin, restores to a directory and to stdout, `check --read-data`,
//! `forget --prune`), and a wrong secret key refused with a clear message.

use std::fs;

use crate::conformance;
use crate::harness::{self, Env, Input, Out, Rng, s3};

#[test]
fn s3_conforms() {
    let Some(server) = s3::server() else { return };
    conformance::run(&server.backend("conformance"));
}

/// `tresor ARGS` against `repo` with the server's credentials.
pub(crate) fn command(env: &Env, repo: &str, args: &[&str]) -> std::process::Command {
    let server = s3::server().unwrap();
    let mut cmd = env.command(args);
    cmd.env("TRESOR_REPO", repo).env_remove("AWS_SESSION_TOKEN");
    for (k, v) in server.vars() {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `tresor ARGS` against `repo` with the server's credentials (or `secret`), fed `stdin`.
pub(crate) fn run(env: &Env, repo: &str, secret: Option<&str>, args: &[&str], stdin: &[u8]) -> Out {
    let mut cmd = command(env, repo, args);
    if let Some(s) = secret {
        cmd.env("AWS_SECRET_ACCESS_KEY", s);
    }
    harness::run_command_input(
        cmd,
        Input::Bytes(stdin.to_vec()),
        std::time::Duration::from_secs(180),
        &format!("tresor {}", args.join(" ")),
    )
}

#[test]
fn cli_repository_life_on_s3() {
    let Some(server) = s3::server() else { return };
    let env = Env::new();
    let repo = format!("s3:{}", server.location("cli"));
    run(&env, &repo, None, &harness::init_args(), b"").ok("repo init on s3");
    let again = run(&env, &repo, None, &harness::init_args(), b"");
    assert_ne!(again.code, 0, "a second repo init must fail");
    again.stderr_has("exists");

    let src = env.path("src");
    let mut rng = Rng::new(7);
    let files = [
        ("a.txt", rng.text(3000)),
        ("sub/b.bin", rng.bytes(300_000)),
        ("sub/deeper/c.bin", rng.bytes(2 << 20)),
        ("empty", Vec::new()),
    ];
    for (rel, data) in &files {
        let p = src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    let src_s = src.to_str().unwrap();
    let first = run(
        &env,
        &repo,
        None,
        &["snapshot", "create", "--json", src_s],
        b"",
    );
    first.ok("snapshot create of a tree");
    let first_id = first.json()["id"].as_str().unwrap().to_string();

    let stream = rng.bytes(1 << 20);
    let second = run(
        &env,
        &repo,
        None,
        &[
            "snapshot",
            "create",
            "--json",
            "--stdin",
            "--stdin-name",
            "dump.sql",
        ],
        &stream,
    );
    second.ok("snapshot create --stdin");
    let second_id = second.json()["id"].as_str().unwrap().to_string();

    let target = env.path("target");
    run(
        &env,
        &repo,
        None,
        &[
            "snapshot",
            "restore",
            &first_id,
            "--target",
            target.to_str().unwrap(),
        ],
        b"",
    )
    .ok("snapshot restore to a directory");
    for (rel, data) in &files {
        assert!(
            fs::read(harness::restored_src_file(&target, rel)).unwrap() == *data,
            "{rel} restored byte-exact"
        );
    }
    let out = run(
        &env,
        &repo,
        None,
        &["snapshot", "restore", &second_id, "--stdout"],
        b"",
    );
    out.ok("snapshot restore --stdout");
    assert!(out.stdout == stream, "the stream restored byte-exact");

    run(&env, &repo, None, &["check", "--read-data"], b"").ok("check --read-data");

    // A second backup of the tree (one file changed): `--keep-last 1` keeps it and the stream
    // (each is the latest of its group) and forgets the first.
    fs::write(src.join("a.txt"), b"changed").unwrap();
    let third = run(
        &env,
        &repo,
        None,
        &["snapshot", "create", "--json", src_s],
        b"",
    );
    third.ok("second snapshot create of the tree");
    let third_id = third.json()["id"].as_str().unwrap().to_string();
    run(
        &env,
        &repo,
        None,
        &["snapshot", "forget", "--keep-last", "1", "--prune"],
        b"",
    )
    .ok("forget --keep-last 1 --prune");
    let listed = run(&env, &repo, None, &["snapshot", "list", "--json"], b"");
    listed.ok("snapshot list");
    let mut ids: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![second_id.clone(), third_id.clone()];
    want.sort();
    assert_eq!(
        ids, want,
        "the latest of each group is kept, the first tree is forgotten"
    );
    run(&env, &repo, None, &["check", "--read-data"], b"").ok("check after prune");
    let again = run(
        &env,
        &repo,
        None,
        &["snapshot", "restore", &second_id, "--stdout"],
        b"",
    );
    again.ok("restore after prune");
    assert!(again.stdout == stream, "the kept stream survives prune");
    let target = env.path("target2");
    run(
        &env,
        &repo,
        None,
        &[
            "snapshot",
            "restore",
            &third_id,
            "--target",
            target.to_str().unwrap(),
        ],
        b"",
    )
    .ok("restore of the kept tree after prune");
    assert_eq!(
        fs::read(harness::restored_src_file(&target, "a.txt")).unwrap(),
        b"changed"
    );
    for (rel, data) in &files[1..] {
        assert!(
            fs::read(harness::restored_src_file(&target, rel)).unwrap() == *data,
            "{rel} restored byte-exact after prune"
        );
    }
}

#[test]
fn wrong_secret_key_is_a_clear_error() {
    let Some(server) = s3::server() else { return };
    let env = Env::new();
    let repo = format!("s3:{}", server.location("badkey"));
    let out = run(
        &env,
        &repo,
        Some("not-the-secret"),
        &harness::init_args(),
        b"",
    );
    assert_ne!(out.code, 0, "a wrong secret key must fail");
    assert!(
        out.stderr.contains("access denied") && out.stderr.contains("AWS_SECRET_ACCESS_KEY"),
        "the error says the credentials were refused: {}",
        out.stderr
    );
    let out = run(
        &env,
        &repo,
        Some("not-the-secret"),
        &["snapshot", "list"],
        b"",
    );
    assert_ne!(out.code, 0, "a wrong secret key must fail");
    assert!(
        out.stderr.contains("access denied"),
        "the error says the credentials were refused: {}",
        out.stderr
    );
}
