//! PostgreSQL: the server's databases (`psql`), dumps (`pg_dump`, taken in a snapshot exported
//! by a held `psql` transaction so that the row counts are those of the dump), globals
//! (`pg_dumpall --globals-only`), restores (`psql -v ON_ERROR_STOP=1 --single-transaction` or
//! `pg_restore --exit-on-error`) and the scratch databases of drills.
//!
//! Connection: `--pg-host/--pg-port/--pg-user` when given, else libpq's environment (`PGHOST`,
//! `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGPASSFILE`, `PGSERVICE`…), inherited by every tool.
//! Tools never prompt for a password (`-w`).

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

use crate::db::process::{self, Container, Stderr, failed, said, start_error};
use crate::db::{Counts, DbKind, DbSource, Dumped, Feed, Restored, TargetMode, path_component};
use crate::error::{Error, Result};
use crate::format::snapshot::DatabaseRecord;
use crate::source::describe_status;

/// Every ordinary and partitioned table outside the system schemas, one `SELECT count(*)`
/// each (psql's `\gexec`), printed as one JSON object per line: `{"schema.table" : n}`.
const COUNT_SQL: &str = "SELECT format('SELECT json_build_object(%L, count(*)) FROM %I.%I', \
     n.nspname || '.' || c.relname, n.nspname, c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     ORDER BY n.nspname, c.relname \\gexec\n";

/// Relations (tables, views, sequences…) outside the system schemas: a database holding any is
/// not empty.
const USER_RELATIONS_SQL: &str = "SELECT count(*) FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// How to reach a server, and where its client tools are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgConn {
    /// Host name or socket directory (`-h`); default: libpq's.
    pub host: Option<String>,
    /// Port (`-p`).
    pub port: Option<u16>,
    /// User (`-U`).
    pub user: Option<String>,
    /// Directory of `psql`, `pg_dump`…; default: PATH.
    pub bindir: Option<PathBuf>,
    /// Run the tools in this container (`--container`).
    pub container: Option<Container>,
}

/// The stored format of a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PgFormat {
    /// SQL text: deltas between days stay small.
    #[default]
    Plain,
    /// pg_dump's archive (`-Fc`), uncompressed (tresor compresses), for `pg_restore --jobs`.
    Custom,
}

impl PgFormat {
    /// `plain` or `custom`.
    pub fn name(self) -> &'static str {
        match self {
            PgFormat::Plain => "plain",
            PgFormat::Custom => "custom",
        }
    }

    /// The stored file's extension.
    pub fn extension(self) -> &'static str {
        match self {
            PgFormat::Plain => "sql",
            PgFormat::Custom => "dump",
        }
    }
}

/// The `pg_dump` options of a dump of `format` with `extra` options (as recorded).
pub(crate) fn dump_options(format: PgFormat, extra: &[String]) -> Vec<String> {
    let mut o = match format {
        PgFormat::Plain => vec!["--format=plain".to_string()],
        PgFormat::Custom => vec!["--format=custom".to_string(), "--compress=0".to_string()],
    };
    o.extend(extra.iter().cloned());
    o
}

