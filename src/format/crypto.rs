//! Keys and cryptography: the master key, its subkeys, sealing, and password wrapping.
//!
//! One random 32-byte master secret per repository. From it, BLAKE3 `derive_key` makes three
//! independent subkeys: the blob-id key (keyed BLAKE3 over plaintext), the encryption key
//! (XChaCha20-Poly1305) and the chunker's gear seed. Key files wrap the master secret under a key
//! derived from a password by argon2id (see keys.rs).
//!
//! A repository made with `repo init --copy-chunker-params-from` has a second 32-byte secret,
//! the **content secret**, taken from the source repository: the blob-id key and the gear seed
//! derive from it, the encryption key still from its own master secret. Such a repository ids
//! and cuts plaintext exactly like its source (so copied blobs keep their ids and dedup with
//! direct backups) while nothing it stores can be opened with the source's key. Without one,
//! the content secret is the master secret itself (every repository made before it existed).
//!
//! A sealed envelope is `nonce (24) ‖ ciphertext ‖ tag (16)` with a fresh random nonce. The
//! associated data names what the envelope holds (format::aad), so a snapshot cannot be passed
//! off as an index object, nor one blob as another. Key material never derives Debug, Clone
//! or Default, and is zeroized on drop.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::format::id::{BlobId, ObjectId};
use crate::format::{self, NONCE_LEN, SEAL_OVERHEAD};

/// 32 secret bytes that are wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(pub [u8; 32]);

/// The repository's keys, derived from the master secret.
pub struct MasterKey {
    master: SecretBytes,
    /// The content secret when it is not the master secret.
    content: Option<SecretBytes>,
    blob_id_key: SecretBytes,
    cipher: XChaCha20Poly1305,
    gear_seed: SecretBytes,
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self> {
        let mut m = [0u8; 32];
        random_bytes(&mut m)?;
        let key = Self::from_secret(m);
        m.zeroize();
        Ok(key)
    }

    /// A new random master key that shares `other`'s content secret: it ids and chunks
    /// plaintext like `other` and encrypts under its own key (`--copy-chunker-params-from`).
    pub fn generate_sharing_content(other: &MasterKey) -> Result<Self> {
        let mut m = [0u8; 32];
        random_bytes(&mut m)?;
        let key = Self::from_secrets(m, Some(*other.content_secret()));
        m.zeroize();
        Ok(key)
    }

    /// Rebuilds the keys from a master secret (as unwrapped from a key file); the content
    /// secret is the master secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self::from_secrets(secret, None)
    }

    /// Rebuilds the keys from a master secret and, when the repository has its own, a
    /// content secret (see the module documentation). A content secret equal to the master
    /// secret is the same as none.
    pub fn from_secrets(secret: [u8; 32], content: Option<[u8; 32]>) -> Self {
        let content = content.filter(|c| *c != secret);
        let content_src = content.as_ref().unwrap_or(&secret);
        let blob_id_key = blake3::derive_key(format::kdf_context::BLOB_ID, content_src);
        let gear_seed = blake3::derive_key(format::kdf_context::GEAR, content_src);
        let mut enc = blake3::derive_key(format::kdf_context::ENCRYPTION, &secret);
        let cipher = XChaCha20Poly1305::new((&enc).into());
        enc.zeroize();
        MasterKey {
            master: SecretBytes(secret),
            content: content.map(SecretBytes),
            blob_id_key: SecretBytes(blob_id_key),
            cipher,
            gear_seed: SecretBytes(gear_seed),
        }
    }

    /// The master secret.
    pub fn secret(&self) -> &[u8; 32] {
        &self.master.0
    }

    /// The content secret: the blob-id key and the gear seed derive from it.
    pub fn content_secret(&self) -> &[u8; 32] {
        self.content.as_ref().map_or(&self.master.0, |c| &c.0)
    }

    /// Whether `other` ids and chunks plaintext exactly like this key (same content secret).
    pub fn same_content(&self, other: &MasterKey) -> bool {
        self.blob_id_key.0 == other.blob_id_key.0 && self.gear_seed.0 == other.gear_seed.0
    }

    /// What a key file wraps: the 32-byte master secret, followed by the content secret when
    /// the repository has its own (64 bytes).
    pub fn wrapped_secret(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(64));
        v.extend_from_slice(&self.master.0);
        if let Some(c) = &self.content {
            v.extend_from_slice(&c.0);
        }
        v
    }

    /// The reverse of [`MasterKey::wrapped_secret`]; `None` unless 32 or 64 bytes.
    pub fn from_wrapped(bytes: &[u8]) -> Option<Self> {
        let mut m = [0u8; 32];
        let mut c = [0u8; 32];
        let key = match bytes.len() {
            32 => {
                m.copy_from_slice(bytes);
                Some(Self::from_secret(m))
            }
            64 => {
                m.copy_from_slice(&bytes[..32]);
                c.copy_from_slice(&bytes[32..]);
                Some(Self::from_secrets(m, Some(c)))
            }
            _ => None,
        };
        m.zeroize();
        c.zeroize();
        key
    }

    /// The id of a blob with this plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.blob_id_key.0, plaintext).as_bytes())
    }

    /// 256 gear values for the chunker, derived from the key so boundaries leak nothing.
    pub fn gear_table(&self) -> Vec<u64> {
        let mut xof = blake3::Hasher::new_keyed(&self.gear_seed.0)
            .update(b"gear")
            .finalize_xof();
        let mut bytes = [0u8; 256 * 8];
        xof.fill(&mut bytes);
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect()
    }

    /// Seals `plaintext` with associated data `aad`: `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        seal_with(&self.cipher, aad, plaintext)
    }

    /// Opens an envelope made by [`MasterKey::seal`]; `what` names the object in errors.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        open_with(&self.cipher, aad, sealed, what)
    }

    /// Serializes `value` as JSON and seals it: the stored bytes of a named object, and its
    /// name (the BLAKE3 hash of those bytes).
    pub fn seal_json<T: serde::Serialize>(
        &self,
        aad: &[u8],
        value: &T,
    ) -> Result<(ObjectId, Vec<u8>)> {
        let json = serde_json::to_vec(value).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let sealed = self.seal(aad, &json)?;
        Ok((ObjectId::of_bytes(&sealed), sealed))
    }

    /// The reverse of [`MasterKey::seal_json`]: checks that `stored` hashes to `name`, opens
    /// it and parses the JSON; `what` names the object in errors.
    pub fn open_named_json<T: serde::de::DeserializeOwned>(
        &self,
        aad: &[u8],
        name: &ObjectId,
        stored: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<T> {
        if ObjectId::of_bytes(stored) != *name {
            return Err(Error::corrupt(what(), "content does not match its name"));
        }
        let plain = self.open(aad, stored, what)?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(what(), e.to_string()))
    }
}

