//! Key files: the master secret wrapped under a password.
//!
//! A key file is JSON, readable without the password (it must be: it says how to derive the
//! wrapping key), and reveals nothing but the KDF parameters:
//!
//! ```json
//! {"version":1,"kdf":"argon2id","memory_kib":65536,"iterations":3,"parallelism":1,
//!  "salt":"<32 hex>","created":"…","host":"…","master":"<hex of sealed 32-byte secret>"}
//! ```
//!
//! The wrapping key is argon2id(password, salt) → 32 bytes; `master` is an XChaCha20-Poly1305
//! envelope of the master secret with associated data `tresor/v1/key`. A repository may hold
//! several key files; opening tries each one. The file is named by the BLAKE3 hash of its bytes.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::format;
use crate::id::ObjectId;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a third of a second on this project's reference machine.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Largest argon2 memory a key file may ask for: 2 GiB.
pub const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
/// Most argon2 passes a key file may ask for.
pub const MAX_ITERATIONS: u32 = 20;
/// Largest memory × passes a key file may ask for (4 GiB·pass, a few seconds here): a planted
/// key file must not stall every open of the repository.
pub const MAX_WORK_KIB: u64 = 4 * 1024 * 1024;

/// The stored form of a key file.
#[derive(Serialize, Deserialize)]
pub struct KeyFile {
    version: u32,
    kdf: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
    created: String,
    host: String,
    master: String,
}

fn derive(password: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| Error::InvalidArgument(format!("argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(password, salt, out.as_mut())
        .map_err(|e| Error::InvalidArgument(format!("argon2: {e}")))?;
    Ok(out)
}

/// Wraps `key` under `password`; returns (file name, bytes).
pub fn create(
    key: &MasterKey,
    password: &[u8],
    params: KdfParams,
    host: &str,
) -> Result<(ObjectId, Vec<u8>)> {
    let mut salt = [0u8; 16];
    crypto::random_bytes(&mut salt)?;
    let kek = derive(password, &salt, params)?;
    let sealed = crypto::seal_with(&crypto::cipher_from(&kek), format::aad::KEY, key.secret())?;
    let kf = KeyFile {
        version: format::KEY_FILE_VERSION,
        kdf: "argon2id".into(),
        memory_kib: params.memory_kib,
        iterations: params.iterations,
        parallelism: params.parallelism,
        salt: hex::encode(salt),
        created: chrono::Utc::now().to_rfc3339(),
        host: host.into(),
        master: hex::encode(sealed),
    };
    let bytes =
        serde_json::to_vec_pretty(&kf).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok((ObjectId::of_bytes(&bytes), bytes))
}

/// Tries to unwrap the master key from one key file. `Ok(None)`: the password does not fit.
pub fn open(name: &str, bytes: &[u8], password: &[u8]) -> Result<Option<MasterKey>> {
    let what = || format!("key file {name}");
    let kf: KeyFile =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what(), e.to_string()))?;
    if kf.version != format::KEY_FILE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "key file",
            found: kf.version,
            supported: format::KEY_FILE_VERSION,
        });
    }
    if kf.kdf != "argon2id" {
        return Err(Error::corrupt(what(), format!("unknown kdf {:?}", kf.kdf)));
    }
    // Refuse parameters that would take absurd time or memory (a hostile key file).
    if kf.memory_kib > MAX_MEMORY_KIB
        || kf.iterations > MAX_ITERATIONS
        || (kf.memory_kib as u64) * (kf.iterations as u64) > MAX_WORK_KIB
        || kf.parallelism == 0
        || kf.parallelism > 64
    {
        return Err(Error::corrupt(what(), "unreasonable KDF parameters"));
    }
    let salt = hex::decode(&kf.salt).map_err(|_| Error::corrupt(what(), "salt is not hex"))?;
    let sealed =
        hex::decode(&kf.master).map_err(|_| Error::corrupt(what(), "master is not hex"))?;
    let params = KdfParams {
        memory_kib: kf.memory_kib,
        iterations: kf.iterations,
        parallelism: kf.parallelism,
    };
    let kek = derive(password, &salt, params).map_err(|e| Error::corrupt(what(), e.to_string()))?;
    match crypto::open_with(&crypto::cipher_from(&kek), format::aad::KEY, &sealed, &what) {
        Ok(secret) => {
            let secret = Zeroizing::new(secret);
            let arr: [u8; 32] = secret
                .as_slice()
                .try_into()
                .map_err(|_| Error::corrupt(what(), "master secret has the wrong length"))?;
            Ok(Some(MasterKey::from_secret(arr)))
        }
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let k = MasterKey::generate().unwrap();
        let p = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let (_, bytes) = create(&k, b"secret", p, "h").unwrap();
        let back = open("k", &bytes, b"secret").unwrap().unwrap();
        assert_eq!(back.secret(), k.secret());
        assert!(open("k", &bytes, b"wrong").unwrap().is_none());
        assert!(open("k", b"{not json", b"secret").is_err());
    }
}
