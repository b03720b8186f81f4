//! Snapshot history: which snapshots the repository has had, so that one that disappears
//! without `snapshot forget` is noticed before a prune frees its data.
//!
//! Anyone with write access to the storage can delete a snapshot object, or roll the
//! `snapshots/` directory back to an older copy, without the key. Three records make that
//! visible:
//!
//! 1. **Forget records** (`forgotten/`, sealed, named by the hash of their bytes): every removal
//!    of snapshot objects by tresor — `snapshot forget`, `repair snapshots --forget`, `prune
//!    --allow-missing-snapshots` — first writes a record naming the snapshots, when, by whom and
//!    why, durably; only then are the snapshot objects deleted. Without the key nobody can
//!    write one.
//! 2. **Known snapshots** in each new snapshot object: the ids of every snapshot present when it
//!    was written.
//! 3. **Snapshots seen** by this machine, in the local catalog.
//!
//! A snapshot named by (2) or (3) that is neither present nor named by a forget record is
//! *missing*: `check` reports it (damage) and `prune` refuses to run until the user confirms.
//! A snapshot that is present although a forget record names it was *resurrected* (a forget
//! interrupted between its record and its deletions, or an old object put back): a note.
//!
//! Order matters for concurrent runs: snapshots are listed before forget records, and a forget
//! writes its record before it deletes, so a concurrent forget never looks like a deletion.
//! docs/reliability.md states what this can and cannot detect.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::format;
use crate::format::crypto::MasterKey;
use crate::format::id::ObjectId;
use crate::repo::Repo;

/// One snapshot removed by tresor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetEntry {
    /// The snapshot's id.
    pub snapshot: String,
    /// When it was removed (RFC 3339).
    pub time: String,
    /// Host that removed it.
    pub host: String,
    /// User who removed it.
    pub user: String,
    /// Why: `snapshot forget`, `repair snapshots --forget`, `prune --allow-missing-snapshots`.
    pub reason: String,
    /// The removed snapshot's `original` (it was a copy made by `repo copy`), so a later copy
    /// does not bring back what this repository's retention removed. Absent for snapshots made
    /// by a backup here (their id is their original) and in records older than `repo copy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

/// A forget record object: one or more entries (prune merges records into one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRecord {
    /// [`format::FORGET_RECORD_VERSION`].
    pub version: u32,
    /// The snapshots it names.
    pub entries: Vec<ForgetEntry>,
}

impl ForgetRecord {
    /// A record naming `ids`, removed now by this host and user for `reason`.
    pub fn new(ids: &[ObjectId], reason: &str) -> ForgetRecord {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (host, user) = (crate::repo::hostname(), crate::repo::username());
        ForgetRecord {
            version: format::FORGET_RECORD_VERSION,
            entries: ids
                .iter()
                .map(|id| ForgetEntry {
                    snapshot: id.to_hex(),
                    time: time.clone(),
                    host: host.clone(),
                    user: user.clone(),
                    reason: reason.to_string(),
                    original: None,
                })
                .collect(),
        }
    }

    /// Seals the record; returns (name, stored bytes).
    pub fn encode(&self, key: &MasterKey) -> Result<(ObjectId, Vec<u8>)> {
        key.seal_json(format::aad::FORGOTTEN, self)
    }

    /// Checks the name, opens and parses a record.
    pub fn decode(key: &MasterKey, name: &ObjectId, stored: &[u8]) -> Result<ForgetRecord> {
        let what = || format!("forget record {}", name.to_hex());
        let r: ForgetRecord = key.open_named_json(format::aad::FORGOTTEN, name, stored, &what)?;
        if r.version != format::FORGET_RECORD_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "forget record",
                found: r.version,
                supported: format::FORGET_RECORD_VERSION,
            });
        }
        for e in &r.entries {
            ObjectId::from_hex(&e.snapshot)
                .map_err(|_| Error::corrupt(what(), "names a snapshot by a bad id"))?;
        }
        Ok(r)
    }
}

/// A snapshot that disappeared without a forget record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MissingSnapshot {
    /// Its id.
    pub id: String,
    /// What says it existed.
    pub evidence: String,
}

/// What [`audit`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistoryReport {
    /// Snapshot objects present (readable or not).
    pub present: u64,
    /// Forget records read, and the snapshots they name.
    pub records: u64,
    /// Snapshots named by forget records.
    pub forgotten: u64,
    /// Snapshots known to have existed that are gone without a forget record.
    pub missing: Vec<MissingSnapshot>,
    /// Snapshots present although a forget record names them.
    pub resurrected: Vec<String>,
    /// Forget records that cannot be read.
    pub damaged_records: Vec<String>,
}

/// Forget records with their names.
pub type Records = Vec<(ObjectId, ForgetRecord)>;

