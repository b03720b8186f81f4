//! tresor: a content-addressed, deduplicating, encrypted backup repository.
//!
//! # The pipeline
//!
//! Backup: sources ([`source`]) → content-defined chunks ([`format::chunker`], FastCDC with a
//! keyed gear table) → keyed BLAKE3 ids ([`format::crypto`]) → dedup against the catalog
//! ([`repo::catalog`], SQLite) → zstd + XChaCha20-Poly1305 ([`format::codec`]) → packs
//! ([`format::pack`]) on a [`backend`] → index objects ([`format::index`]) → trees
//! ([`format::tree`]) → snapshot ([`format::snapshot`]), written last. [`backup`] runs it.
//!
//! Restore: snapshot → trees → catalog locations → ranged pack reads → decode (authenticate,
//! bounded inflate, id check) → files. [`restore`] runs it.
//!
//! # Tiers
//!
//! The folders are the tiers; a module uses only its own tier and lower ones.
//!
//! - T0, [`format`]: pure encodings, no I/O. [`error`], [`interrupt`] (the process-wide stop
//!   flag), [`progress`] (the progress trait of phased operations), [`parallel`] (requests
//!   in flight on a few threads) and [`units`] (sizes and shares) are shared by every tier.
//! - T1, storage: [`backend`] (bytes under names) and [`repo`] (the only door to them: keys,
//!   config, catalog, locks, snapshots, blob reading and pack writing).
//! - T2, operations: [`source`] (what a backup reads, with change detection and excludes;
//!   database sources through [`db`], the engines that dump, restore and drill databases from
//!   and into a reader or writer, never the repository),
//!   [`backup`], [`restore`], [`check`], [`copy`], [`prune`], [`forget`], [`repair`], [`listing`],
//!   [`usage`], [`vfs`] and [`mount`]. Operations never call each other; they share
//!   [`repo::Repo`].
//! - T3: [`jobs`] (the configuration file, `tresor run`, hooks, notifications, status,
//!   schedules) orchestrates the operations; the CLI lives in the binary (`src/cli/`).
//!
//! docs/design.md is the on-disk format specification and has the module map.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod backup;
pub mod check;
pub mod copy;
pub mod db;
pub mod error;
pub mod forget;
pub mod format;
pub mod interrupt;
pub mod jobs;
pub mod listing;
pub mod mount;
pub mod parallel;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod source;
pub mod units;
pub mod usage;
pub mod vfs;

pub use error::{Error, Result};
