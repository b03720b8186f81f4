//! What operations ask the catalog: where a blob is and what it is, whether a pack is indexed,
//! the packs with their verification ledger, which packs are gone, totals for `stats`.

use rusqlite::OptionalExtension;

use super::*;

impl Catalog {
    /// A pack the storage lost that index objects say holds `id` (for messages: such blobs
    /// are not in the catalog).
    pub fn lost_pack_of(&self, id: &BlobId) -> Result<Option<ObjectId>> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare_cached("SELECT pack FROM absent_blobs WHERE id = ?1 LIMIT 1"),
        )?;
        let pack: Option<Vec<u8>> =
            sql("lookup", st.query_row([&id.0[..]], |r| r.get(0)).optional())?;
        pack.map(|p| ObjectId::from_slice(&p)).transpose()
    }

    /// The error for a blob the catalog does not place: the missing pack that held it, if an
    /// index object names one, else "not in any index object". `role` says what it is needed
    /// as (e.g. " (the base of delta blob …)").
    pub fn missing_blob(&self, id: &BlobId, role: &str) -> Error {
        match self.lost_pack_of(id) {
            Ok(Some(pack)) => Error::Missing {
                object: format!(
                    "pack {} (it holds blob {}{role}; an index object lists the pack, but the storage does not have it)",
                    pack.to_hex(),
                    id.to_hex()
                ),
            },
            _ => Error::Missing {
                object: format!("blob {}{role} (not in any index object)", id.to_hex()),
            },
        }
    }

    /// Packs recorded absent that some absorbed index object names: missing from the last
    /// listing of packs.
    pub fn absent_packs(&self) -> Result<Vec<ObjectId>> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare("SELECT id FROM absent_packs WHERE named = 1 ORDER BY id"),
        )?;
        let rows = sql("absent packs", st.query_map([], |r| r.get::<_, Vec<u8>>(0)))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(ObjectId::from_slice(&sql("absent packs", row)?)?);
        }
        Ok(out)
    }

    /// Every snapshot this machine has seen in the repository, with when it first saw it.
    pub fn seen_snapshots(&self) -> Result<Vec<(ObjectId, i64)>> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare("SELECT id, at FROM seen_snapshots ORDER BY at, id"),
        )?;
        let rows = sql(
            "seen snapshots",
            st.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at) = sql("seen snapshots", row)?;
            out.push((ObjectId::from_slice(&id)?, at));
        }
        Ok(out)
    }

    /// Whether the repository has this blob.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1"),
        )?;
        sql("lookup", st.exists([&id.0[..]]))
    }

    /// Where a blob is stored; for a delta blob, also where every blob of its chain is (see
    /// [`BlobLocation::chain`]). A delta whose chain cannot be followed is reported as damage:
    /// a base that is not indexed (prune keeps bases alive, so it means a lost pack), a base
    /// that is a tree, or a chain whose recorded depths do not descend (which also refuses
    /// cycles) or that runs deeper than [`crate::format::MAX_CHAIN_DEPTH`].
    pub fn locate(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let Some((mut loc, mut next)) = self.blob_row(id)? else {
            return Ok(None);
        };
        let what = || format!("delta blob {}", id.to_hex());
        let mut depth = loc.depth;
        let mut of = *id;
        while let Some(base_id) = next {
            let Some((b, base_next)) = self.blob_row(&base_id)? else {
                if self.lost_pack_of(&base_id)?.is_some() {
                    return Err(self.missing_blob(
                        &base_id,
                        &format!(", in the delta chain of blob {}", id.to_hex()),
                    ));
                }
                return Err(Error::corrupt(
                    what(),
                    format!(
                        "the base {} of {} is not in the index",
                        base_id.to_hex(),
                        of.to_hex()
                    ),
                ));
            };
            if b.kind == BlobKind::Tree {
                return Err(Error::corrupt(
                    what(),
                    format!("its chain holds tree blob {}", base_id.to_hex()),
                ));
            }
            if b.depth >= depth || loc.chain.len() >= crate::format::MAX_CHAIN_DEPTH as usize {
                return Err(Error::corrupt(
                    what(),
                    format!(
                        "its delta chain does not descend to a whole blob (base {} of depth {} under depth {depth})",
                        base_id.to_hex(),
                        b.depth
                    ),
                ));
            }
            depth = b.depth;
            of = base_id;
            loc.chain.push(DeltaBase::at(base_id, &b));
            next = base_next;
        }
        Ok(Some(loc))
    }

    /// Delta blobs whose base is not indexed, is a tree, or is a delta at least as deep:
    /// (delta, base, problem).
    pub fn broken_deltas(&self) -> Result<Vec<(BlobId, BlobId, String)>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare(
                "SELECT b.id, b.base, bb.kind FROM blobs b LEFT JOIN blobs bb ON bb.id = b.base
                 WHERE b.kind = 2 AND (bb.id IS NULL OR bb.kind = 1 OR bb.depth >= b.depth)",
            ),
        )?;
        let rows = sql(
            "broken deltas",
            st.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, Option<u8>>(2)?,
                ))
            }),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, base, kind) = sql("broken deltas", row)?;
            let base = BlobId::from_slice(&base.unwrap_or_default()).unwrap_or(BlobId([0; 32]));
            let problem = match kind {
                None => format!("its delta base {} is not in any index", base.to_hex()),
                Some(1) => format!("its delta base {} is a tree blob", base.to_hex()),
                Some(_) => format!(
                    "its delta base {} is a delta at least as deep (a chain must descend)",
                    base.to_hex()
                ),
            };
            out.push((BlobId::from_slice(&id)?, base, problem));
        }
        Ok(out)
    }

    /// The base of a blob stored as a delta; `None` for any other blob or an unknown id.
    pub fn delta_base(&self, id: &BlobId) -> Result<Option<BlobId>> {
        Ok(self.blob_row(id)?.and_then(|(_, base)| base))
    }

    /// A blob's own row (its base left unresolved) and its base's id.
    pub fn blob_row(&self, id: &BlobId) -> Result<Option<(BlobLocation, Option<BlobId>)>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare_cached(
                "SELECT b.kind, p.id, b.offset, b.stored_len, b.raw_len, b.base, b.depth FROM blobs b
                 JOIN packs p ON p.rowid = b.pack WHERE b.id = ?1",
            ),
        )?;
        let row = sql("lookup", st.query_row([&id.0[..]], blob_row).optional())?;
        let Some((k, pack, offset, stored_len, raw_len, base, depth)) = row else {
            return Ok(None);
        };
        let kind = blob_kind(k)?;
        let loc = BlobLocation {
            kind,
            pack: ObjectId::from_slice(&pack)?,
            offset,
            stored_len,
            raw_len,
            depth,
            chain: Vec::new(),
        };
        Ok(Some((loc, base_id(kind, base)?)))
    }

    /// Whether a pack is indexed.
    pub fn has_pack(&self, id: &ObjectId) -> Result<bool> {
        let mut st = sql(
            "prepare",
            self.conn
                .prepare_cached("SELECT 1 FROM packs WHERE id = ?1"),
        )?;
        sql("lookup", st.exists([&id.0[..]]))
    }

    /// Every indexed pack, least recently verified first (never-verified first of all), then by
    /// name, so the order is deterministic.
    pub fn packs(&self) -> Result<Vec<PackRecord>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare(
                "SELECT p.id, p.size, v.at FROM packs p LEFT JOIN verified v ON v.pack = p.id
                 ORDER BY v.at IS NOT NULL, v.at, p.id",
            ),
        )?;
        let rows = sql(
            "list packs",
            st.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            }),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, size, verified_at) = sql("list packs", row)?;
            out.push(PackRecord {
                id: ObjectId::from_slice(&id)?,
                size: size as u64,
                verified_at,
            });
        }
        Ok(out)
    }

    /// The blobs the catalog places in a pack, by offset.
    pub fn pack_entries(&self, pack: &ObjectId) -> Result<Vec<PackEntry>> {
        let mut st = sql(
            "prepare",
            self.conn.prepare_cached(
                "SELECT b.kind, b.id, b.offset, b.stored_len, b.raw_len, b.base, b.depth FROM blobs b
                 JOIN packs p ON p.rowid = b.pack WHERE p.id = ?1 ORDER BY b.offset",
            ),
        )?;
        let rows = sql("pack entries", st.query_map([&pack.0[..]], blob_row))?;
        let mut out = Vec::new();
        for row in rows {
            let (k, id, offset, stored_len, raw_len, base, depth) = sql("pack entries", row)?;
            let kind = blob_kind(k)?;
            out.push(PackEntry {
                kind,
                id: BlobId::from_slice(&id)?,
                offset,
                stored_len,
                raw_len,
                base: base_id(kind, base)?,
                depth,
            });
        }
        Ok(out)
    }

    /// Totals over every indexed blob.
    pub fn blob_totals(&self) -> Result<BlobTotals> {
        let mut st = sql(
            "prepare",
            self.conn.prepare(
                "SELECT kind, count(*), coalesce(sum(raw_len), 0), coalesce(sum(stored_len), 0)
                 FROM blobs GROUP BY kind",
            ),
        )?;
        let rows = sql(
            "totals",
            st.query_map([], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            }),
        )?;
        let mut t = BlobTotals::default();
        for row in rows {
            let (kind, n, raw, stored) = sql("totals", row)?;
            if kind == BlobKind::Tree as u8 {
                t.tree_blobs += n as u64;
            } else {
                t.data_blobs += n as u64;
            }
            t.raw += raw as u64;
            t.stored += stored as u64;
        }
        Ok(t)
    }

    /// Number of blobs and packs known.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let b = sql(
            "count",
            self.conn
                .query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0)),
        )?;
        let p = sql(
            "count",
            self.conn
                .query_row("SELECT count(*) FROM packs", [], |r| r.get::<_, i64>(0)),
        )?;
        Ok((b as u64, p as u64))
    }
}
