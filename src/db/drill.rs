//! Restore drills: a database source restored into a scratch database with a unique name
//! (`tresor_drill_<db>_<random>`; SQLite: a temporary file), checked (it loaded without error;
//! SQLite: `PRAGMA integrity_check`), its row counts compared with those recorded at backup
//! time, and removed again — after a failure too, and on Ctrl-C (the restore stops at its next
//! safe point, the loader is ended, then the scratch database is dropped).

#![forbid(unsafe_code)]

use serde::Serialize;

use crate::db::{
    MyConn, PgConn, TargetMode, count_mismatches, mariadb, postgres, sqlite, unique_suffix,
};
use crate::error::{Error, Result};
use crate::format::snapshot::DatabaseRecord;

use super::Feed;

/// One table whose restored row count differs from the recorded one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// `schema.table` (PostgreSQL) or the table's name (SQLite).
    pub table: String,
    /// Rows at backup time; `None`: the table was not there.
    pub recorded: Option<u64>,
    /// Rows restored; `None`: the table is missing from the restored copy.
    pub restored: Option<u64>,
}

/// The result of drilling one source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The stored path of the dump.
    pub source: String,
    /// `postgres`, `mariadb` or `sqlite`.
    pub engine: String,
    /// The scratch database (or file) it was restored into.
    pub scratch: String,
    /// `ok`, `mismatch` (row counts differ), `failed` (did not load or check) or `skipped`.
    pub result: String,
    /// Seconds to restore: the recovery time a user will get from this dump.
    pub restore_seconds: f64,
    /// Bytes of dump loaded.
    pub bytes: u64,
    /// Tables whose counts were compared (0 when none were recorded).
    pub tables_checked: usize,
    /// Whether row counts were recorded at backup time.
    pub counts_recorded: bool,
    /// Tables whose counts differ.
    pub mismatches: Vec<Mismatch>,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    fn new(rec: &DatabaseRecord, scratch: String) -> Outcome {
        Outcome {
            source: rec.name.clone(),
            engine: rec.engine.clone(),
            scratch,
            result: "ok".into(),
            restore_seconds: 0.0,
            bytes: 0,
            tables_checked: 0,
            counts_recorded: rec.tables.is_some(),
            mismatches: Vec::new(),
            error: None,
        }
    }

    /// Whether the drill passed (or had nothing to do).
    pub fn passed(&self) -> bool {
        self.result == "ok" || self.result == "skipped"
    }

    fn fail(&mut self, e: &Error) {
        self.result = "failed".into();
        self.error = Some(e.to_string());
    }

    fn compare(&mut self, rec: &DatabaseRecord, restored: &crate::db::Counts) {
        if let Some(recorded) = &rec.tables {
            self.tables_checked = recorded.len().max(restored.len());
            self.mismatches = count_mismatches(recorded, restored)
                .into_iter()
                .map(|(table, recorded, restored)| Mismatch {
                    table,
                    recorded,
                    restored,
                })
                .collect();
            if !self.mismatches.is_empty() {
                self.result = "mismatch".into();
            }
        }
    }
}

/// A server that holds scratch databases.
trait Server {
    fn drop_database(&self, name: &str) -> Result<()>;
}

impl Server for PgConn {
    fn drop_database(&self, name: &str) -> Result<()> {
        PgConn::drop_database(self, name)
    }
}

impl Server for MyConn {
    fn drop_database(&self, name: &str) -> Result<()> {
        MyConn::drop_database(self, name)
    }
}

/// A scratch database that is dropped when this goes out of scope, however that happens.
struct Scratch<'c> {
    conn: &'c dyn Server,
    name: String,
    created: bool,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.created
            && let Err(e) = self.conn.drop_database(&self.name)
        {
            eprintln!(
                "tresor: warning: could not drop scratch database {}: {e}",
                self.name
            );
        }
    }
}

/// The scratch database's name for a drill of `database`: lower-case letters, digits and
/// `_`, at most 63 bytes (PostgreSQL's limit).
pub fn scratch_name(database: &str) -> String {
    let base: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    format!("tresor_drill_{base}_{}", unique_suffix())
}

