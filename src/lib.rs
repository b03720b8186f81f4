//! tresor: a content-addressed, deduplicating, encrypted backup repository.
//!
//! # The pipeline
//!
//! Backup: sources ([`source`]) → content-defined chunks ([`chunker`], FastCDC with a keyed gear
//! table) → keyed BLAKE3 ids ([`crypto`]) → dedup against the catalog ([`catalog`], SQLite) →
//! zstd + XChaCha20-Poly1305 ([`codec`]) → packs ([`pack`]) on a [`backend`] → index objects
//! ([`index`]) → trees ([`tree`]) → snapshot ([`snapshot`]), written last. [`archiver`] runs it.
//!
//! Restore: snapshot → trees → catalog locations → ranged pack reads → decode (authenticate,
//! bounded inflate, id check) → files. [`restorer`] runs it.
//!
//! # Tiers
//!
//! T0 (no I/O): `error`, `id`, `format`, `crypto`, `chunker`, `codec`, `tree`,
//! `selection`.
//! T1 (repository objects): `backend`, `pack`, `index`, `catalog`, `keys`, `config`, `snapshot`,
//! `repo`. T2 (operations): `source` (with its helpers `parent`, change detection, and `exclude`),
//! `archiver`, `restorer`. The CLI (T3) lives in the binary.
//! A module uses only lower tiers; operations never call each other, they share [`repo::Repo`].
//!
//! docs/design.md is the on-disk format specification.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod archiver;
pub mod backend;
pub mod catalog;
pub mod checker;
pub mod chunker;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod delta;
pub mod error;
pub mod exclude;
pub mod forget;
pub mod format;
pub mod glob;
pub mod history;
pub mod id;
pub mod index;
pub mod interrupt;
pub mod keys;
pub mod listing;
pub mod lock;
pub mod mount;
pub mod pack;
pub mod parent;
pub mod policy;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restorer;
pub mod selection;
pub mod snapshot;
pub mod source;
pub mod tree;
pub mod usage;
pub mod vfs;

pub use error::{Error, Result};
