//! Snapshot objects: the record that makes a backup exist.
//!
//! A snapshot is sealed JSON naming the root tree plus who, when and what: time, host, user,
//! tags, sources (paths, stdin names, commands, databases) and a summary. It is written last, after every
//! pack and index object it needs is durable, so a snapshot that exists is complete. Its name is
//! the BLAKE3 hash of its stored bytes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format;
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};

/// Where a snapshot's data came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceRecord {
    /// A file or directory, by its absolute path.
    Path {
        /// Absolute path as given (normalized).
        path: String,
    },
    /// Standard input stored as a file.
    Stdin {
        /// The file name in the snapshot.
        name: String,
    },
    /// A command's standard output stored as a file.
    Command {
        /// The command line (run with `sh -c`).
        command: String,
        /// The file name in the snapshot.
        name: String,
    },
    /// A database dump (`--postgres`, `--mariadb`, `--sqlite`) stored as a file.
    Database(DatabaseRecord),
}

/// A database source: what was dumped, by what, and (with `--count-rows`) how many rows each
/// table held at dump time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// `postgres`, `mariadb` or `sqlite`.
    pub engine: String,
    /// The stored path of the dump in the snapshot (`postgres/local/shop.sql`).
    pub name: String,
    /// The database name; for SQLite the database file's absolute path; for PostgreSQL
    /// globals (roles, tablespaces) the empty string.
    pub database: String,
    /// The server's label as stored (`local` for a unix socket or no host); absent for SQLite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `plain` or `custom` (PostgreSQL), `globals` (`pg_dumpall --globals-only`), `plain`
    /// (MariaDB), `sqlite` (a database file).
    pub format: String,
    /// The server's version (PostgreSQL `server_version`, SQLite library version).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_version: String,
    /// The dumper and its version (`pg_dump (PostgreSQL) 15.18`, `sqlite3_backup`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dumper: String,
    /// The dumper's options, as run (connection options and secrets left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Rows per table (`schema.table` for PostgreSQL), counted in the dump's own snapshot
    /// (MariaDB: in a consistent snapshot of their own, just before the dump); absent without
    /// `--count-rows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<std::collections::BTreeMap<String, u64>>,
}

/// The exclude options of a backup, as given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludeRecord {
    /// `--exclude` patterns, then the patterns read from each `--exclude-file`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// `--exclude-if-present` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub if_present: Vec<String>,
    /// `--exclude-caches`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub caches: bool,
    /// `--one-file-system`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_file_system: bool,
}

impl ExcludeRecord {
    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        *self == ExcludeRecord::default()
    }
}

/// What a backup did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files (and streams) stored.
    pub files: u64,
    /// Directories stored.
    pub dirs: u64,
    /// Symlinks stored.
    pub symlinks: u64,
    /// Fifos, device nodes and sockets stored.
    #[serde(default)]
    pub specials: u64,
    /// Content bytes read from the sources (files taken unchanged from the parent are not read).
    pub bytes_read: u64,
    /// Regular files with no file at the same stored path in the parent (all of them without one).
    #[serde(default)]
    pub files_new: u64,
    /// Regular files read although the parent had a file at the same path (its size, mtime,
    /// ctime, inode or device differed, or some of its chunks are no longer in the repository).
    #[serde(default)]
    pub files_changed: u64,
    /// Regular files whose chunk list was taken from the parent without reading them.
    #[serde(default)]
    pub files_unchanged: u64,
    /// Bytes this run added to the repository (packs and index objects).
    pub bytes_added: u64,
    /// Plaintext bytes of the blobs this run stored new.
    pub data_added: u64,
    /// Blobs stored new.
    pub blobs_added: u64,
    /// Blobs referenced that the repository already had.
    pub blobs_reused: u64,
    /// Of the blobs added, those stored as deltas against a chunk of the previous version.
    #[serde(default)]
    pub blobs_delta: u64,
    /// Wall-clock seconds.
    pub duration_seconds: f64,
    /// Exit status of each `--command` (0 when it succeeded; a snapshot is never written otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_exit_status: Vec<i32>,
    /// True when some sources could not be read; `errors` says which.
    pub incomplete: bool,
    /// The per-entry errors (unreadable files), at most 1000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A snapshot object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// When the backup started, RFC 3339 UTC.
    pub time: String,
    /// Host name.
    pub host: String,
    /// User who ran it.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Sources.
    pub sources: Vec<SourceRecord>,
    /// The root tree.
    pub root: BlobId,
    /// The snapshot whose file nodes were trusted for unchanged files (change detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Exclude options the backup ran with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<ExcludeRecord>,
    /// What happened.
    pub summary: Summary,
    /// In a copy made by `tresor repo copy`: the id of the snapshot first written by a backup
    /// (carried through copies of copies), so a later copy knows it is there. Absent in a
    /// snapshot written by a backup (its own id is its original).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// Every other snapshot the repository held when this one was written, so that one of
    /// them that later disappears without a forget record is noticed (see
    /// [`crate::repo::history`]). Absent in snapshots written before that check existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_snapshots: Vec<String>,
}

