//! Packfiles: many sealed blobs in one object, with a sealed header that lists them.
//!
//! ```text
//! blob_0 ‖ blob_1 ‖ … ‖ blob_n-1 ‖ sealed header ‖ header_len: u32 LE ‖ "TRSRPK01"
//! ```
//!
//! The header's plaintext is `n` entries of [`format::PACK_ENTRY_LEN`] bytes: kind (u8), blob id
//! (32), stored length (u32 LE), raw length (u32 LE); a delta entry (kind 2) is followed by its
//! base blob's id (32 bytes); a chained delta entry (kind 3, [`format::CHAIN_DELTA_KIND`]) by its
//! base blob's id and its depth (u8, 2..=[`format::MAX_CHAIN_DEPTH`]). Offsets are implicit: blob `i` starts at
//! the sum of the stored lengths before it. The header lets the index be rebuilt from packs
//! alone. A pack is named by the BLAKE3 hash of all its bytes.

use crate::error::{Error, Result};
use crate::format::crypto::MasterKey;
use crate::format::id::{BlobId, ObjectId};
use crate::format::{
    self, BlobKind, CHAIN_DELTA_KIND, DELTA_BASE_LEN, MAX_CHAIN_DEPTH, PACK_ENTRY_LEN, PACK_MAGIC,
    PACK_TRAILER_LEN,
};

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackEntry {
    /// Data or tree.
    pub kind: BlobKind,
    /// The blob's id.
    pub id: BlobId,
    /// Byte offset within the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// The base blob of a [`BlobKind::Delta`] blob; `None` for every other kind.
    pub base: Option<BlobId>,
    /// A delta's depth: how many copy scripts lie between it and the whole data blob at the
    /// root of its chain, itself included (1 when its base is a whole blob); 0 for every other
    /// kind. Recorded by the writer, so that readers can refuse cycles (see docs/design.md).
    pub depth: u8,
}

impl PackEntry {
    /// Bytes this entry takes in a pack header or an index object entry list.
    pub fn header_len(&self) -> usize {
        PACK_ENTRY_LEN + entry_tail_len(self)
    }

    /// The kind byte this entry is stored with.
    pub fn stored_kind(&self) -> u8 {
        if self.depth >= 2 {
            CHAIN_DELTA_KIND
        } else {
            self.kind as u8
        }
    }

    /// Appends what follows the fixed part of this entry: a delta's base id, and a chained
    /// delta's depth.
    pub fn put_tail(&self, out: &mut Vec<u8>) {
        if let Some(b) = &self.base {
            out.extend_from_slice(&b.0);
            if self.depth >= 2 {
                out.push(self.depth);
            }
        }
    }
}

/// Bytes after the fixed part of an entry ([`PackEntry::put_tail`]).
fn entry_tail_len(e: &PackEntry) -> usize {
    match (e.base, e.depth) {
        (None, _) => 0,
        (Some(_), 0 | 1) => DELTA_BASE_LEN,
        (Some(_), _) => DELTA_BASE_LEN + 1,
    }
}

/// A stored entry kind byte: the blob kind and how many tail bytes follow the fixed part
/// (base id, depth), or `None` for an unknown kind.
pub fn parse_stored_kind(b: u8) -> Option<(BlobKind, usize)> {
    match b {
        CHAIN_DELTA_KIND => Some((BlobKind::Delta, DELTA_BASE_LEN + 1)),
        _ => BlobKind::from_u8(b).map(|k| {
            let tail = if k == BlobKind::Delta {
                DELTA_BASE_LEN
            } else {
                0
            };
            (k, tail)
        }),
    }
}