/// A string as an SQL literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A name as an SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl PgConn {
    /// The server's label in stored paths: the host, or `local` for a socket or libpq's default.
    pub fn host_label(&self) -> String {
        let host = self
            .host
            .clone()
            .or_else(|| std::env::var("PGHOST").ok())
            .filter(|h| !h.is_empty() && !h.starts_with('/') && !h.starts_with('@'));
        match host {
            Some(h) => path_component(&h),
            None => "local".into(),
        }
    }

    /// `tool` with the connection options.
    fn command(&self, tool: &str) -> Command {
        let mut c = process::tool_in(self.container.as_ref(), self.bindir.as_deref(), &[tool]);
        c.arg("-w");
        if let Some(h) = &self.host {
            c.arg("-h").arg(h);
        }
        if let Some(p) = self.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &self.user {
            c.arg("-U").arg(u);
        }
        c
    }

    /// `psql` on `database`, quiet, unaligned, tuples only, stopping at the first error.
    fn psql(&self, database: &str) -> Command {
        let mut c = self.command("psql");
        c.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
        ]);
        c
    }

    /// Runs SQL on `database`; its unaligned output.
    pub fn query(&self, database: &str, sql: &str) -> Result<String> {
        let mut c = self.psql(database);
        c.arg("-c").arg(sql);
        process::output(c, &format!("psql on database {database}"))
            .map(|s| s.trim_end().to_string())
    }

    /// Every database that is not a template and accepts connections, by name.
    pub fn list_databases(&self) -> Result<Vec<String>> {
        let out = self.query(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname",
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Whether `database` exists.
    pub fn database_exists(&self, database: &str) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            literal(database)
        );
        Ok(self.query("postgres", &sql)?.trim() != "0")
    }

    /// Whether `database` holds no relation outside the system schemas.
    pub fn database_is_empty(&self, database: &str) -> Result<bool> {
        Ok(self.query(database, USER_RELATIONS_SQL)?.trim() == "0")
    }

    /// `CREATE DATABASE`.
    pub fn create_database(&self, database: &str) -> Result<()> {
        self.query("postgres", &format!("CREATE DATABASE {}", ident(database)))
            .map(|_| ())
    }

    /// `DROP DATABASE IF EXISTS … WITH (FORCE)` (sessions still connected are ended).
    pub fn drop_database(&self, database: &str) -> Result<()> {
        self.query(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)),
        )
        .map(|_| ())
    }

    /// The exact row count of every table of `database` (now, outside any dump).
    pub fn count_rows(&self, database: &str) -> Result<Counts> {
        let what = format!("counting the rows of database {database}");
        // `\gexec` cannot be given with `-c`: the script goes to standard input.
        let mut c = self.psql(database);
        c.args(["-f", "-"]);
        parse_counts(&process::output_fed(c, COUNT_SQL.as_bytes(), &what)?)
    }

    /// A dumper's version line (`pg_dump (PostgreSQL) 15.18 …`).
    fn tool_version(&self, tool: &str) -> String {
        let mut c = process::tool_in(self.container.as_ref(), self.bindir.as_deref(), &[tool]);
        c.arg("--version");
        process::output(c, tool)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

/// The database sources for `names` (`all`: every database of the server, plus its globals),
/// stored under `postgres/<host>/`.
pub fn sources(
    conn: &PgConn,
    names: &[String],
    format: PgFormat,
    extra: &[String],
    count_rows: bool,
) -> Result<Vec<DbSource>> {
    let host = conn.host_label();
    let mut out = Vec::new();
    let push = |out: &mut Vec<DbSource>, db: &str| {
        let path = format!(
            "postgres/{host}/{}.{}",
            path_component(db),
            format.extension()
        );
        if !out.iter().any(|s: &DbSource| s.path == path) {
            out.push(DbSource {
                path,
                kind: DbKind::Postgres {
                    conn: conn.clone(),
                    database: db.to_string(),
                    format,
                    extra: extra.to_vec(),
                    count_rows,
                },
            });
        }
    };
    for n in names {
        if n == "all" {
            for db in conn.list_databases()? {
                push(&mut out, &db);
            }
            out.push(DbSource {
                path: format!("postgres/{host}/globals.sql"),
                kind: DbKind::PostgresGlobals { conn: conn.clone() },
            });
        } else {
            push(&mut out, n);
        }
    }
    Ok(out)
}

fn parse_counts(out: &str) -> Result<Counts> {
    let mut counts = Counts::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let m: std::collections::BTreeMap<String, u64> =
            serde_json::from_str(line).map_err(|e| {
                failed(
                    "counting rows",
                    format!("unexpected psql output {line:?}: {e}"),
                )
            })?;
        counts.extend(m);
    }
    Ok(counts)
}

