//! `repo copy`: opens the source (shared lock) and the target (lock for writing), runs
//! [`tresor::copy::copy`] and reports like `snapshot create` (a summary line, or `--json`).

use super::*;

/// Progress of a copy: plaintext bytes stored, on a spinner (a terminal only).
struct CopyBar(Option<ProgressBar>);

impl PhaseProgress for CopyBar {
    fn advance(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

pub(super) fn repo_copy(g: &Global, a: CopyArgs) -> Result<u8> {
    let (mut target, pw) = open_keeping_password(g)?;
    let mut source = open_source(g, &a.from, &a.from_password, &pw)?;
    drop(pw);
    if a.dry_run {
        lock_for_reading(g, &mut target, "repo copy --dry-run")?;
    } else {
        lock(g, &mut target, "repo copy", false)?;
    }
    lock_for_reading(g, &mut source, "repo copy (source)").context("locking the source")?;
    let opts = tresor::copy::CopyOptions {
        snapshots: a.snapshots,
        hosts: a.host,
        tags: a.tag,
        dry_run: a.dry_run,
    };
    let progress = CopyBar(bar(g, "copied"));
    let result = tresor::copy::copy(&source, &mut target, &opts, &progress);
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    let r = result?;
    if a.json {
        // `requests`: the target's; `source_requests`: the source's.
        let mut v = with_requests(&target, serde_json::to_value(&r)?);
        if let (Some(obj), Some(src)) = (
            v.as_object_mut(),
            with_requests(&source, serde_json::json!({})).get("requests"),
        ) {
            obj.insert("source_requests".into(), src.clone());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    if g.quiet {
        return Ok(exit::OK);
    }
    if r.adopted_packs > 0 {
        println!(
            "adopted {} packs left by an interrupted run; their data was reused",
            r.adopted_packs
        );
    }
    for c in &r.copied {
        match &c.target_id {
            Some(t) => println!(
                "copied snapshot {} of {} ({}) as {}",
                &c.source_id[..8],
                c.host,
                c.time,
                &t[..8]
            ),
            None => println!(
                "would copy snapshot {} of {} ({})",
                &c.source_id[..8],
                c.host,
                c.time
            ),
        }
    }
    if a.dry_run {
        println!(
            "dry run: {} snapshots to copy, {} already in the target{}",
            r.copied.len(),
            r.skipped,
            forgotten(r.skipped_forgotten)
        );
    } else {
        println!(
            "{} snapshots copied, {} already in the target{}: {} blobs stored ({} deltas), {} reused, {} read, {} added, {:.1} s{}",
            r.copied.len(),
            r.skipped,
            forgotten(r.skipped_forgotten),
            r.blobs_copied,
            r.blobs_delta,
            r.blobs_reused,
            human(r.bytes_read),
            human(r.bytes_added),
            r.duration_seconds,
            if r.shared_content || r.copied.is_empty() {
                ""
            } else {
                " (the repositories do not share chunker params: every blob was read and re-hashed; see `repo init --copy-chunker-params-from`)"
            }
        );
    }
    Ok(exit::OK)
}

fn forgotten(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} forgotten there (not copied again)")
    }
}