/// Parses an entry tail ([`PackEntry::put_tail`]) of `tail` bytes: base and depth.
pub fn parse_entry_tail(tail: &[u8]) -> std::result::Result<(Option<BlobId>, u8), String> {
    match tail.len() {
        0 => Ok((None, 0)),
        DELTA_BASE_LEN => Ok((
            Some(BlobId::from_slice(tail).map_err(|e| e.to_string())?),
            1,
        )),
        n if n == DELTA_BASE_LEN + 1 => {
            let depth = tail[DELTA_BASE_LEN];
            if !(2..=MAX_CHAIN_DEPTH).contains(&depth) {
                return Err(format!(
                    "a chained delta entry records depth {depth} (2 to {MAX_CHAIN_DEPTH} allowed)"
                ));
            }
            let base = BlobId::from_slice(&tail[..DELTA_BASE_LEN]).map_err(|e| e.to_string())?;
            Ok((Some(base), depth))
        }
        _ => Err("bad entry tail".into()),
    }
}

/// Builds one pack in memory.
#[derive(Default)]
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to be stored.
pub struct FinishedPack {
    /// Its name.
    pub id: ObjectId,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// What it holds.
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pack whose buffer already holds `bytes`, so a pack that fills to its target size
    /// is never copied while it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        PackWriter {
            buf: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }

    /// Appends a sealed blob; `base` is the base of a delta blob with the delta's depth
    /// (1..=[`MAX_CHAIN_DEPTH`]), and `None` otherwise.
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        raw_len: u32,
        base: Option<(BlobId, u8)>,
    ) -> Result<()> {
        if (kind == BlobKind::Delta) != base.is_some() {
            return Err(Error::InvalidArgument(
                "a delta blob needs a base, and only a delta blob has one".into(),
            ));
        }
        if base.is_some_and(|(_, d)| !(1..=MAX_CHAIN_DEPTH).contains(&d)) {
            return Err(Error::InvalidArgument(format!(
                "a delta's depth must be 1 to {MAX_CHAIN_DEPTH}"
            )));
        }
        let offset = u32::try_from(self.buf.len())
            .map_err(|_| Error::InvalidArgument("pack grew past 4 GiB".into()))?;
        let stored_len = u32::try_from(sealed.len())
            .map_err(|_| Error::InvalidArgument("blob too large".into()))?;
        self.buf.extend_from_slice(sealed);
        self.entries.push(PackEntry {
            kind,
            id,
            offset,
            stored_len,
            raw_len,
            base: base.map(|(b, _)| b),
            depth: base.map_or(0, |(_, d)| d),
        });
        Ok(())
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the sealed header and trailer and names the pack.
    pub fn finish(mut self, key: &MasterKey) -> Result<FinishedPack> {
        let mut header = Vec::with_capacity(self.entries.iter().map(PackEntry::header_len).sum());
        for e in &self.entries {
            header.push(e.stored_kind());
            header.extend_from_slice(&e.id.0);
            header.extend_from_slice(&e.stored_len.to_le_bytes());
            header.extend_from_slice(&e.raw_len.to_le_bytes());
            e.put_tail(&mut header);
        }
        let sealed = key.seal(format::aad::PACK_HEADER, &header)?;
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&PACK_MAGIC);
        let id = ObjectId::of_bytes(&self.buf);
        Ok(FinishedPack {
            id,
            bytes: self.buf,
            entries: self.entries,
        })
    }
}

/// Reads the length of the sealed header from a pack's trailer.
pub fn parse_trailer(pack: &ObjectId, trailer: &[u8], pack_size: u64) -> Result<u32> {
    let what = || format!("pack {}", pack.to_hex());
    if trailer.len() != PACK_TRAILER_LEN || trailer[4..] != PACK_MAGIC {
        return Err(Error::corrupt(
            what(),
            "no pack trailer (truncated or not a pack)",
        ));
    }
    let hlen = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if hlen as u64 + PACK_TRAILER_LEN as u64 > pack_size
        || hlen as usize > format::MAX_PACK_HEADER_LEN
    {
        return Err(Error::corrupt(
            what(),
            format!("header length {hlen} does not fit a {pack_size}-byte pack"),
        ));
    }
    Ok(hlen)
}

