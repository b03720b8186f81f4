//! Include/exclude selections for `snapshot restore`: which stored paths a restore touches.
//!
//! Patterns are globs (globset, `*` and `?` stay within one path component, `**` crosses
//! components, `[...]` classes, `\` escapes) matched against the stored path of an entry, e.g.
//! `etc/nginx/nginx.conf` (no leading `/`; a leading or trailing `/` in a pattern is ignored).
//! A pattern without `/` matches the entry's base name at any depth. Matching is on the exact
//! bytes of names, so names that are not UTF-8 match wildcards like any other.
//!
//! An excluded entry is skipped; an excluded directory takes its whole subtree with it. With no
//! `--include`, everything not excluded is selected. With includes, an entry is selected when it
//! or one of its ancestor directories matches an include (an included directory brings its whole
//! subtree), and a selected entry brings its parent directories; other directories are not
//! created. Excludes win over includes.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::path::Path;

use crate::error::Result;
use crate::format::glob::PathGlobs;

/// Trims the leading and trailing `/` a user may write around a stored path.
fn stored_path_globs(patterns: &[String], what: &str) -> Result<PathGlobs> {
    PathGlobs::new(
        patterns.iter().map(|p| p.trim_matches('/')),
        &format!("--{what}"),
    )
}

/// A compiled `--include` / `--exclude` selection.
pub struct Selection {
    include: PathGlobs,
    exclude: PathGlobs,
}

impl Selection {
    /// Compiles the patterns; a malformed glob is an [`Error::InvalidArgument`] naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection> {
        Ok(Selection {
            include: stored_path_globs(include, "include")?,
            exclude: stored_path_globs(exclude, "exclude")?,
        })
    }

    /// Selects everything.
    pub fn all() -> Selection {
        Selection {
            include: PathGlobs::default(),
            exclude: PathGlobs::default(),
        }
    }

    /// Whether the entry at stored path `rel` (base name `name`) is excluded, with its subtree.
    pub fn excluded(&self, rel: &Path, name: &OsStr) -> bool {
        !self.exclude.is_empty() && self.exclude.matches(rel, name)
    }

    /// Whether the entry matches an include by itself (always true without includes). Callers
    /// pass down "an ancestor was included" themselves.
    pub fn included(&self, rel: &Path, name: &OsStr) -> bool {
        self.include.is_empty() || self.include.matches(rel, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;

    fn sel(inc: &[&str], exc: &[&str]) -> Selection {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Selection::new(&v(inc), &v(exc)).unwrap()
    }

    fn m(s: &Selection, rel: &str) -> (bool, bool) {
        let p = PathBuf::from(rel);
        let name = p.file_name().unwrap().to_owned();
        (s.included(&p, &name), s.excluded(&p, &name))
    }

    #[test]
    fn base_name_and_full_path_patterns() {
        let s = sel(&["*.conf", "etc/nginx/**"], &["secret*", "/var/cache/"]);
        assert_eq!(m(&s, "a/b/c/x.conf"), (true, false));
        assert_eq!(m(&s, "x.conf"), (true, false));
        assert_eq!(m(&s, "etc/nginx/sites/default"), (true, false));
        assert_eq!(m(&s, "etc/nginx"), (false, false));
        assert_eq!(m(&s, "etc/other/x.txt"), (false, false));
        assert_eq!(m(&s, "deep/down/secret.key"), (false, true));
        assert_eq!(m(&s, "var/cache"), (false, true));
        assert_eq!(
            m(&s, "var/cache/x"),
            (false, false),
            "subtrees are the caller's job"
        );
        // `*` does not cross `/`.
        let s = sel(&["etc/*.conf"], &[]);
        assert!(m(&s, "etc/a.conf").0);
        assert!(!m(&s, "etc/sub/a.conf").0);
    }

    #[test]
    fn no_includes_selects_all_and_bad_globs_are_errors() {
        let s = sel(&[], &[]);
        assert_eq!(m(&s, "any/thing"), (true, false));
        assert!(Selection::new(&["a[".into()], &[]).is_err());
        assert!(Selection::new(&[], &["/".into()]).is_err());
    }

    #[test]
    fn non_utf8_names_match_wildcards() {
        let s = sel(&["raw-*.bin"], &["dir-?/x"]);
        let name = OsString::from_vec(b"raw-\xff\xfe.bin".to_vec());
        let rel = PathBuf::from("a").join(&name);
        assert!(s.included(&rel, &name));
        let dir = OsString::from_vec(b"dir-\xff".to_vec());
        let rel = PathBuf::from(&dir).join("x");
        assert!(s.excluded(&rel, OsStr::new("x")));
    }
}
