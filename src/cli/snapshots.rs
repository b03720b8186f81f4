//! Snapshot commands: `snapshot create`, `list`, `show`, `restore`, `ls`, `diff`, and `stats`.

use super::*;
pub(super) fn create(g: &Global, a: CreateArgs) -> Result<u8> {
    let mut sources: Vec<SourceSpec> = a.paths.iter().cloned().map(SourceSpec::Path).collect();
    if a.stdin && !a.command.is_empty() {
        bail!("--stdin and --command both want to be the stream; give one");
    }
    if a.stdin && std::io::stdin().is_terminal() {
        bail!(
            "--stdin reads the data to back up from standard input, which is a terminal here; pipe the data in (e.g. `pg_dump shop | tresor snapshot create --stdin`)"
        );
    }
    if a.stdin {
        sources.push(SourceSpec::Stdin {
            name: a.stdin_name.clone(),
        });
    }
    let single = a.command.len() == 1;
    for c in &a.command {
        let (name, command) = match split_named_command(c) {
            Some((n, cmd)) => (n.to_string(), cmd.to_string()),
            None if single => (a.stdin_name.clone(), c.clone()),
            None => bail!(
                "with several --command options, name each output: --command NAME=CMD (e.g. shop.sql='pg_dump shop'); {c:?} has no name"
            ),
        };
        sources.push(SourceSpec::Command { name, command });
    }
    sources.extend(database_sources(&a)?);
    if sources.is_empty() {
        bail!(
            "nothing to back up: give paths, --stdin, --command, --postgres, --mariadb or --sqlite"
        );
    }
    let mut repo = open(g)?;
    lock(g, &mut repo, "snapshot create", false)?;
    let progress = Bar(bar(g, "read"));
    let mut patterns = a.exclude.clone();
    for f in &a.exclude_file {
        patterns.extend(tresor::source::exclude::read_patterns(f)?);
    }
    let opts = CreateOptions {
        sources,
        tags: a.tag,
        host: a.host,
        parent: a.parent,
        force: a.force,
        excludes: tresor::format::snapshot::ExcludeRecord {
            patterns,
            if_present: a.exclude_if_present,
            caches: a.exclude_caches,
            one_file_system: a.one_file_system,
        },
    };
    let result = backup::create(&mut repo, &opts, &progress);
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    let r = result?;
    let s = &r.snapshot.summary;
    if a.json {
        let v = serde_json::json!({
            "id": r.id.to_hex(),
            "short_id": r.id.short(),
            "time": r.snapshot.time,
            "files": s.files,
            "dirs": s.dirs,
            "symlinks": s.symlinks,
            "bytes_read": s.bytes_read,
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "parent": r.snapshot.parent,
            "bytes_added": s.bytes_added,
            "data_added": s.data_added,
            "blobs_added": s.blobs_added,
            "blobs_reused": s.blobs_reused,
            "blobs_delta": s.blobs_delta,
            "duration_seconds": s.duration_seconds,
            "command_exit_status": s.command_exit_status,
            "incomplete": s.incomplete,
            "errors": s.errors,
            "adopted_packs": r.adopted_packs,
        });
        let v = with_requests(&repo, v);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        if r.adopted_packs > 0 {
            println!(
                "adopted {} packs left by an interrupted backup; their data was reused",
                r.adopted_packs
            );
        }
        println!(
            "snapshot {} saved: {} files ({} new, {} changed, {} unchanged), {} read, {} added, {:.1} s{}",
            r.id.short(),
            s.files,
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            human(s.bytes_read),
            human(s.bytes_added),
            s.duration_seconds,
            if s.incomplete {
                format!(
                    " — INCOMPLETE: {} entries could not be read",
                    s.errors.len()
                )
            } else {
                String::new()
            }
        );
    }
    Ok(if s.incomplete {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

/// `shop.sql=pg_dump shop` → ("shop.sql", "pg_dump shop"). A prefix that looks like a shell
/// variable assignment (`PGHOST=db pg_dump`, upper-case letters, digits and `_`) is not a name.
pub(super) fn split_named_command(c: &str) -> Option<(&str, &str)> {
    let (name, cmd) = c.split_once('=')?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'));
    let shell_var = name
        .chars()
        .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_');
    (valid && !shell_var && !cmd.trim().is_empty()).then_some((name, cmd))
}

/// Paths as the snapshot stores them, one per source.
pub(super) fn stored_paths(s: &Snapshot) -> Vec<String> {
    s.sources
        .iter()
        .map(|src| match src {
            SourceRecord::Path { path } => path.trim_start_matches('/').to_string(),
            SourceRecord::Stdin { name } | SourceRecord::Command { name, .. } => name.clone(),
            SourceRecord::Database(d) => d.name.clone(),
        })
        .collect()
}

pub(super) fn source_text(src: &SourceRecord) -> String {
    match src {
        SourceRecord::Path { path } => path.clone(),
        SourceRecord::Stdin { name } => format!("stdin:{name}"),
        SourceRecord::Command { command, name } => {
            // One line in tables, however the command was written.
            let flat: String = command.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = flat.chars().take(60).collect();
            let more = if short.len() < flat.len() { "…" } else { "" };
            format!("command:{name}={short}{more}")
        }
        SourceRecord::Database(d) => format!("{}:{}", d.engine, d.name),
    }
}

pub(super) fn snapshot_json(id: &ObjectId, s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.time,
        "host": s.host,
        "username": s.username,
        "tags": s.tags,
        "sources": s.sources,
        "paths": stored_paths(s),
        "root": s.root.to_hex(),
        "parent": s.parent,
        "original": s.original,
        "excludes": s.excludes,
        "summary": s.summary,
    })
}

pub(super) fn list(g: &Global, a: JsonArg) -> Result<u8> {
    let repo = open(g)?;
    let (snaps, damaged) = repo.snapshots()?;
    for d in &damaged {
        eprintln!("tresor: error: {d} (run `tresor check`)");
    }
    // The list is shown, but a damaged snapshot object is never a silent omission.
    let code = if damaged.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let v: Vec<_> = snaps.iter().map(|(id, s)| snapshot_json(id, s)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(code);
    }
    writeln!(
        out,
        "{:<8}  {:<20}  {:<16}  {:<16}  {:>10}  sources",
        "id", "time (UTC)", "host", "tags", "size"
    )?;
    for (id, s) in &snaps {
        let sources: Vec<String> = s.sources.iter().map(source_text).collect();
        writeln!(
            out,
            "{:<8}  {:<20}  {:<16}  {:<16}  {:>10}  {}",
            id.short(),
            s.timestamp().format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.tags.join(","),
            human(s.summary.bytes_read),
            sources.join(" ")
        )?;
    }
    if !g.quiet {
        writeln!(out, "{} snapshots", snaps.len())?;
    }
    Ok(code)
}

pub(super) fn show(g: &Global, a: ShowArgs) -> Result<u8> {
    let repo = open(g)?;
    let (id, s) = repo.find_snapshot(&a.snapshot)?;
    let (all, _) = repo.snapshots()?;
    let others: Vec<_> = all
        .iter()
        .filter(|(i, _)| *i != id)
        .map(|(_, o)| o.root)
        .collect();
    let base = match &a.since {
        Some(r) => Some(repo.find_snapshot(r)?),
        None => None,
    };
    let cost = tresor::usage::snapshot_cost(&repo, &s, &others, base.as_ref().map(|b| &b.1.root))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = snapshot_json(&id, &s);
        v["cost"] = serde_json::to_value(&cost)?;
        if let Some((bid, _)) = &base {
            v["cost"]["base"] = serde_json::Value::from(bid.to_hex());
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(exit::OK);
    }
    let sm = &s.summary;
    writeln!(out, "snapshot  {}", id.to_hex())?;
    writeln!(out, "time      {}", s.time)?;
    writeln!(out, "host      {}", s.host)?;
    writeln!(out, "user      {}", s.username)?;
    writeln!(out, "tags      {}", s.tags.join(", "))?;
    writeln!(out, "sources")?;
    for (src, p) in s.sources.iter().zip(stored_paths(&s)) {
        writeln!(out, "  {:<40} stored as {p}", source_text(src))?;
    }
    writeln!(
        out,
        "files     {} ({} dirs, {} symlinks, {} special files)",
        sm.files, sm.dirs, sm.symlinks, sm.specials
    )?;
    writeln!(
        out,
        "changes   {} new, {} changed, {} unchanged (parent {})",
        sm.files_new,
        sm.files_changed,
        sm.files_unchanged,
        s.parent.as_deref().unwrap_or("none")
    )?;
    if let Some(x) = &s.excludes {
        writeln!(
            out,
            "excludes  {}",
            serde_json::to_string(x).unwrap_or_default()
        )?;
    }
    writeln!(out, "read      {}", human(sm.bytes_read))?;
    writeln!(
        out,
        "added     {} ({} new blobs, {} reused)",
        human(sm.bytes_added),
        sm.blobs_added,
        sm.blobs_reused
    )?;
    writeln!(
        out,
        "needs     {} in {} blobs; only it: {} (what forgetting it frees)",
        human(cost.referenced.stored),
        cost.referenced.blobs,
        human(cost.unique.stored)
    )?;
    if let (Some(b), Some((bid, _))) = (&cost.beyond_base, &base) {
        writeln!(
            out,
            "since     {}: needs {} beyond it ({} blobs)",
            bid.short(),
            human(b.stored),
            b.blobs
        )?;
    }
    writeln!(out, "duration  {:.1} s", sm.duration_seconds)?;
    writeln!(
        out,
        "complete  {}",
        if sm.incomplete {
            "NO — some sources could not be read:"
        } else {
            "yes"
        }
    )?;
    for e in &sm.errors {
        writeln!(out, "  {e}")?;
    }
    Ok(exit::OK)
}

pub(super) fn restore(g: &Global, a: RestoreArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock_for_reading(g, &mut repo, "snapshot restore")?;
    let (id, s) = repo.find_snapshot(&a.snapshot)?;
    if a.stdout {
        let mut out = std::io::stdout();
        restore::restore_to_writer(&repo, &s, a.path.as_deref(), &mut out)?;
        return Ok(exit::OK);
    }
    let target = a
        .target
        .ok_or_else(|| anyhow!("give --target DIR or --stdout"))?;
    let opts = restore::RestoreOptions {
        include: a.include,
        exclude: a.exclude,
        overwrite: match a.overwrite {
            OverwriteArg::Always => restore::Overwrite::Always,
            OverwriteArg::IfChanged => restore::Overwrite::IfChanged,
            OverwriteArg::Never => restore::Overwrite::Never,
        },
    };
    let started = std::time::Instant::now();
    let sum = restore::restore_to_dir(&repo, &s, a.path.as_deref(), &target, &opts)?;
    let seconds = started.elapsed().as_secs_f64();
    for w in &sum.warnings {
        eprintln!("tresor: warning: {w}");
    }
    for f in &sum.failures {
        eprintln!("tresor: not restored: {f}");
    }
    let verified = if a.verify {
        let report = restore::verify_restore(&repo, &s, a.path.as_deref(), &target, &opts)?;
        for m in &report.mismatches {
            eprintln!("tresor: mismatch: {}: {}", m.path.display(), m.reason);
        }
        Some(report)
    } else {
        None
    };
    if a.json {
        let v = serde_json::json!({
            "snapshot": id.to_hex(),
            "target": target.to_string_lossy(),
            "summary": &sum,
            "verify": &verified,
            "seconds": seconds,
        });
        let v = with_requests(&repo, v);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        println!(
            "restored snapshot {} to {}: {} files written ({}), {} kept ({}), {} dirs, {} symlinks, \
             {} hard links, {} special files, {} warnings, {} not restored in {:.1} s",
            id.short(),
            target.display(),
            sum.files,
            human(sum.bytes),
            sum.files_skipped,
            human(sum.bytes_skipped),
            sum.dirs,
            sum.symlinks,
            sum.hardlinks,
            sum.specials,
            sum.warnings.len(),
            sum.failures.len(),
            seconds
        );
        if let Some(r) = &verified {
            println!(
                "verified {} files ({}): {} mismatches",
                r.files,
                human(r.bytes),
                r.mismatches.len()
            );
        }
    }
    if let Some(r) = &verified
        && let Some(first) = r.mismatches.first()
    {
        let reason = if r.mismatches.len() > 1 {
            format!(
                "{} (and {} more files)",
                first.reason,
                r.mismatches.len() - 1
            )
        } else {
            first.reason.clone()
        };
        return Err(anyhow::Error::new(Error::Mismatch {
            path: first.path.clone(),
            reason,
        }));
    }
    Ok(if sum.failures.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

/// The type letter `ls -l` uses (`f` for a regular file, as in `find -type`).
pub(super) fn kind_letter(kind: &str) -> char {
    match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "fifo" => 'p',
        "chardev" => 'c',
        "blockdev" => 'b',
        "socket" => 's',
        _ => 'f',
    }
}

pub(super) fn ls(g: &Global, a: LsArgs) -> Result<u8> {
    let repo = open(g)?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let entries = tresor::listing::ls(&repo, &snap, a.path.as_deref(), a.recursive)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(exit::OK);
    }
    for e in &entries {
        writeln!(
            out,
            "{} {:>6} {:>12}  {}  {}{}",
            kind_letter(e.kind),
            e.mode,
            e.size,
            e.mtime.get(..19).unwrap_or(&e.mtime).replace('T', " "),
            e.path,
            e.target
                .as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default()
        )?;
    }
    Ok(exit::OK)
}

pub(super) fn diff(g: &Global, a: DiffArgs) -> Result<u8> {
    let repo = open(g)?;
    let (_, sa) = repo.find_snapshot(&a.a)?;
    let (_, sb) = repo.find_snapshot(&a.b)?;
    let (changes, summary) = tresor::listing::diff(&repo, &sa, &sb)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({ "changes": changes, "summary": summary });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(exit::OK);
    }
    for c in &changes {
        let mark = match c.change {
            "added" => "+",
            "removed" => "-",
            _ => "M",
        };
        let size = match (c.size_before, c.size_after) {
            (Some(x), Some(y)) if x != y => format!("  ({} -> {})", human(x), human(y)),
            (None, Some(y)) | (Some(y), None) => format!("  ({})", human(y)),
            _ => String::new(),
        };
        writeln!(
            out,
            "{mark} {}{}{size}",
            c.path,
            if c.kind == "dir" { "/" } else { "" }
        )?;
    }
    writeln!(
        out,
        "{} added ({}), {} removed ({}), {} modified",
        summary.added,
        human(summary.bytes_added),
        summary.removed,
        human(summary.bytes_removed),
        summary.modified
    )?;
    Ok(exit::OK)
}

pub(super) fn stats(g: &Global, a: JsonArg) -> Result<u8> {
    let repo = open(g)?;
    let st = tresor::usage::repo_stats(&repo)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(exit::OK);
    }
    println!("snapshots         {}", st.snapshots);
    println!("chunks            {} (+ {} trees)", st.chunks, st.trees);
    println!("snapshots hold    {}", human(st.logical_bytes));
    println!(
        "distinct data     {} (dedup {:.2}x)",
        human(st.raw_bytes),
        st.dedup_ratio
    );
    println!(
        "after compression {} (compression {:.2}x)",
        human(st.blob_bytes),
        st.compression_ratio
    );
    println!(
        "repository        {} (overall {:.2}x)",
        human(st.stored_bytes),
        st.total_ratio
    );
    Ok(exit::OK)
}
