//! SQLite: a consistent copy through the online backup API (never a raw copy of a file that
//! is being written), the rows of its tables, a restore that writes the file back, and the
//! integrity check of a drill.
//!
//! The copy is made in one backup step (every page while holding one read transaction, so no
//! writer can make it restart; a writer holding the lock at that moment makes it wait and try
//! again, up to [`BUSY_WAIT`]) into a temporary file in `$TMPDIR`, which is unlinked as soon as
//! it is open for reading: nothing is left behind, whatever happens next.

#![forbid(unsafe_code)]

use std::fs::File;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::db::process::failed;
use crate::db::{Counts, Feed, Restored, unique_suffix};
use crate::error::{Error, Result};
use crate::format::snapshot::DatabaseRecord;

/// How long the copy waits for writers that hold the database locked.
const BUSY_WAIT: Duration = Duration::from_secs(60);

/// The database source of the SQLite file at `path`, stored as `sqlite/<absolute path>`.
pub fn source(path: &Path, count_rows: bool) -> Result<crate::db::DbSource> {
    let abs = crate::source::absolute(path)?;
    let stored: Vec<String> = abs
        .iter()
        .skip(1)
        .map(|c| crate::db::path_component(&c.to_string_lossy()))
        .collect();
    Ok(crate::db::DbSource {
        path: format!("sqlite/{}", stored.join("/")),
        kind: crate::db::DbKind::Sqlite {
            path: abs,
            count_rows,
        },
    })
}

/// The SQLite library's version.
pub fn version() -> String {
    rusqlite::version().to_string()
}

fn sql_err(what: &str, e: rusqlite::Error) -> Error {
    failed(what, e.to_string())
}

/// Copies the database at `path` with the online backup API; returns the copy, open for
/// reading and already unlinked, and (when asked) its row counts.
pub(crate) fn copy(path: &Path, count_rows: bool, stored: &str) -> Result<(File, Option<Counts>)> {
    let what = format!("database source {stored}");
    let err = |e| sql_err(&what, e);
    if !path.is_file() {
        return Err(failed(&what, format!("{} is not a file", path.display())));
    }
    let src = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    src.busy_timeout(BUSY_WAIT).map_err(err)?;
    let tmp = temp_path("backup");
    let _remove = RemoveOnDrop(tmp.clone());
    let mut dst = Connection::open(&tmp).map_err(err)?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(err)?;
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            crate::interrupt::check()?;
            match backup.step(-1).map_err(err)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    return Err(failed(
                        &what,
                        format!("{} stayed locked for {BUSY_WAIT:?}", path.display()),
                    ));
                }
            }
        }
    }
    let counts = if count_rows {
        Some(count(&dst).map_err(err)?)
    } else {
        None
    };
    dst.close().map_err(|(_, e)| err(e))?;
    let file = File::open(&tmp).map_err(|e| Error::io(format!("opening {}", tmp.display()), e))?;
    Ok((file, counts))
}

/// A fresh path in `$TMPDIR`.
fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tresor-sqlite-{what}-{}-{}.db",
        std::process::id(),
        unique_suffix()
    ))
}

