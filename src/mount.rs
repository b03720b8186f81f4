//! `tresor mount`: the thin FUSE adapter over [`crate::vfs`]. Every call is translated to a
//! `Vfs` call; an error becomes EIO (or ENOENT/ENOTDIR) plus one log line naming what failed,
//! and the mount keeps serving.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEntry, ReplyOpen, Request,
};

use crate::error::{Error, Result};
use crate::vfs::{Attr, Kind, Vfs};

/// How long the kernel may cache the top-level directories (short, so new snapshots show).
const TTL: Duration = Duration::from_secs(1);
/// How long it may cache entries inside snapshots, which never change.
const TTL_SNAPSHOT: Duration = Duration::from_secs(3600);

fn ttl(a: &Attr) -> &'static Duration {
    if a.immutable { &TTL_SNAPSHOT } else { &TTL }
}

struct Adapter {
    vfs: Vfs,
}

fn file_attr(a: &Attr) -> FileAttr {
    let t = if a.mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(a.mtime_ns as u64)
    } else {
        UNIX_EPOCH
    };
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
            Kind::Symlink => FileType::Symlink,
            Kind::Fifo => FileType::NamedPipe,
            Kind::Chardev => FileType::CharDevice,
            Kind::Blockdev => FileType::BlockDevice,
            Kind::Socket => FileType::Socket,
        },
        perm: (a.mode & 0o7777) as u16,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

fn log(what: &str, e: &Error) -> i32 {
    eprintln!("tresor mount: {what}: {e}");
    match e {
        Error::InvalidArgument(_) => libc::ENOTDIR,
        _ => libc::EIO,
    }
}

impl Adapter {
    /// Feeds `add` the entries of directory `ino` after position `offset`, until it says the
    /// reply is full. Offsets: 1 and 2 are "." and "..", entry i of the directory is i + 3.
    fn entries_from(
        &mut self,
        ino: u64,
        offset: i64,
        mut add: impl FnMut(u64, i64, &OsStr, &Attr) -> bool,
    ) -> Result<()> {
        let mut next = offset.max(0);
        if next < 2 {
            let me = self.vfs.attr(ino)?;
            for (i, name) in [".", ".."].iter().enumerate().skip(next as usize) {
                if add(ino, (i + 1) as i64, OsStr::new(name), &me) {
                    return Ok(());
                }
            }
            next = 2;
        }
        loop {
            let page = self.vfs.readdir_page(ino, (next - 2) as usize, 256)?;
            if page.is_empty() {
                return Ok(());
            }
            for (name, a) in page {
                next += 1;
                if add(a.ino, next, OsStr::from_bytes(&name), &a) {
                    return Ok(());
                }
            }
        }
    }
}

impl Filesystem for Adapter {
    fn init(
        &mut self,
        _req: &Request<'_>,
        config: &mut KernelConfig,
    ) -> std::result::Result<(), i32> {
        // Listing with attributes in one call: `ls -l` of a huge directory needs no lookup
        // round trip per entry. Kernels without it simply use readdir + lookup.
        let _ = config.add_capabilities(fuser::consts::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let result = self.entries_from(ino, offset, |child, next, name, a| {
            reply.add(child, next, name, ttl(a), &file_attr(a), 0)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(log("readdirplus", &e)),
        }
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.vfs.lookup(parent, name.as_bytes()) {
            Ok(Some(a)) => reply.entry(ttl(&a), &file_attr(&a), 0),
            Ok(None) => reply.error(libc::ENOENT),
            Err(e) => reply.error(log(&format!("lookup of {name:?}"), &e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.vfs.attr(ino) {
            Ok(a) => reply.attr(ttl(&a), &file_attr(&a)),
            Err(_) => reply.error(libc::ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.vfs.readlink(ino) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(log("readlink", &e)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, _ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            reply.error(libc::EROFS);
        } else {
            reply.opened(0, fuser::consts::FOPEN_KEEP_CACHE);
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        match self.vfs.read(ino, offset.max(0) as u64, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(log(&format!("read of inode {ino} at {offset}"), &e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.entries_from(ino, offset, |child, next, name, a| {
            reply.add(child, next, file_attr(a).kind, name)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(log("readdir", &e)),
        }
    }
}

/// Whether `p` is already a mount point (listed in /proc/self/mountinfo).
fn is_mount_point(p: &Path) -> bool {
    let Ok(canon) = p.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Checks that FUSE can be used and `mountpoint` is a directory nothing is mounted on.
pub fn preflight(mountpoint: &Path) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::InvalidArgument(
            "FUSE is not available: /dev/fuse is missing (load the fuse kernel module; on Debian install the fuse3 package)".into(),
        ));
    }
    let has_fusermount = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("fusermount3").is_file()));
    if !has_fusermount {
        return Err(Error::InvalidArgument(
            "fusermount3 not found: install the fuse3 package (apt-get install fuse3)".into(),
        ));
    }
    if !mountpoint.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "mount point {} is not a directory",
            mountpoint.display()
        )));
    }
    if is_mount_point(mountpoint) {
        return Err(Error::InvalidArgument(format!(
            "{} is already a mount point (unmount it first: fusermount3 -u {})",
            mountpoint.display(),
            mountpoint.display()
        )));
    }
    Ok(())
}

/// Mounts `vfs` read-only at `mountpoint` and serves it until `stop` receives (Ctrl-C) or the
/// file system is unmounted from outside (`fusermount3 -u`); then unmounts and returns.
pub fn serve(vfs: Vfs, mountpoint: &Path, stop: Receiver<()>) -> Result<()> {
    preflight(mountpoint)?;
    let options = [
        MountOption::RO,
        MountOption::FSName("tresor".into()),
        MountOption::Subtype("tresor".into()),
        MountOption::DefaultPermissions,
    ];
    let session = fuser::spawn_mount2(Adapter { vfs }, mountpoint, &options)
        .map_err(|e| Error::io(format!("mounting at {}", mountpoint.display()), e))?;
    loop {
        match stop.recv_timeout(Duration::from_millis(200)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if !session.guard.is_finished() => {}
            _ => break,
        }
    }
    // Dropping the session unmounts (if still mounted) and ends its thread.
    drop(session);
    Ok(())
}