/// A `pg_dump` (or `pg_dumpall`) under way, and the `psql` session holding the transaction
/// whose snapshot it dumps.
pub(crate) struct PgDump {
    what: String,
    dumper: Child,
    dumper_err: Stderr,
    session: Option<Session>,
    record: DatabaseRecord,
    count_rows: bool,
}

/// A `psql` session holding a repeatable-read transaction that exported its snapshot.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: Option<Stderr>,
}

impl Session {
    /// Opens a session on `database` and exports its snapshot: (session, server version,
    /// snapshot id).
    fn open(conn: &PgConn, database: &str, what: &str) -> Result<(Session, String, String)> {
        let mut c = conn.psql(database);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| failed(what, start_error(&c, &e)))?;
        let stderr = Stderr::capture(&mut child);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            process::end(&mut child);
            return Err(failed(what, "psql has no pipes".into()));
        };
        let mut s = Session {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr: Some(stderr),
        };
        let asked = s.send(
            "SELECT current_setting('server_version');\n\
             BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n\
             SELECT pg_export_snapshot();\n",
        );
        let version = asked.and_then(|_| s.line());
        let snapshot = version.as_ref().ok().and_then(|_| s.line().ok());
        match (version, snapshot) {
            (Ok(v), Some(id)) if !id.is_empty() => Ok((s, v, id)),
            _ => Err(failed(what, s.fail())),
        }
    }

    fn send(&mut self, sql: &str) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(i) => {
                i.write_all(sql.as_bytes())?;
                i.flush()
            }
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// One line of output; an error at the end of output.
    fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end().to_string())
    }

    /// Ends the session after a failure; what psql said.
    fn fail(&mut self) -> String {
        self.stdin = None;
        process::end(&mut self.child);
        let err = self.stderr.take().map(Stderr::text).unwrap_or_default();
        said("psql failed", &err)
    }

    /// Counts the rows (when asked) in the held transaction, commits and waits for psql.
    fn close(mut self, count_rows: bool, what: &str) -> Result<Option<Counts>> {
        let mut sql = String::new();
        if count_rows {
            sql.push_str(COUNT_SQL);
        }
        sql.push_str("COMMIT;\n");
        if self.send(&sql).is_err() {
            return Err(failed(what, self.fail()));
        }
        self.stdin = None;
        let mut out = String::new();
        let read = self.stdout.read_to_string(&mut out);
        let status = self.child.wait();
        let err = self.stderr.take().map(Stderr::text).unwrap_or_default();
        match (read, status) {
            (Ok(_), Ok(st)) if st.success() => {}
            (Ok(_), Ok(st)) => {
                return Err(failed(
                    what,
                    said(&format!("psql {}", describe_status(&st)), &err),
                ));
            }
            (Err(e), _) | (_, Err(e)) => {
                return Err(failed(what, format!("psql could not be read: {e}")));
            }
        }
        if count_rows {
            parse_counts(&out).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Starts `pg_dump` of `database` in a snapshot exported by a held transaction; returns the
/// dump, its output and the dumper's process group.
pub(crate) fn start_dump(
    conn: &PgConn,
    database: &str,
    format: PgFormat,
    extra: &[String],
    count_rows: bool,
    mut record: DatabaseRecord,
) -> Result<(PgDump, Box<dyn Read + Send>, u32)> {
    let what = format!("database source {}", record.name);
    let (mut session, version, snapshot) = Session::open(conn, database, &what)?;
    record.server_version = version;
    record.dumper = conn.tool_version("pg_dump");
    let mut c = conn.command("pg_dump");
    c.arg(format!("--snapshot={snapshot}"))
        .args(dump_options(format, extra))
        .arg(database);
    let (dumper, dumper_err, out, pid) = match spawn_dumper(c, &what) {
        Ok(d) => d,
        Err(e) => {
            session.fail();
            return Err(e);
        }
    };
    Ok((
        PgDump {
            what,
            dumper,
            dumper_err,
            session: Some(session),
            record,
            count_rows,
        },
        out,
        pid,
    ))
}

/// Starts `pg_dumpall --globals-only`.
pub(crate) fn start_globals(
    conn: &PgConn,
    mut record: DatabaseRecord,
) -> Result<(PgDump, Box<dyn Read + Send>, u32)> {
    let what = format!("database source {}", record.name);
    record.server_version = conn
        .query("postgres", "SHOW server_version")
        .map_err(|e| failed(&what, e.to_string()))?;
    record.dumper = conn.tool_version("pg_dumpall");
    let mut c = conn.command("pg_dumpall");
    c.arg("--globals-only");
    let (dumper, dumper_err, out, pid) = spawn_dumper(c, &what)?;
    Ok((
        PgDump {
            what,
            dumper,
            dumper_err,
            session: None,
            record,
            count_rows: false,
        },
        out,
        pid,
    ))
}

type Spawned = (Child, Stderr, Box<dyn Read + Send>, u32);

fn spawn_dumper(mut c: Command, what: &str) -> Result<Spawned> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| failed(what, start_error(&c, &e)))?;
    let err = Stderr::capture(&mut child);
    let Some(out) = child.stdout.take() else {
        process::end(&mut child);
        return Err(failed(what, "the dumper has no output pipe".into()));
    };
    let pid = child.id();
    Ok((child, err, Box::new(out), pid))
}

