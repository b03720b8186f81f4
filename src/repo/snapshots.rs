//! Snapshots: listing and loading them (one damaged object must not hide the others),
//! resolving a reference (`latest`, an id or a unique prefix), saving one last of a backup,
//! and removing them the one way that leaves a forget record first.

use super::Repo;
use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::snapshot::Snapshot;
/// Snapshots with their ids, oldest first.
pub type SnapshotList = Vec<(ObjectId, Snapshot)>;

impl Repo {
    /// Names and sizes of the stored objects of one kind.
    pub(super) fn list_objects(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        self.backend.list(kind)
    }

    /// One stored object's bytes.
    pub(super) fn get_object(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.backend.get(kind, name)
    }

    /// Writes a forget record durably; returns its name.
    pub(crate) fn put_forget_record(
        &self,
        record: &crate::repo::history::ForgetRecord,
    ) -> Result<ObjectId> {
        self.ensure_lock_held()?;
        let (name, bytes) = record.encode(&self.key)?;
        self.backend
            .put(ObjectKind::Forgotten, &name.to_hex(), &bytes)?;
        Ok(name)
    }

    /// Deletes a forget record (only [`crate::repo::history::compact`], after merging it).
    pub(crate) fn delete_forget_record(&self, name: &ObjectId) -> Result<()> {
        self.backend.delete(ObjectKind::Forgotten, &name.to_hex())
    }

    /// Removes snapshot objects the way every removal must: a forget record naming them
    /// (`reason` says why, and each copy's original id) is durable first, then the objects
    /// go. Returns how many went.
    pub fn forget_snapshots(&self, ids: &[ObjectId], reason: &str) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut record = crate::repo::history::ForgetRecord::new(ids, reason);
        // A copy's original goes into the record (so `repo copy` does not bring it back); a
        // snapshot that cannot be read has none to give.
        for (e, id) in record.entries.iter_mut().zip(ids) {
            e.original = self
                .backend
                .get(ObjectKind::Snapshot, &id.to_hex())
                .ok()
                .and_then(|b| Snapshot::decode(&self.key, id, &b).ok())
                .and_then(|s| s.original);
        }
        self.put_forget_record(&record)?;
        for id in ids {
            crate::interrupt::check()?;
            self.backend.delete(ObjectKind::Snapshot, &id.to_hex())?;
        }
        Ok(ids.len() as u64)
    }

    /// Writes a snapshot object, last of a backup: after checking that the lock is still ours
    /// and no signal asked to stop, with the ids of every snapshot present now as its known
    /// snapshots. Returns its id and the snapshot as stored.
    pub fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(ObjectId, Snapshot)> {
        crate::interrupt::check()?;
        self.ensure_lock_held()?;
        let mut known: Vec<String> = self
            .backend
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| ObjectId::from_hex(n).is_ok())
            .collect();
        known.sort();
        snapshot.known_snapshots = known;
        let (id, bytes) = snapshot.encode(&self.key)?;
        self.backend
            .put(ObjectKind::Snapshot, &id.to_hex(), &bytes)?;
        self.catalog
            .remember_snapshots(&[id], chrono::Utc::now().timestamp())?;
        Ok((id, snapshot))
    }

    /// All readable snapshots, oldest first, and one line per snapshot object that cannot be
    /// read (naming it): one damaged snapshot must not hide the others.
    pub fn snapshots(&self) -> Result<(SnapshotList, Vec<String>)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let mut named = Vec::new();
        for (name, _) in self.backend.list(ObjectKind::Snapshot)? {
            match ObjectId::from_hex(&name) {
                Ok(id) => named.push((id, name)),
                Err(e) => damaged.push(format!("snapshot object {name}: {e}")),
            }
        }
        // Several at a time: over object storage each is a round trip.
        // Failing to read is an error of the storage, not damage of this object.
        let backend = &self.backend;
        let stored = crate::parallel::try_map(
            crate::parallel::small_requests(self.connections),
            &named,
            |(_, name)| backend.get(ObjectKind::Snapshot, name),
        )?;
        for ((id, name), bytes) in named.into_iter().zip(stored) {
            match Snapshot::decode(&self.key, &id, &bytes) {
                Ok(s) => out.push((id, s)),
                Err(e) => damaged.push(format!("snapshot object {name}: {e}")),
            }
        }
        out.sort_by(|a, b| a.1.timestamp().cmp(&b.1.timestamp()).then(a.0.cmp(&b.0)));
        // What this machine has seen, it will notice missing (see `history`).
        let ids: Vec<ObjectId> = out.iter().map(|(id, _)| *id).collect();
        self.catalog
            .remember_snapshots(&ids, chrono::Utc::now().timestamp())?;
        Ok((out, damaged))
    }

    /// Resolves `latest`, a full id or a unique id prefix.
    pub fn find_snapshot(&self, reference: &str) -> Result<(ObjectId, Snapshot)> {
        if reference == "latest" {
            let (mut snaps, damaged) = self.snapshots()?;
            // `latest` must not silently mean an older snapshot than the newest one.
            if let Some(d) = damaged.into_iter().next() {
                return Err(Error::corrupt(
                    d,
                    "cannot tell which snapshot is the latest; name the snapshot by id, or remove the damaged one with `tresor repair snapshots --forget`",
                ));
            }
            return snaps.pop().ok_or_else(|| {
                Error::SnapshotNotFound("latest (the repository has no snapshots)".into())
            });
        }
        let r = reference.to_ascii_lowercase();
        if r.is_empty() || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(reference.into()));
        }
        let matches: Vec<String> = self
            .backend
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&r))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound(reference.into())),
            1 => {
                let id = ObjectId::from_hex(&matches[0])?;
                let s = Snapshot::decode(
                    &self.key,
                    &id,
                    &self.backend.get(ObjectKind::Snapshot, &matches[0])?,
                )?;
                Ok((id, s))
            }
            n => Err(Error::AmbiguousSnapshot {
                prefix: reference.into(),
                count: n,
            }),
        }
    }
}
