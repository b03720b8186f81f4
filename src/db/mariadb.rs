//! MariaDB and MySQL: the server's databases, dumps (`mariadb-dump`, else `mysqldump`, with
//! `--single-transaction --routines --triggers --events` by default), row counts, restores
//! (`mariadb`, else `mysql`, which stops at the first error) and the scratch databases of
//! drills.
//!
//! Connection: `--my-socket`, `--my-host`, `--my-port`, `--my-user`, and credentials from an
//! option file (`--my-defaults-file`, passed as `--defaults-extra-file`, so `~/.my.cnf` and the
//! server's defaults still apply); without them the client's own defaults.
//!
//! Row counts cannot be taken in the dumper's own transaction (the server cannot share a
//! snapshot with another session): they are counted in a `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT` of their own, just before the dump starts. Under concurrent writes they can
//! therefore differ from the dump's, which a drill then reports as a mismatch.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::db::process::{self, Container, Stderr, failed, said, start_error};
use crate::db::{Counts, DbKind, DbSource, Dumped, Feed, Restored, TargetMode, path_component};
use crate::error::{Error, Result};
use crate::format::snapshot::DatabaseRecord;
use crate::source::describe_status;

/// The dumper's options unless more are given.
pub const DEFAULT_OPTIONS: [&str; 4] = [
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
];

/// Databases of the server itself, never dumped by `all`.
const SYSTEM_DATABASES: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// Every base table of the current database, counted (tab-separated `name count` lines).
const COUNT_SQL: &str = "SET SESSION group_concat_max_len = 67108864;\n\
SELECT COALESCE(GROUP_CONCAT(CONCAT('SELECT ', QUOTE(table_name), ', COUNT(*) FROM `', \
REPLACE(table_name, '`', '``'), '`') ORDER BY table_name SEPARATOR ' UNION ALL '), \
'SELECT 1, 1 FROM DUAL WHERE FALSE') INTO @tresor_q FROM information_schema.tables \
WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE';\n\
PREPARE tresor_s FROM @tresor_q;\nEXECUTE tresor_s;\nDEALLOCATE PREPARE tresor_s;\n";

/// How to reach a server, and where its client tools are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MyConn {
    /// Unix socket.
    pub socket: Option<PathBuf>,
    /// Host.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// An option file with credentials (`[client]` `user=`, `password=`).
    pub defaults_file: Option<PathBuf>,
    /// Directory of the client tools; default: PATH.
    pub bindir: Option<PathBuf>,
    /// Run the tools in this container (`--container`).
    pub container: Option<Container>,
}

/// `'…'` with MariaDB's escapes.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `` `…` ``.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

