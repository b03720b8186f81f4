//! Blob codec: plaintext chunk ↔ stored (compressed, sealed) blob.
//!
//! Encode: zstd at the repository's level, kept only when it makes the blob smaller; one codec
//! byte in front ([`format::codec`]); sealed with associated data binding the blob's kind and id.
//! Decode is the reverse, in the only safe order: authenticate first, then inflate with a hard
//! output bound (never more than the recorded raw length, itself at most
//! [`format::MAX_BLOB_LEN`]), then recompute the id and compare. Bytes that pass decode are
//! exactly the bytes that were stored under that id.
//!
//! Delta blobs ([`BlobKind::Delta`]) hold a chunk as a patch against a base chunk: the sealed
//! body is the base's id followed by a payload, a zstd-compressed copy script
//! ([`crate::format::delta`]) — or, in deltas written before scripts, a zstd frame made with the base's
//! plaintext as reference prefix (like `zstd --patch-from`), still read. [`encode_delta`] makes
//! one when it is worth it; [`decode_delta`] needs the base's plaintext and checks everything
//! [`decode`] checks, plus the base's id.

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::format::crypto::{MasterKey, blob_aad};
use crate::format::id::BlobId;
use crate::format::{self, BlobKind};

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

/// Inflates `data` into `out` (appending), at most `limit` bytes more than `out` can hold
/// beyond that is never written: `out`'s capacity bounds the output.
fn decompress(
    data: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
    what: &dyn Fn() -> String,
) -> Result<()> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| Error::io("creating zstd decompressor", e))?,
            );
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(data, out).map(|_| ()).map_err(|e| {
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
            body.push(format::magic::codec::ZSTD);
            body.extend_from_slice(&c);
        }
        _ => {
            body.push(format::magic::codec::RAW);
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
    let plain = decode_unhashed(key, kind, id, stored, raw_len)?;
    if key.blob_id(&plain) != *id {
        return Err(Error::corrupt(
            format!("{kind:?} blob {}", id.to_hex()),
            "content does not match its id",
        ));
    }
    Ok(plain)
}

/// [`decode`] without recomputing the id: the bytes are authenticated (sealed under this id and
/// kind with the repository key) but not hashed. For a delta's base only: what the base is
/// used for is checked by the id of the chunk the delta decodes to, which covers the base's
/// bytes too; a full BLAKE3 pass over every base would cost a delta backup or restore ~7%.
pub fn decode_unhashed(
    key: &MasterKey,
    kind: BlobKind,
    id: &BlobId,
    stored: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>> {
    check_raw_len(kind, id, raw_len)?;
    let body = open_body(key, kind, id, stored)?;
    inflate_body(kind, id, &body, raw_len)
}

/// Opens a stored blob's envelope: the authenticated body (codec byte and payload; for a
/// delta, the base id and the script), neither inflated nor hashed. With [`seal_body`], what
/// `repo copy` re-encrypts: the body does not depend on the key, except a delta's base id.
pub fn open_body(key: &MasterKey, kind: BlobKind, id: &BlobId, stored: &[u8]) -> Result<Vec<u8>> {
    let what = || format!("{kind:?} blob {}", id.to_hex());
    key.open(&blob_aad(kind, id), stored, &what)
}

/// Seals a body made by [`open_body`] (possibly under another key, as blob `id`).
pub fn seal_body(key: &MasterKey, kind: BlobKind, id: &BlobId, body: &[u8]) -> Result<Vec<u8>> {
    key.seal(&blob_aad(kind, id), body)
}

/// The plaintext of a data or tree blob's opened body ([`open_body`]), inflated within
/// `raw_len` bytes and checked against that length (not hashed).
pub fn inflate_body(kind: BlobKind, id: &BlobId, body: &[u8], raw_len: u32) -> Result<Vec<u8>> {
    check_raw_len(kind, id, raw_len)?;
    let what = || format!("{kind:?} blob {}", id.to_hex());
    let raw_len = raw_len as usize;
    let (codec, payload) = body
        .split_first()
        .ok_or_else(|| Error::corrupt(what(), "empty body"))?;
    let mut plain = Vec::with_capacity(raw_len);
    match *codec {
        format::magic::codec::RAW => plain.extend_from_slice(payload),
        format::magic::codec::ZSTD => decompress(payload, raw_len, &mut plain, &what)?,
        other => return Err(Error::corrupt(what(), format!("unknown codec {other}"))),
    }
    if plain.len() != raw_len {
        return Err(Error::corrupt(
            what(),
            format!("{} bytes, index says {raw_len}", plain.len()),
        ));
    }
    Ok(plain)
}

/// Refuses a recorded plaintext length above the blob limit (before anything is allocated).
fn check_raw_len(kind: BlobKind, id: &BlobId, raw_len: u32) -> Result<()> {
    if raw_len as usize > format::MAX_BLOB_LEN {
        return Err(Error::corrupt(
            format!("{kind:?} blob {}", id.to_hex()),
            format!("recorded length {raw_len} exceeds the limit"),
        ));
    }
    Ok(())
}

/// zstd level of the script of a delta (docs/design.md §4.1). A script is mostly the rows that
/// changed, a few percent of the chunk; on day 1 of the dump corpus level 3 made it 0.7%
/// smaller than level 1 at nearly twice the cost (0.15 against 0.08 s per GB).
const DELTA_LEVEL: i32 = 1;

/// A delta is always kept when it is at most this fraction of the chunk
/// (1/`DELTA_MAX_RATIO`); see [`delta_limit`] for when a larger one is kept. Otherwise the chunk
/// is stored whole and becomes a base itself, so a base drifting away from the data it serves
/// is replaced by a fresh one.
pub const DELTA_MAX_RATIO: usize = 16;

/// The largest delta worth keeping for a chunk of `chunk_len` bytes against a base stored
/// in `base_stored` bytes for `base_raw` bytes of plaintext: 3/4 of what the chunk would likely
/// take stored whole (the base's own compression ratio is the estimate; a chunk and its base
/// are alike), and never less than 1/[`DELTA_MAX_RATIO`] of the chunk. A rejected delta costs a
/// whole compression on top of it, so the bar is set by what storing whole would cost, not by
/// a fixed ratio.
pub fn delta_limit(chunk_len: usize, base_stored: u32, base_raw: u32) -> usize {
    let whole = (chunk_len as u128 * base_stored as u128 / u128::from(base_raw.max(1))) as usize;
    (whole.min(chunk_len) / 4 * 3).max(chunk_len / DELTA_MAX_RATIO)
}

fn zstd_err(what: &str, code: usize) -> Error {
    Error::io(
        what,
        std::io::Error::other(zstd::zstd_safe::get_error_name(code)),
    )
}

/// Encodes `plaintext` (whose id is `id`) as a delta against `base_plain`, the plaintext of the
/// data blob `base_id`. `None` when the delta exceeds 1/[`DELTA_MAX_RATIO`] of the chunk.
pub fn encode_delta(
    key: &MasterKey,
    id: &BlobId,
    plaintext: &[u8],
    base_id: &BlobId,
    base_plain: &[u8],
) -> Result<Option<Vec<u8>>> {
    let limit = plaintext.len() / DELTA_MAX_RATIO;
    encode_delta_within(key, id, plaintext, base_id, base_plain, limit)
}

/// [`encode_delta`] keeping deltas whose payload is at most `limit` bytes (see
/// [`delta_limit`]): a copy script ([`crate::format::delta`]) compressed with zstd.
pub fn encode_delta_within(
    key: &MasterKey,
    id: &BlobId,
    plaintext: &[u8],
    base_id: &BlobId,
    base_plain: &[u8],
    limit: usize,
) -> Result<Option<Vec<u8>>> {
    if plaintext.len() > format::MAX_BLOB_LEN || base_plain.len() > format::MAX_BLOB_LEN {
        return Err(Error::InvalidArgument(
            "delta input exceeds the blob limit".into(),
        ));
    }
    let script = crate::format::delta::encode(base_plain, plaintext);
    // A script barely shorter than the chunk is no delta worth having: skip compressing it.
    if script.len() / 4 > limit.saturating_add(64) {
        return Ok(None);
    }
    let frame = compress(&script, DELTA_LEVEL)?;
    if frame.len() + 1 > limit {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(32 + 1 + frame.len());
    body.extend_from_slice(&base_id.0);
    body.push(format::magic::delta::SCRIPT);
    body.extend_from_slice(&frame);
    key.seal(&blob_aad(BlobKind::Delta, id), &body).map(Some)
}

/// What a delta blob holds once opened ([`open_delta`]).
pub enum DeltaPayload {
    /// A decompressed copy script ([`crate::format::delta`]), to run against the base.
    Script(Vec<u8>),
    /// A zstd frame made with the base as reference prefix (the first encoding, still read).
    Prefix(Vec<u8>),
}

/// Opens a delta blob: authenticates it, checks that it names `base_id` as its base and
/// inflates its copy script within the bound a chunk of `raw_len` bytes allows. Nothing is
/// applied yet: a chain of deltas is decoded by composing their scripts
/// ([`crate::format::chain`]).
pub fn open_delta(
    key: &MasterKey,
    id: &BlobId,
    stored: &[u8],
    raw_len: u32,
    base_id: &BlobId,
) -> Result<DeltaPayload> {
    let what = || format!("delta blob {}", id.to_hex());
    let raw_len = raw_len as usize;
    if raw_len > format::MAX_BLOB_LEN {
        return Err(Error::corrupt(
            what(),
            format!("recorded length {raw_len} exceeds the limit"),
        ));
    }
    let body = key.open(&blob_aad(BlobKind::Delta, id), stored, &what)?;
    if body.len() < 32 {
        return Err(Error::corrupt(what(), "body too short for a base id"));
    }
    let (named, payload) = body.split_at(32);
    if named != base_id.0 {
        return Err(Error::corrupt(
            what(),
            format!("names another base than the index ({})", base_id.to_hex()),
        ));
    }
    match payload.first() {
        Some(&format::magic::delta::SCRIPT) => {
            let bound = crate::format::delta::max_script_len(raw_len);
            // A chain holds all its scripts at once: allocate what the frame says it holds
            // (refused above the bound), not the bound.
            let frame = &payload[1..];
            let size = match zstd::zstd_safe::get_frame_content_size(frame) {
                Ok(Some(n)) if n <= bound as u64 => n as usize,
                Ok(Some(n)) => {
                    return Err(Error::corrupt(
                        what(),
                        format!("its script would be {n} bytes, more than {bound}"),
                    ));
                }
                _ => bound,
            };
            let mut script = Vec::with_capacity(size);
            decompress(frame, size, &mut script, &what)?;
            Ok(DeltaPayload::Script(script))
        }
        Some(&format::magic::delta::ZSTD_PREFIX_MAGIC) => {
            Ok(DeltaPayload::Prefix(payload.to_vec()))
        }
        _ => Err(Error::corrupt(what(), "unknown delta encoding")),
    }
}

/// Runs an opened delta's prefix frame ([`DeltaPayload::Prefix`]) against its base's plaintext,
/// within `raw_len` bytes.
pub fn apply_prefix(id: &BlobId, frame: &[u8], raw_len: u32, base_plain: &[u8]) -> Result<Vec<u8>> {
    let what = || format!("delta blob {}", id.to_hex());
    decode_prefix_frame(frame, raw_len as usize, base_plain, &what)
}

/// Checks a decoded chunk against the length and the id the index gives it.
pub fn check_decoded(key: &MasterKey, id: &BlobId, plain: &[u8], raw_len: u32) -> Result<()> {
    let what = || format!("delta blob {}", id.to_hex());
    if plain.len() != raw_len as usize {
        return Err(Error::corrupt(
            what(),
            format!("{} bytes, index says {raw_len}", plain.len()),
        ));
    }
    if key.blob_id(plain) != *id {
        return Err(Error::corrupt(what(), "content does not match its id"));
    }
    Ok(())
}

/// Decodes a delta blob with its base's plaintext: authenticates, checks that the blob names
/// `base_id` as its base, inflates within `raw_len` (and a window of at most
/// 2^[`format::DELTA_WINDOW_LOG_MAX`]), checks the length and the id.
pub fn decode_delta(
    key: &MasterKey,
    id: &BlobId,
    stored: &[u8],
    raw_len: u32,
    base_id: &BlobId,
    base_plain: &[u8],
) -> Result<Vec<u8>> {
    let plain = match open_delta(key, id, stored, raw_len, base_id)? {
        DeltaPayload::Script(script) => {
            crate::format::delta::apply(base_plain, &script, raw_len as usize).map_err(|e| {
                Error::corrupt(
                    format!("delta blob {}", id.to_hex()),
                    format!("bad copy script: {e}"),
                )
            })?
        }
        DeltaPayload::Prefix(frame) => apply_prefix(id, &frame, raw_len, base_plain)?,
    };
    check_decoded(key, id, &plain, raw_len)?;
    Ok(plain)
}

/// The payload of a delta in the first encoding ([`format::magic::delta::ZSTD_PREFIX_MAGIC`]): a zstd
/// frame of `plaintext` made with `base_plain` as reference prefix. Backups no longer write it;
/// it exists so that the reading of repositories that hold such deltas stays tested (unit
/// tests, fuzz seeds, integration tests).
#[doc(hidden)]
pub fn legacy_prefix_payload(plaintext: &[u8], base_plain: &[u8]) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let window = (usize::BITS - (base_plain.len() + plaintext.len()).max(1).leading_zeros())
        .clamp(10, format::DELTA_WINDOW_LOG_MAX);
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(plaintext.len()));
    let mut c = CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(1))
        .and_then(|_| c.set_parameter(CParameter::WindowLog(window)))
        .map_err(|e| zstd_err("zstd delta setup", e))?;
    c.ref_prefix(base_plain)
        .map_err(|e| zstd_err("zstd delta setup", e))?;
    c.compress2(&mut frame, plaintext)
        .map_err(|e| zstd_err("zstd delta compression", e))?;
    Ok(frame)
}

