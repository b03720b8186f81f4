//! The local catalog: a SQLite cache of the repository's index.
//!
//! It maps blob id → (pack, offset, lengths) so that dedup lookups and restores hit disk, not a
//! hash map in memory: memory stays flat however large the repository grows. It lives in the
//! cache directory, one file per repository id, and is **never the only copy of anything**:
//! [`Catalog::sync`] loads every index object it has not seen, and rebuilds from scratch when an
//! index object it absorbed has disappeared (a prune), when its schema version differs, or when
//! the file is unreadable.
//!
//! **Packs the storage no longer holds.** An index object may name a pack that is gone: one
//! deleted outside tresor, or a stale index object put back after a prune (a replay). Such
//! entries must never serve dedup — a backup would reference data that does not exist. Each
//! complete listing of the packs, taken after the catalog was synced, goes to
//! [`Catalog::observe_packs`]: an indexed pack missing from it is recorded as *absent*, and the
//! catalog is rebuilt without the entries of absent packs (a pack that reappears is taken back).
//! `check` reports such index objects; `prune` and `repair index` rewrite them.
//!
//! **Snapshots seen.** The ids of every snapshot this machine has listed stay in the catalog
//! (they survive rebuilds, like the verification ledger), so that a snapshot that later
//! disappears without a forget record is noticed (see [`crate::repo::history`]).
//!
//! Pragmas: WAL journal (readers do not block the writer; a crash rolls back whole
//! transactions), `synchronous=NORMAL` (a lost last transaction is re-synced from index objects),
//! a busy timeout (two tresor processes may share a cache).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, IoContext, Result};
use crate::format::BlobKind;
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::index::{self, IndexedPack};
use crate::format::pack::PackEntry;

mod blob_set;
mod lookups;
mod writes;

pub use blob_set::DiskBlobSet;

/// Bump when the tables change; an older catalog is then rebuilt.
pub const SCHEMA_VERSION: i64 = 6;

/// Where a blob is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Data or tree.
    pub kind: BlobKind,
    /// The pack that holds it.
    pub pack: ObjectId,
    /// Offset within the pack.
    pub offset: u32,
    /// Sealed length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// For a delta blob, its depth (1 when its base is a whole data blob); 0 otherwise.
    pub depth: u8,
    /// For a delta blob, its chain: its base first, then the base's base, and so on down to
    /// the whole data blob at the root (last), each with where it is stored; empty otherwise.
    pub chain: Vec<DeltaBase>,
}

impl BlobLocation {
    /// A delta's base (the blob its copy script copies from).
    pub fn base(&self) -> Option<&DeltaBase> {
        self.chain.first()
    }

    /// The whole data blob a delta's chain starts from.
    pub fn root(&self) -> Option<&DeltaBase> {
        self.chain.last()
    }
}

/// Where one blob of a delta chain is stored: a delta (decoded against the next one of the
/// chain) or, at the root, a whole data blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaBase {
    /// The base blob's id.
    pub id: BlobId,
    /// Data (the root) or delta.
    pub kind: BlobKind,
    /// The pack that holds it.
    pub pack: ObjectId,
    /// Offset within the pack.
    pub offset: u32,
    /// Sealed length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

impl DeltaBase {
    /// Where this blob is, as a location of its own; a delta's chain below it is not known
    /// here (empty), so only a whole data blob's location is complete.
    pub fn location(&self) -> BlobLocation {
        BlobLocation {
            kind: self.kind,
            pack: self.pack,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            depth: 0,
            chain: Vec::new(),
        }
    }

    /// The base `id`, stored where `loc` says.
    pub fn at(id: BlobId, loc: &BlobLocation) -> Self {
        DeltaBase {
            id,
            kind: loc.kind,
            pack: loc.pack,
            offset: loc.offset,
            stored_len: loc.stored_len,
            raw_len: loc.raw_len,
        }
    }
}

