//! The body of every fuzz target, shared by the cargo-fuzz crate (`fuzz/fuzz_targets/*.rs`,
//! nightly, libFuzzer) and by the seed-corpus check of the main crate's integration tests
//! (`tests/fuzz_seeds/mod.rs`, stable), so that the committed seeds are decoded by exactly the
//! code the fuzzer runs.
//!
//! Every function takes arbitrary bytes, feeds them to a decoder of repository data with the
//! fixed test key [`key`], and checks properties of whatever the decoder accepts. A decoder may
//! refuse any input with an error; what a target must never do is panic, hang or allocate
//! without bound. A failed property is a panic, so both the fuzzer and the seed test report it.
//!
//! Decoders authenticate first, so random bytes almost never get past the AEAD. Each decoder of
//! a sealed object therefore has a `_sealed` twin that seals the fuzz input with the test key
//! first, which puts the parser behind the authentication in front of the fuzzer.
//!
//! Depends on `tresor` and `serde_json` only (both are dependencies of the main crate, so the
//! module compiles in both places).

#![allow(dead_code)]

use std::sync::OnceLock;

use tresor::format::codec;
use tresor::format::crypto::{MasterKey, blob_aad};
use tresor::format::id::{BlobId, ObjectId};
use tresor::format::index;
use tresor::format::pack;
use tresor::format::snapshot::Snapshot;
use tresor::format::tree::Tree;
use tresor::format::{self, BlobKind, PACK_MAGIC, PACK_TRAILER_LEN};
use tresor::format::{chain, delta};
use tresor::repo::config::Config;
use tresor::repo::keys;

/// The master secret of the test key. Seeds are sealed with it.
pub const SECRET: [u8; 32] = [0x42; 32];

/// The password of the seed key files.
pub const PASSWORD: &[u8] = b"fuzz password";

/// Ceiling on argon2 memory (KiB) that [`key_file`] lets through to `keys::open`.
pub const KEY_FILE_MAX_MEMORY_KIB: u64 = 1024;

/// Ceiling on argon2 work (memory KiB × iterations) that [`key_file`] lets through.
pub const KEY_FILE_MAX_WORK: u64 = 4096;

/// The fixed test key, built once.
pub fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_secret(SECRET))
}

/// Names of all targets, in the order of the fuzzing table in docs/reliability.md. The corpus
/// of target `t` lives in `fuzz/corpus/t/`.
pub const TARGETS: &[&str] = &[
    "codec_decode",
    "codec_decode_sealed",
    "delta_decode_sealed",
    "delta_chain",
    "pack_header",
    "pack_header_sealed",
    "index_object",
    "index_object_sealed",
    "tree",
    "snapshot",
    "snapshot_sealed",
    "key_file",
    "config",
    "config_sealed",
];

/// Runs target `name` on `data`; true when the decoder accepted the input. Panics for an
/// unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "codec_decode" => codec_decode(data),
        "codec_decode_sealed" => codec_decode_sealed(data),
        "delta_decode_sealed" => delta_decode_sealed(data),
        "delta_chain" => delta_chain(data),
        "pack_header" => pack_header(data),
        "pack_header_sealed" => pack_header_sealed(data),
        "index_object" => index_object(data),
        "index_object_sealed" => index_object_sealed(data),
        "tree" => tree(data),
        "snapshot" => snapshot(data),
        "snapshot_sealed" => snapshot_sealed(data),
        "key_file" => key_file(data),
        "config" => config(data),
        "config_sealed" => config_sealed(data),
        other => panic!("no fuzz target named {other:?}"),
    }
}

