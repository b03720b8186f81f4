//! Repository upkeep: `check`, `repair`, `repo unlock`, `prune`, `snapshot forget`, `mount`.

use super::*;
/// A check's progress as an indicatif bar (a terminal only).
pub(super) struct CheckBar {
    enabled: bool,
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl CheckBar {
    fn new(g: &Global) -> CheckBar {
        CheckBar {
            enabled: !g.quiet && std::io::stderr().is_terminal(),
            bar: std::sync::Mutex::new(None),
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(b) = b.take()
        {
            b.finish_and_clear();
        }
    }
}

impl PhaseProgress for CheckBar {
    fn phase(&self, name: &str, total: u64) {
        if !self.enabled {
            return;
        }
        self.finish();
        let b = ProgressBar::new(total);
        let unit = if name == "read" {
            "{bytes}/{total_bytes} at {bytes_per_sec}"
        } else {
            "{pos}/{len}"
        };
        if let Ok(style) =
            ProgressStyle::with_template(&format!("{{bar:30}} {name} {unit}, {{elapsed}}"))
        {
            b.set_style(style);
        }
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(b);
        }
    }
    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(b) = b.as_ref()
        {
            b.inc(n);
        }
    }
}

/// `30d`, `12h`, `90m`, `2w`, `45s` → seconds.
pub(super) fn parse_age(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("bad age {s:?}: give a number and a unit, like 30d or 12h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("bad age {s:?}: the unit must be s, m, h, d or w"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("age {s:?} is too large"))
}

/// `5GiB`, `500MB` → bytes (see [`tresor::units::parse_size`]).
pub(super) fn parse_size(s: &str) -> Result<u64> {
    Ok(tresor::units::parse_size(s)?)
}

pub(super) fn check(g: &Global, a: CheckArgs) -> Result<u8> {
    let opts = CheckOptions {
        read_data: a.read_data,
        subset: a
            .read_data_subset
            .as_deref()
            .map(str::parse::<Subset>)
            .transpose()?,
        max_age_secs: a.max_age.as_deref().map(parse_age).transpose()?,
        budget_bytes: a.budget.as_deref().map(parse_size).transpose()?,
    };
    let mut repo = open(g)?;
    lock_for_reading(g, &mut repo, "check")?;
    let progress = CheckBar::new(g);
    let report = check::check(&mut repo, &opts, &progress);
    progress.finish();
    let report = report?;
    if a.json {
        let v = with_requests(&repo, serde_json::to_value(&report)?);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for n in &report.notes {
            println!("note: {n}");
        }
        for p in &report.problems {
            println!("damage: {p}");
        }
        print_affected(&report.affected_snapshots);
        if !report.unindexed_packs.is_empty() && !g.quiet {
            // A running backup indexes its packs in batches: they are not leftovers.
            let ours = repo.lock_name();
            let running: Vec<String> = repo
                .locks()?
                .into_iter()
                .filter(|(n, _)| Some(n) != ours.as_ref())
                .filter_map(|(_, i)| i.ok())
                .filter(|i| i.operation == "snapshot create")
                .map(|i| i.describe())
                .collect();
            if running.is_empty() {
                println!(
                    "{} packs are not indexed (left by an interrupted backup; the next `snapshot create` or `repair index` adopts them)",
                    report.unindexed_packs.len()
                );
            } else {
                println!(
                    "{} packs are not indexed yet: they belong to a backup that is running now ({}); it indexes them as it goes",
                    report.unindexed_packs.len(),
                    running.join("; ")
                );
            }
        }
        if !g.quiet {
            println!(
                "checked {} snapshots, {} index objects, {} packs, {} blobs{}: {}",
                report.snapshots,
                report.index_objects,
                report.packs,
                report.blobs,
                if opts.reads_data() {
                    format!(
                        ", read {} packs ({}){}",
                        report.packs_read,
                        human(report.bytes_read),
                        if report.packs_not_read > 0 {
                            format!(", {} left for later runs", report.packs_not_read)
                        } else {
                            String::new()
                        }
                    )
                } else {
                    String::new()
                },
                if report.is_clean() {
                    "no damage found".to_string()
                } else {
                    format!(
                        "DAMAGE: {} problems, {} snapshots affected",
                        report.problems.len(),
                        report.affected_snapshots.len()
                    )
                }
            );
        }
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

/// Names each affected snapshot and (up to 20 of) its affected paths.
pub(super) fn print_affected(affected: &[check::AffectedSnapshot]) {
    for s in affected {
        let short = &s.id[..s.id.len().min(8)];
        if s.time.is_empty() {
            println!("affected: snapshot {short}: the snapshot object itself is unreadable");
            continue;
        }
        println!(
            "affected: snapshot {short} ({}): {} paths need damaged or missing data",
            s.time,
            s.paths.len()
        );
        for p in s.paths.iter().take(20) {
            println!("  {p}");
        }
        if s.paths.len() > 20 {
            println!("  … and {} more (--json lists all)", s.paths.len() - 20);
        }
    }
}

pub(super) fn repair_index(g: &Global, a: JsonArg) -> Result<u8> {
    let mut repo = open(g)?;
    lock(g, &mut repo, "repair index", true)?;
    let progress = CheckBar::new(g);
    let r = repair::repair_index(&mut repo, &progress);
    progress.finish();
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.unreadable_packs {
            println!("damage: {p} (left in place, not indexed)");
        }
        for p in &r.salvaged_packs {
            println!("damage: {p}");
        }
        if !g.quiet {
            println!(
                "rebuilt the index from {} packs ({} blobs): {} index objects written, {} old ones removed",
                r.packs, r.blobs, r.index_objects_written, r.index_objects_removed
            );
        }
    }
    Ok(if r.found_damage() {
        exit::DAMAGED
    } else {
        exit::OK
    })
}

/// What `repair snapshots` found and did (its `--json` output).
#[derive(serde::Serialize)]
struct SnapshotRepair {
    /// Snapshots that need data that is gone, with the affected paths.
    damaged: Vec<tresor::check::AffectedSnapshot>,
    /// Snapshot objects removed (empty unless `--forget` and not `--dry-run`).
    forgotten: Vec<String>,
    /// Everything the check found, one line each.
    problems: Vec<String>,
}

pub(super) fn repair_snapshots(g: &Global, a: RepairSnapshotsArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock(g, &mut repo, "repair snapshots", a.forget && !a.dry_run)?;
    let progress = CheckBar::new(g);
    let opts = CheckOptions {
        read_data: a.read_data,
        ..Default::default()
    };
    let report = check::check(&mut repo, &opts, &progress);
    progress.finish();
    let report = report?;
    // repair snapshots is the check plus the repository's forget (with its record first).
    let mut r = SnapshotRepair {
        damaged: report.affected_snapshots,
        forgotten: Vec::new(),
        problems: report.problems,
    };
    if a.forget && !a.dry_run {
        let ids = r
            .damaged
            .iter()
            .map(|s| ObjectId::from_hex(&s.id))
            .collect::<tresor::Result<Vec<_>>>()?;
        repo.forget_snapshots(&ids, "repair snapshots --forget (needs data that is gone)")?;
        r.forgotten = r.damaged.iter().map(|s| s.id.clone()).collect();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            println!("damage: {p}");
        }
        print_affected(&r.damaged);
        if !g.quiet {
            let verb = match (a.forget, a.dry_run) {
                (true, true) => "would be forgotten (dry run)",
                (true, false) => "forgotten",
                _ => "found (use --forget to remove them)",
            };
            if r.damaged.is_empty() {
                println!("every snapshot has all its data");
            } else {
                println!("{} damaged snapshots {verb}", r.damaged.len());
            }
        }
    }
    // Damage that remains in the repository is still reported by the exit code.
    Ok(if r.damaged.is_empty() || !r.forgotten.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

pub(super) fn unlock(g: &Global, a: UnlockArgs) -> Result<u8> {
    let repo = open(g)?;
    if a.remove_all {
        eprintln!(
            "tresor: warning: removing every lock, including those of operations that may still run; a running prune or backup may now be disturbed"
        );
    }
    let removed = repo.remove_locks(a.remove_all, &LockTiming::default())?;
    for m in &removed {
        println!("{m}");
    }
    if !g.quiet {
        let left = repo.locks()?;
        println!(
            "{} locks removed, {} held by running operations",
            removed.len(),
            left.len()
        );
        for (_, info) in left {
            if let Ok(i) = info {
                println!("  {}", i.describe());
            }
        }
    }
    Ok(exit::OK)
}

/// `10%` → 0.1 (see [`tresor::units::parse_share`]).
pub(super) fn parse_share(s: &str) -> Result<f64> {
    Ok(tresor::units::parse_share(s)?)
}

pub(super) fn print_plan(p: &tresor::prune::PruneSummary, verb: &str) {
    println!(
        "{} packs ({}) hold {} blobs ({}) that {} kept snapshots need",
        p.packs,
        human(p.pack_bytes),
        p.used_blobs,
        human(p.used_bytes),
        p.snapshots_kept
    );
    println!(
        "{verb} {} unused packs ({}), repack {} packs ({}, copying {}), leave {} unused in packs under the threshold{}",
        p.delete_packs,
        human(p.delete_bytes),
        p.repack_packs,
        human(p.repack_bytes),
        human(p.repack_copy_bytes),
        human(p.unused_bytes_kept),
        if p.missing_packs > 0 {
            format!(
                ", drop {} missing empty packs from the index",
                p.missing_packs
            )
        } else {
            String::new()
        }
    );
    if p.rerooted_blobs > 0 || p.chain_only_bytes > 0 {
        println!(
            "store {} deltas whole again ({}) so the chains below them can go; {} stay only because kept deltas are decoded through them",
            p.rerooted_blobs,
            human(p.rerooted_bytes),
            human(p.chain_only_bytes)
        );
    }
}

pub(super) fn prune(g: &Global, a: PruneArgs) -> Result<u8> {
    let max_unused = parse_share(&a.max_unused)?;
    let mut repo = open(g)?;
    lock(g, &mut repo, "prune", true)?;
    run_prune(
        g,
        &mut repo,
        max_unused,
        a.dry_run,
        a.allow_missing_snapshots,
        a.json,
    )
}

pub(super) fn run_prune(
    g: &Global,
    repo: &mut Repo,
    max_unused: f64,
    dry_run: bool,
    allow_missing: bool,
    json: bool,
) -> Result<u8> {
    if let Some(w) = tresor::prune::guard_missing_snapshots(repo, allow_missing, dry_run)? {
        eprintln!("tresor: warning: {w}");
    }
    if !dry_run {
        // Packs of interrupted backups are judged like the others.
        let adopted = repo.adopt_unindexed()?;
        if adopted.packs > 0 && !g.quiet && !json {
            println!("adopted {} unindexed packs first", adopted.packs);
        }
    }
    let roots = tresor::prune::all_roots(repo)?;
    let plan = tresor::prune::plan(repo, &roots, max_unused)?;
    if dry_run {
        if json {
            let v = with_requests(repo, serde_json::to_value(&plan.summary)?);
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print_plan(&plan.summary, "would delete");
            println!("would free {}", human(plan.summary.bytes_freed));
        }
        return Ok(exit::OK);
    }
    if !json && !g.quiet {
        print_plan(&plan.summary, "deleting");
    }
    let report = tresor::prune::execute(repo, plan)?;
    if json {
        let v = with_requests(repo, serde_json::to_value(&report)?);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        println!(
            "freed {} ({} packs deleted, {} written, {} index objects rewritten)",
            human(report.bytes_freed),
            report.packs_deleted,
            report.packs_written,
            report.index_objects_written
        );
    }
    Ok(exit::OK)
}

pub(super) fn forget(g: &Global, a: ForgetArgs) -> Result<u8> {
    let policy = tresor::forget::policy::Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within_secs: a
            .keep_within
            .as_deref()
            .map(tresor::forget::policy::parse_duration)
            .transpose()
            .map_err(|e| anyhow!("--keep-within: {e}"))?,
        keep_tags: a.keep_tag.clone(),
    };
    let by: tresor::forget::GroupBy = a.group_by.parse()?;
    let max_unused = parse_share(&a.max_unused)?;
    let mut repo = open(g)?;
    lock(g, &mut repo, "snapshot forget", !a.dry_run)?;
    let verdicts = tresor::forget::decide(&repo, &policy, by, &a.ids)?;
    let removed = verdicts.iter().filter(|v| !v.keep).count();
    // What a prune right after would free: plan it with only the kept snapshots.
    let keep_roots: Vec<_> = verdicts.iter().filter(|v| v.keep).map(|v| v.root).collect();
    let predicted = if a.dry_run {
        let (_, damaged) = repo.snapshots()?;
        if damaged.is_empty() {
            Some(tresor::prune::plan(&repo, &keep_roots, max_unused)?.summary)
        } else {
            None
        }
    } else {
        None
    };
    if a.json {
        let v = serde_json::json!({
            "dry_run": a.dry_run,
            "snapshots": verdicts,
            "remove": removed,
            "keep": verdicts.len() - removed,
            "prune_would_free": predicted.as_ref().map(|p| p.bytes_freed),
            "prune_plan": predicted,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut group = None;
        for v in &verdicts {
            if group.as_ref() != Some(&v.group) {
                println!(
                    "group {}",
                    if v.group.is_empty() {
                        "(all)"
                    } else {
                        &v.group
                    }
                );
                group = Some(v.group.clone());
            }
            println!(
                "  {}  {:<20}  {:<6}  {}",
                &v.id[..8],
                v.time.get(..19).unwrap_or(&v.time).replace('T', " "),
                if v.keep { "keep" } else { "remove" },
                v.reasons.join(", ")
            );
        }
        println!(
            "{} snapshots: keep {}, {} {}",
            verdicts.len(),
            verdicts.len() - removed,
            if a.dry_run { "would remove" } else { "remove" },
            removed
        );
        if let Some(p) = &predicted {
            println!("a prune after this would free {}", human(p.bytes_freed));
        }
    }
    if a.dry_run {
        return Ok(exit::OK);
    }
    tresor::forget::remove(&repo, &verdicts)?;
    if a.prune {
        return run_prune(
            g,
            &mut repo,
            max_unused,
            false,
            a.allow_missing_snapshots,
            a.json,
        );
    }
    Ok(exit::OK)
}

pub(super) fn mount(g: &Global, a: MountArgs) -> Result<u8> {
    tresor::mount::preflight(&a.mountpoint)?;
    let mut repo = open(g)?;
    lock_for_reading(g, &mut repo, "mount")?;
    // The first Ctrl-C (or SIGTERM) unmounts: a watcher turns the signal into the stop message.
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("tresor-unmount".into())
        .spawn(move || {
            while tresor::interrupt::received().is_none() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = tx.try_send(());
        })
        .context("starting the signal watcher")?;
    let vfs = tresor::vfs::Vfs::new(repo, a.cache_mib << 20)?;
    if !g.quiet {
        eprintln!(
            "tresor: mounted at {}; Ctrl-C or `fusermount3 -u {}` to unmount",
            a.mountpoint.display(),
            a.mountpoint.display()
        );
    }
    tresor::mount::serve(vfs, &a.mountpoint, rx)?;
    if !g.quiet {
        eprintln!("tresor: unmounted {}", a.mountpoint.display());
    }
    Ok(exit::OK)
}