impl MyConn {
    /// The server's label in stored paths: the host, or `local`.
    pub fn host_label(&self) -> String {
        match self.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) if h != "localhost" => path_component(h),
            _ => "local".into(),
        }
    }

    fn command(&self, names: &[&'static str]) -> Command {
        let mut c = process::tool_in(self.container.as_ref(), self.bindir.as_deref(), names);
        if let Some(f) = &self.defaults_file {
            let mut a = std::ffi::OsString::from("--defaults-extra-file=");
            a.push(f);
            c.arg(a);
        }
        if let Some(s) = &self.socket {
            let mut a = std::ffi::OsString::from("--socket=");
            a.push(s);
            c.arg(a);
        }
        if let Some(h) = &self.host {
            c.arg(format!("--host={h}"));
        }
        if let Some(p) = self.port {
            c.arg(format!("--port={p}"));
        }
        if let Some(u) = &self.user {
            c.arg(format!("--user={u}"));
        }
        c
    }

    fn client(&self) -> Command {
        self.command(&["mariadb", "mysql"])
    }

    /// Runs `sql` (a script, on standard input) in `database` (none: no default database);
    /// its tab-separated output without column names.
    pub fn query(&self, database: Option<&str>, sql: &str) -> Result<String> {
        let what = match database {
            Some(d) => format!("mariadb on database {d}"),
            None => "mariadb".to_string(),
        };
        let mut c = self.client();
        c.args(["--batch", "--skip-column-names"]);
        if let Some(d) = database {
            c.arg(format!("--database={d}"));
        }
        let out = process::output_fed(c, sql.as_bytes(), &what)?;
        Ok(out.trim_end().to_string())
    }

    /// Every database but the server's own, by name.
    pub fn list_databases(&self) -> Result<Vec<String>> {
        Ok(self
            .query(None, "SHOW DATABASES;\n")?
            .lines()
            .filter(|l| !l.is_empty() && !SYSTEM_DATABASES.contains(l))
            .map(str::to_string)
            .collect())
    }

    /// Whether `database` exists.
    pub fn database_exists(&self, database: &str) -> Result<bool> {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {};\n",
            literal(database)
        );
        Ok(self.query(None, &sql)?.trim() != "0")
    }

    /// Whether `database` holds no table, view or routine.
    pub fn database_is_empty(&self, database: &str) -> Result<bool> {
        let l = literal(database);
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {l}) + \
             (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = {l});\n"
        );
        Ok(self.query(None, &sql)?.trim() == "0")
    }

    /// `CREATE DATABASE`.
    pub fn create_database(&self, database: &str) -> Result<()> {
        self.query(None, &format!("CREATE DATABASE {};\n", ident(database)))
            .map(|_| ())
    }

    /// `DROP DATABASE IF EXISTS`.
    pub fn drop_database(&self, database: &str) -> Result<()> {
        self.query(
            None,
            &format!("DROP DATABASE IF EXISTS {};\n", ident(database)),
        )
        .map(|_| ())
    }

    /// The exact row count of every base table of `database`; in a consistent snapshot when
    /// `consistent`.
    pub fn count_rows(&self, database: &str, consistent: bool) -> Result<Counts> {
        let sql = if consistent {
            format!("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;\n{COUNT_SQL}COMMIT;\n")
        } else {
            COUNT_SQL.to_string()
        };
        let out = self.query(Some(database), &sql)?;
        let mut counts = Counts::new();
        for line in out.lines().filter(|l| !l.is_empty()) {
            let (t, n) = line
                .rsplit_once('\t')
                .and_then(|(t, n)| Some((t, n.trim().parse::<u64>().ok()?)))
                .ok_or_else(|| {
                    failed(
                        "counting rows",
                        format!("unexpected client output {line:?}"),
                    )
                })?;
            counts.insert(t.to_string(), n);
        }
        Ok(counts)
    }
}

/// The `mariadb-dump` options of a dump with `extra` options (as recorded).
pub(crate) fn dump_options(extra: &[String]) -> Vec<String> {
    let mut o: Vec<String> = DEFAULT_OPTIONS.iter().map(|s| s.to_string()).collect();
    o.extend(extra.iter().cloned());
    o
}

/// The database sources for `names` (`all`: every database but the server's own), stored
/// under `mariadb/<host>/`.
pub fn sources(
    conn: &MyConn,
    names: &[String],
    extra: &[String],
    count_rows: bool,
) -> Result<Vec<DbSource>> {
    let host = conn.host_label();
    let mut dbs = Vec::new();
    for n in names {
        if n == "all" {
            dbs.extend(conn.list_databases()?);
        } else {
            dbs.push(n.clone());
        }
    }
    let mut out: Vec<DbSource> = Vec::new();
    for db in dbs {
        let path = format!("mariadb/{host}/{}.sql", path_component(&db));
        if !out.iter().any(|s| s.path == path) {
            out.push(DbSource {
                path,
                kind: DbKind::Mariadb {
                    conn: conn.clone(),
                    database: db,
                    extra: extra.to_vec(),
                    count_rows,
                },
            });
        }
    }
    Ok(out)
}

/// A `mariadb-dump` under way.
pub(crate) struct MyDump {
    what: String,
    tool: &'static str,
    dumper: Child,
    dumper_err: Stderr,
    record: DatabaseRecord,
}

/// Starts dumping `database` (its rows counted first, when asked).
pub(crate) fn start_dump(
    conn: &MyConn,
    database: &str,
    extra: &[String],
    count_rows: bool,
    mut record: DatabaseRecord,
) -> Result<(MyDump, Box<dyn Read + Send>, u32)> {
    let what = format!("database source {}", record.name);
    record.server_version = conn
        .query(Some(database), "SELECT VERSION();\n")
        .map_err(|e| failed(&what, e.to_string()))?;
    if count_rows {
        record.tables = Some(
            conn.count_rows(database, true)
                .map_err(|e| failed(&what, e.to_string()))?,
        );
    }
    let tool = "mariadb-dump";
    let mut v = conn.command(&["mariadb-dump", "mysqldump"]);
    v.arg("--version");
    record.dumper = process::output(v, tool)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut c = conn.command(&["mariadb-dump", "mysqldump"]);
    c.args(dump_options(extra)).arg(database);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| failed(&what, start_error(&c, &e)))?;
    let dumper_err = Stderr::capture(&mut child);
    let Some(out) = child.stdout.take() else {
        process::end(&mut child);
        return Err(failed(&what, "the dumper has no output pipe".into()));
    };
    let pid = child.id();
    Ok((
        MyDump {
            what,
            tool,
            dumper: child,
            dumper_err,
            record,
        },
        Box::new(out),
        pid,
    ))
}

