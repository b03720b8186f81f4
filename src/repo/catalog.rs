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

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, IoContext, Result};
use crate::format::BlobKind;
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::index::{self, IndexedPack};
use crate::format::pack::PackEntry;

/// Bump when the tables change; an older catalog is then rebuilt.
pub const SCHEMA_VERSION: i64 = 5;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// For a delta blob, its base: a data blob, and where that is stored.
    pub base: Option<DeltaBase>,
}

/// Where a delta blob's base is stored (the base is always a plain data blob).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaBase {
    /// The base blob's id.
    pub id: BlobId,
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
    /// The base `id`, stored where `loc` says.
    pub fn at(id: BlobId, loc: &BlobLocation) -> Self {
        DeltaBase {
            id,
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
    base BLOB) WITHOUT ROWID;
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

/// (kind, id or pack id, offset, stored_len, raw_len, base id) of a blob row.
type BlobRow = (u8, Vec<u8>, u32, u32, u32, Option<Vec<u8>>);

fn blob_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
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
            (Some(v), Some(r)) if (v == "2" || v == "3" || v == "4") && r == repo_id => {
                let add_base = if v == "4" {
                    ""
                } else {
                    "ALTER TABLE blobs ADD COLUMN base BLOB;"
                };
                sql(
                    "upgrade",
                    conn.execute_batch(&format!(
                        "BEGIN; {add_base}
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

    /// Brings the catalog up to date with the repository's index objects.
    ///
    /// An index object that cannot be read or decoded is skipped, not fatal: one damaged object
    /// must not lock the operator out of every other snapshot (or out of `check`). Its blobs are
    /// then unknown: a backup stores them again, a restore that needs them fails naming the
    /// blob. The returned list names each skipped object and why; it is retried next time.
    pub fn sync(&mut self, backend: &dyn Backend, key: &MasterKey) -> Result<Vec<String>> {
        let listed: HashSet<String> = backend
            .list(ObjectKind::Index)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let known: HashSet<String> = {
            let mut st = sql("list", self.conn.prepare("SELECT name FROM index_objects"))?;
            let rows = sql("list", st.query_map([], |r| r.get::<_, String>(0)))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| Error::catalog("list", e))?
        };
        if !known.is_subset(&listed) {
            self.clear()?;
            return self.sync(backend, key);
        }
        let mut skipped = Vec::new();
        for name in listed.difference(&known) {
            let decoded = ObjectId::from_hex(name)
                .and_then(|id| index::decode(key, &id, &backend.get(ObjectKind::Index, name)?));
            match decoded {
                Ok(packs) => self.add_index(name, &packs)?,
                Err(e) => skipped.push(format!("{e} (index object {name} skipped)")),
            }
        }
        skipped.sort();
        Ok(skipped)
    }

    /// Forgets every index object and syncs from scratch. The verification ledger, the absent
    /// packs and the snapshots seen are kept: they record facts about the repository, not about
    /// index objects.
    pub fn rebuild(&mut self, backend: &dyn Backend, key: &MasterKey) -> Result<Vec<String>> {
        self.clear()?;
        self.sync(backend, key)
    }

    fn clear(&mut self) -> Result<()> {
        sql(
            "clear",
            // An absent pack stays recorded, but counts as named only by the index objects the
            // next sync loads again.
            self.conn.execute_batch(
                "DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_objects;
                 DELETE FROM absent_blobs; UPDATE absent_packs SET named = 0;",
            ),
        )
    }

    /// Records an index object's packs and blobs in one transaction.
    pub fn add_index(&mut self, name: &str, packs: &[IndexedPack]) -> Result<()> {
        let tx = sql("begin", self.conn.transaction())?;
        {
            let mut ins_pack = sql(
                "prepare",
                tx.prepare_cached("INSERT OR IGNORE INTO packs (id, size) VALUES (?1, ?2)"),
            )?;
            let mut pack_row = sql(
                "prepare",
                tx.prepare_cached("SELECT rowid FROM packs WHERE id = ?1"),
            )?;
            // A blob stored twice (two backups at once) keeps one row, chosen by what the
            // copies are, never by the order index objects load in: a whole copy over a delta
            // (it needs no base), among deltas the one with the smallest base id. Prune keeps
            // the bases of the rows it sees; a later catalog must use the same copies.
            let mut ins_blob = sql(
                "prepare",
                tx.prepare_cached(
                    "INSERT INTO blobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, pack = excluded.pack,
                         offset = excluded.offset, stored_len = excluded.stored_len,
                         raw_len = excluded.raw_len, base = excluded.base
                     WHERE blobs.kind = 2 AND (excluded.kind != 2 OR excluded.base < blobs.base)",
                ),
            )?;
            let mut absent = sql(
                "prepare",
                tx.prepare_cached("UPDATE absent_packs SET named = 1 WHERE id = ?1"),
            )?;
            let mut absent_blob = sql(
                "prepare",
                tx.prepare_cached("INSERT OR IGNORE INTO absent_blobs VALUES (?1, ?2)"),
            )?;
            // Entries of packs the storage does not hold never reach the catalog.
            let mut present = Vec::with_capacity(packs.len());
            let mut rows = Vec::with_capacity(packs.len());
            for p in packs {
                if sql("absent pack", absent.execute([&p.id.0[..]]))? > 0 {
                    // Remembered only to name the lost pack when such a blob is asked for.
                    for e in &p.entries {
                        sql(
                            "absent blob",
                            absent_blob.execute(params![&e.id.0[..], &p.id.0[..]]),
                        )?;
                    }
                    continue;
                }
                sql(
                    "insert pack",
                    ins_pack.execute(params![&p.id.0[..], p.size as i64]),
                )?;
                let row: i64 = sql("pack row", pack_row.query_row([&p.id.0[..]], |r| r.get(0)))?;
                rows.push(row);
                present.push(p);
            }
            // Inserting in id order touches each B-tree page once per transaction.
            let mut all: Vec<(&PackEntry, i64)> = present
                .iter()
                .zip(&rows)
                .flat_map(|(p, row)| p.entries.iter().map(move |e| (e, *row)))
                .collect();
            all.sort_by_key(|a| a.0.id);
            {
                for (e, row) in all {
                    sql(
                        "insert blob",
                        ins_blob.execute(params![
                            &e.id.0[..],
                            e.kind as u8,
                            row,
                            e.offset,
                            e.stored_len,
                            e.raw_len,
                            e.base.as_ref().map(|b| &b.0[..])
                        ]),
                    )?;
                }
            }
            sql(
                "insert index",
                tx.execute("INSERT OR IGNORE INTO index_objects VALUES (?1)", [name]),
            )?;
        }
        sql("commit", tx.commit())
    }

    /// Takes a complete listing of the packs the storage holds, made after this catalog was
    /// last synced (so every pack an absorbed index object names was durable before the
    /// listing began): indexed packs it lacks are recorded absent, recorded ones it shows are
    /// taken back, and if either happened the catalog is rebuilt from the index objects without
    /// the entries of absent packs.
    pub fn observe_packs(
        &mut self,
        stored: &HashSet<ObjectId>,
        backend: &dyn Backend,
        key: &MasterKey,
    ) -> Result<PackObservation> {
        let mut out = PackObservation::default();
        for p in self.packs()? {
            if !stored.contains(&p.id) {
                out.newly_absent.push(p.id);
            }
        }
        let mut rebuild = !out.newly_absent.is_empty();
        {
            let mut st = sql(
                "prepare",
                self.conn.prepare("SELECT id, named FROM absent_packs"),
            )?;
            let rows = sql(
                "absent packs",
                st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))),
            )?;
            for row in rows {
                let (id, named) = sql("absent packs", row)?;
                let id = ObjectId::from_slice(&id)?;
                if stored.contains(&id) {
                    out.returned.push(id);
                    // Its entries come back only with a rebuild.
                    rebuild |= named != 0;
                }
            }
        }
        if !out.newly_absent.is_empty() || !out.returned.is_empty() {
            let tx = sql("begin", self.conn.transaction())?;
            {
                let mut add = sql(
                    "prepare",
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO absent_packs (id, named) VALUES (?1, 1)",
                    ),
                )?;
                for id in &out.newly_absent {
                    sql("absent pack", add.execute([&id.0[..]]))?;
                }
                let mut del = sql(
                    "prepare",
                    tx.prepare_cached("DELETE FROM absent_packs WHERE id = ?1"),
                )?;
                for id in &out.returned {
                    sql("absent pack", del.execute([&id.0[..]]))?;
                }
            }
            sql("commit", tx.commit())?;
            if rebuild {
                out.warnings = self.rebuild(backend, key)?;
            }
        }
        out.absent = self.absent_packs()?;
        Ok(out)
    }

    /// A pack the storage lost that index objects say holds `id` (for messages: such blobs
    /// are not in the catalog).
    pub fn lost_pack_of(&self, id: &BlobId) -> Result<Option<ObjectId>> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare_cached("SELECT pack FROM absent_blobs WHERE id = ?1 LIMIT 1"),
        )?;
        let pack: Option<Vec<u8>> =
            sql("lookup", st.query_row([&id.0[..]], |r| r.get(0)).optional())?;
        pack.map(|p| ObjectId::from_slice(&p)).transpose()
    }

    /// The error for a blob the catalog does not place: the missing pack that held it, if an
    /// index object names one, else "not in any index object". `role` says what it is needed
    /// as (e.g. " (the base of delta blob …)").
    pub fn missing_blob(&self, id: &BlobId, role: &str) -> Error {
        match self.lost_pack_of(id) {
            Ok(Some(pack)) => Error::Missing {
                object: format!(
                    "pack {} (it holds blob {}{role}; an index object lists the pack, but the storage does not have it)",
                    pack.to_hex(),
                    id.to_hex()
                ),
            },
            _ => Error::Missing {
                object: format!("blob {}{role} (not in any index object)", id.to_hex()),
            },
        }
    }

    /// Packs recorded absent that some absorbed index object names: missing from the last
    /// listing of packs.
    pub fn absent_packs(&self) -> Result<Vec<ObjectId>> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare("SELECT id FROM absent_packs WHERE named = 1 ORDER BY id"),
        )?;
        let rows = sql("absent packs", st.query_map([], |r| r.get::<_, Vec<u8>>(0)))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(ObjectId::from_slice(&sql("absent packs", row)?)?);
        }
        Ok(out)
    }

    /// Remembers that these snapshots existed at `at` (unix seconds); the first sighting stays.
    pub fn remember_snapshots(&self, ids: &[ObjectId], at: i64) -> Result<()> {
        let tx = sql("begin", self.conn.unchecked_transaction())?;
        {
            let mut st = sql(
                "prepare",
                tx.prepare_cached("INSERT OR IGNORE INTO seen_snapshots VALUES (?1, ?2)"),
            )?;
            for id in ids {
                sql("seen snapshot", st.execute(params![&id.0[..], at]))?;
            }
        }
        sql("commit", tx.commit())
    }

    /// Every snapshot this machine has seen in the repository, with when it first saw it.
    pub fn seen_snapshots(&self) -> Result<Vec<(ObjectId, i64)>> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare("SELECT id, at FROM seen_snapshots ORDER BY at, id"),
        )?;
        let rows = sql(
            "seen snapshots",
            st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at) = sql("seen snapshots", row)?;
            out.push((ObjectId::from_slice(&id)?, at));
        }
        Ok(out)
    }

    /// Whether the repository has this blob.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1"),
        )?;
        sql("lookup", st.exists([&id.0[..]]))
    }

    /// Where a blob is stored; for a delta blob, also where its base is. A delta whose base is
    /// not indexed is reported as damage (a prune keeps bases alive, so it means a lost pack).
    pub fn locate(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let Some((mut loc, base_id)) = self.blob_row(id)? else {
            return Ok(None);
        };
        if let Some(base_id) = base_id {
            let what = || format!("delta blob {}", id.to_hex());
            let base = match self.blob_row(&base_id)? {
                Some((b, _)) if b.kind == BlobKind::Data => b,
                Some(_) => {
                    return Err(Error::corrupt(
                        what(),
                        format!("its base {} is not a data blob", base_id.to_hex()),
                    ));
                }
                None if self.lost_pack_of(&base_id)?.is_some() => {
                    return Err(self.missing_blob(
                        &base_id,
                        &format!(", the base of delta blob {}", id.to_hex()),
                    ));
                }
                None => {
                    return Err(Error::corrupt(
                        what(),
                        format!("its base blob {} is not in the index", base_id.to_hex()),
                    ));
                }
            };
            loc.base = Some(DeltaBase::at(base_id, &base));
        }
        Ok(Some(loc))
    }

    /// Delta blobs whose base is not indexed or is not a data blob: (delta, base, problem).
    pub fn broken_deltas(&self) -> Result<Vec<(BlobId, BlobId, String)>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare(
                "SELECT b.id, b.base, bb.kind FROM blobs b LEFT JOIN blobs bb ON bb.id = b.base
                 WHERE b.kind = 2 AND (bb.id IS NULL OR bb.kind != 0)",
            ),
        )?;
        let rows = sql(
            "broken deltas",
            st.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, Option<u8>>(2)?,
                ))
            }),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, base, kind) = sql("broken deltas", row)?;
            let base = BlobId::from_slice(&base.unwrap_or_default()).unwrap_or(BlobId([0; 32]));
            let problem = match kind {
                None => format!("its delta base {} is not in any index", base.to_hex()),
                Some(_) => format!("its delta base {} is not a data blob", base.to_hex()),
            };
            out.push((BlobId::from_slice(&id)?, base, problem));
        }
        Ok(out)
    }

    /// The base of a blob stored as a delta; `None` for any other blob or an unknown id.
    pub fn delta_base(&self, id: &BlobId) -> Result<Option<BlobId>> {
        Ok(self.blob_row(id)?.and_then(|(_, base)| base))
    }

    /// A blob's own row (its base left unresolved) and its base's id.
    pub fn blob_row(&self, id: &BlobId) -> Result<Option<(BlobLocation, Option<BlobId>)>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare_cached(
                "SELECT b.kind, p.id, b.offset, b.stored_len, b.raw_len, b.base FROM blobs b
                 JOIN packs p ON p.rowid = b.pack WHERE b.id = ?1",
            ),
        )?;
        let row = sql("lookup", st.query_row([&id.0[..]], blob_row).optional())?;
        let Some((k, pack, offset, stored_len, raw_len, base)) = row else {
            return Ok(None);
        };
        let kind = blob_kind(k)?;
        let loc = BlobLocation {
            kind,
            pack: ObjectId::from_slice(&pack)?,
            offset,
            stored_len,
            raw_len,
            base: None,
        };
        Ok(Some((loc, base_id(kind, base)?)))
    }

    /// Whether a pack is indexed.
    pub fn has_pack(&self, id: &ObjectId) -> Result<bool> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare_cached("SELECT 1 FROM packs WHERE id = ?1"),
        )?;
        sql("lookup", st.exists([&id.0[..]]))
    }

    /// Every indexed pack, least recently verified first (never-verified first of all), then by
    /// name, so the order is deterministic.
    pub fn packs(&self) -> Result<Vec<PackRecord>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare(
                "SELECT p.id, p.size, v.at FROM packs p LEFT JOIN verified v ON v.pack = p.id
                 ORDER BY v.at IS NOT NULL, v.at, p.id",
            ),
        )?;
        let rows = sql(
            "list packs",
            st.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            }),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, size, verified_at) = sql("list packs", row)?;
            out.push(PackRecord {
                id: ObjectId::from_slice(&id)?,
                size: size as u64,
                verified_at,
            });
        }
        Ok(out)
    }

    /// The blobs the catalog places in a pack, by offset.
    pub fn pack_entries(&self, pack: &ObjectId) -> Result<Vec<PackEntry>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare_cached(
                "SELECT b.kind, b.id, b.offset, b.stored_len, b.raw_len, b.base FROM blobs b
                 JOIN packs p ON p.rowid = b.pack WHERE p.id = ?1 ORDER BY b.offset",
            ),
        )?;
        let rows = sql("pack entries", st.query_map([&pack.0[..]], blob_row))?;
        let mut out = Vec::new();
        for row in rows {
            let (k, id, offset, stored_len, raw_len, base) = sql("pack entries", row)?;
            let kind = blob_kind(k)?;
            out.push(PackEntry {
                kind,
                id: BlobId::from_slice(&id)?,
                offset,
                stored_len,
                raw_len,
                base: base_id(kind, base)?,
            });
        }
        Ok(out)
    }

    /// Records in the verification ledger that these packs read clean at `at` (unix seconds).
    pub fn mark_verified(&mut self, packs: &[ObjectId], at: i64) -> Result<()> {
        let tx = sql("begin", self.conn.transaction())?;
        {
            let mut st = sql(
                "prepare",
                tx.prepare_cached("INSERT OR REPLACE INTO verified (pack, at) VALUES (?1, ?2)"),
            )?;
            for p in packs {
                sql("ledger", st.execute(params![&p.0[..], at]))?;
            }
        }
        sql("commit", tx.commit())
    }

    /// Totals over every indexed blob.
    pub fn blob_totals(&self) -> Result<BlobTotals> {
        let mut st = sql(
            "prepare",
            self.conn.prepare(
                "SELECT kind, count(*), coalesce(sum(raw_len), 0), coalesce(sum(stored_len), 0)
                 FROM blobs GROUP BY kind",
            ),
        )?;
        let rows = sql(
            "totals",
            st.query_map([], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            }),
        )?;
        let mut t = BlobTotals::default();
        for row in rows {
            let (kind, n, raw, stored) = sql("totals", row)?;
            if kind == BlobKind::Tree as u8 {
                t.tree_blobs += n as u64;
            } else {
                t.data_blobs += n as u64;
            }
            t.raw += raw as u64;
            t.stored += stored as u64;
        }
        Ok(t)
    }

    /// Number of blobs and packs known.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let b = sql(
            "count",
            self.conn
                .query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0)),
        )?;
        let p = sql(
            "count",
            self.conn
                .query_row("SELECT count(*) FROM packs", [], |r| r.get::<_, i64>(0)),
        )?;
        Ok((b as u64, p as u64))
    }
}

