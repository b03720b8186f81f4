//! Trees: directory listings stored as blobs of kind `Tree`.
//!
//! A tree blob's plaintext is JSON: `{"version":1,"nodes":[…]}` with nodes sorted by the bytes of
//! their names. A directory node names its subtree by blob id, so an unchanged subtree has the
//! same id and is stored once. A file node lists its content as `[blob id, length]` pairs in
//! order; the lengths let a reader map a file offset to chunks without reading earlier ones.
//! Names that are not UTF-8 are kept exactly: `name_hex` then holds their bytes.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format;
use crate::format::id::BlobId;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe (tree version 2).
    Fifo,
    /// A character device; `rdev` names it (tree version 2).
    Chardev,
    /// A block device; `rdev` names it (tree version 2).
    Blockdev,
    /// A unix domain socket (tree version 2).
    Socket,
}

/// One extended attribute: its name and its value's bytes in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// The attribute name, e.g. `user.comment` (names that are not UTF-8 are not stored).
    pub name: String,
    /// The value's bytes, hex.
    pub value: String,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// One chunk of a file: its id and plaintext length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef(pub BlobId, pub u32);

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name (lossy when `name_hex` is set).
    pub name: String,
    /// The exact name bytes in hex, present only when the name is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
    /// File, directory or symlink.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits (the low 12 bits of st_mode).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// Content chunks (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentRef>,
    /// Subtree (directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// Link target (symlinks), lossy when `target_hex` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Exact link target bytes in hex when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
    /// Status change time, ns since the epoch (change detection only; never restored).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ctime_ns: i64,
    /// Inode number on the source (change detection and hard links).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub inode: u64,
    /// Device of the source file system (change detection and hard links).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub device: u64,
    /// Hard link count on the source; nodes with `links > 1` and equal `(device, inode)` in one
    /// snapshot are one file and are restored as hard links of each other.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub links: u64,
    /// Device number of a character or block device.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Files (version 3): one anchor per `content` chunk, [`chunk_anchor`] of its first bytes.
    /// The next backup of this file finds, for each changed chunk, the chunk of this version
    /// that starts the same way and stores the change as a delta against it. Empty when unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anchors: Vec<u64>,
}

/// How many leading bytes of a chunk its anchor covers.
pub const ANCHOR_LEN: usize = 64;

/// A chunk's anchor: the first 8 bytes (little-endian) of the keyed blob id of its first
/// [`ANCHOR_LEN`] bytes (all of it when shorter). Chunk boundaries are content-defined, so a
/// chunk of tomorrow's dump that starts at the same place as one of today's has the same anchor
/// even when the rest of it changed.
pub fn chunk_anchor(key: &crate::format::crypto::MasterKey, chunk: &[u8]) -> u64 {
    let id = key.blob_id(&chunk[..chunk.len().min(ANCHOR_LEN)]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b)
}

/// Splits OS bytes into (lossy string, hex when not UTF-8).
pub fn encode_os(s: &OsStr) -> (String, Option<String>) {
    match s.to_str() {
        Some(u) => (u.to_string(), None),
        None => (
            s.to_string_lossy().into_owned(),
            Some(hex::encode(s.as_bytes())),
        ),
    }
}

fn decode_os(lossy: &str, hexed: &Option<String>, what: &str) -> Result<OsString> {
    match hexed {
        None => Ok(OsString::from(lossy)),
        Some(h) => hex::decode(h)
            .map(OsString::from_vec)
            .map_err(|_| Error::corrupt("tree", format!("{what} hex is not hex"))),
    }
}

impl Node {
    /// The exact name.
    pub fn os_name(&self) -> Result<OsString> {
        decode_os(&self.name, &self.name_hex, "name")
    }

    /// The exact symlink target.
    pub fn os_target(&self) -> Result<OsString> {
        decode_os(
            self.target.as_deref().unwrap_or(""),
            &self.target_hex,
            "target",
        )
    }

