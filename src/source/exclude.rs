//! Excludes: which entries a backup of paths leaves out.
//!
//! Glob patterns (`--exclude`, `--exclude-file`), built with `globset`:
//!
//! * a pattern **without** `/` is matched against an entry's base name, at any depth
//!   (`*.tmp`, `node_modules`, `.cache`);
//! * a pattern **with** `/` is matched against the entry's absolute path on disk
//!   (`/home/*/.cache`, `**/target/debug`); a relative pattern like `a/b` therefore never
//!   matches — write `**/a/b`;
//! * `*`, `?` and `[…]` do not match `/`; `**` as a whole path component matches any number of
//!   components; `\` escapes the next character; matching is case-sensitive on the name bytes;
//! * an excluded directory is not descended into; an excluded source path stores nothing (its
//!   parent directories are still stored when other sources need them).
//!
//! `--exclude-file FILE`: one pattern per line; blank lines and lines whose first non-blank
//! character is `#` are ignored; surrounding whitespace is trimmed.
//!
//! Directory rules: `--exclude-if-present NAME` leaves out a directory holding an entry `NAME`
//! (of any type) entirely; `--exclude-caches` stores a directory holding a regular file
//! `CACHEDIR.TAG` that begins with the cache directory signature with only that file;
//! `--one-file-system` stores a directory on another device than its source path as an empty
//! directory (a mount point) and does not descend into it.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::format::glob::PathGlobs;
use crate::format::snapshot::ExcludeRecord;

/// The file name of a cache directory tag.
pub const CACHE_TAG_NAME: &str = "CACHEDIR.TAG";
/// How a valid cache directory tag begins (<https://bford.info/cachedir/>).
pub const CACHE_TAG_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Compiled exclude rules.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    globs: PathGlobs,
    /// `--exclude-if-present` names.
    pub if_present: Vec<Vec<u8>>,
    /// `--exclude-caches`.
    pub caches: bool,
    /// `--one-file-system`.
    pub one_file_system: bool,
}

impl Excludes {
    /// Compiles the rules; a malformed pattern is an error naming it.
    pub fn new(rec: &ExcludeRecord) -> Result<Excludes> {
        let globs = PathGlobs::new(rec.patterns.iter().map(String::as_str), "exclude pattern")?;
        for n in &rec.if_present {
            if n.is_empty() || n.contains('/') {
                return Err(Error::InvalidArgument(format!(
                    "--exclude-if-present wants a file name, not {n:?}"
                )));
            }
        }
        Ok(Excludes {
            globs,
            if_present: rec
                .if_present
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect(),
            caches: rec.caches,
            one_file_system: rec.one_file_system,
        })
    }

    /// Whether a glob pattern excludes the entry at absolute path `abs` with base name `name`.
    pub fn matches(&self, abs: &Path, name: &OsStr) -> bool {
        self.globs.matches(abs, name)
    }
}

/// Reads an exclude file: one pattern per line, blank lines and `#` comments ignored.
pub fn read_patterns(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).ctx(|| format!("reading exclude file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&ExcludeRecord {
            patterns: p.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    fn m(e: &Excludes, abs: &str) -> bool {
        let p = Path::new(abs);
        e.matches(p, p.file_name().unwrap())
    }

    #[test]
    fn base_names_and_absolute_paths() {
        let e = ex(&["*.tmp", "/srv/*/cache", "/data/**/x"]);
        assert!(m(&e, "/a/b/c.tmp"));
        assert!(m(&e, "/c.tmp"));
        assert!(!m(&e, "/a/c.tmp.keep"));
        assert!(m(&e, "/srv/web/cache"));
        assert!(!m(&e, "/srv/web/deep/cache"), "* must not cross /");
        assert!(m(&e, "/data/x"));
        assert!(m(&e, "/data/1/2/x"));
        assert!(!m(&e, "/other/data/x"));
        let rel = ex(&["a/b"]);
        assert!(
            !m(&rel, "/srv/a/b"),
            "a relative pattern with / matches nothing"
        );
        assert!(m(&ex(&["**/a/b"]), "/srv/a/b"));
        assert!(
            Excludes::new(&ExcludeRecord {
                patterns: vec!["[".into()],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn exclude_file_skips_blanks_and_comments() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("ex");
        std::fs::write(&f, "# comment\n\n  *.o  \n   # indented comment\n/a/b\n").unwrap();
        assert_eq!(read_patterns(&f).unwrap(), ["*.o", "/a/b"]);
    }
}