fn kind_of(b: u8) -> BlobKind {
    if b & 1 == 0 {
        BlobKind::Data
    } else {
        BlobKind::Tree
    }
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn blob_id_at(b: &[u8]) -> BlobId {
    let mut id = [0u8; 32];
    id.copy_from_slice(&b[..32]);
    BlobId(id)
}

/// What a successful blob decode must guarantee: the recorded length and the id.
fn check_decoded_blob(plain: &[u8], id: &BlobId, raw_len: u32) {
    assert_eq!(
        plain.len(),
        raw_len as usize,
        "decode returned a length other than raw_len"
    );
    assert_eq!(
        key().blob_id(plain),
        *id,
        "decode returned bytes that do not hash to the id"
    );
}

/// Layout of a `codec_decode` input (the layout of the seeds).
pub const CODEC_HEADER_LEN: usize = 1 + 32 + 4;

/// `codec::decode` on a stored blob. Input: `flags (1) ‖ blob id (32) ‖ raw_len u32 LE (4) ‖
/// stored blob`; bit 0 of `flags` is the kind, bits 1–2 the zstd level (0–3) of the round trip.
///
/// Round trip: the whole input, encoded as a blob, must decode to itself.
pub fn codec_decode(data: &[u8]) -> bool {
    let k = key();
    let mut accepted = false;
    if data.len() >= CODEC_HEADER_LEN {
        let kind = kind_of(data[0]);
        let id = blob_id_at(&data[1..33]);
        let raw_len = u32_at(&data[33..37]);
        if let Ok(plain) = codec::decode(k, kind, &id, &data[CODEC_HEADER_LEN..], raw_len) {
            check_decoded_blob(&plain, &id, raw_len);
            accepted = true;
        }
    }
    if data.len() > format::MAX_BLOB_LEN {
        return accepted;
    }
    let kind = kind_of(data.first().copied().unwrap_or(0));
    let level = i32::from((data.first().copied().unwrap_or(0) >> 1) & 3);
    let id = k.blob_id(data);
    let stored = match codec::encode(k, kind, &id, data, level) {
        Ok(s) => s,
        Err(e) => panic!("encoding {} bytes failed: {e}", data.len()),
    };
    assert!(
        stored.len() <= data.len() + 1 + format::SEAL_OVERHEAD,
        "encode expanded the blob"
    );
    match codec::decode(k, kind, &id, &stored, data.len() as u32) {
        Ok(back) => assert!(back == data, "round trip changed the blob"),
        Err(e) => panic!("a freshly encoded blob does not decode: {e}"),
    }
    accepted
}

/// Layout of a `codec_decode_sealed` input.
pub const CODEC_SEALED_HEADER_LEN: usize = 1 + 2;

/// `codec::decode` behind the AEAD. Input: `flags (1) ‖ raw_len u16 LE (2) ‖ body`, where body
/// is what a blob envelope holds: `codec byte ‖ payload`. Bit 0 of `flags` is the kind; with
/// bit 1 set the blob id is the id of the payload (so a raw blob can decode), else all zeros.
/// The body is sealed with the blob's associated data, then decoded: this fuzzes the codec byte,
/// the bounded zstd inflate and the length and id checks.
pub fn codec_decode_sealed(data: &[u8]) -> bool {
    if data.len() < CODEC_SEALED_HEADER_LEN {
        return false;
    }
    let k = key();
    let kind = kind_of(data[0]);
    let raw_len = u32::from(u16::from_le_bytes([data[1], data[2]]));
    let body = &data[CODEC_SEALED_HEADER_LEN..];
    let id = if data[0] & 2 != 0 {
        k.blob_id(body.get(1..).unwrap_or(&[]))
    } else {
        BlobId([0; 32])
    };
    let stored = match k.seal(&blob_aad(kind, &id), body) {
        Ok(s) => s,
        Err(e) => panic!("sealing failed: {e}"),
    };
    match codec::decode(k, kind, &id, &stored, raw_len) {
        Ok(plain) => {
            check_decoded_blob(&plain, &id, raw_len);
            true
        }
        Err(_) => false,
    }
}

/// Layout of a `delta_decode_sealed` input.
pub const DELTA_SEALED_HEADER_LEN: usize = 1 + 2 + 2 + 32;

/// `codec::decode_delta` behind the AEAD. Input: `flags (1) ‖ raw_len u16 LE (2) ‖ base_len u16
/// LE (2) ‖ blob id (32) ‖ base (base_len bytes) ‖ frame`. The body `base id ‖ frame` is sealed
/// as a delta blob with that id and decoded against `base`; with bit 0 of `flags` set the body
/// names another base than the one given, which must be refused. This fuzzes both payload
/// encodings (a zstd-compressed copy script, and the first one: a zstd frame with the base as
/// prefix, with its window bound), the script's bounds, and the base and id checks.
///
/// Round trip: the frame bytes as a chunk, encoded as a delta against the base when that pays,
/// must decode to themselves.
pub fn delta_decode_sealed(data: &[u8]) -> bool {
    if data.len() < DELTA_SEALED_HEADER_LEN {
        return false;
    }
    let k = key();
    let flags = data[0];
    let raw_len = u32::from(u16::from_le_bytes([data[1], data[2]]));
    let base_len = usize::from(u16::from_le_bytes([data[3], data[4]]));
    let id = blob_id_at(&data[5..37]);
    let rest = &data[DELTA_SEALED_HEADER_LEN..];
    let (base, frame) = rest.split_at(base_len.min(rest.len()));
    let base_id = k.blob_id(base);
    let named = if flags & 1 != 0 {
        k.blob_id(b"another base")
    } else {
        base_id
    };
    let mut body = named.0.to_vec();
    body.extend_from_slice(frame);
    let stored = match k.seal(&blob_aad(BlobKind::Delta, &id), &body) {
        Ok(s) => s,
        Err(e) => panic!("sealing failed: {e}"),
    };
    let accepted = match codec::decode_delta(k, &id, &stored, raw_len, &base_id, base) {
        Ok(plain) => {
            assert!(flags & 1 == 0, "a delta naming another base was accepted");
            check_decoded_blob(&plain, &id, raw_len);
            true
        }
        Err(_) => false,
    };
    let chunk_id = k.blob_id(frame);
    match codec::encode_delta(k, &chunk_id, frame, &base_id, base) {
        Ok(Some(sealed)) => {
            let n = frame.len() as u32;
            match codec::decode_delta(k, &chunk_id, &sealed, n, &base_id, base) {
                Ok(back) => assert!(back == frame, "delta round trip changed the chunk"),
                Err(e) => panic!("a freshly encoded delta does not decode: {e}"),
            }
        }
        Ok(None) => {}
        Err(e) => panic!("delta encoding of {} bytes failed: {e}", frame.len()),
    }
    accepted
}

/// Deepest chain a `delta_chain` input describes (the depth chains are built to).
pub const DELTA_CHAIN_MAX_DEPTH: usize = 64;

/// The levels of a `delta_chain` input: `root_len u16 LE (2) ‖ root ‖ level*`, each level
/// `raw_len u16 LE (2) ‖ script_len u16 LE (2) ‖ script`, at most [`DELTA_CHAIN_MAX_DEPTH`].
/// What is cut short is cut to what is left: a root or script shorter than it says, a raw
/// length of one byte, an empty script.
pub fn delta_chain_levels(data: &[u8]) -> (&[u8], Vec<(&[u8], usize)>) {
    fn u16_at(b: &[u8]) -> usize {
        usize::from(b[0]) | usize::from(b.get(1).copied().unwrap_or(0)) << 8
    }
    fn take(b: &[u8], n: usize) -> (&[u8], &[u8]) {
        b.split_at(n.min(b.len()))
    }
    let (head, rest) = take(data, 2);
    let (root, mut rest) = take(rest, if head.is_empty() { 0 } else { u16_at(head) });
    let mut levels = Vec::new();
    while !rest.is_empty() && levels.len() < DELTA_CHAIN_MAX_DEPTH {
        let (raw, r) = take(rest, 2);
        let (len, r) = take(r, 2);
        let script_len = if len.is_empty() { 0 } else { u16_at(len) };
        let (script, r) = take(r, script_len);
        levels.push((script, u16_at(raw)));
        rest = r;
    }
    (root, levels)
}

/// `chain::apply_chain` on a root and the scripts above it (layout: [`delta_chain_levels`]),
/// checked against `delta::apply` run level by level: the same bytes, or the same error.
///
/// Round trip: the levels' script bytes taken as successive versions of the root, encoded as a
/// chain with `delta::encode`, must decode to the last of them.
pub fn delta_chain(data: &[u8]) -> bool {
    let (root, levels) = delta_chain_levels(data);
    let mut sequential = Ok(root.to_vec());
    for &(script, raw_len) in &levels {
        sequential = sequential.and_then(|v| delta::apply(&v, script, raw_len));
    }
    let composed = chain::apply_chain(root, &levels);
    assert!(
        composed == sequential,
        "the chain decoder and apply level by level disagree"
    );

    let mut scripts = Vec::with_capacity(levels.len());
    let mut prev = root;
    for &(version, _) in &levels {
        scripts.push((delta::encode(prev, version), version.len()));
        prev = version;
    }
    let refs: Vec<(&[u8], usize)> = scripts.iter().map(|(s, n)| (&s[..], *n)).collect();
    match chain::apply_chain(root, &refs) {
        Ok(top) => assert!(top == prev, "chain round trip changed the top version"),
        Err(e) => panic!("a freshly encoded chain does not decode: {e}"),
    }
    composed.is_ok()
}

/// Reads a whole pack the way `tresor check --read-data` does: trailer, then sealed header.
/// Whatever the header lists must tile the bytes before it exactly.
pub fn pack_header(data: &[u8]) -> bool {
    if data.len() < PACK_TRAILER_LEN {
        return false;
    }
    let k = key();
    let id = ObjectId::of_bytes(data);
    let n = data.len() as u64;
    let Ok(hlen) = pack::parse_trailer(&id, &data[data.len() - PACK_TRAILER_LEN..], n) else {
        return false;
    };
    let hlen = hlen as usize;
    assert!(
        hlen + PACK_TRAILER_LEN <= data.len(),
        "parse_trailer accepted a header longer than the pack"
    );
    let start = data.len() - PACK_TRAILER_LEN - hlen;
    let Ok(entries) = pack::parse_header(k, &id, &data[start..start + hlen], n) else {
        return false;
    };
    let mut offset = 0usize;
    for e in &entries {
        assert_eq!(
            e.offset as usize, offset,
            "entries do not follow each other"
        );
        offset += e.stored_len as usize;
        assert!(
            data.get(e.offset as usize..offset).is_some(),
            "an entry lies past the end of the pack"
        );
    }
    assert_eq!(
        offset, start,
        "entries do not fill the space before the header"
    );
    true
}

/// Layout of a `pack_header_sealed` input.
pub const PACK_SEALED_HEADER_LEN: usize = 2;

/// `pack::parse_header` behind the AEAD. Input: `blob area length u16 LE (2) ‖ header
/// plaintext`. Builds `zeros(blob area) ‖ sealed header ‖ trailer` and reads it with
/// [`pack_header`].
pub fn pack_header_sealed(data: &[u8]) -> bool {
    if data.len() < PACK_SEALED_HEADER_LEN {
        return false;
    }
    let area = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let sealed = match key().seal(format::aad::PACK_HEADER, &data[PACK_SEALED_HEADER_LEN..]) {
        Ok(s) => s,
        Err(e) => panic!("sealing failed: {e}"),
    };
    let mut p = vec![0u8; area];
    p.extend_from_slice(&sealed);
    p.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    p.extend_from_slice(&PACK_MAGIC);
    pack_header(&p)
}

/// What a successful index decode must guarantee: re-encoding gives the same plaintext (the
/// format is canonical), entries lie inside their packs.
fn check_index(packs: &[index::IndexedPack], plaintext: Option<&[u8]>) {
    let k = key();
    for p in packs {
        for e in &p.entries {
            assert!(
                u64::from(e.offset) + u64::from(e.stored_len) <= p.size,
                "entry outside its pack"
            );
        }
    }
    let (name, stored) = match index::encode(k, packs) {
        Ok(x) => x,
        Err(e) => panic!("re-encoding a decoded index failed: {e}"),
    };
    match index::decode(k, &name, &stored) {
        Ok(back) => assert!(back == packs, "index round trip changed it"),
        Err(e) => panic!("a re-encoded index does not decode: {e}"),
    }
    if let Some(plain) = plaintext {
        match k.open(format::aad::INDEX, &stored, &|| "index".into()) {
            Ok(again) => assert!(again == plain, "two encodings of one index"),
            Err(e) => panic!("cannot open a fresh index: {e}"),
        }
    }
}

/// `index::decode` on stored bytes named by their hash (so the name check passes).
pub fn index_object(data: &[u8]) -> bool {
    let name = ObjectId::of_bytes(data);
    match index::decode(key(), &name, data) {
        Ok(packs) => {
            check_index(&packs, None);
            true
        }
        Err(_) => false,
    }
}

/// `index::decode` behind the AEAD: the input is the plaintext of an index object.
pub fn index_object_sealed(data: &[u8]) -> bool {
    let stored = match key().seal(format::aad::INDEX, data) {
        Ok(s) => s,
        Err(e) => panic!("sealing failed: {e}"),
    };
    let name = ObjectId::of_bytes(&stored);
    match index::decode(key(), &name, &stored) {
        Ok(packs) => {
            check_index(&packs, Some(data));
            true
        }
        Err(_) => false,
    }
}

/// `Tree::from_bytes` on a tree blob's plaintext (the tree parser has no AEAD of its own: the
/// blob codec's is covered by `codec_decode_sealed`). Accepted trees must survive a round trip
/// and name no unsafe path component.
pub fn tree(data: &[u8]) -> bool {
    let id = key().blob_id(data);
    let Ok(t) = Tree::from_bytes(&id, data) else {
        return false;
    };
    for n in &t.nodes {
        let name = match n.os_name() {
            Ok(name) => name,
            Err(e) => panic!("accepted a node whose name does not decode: {e}"),
        };
        let b = name.as_encoded_bytes();
        assert!(
            !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0),
            "unsafe name accepted"
        );
    }
    let bytes = match t.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("re-encoding an accepted tree failed: {e}"),
    };
    match Tree::from_bytes(&id, &bytes) {
        Ok(back) => assert!(back == t, "tree round trip changed it"),
        Err(e) => panic!("a re-encoded tree does not decode: {e}"),
    }
    true
}