/// Seals with an explicit cipher (used by key files, whose cipher comes from the password).
pub(crate) fn seal_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::InvalidArgument("encryption failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens an envelope with an explicit cipher.
pub(crate) fn open_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Error::corrupt(
            what(),
            format!("only {} bytes, too short to be sealed", sealed.len()),
        ));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| {
            Error::corrupt(
                what(),
                "authentication failed (damaged, tampered with, or not this object)",
            )
        })
}

/// Builds a cipher from 32 raw key bytes.
pub(crate) fn cipher_from(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf)
        .map_err(|e| Error::io("reading random bytes", std::io::Error::other(e.to_string())))
}

/// Blob associated data: domain, kind, id.
pub fn blob_aad(kind: format::BlobKind, id: &BlobId) -> [u8; 14 + 1 + 32] {
    let mut a = [0u8; 47];
    a[..14].copy_from_slice(format::aad::BLOB);
    a[14] = kind as u8;
    a[15..].copy_from_slice(&id.0);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = MasterKey::generate().unwrap();
        let s = k.seal(b"ad", b"hello").unwrap();
        assert_eq!(k.open(b"ad", &s, &|| "x".into()).unwrap(), b"hello");
        assert!(k.open(b"other", &s, &|| "x".into()).is_err());
        let mut t = s.clone();
        t[30] ^= 1;
        assert!(k.open(b"ad", &t, &|| "x".into()).is_err());
        let other = MasterKey::generate().unwrap();
        assert!(other.open(b"ad", &s, &|| "x".into()).is_err());
        assert!(k.open(b"ad", &s[..10], &|| "x".into()).is_err());
    }

    #[test]
    fn subkeys_are_deterministic_and_distinct() {
        let a = MasterKey::from_secret([7; 32]);
        let b = MasterKey::from_secret([7; 32]);
        let c = MasterKey::from_secret([8; 32]);
        assert_eq!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), c.blob_id(b"x"));
        assert_eq!(a.gear_table(), b.gear_table());
        assert_ne!(a.gear_table(), c.gear_table());
        assert_eq!(a.gear_table().len(), 256);
    }

    /// A key sharing another's content secret ids and chunks like it and encrypts apart; its
    /// wrapped form is 64 bytes and round-trips; a key of its own wraps 32 bytes, as before.
    #[test]
    fn shared_content_secret() {
        let src = MasterKey::from_secret([7; 32]);
        let dst = MasterKey::generate_sharing_content(&src).unwrap();
        assert!(dst.same_content(&src));
        assert_eq!(dst.blob_id(b"x"), src.blob_id(b"x"));
        assert_eq!(dst.gear_table(), src.gear_table());
        let s = dst.seal(b"ad", b"hello").unwrap();
        assert!(src.open(b"ad", &s, &|| "x".into()).is_err());
        assert_eq!(src.wrapped_secret().len(), 32);
        assert_eq!(dst.wrapped_secret().len(), 64);
        let back = MasterKey::from_wrapped(&dst.wrapped_secret()).unwrap();
        assert!(back.same_content(&src));
        assert_eq!(back.open(b"ad", &s, &|| "x".into()).unwrap(), b"hello");
        assert!(MasterKey::from_wrapped(&[1; 33]).is_none());
        let own = MasterKey::from_wrapped(&[7; 32]).unwrap();
        assert!(own.same_content(&src) && own.wrapped_secret().len() == 32);
        // Content secret equal to the master secret: the same as none (wraps 32 bytes).
        assert_eq!(
            MasterKey::from_secrets([7; 32], Some([7; 32]))
                .wrapped_secret()
                .len(),
            32
        );
        assert!(!MasterKey::generate().unwrap().same_content(&src));
    }
}