    /// A node with only a name, a kind and the ownership/mode/mtime fields set.
    pub fn new(name: &OsStr, kind: NodeKind, mode: u32, uid: u32, gid: u32, mtime_ns: i64) -> Node {
        let (name, name_hex) = encode_os(name);
        Node {
            name,
            name_hex,
            kind,
            mode,
            uid,
            gid,
            mtime_ns,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: None,
            target_hex: None,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            xattrs: Vec::new(),
            anchors: Vec::new(),
        }
    }

    /// Whether this node shares its data with other nodes of the snapshot as a hard link.
    pub fn hardlink_key(&self) -> Option<(u64, u64)> {
        (self.kind == NodeKind::File && self.links > 1 && self.inode != 0)
            .then_some((self.device, self.inode))
    }

    /// Whether two nodes describe the same entry, ignoring where it lived on the source
    /// (`ctime_ns`, `inode`, `device`) and the chunk anchors (derived from the content, absent
    /// in older trees): a tree restored elsewhere and backed up again is equal.
    pub fn same_as(&self, other: &Node) -> bool {
        let strip = |n: &Node| Node {
            ctime_ns: 0,
            inode: 0,
            device: 0,
            anchors: Vec::new(),
            ..n.clone()
        };
        strip(self) == strip(other)
    }

    /// Name bytes, the sort key.
    pub fn name_bytes(&self) -> Vec<u8> {
        self.os_name()
            .map(|n| n.into_vec())
            .unwrap_or_else(|_| self.name.as_bytes().to_vec())
    }
}

/// A name's bytes as text a terminal shows unambiguously: printable ASCII as is (`"` and `\`
/// escaped), everything else as `\xNN` (so `a\x00b`, `x/y` and a name that is not UTF-8 all
/// show what is really there).
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out
}

