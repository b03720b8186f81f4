//! Databases as sources: PostgreSQL, MariaDB/MySQL and SQLite, dumped by engines that know them, restored into
//! a database, and drilled (restored into a scratch database and counted).
//!
//! Every engine has the same shape:
//!
//! - **list** the databases of a server ([`postgres::PgConn::list_databases`]);
//! - **dump** one as a stream ([`start_dump`] → [`Dump`]): a child process whose standard
//!   output is the stream (PostgreSQL) or a consistent copy made first (SQLite's online backup
//!   API); standard error is captured, and a non-zero exit or a kill fails the source with
//!   what the tool said ([`Dump::finish`]);
//! - **record** what was dumped: server version, dumper and options, and with `--count-rows`
//!   the exact row count of every table, taken in the dump's own snapshot (PostgreSQL:
//!   `pg_export_snapshot()` in a held transaction and `pg_dump --snapshot`; SQLite: the copy)
//!   ([`crate::format::snapshot::DatabaseRecord`]);
//! - **restore** from a [`Feed`] (the repository stream, written into the loader's standard
//!   input, no temporary file for plain dumps) with stop-at-the-first-error semantics.
//!
//! This module runs tools and talks to servers; it never reads the repository. The source walk
//! ([`crate::source`]) stores a [`Dump`]'s output as a file; the CLI hands restores and drills
//! a feed built on [`crate::restore::restore_to_writer`].
//!
//! # Layout
//!
//! - `postgres.rs`: `psql`, `pg_dump`, `pg_dumpall`, `pg_restore`, `createdb`-like SQL.
//! - `mariadb.rs`: `mariadb`/`mysql`, `mariadb-dump`/`mysqldump`.
//! - `sqlite.rs`: rusqlite's online backup, integrity check and counts.
//! - [`drill`]: a restore into a scratch database, compared with the recorded counts.
//! - `process.rs`: starting tools and capturing what they say.

#![forbid(unsafe_code)]

pub mod drill;
pub mod mariadb;
pub mod postgres;
mod process;
pub mod sqlite;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::error::Result;
use crate::format::snapshot::DatabaseRecord;

pub use mariadb::MyConn;
pub use postgres::{PgConn, PgFormat};
pub use process::Container;

/// Writes the stored dump into the writer it is given (the loader's standard input, a file);
/// returns the bytes written.
pub type Feed<'a> = dyn FnMut(&mut (dyn Write + Send)) -> Result<u64> + 'a;

/// Rows per table.
pub type Counts = BTreeMap<String, u64>;

/// A database source of a backup: what to dump and where the dump is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbSource {
    /// The stored path in the snapshot (`postgres/local/shop.sql`, `sqlite/srv/app.db`).
    pub path: String,
    /// What to dump.
    pub kind: DbKind,
}

/// What a database source dumps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// One PostgreSQL database through `pg_dump`.
    Postgres {
        /// The server.
        conn: PgConn,
        /// The database.
        database: String,
        /// Plain SQL or pg_dump's custom archive.
        format: PgFormat,
        /// More `pg_dump` options, as given.
        extra: Vec<String>,
        /// Count every table's rows in the dump's snapshot.
        count_rows: bool,
    },
    /// The roles and tablespaces of a PostgreSQL server (`pg_dumpall --globals-only`).
    PostgresGlobals {
        /// The server.
        conn: PgConn,
    },
    /// One MariaDB or MySQL database through `mariadb-dump` (or `mysqldump`).
    Mariadb {
        /// The server.
        conn: MyConn,
        /// The database.
        database: String,
        /// More dumper options, after the defaults.
        extra: Vec<String>,
        /// Count every table's rows (in a consistent snapshot just before the dump).
        count_rows: bool,
    },
    /// An SQLite database file, copied with the online backup API.
    Sqlite {
        /// The database file (absolute).
        path: PathBuf,
        /// Count every table's rows in the copy.
        count_rows: bool,
    },
}

impl DbSource {
    /// The record as known before the dump runs (the dump completes it).
    pub fn record(&self) -> DatabaseRecord {
        let (engine, database, host, format, options) = match &self.kind {
            DbKind::Postgres {
                conn,
                database,
                format,
                extra,
                ..
            } => (
                "postgres",
                database.clone(),
                Some(conn.host_label()),
                format.name(),
                postgres::dump_options(*format, extra),
            ),
            DbKind::PostgresGlobals { conn } => (
                "postgres",
                String::new(),
                Some(conn.host_label()),
                "globals",
                vec!["--globals-only".to_string()],
            ),
            DbKind::Mariadb {
                conn,
                database,
                extra,
                ..
            } => (
                "mariadb",
                database.clone(),
                Some(conn.host_label()),
                "plain",
                mariadb::dump_options(extra),
            ),
            DbKind::Sqlite { path, .. } => (
                "sqlite",
                path.display().to_string(),
                None,
                "sqlite",
                Vec::new(),
            ),
        };
        DatabaseRecord {
            engine: engine.into(),
            name: self.path.clone(),
            database,
            host,
            format: format.into(),
            server_version: String::new(),
            dumper: String::new(),
            options,
            tables: None,
        }
    }
}

/// A dump under way: read [`Dump::take_output`] to its end, then [`Dump::finish`] (or
/// [`Dump::abort`] when the backup stops early).
pub struct Dump {
    output: Option<Box<dyn Read + Send>>,
    pid: Option<u32>,
    run: Running,
}