/// Snapshots carry an f64; serde_json's default float parser may be off by one ulp, so the
/// round trip compares it with a tolerance and everything else exactly.
fn check_snapshot(s: &Snapshot) {
    let k = key();
    let (name, stored) = match s.encode(k) {
        Ok(x) => x,
        Err(e) => panic!("re-encoding a decoded snapshot failed: {e}"),
    };
    let back = match Snapshot::decode(k, &name, &stored) {
        Ok(b) => b,
        Err(e) => panic!("a re-encoded snapshot does not decode: {e}"),
    };
    let (a, b) = (s.summary.duration_seconds, back.summary.duration_seconds);
    assert!(
        a == b || (a - b).abs() <= a.abs().max(b.abs()) * 1e-15,
        "duration changed: {a} → {b}"
    );
    let (mut s, mut back) = (s.clone(), back);
    s.summary.duration_seconds = 0.0;
    back.summary.duration_seconds = 0.0;
    assert!(back == s, "snapshot round trip changed it");
    let _ = s.timestamp();
}

/// `Snapshot::decode` on stored bytes named by their hash.
pub fn snapshot(data: &[u8]) -> bool {
    let name = ObjectId::of_bytes(data);
    match Snapshot::decode(key(), &name, data) {
        Ok(s) => {
            check_snapshot(&s);
            true
        }
        Err(_) => false,
    }
}

