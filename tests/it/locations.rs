//! Repository locations on the command line: a path, `local:PATH`, a path with a colon, an
//! unknown scheme and a malformed `s3:`.
//!
//! What it proves: `local:PATH` and `./a:b` open the same local repository as the plain path
//! (same messages); an unknown scheme or an `s3:` without an endpoint fails with exit 1, says why and how to write a
//! path with a colon, and creates nothing — above all no directory named after the typo.

use std::ffi::OsStr;
use std::fs;

use crate::harness::{Env, exit, init_args};

#[test]
fn local_scheme_and_paths_with_colons_open_the_local_repository() {
    let env = Env::new();
    // `repo init` through `local:` with a relative path that contains a colon (run in the
    // test directory).
    let out = env.run_with(&init_args(), &[("TRESOR_REPO", OsStr::new("local:day:1"))]);
    out.ok("repo init at local:day:1");
    assert!(
        out.stdout_str().contains(" at day:1\n"),
        "the message names the path: {}",
        out.stdout_str()
    );
    assert!(env.path("day:1/config").is_file());
    env.run_with(
        &["snapshot", "create", "--stdin", "--stdin-name", "x"],
        &[("TRESOR_REPO", OsStr::new("./day:1"))],
    )
    .ok("snapshot create at ./day:1");
    let list = |location: &OsStr| {
        let out = env.run_with(
            &["snapshot", "list", "--json"],
            &[("TRESOR_REPO", location)],
        );
        out.ok("snapshot list");
        out.json().as_array().unwrap().len()
    };
    let absolute = env.path("day:1");
    let prefixed = format!("local:{}", absolute.display());
    assert_eq!(list(OsStr::new("./day:1")), 1);
    assert_eq!(list(absolute.as_os_str()), 1);
    assert_eq!(list(OsStr::new(&prefixed)), 1);
    // `--repo` takes a location too, and a missing local repository is reported as before.
    env.run(&["--repo", "local:nowhere", "snapshot", "list"])
        .expect_code(exit::NO_REPO, "missing repository via local:")
        .stderr_has("no tresor repository at nowhere");
}

#[test]
fn unknown_schemes_and_malformed_s3_are_refused_and_create_nothing() {
    let env = Env::new();
    let before: Vec<_> = fs::read_dir(env.root()).unwrap().collect();
    let init = |location: &str, extra: &[&str]| {
        let mut args = init_args();
        args.extend_from_slice(extra);
        env.run_with(&args, &[("TRESOR_REPO", OsStr::new(location))])
    };
    init("backup:daily", &[])
        .expect_code(exit::FATAL, "unknown scheme")
        .stderr_has("unknown scheme `backup:`")
        .stderr_has("`local:`")
        .stderr_has("./backup:daily or local:backup:daily");
    init("s3:bucket/prefix", &[])
        .expect_code(exit::FATAL, "s3: without an endpoint")
        .stderr_has("http:// or https://");
    init("s3:http://192.0.2.1:9000/bucket", &[])
        .expect_code(exit::FATAL, "s3: over plain http to another host")
        .stderr_has("TRESOR_S3_ALLOW_HTTP=1");
    init("s3:bucket/prefix", &["--group-readable"])
        .expect_code(exit::FATAL, "--group-readable on s3:")
        .stderr_has("--group-readable")
        .stderr_has("local repository only");
    env.run(&["-r", "sftp:host:/srv/repo", "snapshot", "list"])
        .expect_code(exit::FATAL, "unknown scheme on a reading command")
        .stderr_has("unknown scheme `sftp:`");
    let after: Vec<_> = fs::read_dir(env.root()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "nothing was created");
}