/// Inflates a delta payload written as a zstd frame with the base as reference prefix (the
/// first delta encoding, see [`format::magic::delta::ZSTD_PREFIX_MAGIC`]), within `raw_len` bytes and a
/// window of at most 2^[`format::DELTA_WINDOW_LOG_MAX`].
fn decode_prefix_frame(
    frame: &[u8],
    raw_len: usize,
    base_plain: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{DCtx, DParameter};
    let mut plain = Vec::with_capacity(raw_len);
    let mut d = DCtx::create();
    d.set_parameter(DParameter::WindowLogMax(format::DELTA_WINDOW_LOG_MAX))
        .map_err(|e| zstd_err("zstd delta setup", e))?;
    d.ref_prefix(base_plain)
        .map_err(|e| zstd_err("zstd delta setup", e))?;
    let n = d.decompress(&mut plain, frame).map_err(|e| {
        Error::corrupt(
            what(),
            format!(
                "delta does not inflate within {raw_len} bytes: {}",
                zstd::zstd_safe::get_error_name(e)
            ),
        )
    })?;
    plain.truncate(n);
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
        crate::format::crypto::random_bytes(&mut noise).unwrap();
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

    #[test]
    fn delta_round_trip_and_rejections() {
        let k = key();
        let base = b"INSERT INTO t VALUES (17, 'some row text here');\n".repeat(4000);
        let mut data = base.clone();
        for i in (0..data.len()).step_by(5000) {
            data[i] = b'#';
        }
        let (bid, id) = (k.blob_id(&base), k.blob_id(&data));
        let s = encode_delta(&k, &id, &data, &bid, &base).unwrap().unwrap();
        assert!(s.len() < data.len() / DELTA_MAX_RATIO + 100, "{}", s.len());
        let n = data.len() as u32;
        assert_eq!(decode_delta(&k, &id, &s, n, &bid, &base).unwrap(), data);
        // Another base's plaintext, another base id, a flipped byte, a wrong length or kind.
        let other: Vec<u8> = base.iter().map(|b| b ^ 1).collect();
        assert!(decode_delta(&k, &id, &s, n, &bid, &other).is_err());
        assert!(decode_delta(&k, &id, &s, n, &k.blob_id(&other), &other).is_err());
        let mut t = s.clone();
        t[50] ^= 1;
        assert!(decode_delta(&k, &id, &t, n, &bid, &base).is_err());
        assert!(decode_delta(&k, &id, &s, n - 1, &bid, &base).is_err());
        assert!(decode(&k, BlobKind::Data, &id, &s, n).is_err());
        // A delta in the first encoding (zstd frame with the base as prefix) still decodes.
        let mut body = bid.0.to_vec();
        body.extend_from_slice(&legacy_prefix_payload(&data, &base).unwrap());
        let old = k.seal(&blob_aad(BlobKind::Delta, &id), &body).unwrap();
        assert_eq!(decode_delta(&k, &id, &old, n, &bid, &base).unwrap(), data);
        assert!(decode_delta(&k, &id, &old, n, &bid, &other).is_err());
        // An unknown encoding byte.
        let mut body = bid.0.to_vec();
        body.push(7);
        let unknown = k.seal(&blob_aad(BlobKind::Delta, &id), &body).unwrap();
        assert!(decode_delta(&k, &id, &unknown, n, &bid, &base).is_err());
        // Unrelated content: not worth a delta.
        let mut noise = vec![0u8; 100_000];
        crate::format::crypto::random_bytes(&mut noise).unwrap();
        assert!(
            encode_delta(&k, &k.blob_id(&noise), &noise, &bid, &base)
                .unwrap()
                .is_none()
        );
    }
}
