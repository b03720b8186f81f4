//! The integration suite: one binary, the real `tresor` executable, real PostgreSQL.
//!
//! Each module covers one area; tests/harness/mod.rs has the shared helpers (temp dirs, the
//! binary with a clean environment, a throwaway PostgreSQL cluster).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "harness/conformance.rs"]
pub mod conformance;
mod harness;

#[path = "it/backends.rs"]
mod backends;
#[path = "it/backup.rs"]
mod backup;
#[path = "it/copy.rs"]
mod copy;
#[path = "it/crash.rs"]
mod crash;
#[path = "it/databases.rs"]
mod databases;
#[path = "it/dedup.rs"]
mod dedup;
#[path = "it/delta.rs"]
mod delta;
#[path = "it/disk.rs"]
mod disk;
#[path = "it/errors.rs"]
mod errors;
mod fuzz_seeds;
#[path = "it/hardening.rs"]
mod hardening;
#[path = "it/integrity.rs"]
mod integrity;
#[path = "it/jobs.rs"]
mod jobs;
#[path = "it/json.rs"]
mod json;
#[path = "it/listing.rs"]
mod listing;
#[path = "it/locations.rs"]
mod locations;
#[path = "it/mount.rs"]
mod mount;
#[path = "it/plaintext.rs"]
mod plaintext;
#[path = "it/postgres.rs"]
mod postgres;
#[path = "it/requests.rs"]
mod requests;
#[path = "it/restore.rs"]
mod restore;
#[path = "it/retention.rs"]
mod retention;
#[path = "it/s3.rs"]
mod s3;
#[path = "it/s3_commands.rs"]
mod s3_commands;
#[path = "it/s3_faults.rs"]
mod s3_faults;
#[path = "it/tree.rs"]
mod tree;