/// Counts and sizes over the indexed blobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobTotals {
    /// Data blobs.
    pub data_blobs: u64,
    /// Tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes.
    pub raw: u64,
    /// Sealed bytes.
    pub stored: u64,
}

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packs (
    rowid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack INTEGER NOT NULL,
    offset INTEGER NOT NULL, stored_len INTEGER NOT NULL, raw_len INTEGER NOT NULL,
    base BLOB, depth INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_pack ON blobs (pack);
CREATE TABLE IF NOT EXISTS index_objects (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS verified (pack BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS absent_packs (
    id BLOB PRIMARY KEY, named INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS absent_blobs (id BLOB NOT NULL, pack BLOB NOT NULL,
    PRIMARY KEY (id, pack)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_snapshots (id BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
";

/// What a listing of the packs changed in the catalog ([`Catalog::observe_packs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackObservation {
    /// Indexed packs the listing did not show, found absent by this listing.
    pub newly_absent: Vec<ObjectId>,
    /// Packs recorded absent that the listing shows again.
    pub returned: Vec<ObjectId>,
    /// Every pack recorded absent after this listing.
    pub absent: Vec<ObjectId>,
    /// Index objects skipped by the rebuild this caused (damaged), as [`Catalog::sync`] says.
    pub warnings: Vec<String>,
}

/// A pack the catalog knows, with the time `check --read-data` last verified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRecord {
    /// The pack's name.
    pub id: ObjectId,
    /// Its size in bytes, as indexed.
    pub size: u64,
    /// Unix seconds of the last complete, clean read; `None` if never.
    pub verified_at: Option<i64>,
}

/// (kind, id or pack id, offset, stored_len, raw_len, base id, depth) of a blob row.
type BlobRow = (u8, Vec<u8>, u32, u32, u32, Option<Vec<u8>>, u8);

fn blob_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn blob_kind(k: u8) -> Result<BlobKind> {
    BlobKind::from_u8(k).ok_or_else(|| Error::corrupt("catalog", "bad blob kind"))
}

fn base_id(kind: BlobKind, base: Option<Vec<u8>>) -> Result<Option<BlobId>> {
    match (kind, base) {
        (BlobKind::Delta, Some(b)) => Ok(Some(BlobId::from_slice(&b)?)),
        (BlobKind::Delta, None) => Err(Error::corrupt("catalog", "a delta blob without a base")),
        _ => Ok(None),
    }
}

/// Creates a directory and its missing parents readable by the owner only: the cache names
/// every blob and pack of the repositories it serves.
pub fn private_dir_all(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ctx(|| format!("creating cache directory {}", dir.display()))
}

fn sql<T>(ctx: &str, r: rusqlite::Result<T>) -> Result<T> {
    r.map_err(|e| Error::catalog(ctx.to_string(), e))
}

impl Catalog {
    /// Opens (or creates) the catalog for `repo_id` under `cache_dir`, discarding a catalog of
    /// another schema version or repository.
    pub fn open(cache_dir: &Path, repo_id: &str) -> Result<Catalog> {
        let dir = cache_dir.join(repo_id);
        private_dir_all(&dir)?;
        let path = dir.join("catalog.sqlite");
        match Self::open_checked(&path, repo_id) {
            Ok(Some(c)) => Ok(c),
            Ok(None) | Err(_) => {
                for suffix in ["", "-wal", "-shm"] {
                    let p = PathBuf::from(format!("{}{suffix}", path.display()));
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(Error::io(
                                format!("removing stale catalog {}", p.display()),
                                e,
                            ));
                        }
                    }
                }
                Self::open_checked(&path, repo_id)?.ok_or_else(|| {
                    Error::corrupt("catalog", "fresh catalog does not match its repository")
                })
            }
        }
    }

    fn open_checked(path: &Path, repo_id: &str) -> Result<Option<Catalog>> {
        let conn = sql("open", Connection::open(path))?;
        sql(
            "busy timeout",
            conn.busy_timeout(std::time::Duration::from_secs(60)),
        )?;
        sql("pragma", conn.pragma_update(None, "journal_mode", "WAL"))?;
        sql("pragma", conn.pragma_update(None, "synchronous", "NORMAL"))?;
        // 32 MiB of page cache: bounded, and enough that loading millions of entries does not
        // thrash (the id B-tree is written in random order).
        sql("pragma", conn.pragma_update(None, "cache_size", -32768))?;
        sql("schema", conn.execute_batch(SCHEMA))?;
        let get = |k: &str| -> Result<Option<String>> {
            sql(
                "meta",
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                    .optional(),
            )
        };
        match (get("schema_version")?, get("repo_id")?) {
            (None, None) => {
                sql(
                    "meta",
                    conn.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?1)",
                        [SCHEMA_VERSION.to_string()],
                    ),
                )?;
                sql(
                    "meta",
                    conn.execute("INSERT INTO meta VALUES ('repo_id', ?1)", [repo_id]),
                )?;
            }
            (Some(v), Some(r)) if v == SCHEMA_VERSION.to_string() && r == repo_id => {}
            // Version 2 lacked the blobs-by-pack index, which SCHEMA just created; versions 2
            // and 3 lack the base column of delta blobs. Their rows need no base (those builds
            // knew no delta blobs), so adding the column upgrades them and keeps the ledger.
            // Version 4 lacked the absent-pack and seen-snapshot tables, which SCHEMA just
            // created empty (nothing recorded absent yet: the next listing of packs does it).
            // Versions 2 to 5 lack the depth column: the builds that wrote them knew only
            // deltas against whole blobs, which are depth 1.
            (Some(v), Some(r)) if ["2", "3", "4", "5"].contains(&v.as_str()) && r == repo_id => {
                let add_base = if v == "4" || v == "5" {
                    ""
                } else {
                    "ALTER TABLE blobs ADD COLUMN base BLOB;"
                };
                sql(
                    "upgrade",
                    conn.execute_batch(&format!(
                        "BEGIN; {add_base}
                         ALTER TABLE blobs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
                         UPDATE blobs SET depth = 1 WHERE kind = 2;
                         UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';
                         COMMIT;"
                    )),
                )?;
            }
            _ => return Ok(None),
        }
        Ok(Some(Catalog {
            conn,
            path: path.to_path_buf(),
        }))
    }

    /// A second connection to the same catalog that can only read, for another thread (a
    /// connection is not `Sync`). In WAL mode it reads while this one writes; it sees every
    /// transaction committed before each of its statements.
    pub fn reader(&self) -> Result<Catalog> {
        use rusqlite::OpenFlags;
        let conn = sql(
            "open read-only",
            Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
        )?;
        sql(
            "busy timeout",
            conn.busy_timeout(std::time::Duration::from_secs(60)),
        )?;
        // The same bounded page cache as the writer: the id B-tree is probed in random order.
        sql("pragma", conn.pragma_update(None, "cache_size", -32768))?;
        Ok(Catalog {
            conn,
            path: self.path.clone(),
        })
    }

    /// Starts a read transaction: the lookups until [`Catalog::end_read`] share one snapshot
    /// and one lock, instead of taking and checking the file locks per statement (which costs
    /// two `fcntl` and two `fstat` per lookup).
    pub fn begin_read(&self) -> Result<()> {
        sql("begin", self.conn.execute_batch("BEGIN DEFERRED"))
    }

    /// Ends a read transaction begun by [`Catalog::begin_read`].
    pub fn end_read(&self) -> Result<()> {
        sql("end", self.conn.execute_batch("COMMIT"))
    }

    /// The file backing this catalog.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;
    use crate::format::BlobKind;
    use std::collections::HashSet;

    fn entry(b: u8) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId([b; 32]),
            offset: 0,
            stored_len: 10,
            raw_len: 20,
            base: None,
            depth: 0,
        }
    }

    fn put_index(backend: &MemBackend, key: &MasterKey, pack: u8, blob: u8) -> String {
        let packs = vec![IndexedPack {
            id: ObjectId([pack; 32]),
            size: 100,
            entries: vec![entry(blob)],
        }];
        let (name, bytes) = index::encode(key, &packs).unwrap();
        backend
            .put(ObjectKind::Index, &name.to_hex(), &bytes)
            .unwrap();
        name.to_hex()
    }

    #[test]
    fn syncs_rebuilds_when_stale_and_discards_other_schemas() {
        let t = tempfile::tempdir().unwrap();
        let key = MasterKey::from_secret([1; 32]);
        let backend = MemBackend::new();
        let first = put_index(&backend, &key, 1, 10);
        put_index(&backend, &key, 2, 20);

        let mut c = Catalog::open(t.path(), "repo-a").unwrap();
        c.sync(&backend, &key, 4).unwrap();
        assert_eq!(c.counts().unwrap(), (2, 2));
        let loc = c.locate(&BlobId([20; 32])).unwrap().unwrap();
        assert_eq!((loc.pack, loc.raw_len), (ObjectId([2; 32]), 20));

        // An index object that disappeared (a prune) makes the catalog rebuild: its blob goes.
        backend.delete(ObjectKind::Index, &first).unwrap();
        c.sync(&backend, &key, 4).unwrap();
        assert!(!c.contains(&BlobId([10; 32])).unwrap());
        assert!(c.contains(&BlobId([20; 32])).unwrap());
        drop(c);

        // A catalog of another schema version is discarded and rebuilt on open + sync.
        let path = t.path().join("repo-a").join("catalog.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE meta SET value = '0' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO blobs VALUES (x'00', 0, 1, 0, 0, 0, NULL, 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let mut c = Catalog::open(t.path(), "repo-a").unwrap();
        assert_eq!(c.counts().unwrap(), (0, 0), "old catalog must be discarded");
        c.sync(&backend, &key, 4).unwrap();
        assert_eq!(c.counts().unwrap(), (1, 1));

        // A damaged index object is skipped and named, not fatal and not silent.
        let bad = put_index(&backend, &key, 3, 30);
        backend.tamper(ObjectKind::Index, &bad, |b| b[40] ^= 1);
        let skipped = c.sync(&backend, &key, 4).unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains(&bad), "{skipped:?}");
        assert!(!c.contains(&BlobId([30; 32])).unwrap());
        assert!(c.contains(&BlobId([20; 32])).unwrap());
    }

    #[test]
    fn ledger_orders_packs_and_survives_a_rebuild() {
        let t = tempfile::tempdir().unwrap();
        let key = MasterKey::from_secret([2; 32]);
        let backend = MemBackend::new();
        for p in 1..=3 {
            put_index(&backend, &key, p, p + 10);
        }
        let mut c = Catalog::open(t.path(), "repo-l").unwrap();
        c.sync(&backend, &key, 4).unwrap();
        let order =
            |c: &Catalog| -> Vec<u8> { c.packs().unwrap().iter().map(|p| p.id.0[0]).collect() };
        assert_eq!(order(&c), [1, 2, 3]);
        c.mark_verified(&[ObjectId([1; 32])], 500).unwrap();
        c.mark_verified(&[ObjectId([3; 32])], 100).unwrap();
        // Never verified first, then the oldest verification.
        assert_eq!(order(&c), [2, 3, 1]);
        c.rebuild(&backend, &key, 4).unwrap();
        assert_eq!(order(&c), [2, 3, 1], "a rebuild keeps the ledger");
        assert_eq!(c.packs().unwrap()[1].verified_at, Some(100));
        assert_eq!(c.pack_entries(&ObjectId([2; 32])).unwrap(), vec![entry(12)]);

        let set = DiskBlobSet::new().unwrap();
        assert!(set.insert(&BlobId([7; 32])).unwrap());
        assert!(!set.insert(&BlobId([7; 32])).unwrap());
        assert!(set.contains(&BlobId([7; 32])).unwrap());
        assert!(!set.contains(&BlobId([8; 32])).unwrap());
    }

    #[test]
    fn broken_deltas_are_found_and_locate_resolves_bases() {
        let t = tempfile::tempdir().unwrap();
        let key = MasterKey::from_secret([4; 32]);
        let backend = MemBackend::new();
        let blob = |kind, b: u8, offset, base: Option<u8>| PackEntry {
            kind,
            id: BlobId([b; 32]),
            offset,
            stored_len: 10,
            raw_len: 20,
            base: base.map(|x| BlobId([x; 32])),
            depth: u8::from(kind == BlobKind::Delta),
        };
        let chained = |b: u8, offset, base: u8, depth| PackEntry {
            depth,
            ..blob(BlobKind::Delta, b, offset, Some(base))
        };
        let put = |pack: u8, entries: Vec<PackEntry>| {
            let (name, bytes) = index::encode(
                &key,
                &[IndexedPack {
                    id: ObjectId([pack; 32]),
                    size: 100,
                    entries,
                }],
            )
            .unwrap();
            backend
                .put(ObjectKind::Index, &name.to_hex(), &bytes)
                .unwrap();
        };
        // Pack 1: delta 10 on base 20 (not indexed yet), delta 11 on the tree 12, delta 13 on
        // delta 10 at the same depth (a chain must descend), delta 14 on delta 10 one deeper
        // (a chain), delta 15 and 16 on each other (a cycle, however deep they say they are).
        put(
            1,
            vec![
                blob(BlobKind::Delta, 10, 0, Some(20)),
                blob(BlobKind::Delta, 11, 10, Some(12)),
                blob(BlobKind::Tree, 12, 20, None),
                blob(BlobKind::Delta, 13, 30, Some(10)),
                chained(14, 40, 10, 2),
                chained(15, 50, 16, 3),
                chained(16, 60, 15, 4),
            ],
        );
        let mut c = Catalog::open(t.path(), "repo-d").unwrap();
        c.sync(&backend, &key, 4).unwrap();
        let hex = |b: u8| BlobId([b; 32]).to_hex();
        let broken = |c: &Catalog| -> Vec<(u8, u8, String)> {
            c.broken_deltas()
                .unwrap()
                .into_iter()
                .map(|(d, b, p)| (d.0[0], b.0[0], p))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        assert_eq!(
            broken(&c),
            [
                (
                    10,
                    20,
                    format!("its delta base {} is not in any index", hex(20))
                ),
                (11, 12, format!("its delta base {} is a tree blob", hex(12))),
                (
                    13,
                    10,
                    format!(
                        "its delta base {} is a delta at least as deep (a chain must descend)",
                        hex(10)
                    )
                ),
                (
                    15,
                    16,
                    format!(
                        "its delta base {} is a delta at least as deep (a chain must descend)",
                        hex(16)
                    )
                ),
            ]
        );
        // (delta, the blob its error names, its own base)
        for (d, named, b) in [
            (10, 20, 20),
            (11, 12, 12),
            (13, 10, 10),
            (14, 20, 10),
            (15, 16, 16),
            (16, 16, 15),
        ] {
            let err = c.locate(&BlobId([d; 32])).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&hex(named)), "{err}");
            // The raw row still names the base, for check and prune.
            assert_eq!(
                c.delta_base(&BlobId([d; 32])).unwrap(),
                Some(BlobId([b; 32]))
            );
        }
        assert_eq!(c.delta_base(&BlobId([12; 32])).unwrap(), None);
        assert_eq!(c.delta_base(&BlobId([99; 32])).unwrap(), None);

        // Base 20 arrives with another index object, in pack 2: delta 10 is whole again and
        // locate says where its base is.
        put(2, vec![blob(BlobKind::Data, 20, 40, None)]);
        c.sync(&backend, &key, 4).unwrap();
        assert_eq!(
            broken(&c).iter().map(|b| b.0).collect::<Vec<_>>(),
            [11, 13, 15]
        );
        let loc = c.locate(&BlobId([10; 32])).unwrap().unwrap();
        assert_eq!(
            (loc.kind, loc.pack, loc.offset, loc.depth),
            (BlobKind::Delta, ObjectId([1; 32]), 0, 1)
        );
        let base20 = DeltaBase {
            id: BlobId([20; 32]),
            kind: BlobKind::Data,
            pack: ObjectId([2; 32]),
            offset: 40,
            stored_len: 10,
            raw_len: 20,
        };
        assert_eq!(loc.chain, [base20]);
        assert!(
            c.locate(&BlobId([20; 32]))
                .unwrap()
                .unwrap()
                .chain
                .is_empty()
        );
        // A chain: 14 on 10 on 20, listed down to the root.
        let loc = c.locate(&BlobId([14; 32])).unwrap().unwrap();
        assert_eq!(loc.depth, 2);
        assert_eq!(
            loc.chain
                .iter()
                .map(|b| (b.id.0[0], b.kind))
                .collect::<Vec<_>>(),
            [(10, BlobKind::Delta), (20, BlobKind::Data)]
        );
        assert_eq!(loc.root(), Some(&base20));
        // The cycle stays refused.
        for d in [15, 16] {
            let err = c.locate(&BlobId([d; 32])).unwrap_err();
            assert!(err.to_string().contains("does not descend"), "{err}");
        }
        // Pack entries keep the base, as the index object has it.
        let entries = c.pack_entries(&ObjectId([1; 32])).unwrap();
        assert_eq!(entries[0].base, Some(BlobId([20; 32])));
        assert_eq!(entries[2].base, None);
    }

    #[test]
    fn schema_2_and_3_catalogs_are_upgraded_in_place() {
        for version in ["2", "3"] {
            let t = tempfile::tempdir().unwrap();
            let key = MasterKey::from_secret([5; 32]);
            let backend = MemBackend::new();
            put_index(&backend, &key, 1, 10);
            // A catalog as schema version 2 or 3 left it: blobs without the base column.
            let dir = t.path().join("repo-s");
            std::fs::create_dir_all(&dir).unwrap();
            let conn = Connection::open(dir.join("catalog.sqlite")).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema_version', '{version}'), ('repo_id', 'repo-s');
                 CREATE TABLE packs (
                     rowid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL);
                 CREATE TABLE blobs (
                     id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack INTEGER NOT NULL,
                     offset INTEGER NOT NULL, stored_len INTEGER NOT NULL,
                     raw_len INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE TABLE index_objects (name TEXT PRIMARY KEY);
                 CREATE TABLE verified (
                     pack BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;"
            ))
            .unwrap();
            if version == "3" {
                conn.execute_batch("CREATE INDEX blobs_by_pack ON blobs (pack)")
                    .unwrap();
            }
            conn.execute("INSERT INTO verified VALUES (?1, 7)", [&[1u8; 32][..]])
                .unwrap();
            drop(conn);
            let mut c = Catalog::open(t.path(), "repo-s").unwrap();
            c.sync(&backend, &key, 4).unwrap();
            assert_eq!(c.counts().unwrap(), (1, 1), "schema {version}");
            assert!(c.locate(&BlobId([10; 32])).unwrap().is_some());
            assert!(c.broken_deltas().unwrap().is_empty());
            // Upgraded, not discarded: the verification ledger is still there.
            assert_eq!(
                c.packs().unwrap()[0].verified_at,
                Some(7),
                "schema {version}"
            );
            drop(c);
            let c = Catalog::open(t.path(), "repo-s").unwrap();
            assert_eq!(
                c.counts().unwrap(),
                (1, 1),
                "reopened at schema {SCHEMA_VERSION}"
            );
        }
    }

    #[test]
    fn a_blob_stored_twice_keeps_the_same_copy_whatever_the_load_order() {
        let t = tempfile::tempdir().unwrap();
        let copy = |kind, pack: u8, base: Option<u8>| IndexedPack {
            id: ObjectId([pack; 32]),
            size: 100,
            entries: vec![PackEntry {
                kind,
                id: BlobId([10; 32]),
                offset: 0,
                stored_len: 10,
                raw_len: 20,
                base: base.map(|b| BlobId([b; 32])),
                depth: u8::from(base.is_some()),
            }],
        };
        let delta20 = copy(BlobKind::Delta, 1, Some(20));
        let whole = copy(BlobKind::Data, 2, None);
        let delta5 = copy(BlobKind::Delta, 3, Some(5));
        // Deeper in a chain, with the smallest base of all: depth decides first.
        let mut deep2 = copy(BlobKind::Delta, 4, Some(2));
        deep2.entries[0].depth = 3;
        let orders: [&[&IndexedPack]; 8] = [
            &[&delta20, &whole],
            &[&whole, &delta20],
            &[&delta20, &delta5],
            &[&delta5, &delta20],
            &[&delta20, &delta5, &whole],
            &[&delta5, &whole, &delta20],
            &[&deep2, &delta20],
            &[&delta20, &deep2],
        ];
        let mut chosen = Vec::new();
        for (n, order) in orders.iter().enumerate() {
            let mut c = Catalog::open(t.path(), &format!("repo-{n}")).unwrap();
            for (i, p) in order.iter().enumerate() {
                c.add_index(&format!("index-{i}"), std::slice::from_ref(*p))
                    .unwrap();
            }
            let (loc, base) = c.blob_row(&BlobId([10; 32])).unwrap().unwrap();
            chosen.push((loc.kind, loc.pack.0[0], base.map(|b| b.0[0])));
        }
        let whole_copy = (BlobKind::Data, 2, None);
        let smaller_base = (BlobKind::Delta, 3, Some(5));
        let shallower = (BlobKind::Delta, 1, Some(20));
        assert_eq!(
            chosen,
            [
                whole_copy,
                whole_copy,
                smaller_base,
                smaller_base,
                whole_copy,
                whole_copy,
                shallower,
                shallower
            ]
        );
    }

    /// A pack an index object names but the storage lacks (a stale index object put back
    /// after a prune) serves no lookup; it is taken back when it reappears, and an index object
    /// naming it that arrives later is filtered too.
    #[test]
    fn entries_of_absent_packs_serve_no_lookup() {
        let t = tempfile::tempdir().unwrap();
        let key = MasterKey::from_secret([8; 32]);
        let backend = MemBackend::new();
        put_index(&backend, &key, 1, 10);
        put_index(&backend, &key, 2, 20);
        let mut c = Catalog::open(t.path(), "repo-x").unwrap();
        c.sync(&backend, &key, 4).unwrap();
        assert!(c.contains(&BlobId([20; 32])).unwrap());
        let only_1: HashSet<ObjectId> = [ObjectId([1; 32])].into();
        let seen = c.observe_packs(&only_1, &backend, &key, 4).unwrap();
        assert_eq!(seen.newly_absent, [ObjectId([2; 32])]);
        assert_eq!(seen.absent, [ObjectId([2; 32])]);
        assert!(!c.contains(&BlobId([20; 32])).unwrap());
        assert!(c.locate(&BlobId([20; 32])).unwrap().is_none());
        assert!(c.contains(&BlobId([10; 32])).unwrap());
        // Another index object naming the absent pack: still nothing.
        put_index(&backend, &key, 2, 21);
        c.sync(&backend, &key, 4).unwrap();
        assert!(!c.contains(&BlobId([21; 32])).unwrap());
        // The same listing again changes nothing; the pack's return brings its entries back.
        assert!(
            c.observe_packs(&only_1, &backend, &key, 4)
                .unwrap()
                .newly_absent
                .is_empty()
        );
        let both: HashSet<ObjectId> = [ObjectId([1; 32]), ObjectId([2; 32])].into();
        let seen = c.observe_packs(&both, &backend, &key, 4).unwrap();
        assert_eq!(seen.returned, [ObjectId([2; 32])]);
        assert!(seen.absent.is_empty());
        assert!(c.contains(&BlobId([20; 32])).unwrap());
        assert!(c.contains(&BlobId([21; 32])).unwrap());
    }

    #[test]
    fn snapshots_seen_survive_a_rebuild() {
        let t = tempfile::tempdir().unwrap();
        let key = MasterKey::from_secret([9; 32]);
        let backend = MemBackend::new();
        let mut c = Catalog::open(t.path(), "repo-s5").unwrap();
        c.remember_snapshots(&[ObjectId([3; 32]), ObjectId([4; 32])], 100)
            .unwrap();
        c.remember_snapshots(&[ObjectId([3; 32])], 200).unwrap();
        c.rebuild(&backend, &key, 4).unwrap();
        assert_eq!(
            c.seen_snapshots().unwrap(),
            [(ObjectId([3; 32]), 100), (ObjectId([4; 32]), 100)],
            "the first sighting stays, and a rebuild keeps them"
        );
    }
}