/// Every forget record: (name, record), plus one line per record that cannot be read.
pub fn records(repo: &Repo) -> Result<(Records, Vec<String>)> {
    let mut out = Vec::new();
    let mut damaged = Vec::new();
    for (name, _) in repo.list_objects(ObjectKind::Forgotten)? {
        let decoded = ObjectId::from_hex(&name).and_then(|id| {
            let bytes = repo.get_object(ObjectKind::Forgotten, &name)?;
            ForgetRecord::decode(repo.key(), &id, &bytes).map(|r| (id, r))
        });
        match decoded {
            Ok(r) => out.push(r),
            Err(Error::Missing { .. }) => {}
            Err(e @ (Error::Io { .. } | Error::NoSpace { .. } | Error::Storage { .. })) => {
                return Err(e);
            }
            Err(e) => damaged.push(format!("forget record {name}: {e}")),
        }
    }
    Ok((out, damaged))
}

/// The snapshots this repository's forget records name: their ids and, for copies, their
/// original ids (see [`ForgetEntry::original`]); `repo copy` does not copy these again.
pub fn forgotten_originals(repo: &Repo) -> Result<HashSet<String>> {
    let (records, _) = records(repo)?;
    Ok(records
        .iter()
        .flat_map(|(_, r)| r.entries.iter())
        .flat_map(|e| std::iter::once(e.snapshot.clone()).chain(e.original.clone()))
        .collect())
}

/// Compares what is present with what is known to have existed (see the module
/// documentation).
pub fn audit(repo: &Repo) -> Result<HistoryReport> {
    // Snapshots first, then forget records (a concurrent forget writes its record first).
    let (snaps, _) = repo.snapshots()?;
    let present: HashSet<String> = repo
        .list_objects(ObjectKind::Snapshot)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let (records, damaged_records) = records(repo)?;
    let forgotten: HashSet<&str> = records
        .iter()
        .flat_map(|(_, r)| r.entries.iter().map(|e| e.snapshot.as_str()))
        .collect();
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    for (id, s) in &snaps {
        for k in &s.known_snapshots {
            known.entry(k.clone()).or_insert_with(|| {
                format!(
                    "snapshot {} ({}) lists it as present when it was written",
                    id.short(),
                    s.time
                )
            });
        }
    }
    for (id, at) in repo.catalog().seen_snapshots()? {
        let when = chrono::DateTime::from_timestamp(at, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        known
            .entry(id.to_hex())
            .or_insert_with(|| format!("this machine saw it in the repository on {when}"));
    }
    let missing = known
        .into_iter()
        .filter(|(id, _)| !present.contains(id) && !forgotten.contains(id.as_str()))
        .map(|(id, evidence)| MissingSnapshot { id, evidence })
        .collect();
    let mut resurrected: Vec<String> = present
        .iter()
        .filter(|p| forgotten.contains(p.as_str()))
        .cloned()
        .collect();
    resurrected.sort();
    Ok(HistoryReport {
        present: present.len() as u64,
        records: records.len() as u64,
        forgotten: forgotten.len() as u64,
        missing,
        resurrected,
        damaged_records,
    })
}

/// Merges every forget record into one (written durably before the others are deleted, so a
/// crash leaves entries twice at worst). Returns how many records were merged.
pub fn compact(repo: &Repo) -> Result<u64> {
    let (records, damaged) = records(repo)?;
    if records.len() < 2 || !damaged.is_empty() {
        return Ok(0);
    }
    let mut seen: HashMap<String, ForgetEntry> = HashMap::new();
    for (_, r) in &records {
        for e in &r.entries {
            seen.entry(e.snapshot.clone()).or_insert_with(|| e.clone());
        }
    }
    let mut entries: Vec<ForgetEntry> = seen.into_values().collect();
    entries.sort_by(|a, b| a.time.cmp(&b.time).then(a.snapshot.cmp(&b.snapshot)));
    let merged = ForgetRecord {
        version: format::FORGET_RECORD_VERSION,
        entries,
    };
    let name = repo.put_forget_record(&merged)?;
    let mut n = 0;
    for (id, _) in &records {
        if *id != name {
            repo.delete_forget_record(id)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_damage_or_another_kind() {
        let k = MasterKey::from_secret([6; 32]);
        let r = ForgetRecord::new(&[ObjectId([1; 32]), ObjectId([2; 32])], "snapshot forget");
        let (name, bytes) = r.encode(&k).unwrap();
        assert_eq!(ForgetRecord::decode(&k, &name, &bytes).unwrap(), r);
        assert_eq!(r.entries[1].snapshot, ObjectId([2; 32]).to_hex());
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert!(ForgetRecord::decode(&k, &ObjectId::of_bytes(&bad), &bad).is_err());
        // A snapshot object sealed with the same key is not a forget record.
        let other = k.seal(format::aad::SNAPSHOT, b"{}").unwrap();
        let err = ForgetRecord::decode(&k, &ObjectId::of_bytes(&other), &other).unwrap_err();
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }
}
