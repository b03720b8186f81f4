//! Database commands: the database sources of `snapshot create` (`--postgres`, `--mariadb`,
//! `--sqlite`),
//! `db list`, `db restore` and `drill`, each feeding the repository stream of a dump to an
//! engine of `tresor::db`.

use super::*;

use tresor::db::{self, MyConn, PgConn, PgFormat, TargetMode};
use tresor::format::snapshot::DatabaseRecord;

impl ContainerArgs {
    fn container(&self) -> Option<db::Container> {
        self.container
            .as_deref()
            .map(|n| db::Container::new(n, self.container_runtime.as_deref()))
    }
}

impl PgArgs {
    fn conn(&self, c: &ContainerArgs) -> PgConn {
        PgConn {
            host: self.pg_host.clone(),
            port: self.pg_port,
            user: self.pg_user.clone(),
            bindir: self.pg_bindir.clone(),
            container: c.container(),
        }
    }
}

impl MyArgs {
    fn conn(&self, c: &ContainerArgs) -> MyConn {
        MyConn {
            socket: self.my_socket.clone(),
            host: self.my_host.clone(),
            port: self.my_port,
            user: self.my_user.clone(),
            defaults_file: self.my_defaults_file.clone(),
            bindir: self.my_bindir.clone(),
            container: c.container(),
        }
    }
}

/// The database sources of `snapshot create`.
pub(super) fn database_sources(a: &CreateArgs) -> Result<Vec<SourceSpec>> {
    let mut out = Vec::new();
    if !a.postgres.is_empty() {
        let format = match a.pg_format {
            PgFormatArg::Plain => PgFormat::Plain,
            PgFormatArg::Custom => PgFormat::Custom,
        };
        let pg = db::postgres::sources(
            &a.pg.conn(&a.container),
            &a.postgres,
            format,
            &a.pg_dump_option,
            a.count_rows,
        )
        .context("listing the PostgreSQL databases")?;
        out.extend(pg.into_iter().map(|d| SourceSpec::Database(Box::new(d))));
    }
    if !a.mariadb.is_empty() {
        let my = db::mariadb::sources(
            &a.my.conn(&a.container),
            &a.mariadb,
            &a.mariadb_dump_option,
            a.count_rows,
        )
        .context("listing the MariaDB databases")?;
        out.extend(my.into_iter().map(|d| SourceSpec::Database(Box::new(d))));
    }
    for p in &a.sqlite {
        out.push(SourceSpec::Database(Box::new(db::sqlite::source(
            p,
            a.count_rows,
        )?)));
    }
    Ok(out)
}

/// The database records of a snapshot.
fn records(s: &Snapshot) -> Vec<&DatabaseRecord> {
    s.database_records()
}

/// The one database source `wanted` names: a stored path, a database name or an SQLite path.
fn pick<'s>(s: &'s Snapshot, wanted: &str) -> Result<&'s DatabaseRecord> {
    let all = records(s);
    if let Some(d) = all.iter().find(|d| d.name == wanted) {
        return Ok(d);
    }
    let by_name: Vec<&&DatabaseRecord> = all
        .iter()
        .filter(|d| !d.database.is_empty() && d.database == wanted)
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "the snapshot has no database source {wanted:?}; it has: {}",
            all.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => bail!(
            "{wanted:?} names several database sources ({}); give the stored path",
            many.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(super) fn db_list(g: &Global, a: DbListArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock_for_reading(g, &mut repo, "db list")?;
    let (id, s) = repo.find_snapshot(&a.snapshot)?;
    let recs = records(&s);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
        return Ok(exit::OK);
    }
    if recs.is_empty() {
        println!("snapshot {} has no database sources", id.short());
        return Ok(exit::OK);
    }
    println!(
        "{:<40} {:<8} {:<16} {:<8} {:<10} {:<7} DUMPER",
        "SOURCE", "ENGINE", "DATABASE", "FORMAT", "SERVER", "TABLES"
    );
    for d in recs {
        let database = if d.database.is_empty() {
            "(globals)"
        } else {
            &d.database
        };
        let tables = d
            .tables
            .as_ref()
            .map_or("-".to_string(), |t| t.len().to_string());
        println!(
            "{:<40} {:<8} {:<16} {:<8} {:<10} {:<7} {}",
            d.name, d.engine, database, d.format, d.server_version, tables, d.dumper
        );
    }
    Ok(exit::OK)
}

