//! The object kinds of a repository and where each lives.

/// The kinds of stored object, each in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// The single repository config object (name "config").
    Config,
    /// Key files.
    Key,
    /// Packfiles.
    Pack,
    /// Index objects.
    Index,
    /// Snapshot objects.
    Snapshot,
    /// Lock objects.
    Lock,
    /// Forget records: which snapshots `snapshot forget` (or `repair snapshots --forget`, or
    /// `prune --allow-missing-snapshots`) removed (see [`crate::repo::history`]).
    Forgotten,
}

impl ObjectKind {
    /// Directory (or key prefix) of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Lock => "locks",
            ObjectKind::Forgotten => "forgotten",
        }
    }

    /// All kinds that live in directories.
    pub const DIRS: [ObjectKind; 6] = [
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Forgotten,
    ];
}
