//! [`DiskBlobSet`]: a set of blob ids on disk, for walks over every tree of a repository.

use rusqlite::Connection;

use super::sql;
use crate::error::Result;
use crate::format::id::BlobId;

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