impl MyDump {
    /// Waits for the dumper (its output was read to the end).
    pub(crate) fn finish(mut self) -> Result<Dumped> {
        let status = self.dumper.wait();
        let err = self.dumper_err.text();
        match &status {
            Ok(st) if st.success() => {
                if let Some(e) = process::printed_errors(&err) {
                    return Err(failed(
                        &self.what,
                        format!("{} exited 0 but printed errors: {e}", self.tool),
                    ));
                }
            }
            Ok(st) => {
                return Err(failed(
                    &self.what,
                    said(&format!("{} {}", self.tool, describe_status(st)), &err),
                ));
            }
            Err(e) => {
                return Err(failed(
                    &self.what,
                    format!("{} could not be waited for: {e}", self.tool),
                ));
            }
        }
        let warnings = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{}: {}: {l}", self.record.name, self.tool))
            .collect();
        Ok(Dumped {
            record: self.record,
            warnings,
        })
    }

    /// Ends the dumper.
    pub(crate) fn abort(mut self) {
        process::end(&mut self.dumper);
    }
}

/// Restores `rec` into `into`: prepares the target per `mode`, then feeds the dump to the
/// client, which stops at the first error (a failed load leaves what was loaded before it;
/// `--drop-existing` starts over).
pub fn restore(
    conn: &MyConn,
    rec: &DatabaseRecord,
    into: &str,
    mode: TargetMode,
    feed: &mut Feed<'_>,
) -> Result<Restored> {
    let what = format!("restoring {} into {into}", rec.name);
    let started = Instant::now();
    let exists = conn.database_exists(into)?;
    match mode {
        TargetMode::DropExisting => {
            conn.drop_database(into)?;
            conn.create_database(into)?;
        }
        TargetMode::Create if !exists => conn.create_database(into)?,
        TargetMode::Existing if !exists => {
            return Err(failed(
                &what,
                format!("database {into} does not exist (--create creates it)"),
            ));
        }
        TargetMode::Create | TargetMode::Existing => {
            if !conn.database_is_empty(into)? {
                return Err(failed(
                    &what,
                    format!(
                        "database {into} is not empty: loading a dump into existing tables \
                         fails on duplicates and foreign keys; restore into a new name, or \
                         give --drop-existing to replace it"
                    ),
                ));
            }
        }
    }
    let mut c = conn.client();
    c.arg("--batch").arg(format!("--database={into}"));
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| failed(&what, start_error(&c, &e)))?;
    let err = Stderr::capture(&mut child);
    let Some(mut stdin) = child.stdin.take() else {
        process::end(&mut child);
        return Err(failed(&what, "the client has no input pipe".into()));
    };
    let fed = feed(&mut stdin);
    drop(stdin);
    if let Err(e @ Error::Interrupted { .. }) = fed {
        process::end(&mut child);
        return Err(e);
    }
    let status = child.wait();
    let err = err.text();
    let bytes = match (fed, status) {
        (_, Ok(st)) if !st.success() => {
            return Err(failed(
                &what,
                said(&format!("the client {}", describe_status(&st)), &err),
            ));
        }
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => {
            return Err(failed(
                &what,
                format!("the client could not be waited for: {e}"),
            ));
        }
        (Ok(n), Ok(_)) => n,
    };
    Ok(Restored {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_for_mariadb() {
        assert_eq!(literal("it's \\ ok"), "'it''s \\\\ ok'");
        assert_eq!(ident("a`b"), "`a``b`");
        let c = MyConn {
            host: Some("db/1".into()),
            ..Default::default()
        };
        assert_eq!(c.host_label(), "db%2F1");
        assert_eq!(MyConn::default().host_label(), "local");
    }
}