/// Opens and parses a sealed pack header; checks that the blobs exactly fill the space before it.
pub fn parse_header(
    key: &MasterKey,
    pack: &ObjectId,
    sealed: &[u8],
    pack_size: u64,
) -> Result<Vec<PackEntry>> {
    let what = || format!("pack {} header", pack.to_hex());
    let plain = key.open(format::aad::PACK_HEADER, sealed, &what)?;
    let mut entries = Vec::with_capacity(plain.len() / PACK_ENTRY_LEN);
    let mut offset: u64 = 0;
    let mut rest = &plain[..];
    while !rest.is_empty() {
        if rest.len() < PACK_ENTRY_LEN {
            return Err(Error::corrupt(
                what(),
                "length is not a whole number of entries",
            ));
        }
        let (e, tail) = rest.split_at(PACK_ENTRY_LEN);
        rest = tail;
        let (kind, tail_len) = parse_stored_kind(e[0])
            .ok_or_else(|| Error::corrupt(what(), format!("unknown blob kind {}", e[0])))?;
        let id = BlobId::from_slice(&e[1..33])?;
        let stored_len = u32::from_le_bytes([e[33], e[34], e[35], e[36]]);
        let raw_len = u32::from_le_bytes([e[37], e[38], e[39], e[40]]);
        if rest.len() < tail_len {
            return Err(Error::corrupt(what(), "a delta entry lacks its base"));
        }
        let (t, tail) = rest.split_at(tail_len);
        rest = tail;
        let (base, depth) = parse_entry_tail(t).map_err(|m| Error::corrupt(what(), m))?;
        let off = u32::try_from(offset).map_err(|_| Error::corrupt(what(), "offsets overflow"))?;
        entries.push(PackEntry {
            kind,
            id,
            offset: off,
            stored_len,
            raw_len,
            base,
            depth,
        });
        offset += stored_len as u64;
    }
    let expected = pack_size
        .checked_sub(PACK_TRAILER_LEN as u64 + sealed.len() as u64)
        .ok_or_else(|| Error::corrupt(what(), "header does not fit the pack"))?;
    if offset != expected {
        return Err(Error::corrupt(
            what(),
            format!("blobs cover {offset} bytes but the pack has {expected}"),
        ));
    }
    Ok(entries)
}

