//! A fault-injecting HTTP/1.1 proxy for the S3 tests: it sits on a free loopback port in front
//! of the test server and, for a seeded random share of the requests, delays them, drops the
//! connection, answers an S3-style 500 or 503 itself, or truncates the reply.
//!
//! It understands just enough HTTP to keep a client's keep-alive connection in step: a request
//! is its head (up to the blank line) and a body framed by `Content-Length` or
//! `Transfer-Encoding: chunked`; a response likewise (no body for `HEAD`, 1xx, 204 and 304;
//! read to the end when it has neither header). Every forwarded request goes to the server on a
//! connection of its own, its bytes unchanged (the `Host` header the client signed is the
//! proxy's, and the server checks the signature against the header it receives).
//!
//! The faults ([`Faults`], shares of the requests in per mille, drawn once per request in
//! this order):
//!
//! - **reset before forwarding**: the request head is read, then the connection is reset
//!   (`SO_LINGER` 0) or closed, the body unread: nothing reached the server.
//! - **lost reply**: the request is forwarded and the server's whole reply read, then the
//!   connection is reset: the request took effect but its answer was lost.
//! - **500 / 503**: answered by the proxy with an S3 error document; nothing is forwarded.
//! - **truncated reply**: the server's reply is forwarded up to half its body, then the
//!   connection is closed.
//!
//! Independently, a share of the requests is delayed by up to `max_delay_ms` before forwarding.
//! [`Proxy::set_down`] makes the server "go away": every new connection is reset at once, and
//! every open one at its next request, until it is set up again; [`Proxy::set_hang`] makes it
//! hang (requests read, never answered). [`Counts`] says what was
//! injected, so that a test can assert the faults really happened.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Shares of requests (per mille) that get each fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub reset_before: u32,
    pub lost_reply: u32,
    pub error_500: u32,
    pub error_503: u32,
    pub truncate: u32,
    /// Share of requests delayed before forwarding, and the longest delay.
    pub delay: u32,
    pub max_delay_ms: u64,
}

impl Faults {
    /// No faults.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// `total` per mille of the requests fail, spread evenly over the five failure kinds, and
    /// as many again are delayed by up to 300 ms.
    pub fn spread(total: u32) -> Faults {
        let each = total / 5;
        Faults {
            reset_before: each,
            lost_reply: each,
            error_500: each,
            error_503: each,
            truncate: total - 4 * each,
            delay: total,
            max_delay_ms: 300,
        }
    }
}

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub forwarded: AtomicU64,
    pub delayed: AtomicU64,
    pub reset_before: AtomicU64,
    pub lost_reply: AtomicU64,
    pub error_500: AtomicU64,
    pub error_503: AtomicU64,
    pub truncated: AtomicU64,
    /// Connections and requests refused while the server was "away".
    pub refused: AtomicU64,
    /// Requests left unanswered while the server hung.
    pub hung: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    pub forwarded: u64,
    pub delayed: u64,
    pub reset_before: u64,
    pub lost_reply: u64,
    pub error_500: u64,
    pub error_503: u64,
    pub truncated: u64,
    pub refused: u64,
    pub hung: u64,
}

impl Tally {
    /// Requests that failed by a fault (delays are not failures).
    pub fn failures(&self) -> u64 {
        self.reset_before + self.lost_reply + self.error_500 + self.error_503 + self.truncated
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} forwarded; injected: {} delays, {} resets before forwarding, \
             {} lost replies, {} × 500, {} × 503, {} truncated replies, {} refused while away, \
             {} unanswered while hung",
            self.requests,
            self.forwarded,
            self.delayed,
            self.reset_before,
            self.lost_reply,
            self.error_500,
            self.error_503,
            self.truncated,
            self.refused,
            self.hung
        )
    }
}

struct Shared {
    upstream: u16,
    faults: Mutex<Faults>,
    rng: Mutex<u64>,
    down: AtomicBool,
    hang: AtomicBool,
    counts: Counts,
}

impl Shared {
    fn draw(&self) -> u64 {
        let mut s = self.rng.lock().unwrap();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A running proxy (it lives as long as the test process; the threads are detached).
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    ResetBefore,
    LostReply,
    Error(u16),
    Truncate,
}

impl Proxy {
    /// A proxy in front of `127.0.0.1:upstream`, faults off, drawing from `seed`.
    pub fn start(upstream: u16, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::none()),
            rng: Mutex::new(seed | 1),
            down: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            counts: Counts::default(),
        });
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    if s.down.load(Ordering::SeqCst) {
                        s.counts.refused.fetch_add(1, Ordering::Relaxed);
                        reset(&conn);
                        continue;
                    }
                    let s = Arc::clone(&s);
                    thread::spawn(move || {
                        let _ = serve(&s, conn);
                    });
                }
            })
            .unwrap();
        Proxy { port, shared }
    }

    /// Sets the faults from now on.
    pub fn set_faults(&self, f: Faults) {
        *self.shared.faults.lock().unwrap() = f;
    }

    /// Makes the server go away (`true`) or come back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Makes the server hang (`true`): every request is read and never answered (its
    /// connection held open) until this is set back, when those connections are closed.
    pub fn set_hang(&self, hang: bool) {
        self.shared.hang.store(hang, Ordering::SeqCst);
    }

    /// What was done so far.
    pub fn tally(&self) -> Tally {
        let c = &self.shared.counts;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Tally {
            requests: g(&c.requests),
            forwarded: g(&c.forwarded),
            delayed: g(&c.delayed),
            reset_before: g(&c.reset_before),
            lost_reply: g(&c.lost_reply),
            error_500: g(&c.error_500),
            error_503: g(&c.error_503),
            truncated: g(&c.truncated),
            refused: g(&c.refused),
            hung: g(&c.hung),
        }
    }
}