/// Removes a temporary database file (and its journals) when dropped, unless disarmed.
struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    /// Keeps the file: it was renamed into place.
    fn disarm(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_file(&self.0);
        for suffix in ["-journal", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Rows per table (tables of the `main` schema, SQLite's own left out).
pub fn count(c: &Connection) -> rusqlite::Result<Counts> {
    let mut stmt = c.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Counts::new();
    for n in names {
        let q = format!("SELECT count(*) FROM \"{}\"", n.replace('"', "\"\""));
        let rows: i64 = c.query_row(&q, [], |r| r.get(0))?;
        out.insert(n, rows.max(0) as u64);
    }
    Ok(out)
}

/// What a drill learns of a restored file: `PRAGMA integrity_check`'s answer (`ok`) and the
/// row counts.
pub fn check_file(path: &Path) -> Result<(String, Counts)> {
    let what = format!("checking {}", path.display());
    let err = |e| sql_err(&what, e);
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    let mut stmt = c.prepare("PRAGMA integrity_check").map_err(err)?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    let counts = count(&c).map_err(err)?;
    Ok((lines.join("; "), counts))
}

/// Writes the stored database `rec` to `into`: refused when `into` exists unless `replace`;
/// written beside it and renamed into place once complete and synced (a stale `-wal` / `-shm`
/// of the replaced file is removed, it belongs to the old file).
pub fn restore(
    rec: &DatabaseRecord,
    into: &Path,
    replace: bool,
    feed: &mut Feed<'_>,
) -> Result<Restored> {
    let what = format!("restoring {} into {}", rec.name, into.display());
    let started = Instant::now();
    if rec.engine != "sqlite" {
        return Err(failed(&what, "not an SQLite database".into()));
    }
    if into.exists() && !replace {
        return Err(failed(
            &what,
            format!(
                "{} exists; give --drop-existing to replace it",
                into.display()
            ),
        ));
    }
    let dir = into
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = into
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tresor-{}", unique_suffix()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let guard = RemoveOnDrop(tmp.clone());
    let mut w = std::io::BufWriter::new(file);
    let bytes = feed(&mut w)?;
    let file = w
        .into_inner()
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e.into_error()))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
    drop(file);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = into.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    std::fs::rename(&tmp, into).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", tmp.display(), into.display()),
            e,
        )
    })?;
    guard.disarm();
    Ok(Restored {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Restores `rec` into a temporary file for a drill, checks it and removes it.
pub(crate) fn drill(
    rec: &DatabaseRecord,
    feed: &mut Feed<'_>,
) -> Result<(Restored, String, Counts)> {
    let tmp = temp_path("drill");
    let _remove = RemoveOnDrop(tmp.clone());
    let restored = restore(rec, &tmp, false, feed)?;
    let (integrity, counts) = check_file(&tmp)?;
    Ok((restored, integrity, counts))
}

/// Writes `bytes` of `r` into `w` (used by tests of the restore path).
#[cfg(test)]
fn feed_bytes(bytes: &[u8]) -> impl FnMut(&mut (dyn std::io::Write + Send)) -> Result<u64> + '_ {
    move |w| {
        w.write_all(bytes).map_err(|e| Error::io("writing", e))?;
        Ok(bytes.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn copy_counts_and_restores_a_database() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("app.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE a(x); CREATE TABLE \"we\"\"ird\"(y);
             INSERT INTO a VALUES (1),(2),(3); INSERT INTO \"we\"\"ird\" VALUES ('z');",
        )
        .unwrap();
        let (mut f, counts) = copy(&db, true, "sqlite/app.db").unwrap();
        let counts = counts.unwrap();
        assert_eq!(counts, [("a".into(), 3), ("we\"ird".into(), 1)].into());
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        assert!(bytes.starts_with(b"SQLite format 3\0"));
        let rec = DatabaseRecord {
            engine: "sqlite".into(),
            name: "sqlite/app.db".into(),
            database: db.display().to_string(),
            host: None,
            format: "sqlite".into(),
            server_version: version(),
            dumper: String::new(),
            options: Vec::new(),
            tables: Some(counts.clone()),
        };
        let out = t.path().join("restored.db");
        restore(&rec, &out, false, &mut feed_bytes(&bytes)).unwrap();
        let (ok, got) = check_file(&out).unwrap();
        assert_eq!((ok.as_str(), &got), ("ok", &counts));
        let refused = restore(&rec, &out, false, &mut feed_bytes(&bytes)).unwrap_err();
        assert!(refused.to_string().contains("--drop-existing"), "{refused}");
        restore(&rec, &out, true, &mut feed_bytes(&bytes)).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("tresor"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
