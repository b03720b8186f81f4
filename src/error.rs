//! The library's error type.
//!
//! Every failure the engine can report is one [`Error`] variant, so that callers (the CLI, tests)
//! can tell a wrong password from a corrupt pack or a full disk and map each to its own exit code.
//! No variant carries key material or decrypted data.

#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A storage backend failed in a way that is not a local I/O error (a network backend's
    /// refused request, a timeout, a throttling response). `transient` says whether repeating
    /// the same call may succeed ([`Error::is_transient`]); `context` says what was being done.
    #[error("{context}: {source}")]
    Storage {
        context: String,
        transient: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The storage device is full. Reported separately because the fix is the operator's.
    #[error("{context}: no space left on device")]
    NoSpace { context: String },

    /// No repository at the given location.
    #[error("no tresor repository at {0} (run `tresor repo init` first)")]
    RepoNotFound(String),

    /// `repo init` was pointed at a location that already holds a repository or other files.
    #[error("{0} already exists and is not empty; refusing to initialise a repository over it")]
    RepoExists(String),

    /// No key file could be opened with the given password; `detail` says which key files were
    /// not tried (stray files, or over the cost budget), if any.
    #[error("wrong password: no key in the repository opens with it{detail}")]
    WrongPassword { detail: String },

    /// An object failed authentication, a length check, an id check or parsing.
    #[error("corrupt {object}: {reason}")]
    Corrupt { object: String, reason: String },

    /// An object that should exist is missing.
    #[error("missing {object}")]
    Missing { object: String },

    /// A create-only put found the object there already ([`crate::backend::Backend::put_new`]).
    #[error("{object} already exists")]
    AlreadyExists { object: String },

    /// The repository uses a format version this build does not understand.
    #[error("unsupported {what} version {found} (this build supports {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },

    /// A snapshot reference matched nothing.
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),

    /// A snapshot id prefix matched several snapshots.
    #[error("snapshot prefix {prefix:?} is ambiguous: it matches {count} snapshots")]
    AmbiguousSnapshot { prefix: String, count: usize },

    /// A path inside a snapshot does not exist.
    #[error("path {0:?} is not in the snapshot")]
    PathNotInSnapshot(String),

    /// A source command (`--command`) failed; no snapshot was written.
    #[error("command `{command}` {status}; no snapshot was written")]
    CommandFailed { command: String, status: String },

    /// A database source, restore or drill failed: its dumper, loader or server said why.
    #[error("{what}: {reason}")]
    Database { what: String, reason: String },

    /// A source given on the command line cannot be backed up at all.
    #[error("source {path}: {reason}")]
    BadSource { path: PathBuf, reason: String },

    /// Another process holds a conflicting lock (and `--retry-lock` ran out).
    #[error("the repository is locked: {0}")]
    Locked(String),

    /// The lock this operation held was removed by another process (judged stale, or
    /// `repo unlock --remove-all`): the operation stopped before committing more work.
    #[error(
        "the repository lock of this operation was lost: {0}; stopped without committing more (no snapshot was written)"
    )]
    LockLost(String),

    /// A signal (SIGINT, SIGTERM, SIGHUP) asked the operation to stop; it stopped at a safe
    /// point, removed its temporary files and its lock, and committed nothing more.
    #[error("interrupted by {}: stopped cleanly, nothing more was committed", signal_name(*signal))]
    Interrupted { signal: i32 },

    /// A restored file differs from the snapshot (`snapshot restore --verify`).
    #[error("restored file {path} does not match the snapshot: {reason}")]
    Mismatch { path: PathBuf, reason: String },

    /// Arguments that make no sense together.
    #[error("{0}")]
    InvalidArgument(String),

    /// A configuration file (`tresor.toml`) is malformed or incomplete; `at` is
    /// `FILE line N` (or just the file), `message` says what is wrong.
    #[error("{at}: {message}")]
    Config { at: String, message: String },

    /// A password source failed: the file could not be read, the command failed, or the
    /// password is empty.
    #[error("{0}")]
    Password(String),

    /// A job hook (`before`, `after`, …) failed, timed out or could not be started.
    #[error("{0}")]
    Hook(String),

    /// A notification (an HTTP ping) could not be delivered.
    #[error("{0}")]
    Notify(String),

    /// The local catalog (a cache) failed.
    #[error("catalog {context}: {source}")]
    Catalog {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
}

/// The usual name of a signal number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        n => format!("signal {n}"),
    }
}

