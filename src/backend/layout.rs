//! The object key layout: the kinds of stored object and the one place that says under which
//! key (a path relative to the repository's root, `/`-separated) each object lives.
//!
//! ```text
//! config              the config object
//! keys/NAME           key files
//! data/XX/NAME        packs; XX = the first two characters (hex digits) of NAME
//! index/NAME          index objects
//! snapshots/NAME      snapshot objects
//! locks/NAME          lock objects
//! forgotten/NAME      forget records
//! ```
//!
//! Every backend stores objects under these keys: the local backend as files under its root
//! directory, the memory backend as map keys, an object store as object keys under its prefix.
//! A key whose last component starts with `.` is never an object (a local backend's temporary
//! files are named `.tmp-…`). This is part of the on-disk format (docs/design.md §2): existing
//! repositories depend on it.

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

    /// Every kind.
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Forgotten,
    ];

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

/// The name of the config object (its key too).
pub const CONFIG: &str = "config";

/// The fan-out directory of a pack: the first two characters of its name (`"00"` for a name
/// shorter than that, which no pack has).
pub fn fanout(name: &str) -> &str {
    name.get(..2).unwrap_or("00")
}

/// The key of the object of `kind` named `name`.
pub fn key(kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Config => name.to_string(),
        ObjectKind::Pack => format!("{}/{}/{name}", kind.dir(), fanout(name)),
        _ => format!("{}/{name}", kind.dir()),
    }
}

/// The key prefix under which every object of `kind` lives (what an object store lists):
/// `config` for the config, else the directory with a trailing `/`.
pub fn prefix(kind: ObjectKind) -> String {
    match kind {
        ObjectKind::Config => CONFIG.to_string(),
        _ => format!("{}/", kind.dir()),
    }
}

/// The inverse of [`key`]: the kind and name of the object stored under `key`, or `None` when
/// no object lives there (a temporary file, a pack in the wrong fan-out directory, a stray
/// name).
pub fn parse(key: &str) -> Option<(ObjectKind, &str)> {
    if key == CONFIG {
        return Some((ObjectKind::Config, key));
    }
    let (dir, rest) = key.split_once('/')?;
    let kind = ObjectKind::DIRS.into_iter().find(|k| k.dir() == dir)?;
    let name = match kind {
        ObjectKind::Pack => {
            let (xx, name) = rest.split_once('/')?;
            if xx != fanout(name) {
                return None;
            }
            name
        }
        _ => rest,
    };
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return None;
    }
    Some((kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_local_layout() {
        let n = "ab12cd";
        assert_eq!(key(ObjectKind::Config, CONFIG), "config");
        assert_eq!(key(ObjectKind::Key, n), "keys/ab12cd");
        assert_eq!(key(ObjectKind::Pack, n), "data/ab/ab12cd");
        assert_eq!(key(ObjectKind::Index, n), "index/ab12cd");
        assert_eq!(key(ObjectKind::Snapshot, n), "snapshots/ab12cd");
        assert_eq!(key(ObjectKind::Lock, n), "locks/ab12cd");
        assert_eq!(key(ObjectKind::Forgotten, n), "forgotten/ab12cd");
        assert_eq!(key(ObjectKind::Pack, "a"), "data/00/a");
    }

    #[test]
    fn parse_inverts_key_and_rejects_what_is_no_object() {
        for kind in ObjectKind::ALL {
            let name = if kind == ObjectKind::Config {
                CONFIG
            } else {
                "ff00aa"
            };
            let k = key(kind, name);
            assert_eq!(parse(&k), Some((kind, name)), "{k}");
            assert!(k.starts_with(&prefix(kind)), "{k}");
        }
        for stray in [
            "",
            "configx",
            "keys",
            "keys/",
            "keys/.tmp-ab-123",
            "data/ab",
            "data/ab/.tmp-ab12-000000",
            "data/cd/ab12",
            "data/ab12",
            "index/a/b",
            "other/ab12",
        ] {
            assert_eq!(parse(stray), None, "{stray:?}");
        }
    }
}