/// `Snapshot::decode` behind the AEAD: the input is the snapshot's JSON.
pub fn snapshot_sealed(data: &[u8]) -> bool {
    let stored = match key().seal(format::aad::SNAPSHOT, data) {
        Ok(s) => s,
        Err(e) => panic!("sealing failed: {e}"),
    };
    let name = ObjectId::of_bytes(&stored);
    match Snapshot::decode(key(), &name, &stored) {
        Ok(s) => {
            check_snapshot(&s);
            true
        }
        Err(_) => false,
    }
}

/// Whether `keys::open` may be called on `data` without spending seconds and gigabytes in
/// argon2. `keys::open` itself only refuses memory above 4 GiB and more than 100 passes, so a
/// hostile key file can legitimately ask for up to 400 GiB·passes of argon2 work; the fuzzer is
/// not meant to measure that. Inputs whose JSON asks for more than [`KEY_FILE_MAX_MEMORY_KIB`]
/// or [`KEY_FILE_MAX_WORK`] are skipped. The JSON is parsed with the same parser as the key
/// file (serde_json, last duplicate wins here, the typed parse refuses duplicates), so the gate
/// sees the numbers `keys::open` would see.
pub fn key_file_is_cheap(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return true; // not JSON: keys::open fails in its JSON parse, before argon2
    };
    let num = |field: &str| v.get(field).and_then(serde_json::Value::as_u64);
    match (num("memory_kib"), num("iterations")) {
        (Some(m), Some(i)) => {
            m <= KEY_FILE_MAX_MEMORY_KIB && m.saturating_mul(i) <= KEY_FILE_MAX_WORK
        }
        _ => true, // a missing or non-integer field: the typed parse fails before argon2
    }
}