/// A directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Format version.
    pub version: u32,
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Builds a tree, sorting the nodes; refuses duplicate names.
    pub fn new(mut nodes: Vec<Node>) -> Result<Tree> {
        nodes.sort_by_key(|n| n.name_bytes());
        for w in nodes.windows(2) {
            if w[0].name_bytes() == w[1].name_bytes() {
                return Err(Error::InvalidArgument(format!(
                    "two entries named {:?} in one directory",
                    w[0].name
                )));
            }
        }
        Ok(Tree {
            version: format::TREE_VERSION,
            nodes,
        })
    }

    /// The blob plaintext.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let b = serde_json::to_vec(self).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if b.len() > format::MAX_BLOB_LEN {
            return Err(Error::InvalidArgument(format!(
                "a directory listing of {} entries is {} bytes, over the {} byte blob limit",
                self.nodes.len(),
                b.len(),
                format::MAX_BLOB_LEN
            )));
        }
        Ok(b)
    }

    /// Parses and validates a tree blob: names must be safe path components.
    pub fn from_bytes(id: &BlobId, b: &[u8]) -> Result<Tree> {
        let what = || format!("tree {}", id.to_hex());
        let t: Tree =
            serde_json::from_slice(b).map_err(|e| Error::corrupt(what(), e.to_string()))?;
        if t.version == 0 || t.version > format::TREE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "tree",
                found: t.version,
                supported: format::TREE_VERSION,
            });
        }
        for w in t.nodes.windows(2) {
            if w[0].name_bytes() >= w[1].name_bytes() {
                return Err(Error::corrupt(
                    what(),
                    format!(
                        "entries {:?} and {:?} are not in strict name order",
                        w[0].name, w[1].name
                    ),
                ));
            }
        }
        for n in &t.nodes {
            let name = n
                .os_name()
                .map_err(|_| Error::corrupt(what(), "bad name"))?;
            let nb = name.as_bytes();
            if nb.is_empty() || nb == b"." || nb == b".." || nb.contains(&b'/') || nb.contains(&0) {
                return Err(Error::corrupt(
                    what(),
                    format!("unsafe entry name \"{}\"", escape_bytes(nb)),
                ));
            }
            let ok = match n.kind {
                NodeKind::Dir => n.subtree.is_some(),
                NodeKind::Symlink => n.target.is_some() || n.target_hex.is_some(),
                NodeKind::File => {
                    n.content.iter().map(|c| c.1 as u64).sum::<u64>() == n.size
                        && (n.anchors.is_empty() || n.anchors.len() == n.content.len())
                }
                NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Socket => {
                    t.version >= 2 && n.content.is_empty() && n.subtree.is_none()
                }
            };
            if !ok {
                return Err(Error::corrupt(
                    what(),
                    format!("entry {:?} is inconsistent", n.name),
                ));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: Vec<ContentRef>) -> Node {
        let mut n = Node::new(OsStr::new(name), NodeKind::File, 0o644, 0, 0, 1);
        n.size = content.iter().map(|c| c.1 as u64).sum();
        n.content = content;
        n
    }

    #[test]
    fn round_trip_sorted_and_validated() {
        let id = BlobId([1; 32]);
        let t = Tree::new(vec![file("b", vec![ContentRef(id, 10)]), file("a", vec![])]).unwrap();
        assert_eq!(t.nodes[0].name, "a");
        let b = t.to_bytes().unwrap();
        assert_eq!(Tree::from_bytes(&id, &b).unwrap(), t);
        assert!(Tree::new(vec![file("a", vec![]), file("a", vec![])]).is_err());
        let evil = Tree {
            version: format::TREE_VERSION,
            nodes: vec![file("..", vec![])],
        };
        assert!(Tree::from_bytes(&id, &evil.to_bytes().unwrap()).is_err());
        let mut lying = file("x", vec![ContentRef(id, 10)]);
        lying.size = 11;
        let t = Tree {
            version: 1,
            nodes: vec![lying],
        };
        assert!(Tree::from_bytes(&id, &t.to_bytes().unwrap()).is_err());
    }

    /// A hostile tree's unsafe name is shown as its real bytes: the old message printed the
    /// lossy UTF-8 field, which hid a NUL, a `/` in a hex-encoded name, or the bytes of `..`.
    #[test]
    fn unsafe_names_are_refused_showing_their_real_bytes() {
        let id = BlobId([3; 32]);
        for (raw, shown) in [
            (b"a\x00b".to_vec(), "a\\x00b"),
            (b"x/y".to_vec(), "x/y"),
            (b"..".to_vec(), ".."),
            (vec![0xff, b'/', b'"'], "\\xff/\\\""),
        ] {
            let node = Node::new(
                &OsString::from_vec(raw.clone()),
                NodeKind::File,
                0o644,
                0,
                0,
                1,
            );
            let t = Tree {
                version: format::TREE_VERSION,
                nodes: vec![node],
            };
            let bytes = serde_json::to_vec(&t).unwrap();
            let err = Tree::from_bytes(&id, &bytes).unwrap_err().to_string();
            assert!(
                err.contains(&format!("unsafe entry name \"{shown}\"")),
                "{raw:?}: {err}"
            );
        }
    }

    #[test]
    fn non_utf8_names_survive() {
        let raw = OsString::from_vec(vec![b'a', 0xff, b'b']);
        let (lossy, hexed) = encode_os(&raw);
        let mut n = file(&lossy, vec![]);
        n.name_hex = hexed;
        assert_eq!(n.os_name().unwrap(), raw);
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn version_1_trees_still_read_and_special_kinds_need_version_2() {
        let id = BlobId([2; 32]);
        let v1 = br#"{"version":1,"nodes":[{"name":"a","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":1,"size":0}]}"#;
        let t = Tree::from_bytes(&id, v1).unwrap();
        assert_eq!(t.nodes[0].links, 0);
        let fifo_v1 = br#"{"version":1,"nodes":[{"name":"p","type":"fifo","mode":420,"uid":0,"gid":0,"mtime_ns":1}]}"#;
        assert!(Tree::from_bytes(&id, fifo_v1).is_err());
        let fifo_v2 = br#"{"version":2,"nodes":[{"name":"p","type":"fifo","mode":420,"uid":0,"gid":0,"mtime_ns":1,"xattrs":[{"name":"user.a","value":"00ff"}]}]}"#;
        let t = Tree::from_bytes(&id, fifo_v2).unwrap();
        assert_eq!(t.nodes[0].kind, NodeKind::Fifo);
        assert_eq!(t.nodes[0].xattrs[0].value, "00ff");
        let future = br#"{"version":4,"nodes":[]}"#;
        assert!(Tree::from_bytes(&id, future).is_err());
    }
}
