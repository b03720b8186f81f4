//! A repository in S3-compatible object storage: `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
//!
//! Every object is the S3 object at its key ([`layout::key`]) under `PREFIX/` (or at the
//! bucket's top without a prefix), so a repository's objects look exactly like a local
//! repository's files. The requests are made by the `object_store` crate (SigV4 signing,
//! paged listing), driven by a small tokio runtime this backend owns: every trait method is
//! synchronous and waits for its request (`block_on`).
//!
//! Addressing is path-style (`http://HOST:PORT/BUCKET/KEY`, not `BUCKET.HOST`), which every
//! S3-compatible server understands. Credentials come from `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and (optionally) `AWS_SESSION_TOKEN`; the region from
//! `AWS_DEFAULT_REGION` (default `us-east-1`). They are never part of the location, nor of
//! [`Backend::location`]. Plain `http://` is refused unless the host is a loopback address
//! (`127.0.0.0/8`, `::1`, `localhost`) or `TRESOR_S3_ALLOW_HTTP=1` says so.
//!
//! # The repository marker
//!
//! An object store has no directories, so an empty repository would be indistinguishable from
//! an empty prefix. `create` therefore refuses a prefix that holds any object, and then stores
//! the marker object `PREFIX/.tresor-repo` (a line of text naming it); a second `create` finds
//! it and fails with [`Error::RepoExists`]. Its last key component starts with `.`, so it is
//! never an object of the layout (`layout::parse` rejects it) and no listing reports it. The
//! marker is stored with a create-only put (`If-None-Match: *`), so of two `create`s racing
//! on the same empty prefix exactly one succeeds.
//!
//! Durability of `put`: an S3 PUT is atomic (the object appears whole or not at all) and
//! durable when answered. Objects are stored with one PUT each, so nothing is left behind by
//! an interrupted put and [`Backend::remove_stale_temporaries`] has nothing to do.
//!
//! # Errors
//!
//! A 404 is [`Error::Missing`] (naming the object); connection failures, timeouts, 429 and 5xx
//! answers are [`Error::transient`]; anything else (403 for a wrong key, a missing bucket, a
//! malformed request) is [`Error::permanent`]. `object_store` does not retry by itself here:
//! [`super::open`] wraps this backend in a [`super::RetryBackend`].

#![forbid(unsafe_code)]

use std::net::IpAddr;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use tokio::runtime::Runtime;

use super::{Backend, ObjectKind, layout};
use crate::error::{Error, Result};

/// The key of the repository marker under the prefix (see the module documentation).
pub const MARKER: &str = ".tresor-repo";

/// Requests worth keeping in flight by default ([`Backend::connections`]).
pub const DEFAULT_CONNECTIONS: usize = 4;

/// What the marker object holds.
const MARKER_TEXT: &[u8] = b"tresor repository (layout marker, see docs/design.md 2.1)\n";

/// An `s3:` location, parsed: `http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http` or `https`.
    pub scheme: String,
    /// `HOST[:PORT]` as given.
    pub authority: String,
    /// The host alone (brackets of an IPv6 address removed).
    pub host: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (empty: the bucket's top).
    pub prefix: String,
}

