//! Telling someone how a run went: an HTTP ping in the healthchecks.io style, and a command.
//!
//! The ping: `POST URL/start` when a run starts, `POST URL` with the summary line when it
//! succeeded (warnings included), `POST URL/fail` with the log tail when it failed. A monitor
//! that gets no success ping within its period raises the alarm, so even a run that never
//! happens is noticed. Each request has a 10 s deadline and is tried three times; a ping that
//! still fails is a warning of the run (printed, in the log), not a failure of the backup.
//! URLs are never printed whole: their path is the secret (see [`mask_urls`]).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::jobs::config::mask_urls;

/// Which ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ping {
    /// The run starts: `URL/start`.
    Start,
    /// It succeeded: `URL`.
    Success,
    /// It failed: `URL/fail`.
    Fail,
}

/// The URL of ping `kind` for the base `url` (a trailing `/` is dropped; a query stays last).
pub fn ping_url(url: &str, kind: Ping) -> String {
    let suffix = match kind {
        Ping::Start => "/start",
        Ping::Success => "",
        Ping::Fail => "/fail",
    };
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut u = format!("{}{suffix}", base.trim_end_matches('/'));
    if let Some(q) = query {
        u.push('?');
        u.push_str(q);
    }
    u
}

fn agent() -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::PlatformVerifier)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .user_agent(concat!("tresor/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into()
}

/// Sends ping `kind` with `body` (at most 100 kB are sent: healthchecks.io keeps that much).
pub fn ping(url: &str, kind: Ping, body: &str) -> Result<()> {
    let target = ping_url(url, kind);
    let body = tail_bytes(body, 100_000);
    let agent = agent();
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 * attempt));
        }
        match agent
            .post(&target)
            .header("Content-Type", "text/plain; charset=utf-8")
            .send(body)
        {
            Ok(_) => return Ok(()),
            // The error text may repeat the URL; it is masked below.
            Err(e) => last = e.to_string(),
        }
    }
    // The masked URL no longer shows which ping it was.
    let which = match kind {
        Ping::Start => "start",
        Ping::Success => "success",
        Ping::Fail => "fail",
    };
    Err(Error::Notify(format!(
        "{which} ping {} failed three times: {}",
        mask_urls(&target),
        mask_urls(&last)
    )))
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_urls() {
        let u = "https://hc.example/ping/abc";
        assert_eq!(
            ping_url(u, Ping::Start),
            "https://hc.example/ping/abc/start"
        );
        assert_eq!(ping_url(u, Ping::Success), u);
        assert_eq!(
            ping_url("https://h/p/abc/", Ping::Fail),
            "https://h/p/abc/fail"
        );
        assert_eq!(
            ping_url("https://h/p/abc?rid=1", Ping::Fail),
            "https://h/p/abc/fail?rid=1"
        );
        assert_eq!(tail_bytes("aé", 1), "");
        assert_eq!(tail_bytes("abc", 2), "bc");
    }

    #[test]
    fn an_unreachable_ping_is_an_error_without_the_secret() {
        // A port nobody listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = ping(
            &format!("http://127.0.0.1:{port}/secret-uuid"),
            Ping::Start,
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ping http://127.0.0.1:") && !e.contains("secret-uuid"),
            "{e}"
        );
    }
}
