//! Jobs: what replaces the shell script around a backup tool. One declarative file
//! ([`config`]) names jobs; [`run`] runs each job's steps (hooks, snapshot, forget, prune,
//! check) with the failure rules; [`sources`] reads the per-source hooks; [`hooks`] runs the shell commands, [`notify`] pings a
//! monitor; [`state`] keeps the run history and the per-job lock; [`status`] answers "did my
//! backups run?" for humans, Nagios and Prometheus; [`schedule`] writes the systemd timer or
//! cron line that starts it all.
//!
//! T3: this orchestrates the operations ([`crate::backup`], [`crate::forget`],
//! [`crate::prune`], [`crate::check`]) through the same entry points the CLI commands use;
//! nothing here knows their insides.
//!
//! A job's snapshots carry the tag `job:NAME`, so its last success can be found in the
//! repository when the local history is gone, and its retention touches only its own
//! snapshots.

#![forbid(unsafe_code)]

pub mod config;
pub mod hooks;
pub mod notify;
pub mod run;
pub mod schedule;
pub mod sources;
pub mod state;
pub mod status;
