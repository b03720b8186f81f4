//! Per-source settings of a job in the configuration file: source-level hooks.
//!
//! A job's `paths` entry is a path, or a table `{ path = "/var/www", hooks = { … } }`; a
//! `commands` entry is a command, or a table `{ command = "pg_dump shop", hooks = { … } }`.
//! The plain forms and the tables mix freely in one list. A source's `hooks` take the job
//! level's four keys (`before`, `after`, `failure`, `finally`); they run around that source's
//! part of the snapshot (see [`crate::jobs::run`]).
//!
//! Kept apart from [`crate::jobs::config`] so that the file's other keys and these forms can
//! change independently; `config` only calls [`split`].

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::jobs::config::Hooks;

/// One source's hooks, named by the source: a path as written, or a command stream's name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceHooks {
    /// The source: `/var/www`, or `shop.sql`.
    pub source: String,
    /// Its hooks.
    pub hooks: Hooks,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawSourceHooks {
    before: Option<Vec<String>>,
    after: Option<Vec<String>>,
    failure: Option<Vec<String>>,
    finally: Option<Vec<String>>,
}

impl RawSourceHooks {
    fn resolve(self) -> Hooks {
        Hooks {
            before: self.before.unwrap_or_default(),
            after: self.after.unwrap_or_default(),
            failure: self.failure.unwrap_or_default(),
            finally: self.finally.unwrap_or_default(),
        }
    }
}

/// A `paths` entry: `"/etc"` or `{ path = "/etc", hooks = { … } }`.
#[derive(Clone)]
pub(super) struct RawPath {
    path: PathBuf,
    hooks: Option<RawSourceHooks>,
}

/// A `commands` value: `"pg_dump shop"` or `{ command = "pg_dump shop", hooks = { … } }`.
#[derive(Clone)]
pub(super) struct RawCommand {
    command: String,
    hooks: Option<RawSourceHooks>,
}

/// Deserializes `$name` from a string (the plain form) or a table with `$field` and `hooks`;
/// a table's errors (unknown keys, bad types) keep their place in the file.
macro_rules! string_or_table {
    ($name:ident, $field:ident, $ty:ty, $expecting:expr) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<$name, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<$name, E> {
                        Ok($name {
                            $field: <$ty>::from(s),
                            hooks: None,
                        })
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        m: A,
                    ) -> std::result::Result<$name, A::Error> {
                        #[derive(Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct Table {
                            $field: $ty,
                            hooks: Option<RawSourceHooks>,
                        }
                        let t = Table::deserialize(de::value::MapAccessDeserializer::new(m))?;
                        Ok($name {
                            $field: t.$field,
                            hooks: t.hooks,
                        })
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_or_table!(
    RawPath,
    path,
    PathBuf,
    "a path, or a table like { path = \"/var/www\", hooks = { before = [\"…\"] } }"
);
string_or_table!(
    RawCommand,
    command,
    String,
    "a command, or a table like { command = \"pg_dump shop\", hooks = { before = [\"…\"] } }"
);

/// The job's paths, its command streams (NAME → command, in name order) and the hooks of the
/// sources that have any, in source order: paths as listed, then commands by name (the order
/// the snapshot reads them).
pub(super) type Split = (Vec<PathBuf>, Vec<(String, String)>, Vec<SourceHooks>);

/// Splits the raw `paths` and `commands` into what the snapshot reads and the source hooks.
pub(super) fn split(paths: Vec<RawPath>, commands: BTreeMap<String, RawCommand>) -> Split {
    let mut hooks = Vec::new();
    let mut keep = |source: String, raw: Option<RawSourceHooks>| {
        let h = raw.unwrap_or_default().resolve();
        if h != Hooks::default() {
            hooks.push(SourceHooks { source, hooks: h });
        }
    };
    let mut plain_paths = Vec::new();
    for p in paths {
        keep(p.path.display().to_string(), p.hooks);
        plain_paths.push(p.path);
    }
    let mut plain_commands = Vec::new();
    for (name, c) in commands {
        keep(name.clone(), c.hooks);
        plain_commands.push((name, c.command));
    }
    (plain_paths, plain_commands, hooks)
}

/// The hooks of `source`, if it has any.
pub fn hooks_of<'a>(all: &'a [SourceHooks], source: &str) -> Option<&'a Hooks> {
    all.iter().find(|s| s.source == source).map(|s| &s.hooks)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::jobs::config::{Overrides, parse};

    #[test]
    fn plain_and_table_sources_mix() {
        let text = r#"
[defaults]
repository = "/r"
password-file = "/p"

[jobs.app]
paths = ["/etc", { path = "/var/lib/app", hooks = { before = ["freeze"], finally = ["thaw"] } }]
commands = { "b.sql" = "pg_dump b", "a.sql" = { command = "pg_dump a", hooks = { failure = ["alarm"] } } }
"#;
        let c = parse(text, Path::new("/t.toml"), &Overrides::default()).unwrap();
        let j = &c.jobs[0];
        assert_eq!(
            j.paths,
            [Path::new("/etc"), Path::new("/var/lib/app")].map(Path::to_path_buf)
        );
        assert_eq!(
            j.commands,
            [("a.sql", "pg_dump a"), ("b.sql", "pg_dump b")].map(|(n, c)| (n.into(), c.into()))
        );
        let names: Vec<&str> = j.source_hooks.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(
            names,
            ["/var/lib/app", "a.sql"],
            "source order, hooked ones only"
        );
        assert_eq!(j.source_hooks[0].hooks.before, ["freeze"]);
        assert_eq!(j.source_hooks[0].hooks.finally, ["thaw"]);
        assert_eq!(j.source_hooks[1].hooks.failure, ["alarm"]);
        assert_eq!(c.defaults.repository.as_deref(), Some("/r".as_ref()));
    }

    #[test]
    fn mistakes_in_a_source_table_name_their_line() {
        for (bad, what) in [
            (
                "paths = [{ path = \"/x\", hook = {} }]",
                "unknown field `hook`",
            ),
            ("paths = [{ hooks = {} }]", "missing field `path`"),
            (
                "commands = { a = { command = \"c\", hooks = { befor = [] } } }",
                "befor",
            ),
            ("paths = [3]", "a path, or a table"),
        ] {
            let text = format!("[jobs.a]\nrepository = \"/r\"\npassword-file = \"/p\"\n{bad}\n");
            let e = parse(&text, Path::new("/t.toml"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 4") && e.contains(what), "{bad}: {e}");
        }
    }
}