enum Running {
    Postgres(Box<postgres::PgDump>),
    Mariadb(Box<mariadb::MyDump>),
    Sqlite(Box<DatabaseRecord>),
}

/// A finished dump: its record, and what the dumper printed although it succeeded.
pub struct Dumped {
    /// The completed record.
    pub record: DatabaseRecord,
    /// Lines the dumper wrote to standard error (warnings) although it exited 0.
    pub warnings: Vec<String>,
}

impl Dump {
    /// The stream to store (once).
    pub fn take_output(&mut self) -> Option<Box<dyn Read + Send>> {
        self.output.take()
    }

    /// The process group of the dumper, to end it when the backup stops early.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Waits for the dumper after its output ended; fails when it did not exit 0 or when the
    /// row counts could not be taken.
    pub fn finish(self) -> Result<Dumped> {
        drop(self.output);
        match self.run {
            Running::Postgres(p) => p.finish(),
            Running::Mariadb(m) => m.finish(),
            Running::Sqlite(record) => Ok(Dumped {
                record: *record,
                warnings: Vec::new(),
            }),
        }
    }

    /// Ends the dumper and whatever it holds (a backup that stops early).
    pub fn abort(self) {
        drop(self.output);
        match self.run {
            Running::Postgres(p) => p.abort(),
            Running::Mariadb(m) => m.abort(),
            Running::Sqlite(_) => {}
        }
    }
}

/// Starts dumping `src`.
pub fn start_dump(src: &DbSource) -> Result<Dump> {
    let mut record = src.record();
    match &src.kind {
        DbKind::Postgres {
            conn,
            database,
            format,
            extra,
            count_rows,
        } => {
            let (p, out, pid) =
                postgres::start_dump(conn, database, *format, extra, *count_rows, record)?;
            Ok(Dump {
                output: Some(out),
                pid: Some(pid),
                run: Running::Postgres(Box::new(p)),
            })
        }
        DbKind::PostgresGlobals { conn } => {
            let (p, out, pid) = postgres::start_globals(conn, record)?;
            Ok(Dump {
                output: Some(out),
                pid: Some(pid),
                run: Running::Postgres(Box::new(p)),
            })
        }
        DbKind::Mariadb {
            conn,
            database,
            extra,
            count_rows,
        } => {
            let (m, out, pid) = mariadb::start_dump(conn, database, extra, *count_rows, record)?;
            Ok(Dump {
                output: Some(out),
                pid: Some(pid),
                run: Running::Mariadb(Box::new(m)),
            })
        }
        DbKind::Sqlite { path, count_rows } => {
            let (file, tables) = sqlite::copy(path, *count_rows, &src.path)?;
            record.server_version = sqlite::version();
            record.dumper = "sqlite3_backup (online backup API)".into();
            record.tables = tables;
            Ok(Dump {
                output: Some(Box::new(file)),
                pid: None,
                run: Running::Sqlite(Box::new(record)),
            })
        }
    }
}

/// What to do with a target database that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetMode {
    /// Load only into an existing, empty database.
    Existing,
    /// Create the database when missing; an existing one must be empty.
    Create,
    /// Drop the database when it exists, then create it.
    DropExisting,
}

/// A restore that finished.
#[derive(Clone, Debug, PartialEq)]
pub struct Restored {
    /// Bytes of dump fed to the loader.
    pub bytes: u64,
    /// Seconds from the start to the loader's exit.
    pub seconds: f64,
}

/// A name safe as a component of a stored path: `/` and `%` percent-encoded, a leading `.`
/// too (so `.` and `..` cannot appear).
pub fn path_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Twelve random hex digits (from the clock when the system has no randomness to give), for
/// names of scratch databases and temporary files.
pub fn unique_suffix() -> String {
    let mut b = [0u8; 6];
    if crate::format::crypto::random_bytes(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        b.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    hex::encode(b)
}

/// The recorded counts compared with the restored ones: `(table, recorded, restored)` for
/// every table whose counts differ (a table missing on one side counts as `None`).
pub fn count_mismatches(
    recorded: &Counts,
    restored: &Counts,
) -> Vec<(String, Option<u64>, Option<u64>)> {
    let mut out = Vec::new();
    for (t, n) in recorded {
        match restored.get(t) {
            Some(m) if m == n => {}
            m => out.push((t.clone(), Some(*n), m.copied())),
        }
    }
    for (t, m) in restored {
        if !recorded.contains_key(t) {
            out.push((t.clone(), None, Some(*m)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_cannot_climb_or_nest() {
        assert_eq!(path_component("shop"), "shop");
        assert_eq!(path_component("a/b"), "a%2Fb");
        assert_eq!(path_component(".."), "%2E.");
        assert_eq!(path_component("50%"), "50%25");
        assert_eq!(path_component(""), "%00");
    }

    #[test]
    fn mismatches_name_missing_extra_and_different_tables() {
        let rec: Counts = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        let got: Counts = [("a".to_string(), 1), ("c".to_string(), 3)].into();
        assert_eq!(
            count_mismatches(&rec, &got),
            vec![("b".into(), Some(2), None), ("c".into(), None, Some(3))]
        );
        assert!(count_mismatches(&rec, &rec).is_empty());
    }
}