/// A set of blob ids kept in a private temporary SQLite file, so that walks over every tree of
/// a repository (check, repair) keep memory flat however many trees there are.
pub struct DiskBlobSet {
    conn: Connection,
}

impl DiskBlobSet {
    /// An empty set, deleted when dropped.
    pub fn new() -> Result<DiskBlobSet> {
        // An empty path gives a private on-disk database removed on close.
        let conn = sql("temp set", Connection::open(""))?;
        sql(
            "temp set",
            conn.execute_batch("CREATE TABLE s (id BLOB PRIMARY KEY) WITHOUT ROWID"),
        )?;
        Ok(DiskBlobSet { conn })
    }

    /// Adds `id`; true if it was not there before.
    pub fn insert(&self, id: &BlobId) -> Result<bool> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare_cached("INSERT OR IGNORE INTO s VALUES (?1)"),
        )?;
        Ok(sql("temp set", st.execute([&id.0[..]]))? == 1)
    }

    /// How many ids the set holds.
    pub fn len(&self) -> Result<u64> {
        let n: i64 = sql(
            "temp set",
            self.conn
                .query_row("SELECT count(*) FROM s", [], |r| r.get(0)),
        )?;
        Ok(n as u64)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let mut st = sql(
            "prepare",
            self.conn.prepare_cached("SELECT 1 FROM s WHERE id = ?1"),
        )?;
        sql("temp set", st.exists([&id.0[..]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;
    use crate::format::BlobKind;

    fn entry(b: u8) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId([b; 32]),
            offset: 0,
            stored_len: 10,
            raw_len: 20,
            base: None,
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
        c.sync(&backend, &key).unwrap();
        assert_eq!(c.counts().unwrap(), (2, 2));
        let loc = c.locate(&BlobId([20; 32])).unwrap().unwrap();
        assert_eq!((loc.pack, loc.raw_len), (ObjectId([2; 32]), 20));

        // An index object that disappeared (a prune) makes the catalog rebuild: its blob goes.
        backend.delete(ObjectKind::Index, &first).unwrap();
        c.sync(&backend, &key).unwrap();
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
        conn.execute("INSERT INTO blobs VALUES (x'00', 0, 1, 0, 0, 0, NULL)", [])
            .unwrap();
        drop(conn);
        let mut c = Catalog::open(t.path(), "repo-a").unwrap();
        assert_eq!(c.counts().unwrap(), (0, 0), "old catalog must be discarded");
        c.sync(&backend, &key).unwrap();
        assert_eq!(c.counts().unwrap(), (1, 1));

        // A damaged index object is skipped and named, not fatal and not silent.
        let bad = put_index(&backend, &key, 3, 30);
        backend.tamper(ObjectKind::Index, &bad, |b| b[40] ^= 1);
        let skipped = c.sync(&backend, &key).unwrap();
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
        c.sync(&backend, &key).unwrap();
        let order =
            |c: &Catalog| -> Vec<u8> { c.packs().unwrap().iter().map(|p| p.id.0[0]).collect() };
        assert_eq!(order(&c), [1, 2, 3]);
        c.mark_verified(&[ObjectId([1; 32])], 500).unwrap();
        c.mark_verified(&[ObjectId([3; 32])], 100).unwrap();
        // Never verified first, then the oldest verification.
        assert_eq!(order(&c), [2, 3, 1]);
        c.rebuild(&backend, &key).unwrap();
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
        // delta 10 (bases are never deltas).
        put(
            1,
            vec![
                blob(BlobKind::Delta, 10, 0, Some(20)),
                blob(BlobKind::Delta, 11, 10, Some(12)),
                blob(BlobKind::Tree, 12, 20, None),
                blob(BlobKind::Delta, 13, 30, Some(10)),
            ],
        );
        let mut c = Catalog::open(t.path(), "repo-d").unwrap();
        c.sync(&backend, &key).unwrap();
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
                (
                    11,
                    12,
                    format!("its delta base {} is not a data blob", hex(12))
                ),
                (
                    13,
                    10,
                    format!("its delta base {} is not a data blob", hex(10))
                ),
            ]
        );
        for (d, b) in [(10, 20), (11, 12), (13, 10)] {
            let err = c.locate(&BlobId([d; 32])).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&hex(b)), "{err}");
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
        c.sync(&backend, &key).unwrap();
        assert_eq!(broken(&c).iter().map(|b| b.0).collect::<Vec<_>>(), [11, 13]);
        let loc = c.locate(&BlobId([10; 32])).unwrap().unwrap();
        assert_eq!(
            (loc.kind, loc.pack, loc.offset),
            (BlobKind::Delta, ObjectId([1; 32]), 0)
        );
        assert_eq!(
            loc.base,
            Some(DeltaBase {
                id: BlobId([20; 32]),
                pack: ObjectId([2; 32]),
                offset: 40,
                stored_len: 10,
                raw_len: 20,
            })
        );
        assert_eq!(c.locate(&BlobId([20; 32])).unwrap().unwrap().base, None);
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
            c.sync(&backend, &key).unwrap();
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
            }],
        };
        let delta20 = copy(BlobKind::Delta, 1, Some(20));
        let whole = copy(BlobKind::Data, 2, None);
        let delta5 = copy(BlobKind::Delta, 3, Some(5));
        let orders: [&[&IndexedPack]; 6] = [
            &[&delta20, &whole],
            &[&whole, &delta20],
            &[&delta20, &delta5],
            &[&delta5, &delta20],
            &[&delta20, &delta5, &whole],
            &[&delta5, &whole, &delta20],
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
        assert_eq!(
            chosen,
            [
                whole_copy,
                whole_copy,
                smaller_base,
                smaller_base,
                whole_copy,
                whole_copy
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
        c.sync(&backend, &key).unwrap();
        assert!(c.contains(&BlobId([20; 32])).unwrap());
        let only_1: HashSet<ObjectId> = [ObjectId([1; 32])].into();
        let seen = c.observe_packs(&only_1, &backend, &key).unwrap();
        assert_eq!(seen.newly_absent, [ObjectId([2; 32])]);
        assert_eq!(seen.absent, [ObjectId([2; 32])]);
        assert!(!c.contains(&BlobId([20; 32])).unwrap());
        assert!(c.locate(&BlobId([20; 32])).unwrap().is_none());
        assert!(c.contains(&BlobId([10; 32])).unwrap());
        // Another index object naming the absent pack: still nothing.
        put_index(&backend, &key, 2, 21);
        c.sync(&backend, &key).unwrap();
        assert!(!c.contains(&BlobId([21; 32])).unwrap());
        // The same listing again changes nothing; the pack's return brings its entries back.
        assert!(
            c.observe_packs(&only_1, &backend, &key)
                .unwrap()
                .newly_absent
                .is_empty()
        );
        let both: HashSet<ObjectId> = [ObjectId([1; 32]), ObjectId([2; 32])].into();
        let seen = c.observe_packs(&both, &backend, &key).unwrap();
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
        c.rebuild(&backend, &key).unwrap();
        assert_eq!(
            c.seen_snapshots().unwrap(),
            [(ObjectId([3; 32]), 100), (ObjectId([4; 32]), 100)],
            "the first sighting stays, and a rebuild keeps them"
        );
    }
}