pub(super) fn db_restore(g: &Global, a: DbRestoreArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock_for_reading(g, &mut repo, "db restore")?;
    let (_, s) = repo.find_snapshot(&a.snapshot)?;
    let rec = pick(&s, &a.source)?;
    let mode = if a.drop_existing {
        TargetMode::DropExisting
    } else if a.create {
        TargetMode::Create
    } else {
        TargetMode::Existing
    };
    let mut feed = |w: &mut (dyn Write + Send)| {
        let mut w = w;
        restore::restore_to_writer(&repo, &s, Some(&rec.name), &mut w)
    };
    let mut done = Vec::new();
    let conn = a.pg.conn(&a.container);
    if a.globals && rec.engine == "postgres" && rec.format != "globals" {
        let globals = records(&s)
            .into_iter()
            .find(|d| d.format == "globals" && d.host == rec.host)
            .ok_or_else(|| anyhow!("the snapshot holds no globals for {:?}", rec.host))?;
        let mut gfeed = |w: &mut (dyn Write + Send)| {
            let mut w = w;
            restore::restore_to_writer(&repo, &s, Some(&globals.name), &mut w)
        };
        let r = db::postgres::restore(&conn, globals, "", mode, 1, &mut gfeed)?;
        done.push((globals.name.clone(), String::new(), r));
    }
    let into = match (&a.into, rec.format.as_str()) {
        (_, "globals") => String::new(),
        (Some(i), _) => i.clone(),
        (None, _) => bail!("give --into NAME: the database (or SQLite file) to restore into"),
    };
    let r = match rec.engine.as_str() {
        "postgres" => db::postgres::restore(&conn, rec, &into, mode, a.jobs, &mut feed)?,
        "mariadb" => db::mariadb::restore(&a.my.conn(&a.container), rec, &into, mode, &mut feed)?,
        "sqlite" => {
            db::sqlite::restore(rec, std::path::Path::new(&into), a.drop_existing, &mut feed)?
        }
        e => bail!("{}: engine {e:?} is not known to this version", rec.name),
    };
    done.push((rec.name.clone(), into, r));
    if a.json {
        let v: Vec<_> = done
            .iter()
            .map(|(src, into, r)| {
                serde_json::json!({"source": src, "into": into, "bytes": r.bytes, "seconds": r.seconds})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        for (src, into, r) in &done {
            let target = if into.is_empty() { "the server" } else { into };
            println!(
                "restored {src} into {target}: {} in {:.1} s",
                tresor::units::human(r.bytes),
                r.seconds
            );
        }
    }
    Ok(exit::OK)
}

pub(super) fn drill(g: &Global, a: DrillArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock_for_reading(g, &mut repo, "drill")?;
    let (id, s) = match &a.snapshot {
        Some(r) => repo.find_snapshot(r)?,
        None => {
            let (snaps, _) = repo.snapshots()?;
            snaps
                .into_iter()
                .rev()
                .find(|(_, s)| !records(s).is_empty())
                .ok_or_else(|| anyhow!("no snapshot has database sources"))?
        }
    };
    let chosen: Vec<&DatabaseRecord> = if a.source.is_empty() {
        records(&s)
    } else {
        a.source
            .iter()
            .map(|w| pick(&s, w))
            .collect::<Result<_>>()?
    };
    if chosen.is_empty() {
        bail!("snapshot {} has no database sources to drill", id.short());
    }
    let conn = a.pg.conn(&a.container);
    let myconn = a.my.conn(&a.container);
    let mut outcomes = Vec::new();
    for rec in chosen {
        let mut feed = |w: &mut (dyn Write + Send)| {
            let mut w = w;
            restore::restore_to_writer(&repo, &s, Some(&rec.name), &mut w)
        };
        let o = db::drill::source(&conn, &myconn, rec, &mut feed)?;
        if !a.json && !g.quiet {
            print_outcome(&o);
        }
        outcomes.push(o);
    }
    let passed = outcomes.iter().all(|o| o.passed());
    if a.json {
        let v = serde_json::json!({
            "snapshot": id.to_hex(),
            "passed": passed,
            "sources": outcomes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(if passed { exit::OK } else { exit::DRILL_FAILED })
}

fn print_outcome(o: &db::drill::Outcome) {
    let counts = if o.counts_recorded {
        format!("{} tables compared", o.tables_checked)
    } else {
        "no row counts recorded (snapshot create --count-rows)".into()
    };
    match o.result.as_str() {
        "ok" => println!(
            "drill {}: ok, restored {} in {:.1} s, {counts}",
            o.source,
            tresor::units::human(o.bytes),
            o.restore_seconds
        ),
        "skipped" => println!(
            "drill {}: skipped: {}",
            o.source,
            o.error.as_deref().unwrap_or("")
        ),
        "mismatch" => {
            println!(
                "drill {}: MISMATCH after restoring in {:.1} s:",
                o.source, o.restore_seconds
            );
            for m in &o.mismatches {
                let n = |v: Option<u64>| v.map_or("missing".to_string(), |n| n.to_string());
                println!(
                    "  {}: recorded {}, restored {}",
                    m.table,
                    n(m.recorded),
                    n(m.restored)
                );
            }
        }
        _ => println!(
            "drill {}: FAILED: {}",
            o.source,
            o.error.as_deref().unwrap_or("")
        ),
    }
}
