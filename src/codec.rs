//! Blob codec: plaintext chunk ↔ stored (compressed, sealed) blob.
//!
//! Encode: zstd at the repository's level, kept only when it makes the blob smaller; one codec
//! byte in front ([`format::codec`]); sealed with associated data binding the blob's kind and id.
//! Decode is the reverse, in the only safe order: authenticate first, then inflate with a hard
//! output bound (never more than the recorded raw length, itself at most
//! [`format::MAX_BLOB_LEN`]), then recompute the id and compare. Bytes that pass decode are
//! exactly the bytes that were stored under that id.

use std::cell::RefCell;

use crate::crypto::{MasterKey, blob_aad};
use crate::error::{Error, Result};
use crate::format::{self, BlobKind};
use crate::id::BlobId;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(data: &[u8], level: i32) -> Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let c = zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::io("creating zstd compressor", e))?;
            *slot = Some((level, c));
        }
        match slot.as_mut() {
            Some((_, c)) => c
                .compress(data)
                .map_err(|e| Error::io("zstd compression", e)),
            None => Err(Error::InvalidArgument("zstd compressor missing".into())),
        }
    })
}

fn decompress(data: &[u8], limit: usize, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| Error::io("creating zstd decompressor", e))?,
            );
        }
        match slot.as_mut() {
            Some(d) => d.decompress(data, limit).map_err(|e| {
                Error::corrupt(
                    what(),
                    format!("zstd data does not inflate within {limit} bytes: {e}"),
                )
            }),
            None => Err(Error::InvalidArgument("zstd decompressor missing".into())),
        }
    })
}

/// Encodes a blob whose id was already computed with [`MasterKey::blob_id`].
/// `level` 0 disables compression.
pub fn encode(
    key: &MasterKey,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
) -> Result<Vec<u8>> {
    if plaintext.len() > format::MAX_BLOB_LEN {
        return Err(Error::InvalidArgument(format!(
            "blob of {} bytes exceeds the limit",
            plaintext.len()
        )));
    }
    let mut body = Vec::with_capacity(plaintext.len() + 1);
    let compressed = if level != 0 {
        Some(compress(plaintext, level)?)
    } else {
        None
    };
    match compressed {
        Some(c) if c.len() < plaintext.len() => {
            body.push(format::codec::ZSTD);
            body.extend_from_slice(&c);
        }
        _ => {
            body.push(format::codec::RAW);
            body.extend_from_slice(plaintext);
        }
    }
    key.seal(&blob_aad(kind, id), &body)
}

/// Decodes a stored blob: authenticates, inflates within `raw_len`, checks the length and id.
pub fn decode(
    key: &MasterKey,
    kind: BlobKind,
    id: &BlobId,
    stored: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>> {
    let what = || format!("{kind:?} blob {}", id.to_hex());
    let raw_len = raw_len as usize;
    if raw_len > format::MAX_BLOB_LEN {
        return Err(Error::corrupt(
            what(),
            format!("recorded length {raw_len} exceeds the limit"),
        ));
    }
    let body = key.open(&blob_aad(kind, id), stored, &what)?;
    let (codec, payload) = body
        .split_first()
        .ok_or_else(|| Error::corrupt(what(), "empty body"))?;
    let plain = match *codec {
        format::codec::RAW => payload.to_vec(),
        format::codec::ZSTD => decompress(payload, raw_len, &what)?,
        other => return Err(Error::corrupt(what(), format!("unknown codec {other}"))),
    };
    if plain.len() != raw_len {
        return Err(Error::corrupt(
            what(),
            format!("{} bytes, index says {raw_len}", plain.len()),
        ));
    }
    if key.blob_id(&plain) != *id {
        return Err(Error::corrupt(what(), "content does not match its id"));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_secret([5; 32])
    }

    #[test]
    fn round_trip_compressible_and_incompressible() {
        let k = key();
        let text = b"INSERT INTO t VALUES (1, 'abc');\n".repeat(1000);
        let mut noise = vec![0u8; 10_000];
        crate::crypto::random_bytes(&mut noise).unwrap();
        for data in [&text[..], &noise[..], &[][..]] {
            let id = k.blob_id(data);
            let s = encode(&k, BlobKind::Data, &id, data, 3).unwrap();
            assert_eq!(
                decode(&k, BlobKind::Data, &id, &s, data.len() as u32).unwrap(),
                data
            );
        }
        let id = k.blob_id(&text);
        assert!(encode(&k, BlobKind::Data, &id, &text, 3).unwrap().len() < text.len() / 10);
        let id = k.blob_id(&noise);
        assert_eq!(
            encode(&k, BlobKind::Data, &id, &noise, 3).unwrap().len(),
            noise.len() + 1 + 40
        );
    }

    #[test]
    fn wrong_key_flipped_byte_wrong_kind_or_id_rejected() {
        let k = key();
        let data = b"some data".repeat(50);
        let id = k.blob_id(&data);
        let s = encode(&k, BlobKind::Data, &id, &data, 3).unwrap();
        let n = data.len() as u32;
        assert!(decode(&MasterKey::from_secret([6; 32]), BlobKind::Data, &id, &s, n).is_err());
        for i in [0, 30, s.len() - 1] {
            let mut t = s.clone();
            t[i] ^= 0x10;
            assert!(matches!(
                decode(&k, BlobKind::Data, &id, &t, n),
                Err(Error::Corrupt { .. })
            ));
        }
        assert!(decode(&k, BlobKind::Tree, &id, &s, n).is_err());
        assert!(decode(&k, BlobKind::Data, &k.blob_id(b"other"), &s, n).is_err());
        assert!(decode(&k, BlobKind::Data, &id, &s, n - 1).is_err());
        assert!(decode(&k, BlobKind::Data, &id, &s[..s.len() - 3], n).is_err());
    }
}