/// The process exit codes (the table in README.md): the CLI exits with them, and `tresor run`
/// reports one per step.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A fatal error.
    pub const FATAL: u8 = 1;
    /// Bad usage (clap's own code), or a configuration file that is not valid.
    pub const USAGE: u8 = 2;
    /// The snapshot was written but some sources could not be read.
    pub const INCOMPLETE: u8 = 3;
    /// `tresor status`: a job has not succeeded within its `max-age`.
    pub const STALE: u8 = 4;
    /// `tresor run`: every other step succeeded, but a notification (a ping or the
    /// notification command) could not be delivered.
    pub const NOTIFY: u8 = 5;
    /// `tresor drill`: a restore drill failed (a load error or a row-count mismatch).
    pub const DRILL_FAILED: u8 = 6;
    /// No repository at the given location.
    pub const NO_REPO: u8 = 10;
    /// Another process holds a conflicting lock.
    pub const LOCKED: u8 = 11;
    /// Wrong password.
    pub const WRONG_PASSWORD: u8 = 12;
    /// A repository object is corrupt or missing.
    pub const DAMAGED: u8 = 13;
}

impl Error {
    /// The exit code this error ends the process with (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::RepoNotFound(_) => exit::NO_REPO,
            Error::WrongPassword { .. } => exit::WRONG_PASSWORD,
            Error::Locked(_) => exit::LOCKED,
            Error::Corrupt { .. } | Error::Missing { .. } | Error::Mismatch { .. } => exit::DAMAGED,
            Error::Config { .. } => exit::USAGE,
            Error::Interrupted { signal } => u8::try_from(128 + signal).unwrap_or(exit::FATAL),
            _ => exit::FATAL,
        }
    }

    /// Whether this is a refusal to write by the storage: a read-only file system or missing
    /// write permission (a mounted backup disk, a read-only snapshot of a volume).
    pub fn is_read_only(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
            ),
            _ => false,
        }
    }

    /// Whether repeating the failed call may succeed: a storage error marked transient, or an
    /// I/O error of a kind that says "try again" (interrupted, timed out, would block, a
    /// connection reset, aborted, refused or not connected, a broken pipe). Everything else —
    /// a missing object, denied access, corrupt data, a full disk, bad arguments — is
    /// permanent: retrying cannot change the answer. [`crate::backend::retry`] retries exactly
    /// the transient ones.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage { transient, .. } => *transient,
            Error::Io { source, .. } => is_transient_io(source),
            _ => false,
        }
    }

    /// A storage error that repeating the call may cure (a timeout, a dropped connection, a
    /// throttling or "service unavailable" response).
    pub fn transient(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Storage {
            context: context.into(),
            transient: true,
            source: source.into(),
        }
    }

    /// A storage error that repeating the call cannot cure (refused credentials, a bucket that
    /// does not exist, a malformed request).
    pub fn permanent(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Storage {
            context: context.into(),
            transient: false,
            source: source.into(),
        }
    }

    /// Wraps an I/O error with what was being done, turning ENOSPC into [`Error::NoSpace`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            Error::NoSpace { context }
        } else {
            Error::Io { context, source }
        }
    }

    /// A corrupt-object error.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// A catalog error with context.
    pub fn catalog(context: impl Into<String>, source: rusqlite::Error) -> Self {
        Error::Catalog {
            context: context.into(),
            source,
        }
    }
}

/// Whether an I/O error says "try again" (see [`Error::is_transient`]).
pub fn is_transient_io(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        Interrupted
            | TimedOut
            | WouldBlock
            | ConnectionReset
            | ConnectionAborted
            | ConnectionRefused
            | NotConnected
            | BrokenPipe
    )
}

/// Adds context to `io::Result`s.
pub trait IoContext<T> {
    /// Attaches what was being done to an I/O error.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_try_again_kinds() {
        use io::ErrorKind::*;
        let io_err = |kind| Error::io("reading x", io::Error::from(kind));
        for kind in [
            Interrupted,
            TimedOut,
            WouldBlock,
            ConnectionReset,
            ConnectionAborted,
            ConnectionRefused,
            NotConnected,
            BrokenPipe,
        ] {
            assert!(io_err(kind).is_transient(), "{kind:?}");
        }
        for kind in [
            NotFound,
            PermissionDenied,
            InvalidData,
            UnexpectedEof,
            Other,
        ] {
            assert!(!io_err(kind).is_transient(), "{kind:?}");
        }
        assert!(!Error::io("x", io::Error::from_raw_os_error(libc::ENOSPC)).is_transient());
        assert!(!Error::corrupt("pack", "bad").is_transient());
        assert!(!Error::Missing { object: "x".into() }.is_transient());
        assert!(Error::transient("put x", "503 slow down").is_transient());
        let p = Error::permanent("put x", "403 access denied");
        assert!(!p.is_transient());
        assert_eq!(p.to_string(), "put x: 403 access denied");
    }
}
