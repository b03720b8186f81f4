//! What the repository tells the catalog: syncing and rebuilding it from the index objects,
//! each new index object, which packs the storage still holds, which packs a check read whole,
//! which snapshots were seen. Only `repo/` calls these.

use std::collections::HashSet;

use rusqlite::params;

use super::*;

impl Catalog {
    /// Brings the catalog up to date with the repository's index objects: one listing, then
    /// the index objects it does not know yet, read `connections` at a time (in batches, so
    /// memory holds a batch of them, not all).
    ///
    /// An index object that is missing or cannot be decoded is skipped, not fatal (a storage or
    /// I/O error reading it is returned: it says nothing about the object): one damaged object
    /// must not lock the operator out of every other snapshot (or out of `check`). Its blobs are
    /// then unknown: a backup stores them again, a restore that needs them fails naming the
    /// blob. The returned list names each skipped object and why; it is retried next time.
    pub(in crate::repo) fn sync(
        &mut self,
        backend: &dyn Backend,
        key: &MasterKey,
        connections: usize,
    ) -> Result<Vec<String>> {
        let listed: HashSet<String> = backend
            .list(ObjectKind::Index)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let known: HashSet<String> = {
            let mut st = sql("list", self.conn.prepare("SELECT name FROM index_objects"))?;
            let rows = sql("list", st.query_map([], |r| r.get::<_, String>(0)))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| Error::catalog("list", e))?
        };
        if !known.is_subset(&listed) {
            self.clear()?;
            return self.sync(backend, key, connections);
        }
        let mut skipped = Vec::new();
        let mut missing: Vec<&String> = listed.difference(&known).collect();
        missing.sort();
        for batch in missing.chunks(connections.max(1) * 2) {
            // Read errors become results, so the map itself never fails.
            let decoded = crate::parallel::try_map(connections, batch, |name| {
                Ok(ObjectId::from_hex(name)
                    .and_then(|id| index::decode(key, &id, &backend.get(ObjectKind::Index, name)?)))
            })?;
            for (name, d) in batch.iter().zip(decoded) {
                match d {
                    Ok(packs) => self.add_index(name, &packs)?,
                    // The storage failing to answer says nothing about the object: skipping it
                    // would report a healthy index object as damaged (prune then failed with
                    // "corrupt index after prune" when a read of it ran out of retries).
                    Err(e @ (Error::Storage { .. } | Error::Io { .. } | Error::NoSpace { .. })) => {
                        return Err(e);
                    }
                    Err(e) => skipped.push(format!("{e} (index object {name} skipped)")),
                }
            }
        }
        skipped.sort();
        Ok(skipped)
    }

    /// Forgets every index object and syncs from scratch. The verification ledger, the absent
    /// packs and the snapshots seen are kept: they record facts about the repository, not about
    /// index objects.
    pub(in crate::repo) fn rebuild(
        &mut self,
        backend: &dyn Backend,
        key: &MasterKey,
        connections: usize,
    ) -> Result<Vec<String>> {
        self.clear()?;
        self.sync(backend, key, connections)
    }

    fn clear(&mut self) -> Result<()> {
        sql(
            "clear",
            // An absent pack stays recorded, but counts as named only by the index objects the
            // next sync loads again.
            self.conn.execute_batch(
                "DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_objects;
                 DELETE FROM absent_blobs; UPDATE absent_packs SET named = 0;",
            ),
        )
    }

    /// Records an index object's packs and blobs in one transaction.
    pub(in crate::repo) fn add_index(&mut self, name: &str, packs: &[IndexedPack]) -> Result<()> {
        let tx = sql("begin", self.conn.transaction())?;
        {
            let mut ins_pack = sql(
                "prepare",
                tx.prepare_cached("INSERT OR IGNORE INTO packs (id, size) VALUES (?1, ?2)"),
            )?;
            let mut pack_row = sql(
                "prepare",
                tx.prepare_cached("SELECT rowid FROM packs WHERE id = ?1"),
            )?;
            // A blob stored twice (two backups at once, a re-rooting prune) keeps one row,
            // chosen by what the copies are, never by the order index objects load in: the
            // shallowest copy (a whole one, depth 0, needs no base), among deltas of one depth
            // the one with the smallest base id. Taking the shallowest is what keeps chains
            // acyclic: a delta of depth d was written against a base that had a copy of depth
            // d - 1, so the copy kept of that base is shallower than d (docs/design.md, "Delta
            // chains"). Prune keeps the bases of the rows it sees; a later catalog must use the
            // same copies.
            let mut ins_blob = sql(
                "prepare",
                tx.prepare_cached(
                    "INSERT INTO blobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, pack = excluded.pack,
                         offset = excluded.offset, stored_len = excluded.stored_len,
                         raw_len = excluded.raw_len, base = excluded.base, depth = excluded.depth
                     WHERE excluded.depth < blobs.depth
                        OR (excluded.depth = blobs.depth AND blobs.kind = 2
                            AND excluded.base < blobs.base)",
                ),
            )?;
            let mut absent = sql(
                "prepare",
                tx.prepare_cached("UPDATE absent_packs SET named = 1 WHERE id = ?1"),
            )?;
            let mut absent_blob = sql(
                "prepare",
                tx.prepare_cached("INSERT OR IGNORE INTO absent_blobs VALUES (?1, ?2)"),
            )?;
            // Entries of packs the storage does not hold never reach the catalog.
            let mut present = Vec::with_capacity(packs.len());
            let mut rows = Vec::with_capacity(packs.len());
            for p in packs {
                if sql("absent pack", absent.execute([&p.id.0[..]]))? > 0 {
                    // Remembered only to name the lost pack when such a blob is asked for.
                    for e in &p.entries {
                        sql(
                            "absent blob",
                            absent_blob.execute(params![&e.id.0[..], &p.id.0[..]]),
                        )?;
                    }
                    continue;
                }
                sql(
                    "insert pack",
                    ins_pack.execute(params![&p.id.0[..], p.size as i64]),
                )?;
                let row: i64 = sql("pack row", pack_row.query_row([&p.id.0[..]], |r| r.get(0)))?;
                rows.push(row);
                present.push(p);
            }
            // Inserting in id order touches each B-tree page once per transaction.
            let mut all: Vec<(&PackEntry, i64)> = present
                .iter()
                .zip(&rows)
                .flat_map(|(p, row)| p.entries.iter().map(move |e| (e, *row)))
                .collect();
            all.sort_by_key(|a| a.0.id);
            {
                for (e, row) in all {
                    sql(
                        "insert blob",
                        ins_blob.execute(params![
                            &e.id.0[..],
                            e.kind as u8,
                            row,
                            e.offset,
                            e.stored_len,
                            e.raw_len,
                            e.base.as_ref().map(|b| &b.0[..]),
                            e.depth
                        ]),
                    )?;
                }
            }
            sql(
                "insert index",
                tx.execute("INSERT OR IGNORE INTO index_objects VALUES (?1)", [name]),
            )?;
        }
        sql("commit", tx.commit())
    }

    /// Takes a complete listing of the packs the storage holds, made after this catalog was
    /// last synced (so every pack an absorbed index object names was durable before the
    /// listing began): indexed packs it lacks are recorded absent, recorded ones it shows are
    /// taken back, and if either happened the catalog is rebuilt from the index objects without
    /// the entries of absent packs.
    pub(in crate::repo) fn observe_packs(
        &mut self,
        stored: &HashSet<ObjectId>,
        backend: &dyn Backend,
        key: &MasterKey,
        connections: usize,
    ) -> Result<PackObservation> {
        let mut out = PackObservation::default();
        for p in self.packs()? {
            if !stored.contains(&p.id) {
                out.newly_absent.push(p.id);
            }
        }
        let mut rebuild = !out.newly_absent.is_empty();
        {
            let mut st = sql(
                "prepare",
                self.conn.prepare("SELECT id, named FROM absent_packs"),
            )?;
            let rows = sql(
                "absent packs",
                st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))),
            )?;
            for row in rows {
                let (id, named) = sql("absent packs", row)?;
                let id = ObjectId::from_slice(&id)?;
                if stored.contains(&id) {
                    out.returned.push(id);
                    // Its entries come back only with a rebuild.
                    rebuild |= named != 0;
                }
            }
        }
        if !out.newly_absent.is_empty() || !out.returned.is_empty() {
            let tx = sql("begin", self.conn.transaction())?;
            {
                let mut add = sql(
                    "prepare",
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO absent_packs (id, named) VALUES (?1, 1)",
                    ),
                )?;
                for id in &out.newly_absent {
                    sql("absent pack", add.execute([&id.0[..]]))?;
                }
                let mut del = sql(
                    "prepare",
                    tx.prepare_cached("DELETE FROM absent_packs WHERE id = ?1"),
                )?;
                for id in &out.returned {
                    sql("absent pack", del.execute([&id.0[..]]))?;
                }
            }
            sql("commit", tx.commit())?;
            if rebuild {
                out.warnings = self.rebuild(backend, key, connections)?;
            }
        }
        out.absent = self.absent_packs()?;
        Ok(out)
    }

    /// Remembers that these snapshots existed at `at` (unix seconds); the first sighting stays.
    pub(in crate::repo) fn remember_snapshots(&self, ids: &[ObjectId], at: i64) -> Result<()> {
        let tx = sql("begin", self.conn.unchecked_transaction())?;
        {
            let mut st = sql(
                "prepare",
                tx.prepare_cached("INSERT OR IGNORE INTO seen_snapshots VALUES (?1, ?2)"),
            )?;
            for id in ids {
                sql("seen snapshot", st.execute(params![&id.0[..], at]))?;
            }
        }
        sql("commit", tx.commit())
    }

    /// Records in the verification ledger that these packs read clean at `at` (unix seconds).
    pub(in crate::repo) fn mark_verified(&mut self, packs: &[ObjectId], at: i64) -> Result<()> {
        let tx = sql("begin", self.conn.transaction())?;
        {
            let mut st = sql(
                "prepare",
                tx.prepare_cached("INSERT OR REPLACE INTO verified (pack, at) VALUES (?1, ?2)"),
            )?;
            for p in packs {
                sql("ledger", st.execute(params![&p.0[..], at]))?;
            }
        }
        sql("commit", tx.commit())
    }
}
