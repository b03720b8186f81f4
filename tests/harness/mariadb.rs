//! A throwaway MariaDB server on a unix socket (no network), for the database-source tests:
//! `mariadb-install-db` into a temporary directory (the system's my.cnf ignored),
//! `mariadbd --skip-networking`, stopped
//! (and its directory removed) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{is_root, shared_tmp};

pub struct Maria {
    pub sock: PathBuf,
    server: Child,
    log: PathBuf,
    dir: TempDir,
}

const HINT: &str = "MariaDB is required for this test (CI installs it: \
                    `apt-get install -y mariadb-server`)";

impl Maria {
    pub fn start() -> Maria {
        let dir = tempfile::Builder::new()
            .prefix("tresor-my-")
            .tempdir_in(shared_tmp())
            .unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        let log = dir.path().join("server.log");
        // Its own temporary directory: temporary tables are named by pid, and a name left in a
        // shared /tmp by another server made a bootstrap fail.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]);
        if is_root() {
            install.arg("--user=root");
        }
        let out = install
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{HINT}: cannot run mariadb-install-db: {e}"));
        assert!(
            out.status.success(),
            "mariadb-install-db failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Command::new("mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--skip-networking", "--innodb-buffer-pool-size=32M"]);
        if is_root() {
            server.arg("--user=root");
        }
        let server = server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{HINT}: cannot run mariadbd: {e}"));
        let m = Maria {
            sock,
            server,
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("mariadb-admin")
                .arg(format!("--socket={}", m.sock.display()))
                .args(["-uroot", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return m;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                panic!("mariadbd did not start within 60 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The client on `db` (or none), as root over the socket.
    pub fn client(&self, db: Option<&str>) -> Command {
        let mut c = Command::new("mariadb");
        c.arg(format!("--socket={}", self.sock.display())).args([
            "-uroot",
            "--batch",
            "--skip-column-names",
        ]);
        if let Some(d) = db {
            c.arg(format!("--database={d}"));
        }
        c
    }

    /// Runs SQL; panics on failure; returns the tab-separated output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client(Some(db))
            .arg("-e")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb failed on {sql}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn createdb(&self, name: &str) {
        self.sql("mysql", &format!("CREATE DATABASE {name}"));
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        let _ = Command::new("mariadb-admin")
            .arg(format!("--socket={}", self.sock.display()))
            .args(["-uroot", "shutdown"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = &self.dir;
    }
}