impl S3Location {
    /// Parses what follows `s3:`.
    pub fn parse(rest: &str) -> Result<S3Location> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "repository location \"s3:{rest}\": {why} \
                 (expected s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX])"
            ))
        };
        let (scheme, after) = if let Some(a) = rest.strip_prefix("https://") {
            ("https", a)
        } else if let Some(a) = rest.strip_prefix("http://") {
            ("http", a)
        } else {
            return Err(bad("the endpoint must start with http:// or https://"));
        };
        let (authority, path) = after.split_once('/').unwrap_or((after, ""));
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the location: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY",
            ));
        }
        if authority.contains(['?', '#']) || path.contains(['?', '#']) {
            return Err(bad("no query or fragment is allowed"));
        }
        let host = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once(']') {
                Some((h, _)) => h.to_string(),
                None => return Err(bad("unclosed `[` in the host")),
            }
        } else {
            authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .to_string()
        };
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|c| c == "." || c == "..")
            || (!prefix.is_empty() && prefix.split('/').any(str::is_empty))
        {
            return Err(bad("the prefix has an empty, `.` or `..` component"));
        }
        Ok(S3Location {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            host,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// Whether the host is this machine (plain http is allowed there).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The endpoint URL: `SCHEME://HOST[:PORT]`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// A backend on an S3 bucket, under a prefix.
pub struct S3Backend {
    store: AmazonS3,
    runtime: Runtime,
    location: S3Location,
}

/// An environment variable, if set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether the client may speak plain http to `location` (an `http://` endpoint that is a
/// loopback host, or any with `allow`); an error for an `http://` one it may not.
fn http_allowed(location: &S3Location, allow: bool) -> Result<bool> {
    if location.scheme != "http" {
        return Ok(false);
    }
    if location.is_loopback() || allow {
        return Ok(true);
    }
    Err(Error::InvalidArgument(format!(
        "{location}: plain http sends the repository's objects unprotected; it is allowed only \
         for a loopback host, or with TRESOR_S3_ALLOW_HTTP=1"
    )))
}

/// What the environment says about S3 access (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, if set.
    pub session_token: Option<String>,
    /// `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// `TRESOR_S3_ALLOW_HTTP=1`: plain http to any host.
    pub allow_http: bool,
}

impl S3Settings {
    /// The settings of this process's environment; `None` without both credentials.
    pub fn from_env() -> Option<S3Settings> {
        Some(S3Settings {
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
            region: var("AWS_DEFAULT_REGION").unwrap_or_else(|| "us-east-1".to_string()),
            allow_http: var("TRESOR_S3_ALLOW_HTTP").as_deref() == Some("1"),
        })
    }
}

impl S3Backend {
    /// A backend for `s3:REST` with the settings of the environment (nothing is requested
    /// until a method is called).
    pub fn new(rest: &str) -> Result<S3Backend> {
        let location = S3Location::parse(rest)?;
        // The endpoint's policy first: it does not depend on the credentials.
        http_allowed(
            &location,
            var("TRESOR_S3_ALLOW_HTTP").as_deref() == Some("1"),
        )?;
        let settings = S3Settings::from_env().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the S3 credentials"
            ))
        })?;
        Self::with_settings(location, &settings)
    }

    /// A backend for `location` with explicit settings.
    pub fn with_settings(location: S3Location, settings: &S3Settings) -> Result<S3Backend> {
        let allow_http = http_allowed(&location, settings.allow_http)?;
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(location.endpoint())
            .with_bucket_name(&location.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(allow_http)
            .with_client_options(ClientOptions::new().with_allow_http(allow_http))
            // RetryBackend retries (and stops on a signal); one layer of retries is enough.
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            });
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| Error::InvalidArgument(format!("{location}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tresor-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io(format!("{location}: starting the S3 client runtime"), e))?;
        Ok(S3Backend {
            store,
            runtime,
            location,
        })
    }

    /// The object path of a key under the prefix.
    fn path(&self, key: &str) -> Path {
        if self.location.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.location.prefix))
        }
    }

    /// The path of an object.
    fn object(&self, kind: ObjectKind, name: &str) -> Path {
        self.path(&layout::key(kind, name))
    }

    /// The prefix itself, as a path for listing (`None`: the whole bucket).
    fn root(&self) -> Option<Path> {
        (!self.location.prefix.is_empty()).then(|| Path::from(self.location.prefix.as_str()))
    }

    /// The object's description for messages: kind, name and where it is.
    fn shown(&self, kind: ObjectKind, name: &str) -> String {
        format!(
            "{kind:?} {name} ({}/{})",
            self.location,
            layout::key(kind, name)
        )
    }

    /// The key under the prefix of a listed path (`None` for one outside it).
    fn key_of<'a>(&self, path: &'a Path) -> Option<&'a str> {
        let p = path.as_ref();
        if self.location.prefix.is_empty() {
            Some(p)
        } else {
            p.strip_prefix(self.location.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    /// The size of an object (`head`).
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        let path = self.object(kind, name);
        self.runtime
            .block_on(self.store.head(&path))
            .map(|m| m.size)
            .map_err(|e| self.error(kind, name, "reading the size of", e))
    }

    /// The error for a failed request about an object.
    fn error(&self, kind: ObjectKind, name: &str, what: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => {
                return Error::Missing {
                    object: self.shown(kind, name),
                };
            }
            object_store::Error::AlreadyExists { .. } => {
                return Error::AlreadyExists {
                    object: self.shown(kind, name),
                };
            }
            _ => {}
        }
        classify(format!("{what} {}", self.shown(kind, name)), e)
    }
}

