//! Typed identifiers.
//!
//! Every id is 32 bytes. Blob ids ([`BlobId`]) are keyed BLAKE3 hashes of the plaintext, so they
//! reveal nothing without the key; object names ([`ObjectId`]: packs, index objects, snapshots,
//! key files) are plain BLAKE3 hashes of the stored bytes, so anyone can check that a file still
//! matches its name. Distinct types keep a pack id from being passed where a blob id is wanted.

use std::fmt;

use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Full lowercase hex form (64 characters).
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses a 64-character hex string.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::corrupt(stringify!($name), format!("{s:?} is not a 64-digit hex id"))
                })?;
                Ok(Self(out))
            }

            /// The first 8 hex digits, for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Builds an id from a byte slice of exactly 32 bytes.
            pub fn from_slice(b: &[u8]) -> Result<Self> {
                let arr: [u8; 32] = b.try_into().map_err(|_| {
                    Error::corrupt(stringify!($name), format!("id has {} bytes, not 32", b.len()))
                })?;
                Ok(Self(arr))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// Id of a blob (a data chunk or a tree): keyed BLAKE3 of its plaintext.
    BlobId
);
id_type!(
    /// Name of a stored object (pack, index object, snapshot, key file): BLAKE3 of its bytes.
    ObjectId
);

impl ObjectId {
    /// The name an object with these stored bytes must have.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let id = ObjectId::of_bytes(b"abc");
        assert_eq!(ObjectId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ObjectId::from_hex("zz").is_err());
        assert!(BlobId::from_hex(&"0".repeat(63)).is_err());
        assert_eq!(id.short().len(), 8);
    }
}

macro_rules! serde_hex {
    ($name:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_hex!(BlobId);
serde_hex!(ObjectId);
