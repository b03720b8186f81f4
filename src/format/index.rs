//! Index objects: durable records of which blobs live where.
//!
//! An index object is written after the packs it describes are durable, and before any snapshot
//! that needs them. Sealed plaintext (all integers little-endian):
//!
//! ```text
//! "TRSRIX01" ‖ pack_count: u32
//! per pack:  pack id (32) ‖ pack size: u64 ‖ entry_count: u32
//!            per entry: kind: u8 ‖ blob id (32) ‖ offset: u32 ‖ stored_len: u32 ‖ raw_len: u32
//!                       ‖ (kind 2, delta, only) base blob id (32)
//!                       ‖ (kind 3, chained delta, only) base blob id (32) ‖ depth: u8
//! ```
//!
//! The object's name is the BLAKE3 hash of its stored (sealed) bytes.

use crate::error::{Error, Result};
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::pack::PackEntry;
use crate::format::{self, INDEX_MAGIC};

/// One pack's entries in an index object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack's name.
    pub id: ObjectId,
    /// Its size in bytes.
    pub size: u64,
    /// Its blobs.
    pub entries: Vec<PackEntry>,
}

const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// Serializes and seals an index object; returns (name, stored bytes).
pub fn encode(key: &MasterKey, packs: &[IndexedPack]) -> Result<(ObjectId, Vec<u8>)> {
    let n: usize = packs
        .iter()
        .map(|p| 44 + p.entries.len() * (ENTRY_LEN + format::DELTA_BASE_LEN + 1))
        .sum();
    let mut out = Vec::with_capacity(12 + n);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.size.to_le_bytes());
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            out.push(e.stored_kind());
            out.extend_from_slice(&e.id.0);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.stored_len.to_le_bytes());
            out.extend_from_slice(&e.raw_len.to_le_bytes());
            e.put_tail(&mut out);
        }
    }
    let sealed = key.seal(format::aad::INDEX, &out)?;
    Ok((ObjectId::of_bytes(&sealed), sealed))
}

struct Cursor<'a> {
    buf: &'a [u8],
    what: &'a dyn Fn() -> String,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt((self.what)(), "ends early"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Checks an index object's name, opens and parses it.
pub fn decode(key: &MasterKey, name: &ObjectId, stored: &[u8]) -> Result<Vec<IndexedPack>> {
    let what = || format!("index object {}", name.to_hex());
    if ObjectId::of_bytes(stored) != *name {
        return Err(Error::corrupt(what(), "content does not match its name"));
    }
    let plain = key.open(format::aad::INDEX, stored, &what)?;
    let mut c = Cursor {
        buf: &plain,
        what: &what,
    };
    if c.take(8)? != INDEX_MAGIC {
        return Err(Error::corrupt(what(), "bad magic"));
    }
    let count = c.u32()?;
    let mut packs = Vec::new();
    for _ in 0..count {
        let id = ObjectId::from_slice(c.take(32)?)?;
        let size = c.u64()?;
        let n = c.u32()? as usize;
        if n.saturating_mul(ENTRY_LEN) > c.buf.len() {
            return Err(Error::corrupt(what(), "entry count exceeds the object"));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let kb = c.take(1)?[0];
            let (kind, tail_len) = crate::format::pack::parse_stored_kind(kb)
                .ok_or_else(|| Error::corrupt(what(), format!("unknown blob kind {kb}")))?;
            let id = BlobId::from_slice(c.take(32)?)?;
            let offset = c.u32()?;
            let stored_len = c.u32()?;
            let raw_len = c.u32()?;
            let (base, depth) = crate::format::pack::parse_entry_tail(c.take(tail_len)?)
                .map_err(|m| Error::corrupt(what(), m))?;
            if offset as u64 + stored_len as u64 > size {
                return Err(Error::corrupt(what(), "entry lies outside its pack"));
            }
            entries.push(PackEntry {
                kind,
                id,
                offset,
                stored_len,
                raw_len,
                base,
                depth,
            });
        }
        packs.push(IndexedPack { id, size, entries });
    }
    if !c.buf.is_empty() {
        return Err(Error::corrupt(what(), "trailing bytes"));
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlobKind;

    #[test]
    fn round_trip_and_rejects_damage() {
        let k = MasterKey::from_secret([3; 32]);
        let packs = vec![IndexedPack {
            id: ObjectId([1; 32]),
            size: 5000,
            entries: vec![
                PackEntry {
                    kind: BlobKind::Data,
                    id: BlobId([2; 32]),
                    offset: 0,
                    stored_len: 100,
                    raw_len: 300,
                    base: None,
                    depth: 0,
                },
                PackEntry {
                    kind: BlobKind::Tree,
                    id: BlobId([3; 32]),
                    offset: 100,
                    stored_len: 50,
                    raw_len: 50,
                    base: None,
                    depth: 0,
                },
                PackEntry {
                    kind: BlobKind::Delta,
                    id: BlobId([4; 32]),
                    offset: 150,
                    stored_len: 70,
                    raw_len: 400,
                    base: Some(BlobId([2; 32])),
                    depth: 1,
                },
                PackEntry {
                    kind: BlobKind::Delta,
                    id: BlobId([5; 32]),
                    offset: 220,
                    stored_len: 30,
                    raw_len: 400,
                    base: Some(BlobId([4; 32])),
                    depth: 2,
                },
            ],
        }];
        let (name, bytes) = encode(&k, &packs).unwrap();
        assert_eq!(decode(&k, &name, &bytes).unwrap(), packs);
        let mut bad = bytes.clone();
        bad[40] ^= 4;
        assert!(decode(&k, &name, &bad).is_err());
        assert!(decode(&k, &ObjectId::of_bytes(&bad), &bad).is_err());

        // The last entry is the delta: cut into its base id, the object is refused (a reader
        // that forgot the base would take the cut bytes for a next entry or trailing bytes).
        let plain = k
            .open(format::aad::INDEX, &bytes, &|| "index".into())
            .unwrap();
        for cut in [1, format::DELTA_BASE_LEN] {
            let sealed = k
                .seal(format::aad::INDEX, &plain[..plain.len() - cut])
                .unwrap();
            let err = decode(&k, &ObjectId::of_bytes(&sealed), &sealed).unwrap_err();
            assert!(err.to_string().contains("ends early"), "cut {cut}: {err}");
        }
    }
}
