//! The repository's stored objects by kind, for operations that walk or rewrite them (check,
//! prune, repair): index objects, packs, snapshot names, what the storage holds in bytes, and
//! the catalog's rebuild from the index objects. Writing new packs and index objects is the
//! [`super::Packer`]'s job; snapshots are saved and removed in `snapshots.rs`.

use super::Repo;
use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::id::ObjectId;
use crate::format::index::{self, IndexedPack};
use crate::format::snapshot::Snapshot;

impl Repo {
    /// Names of the index objects.
    pub fn index_names(&self) -> Result<Vec<String>> {
        Ok(self
            .backend
            .list(ObjectKind::Index)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// The packs an index object lists; a name that is not an object id is damage.
    pub fn load_index(&self, name: &str) -> Result<Vec<IndexedPack>> {
        let id = ObjectId::from_hex(name)?;
        index::decode(&self.key, &id, &self.backend.get(ObjectKind::Index, name)?)
    }

    /// Deletes an index object (only once what replaces it is durable).
    pub fn delete_index(&self, name: &str) -> Result<()> {
        self.backend.delete(ObjectKind::Index, name)
    }

    /// Deletes a pack (only once no index object lists it).
    pub fn delete_pack(&self, id: &ObjectId) -> Result<()> {
        self.backend.delete(ObjectKind::Pack, &id.to_hex())
    }

    /// The stored packs with their sizes (names that are not pack ids are left out; `check`
    /// and `repair` report those).
    pub fn stored_packs(&self) -> Result<Vec<(ObjectId, u64)>> {
        Ok(self
            .backend
            .list(ObjectKind::Pack)?
            .into_iter()
            .filter_map(|(n, s)| ObjectId::from_hex(&n).ok().map(|id| (id, s)))
            .collect())
    }

    /// Reads and decodes the snapshot object `name`.
    pub fn load_snapshot(&self, name: &str) -> Result<Snapshot> {
        let id = ObjectId::from_hex(name)?;
        Snapshot::decode(
            &self.key,
            &id,
            &self.backend.get(ObjectKind::Snapshot, name)?,
        )
    }

    /// Names of the snapshot objects (readable or not).
    pub fn snapshot_names(&self) -> Result<Vec<String>> {
        Ok(self
            .backend
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// Bytes of packs and index objects stored.
    pub fn stored_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for kind in [ObjectKind::Pack, ObjectKind::Index] {
            total += self
                .backend
                .list(kind)?
                .iter()
                .map(|(_, s)| *s)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Rebuilds the catalog from the index objects (after prune or repair rewrote them);
    /// returns one line per index object that could not be read.
    pub fn rebuild_catalog(&mut self) -> Result<Vec<String>> {
        self.catalog.rebuild(
            self.backend.as_ref(),
            &self.key,
            crate::parallel::small_requests(self.connections),
        )
    }

    /// Records that `packs` were read whole and found intact at `at` (the check ledger).
    pub fn mark_verified(&mut self, packs: &[ObjectId], at: i64) -> Result<()> {
        self.catalog.mark_verified(packs, at)
    }
}
