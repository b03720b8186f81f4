//! Key files: the master secret wrapped under a password.
//!
//! A key file is JSON, readable without the password (it must be: it says how to derive the
//! wrapping key), and reveals nothing but the KDF parameters:
//!
//! ```json
//! {"version":1,"kdf":"argon2id","memory_kib":65536,"iterations":3,"parallelism":1,
//!  "salt":"<32 hex>","created":"…","host":"…","user":"…",
//!  "master":"<hex of sealed 32-byte secret>"}
//! ```
//!
//! The wrapping key is argon2id(password, salt) → 32 bytes; `master` is an XChaCha20-Poly1305
//! envelope of the master secret with associated data `tresor/v1/key`: 32 bytes, or 64 bytes
//! (master secret ‖ content secret) in a repository made with `--copy-chunker-params-from`
//! (see [`crate::format::crypto`]); a build older than that refuses the 64-byte form. A repository may hold
//! several key files (one per password: `tresor key add`); each wraps the same master secret.
//! The file is named by the BLAKE3 hash of its bytes. `user` is absent in key files written
//! before key management existed.
//!
//! Anyone who can write to `keys/` can plant files there, so a reader checks each file cheaply
//! ([`inspect`]: size, name, JSON, KDF limits) before spending a KDF on it, and the repository
//! bounds the total KDF cost of one open (see `repo::Repo::open_with`).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format;
use crate::format::crypto::{self, MasterKey};
use crate::format::id::ObjectId;

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

impl KdfParams {
    /// The argon2 work this costs: memory (KiB) × passes.
    pub fn cost(&self) -> u64 {
        self.memory_kib as u64 * self.iterations as u64
    }

    /// Refuses parameters a reader would refuse (so `repo init` and `key add` can never write
    /// a key file that cannot be opened) and those argon2 itself rejects.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument(format!("KDF parameters: {why}")));
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return bad(format!("parallelism must be 1 to {MAX_PARALLELISM}"));
        }
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return bad(format!(
                "iterations must be 1 to {MAX_ITERATIONS} (got {})",
                self.iterations
            ));
        }
        let min_memory = 8 * self.parallelism;
        if self.memory_kib < min_memory || self.memory_kib > MAX_MEMORY_KIB {
            return bad(format!(
                "memory must be {min_memory} KiB to {MAX_MEMORY_KIB} KiB (got {})",
                self.memory_kib
            ));
        }
        if self.cost() > MAX_WORK_KIB {
            return bad(format!(
                "memory × iterations must be at most {MAX_WORK_KIB} KiB (got {})",
                self.cost()
            ));
        }
        Ok(())
    }
}

/// Most argon2 lanes a key file may ask for.
pub const MAX_PARALLELISM: u32 = 64;

/// Largest key file a reader looks at: real ones are about 400 bytes.
pub const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

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
    #[serde(default)]
    user: String,
    master: String,
}

/// What a key file says about itself (readable without the password).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    /// The key file's name: the BLAKE3 hash of its bytes.
    pub id: String,
    /// Host it was made on.
    pub host: String,
    /// User who made it (empty for key files older than key management).
    pub user: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// Its argon2id parameters.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KeyInfo {
    /// Its KDF parameters.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
            parallelism: self.parallelism,
        }
    }
}

/// Parses and checks a key file without the password (no KDF): its name matches its bytes,
/// it is a key file of a known version, and its KDF parameters are within the limits.
pub fn inspect(name: &str, bytes: &[u8]) -> Result<KeyInfo> {
    Ok(parse(name, bytes)?.0)
}