/// `keys::open` on a key file (JSON outside, the master secret sealed under the password
/// inside). There is no `_sealed` twin: the envelope holds a fixed 32-byte secret, and building
/// envelopes under a password-derived key needs crate-private functions.
pub fn key_file(data: &[u8]) -> bool {
    if !key_file_is_cheap(data) {
        return false;
    }
    // Key files are named by the hash of their bytes, and `keys::open` checks that first: name
    // the input so the fuzzer reaches the parser and the KDF limits behind that check.
    let name = tresor::format::id::ObjectId::of_bytes(data).to_hex();
    match keys::open(&name, data, PASSWORD) {
        Ok(Some(k)) => {
            assert!(
                k.secret() == &SECRET,
                "a key file opened to a different secret than the seeds hold"
            );
            true
        }
        _ => false,
    }
}

/// What a successful config decode must guarantee: valid chunker parameters, a 64-hex id, and
/// a round trip.
fn check_config(c: &Config) {
    assert!(
        c.chunker.validate().is_ok(),
        "accepted invalid chunker parameters"
    );
    assert!(
        c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit()),
        "accepted a bad id"
    );
    let stored = match c.encode(key()) {
        Ok(s) => s,
        Err(e) => panic!("re-encoding a decoded config failed: {e}"),
    };
    match Config::decode(key(), &stored) {
        Ok(back) => assert!(back == *c, "config round trip changed it"),
        Err(e) => panic!("a re-encoded config does not decode: {e}"),
    }
}

/// `Config::decode` on stored bytes.
pub fn config(data: &[u8]) -> bool {
    match Config::decode(key(), data) {
        Ok(c) => {
            check_config(&c);
            true
        }
        Err(_) => false,
    }
}

