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
//! A 404 is [`Error::Missing`] (naming the object); connections that cannot be made, break or
//! time out, 408, 429 and 5xx answers, and a `200 OK` carrying an S3 "try again" error code are
//! [`Error::transient`]; anything else (403 for a wrong key, a missing bucket, a malformed
//! request) is [`Error::permanent`]. The message says the failure in a few words ("the server
//! answered 503 Service Unavailable (SlowDown: …)", "the connection to the server failed:
//! Connection refused") after the object and the location. `object_store` does not retry by
//! itself here: [`super::open`] wraps this backend in a [`super::RetryBackend`], which adds
//! how many attempts were made.
//!
//! Every request has a deadline, so a server that stops answering cannot hang a command:
//! [`CONNECT_TIMEOUT`] to connect, [`DEFAULT_TIMEOUT`] (or `TRESOR_S3_TIMEOUT` seconds) for the
//! whole request, a pack's upload included.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

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
    /// The longest one request may take; `None`: [`DEFAULT_TIMEOUT`]. [`S3Backend::new`]
    /// sets it from `TRESOR_S3_TIMEOUT` (whole seconds); [`S3Settings::from_env`] leaves it
    /// `None`.
    pub timeout: Option<Duration>,
}

/// The longest one request may take by default: a whole pack (16 MiB by default) must be sent
/// in this time (at 56 KB/s or more). A server that stops answering fails the request after it
/// (and [`super::RetryBackend`] tries again); raise it with `TRESOR_S3_TIMEOUT` for a slower
/// link or larger packs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `TRESOR_S3_TIMEOUT` parsed: whole seconds, at least 1.
fn timeout_from_env() -> Result<Option<Duration>> {
    match var("TRESOR_S3_TIMEOUT") {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
            _ => Err(Error::InvalidArgument(format!(
                "TRESOR_S3_TIMEOUT={v:?}: expected a whole number of seconds, at least 1"
            ))),
        },
    }
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
            timeout: None,
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
        let mut settings = S3Settings::from_env().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the S3 credentials"
            ))
        })?;
        settings.timeout = timeout_from_env()?;
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
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(settings.timeout.unwrap_or(DEFAULT_TIMEOUT))
                    .with_connect_timeout(CONNECT_TIMEOUT),
            )
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
/// documentation), its message said in a few words ([`describe`]).
fn classify(context: String, e: object_store::Error) -> Error {
    let context = match &e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => format!(
            "{context}: access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the \
             bucket's permissions)"
        ),
        _ => context,
    };
    let transient = is_transient(&e);
    let message = describe(&e);
    if transient {
        Error::transient(context, message)
    } else {
        Error::permanent(context, message)
    }
}

/// What an S3 answer or a failed connection says: the HTTP status of an error response (with
/// the S3 error code), or the kind of connection failure.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// An error response: the status, its reason phrase, the S3 `<Code>` and `<Message>`.
    Status {
        code: u16,
        reason: String,
        s3_code: Option<String>,
        s3_message: Option<String>,
    },
    /// A `200 OK` whose body is an S3 error document (as `CompleteMultipartUpload` may send).
    ErrorBody {
        s3_code: Option<String>,
        s3_message: Option<String>,
    },
    /// The connection could not be made, broke, or timed out.
    Connection {
        kind: object_store::client::HttpErrorKind,
        cause: String,
    },
}

/// The text of an XML element in an S3 error document.
fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let at = body.find(&open)? + open.len();
    let len = body[at..].find("</")?;
    Some(body[at..at + len].trim().to_string()).filter(|t| !t.is_empty())
}

/// The failure an `object_store` error reports, if it is one of those of [`Failure`].
///
/// `object_store` keeps the HTTP status in a type it does not export (`RetryError`), so the
/// status of an error response is read from that type's message ("…non-2xx status code: 503
/// Service Unavailable: BODY"), which is the one place it is shown; connection failures are the
/// public [`object_store::client::HttpError`] in the error's chain, their kind decided by
/// `object_store` from reqwest's and hyper's error types.
fn failure(e: &object_store::Error) -> Option<Failure> {
    use object_store::client::HttpError;
    const STATUS: &str = "non-2xx status code: ";
    const ERROR_BODY: &str = "Server returned error response: ";
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut http: Option<&HttpError> = None;
    while let Some(s) = source {
        if http.is_none() {
            http = s.downcast_ref::<HttpError>();
        }
        source = s.source();
    }
    if let Some(h) = http {
        // The innermost cause says most ("Connection refused (os error 111)").
        let mut cause = h.to_string();
        let mut s = std::error::Error::source(h);
        while let Some(c) = s {
            cause = c.to_string();
            s = c.source();
        }
        return Some(Failure::Connection {
            kind: h.kind(),
            cause,
        });
    }
    let text = e.to_string();
    if let Some(at) = text.find(STATUS) {
        let rest = &text[at + STATUS.len()..];
        let code: u16 = rest.get(..3)?.parse().ok()?;
        let (head, body) = rest.split_once(':').unwrap_or((rest, ""));
        return Some(Failure::Status {
            code,
            reason: head.get(3..).unwrap_or("").trim().to_string(),
            s3_code: xml_element(body, "Code"),
            s3_message: xml_element(body, "Message"),
        });
    }
    let at = text.find(ERROR_BODY)?;
    let body = &text[at + ERROR_BODY.len()..];
    Some(Failure::ErrorBody {
        s3_code: xml_element(body, "Code"),
        s3_message: xml_element(body, "Message"),
    })
}

/// S3 error codes that say "try again" (sent with a 5xx status, or in a `200 OK` body).
const TRANSIENT_S3_CODES: &[&str] = &[
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
];

