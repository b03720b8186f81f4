//! `tresor mount`: real FUSE. Every file of a snapshot compared through the mount, random
//! offsets of a large file, `psql -f` on a dump inside the mount, damage gives EIO without
//! killing the mount, and unmounting leaves no process behind.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, Env, Pg, Rng, exit};
use crate::postgres::{SHOP_SQL, fingerprint};

pub(crate) struct Mounted {
    child: Option<Child>,
    point: PathBuf,
}

impl Mounted {
    pub(crate) fn start(env: &Env, point: &Path) -> Mounted {
        Mounted::start_with(env.command(&["mount", point.to_str().unwrap()]), point)
    }

    /// Runs `cmd` (a `tresor mount POINT` with its environment) and waits for the mount.
    pub(crate) fn start_with(mut cmd: Command, point: &Path) -> Mounted {
        fs::create_dir_all(point).unwrap();
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let mut m = Mounted {
            child: Some(child),
            point: point.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !point.join("snapshots").is_dir() {
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("tresor mount ended ({status}) before the mount appeared: {err}");
            }
            assert!(Instant::now() < deadline, "the mount never appeared");
            thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// `fusermount3 -u`, then the process must end by itself with exit 0.
    pub(crate) fn unmount(mut self) -> String {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.point)
            .status()
            .unwrap();
        assert!(st.success(), "fusermount3 -u failed");
        let child = self.child.take().unwrap();
        let out = harness::wait_with_timeout(child, Duration::from_secs(30), "tresor mount");
        out.ok("tresor mount after fusermount3 -u");
        out.stderr
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.point)
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn compare_trees(orig: &Path, mounted: &Path) {
    for f in harness::all_files(orig) {
        let rel = f.strip_prefix(orig).unwrap();
        let m = mounted.join(rel);
        let (a, b) = (
            fs::symlink_metadata(&f).unwrap(),
            fs::symlink_metadata(&m).unwrap(),
        );
        assert_eq!(
            a.permissions().mode() & 0o7777,
            b.permissions().mode() & 0o7777,
            "{rel:?}"
        );
        assert_eq!(
            (a.uid(), a.gid(), a.mtime()),
            (b.uid(), b.gid(), b.mtime()),
            "{rel:?}"
        );
        assert_eq!(a.len(), b.len(), "{rel:?}");
        assert!(
            fs::read(&f).unwrap() == fs::read(&m).unwrap(),
            "{rel:?} differs"
        );
    }
    let link = mounted.join("link");
    assert_eq!(
        fs::read_link(link).unwrap(),
        fs::read_link(orig.join("link")).unwrap()
    );
}

#[test]
fn mount_browse_read_psql_damage_and_unmount() {
    harness::require_root("mounting with FUSE");
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("etc/nginx")).unwrap();
    fs::write(src.join("etc/nginx/nginx.conf"), b"worker_processes 2;\n").unwrap();
    fs::set_permissions(
        src.join("etc/nginx/nginx.conf"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let big = Rng::new(3).bytes(48 << 20);
    fs::write(src.join("big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("link")).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("etc/f{i:03}")), format!("file {i}\n")).unwrap();
    }
    env.create(&[src.to_str().unwrap(), "--tag", "files"]);

    let pg = Pg::start();
    pg.createdb("shop");
    pg.sql("shop", SHOP_SQL);
    let before: Vec<PathBuf> = env.packs();
    env.create(&[
        "--command",
        &pg.dump_command("shop"),
        "--stdin-name",
        "shop.sql",
        "--tag",
        "db",
    ]);

    let point = env.path("mnt");
    let m = Mounted::start(&env, &point);
    let snaps: Vec<String> = fs::read_dir(point.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(snaps.len(), 3, "{snaps:?}"); // two snapshots and latest
    let files_dir = fs::read_dir(point.join("tags/files"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let root = files_dir.join(env.stored(&src));
    compare_trees(&src, &root);
    assert!(point.join("hosts").read_dir().unwrap().next().is_some());

    // Random access into the large file.
    let mut f = fs::File::open(root.join("big.bin")).unwrap();
    let mut rng = Rng::new(9);
    for _ in 0..50 {
        let off = rng.next_u64() % (big.len() as u64 - 4096);
        let mut buf = vec![0u8; 4096];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(
            buf == big[off as usize..off as usize + 4096],
            "read at {off}"
        );
    }

    drop(f);

    // psql -f straight from the mount.
    pg.createdb("shop_from_mount");
    let dump = point.join("snapshots/latest/shop.sql");
    let out = pg
        .psql_cmd("shop_from_mount")
        .arg("-f")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fingerprint(&pg, "shop"),
        fingerprint(&pg, "shop_from_mount")
    );

    // A second mount on the same point is refused clearly.
    env.run(&["mount", point.to_str().unwrap()])
        .expect_code(exit::FATAL, "second mount")
        .stderr_has("already a mount point");

    // Damage under the mounted snapshot: EIO for that read, the mount keeps serving.
    // Every pack the dump's backup wrote.
    for pack in env.packs().into_iter().filter(|p| !before.contains(p)) {
        let mut bytes = fs::read(&pack).unwrap();
        for i in (0..bytes.len()).step_by(4096) {
            bytes[i] ^= 0x55;
        }
        fs::write(&pack, &bytes).unwrap();
    }
    // A fresh mount of the damaged repository (no cached chunks).
    let stderr = m.unmount();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let m = Mounted::start(&env, &point);
    let err = match fs::read(point.join("snapshots/latest/shop.sql")) {
        Ok(b) => panic!("read {} bytes of damaged data", b.len()),
        Err(e) => e,
    };
    assert_eq!(err.raw_os_error(), Some(5), "EIO expected, got {err}");
    assert!(
        point.join("snapshots/latest").read_link().is_ok(),
        "the mount must keep serving"
    );
    let stderr = m.unmount();
    assert!(
        stderr.contains("tresor mount: ") && stderr.contains("authentication failed"),
        "a log line names the failure: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // No process is left behind, the mount point is empty again.
    let ps = Command::new("pgrep")
        .args(["-f", &format!("mount {}", point.display())])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    assert!(fs::read_dir(&point).unwrap().next().is_none());
}

#[test]
fn mount_shows_new_snapshots_and_ctrl_c_unmounts() {
    harness::require_root("mounting with FUSE");
    let env = Env::new();
    env.init();
    env.create_stdin("one.txt", b"one");
    let point = env.path("mnt");
    let mut m = Mounted::start(&env, &point);
    let count = || fs::read_dir(point.join("snapshots")).unwrap().count();
    assert_eq!(count(), 2); // one snapshot and latest
    env.create_stdin("two.txt", b"two");
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() < 3 {
        assert!(Instant::now() < deadline, "the new snapshot never appeared");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        fs::read(point.join("snapshots/latest/two.txt")).unwrap(),
        b"two"
    );

    // Ctrl-C (SIGINT): the mount goes away and the process exits 0.
    let child = m.child.take().unwrap();
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = harness::wait_with_timeout(child, Duration::from_secs(30), "tresor mount");
    out.ok("tresor mount after Ctrl-C");
    assert!(
        !point.join("snapshots").exists(),
        "still mounted after Ctrl-C"
    );

    // Without fusermount3 the error says what to install.
    let empty = env.path("empty-path");
    fs::create_dir(&empty).unwrap();
    let mut cmd = env.command(&["mount", point.to_str().unwrap()]);
    cmd.env("PATH", &empty);
    let out = harness::wait_with_timeout(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
        "mount without fusermount3",
    );
    out.expect_code(exit::FATAL, "mount without fusermount3")
        .stderr_has("install the fuse3 package");
}
