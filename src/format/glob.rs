//! Path globs shared by backup excludes and restore selections.
//!
//! One rule for both: a pattern without `/` is matched against an entry's base name at any
//! depth; a pattern with `/` is matched against the entry's whole path (absolute on disk for
//! backup excludes, the stored path for restore selections). Globs are built with `globset`
//! with `literal_separator` (`*`, `?`, `[…]` never match `/`; `**` as a component crosses
//! components) and backslash escapes; matching is on the exact name bytes.

use std::ffi::OsStr;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Compiled globs, split into base-name and whole-path ones.
#[derive(Clone, Debug, Default)]
pub struct PathGlobs {
    base: GlobSet,
    full: GlobSet,
    count: usize,
}

impl PathGlobs {
    /// Compiles `patterns`; `what` names the option in errors (`--exclude`, …). An empty or
    /// malformed pattern is an [`Error::InvalidArgument`] naming it.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>, what: &str) -> Result<PathGlobs> {
        let mut base = GlobSetBuilder::new();
        let mut full = GlobSetBuilder::new();
        let mut count = 0;
        for p in patterns {
            if p.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{what}: an empty pattern matches nothing"
                )));
            }
            let g = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("{what} {p:?}: {e}")))?;
            if p.contains('/') {
                full.add(g);
            } else {
                base.add(g);
            }
            count += 1;
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
        };
        Ok(PathGlobs {
            base: build(base)?,
            full: build(full)?,
            count,
        })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether a pattern matches the entry at `path` whose base name is `name`.
    pub fn matches(&self, path: &Path, name: &OsStr) -> bool {
        (!self.base.is_empty() && self.base.is_match(Path::new(name)))
            || (!self.full.is_empty() && self.full.is_match(path))
    }
}