impl PgDump {
    /// Waits for the dumper (its output was read to the end), then counts rows in the held
    /// transaction and ends it.
    pub(crate) fn finish(mut self) -> Result<Dumped> {
        let tool = if self.session.is_some() {
            "pg_dump"
        } else {
            "pg_dumpall"
        };
        let status = self.dumper.wait();
        let err = self.dumper_err.text();
        let ok = match &status {
            Ok(st) if st.success() => match process::printed_errors(&err) {
                Some(e) => Err(format!("{tool} exited 0 but printed errors: {e}")),
                None => Ok(()),
            },
            Ok(st) => Err(said(&format!("{tool} {}", describe_status(st)), &err)),
            Err(e) => Err(format!("{tool} could not be waited for: {e}")),
        };
        if let Err(reason) = ok {
            if let Some(mut s) = self.session.take() {
                s.fail();
            }
            return Err(failed(&self.what, reason));
        }
        if let Some(s) = self.session.take() {
            self.record.tables = s.close(self.count_rows, &self.what)?;
        }
        let warnings = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{}: {tool}: {l}", self.record.name))
            .collect();
        Ok(Dumped {
            record: self.record,
            warnings,
        })
    }

    /// Ends the dumper and the session.
    pub(crate) fn abort(mut self) {
        process::end(&mut self.dumper);
        if let Some(mut s) = self.session.take() {
            s.fail();
        }
    }
}