fn parse(name: &str, bytes: &[u8]) -> Result<(KeyInfo, KeyFile)> {
    let what = || format!("key file {name}");
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(Error::corrupt(
            what(),
            format!("{} bytes is too large for a key file", bytes.len()),
        ));
    }
    if ObjectId::of_bytes(bytes).to_hex() != name {
        return Err(Error::corrupt(what(), "content does not match its name"));
    }
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
    let info = KeyInfo {
        id: name.to_string(),
        host: kf.host.clone(),
        user: kf.user.clone(),
        created: kf.created.clone(),
        memory_kib: kf.memory_kib,
        iterations: kf.iterations,
        parallelism: kf.parallelism,
    };
    // Refuse parameters that would take absurd time or memory (a hostile key file).
    info.params()
        .validate()
        .map_err(|e| Error::corrupt(what(), format!("unreasonable KDF parameters ({e})")))?;
    Ok((info, kf))
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
    user: &str,
) -> Result<(ObjectId, Vec<u8>)> {
    params.validate()?;
    let mut salt = [0u8; 16];
    crypto::random_bytes(&mut salt)?;
    let kek = derive(password, &salt, params)?;
    let sealed = crypto::seal_with(
        &crypto::cipher_from(&kek),
        format::aad::KEY,
        &key.wrapped_secret(),
    )?;
    let kf = KeyFile {
        version: format::KEY_FILE_VERSION,
        kdf: "argon2id".into(),
        memory_kib: params.memory_kib,
        iterations: params.iterations,
        parallelism: params.parallelism,
        salt: hex::encode(salt),
        created: chrono::Utc::now().to_rfc3339(),
        host: host.into(),
        user: user.into(),
        master: hex::encode(sealed),
    };
    let bytes =
        serde_json::to_vec_pretty(&kf).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok((ObjectId::of_bytes(&bytes), bytes))
}

/// Tries to unwrap the master key from one key file. `Ok(None)`: the password does not fit.
pub fn open(name: &str, bytes: &[u8], password: &[u8]) -> Result<Option<MasterKey>> {
    let what = || format!("key file {name}");
    let (info, kf) = parse(name, bytes)?;
    let salt = hex::decode(&kf.salt).map_err(|_| Error::corrupt(what(), "salt is not hex"))?;
    let sealed =
        hex::decode(&kf.master).map_err(|_| Error::corrupt(what(), "master is not hex"))?;
    let kek = derive(password, &salt, info.params())
        .map_err(|e| Error::corrupt(what(), e.to_string()))?;
    match crypto::open_with(&crypto::cipher_from(&kek), format::aad::KEY, &sealed, &what) {
        Ok(secret) => {
            let secret = Zeroizing::new(secret);
            MasterKey::from_wrapped(&secret)
                .map(Some)
                .ok_or_else(|| Error::corrupt(what(), "master secret has the wrong length"))
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
        let (id, bytes) = create(&k, b"secret", p, "h", "u").unwrap();
        let name = id.to_hex();
        let back = open(&name, &bytes, b"secret").unwrap().unwrap();
        assert_eq!(back.secret(), k.secret());
        // A key with its own content secret keeps it through a key file.
        let shared = MasterKey::generate_sharing_content(&k).unwrap();
        let (sid, sbytes) = create(&shared, b"pw2", p, "h", "u").unwrap();
        let sback = open(&sid.to_hex(), &sbytes, b"pw2").unwrap().unwrap();
        assert_eq!(sback.secret(), shared.secret());
        assert!(sback.same_content(&k) && sback.content_secret() == k.content_secret());
        assert!(open(&name, &bytes, b"wrong").unwrap().is_none());
        let info = inspect(&name, &bytes).unwrap();
        assert_eq!((info.host.as_str(), info.user.as_str()), ("h", "u"));
        assert_eq!(info.params(), p);
        // Under another name (a copy renamed): refused before any KDF.
        assert!(open("k", &bytes, b"secret").is_err());
        let junk = b"{not json";
        assert!(open(&ObjectId::of_bytes(junk).to_hex(), junk, b"secret").is_err());
    }

    /// Whatever a reader refuses, a writer refuses first (`repo init --kdf-iterations 25`
    /// once made a repository nobody could open).
    #[test]
    fn parameters_a_reader_refuses_are_refused_at_creation() {
        let k = MasterKey::generate().unwrap();
        let ok = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        for bad in [
            KdfParams {
                iterations: 25,
                ..ok
            },
            KdfParams {
                iterations: 0,
                ..ok
            },
            KdfParams {
                memory_kib: 4,
                ..ok
            },
            KdfParams {
                memory_kib: MAX_MEMORY_KIB + 1,
                ..ok
            },
            KdfParams {
                memory_kib: MAX_MEMORY_KIB,
                iterations: 3,
                ..ok
            },
            KdfParams {
                parallelism: 0,
                ..ok
            },
            KdfParams {
                parallelism: 65,
                memory_kib: 1024,
                ..ok
            },
        ] {
            let err = create(&k, b"pw", bad, "h", "u").unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
        assert!(create(&k, b"pw", ok, "h", "u").is_ok());
        assert!(KdfParams::default().validate().is_ok());
    }
}
