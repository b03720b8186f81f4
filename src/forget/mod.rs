//! `tresor snapshot forget`: applies a retention policy (see [`crate::forget::policy`]) to the
//! repository's snapshots, group by group, and removes the snapshot objects it does not keep.
//! Data goes only with a prune afterwards.

#![forbid(unsafe_code)]

pub mod policy;

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::snapshot::{Snapshot, SourceRecord};
use crate::repo::Repo;
use policy::{Candidate, Policy};

/// Which snapshot fields form a group (the policy applies per group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// By host name.
    pub host: bool,
    /// By the sources backed up.
    pub sources: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            sources: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;
    /// `host,sources,tags` in any combination; empty means one group for everything.
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            sources: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "sources" | "paths" => g.sources = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "--group-by: unknown field {other:?} (use host, sources, tags)"
                    )));
                }
            }
        }
        Ok(g)
    }
}

/// A snapshot's sources as one sorted line.
pub fn sources_key(s: &Snapshot) -> String {
    let mut v: Vec<String> = s
        .sources
        .iter()
        .map(|src| match src {
            SourceRecord::Path { path } => path.clone(),
            SourceRecord::Stdin { name } => format!("stdin:{name}"),
            SourceRecord::Command { name, .. } => format!("command:{name}"),
            SourceRecord::Database(d) => format!("database:{}", d.name),
        })
        .collect();
    v.sort();
    v.join(",")
}

/// The group a snapshot belongs to.
pub fn group_key(s: &Snapshot, by: GroupBy) -> String {
    let mut parts = Vec::new();
    if by.host {
        parts.push(format!("host={}", s.host));
    }
    if by.sources {
        parts.push(format!("sources={}", sources_key(s)));
    }
    if by.tags {
        let mut t = s.tags.clone();
        t.sort();
        parts.push(format!("tags={}", t.join(",")));
    }
    parts.join(" ")
}

/// One snapshot's verdict, with what the user needs to see.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    /// Full id.
    pub id: String,
    /// Time (RFC 3339).
    pub time: String,
    /// Host.
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Its group.
    pub group: String,
    /// Kept or removed.
    pub keep: bool,
    /// The rules that keep it (empty when removed), or `named` for an explicit id.
    pub reasons: Vec<String>,
    /// Its root tree (for planning a prune).
    #[serde(skip)]
    pub root: crate::format::id::BlobId,
}

/// Decides, without changing anything. With `named` snapshots, exactly those are removed and
/// the policy must be empty; otherwise the policy decides and must not be empty.
pub fn decide(repo: &Repo, policy: &Policy, by: GroupBy, named: &[String]) -> Result<Vec<Verdict>> {
    let (snaps, _) = repo.snapshots()?;
    if !named.is_empty() {
        if !policy.is_empty() {
            return Err(Error::InvalidArgument(
                "give snapshot ids or a policy (--keep-…), not both".into(),
            ));
        }
        let mut remove = Vec::new();
        for r in named {
            remove.push(repo.find_snapshot(r)?.0);
        }
        return Ok(snaps
            .into_iter()
            .map(|(id, s)| {
                let gone = remove.contains(&id);
                verdict(
                    &id,
                    &s,
                    by,
                    !gone,
                    if gone {
                        vec!["named".into()]
                    } else {
                        vec!["not named".into()]
                    },
                )
            })
            .collect());
    }
    apply_policy(&snaps, policy, by)
}

/// [`decide`] by a policy among the snapshots `only` accepts (those of one job): the others are
/// neither judged nor in the verdicts.
pub fn decide_among(
    repo: &Repo,
    policy: &Policy,
    by: GroupBy,
    only: &dyn Fn(&Snapshot) -> bool,
) -> Result<Vec<Verdict>> {
    let (mut snaps, _) = repo.snapshots()?;
    snaps.retain(|(_, s)| only(s));
    apply_policy(&snaps, policy, by)
}

fn apply_policy(
    snaps: &[(ObjectId, Snapshot)],
    policy: &Policy,
    by: GroupBy,
) -> Result<Vec<Verdict>> {
    if policy.is_empty() {
        return Err(Error::InvalidArgument(
            "no retention policy: give at least one --keep-… option (or snapshot ids); refusing to forget everything".into(),
        ));
    }
    let candidates: Vec<Candidate> = snaps
        .iter()
        .map(|(id, s)| Candidate {
            id: id.to_hex(),
            time: s.timestamp(),
            tags: s.tags.clone(),
            group: group_key(s, by),
        })
        .collect();
    let by_id: std::collections::HashMap<String, &(ObjectId, Snapshot)> =
        snaps.iter().map(|p| (p.0.to_hex(), p)).collect();
    let mut out = Vec::new();
    for d in policy::apply(policy, &candidates) {
        if let Some((id, s)) = by_id.get(&d.id) {
            out.push(verdict(id, s, by, d.keep, d.reasons));
        }
    }
    Ok(out)
}

fn verdict(id: &ObjectId, s: &Snapshot, by: GroupBy, keep: bool, reasons: Vec<String>) -> Verdict {
    Verdict {
        id: id.to_hex(),
        time: s.time.clone(),
        host: s.host.clone(),
        tags: s.tags.clone(),
        group: group_key(s, by),
        keep,
        reasons,
        root: s.root,
    }
}

/// Removes the snapshot objects of the verdicts that do not keep, after a forget record naming
/// them is durable (see [`crate::repo::history`]).
pub fn remove(repo: &Repo, verdicts: &[Verdict]) -> Result<u64> {
    let ids = verdicts
        .iter()
        .filter(|v| !v.keep)
        .map(|v| ObjectId::from_hex(&v.id))
        .collect::<Result<Vec<_>>>()?;
    repo.forget_snapshots(&ids, "snapshot forget")
}