/// Resets a connection (RST instead of FIN: `SO_LINGER` with a zero timeout, then close).
fn reset(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function borrows, with a pointer to a local
    // `linger` and its exact size; it reads nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = conn.shutdown(Shutdown::Both);
}

/// A message's head: its raw bytes and the headers that frame it.
struct Head {
    raw: Vec<u8>,
    first_line: String,
    content_length: Option<u64>,
    chunked: bool,
}

/// Reads a head (up to and including the blank line); `None` at a clean end of the stream.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first_line = String::new();
    let mut content_length = None;
    let mut chunked = false;
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if first_line.is_empty() {
            first_line = text;
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((k, v)) = text.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                content_length = v.parse().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    Ok(Some(Head {
        raw,
        first_line,
        content_length,
        chunked,
    }))
}

/// Reads a body framed as `head` says, raw (chunk framing kept); `to_end` reads until the
/// stream ends when there is neither a length nor chunking.
fn read_body(r: &mut impl BufRead, head: &Head, to_end: bool) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size_hex = text.trim().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    body.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(body);
                    }
                }
            }
            let mut chunk = vec![0u8; size as usize + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
        }
    } else if let Some(n) = head.content_length {
        body.resize(n as usize, 0);
        r.read_exact(&mut body)?;
    } else if to_end {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// An S3 error document with `status`.
fn s3_error(status: u16) -> Vec<u8> {
    let (reason, code, msg) = if status == 503 {
        (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        )
    } else {
        (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{msg}</Message><RequestId>proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         \r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one client connection, request by request, until it ends or a fault ends it.
fn serve(s: &Shared, client: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client.try_clone()?;
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        s.counts.requests.fetch_add(1, Ordering::Relaxed);
        if s.down.load(Ordering::SeqCst) {
            s.counts.refused.fetch_add(1, Ordering::Relaxed);
            reset(&client);
            return Ok(());
        }
        if s.hang.load(Ordering::SeqCst) {
            s.counts.hung.fetch_add(1, Ordering::Relaxed);
            while s.hang.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        let f = *s.faults.lock().unwrap();
        let roll = s.draw() % 1000;
        let mut at = 0u64;
        let mut pick = |share: u32, fault: Fault| {
            let hit = roll >= at && roll < at + u64::from(share);
            at += u64::from(share);
            hit.then_some(fault)
        };
        let fault = pick(f.reset_before, Fault::ResetBefore)
            .or_else(|| pick(f.lost_reply, Fault::LostReply))
            .or_else(|| pick(f.error_500, Fault::Error(500)))
            .or_else(|| pick(f.error_503, Fault::Error(503)))
            .or_else(|| pick(f.truncate, Fault::Truncate))
            .unwrap_or(Fault::None);
        if f.delay > 0 && s.draw() % 1000 < u64::from(f.delay) {
            s.counts.delayed.fetch_add(1, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(s.draw() % (f.max_delay_ms + 1)));
        }
        if fault == Fault::ResetBefore {
            s.counts.reset_before.fetch_add(1, Ordering::Relaxed);
            // Half of them a reset, half a plain close; the body stays unread either way.
            if s.draw().is_multiple_of(2) {
                reset(&client);
            } else {
                let _ = client.shutdown(Shutdown::Both);
            }
            return Ok(());
        }
        let body = read_body(&mut reader, &head, false)?;
        if let Fault::Error(code) = fault {
            if code == 500 {
                s.counts.error_500.fetch_add(1, Ordering::Relaxed);
            } else {
                s.counts.error_503.fetch_add(1, Ordering::Relaxed);
            }
            writer.write_all(&s3_error(code))?;
            writer.flush()?;
            continue;
        }
        // Forward on a connection of its own.
        let mut up = TcpStream::connect(("127.0.0.1", s.upstream))?;
        up.write_all(&head.raw)?;
        up.write_all(&body)?;
        up.flush()?;
        let mut up_reader = BufReader::new(up.try_clone()?);
        let (resp, resp_body) = loop {
            let Some(resp) = read_head(&mut up_reader)? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            let status: u16 = resp
                .first_line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&status) {
                writer.write_all(&resp.raw)?;
                continue;
            }
            let no_body = head.first_line.starts_with("HEAD ") || status == 204 || status == 304;
            let resp_body = if no_body {
                Vec::new()
            } else {
                read_body(&mut up_reader, &resp, true)?
            };
            break (resp, resp_body);
        };
        let _ = up.shutdown(Shutdown::Both);
        s.counts.forwarded.fetch_add(1, Ordering::Relaxed);
        match fault {
            Fault::LostReply => {
                s.counts.lost_reply.fetch_add(1, Ordering::Relaxed);
                reset(&client);
                return Ok(());
            }
            Fault::Truncate if !resp_body.is_empty() => {
                s.counts.truncated.fetch_add(1, Ordering::Relaxed);
                writer.write_all(&resp.raw)?;
                writer.write_all(&resp_body[..resp_body.len() / 2])?;
                writer.flush()?;
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => {
                writer.write_all(&resp.raw)?;
                writer.write_all(&resp_body)?;
                writer.flush()?;
                if resp.content_length.is_none() && !resp.chunked && !resp_body.is_empty() {
                    // Framed by the end of the stream: end it.
                    let _ = client.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
        }
    }
}