impl Snapshot {
    /// The database sources it holds, in source order.
    pub fn database_records(&self) -> Vec<&DatabaseRecord> {
        self.sources
            .iter()
            .filter_map(|r| match r {
                SourceRecord::Database(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// Seals the snapshot; returns (name, stored bytes).
    pub fn encode(&self, key: &MasterKey) -> Result<(ObjectId, Vec<u8>)> {
        key.seal_json(format::aad::SNAPSHOT, self)
    }

    /// Checks the name, opens and parses a snapshot.
    pub fn decode(key: &MasterKey, name: &ObjectId, stored: &[u8]) -> Result<Self> {
        let what = || format!("snapshot {}", name.to_hex());
        let s: Snapshot = key.open_named_json(format::aad::SNAPSHOT, name, stored, &what)?;
        if s.version != format::SNAPSHOT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "snapshot",
                found: s.version,
                supported: format::SNAPSHOT_VERSION,
            });
        }
        Ok(s)
    }

    /// The id of the snapshot first written by a backup that this one is (a copy of): its
    /// `original`, else `id` itself.
    pub fn original_id(&self, id: &ObjectId) -> String {
        self.original.clone().unwrap_or_else(|| id.to_hex())
    }

    /// The snapshot's time as a sortable value (falls back to the epoch if unparsable).
    pub fn timestamp(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot written before change detection and excludes still parses, and a new one
    /// without a parent or excludes serializes without those keys.
    #[test]
    fn old_snapshots_parse_and_absent_fields_stay_absent() {
        let old = format!(
            r#"{{"version":1,"time":"2026-01-01T00:00:00Z","host":"h","username":"u",
            "tags":[],"sources":[{{"kind":"path","path":"/etc"}}],"root":"{}",
            "summary":{{"files":2,"dirs":1,"symlinks":0,"bytes_read":10,"bytes_added":5,
            "data_added":5,"blobs_added":1,"blobs_reused":0,"duration_seconds":0.5,
            "incomplete":false}}}}"#,
            "ab".repeat(32)
        );
        let s: Snapshot = serde_json::from_str(&old).unwrap();
        assert_eq!(s.parent, None);
        assert_eq!(s.excludes, None);
        assert_eq!(
            (
                s.summary.files_new,
                s.summary.files_changed,
                s.summary.files_unchanged
            ),
            (0, 0, 0)
        );
        let back = serde_json::to_value(&s).unwrap();
        assert!(back.get("parent").is_none() && back.get("excludes").is_none());
        assert!(s.original.is_none() && back.get("original").is_none());
        assert_eq!(back["summary"]["files_unchanged"], 0);

        let with = Snapshot {
            parent: Some("cd".repeat(32)),
            excludes: Some(ExcludeRecord {
                caches: true,
                ..Default::default()
            }),
            ..s
        };
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["parent"], "cd".repeat(32));
        assert_eq!(v["excludes"], serde_json::json!({"caches": true}));
    }
}