/// Drills one PostgreSQL source against `conn`. `Err` only when interrupted (after the scratch
/// database was dropped); every other failure is in the outcome.
pub fn postgres(conn: &PgConn, rec: &DatabaseRecord, feed: &mut Feed<'_>) -> Result<Outcome> {
    if rec.format == "globals" {
        let mut o = Outcome::new(rec, String::new());
        o.result = "skipped".into();
        o.error = Some("globals are restored with `db restore`, not drilled".into());
        return Ok(o);
    }
    let mut scratch = Scratch {
        conn,
        name: scratch_name(&rec.database),
        created: false,
    };
    let mut o = Outcome::new(rec, scratch.name.clone());
    if let Err(e) = conn.create_database(&scratch.name) {
        o.fail(&e);
        return Ok(o);
    }
    scratch.created = true;
    match postgres::restore(conn, rec, &scratch.name, TargetMode::Existing, 1, feed) {
        Ok(r) => {
            o.restore_seconds = r.seconds;
            o.bytes = r.bytes;
        }
        Err(e @ Error::Interrupted { .. }) => return Err(e),
        Err(e) => {
            o.fail(&e);
            return Ok(o);
        }
    }
    crate::interrupt::check()?;
    match conn.count_rows(&scratch.name) {
        Ok(c) => o.compare(rec, &c),
        Err(e) => o.fail(&e),
    }
    Ok(o)
}

/// Drills one MariaDB source against `conn`, like [`postgres`] (the load is not one
/// transaction; the scratch database is dropped all the same).
pub fn mariadb(conn: &MyConn, rec: &DatabaseRecord, feed: &mut Feed<'_>) -> Result<Outcome> {
    let mut scratch = Scratch {
        conn,
        name: scratch_name(&rec.database),
        created: false,
    };
    let mut o = Outcome::new(rec, scratch.name.clone());
    if let Err(e) = conn.create_database(&scratch.name) {
        o.fail(&e);
        return Ok(o);
    }
    scratch.created = true;
    match mariadb::restore(conn, rec, &scratch.name, TargetMode::Existing, feed) {
        Ok(r) => {
            o.restore_seconds = r.seconds;
            o.bytes = r.bytes;
        }
        Err(e @ Error::Interrupted { .. }) => return Err(e),
        Err(e) => {
            o.fail(&e);
            return Ok(o);
        }
    }
    crate::interrupt::check()?;
    match conn.count_rows(&scratch.name, false) {
        Ok(c) => o.compare(rec, &c),
        Err(e) => o.fail(&e),
    }
    Ok(o)
}

/// Drills one SQLite source: restored into a temporary file, integrity-checked, counted,
/// removed.
pub fn sqlite(rec: &DatabaseRecord, feed: &mut Feed<'_>) -> Result<Outcome> {
    let mut o = Outcome::new(rec, "a temporary file".into());
    match sqlite::drill(rec, feed) {
        Ok((r, integrity, counts)) => {
            o.restore_seconds = r.seconds;
            o.bytes = r.bytes;
            if integrity != "ok" {
                o.result = "failed".into();
                o.error = Some(format!("PRAGMA integrity_check: {integrity}"));
            } else {
                o.compare(rec, &counts);
            }
        }
        Err(e @ Error::Interrupted { .. }) => return Err(e),
        Err(e) => o.fail(&e),
    }
    Ok(o)
}

/// Drills one database source of any engine: PostgreSQL against `pg`, MariaDB against `my`,
/// SQLite in a temporary file.
pub fn source(
    pg: &PgConn,
    my: &MyConn,
    rec: &DatabaseRecord,
    feed: &mut Feed<'_>,
) -> Result<Outcome> {
    match rec.engine.as_str() {
        "postgres" => postgres(pg, rec, feed),
        "mariadb" => mariadb(my, rec, feed),
        "sqlite" => sqlite(rec, feed),
        e => Err(Error::InvalidArgument(format!(
            "{}: engine {e:?} is not known to this version",
            rec.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_safe_unique_and_short() {
        let a = scratch_name("Shop-DB/ä with a very long name that goes on and on");
        let b = scratch_name("Shop-DB/ä with a very long name that goes on and on");
        assert_ne!(a, b);
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{a}"
        );
        assert!(a.starts_with("tresor_drill_shop_db_"), "{a}");
    }
}
