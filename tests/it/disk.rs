//! A full disk and the other password sources.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::harness::{self, Env, Password, Rng, exit};

/// A small tmpfs, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: PathBuf, size: &str) -> SmallFs {
        fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the suite runs as root in CI)"
        );
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_a_clear_error_and_loses_nothing() {
    harness::require_root("mounting a small tmpfs");
    let mut env = Env::new();
    let fs_dir = env.path("small");
    let _small = SmallFs::mount(fs_dir.clone(), "24m");
    env.repo = fs_dir.join("repo");
    env.init();
    let mut rng = Rng::new(7);
    let first = rng.bytes(2 << 20);
    let s1 = env.create_stdin("first.bin", &first);

    // 64 MiB of incompressible data cannot fit in what is left of 24 MiB.
    let big = rng.bytes(64 << 20);
    let out = env.run_stdin(
        &["snapshot", "create", "--stdin", "--stdin-name", "big.bin"],
        &big,
    );
    out.expect_code(exit::FATAL, "backup onto a full disk")
        .stderr_has("no space left on device");
    assert_eq!(
        env.snapshot_count(),
        1,
        "a failed backup must not write a snapshot"
    );

    // Everything written before is intact, and check finds no damage.
    assert_eq!(env.restore_stdout(s1["id"].as_str().unwrap(), None), first);
    let report = env.run(&["check", "--read-data", "--json"]);
    report.ok("check after a full disk");
    assert_eq!(
        report.json()["problems"].as_array().unwrap().len(),
        0,
        "{}",
        report.stdout_str()
    );
    // No temporary file is left behind by the failed writes.
    let leftovers: Vec<_> = harness::all_files(&env.repo)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // With space again, the next backup works.
    let small = rng.bytes(1 << 20);
    env.create_stdin("again.bin", &small);
    assert_eq!(env.restore_stdout("latest", None), small);
}

#[test]
fn password_from_a_command_and_a_failing_password_command() {
    let mut env = Env::new();
    env.init();
    env.create_stdin("x.txt", b"hello");
    let good = env.password.clone();
    env.pass = Password::None;
    let cmd = format!("printf '%s\\n' '{good}'");
    let out = env.run(&[
        "--password-command",
        &cmd,
        "snapshot",
        "restore",
        "latest",
        "--stdout",
    ]);
    out.ok("password from a command");
    assert_eq!(out.stdout, b"hello");
    env.run(&["--password-command", "echo wrong", "snapshot", "list"])
        .expect_code(exit::WRONG_PASSWORD, "wrong password from a command");
    env.run(&["--password-command", "exit 5", "snapshot", "list"])
        .expect_code(exit::FATAL, "a failing password command")
        .stderr_has("exited with status 5");
}
