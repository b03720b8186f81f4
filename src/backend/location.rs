//! Repository locations: what `--repo` / `TRESOR_REPO` say, parsed into a [`Location`], and
//! [`open`], the one place that picks the backend for a location.
//!
//! A location is a local path (`/srv/backup/repo`, `repo`, `./repo`), or a scheme word, a
//! colon and what that scheme needs: `local:PATH` is the same local path (for a relative path
//! that contains a colon); `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]` is S3-compatible object
//! storage ([`super::s3`]). A scheme word is `[a-z][a-z0-9+.-]*` before the first colon; an
//! unknown one is an error rather than a relative directory of that name, so that a mistyped
//! scheme never initialises a repository in the working directory. A location starting with `/`
//! or `.` is always a local path.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::Backend;
use super::counting::CountingBackend;
use super::local::LocalBackend;
use super::s3::S3Backend;
use crate::error::{Error, Result};

/// The schemes this build can open.
pub const SCHEMES: [&str; 2] = ["local", "s3"];

/// Where a repository lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory: a plain path, or `local:PATH`.
    Local(PathBuf),
    /// S3-compatible object storage: what follows `s3:`, as given
    /// (`http[s]://HOST[:PORT]/BUCKET[/PREFIX]`, parsed by [`open`]).
    S3(String),
}

/// How to build a backend for a new repository.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Let the repository directory's group read it (`repo init --group-readable`); local
    /// repositories only.
    pub group_readable: bool,
}

/// Whether `b` is a scheme word: `[a-z][a-z0-9+.-]*`.
fn is_scheme_word(b: &[u8]) -> bool {
    match b.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'+' | b'.' | b'-')
                })
        }
        None => false,
    }
}

impl Location {
    /// Parses a location (see the module documentation).
    pub fn parse(location: &str) -> Result<Location> {
        Self::parse_os(OsStr::new(location))
    }

    /// [`Location::parse`] for a location that need not be UTF-8 (a local path).
    pub fn parse_os(location: &OsStr) -> Result<Location> {
        let bytes = location.as_bytes();
        let local = || Ok(Location::Local(PathBuf::from(location)));
        if bytes.starts_with(b"/") || bytes.starts_with(b".") {
            return local();
        }
        let Some(colon) = bytes.iter().position(|b| *b == b':') else {
            return local();
        };
        let (scheme, rest) = (&bytes[..colon], &bytes[colon + 1..]);
        if !is_scheme_word(scheme) {
            return local();
        }
        let shown = location.to_string_lossy();
        match scheme {
            b"local" if rest.is_empty() => Err(Error::InvalidArgument(format!(
                "repository location {shown:?}: `local:` needs a path after it"
            ))),
            b"local" => Ok(Location::Local(PathBuf::from(OsStr::from_bytes(rest)))),
            b"s3" => match std::str::from_utf8(rest) {
                Ok("") => Err(Error::InvalidArgument(format!(
                    "repository location {shown:?}: `s3:` needs a bucket after it"
                ))),
                Ok(rest) => Ok(Location::S3(rest.to_string())),
                Err(_) => Err(Error::InvalidArgument(format!(
                    "repository location {shown:?}: an s3: location must be UTF-8"
                ))),
            },
            _ => {
                let scheme = String::from_utf8_lossy(scheme);
                Err(Error::InvalidArgument(format!(
                    "repository location {shown:?}: unknown scheme `{scheme}:` (this build knows {}); \
                     a local path that contains a colon is written ./{shown} or local:{shown}",
                    known()
                )))
            }
        }
    }

    /// Whether this is a local directory.
    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }

    /// The scheme word: `local` or `s3`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Location::Local(_) => "local",
            Location::S3(_) => "s3",
        }
    }
}

/// The schemes this build knows, for messages: "`local:`, `s3:`".
fn known() -> String {
    SCHEMES
        .iter()
        .map(|s| format!("`{s}:`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::str::FromStr for Location {
    type Err = Error;
    fn from_str(s: &str) -> Result<Location> {
        Location::parse(s)
    }
}

/// A local location shows as its path (what [`Backend::location`] says), others with their
/// scheme.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(rest) => write!(f, "s3:{rest}"),
        }
    }
}