/// Maps an `object_store` error to a permanent or transient storage error (see the module
/// documentation). `object_store` keeps the HTTP status in a private type, so a status is
/// recognised in the error's text ("status code: 503"), and a connection failure or timeout
/// by the public [`object_store::client::HttpError`] in its chain.
fn classify(context: String, e: object_store::Error) -> Error {
    let context = match &e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => format!(
            "{context}: access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the \
             bucket's permissions)"
        ),
        _ => context,
    };
    if is_transient(&e) {
        Error::transient(context, e)
    } else {
        Error::permanent(context, e)
    }
}

fn is_transient(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            return matches!(
                h.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return crate::error::is_transient_io(io);
        }
        let text = s.to_string();
        if let Some(at) = text.find("status code: ") {
            let code = text[at + "status code: ".len()..].get(..3).unwrap_or("");
            return code == "429" || code.starts_with('5');
        }
        source = s.source();
    }
    false
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    /// Four: each request waits at least a round trip, so several are kept in flight (small
    /// requests four times as many, see [`crate::parallel::small_requests`]); more bulk
    /// transfers would only hold more packs in memory.
    fn connections(&self) -> usize {
        DEFAULT_CONNECTIONS
    }

    fn create(&self) -> Result<()> {
        use futures_util::StreamExt;
        let root = self.root();
        let first = self
            .runtime
            .block_on(async { self.store.list(root.as_ref()).next().await });
        match first {
            Some(Ok(_)) => return Err(Error::RepoExists(self.location())),
            Some(Err(e)) => {
                return Err(classify(format!("listing {}", self.location), e));
            }
            None => {}
        }
        // Create-only: of two `create`s racing on one empty prefix, one finds the other's
        // marker and fails.
        let marker = self.path(MARKER);
        let opts = PutOptions::from(PutMode::Create);
        match self.runtime.block_on(self.store.put_opts(
            &marker,
            PutPayload::from_static(MARKER_TEXT),
            opts,
        )) {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(Error::RepoExists(self.location()))
            }
            Err(e) => Err(classify(format!("storing {}/{MARKER}", self.location), e)),
        }
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        match self.size(kind, name) {
            Ok(_) => Ok(true),
            Err(Error::Missing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.put_bytes(kind, name, bytes::Bytes::copy_from_slice(data))
    }

    fn put_bytes(&self, kind: ObjectKind, name: &str, data: bytes::Bytes) -> Result<()> {
        let path = self.object(kind, name);
        let payload = PutPayload::from(data);
        self.runtime
            .block_on(self.store.put(&path, payload))
            .map(|_| ())
            .map_err(|e| self.error(kind, name, "storing", e))
    }

    fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        let path = self.object(kind, name);
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        let opts = PutOptions::from(PutMode::Create);
        self.runtime
            .block_on(self.store.put_opts(&path, payload, opts))
            .map(|_| ())
            .map_err(|e| self.error(kind, name, "creating", e))
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        let path = self.object(kind, name);
        self.runtime
            .block_on(async { self.store.get(&path).await?.bytes().await })
            // Without a copy when the buffer is the body's own (the usual case).
            .map(Vec::from)
            .map_err(|e| self.error(kind, name, "reading", e))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let past_end = |size: u64| {
            Error::corrupt(
                self.shown(kind, name),
                format!(
                    "{len} bytes at offset {offset} were asked of an object of {size} bytes \
                     (it is shorter than the index says)"
                ),
            )
        };
        let end = match offset.checked_add(len) {
            Some(end) if len > 0 => end,
            // An overflowing range is never inside an object; an empty one is inside when it
            // starts at or before the end. Either way the size decides.
            _ => {
                let size = self.size(kind, name)?;
                return if len == 0 && offset <= size {
                    Ok(Vec::new())
                } else {
                    Err(past_end(size))
                };
            }
        };
        let path = self.object(kind, name);
        let opts = GetOptions {
            range: Some(GetRange::Bounded(offset..end)),
            ..GetOptions::default()
        };
        let got = self.runtime.block_on(async {
            let r = self.store.get_opts(&path, opts).await?;
            let size = r.meta.size;
            r.bytes().await.map(|b| (size, b))
        });
        match got {
            Ok((size, b)) if end <= size && b.len() as u64 == len => Ok(Vec::from(b)),
            Ok((size, _)) => Err(past_end(size)),
            Err(object_store::Error::NotFound { .. }) => Err(Error::Missing {
                object: self.shown(kind, name),
            }),
            // A range past the end is refused (416) or rejected by the client: the size
            // says whether that is what happened.
            Err(e) => match self.size(kind, name) {
                Ok(size) if end > size => Err(past_end(size)),
                Ok(_) => Err(self.error(kind, name, "reading a range of", e)),
                Err(missing @ Error::Missing { .. }) => Err(missing),
                Err(_) => Err(self.error(kind, name, "reading a range of", e)),
            },
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        use futures_util::TryStreamExt;
        if kind == ObjectKind::Config {
            return match self.size(kind, layout::CONFIG) {
                Ok(size) => Ok(vec![(layout::CONFIG.to_string(), size)]),
                Err(Error::Missing { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let dir = self.path(kind.dir());
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&dir)).try_collect())
            .map_err(|e| classify(format!("listing {}/{}", self.location, kind.dir()), e))?;
        Ok(metas
            .iter()
            .filter_map(|m| {
                let key = self.key_of(&m.location)?;
                match layout::parse(key) {
                    Some((k, name)) if k == kind => Some((name.to_string(), m.size)),
                    _ => None,
                }
            })
            .collect())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let path = self.object(kind, name);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(kind, name, "deleting", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let l = S3Location::parse("http://127.0.0.1:9000/bucket/a/b/").unwrap();
        assert_eq!(l.scheme, "http");
        assert_eq!(l.host, "127.0.0.1");
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "a/b");
        assert!(l.is_loopback());
        assert_eq!(l.to_string(), "s3:http://127.0.0.1:9000/bucket/a/b");
        let l = S3Location::parse("https://s3.example.com/bkt").unwrap();
        assert_eq!((l.host.as_str(), l.prefix.as_str()), ("s3.example.com", ""));
        assert!(!l.is_loopback());
        assert!(
            S3Location::parse("http://[::1]:9000/bkt")
                .unwrap()
                .is_loopback()
        );
        assert!(
            S3Location::parse("http://localhost/bkt")
                .unwrap()
                .is_loopback()
        );
        for bad in [
            "bucket/prefix",
            "ftp://h/b",
            "http://",
            "http://h",
            "http://h/",
            "http://user:pw@h/b",
            "http://h/b/../x",
            "http://h/b/x//y",
            "http://h/b?x=1",
        ] {
            assert!(
                matches!(S3Location::parse(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn marker_is_no_object() {
        assert_eq!(layout::parse(MARKER), None);
    }
}
