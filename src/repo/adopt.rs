//! Adoption: indexing packs that exist but that no index object lists — what a backup killed
//! between writing a pack and writing its index object leaves — so their blobs dedup again.
//!
//! Every `snapshot create` starts with it; it is cheap when there is nothing to adopt (one
//! listing). A concurrent backup's pack, durable but not yet indexed, may be adopted too: it is
//! then listed by two index objects, which is harmless.

use rayon::prelude::*;

use super::{BlobReader, Repo};
use crate::error::Result;
use crate::format::id::ObjectId;
use crate::format::index::IndexedPack;

/// What adopting unindexed packs did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Adoption {
    /// Packs adopted into a new index object.
    pub packs: u64,
    /// Blobs in them, now reusable by dedup.
    pub blobs: u64,
    /// Packs that could not be adopted (header unreadable), with the reason.
    pub skipped: Vec<String>,
    /// Packs index objects name that the storage does not hold (their blobs serve no dedup).
    pub absent: Vec<String>,
}

/// Reads the headers of `packs` in parallel; a good one becomes an index entry, a bad one the
/// reason it cannot.
pub fn read_headers(
    reader: &BlobReader,
    packs: &[(ObjectId, u64)],
) -> Vec<std::result::Result<IndexedPack, String>> {
    packs
        .par_iter()
        .map(|(id, size)| {
            reader
                .pack_header(id, *size)
                .map(|entries| IndexedPack {
                    id: *id,
                    size: *size,
                    entries,
                })
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Parses a pack listing; names that are not pack names are reported in `skipped`.
pub fn parse_listing(
    listing: Vec<(String, u64)>,
    skipped: &mut Vec<String>,
) -> Vec<(ObjectId, u64)> {
    let mut out = Vec::new();
    for (name, size) in listing {
        match ObjectId::from_hex(&name) {
            Ok(id) => out.push((id, size)),
            Err(_) => skipped.push(format!("data/{name}: not a pack name")),
        }
    }
    out
}

impl Repo {
    /// Indexes packs no index object lists (see the module documentation).
    pub fn adopt_unindexed(&mut self) -> Result<Adoption> {
        let mut out = Adoption::default();
        let mut orphans = Vec::new();
        // The same listing tells the catalog which indexed packs are gone: their entries must
        // not serve dedup (a stale index object put back after a prune names blobs that do not
        // exist).
        let (listing, observed) = self.observe_packs()?;
        out.absent = observed.absent.iter().map(|p| p.to_hex()).collect();
        for (id, size) in parse_listing(listing, &mut out.skipped) {
            if !self.catalog.has_pack(&id)? {
                orphans.push((id, size));
            }
        }
        if orphans.is_empty() {
            return Ok(out);
        }
        let headers = read_headers(&self.reader, &orphans);
        let mut packer = self.packer()?;
        for (r, (id, _)) in headers.into_iter().zip(&orphans) {
            match r {
                Ok(p) => {
                    out.packs += 1;
                    out.blobs += p.entries.len() as u64;
                    packer.index_stored(p)?;
                }
                Err(e) => out.skipped.push(format!("pack {}: {e}", id.to_hex())),
            }
        }
        packer.finish()?;
        Ok(out)
    }
}