/// Whether repeating the request may succeed: any failure of the transport (a connection that
/// could not be made, broke or timed out, an answer that could not be read); a 408, 429 or 5xx answer; a `200 OK` carrying a "try again" S3 error code; an
/// I/O error of a "try again" kind. Everything else (404, 403, a missing bucket, a malformed
/// request, an invalid path) is permanent.
fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => return false,
        _ => {}
    }
    match failure(e) {
        Some(Failure::Status { code, .. }) => code == 408 || code == 429 || code >= 500,
        Some(Failure::ErrorBody { s3_code, .. }) => {
            s3_code.is_some_and(|c| TRANSIENT_S3_CODES.contains(&c.as_str()))
        }
        // Any failure of the transport: also those reqwest does not name (hyper's "connection
        // was not ready" when the server dropped a pooled connection, found by the outage
        // test) or a body that could not be read. Repeating a request that fails the same way
        // each time costs a few seconds; failing one that a repeat would cure costs the run.
        Some(Failure::Connection { .. }) => true,
        None => io_cause(e).is_some_and(crate::error::is_transient_io),
    }
}

/// The first I/O error in an error's chain.
fn io_cause(e: &object_store::Error) -> Option<&std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// The failure in a few words ("the server answered 503 Service Unavailable (SlowDown: …)",
/// "the connection failed: Connection refused (os error 111)"); the whole `object_store`
/// message for anything else.
fn describe(e: &object_store::Error) -> String {
    use object_store::client::HttpErrorKind;
    let s3 = |code: &Option<String>, message: &Option<String>| match (code, message) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    };
    match failure(e) {
        Some(Failure::Status {
            code,
            reason,
            s3_code,
            s3_message,
        }) => {
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" {reason}")
            };
            format!(
                "the server answered {code}{reason}{}",
                s3(&s3_code, &s3_message)
            )
        }
        Some(Failure::ErrorBody {
            s3_code,
            s3_message,
        }) => format!(
            "the server answered with an error document{}",
            s3(&s3_code, &s3_message)
        ),
        Some(Failure::Connection { kind, cause }) => {
            let what = match kind {
                HttpErrorKind::Connect => "the connection to the server failed",
                HttpErrorKind::Timeout => "the request timed out",
                HttpErrorKind::Request | HttpErrorKind::Interrupted => "the connection was dropped",
                HttpErrorKind::Decode => "the answer could not be read",
                _ => "the request failed",
            };
            if kind == HttpErrorKind::Timeout {
                format!("{what}: {cause} (TRESOR_S3_TIMEOUT sets the limit, in seconds)")
            } else {
                format!("{what}: {cause}")
            }
        }
        None => e.to_string(),
    }
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

    /// An `object_store` error as the S3 client makes it for an answer with `status` and
    /// `body` (the text of its private `RetryError`).
    fn status_error(status: &str, body: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: format!(
                "Error performing PUT http://h/b/k in 3ms - Server returned non-2xx status \
                 code: {status}: {body}"
            )
            .into(),
        }
    }

    fn http_error(kind: object_store::client::HttpErrorKind) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                kind,
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"),
            )),
        }
    }

    #[test]
    fn errors_are_classified_by_status_and_connection_kind() {
        use object_store::client::HttpErrorKind as K;
        let slow = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        for (status, transient) in [
            ("503 Service Unavailable", true),
            ("500 Internal Server Error", true),
            ("502 Bad Gateway", true),
            ("429 Too Many Requests", true),
            ("408 Request Timeout", true),
            ("400 Bad Request", false),
            ("409 Conflict", false),
            ("411 Length Required", false),
        ] {
            let e = classify("storing x".into(), status_error(status, slow));
            assert_eq!(e.is_transient(), transient, "{status}");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "storing x: the server answered {status} (SlowDown: "
                )),
                "{text}"
            );
        }
        for (kind, transient) in [
            (K::Connect, true),
            (K::Request, true),
            (K::Timeout, true),
            (K::Interrupted, true),
            (K::Unknown, true),
            (K::Decode, true),
        ] {
            let e = classify("reading x".into(), http_error(kind));
            assert_eq!(e.is_transient(), transient, "{kind:?}");
            assert!(e.to_string().contains(": Connection refused"), "{e}");
        }
        let e = classify("reading x".into(), http_error(K::Connect));
        assert_eq!(
            e.to_string(),
            "reading x: the connection to the server failed: Connection refused"
        );
        let e = classify("reading x".into(), http_error(K::Timeout));
        assert!(e.to_string().contains("the request timed out"), "{e}");
        // A 200 OK carrying an S3 error document.
        let body = |code: &str| object_store::Error::Generic {
            store: "S3",
            source: format!(
                "Server returned error response: <Error><Code>{code}</Code><Message>m</Message>\
                 </Error>"
            )
            .into(),
        };
        assert!(classify("c".into(), body("InternalError")).is_transient());
        assert!(!classify("c".into(), body("InvalidPart")).is_transient());
        // Typed answers are permanent whatever their text says.
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "non-2xx status code: 503 Service Unavailable".into(),
        };
        assert!(!classify("c".into(), denied).is_transient());
        // Anything unrecognised is permanent, and shown whole.
        let odd = object_store::Error::Generic {
            store: "S3",
            source: "something odd".into(),
        };
        let e = classify("c".into(), odd);
        assert!(!e.is_transient());
        assert!(e.to_string().contains("something odd"), "{e}");
    }

    #[test]
    fn marker_is_no_object() {
        assert_eq!(layout::parse(MARKER), None);
    }
}
