//! File-system metadata of restored entries: owner (as root), xattrs, mode and times, through
//! an open descriptor or, for entries that must not be opened, the path.

#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};
use crate::format::tree::{Node, NodeKind};

pub(super) fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn mtime(n: &Node) -> SystemTime {
    if n.mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n.mtime_ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(n.mtime_ns.unsigned_abs())
    }
}

/// Settings the parallel workers need (no repository).
#[derive(Clone, Copy)]
pub(super) struct Ctx {
    pub(super) as_root: bool,
}

/// Sets the node's xattrs on `path` without following a symlink; on an entry that existed
/// before (`fresh` false) also removes `user.` attributes the node does not have. Every failure
/// is a warning.
fn apply_xattrs(path: &Path, node: &Node, fresh: bool, warnings: &mut Vec<String>) {
    if !fresh && let Ok(names) = xattr::list(path) {
        for name in names {
            let stale = name.to_str().is_some_and(|n| {
                n.starts_with("user.") && !node.xattrs.iter().any(|x| x.name == n)
            });
            if stale && let Err(e) = xattr::remove(path, &name) {
                warnings.push(format!(
                    "{}: removing xattr {:?}: {e}",
                    path.display(),
                    name
                ));
            }
        }
    }
    for x in &node.xattrs {
        let value = match hex::decode(&x.value) {
            Ok(v) => v,
            Err(_) => {
                warnings.push(format!(
                    "{}: xattr {} has a value that is not hex; not set",
                    path.display(),
                    x.name
                ));
                continue;
            }
        };
        if let Err(e) = xattr::set(path, &x.name, &value) {
            warnings.push(format!("{}: setting xattr {}: {e}", path.display(), x.name));
        }
    }
}

/// Owner (as root), xattrs, mode, times of a file or directory through its open descriptor:
/// chown first (it clears setuid bits and capabilities), chmod after the xattrs (setting them
/// needs write permission).
pub(super) fn apply_meta_fd(
    f: &File,
    path: &Path,
    node: &Node,
    fresh: bool,
    ctx: Ctx,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if ctx.as_root {
        std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid))
            .ctx(|| format!("chown {}", path.display()))?;
    }
    apply_xattrs(path, node, fresh, &mut warnings);
    f.set_permissions(fs::Permissions::from_mode(node.mode & 0o7777))
        .ctx(|| format!("chmod {}", path.display()))?;
    let times = fs::FileTimes::new()
        .set_modified(mtime(node))
        .set_accessed(mtime(node));
    f.set_times(times)
        .ctx(|| format!("setting times of {}", path.display()))?;
    Ok(warnings)
}

/// The same for entries that must not be opened (symlinks, fifos, devices, sockets).
pub(super) fn apply_meta_path(path: &Path, node: &Node, ctx: Ctx) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if ctx.as_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .ctx(|| format!("chown {}", path.display()))?;
    }
    apply_xattrs(path, node, true, &mut warnings);
    if node.kind != NodeKind::Symlink {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(node.mode & 0o7777),
            rustix::fs::AtFlags::empty(),
        )
        .map_err(io::Error::from)
        .ctx(|| format!("chmod {}", path.display()))?;
    }
    let t = filetime::FileTime::from_system_time(mtime(node));
    filetime::set_symlink_file_times(path, t, t)
        .ctx(|| format!("setting times of {}", path.display()))?;
    Ok(warnings)
}