/// `Config::decode` behind the AEAD: the input is the config's JSON.
pub fn config_sealed(data: &[u8]) -> bool {
    let stored = match key().seal(format::aad::CONFIG, data) {
        Ok(s) => s,
        Err(e) => panic!("sealing failed: {e}"),
    };
    match Config::decode(key(), &stored) {
        Ok(c) => {
            check_config(&c);
            true
        }
        Err(_) => false,
    }
}

/// One seed input of the corpus.
pub struct Seed {
    /// The target whose corpus it belongs to.
    pub target: &'static str,
    /// File name in `fuzz/corpus/<target>/`.
    pub name: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Whether the target's decoder accepts it.
    pub accepted: bool,
}

/// Deterministic bytes: `n` bytes of xorshift output.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sql_text(rows: usize) -> Vec<u8> {
    let mut s = String::from("COPY public.orders (id, customer, amount, note) FROM stdin;\n");
    for i in 0..rows {
        s.push_str(&format!(
            "{i}\t{}\t{}.{:02}\tshipped to warehouse {}\n",
            1000 + i * 7,
            i * 13 % 997,
            i % 100,
            i % 5
        ));
    }
    s.push_str("\\.\n");
    s.into_bytes()
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("making seed {what}: {e}"),
    }
}

/// Real objects made with the library and the test key, a few KB each: the seed corpus. Sealed
/// ones carry a fresh random nonce, so two calls give different bytes of the same meaning.
pub fn seeds() -> Vec<Seed> {
    use tresor::format::chunker::ChunkerParams;
    use tresor::format::pack::PackWriter;
    use tresor::format::snapshot::{SourceRecord, Summary};
    use tresor::format::tree::{ContentRef, Node, NodeKind, encode_os};
    use tresor::repo::keys::KdfParams;

    let k = key();
    let mut out = Vec::new();
    let mut push = |target, name, bytes, accepted| {
        out.push(Seed {
            target,
            name,
            bytes,
            accepted,
        })
    };

    // Blobs: compressible text (zstd), noise (raw), a tiny tree-kind blob.
    let text = sql_text(60);
    let rand = noise(1500, 7);
    let small = b"{\"version\":1,\"nodes\":[]}".to_vec();
    let blobs: [(&'static str, BlobKind, &[u8]); 3] = [
        ("text", BlobKind::Data, &text),
        ("noise", BlobKind::Data, &rand),
        ("tree", BlobKind::Tree, &small),
    ];
    let mut sealed_blobs = Vec::new();
    for (name, kind, plain) in blobs {
        let id = k.blob_id(plain);
        let stored = must(codec::encode(k, kind, &id, plain, 3), name);
        let mut input = vec![kind as u8 | 2];
        input.extend_from_slice(&id.0);
        input.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        input.extend_from_slice(&stored);
        push("codec_decode", name, input, true);

        let body = must(k.open(&blob_aad(kind, &id), &stored, &|| name.into()), name);
        let raw = body.first() == Some(&format::magic::codec::RAW);
        let mut input = vec![kind as u8 | 2];
        input.extend_from_slice(&(plain.len() as u16).to_le_bytes());
        input.extend_from_slice(&body);
        // A raw body decodes (the id is the payload's); a zstd body inflates, then fails the id.
        push("codec_decode_sealed", name, input, raw);
        sealed_blobs.push((kind, id, stored, plain.len() as u32));
    }

    // Deltas: yesterday's rows against today's with a few changed, sealed the way a backup
    // stores them (accepted), the same naming another base (refused), and unrelated bytes.
    let base = sql_text(60);
    let mut today = base.clone();
    for i in (0..today.len()).step_by(997) {
        today[i] = b'~';
    }
    let frame_of = |chunk: &[u8]| -> Vec<u8> {
        let sealed = must(
            codec::encode_delta(k, &k.blob_id(chunk), chunk, &k.blob_id(&base), &base),
            "delta",
        );
        let sealed = sealed.unwrap_or_else(|| panic!("the seed delta does not pay"));
        let body = must(
            k.open(
                &blob_aad(BlobKind::Delta, &k.blob_id(chunk)),
                &sealed,
                &|| "delta".into(),
            ),
            "delta",
        );
        body[32..].to_vec()
    };
    let frame = frame_of(&today);
    let wrong_id = k.blob_id(b"not today");
    for (name, flags, id, accepted) in [
        ("delta", 0u8, k.blob_id(&today), true),
        ("delta-other-base", 1, k.blob_id(&today), false),
        ("delta-wrong-id", 0, wrong_id, false),
    ] {
        let mut input = vec![flags];
        input.extend_from_slice(&(today.len() as u16).to_le_bytes());
        input.extend_from_slice(&(base.len() as u16).to_le_bytes());
        input.extend_from_slice(&id.0);
        input.extend_from_slice(&base);
        input.extend_from_slice(&frame);
        push("delta_decode_sealed", name, input, accepted);
    }
    // The first delta encoding, as repositories written before copy scripts hold it.
    let mut legacy = vec![0u8];
    legacy.extend_from_slice(&(today.len() as u16).to_le_bytes());
    legacy.extend_from_slice(&(base.len() as u16).to_le_bytes());
    legacy.extend_from_slice(&k.blob_id(&today).0);
    legacy.extend_from_slice(&base);
    legacy.extend_from_slice(&must(codec::legacy_prefix_payload(&today, &base), "legacy"));
    push("delta_decode_sealed", "delta-zstd-prefix", legacy, true);
    let mut input = vec![0u8];
    input.extend_from_slice(&100u16.to_le_bytes());
    input.extend_from_slice(&16u16.to_le_bytes());
    input.extend_from_slice(&[0u8; 32]);
    input.extend_from_slice(&[7u8; 16]);
    input.extend_from_slice(b"not a zstd frame at all");
    push("delta_decode_sealed", "garbage", input, false);

    // Chains: a dump edited day after day (rows rewritten, inserted, removed, moved), at
    // depth 3 and at the deepest, then the deep one claiming a byte too many and cut short.
    let mut versions = vec![sql_text(40)];
    for day in 1..DELTA_CHAIN_MAX_DEPTH {
        let mut v = versions[day - 1].clone();
        let at = day * 389 % v.len().saturating_sub(64).max(1);
        match day % 4 {
            0 => v[at..at + 12].copy_from_slice(b"~~rewritten~"),
            1 => {
                v.splice(at..at, format!("{day}\tnew row\n").into_bytes());
            }
            2 => {
                v.drain(at..at + 20);
            }
            _ => {
                let row: Vec<u8> = v.drain(at..at + 30).collect();
                v.extend_from_slice(&row);
            }
        }
        versions.push(v);
    }
    let chain_input = |versions: &[Vec<u8>]| {
        let mut input = (versions[0].len() as u16).to_le_bytes().to_vec();
        input.extend_from_slice(&versions[0]);
        for w in versions.windows(2) {
            let script = delta::encode(&w[0], &w[1]);
            input.extend_from_slice(&(w[1].len() as u16).to_le_bytes());
            input.extend_from_slice(&(script.len() as u16).to_le_bytes());
            input.extend_from_slice(&script);
        }
        input
    };
    push("delta_chain", "chain-3", chain_input(&versions[..4]), true);
    let deep = chain_input(&versions);
    push("delta_chain", "chain-64", deep.clone(), true);
    // The top level claiming a byte more than its script makes.
    let mut longer = deep.clone();
    let top = delta::encode(&versions[versions.len() - 2], &versions[versions.len() - 1]);
    let at = longer.len() - top.len() - 4;
    longer[at..at + 2]
        .copy_from_slice(&(versions[versions.len() - 1].len() as u16 + 1).to_le_bytes());
    push("delta_chain", "chain-64-longer", longer, false);
    push(
        "delta_chain",
        "chain-64-cut",
        deep[..deep.len() - 3].to_vec(),
        false,
    );

    // A pack of those blobs, and its header plaintext behind a blob area of the same size.
    let mut w = PackWriter::new();
    for (kind, id, stored, raw_len) in &sealed_blobs {
        must(w.add(*kind, *id, stored, *raw_len, None), "pack");
    }
    let p = must(w.finish(k), "pack");
    push("pack_header", "pack", p.bytes.clone(), true);
    let area: usize = p.entries.iter().map(|e| e.stored_len as usize).sum();
    let mut input = (area as u16).to_le_bytes().to_vec();
    for e in &p.entries {
        input.push(e.kind as u8);
        input.extend_from_slice(&e.id.0);
        input.extend_from_slice(&e.stored_len.to_le_bytes());
        input.extend_from_slice(&e.raw_len.to_le_bytes());
        if let Some(b) = &e.base {
            input.extend_from_slice(&b.0);
        }
    }
    push("pack_header_sealed", "pack", input, true);

    // An index object naming that pack and a second, empty-looking one.
    let packs = vec![
        index::IndexedPack {
            id: p.id,
            size: p.bytes.len() as u64,
            entries: p.entries.clone(),
        },
        index::IndexedPack {
            id: ObjectId([9; 32]),
            size: 0,
            entries: Vec::new(),
        },
    ];
    let (_, stored) = must(index::encode(k, &packs), "index");
    let plain = must(
        k.open(format::aad::INDEX, &stored, &|| "index".into()),
        "index",
    );
    push("index_object", "index", stored, true);
    push("index_object_sealed", "index", plain, true);

    // A tree with a file, a directory, a symlink and a name that is not UTF-8.
    let node = |name: &str, kind| {
        Node::new(
            std::ffi::OsStr::new(name),
            kind,
            0o644,
            1000,
            1000,
            1_700_000_000_123_456_789,
        )
    };
    let mut file = node("dump.sql", NodeKind::File);
    file.content = vec![
        ContentRef(sealed_blobs[0].1, text.len() as u32),
        ContentRef(sealed_blobs[1].1, rand.len() as u32),
    ];
    file.size = (text.len() + rand.len()) as u64;
    (file.inode, file.device, file.links, file.ctime_ns) = (77, 2049, 2, 1_700_000_001_000_000_000);
    file.xattrs = vec![tresor::format::tree::Xattr {
        name: "user.origin".into(),
        value: "00ff".into(),
    }];
    let mut dir = node("etc", NodeKind::Dir);
    dir.mode = 0o755;
    dir.subtree = Some(sealed_blobs[2].1);
    let mut link = node("current", NodeKind::Symlink);
    link.target = Some("dump.sql".into());
    let raw_name =
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(vec![b'l', 0xe9, b'a']);
    let (lossy, hexed) = encode_os(&raw_name);
    let mut latin1 = node(&lossy, NodeKind::File);
    latin1.name_hex = hexed;
    latin1.mtime_ns = -5;
    let mut pipe = node("pipe", NodeKind::Fifo);
    pipe.mode = 0o600;
    let mut null = node("null", NodeKind::Chardev);
    null.rdev = 0x103;
    let t = must(Tree::new(vec![file, dir, link, latin1, pipe, null]), "tree");
    push("tree", "tree", must(t.to_bytes(), "tree"), true);

    // A snapshot with every kind of source and a summary with errors.
    let snap = Snapshot {
        version: format::SNAPSHOT_VERSION,
        time: "2026-11-05T03:04:05.123456789Z".into(),
        host: "db1".into(),
        username: "postgres".into(),
        tags: vec!["nightly".into(), "pg".into()],
        sources: vec![
            SourceRecord::Path {
                path: "/etc".into(),
            },
            SourceRecord::Stdin {
                name: "stdin.sql".into(),
            },
            SourceRecord::Command {
                command: "pg_dump -Fp shop".into(),
                name: "shop.sql".into(),
            },
        ],
        root: k.blob_id(&must(t.to_bytes(), "tree")),
        parent: Some("5f".repeat(32)),
        excludes: Some(tresor::format::snapshot::ExcludeRecord {
            patterns: vec!["*.tmp".into(), "/var/cache/**".into()],
            if_present: vec![".nobackup".into()],
            caches: true,
            one_file_system: true,
        }),
        summary: Summary {
            files: 3,
            dirs: 1,
            symlinks: 1,
            specials: 2,
            bytes_read: 123_456,
            files_new: 1,
            files_changed: 1,
            files_unchanged: 1,
            bytes_added: 45_678,
            data_added: 100_000,
            blobs_added: 4,
            blobs_reused: 2,
            blobs_delta: 1,
            duration_seconds: 1.234_567,
            command_exit_status: vec![0],
            incomplete: true,
            errors: vec!["/etc/shadow: permission denied".into()],
        },
        known_snapshots: vec!["6a".repeat(32), "7b".repeat(32)],
        original: None,
    };
    let (_, stored) = must(snap.encode(k), "snapshot");
    let plain = must(
        k.open(format::aad::SNAPSHOT, &stored, &|| "snapshot".into()),
        "snapshot",
    );
    push("snapshot", "snapshot", stored, true);
    push("snapshot_sealed", "snapshot", plain, true);

    // A key file with the cheapest argon2 parameters.
    let cheap = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let (_, kf) = must(
        keys::create(k, PASSWORD, cheap, "fuzz-host", "fuzz-user"),
        "key file",
    );
    push("key_file", "key", kf, true);

    // The config, default and with small chunks and no compression.
    let params = [
        (
            "default",
            tresor::repo::config::DEFAULT_CHUNKER,
            tresor::repo::config::DEFAULT_PACK_SIZE,
            3,
        ),
        (
            "small",
            ChunkerParams {
                min_size: 2048,
                avg_size: 8192,
                max_size: 32768,
            },
            1 << 20,
            0,
        ),
    ];
    for (name, chunker, pack_size, level) in params {
        let c = must(Config::new(chunker, pack_size, level), name);
        let stored = must(c.encode(k), name);
        let plain = must(
            k.open(format::aad::CONFIG, &stored, &|| "config".into()),
            name,
        );
        push("config", name, stored, true);
        push("config_sealed", name, plain, true);
    }
    out
}