/// Restores `rec` (a dump of one database) into `into` on `conn`, or for globals into the
/// server: prepares the target per `mode`, then feeds the loader. Plain dumps and globals go
/// through `psql -v ON_ERROR_STOP=1` (a database in one transaction: all or nothing), custom
/// archives through `pg_restore --exit-on-error` (with `jobs` > 1 from a temporary file, which
/// parallel `pg_restore` needs).
pub fn restore(
    conn: &PgConn,
    rec: &DatabaseRecord,
    into: &str,
    mode: TargetMode,
    jobs: u32,
    feed: &mut Feed<'_>,
) -> Result<Restored> {
    let what = format!("restoring {} into {into}", rec.name);
    let started = Instant::now();
    if rec.format == "globals" {
        let mut c = conn.psql("postgres");
        c.args(["-f", "-"]);
        let bytes = load(c, &what, &mut |w| {
            let mut g = GlobalsFilter {
                out: w,
                line: Vec::new(),
                restrict: None,
            };
            let n = feed(&mut g)?;
            g.finish()
                .map_err(|e| Error::io("writing restored data", e))?;
            Ok(n)
        })?;
        return Ok(Restored {
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    prepare_target(conn, into, mode, &what)?;
    let bytes = match (rec.format.as_str(), jobs) {
        ("plain", _) => {
            let mut c = conn.psql(into);
            c.args(["--single-transaction", "-f", "-"]);
            load(c, &what, feed)?
        }
        ("custom", 0 | 1) => {
            let mut c = conn.command("pg_restore");
            c.args(["--exit-on-error", "--single-transaction", "-d", into]);
            load(c, &what, feed)?
        }
        ("custom", n) => restore_parallel(conn, into, n, &what, feed)?,
        (f, _) => {
            return Err(failed(
                &what,
                format!("format {f:?} is not a PostgreSQL dump"),
            ));
        }
    };
    Ok(Restored {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn prepare_target(conn: &PgConn, into: &str, mode: TargetMode, what: &str) -> Result<()> {
    let exists = conn.database_exists(into)?;
    match mode {
        TargetMode::DropExisting => {
            if exists {
                conn.drop_database(into)?;
            }
            conn.create_database(into)
        }
        TargetMode::Create if !exists => conn.create_database(into),
        TargetMode::Existing if !exists => Err(failed(
            what,
            format!("database {into} does not exist (--create creates it)"),
        )),
        TargetMode::Create | TargetMode::Existing => {
            if conn.database_is_empty(into)? {
                Ok(())
            } else {
                Err(failed(
                    what,
                    format!(
                        "database {into} is not empty: loading a dump into existing tables \
                         fails on duplicates and foreign keys; restore into a new name, or \
                         give --drop-existing to replace it"
                    ),
                ))
            }
        }
    }
}

/// Runs loader `c` with the dump fed into its standard input; its standard output is
/// discarded, its standard error shown when it fails.
fn load(mut c: Command, what: &str, feed: &mut Feed<'_>) -> Result<u64> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| failed(what, start_error(&c, &e)))?;
    let err = Stderr::capture(&mut child);
    let Some(mut stdin) = child.stdin.take() else {
        process::end(&mut child);
        return Err(failed(what, "the loader has no input pipe".into()));
    };
    let fed = feed(&mut stdin);
    drop(stdin);
    if let Err(e @ Error::Interrupted { .. }) = fed {
        process::end(&mut child);
        return Err(e);
    }
    let status = child.wait();
    let err = err.text();
    let tool = c.get_program().to_string_lossy().into_owned();
    match (fed, status) {
        (_, Ok(st)) if !st.success() => Err(failed(
            what,
            said(&format!("{tool} {}", describe_status(&st)), &err),
        )),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(failed(what, format!("{tool} could not be waited for: {e}"))),
        (Ok(n), Ok(_)) => Ok(n),
    }
}

fn restore_parallel(
    conn: &PgConn,
    into: &str,
    jobs: u32,
    what: &str,
    feed: &mut Feed<'_>,
) -> Result<u64> {
    let path = std::env::temp_dir().join(format!(
        "tresor-restore-{}-{}.dump",
        std::process::id(),
        crate::db::unique_suffix()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let _remove = RemoveOnDrop(path.clone());
    let mut w = std::io::BufWriter::new(file);
    let n = feed(&mut w)?;
    w.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    drop(w);
    let mut c = conn.command("pg_restore");
    c.args(["--exit-on-error", "-j", &jobs.to_string(), "-d", into])
        .arg(&path);
    process::output(c, what)?;
    Ok(n)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Rewrites `pg_dumpall --globals-only` output so that it loads on a server that already has
/// some of its roles or tablespaces (the user running it, at least): each `CREATE ROLE x;` and
/// `CREATE TABLESPACE x …;` line runs only when `x` does not exist yet (psql's `\if`); every
/// other statement (`ALTER ROLE`, grants) runs as dumped.
///
/// A dump of a patched server brackets its statements with `\restrict KEY` … `\unrestrict
/// KEY`, inside which psql refuses other backslash commands: each guard is wrapped in
/// `\unrestrict KEY` … `\restrict KEY` with the dump's own key, so the rest of the file stays
/// restricted.
struct GlobalsFilter<'w> {
    out: &'w mut (dyn Write + Send),
    line: Vec<u8>,
    /// The key of the `\restrict` in force.
    restrict: Option<String>,
}

impl GlobalsFilter<'_> {
    fn emit_line(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        if let Some(key) = text.strip_prefix("\\restrict ") {
            self.restrict = Some(key.trim().to_string());
        } else if text.starts_with("\\unrestrict ") {
            self.restrict = None;
        }
        let guarded = [
            ("CREATE ROLE ", "pg_roles", "rolname"),
            ("CREATE TABLESPACE ", "pg_tablespace", "spcname"),
        ]
        .iter()
        .find_map(|(prefix, table, column)| {
            let rest = text.strip_prefix(prefix)?;
            let name = quoted_name(rest)?;
            Some(format!(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.{table} WHERE pg_catalog.quote_ident({column}) = {}) AS tresor_missing \\gset\n\\if :tresor_missing\n{}\n\\endif\n",
                literal(name),
                text.trim_end_matches(['\n', '\r'])
            ))
        });
        match (guarded, &self.restrict) {
            (Some(g), Some(key)) => {
                let g = format!("\\unrestrict {key}\n{g}\\restrict {key}\n");
                self.out.write_all(g.as_bytes())
            }
            (Some(g), None) => self.out.write_all(g.as_bytes()),
            (None, _) => self.out.write_all(&line),
        }
    }

    fn finish(mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.emit_line()?;
        }
        self.out.flush()
    }
}

/// The identifier at the start of `rest` as pg_dumpall writes it (bare, or double-quoted).
fn quoted_name(rest: &str) -> Option<&str> {
    if let Some(q) = rest.strip_prefix('"') {
        let mut i = 0;
        let b = q.as_bytes();
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return rest.get(..i + 2);
            }
            i += 1;
        }
        None
    } else {
        let end = rest
            .find(|c: char| c == ';' || c.is_whitespace())
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    }
}

impl Write for GlobalsFilter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.line.extend_from_slice(&rest[..=i]);
            self.emit_line()?;
            rest = &rest[i + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_filter_guards_creates_and_passes_the_rest() {
        let mut out = Vec::new();
        {
            let mut w: &mut (dyn Write + Send) = &mut out;
            let mut g = GlobalsFilter {
                out: &mut w,
                line: Vec::new(),
                restrict: None,
            };
            g.write_all(b"\\restrict K1\nCREATE ROLE shop_owner;\nALTER ROLE shop_owner WITH LOGIN;\nCREATE ROLE \"We\"\"ird\";\nCREATE TABLESPACE ts OWNER x LOCATION '/x';")
                .unwrap();
            g.finish().unwrap();
        }
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("\\restrict K1\n\\unrestrict K1\nSELECT NOT EXISTS"),
            "{s}"
        );
        assert!(s.contains("quote_ident(rolname) = 'shop_owner') AS tresor_missing \\gset\n\\if :tresor_missing\nCREATE ROLE shop_owner;\n\\endif\n\\restrict K1\nALTER ROLE shop_owner WITH LOGIN;\n"), "{s}");
        assert!(s.contains("= '\"We\"\"ird\"')"), "{s}");
        assert!(s.contains("quote_ident(spcname) = 'ts')"), "{s}");
    }

    #[test]
    fn counts_parse_from_json_lines() {
        let c = parse_counts("{\"public.a\" : 3}\n\n{\"x.b|c\" : 0}\n").unwrap();
        assert_eq!(c, [("public.a".into(), 3), ("x.b|c".into(), 0)].into());
        assert!(parse_counts("nonsense\n").is_err());
    }
}