/// Parses the header of a pack held whole in memory.
pub fn header_of(key: &MasterKey, pack: &ObjectId, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let n = bytes.len();
    if n < PACK_TRAILER_LEN {
        return Err(Error::corrupt(
            format!("pack {}", pack.to_hex()),
            "too short to be a pack",
        ));
    }
    let hlen = parse_trailer(pack, &bytes[n - PACK_TRAILER_LEN..], n as u64)? as usize;
    let start = n - PACK_TRAILER_LEN - hlen;
    parse_header(key, pack, &bytes[start..start + hlen], n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::codec;

    #[test]
    fn header_round_trip_and_damage() {
        let k = MasterKey::from_secret([9; 32]);
        let mut w = PackWriter::new();
        let mut blobs = Vec::new();
        for i in 0..5u8 {
            let data = vec![i; 1000 + i as usize];
            let id = k.blob_id(&data);
            let s = codec::encode(&k, BlobKind::Data, &id, &data, 3).unwrap();
            w.add(BlobKind::Data, id, &s, data.len() as u32, None)
                .unwrap();
            blobs.push((id, data));
        }
        let p = w.finish(&k).unwrap();
        assert_eq!(p.id, ObjectId::of_bytes(&p.bytes));
        let size = p.bytes.len() as u64;
        let hlen =
            parse_trailer(&p.id, &p.bytes[p.bytes.len() - PACK_TRAILER_LEN..], size).unwrap();
        let hstart = p.bytes.len() - PACK_TRAILER_LEN - hlen as usize;
        let entries =
            parse_header(&k, &p.id, &p.bytes[hstart..hstart + hlen as usize], size).unwrap();
        assert_eq!(entries, p.entries);
        for (e, (id, data)) in entries.iter().zip(&blobs) {
            let s = &p.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(&codec::decode(&k, e.kind, id, s, e.raw_len).unwrap(), data);
        }
        let mut bad = p.bytes.clone();
        bad[hstart + 30] ^= 1;
        assert!(parse_header(&k, &p.id, &bad[hstart..hstart + hlen as usize], size).is_err());
        assert!(parse_trailer(&p.id, &p.bytes[..PACK_TRAILER_LEN], size).is_err());
        assert!(
            parse_header(
                &k,
                &p.id,
                &p.bytes[hstart..hstart + hlen as usize],
                size + 1
            )
            .is_err()
        );
    }

    /// Serializes entries as a header plaintext, the way [`PackWriter::finish`] does.
    fn header_plain(entries: &[PackEntry]) -> Vec<u8> {
        let mut h = Vec::new();
        for e in entries {
            h.push(e.kind as u8);
            h.extend_from_slice(&e.id.0);
            h.extend_from_slice(&e.stored_len.to_le_bytes());
            h.extend_from_slice(&e.raw_len.to_le_bytes());
            if let Some(b) = &e.base {
                h.extend_from_slice(&b.0);
            }
        }
        h
    }

    #[test]
    fn delta_entries_carry_their_base_and_a_cut_base_is_refused() {
        let k = MasterKey::from_secret([7; 32]);
        let base = b"INSERT INTO t VALUES (17, 'some row text here');\n".repeat(3000);
        let mut data = base.clone();
        data[5000] = b'#';
        let (bid, id) = (k.blob_id(&base), k.blob_id(&data));
        let sb = codec::encode(&k, BlobKind::Data, &bid, &base, 3).unwrap();
        let sd = codec::encode_delta(&k, &id, &data, &bid, &base)
            .unwrap()
            .unwrap();
        let n = data.len() as u32;
        let mut w = PackWriter::new();
        w.add(BlobKind::Data, bid, &sb, base.len() as u32, None)
            .unwrap();
        // Only a delta has a base, and a delta must have one.
        assert!(w.add(BlobKind::Delta, id, &sd, n, None).is_err());
        assert!(w.add(BlobKind::Data, id, &sd, n, Some((bid, 1))).is_err());
        assert!(w.add(BlobKind::Tree, id, &sd, n, Some((bid, 1))).is_err());
        w.add(BlobKind::Delta, id, &sd, n, Some((bid, 1))).unwrap();
        let p = w.finish(&k).unwrap();
        let entries = header_of(&k, &p.id, &p.bytes).unwrap();
        assert_eq!(entries, p.entries);
        assert_eq!((entries[0].base, entries[1].base), (None, Some(bid)));
        assert_eq!(entries[1].kind, BlobKind::Delta);
        assert_eq!(
            entries[1].offset,
            sb.len() as u32,
            "offsets follow stored lengths"
        );
        assert_eq!(entries[0].header_len(), PACK_ENTRY_LEN);
        assert_eq!(entries[1].header_len(), PACK_ENTRY_LEN + DELTA_BASE_LEN);
        let e = &entries[1];
        let s = &p.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        assert_eq!(
            codec::decode_delta(&k, &id, s, e.raw_len, &bid, &base).unwrap(),
            data
        );

        // The header as written; then the same header with the delta entry's base cut short.
        let plain = header_plain(&entries);
        let size = p.bytes.len() as u64;
        let reseal = |h: &[u8]| k.seal(format::aad::PACK_HEADER, h).unwrap();
        let whole = reseal(&plain);
        // Resealed whole, it parses the same (same length, so the same pack size).
        let parsed = parse_header(&k, &p.id, &whole, size).unwrap();
        assert_eq!(parsed, entries);
        for cut in [1, 16, DELTA_BASE_LEN] {
            let err =
                parse_header(&k, &p.id, &reseal(&plain[..plain.len() - cut]), size).unwrap_err();
            assert!(
                err.to_string().contains("lacks its base"),
                "cut {cut}: {err}"
            );
        }
        // Cut into the entry itself: not a whole number of entries.
        let err = parse_header(
            &k,
            &p.id,
            &reseal(&plain[..plain.len() - DELTA_BASE_LEN - 1]),
            size,
        )
        .unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
        // A data entry followed by a stray base is not read as a delta.
        let mut stray = header_plain(&entries[..1]);
        stray.extend_from_slice(&bid.0);
        assert!(parse_header(&k, &p.id, &reseal(&stray), size).is_err());
    }
}
