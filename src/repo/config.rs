//! The repository config: one sealed JSON object named `config`.
//!
//! It holds what every writer must agree on: format version, repository id (names the local
//! cache), chunker parameters, pack target size and zstd level. Sealed with the master key, so
//! even the parameters are private.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format;
use crate::format::chunker::ChunkerParams;
use crate::format::crypto::MasterKey;

/// Default chunker parameters; docs/design.md records the measurement behind them.
pub const DEFAULT_CHUNKER: ChunkerParams = ChunkerParams {
    min_size: 256 * 1024,
    avg_size: 1024 * 1024,
    max_size: 4 * 1024 * 1024,
};

/// Default pack target size: 16 MiB (see docs/design.md).
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

/// Default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// The decoded config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Format version ([`format::REPO_VERSION`]).
    pub version: u32,
    /// Random repository id, 64 hex digits.
    pub id: String,
    /// Chunk sizes.
    pub chunker: ChunkerParams,
    /// Target size of a pack in bytes; a pack is closed once its blobs reach it.
    pub pack_size: u32,
    /// zstd level for new blobs (0: no compression).
    pub compression_level: i32,
}

impl Config {
    /// A new config with a random id.
    pub fn new(chunker: ChunkerParams, pack_size: u32, compression_level: i32) -> Result<Self> {
        chunker.validate()?;
        if !(1024 * 1024..=512 * 1024 * 1024).contains(&pack_size) {
            return Err(Error::InvalidArgument(
                "pack size must be between 1 MiB and 512 MiB".into(),
            ));
        }
        if !(0..=22).contains(&compression_level) {
            return Err(Error::InvalidArgument(
                "compression level must be 0 (off) to 22".into(),
            ));
        }
        let mut id = [0u8; 32];
        crate::format::crypto::random_bytes(&mut id)?;
        Ok(Config {
            version: format::REPO_VERSION,
            id: hex::encode(id),
            chunker,
            pack_size,
            compression_level,
        })
    }

    /// Seals the config.
    pub fn encode(&self, key: &MasterKey) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        key.seal(format::aad::CONFIG, &json)
    }

    /// Opens, parses and validates a config.
    pub fn decode(key: &MasterKey, stored: &[u8]) -> Result<Self> {
        let plain = key.open(format::aad::CONFIG, stored, &|| "config".into())?;
        let c: Config =
            serde_json::from_slice(&plain).map_err(|e| Error::corrupt("config", e.to_string()))?;
        if !(format::MIN_REPO_VERSION..=format::REPO_VERSION).contains(&c.version) {
            return Err(Error::UnsupportedVersion {
                what: "repository",
                found: c.version,
                supported: format::REPO_VERSION,
            });
        }
        c.chunker
            .validate()
            .map_err(|e| Error::corrupt("config", e.to_string()))?;
        if c.id.len() != 64 || !c.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::corrupt("config", "bad repository id"));
        }
        Ok(c)
    }
}
