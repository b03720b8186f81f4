//! Sizes and shares as people write them on command lines and in the configuration file
//! (`5GiB`, `10%`), and bytes as people read them. Durations are [`crate::forget::policy::parse_duration`].

#![forbid(unsafe_code)]

use crate::error::{Error, Result};

/// `5GiB`, `500MB`, `1T`, `4096` → bytes (K/M/G/T are powers of 1024 with or without `i`;
/// `KB`/`MB`/`GB`/`TB` are powers of 1000).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |why: String| Error::InvalidArgument(why);
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| {
        bad(format!(
            "bad size {s:?}: give a number and a unit, like 5GiB"
        ))
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad(format!("bad size {s:?}: unknown unit {unit:?}"))),
    };
    Ok((n * mult) as u64)
}

/// `10%`, `2.5%` or `10` (percent) → a share between 0 and 1.
pub fn parse_share(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("bad percentage {s:?}: give e.g. 10%")))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(Error::InvalidArgument(format!(
            "percentage {s:?} must be between 0% and 100%"
        )));
    }
    Ok(v / 100.0)
}

/// Bytes in binary units (`512 B`, `4.1 MiB`).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_shares() {
        assert_eq!(parse_size("5GiB").unwrap(), 5 << 30);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert!((parse_share("10%").unwrap() - 0.1).abs() < 1e-9);
        assert!((parse_share("2.5").unwrap() - 0.025).abs() < 1e-9);
        assert!(parse_share("150%").is_err());
        assert!(parse_share("ten").is_err());
    }
}
