//! Metadata: what is recorded for every entry ([`Meta`]), taken from an `lstat` (a
//! [`std::fs::Metadata`]) or a `statat` (a [`rustix::fs::Stat`]), and the metadata a stream
//! (stdin, a command) is stored with. A leaf: it uses no other source module, so the walk and
//! the change detection of `parent.rs` both depend on it and it on neither.

#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use rustix::fs::{FileType, Stat};

use crate::format::tree::Xattr;

/// Metadata recorded for every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time in ns since the epoch.
    pub mtime_ns: i64,
    /// Size (files).
    pub size: u64,
    /// Status change time in ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Device of the file system.
    pub device: u64,
    /// Hard link count (regular files; 0 otherwise).
    pub links: u64,
    /// Device number (device nodes; 0 otherwise).
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn to_i64<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

pub(super) fn to_u64<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(0)
}

impl Meta {
    /// The metadata `lstat` gives (no extended attributes).
    pub fn of(md: &fs::Metadata) -> Meta {
        let ft = md.file_type();
        Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            size: md.len(),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            inode: md.ino(),
            device: md.dev(),
            links: if ft.is_file() { md.nlink() } else { 0 },
            rdev: if ft.is_char_device() || ft.is_block_device() {
                md.rdev()
            } else {
                0
            },
            xattrs: Vec::new(),
        }
    }

    /// The metadata a `stat` call gave (no extended attributes).
    pub fn of_stat(st: &Stat) -> Meta {
        let ft = FileType::from_raw_mode(st.st_mode);
        let special = matches!(ft, FileType::CharacterDevice | FileType::BlockDevice);
        Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime_ns: ns(to_i64(st.st_mtime), to_i64(st.st_mtime_nsec)),
            size: to_u64(st.st_size),
            ctime_ns: ns(to_i64(st.st_ctime), to_i64(st.st_ctime_nsec)),
            inode: to_u64(st.st_ino),
            device: to_u64(st.st_dev),
            links: if ft == FileType::RegularFile {
                to_u64(st.st_nlink)
            } else {
                0
            },
            rdev: if special { to_u64(st.st_rdev) } else { 0 },
            xattrs: Vec::new(),
        }
    }

    /// Whether a file's content may have changed between two `stat`s of it.
    pub fn content_changed(&self, later: &Meta) -> bool {
        self.size != later.size
            || self.mtime_ns != later.mtime_ns
            || self.ctime_ns != later.ctime_ns
    }

    /// Metadata for a stream (stdin or a command): owned by this process, mode 0600, now.
    pub(super) fn stream() -> Meta {
        let (uid, gid) = fs::metadata("/proc/self")
            .map(|m| (m.uid(), m.gid()))
            .unwrap_or((0, 0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Meta {
            mode: 0o600,
            uid,
            gid,
            mtime_ns: now,
            ..Meta::default()
        }
    }
}