/// The backend for `location`. A local directory's backend is not wrapped in a
/// [`super::RetryBackend`]: local I/O errors are not worth repeating (the standard library
/// already repeats interrupted system calls); an S3 backend is, with the default policy. Either
/// is wrapped, innermost, in a [`CountingBackend`], so [`Backend::request_counts`] gives the
/// requests the storage saw (retries included).
pub fn open(location: &Location) -> Result<Arc<dyn Backend>> {
    open_with(location, &BackendOptions::default())
}

/// [`open`] with options for a new repository.
pub fn open_with(location: &Location, opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    match location {
        Location::Local(path) => {
            let backend = LocalBackend::new(path);
            let backend = if opts.group_readable {
                backend.group_readable()
            } else {
                backend
            };
            Ok(Arc::new(CountingBackend::new(Arc::new(backend))))
        }
        Location::S3(_) if opts.group_readable => Err(Error::InvalidArgument(format!(
            "{location}: group-readable permissions exist only for a local repository"
        ))),
        Location::S3(rest) => Ok(Arc::new(super::RetryBackend::new(
            Arc::new(CountingBackend::new(Arc::new(S3Backend::new(rest)?))),
            super::RetryPolicy::default(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(p: &str) -> Location {
        Location::Local(PathBuf::from(p))
    }

    #[test]
    fn paths_and_local_scheme_are_local() {
        for (given, path) in [
            ("/srv/backup/repo", "/srv/backup/repo"),
            ("repo", "repo"),
            ("./foo:bar", "./foo:bar"),
            ("../x:y", "../x:y"),
            ("/mnt/a:b", "/mnt/a:b"),
            (".hidden:repo", ".hidden:repo"),
            ("local:/srv/repo", "/srv/repo"),
            ("local:foo:bar", "foo:bar"),
            ("local:repo", "repo"),
            ("My Repo:2024", "My Repo:2024"),
            ("Backup:x", "Backup:x"),
            ("dir/sub:x", "dir/sub:x"),
            ("2024:x", "2024:x"),
            (":x", ":x"),
            ("", ""),
        ] {
            assert_eq!(Location::parse(given).unwrap(), local(path), "{given:?}");
        }
        assert!(Location::parse("local:").is_err());
        assert_eq!(local("/srv/repo").to_string(), "/srv/repo");
        assert!(local("x").is_local());
    }

    #[test]
    fn non_utf8_paths_stay_local() {
        let raw = OsStr::from_bytes(b"/srv/\xff:repo");
        assert_eq!(
            Location::parse_os(raw).unwrap(),
            Location::Local(PathBuf::from(raw))
        );
        let prefixed = OsStr::from_bytes(b"local:\xffrepo");
        assert_eq!(
            Location::parse_os(prefixed).unwrap(),
            Location::Local(PathBuf::from(OsStr::from_bytes(b"\xffrepo")))
        );
    }

    #[test]
    fn unknown_schemes_are_refused_with_the_way_out() {
        let Err(Error::InvalidArgument(m)) = Location::parse("foo:bar") else {
            panic!("foo:bar must be refused");
        };
        assert!(m.contains("`foo:`"), "{m}");
        assert!(m.contains("`local:`"), "{m}");
        assert!(
            m.contains("./foo:bar") && m.contains("local:foo:bar"),
            "{m}"
        );
        for s in [
            "sftp:host:/x",
            "b2:bucket",
            "svn+ssh:x",
            "rclone:remote:path",
        ] {
            assert!(
                matches!(Location::parse(s), Err(Error::InvalidArgument(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn s3_parses_and_a_malformed_one_does_not_open() {
        let l = Location::parse("s3:bucket/prefix").unwrap();
        assert_eq!(l, Location::S3("bucket/prefix".into()));
        assert!(!l.is_local());
        assert_eq!(l.to_string(), "s3:bucket/prefix");
        let Err(Error::InvalidArgument(m)) = open(&l) else {
            panic!("s3: without an endpoint must not open");
        };
        assert!(m.contains("http:// or https://"), "{m}");
        let opts = BackendOptions {
            group_readable: true,
        };
        assert!(matches!(
            open_with(&l, &opts),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Location::parse("s3:").is_err());
    }

    #[test]
    fn local_backend_location_is_the_path() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("repo");
        let given = format!("local:{}", path.display());
        let b = open(&Location::parse(&given).unwrap()).unwrap();
        assert_eq!(b.location(), path.display().to_string());
        let plain = open(&Location::parse(path.to_str().unwrap()).unwrap()).unwrap();
        assert_eq!(plain.location(), b.location());
    }
}
