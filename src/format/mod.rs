//! Tier 0, the format: everything that turns values into stored bytes and back, with no I/O.
//!
//! Each module mirrors a section of docs/design.md: [`magic`] (every constant that appears in a
//! stored byte; re-exported here), [`id`] (typed ids), [`crypto`] (keys, AEAD, keyed BLAKE3),
//! [`chunker`] (FastCDC with a keyed gear table), [`codec`] (blob sealing: compress, encrypt,
//! authenticate), [`delta`] (copy scripts against a base), [`tree`], [`snapshot`], [`index`] and
//! [`pack`] (the encodings of those objects), and [`glob`] (the path globs of excludes and
//! selections).

#![forbid(unsafe_code)]

pub mod chain;
pub mod chunker;
pub mod codec;
pub mod crypto;
pub mod delta;
pub mod glob;
pub mod id;
pub mod index;
pub mod magic;
pub mod pack;
pub mod snapshot;
pub mod tree;

pub use magic::*;
