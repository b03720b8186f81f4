//! Shared by the benches: deterministic test data and a fixed key.
//!
//! The text imitates a `pg_dump` in plain format: `COPY … FROM stdin` blocks of tab-separated
//! rows interleaved with `INSERT` statements, with ids, amounts, timestamps, e-mail addresses
//! and words drawn from a seeded generator, so it compresses and chunks like real dumps do
//! (zstd level 3 takes it to roughly a third) and every run sees the same bytes.

#![allow(dead_code)]

use std::io::Write;

use tresor::format::crypto::MasterKey;

/// The key every bench uses.
pub fn key() -> MasterKey {
    MasterKey::from_secret([0x5a; 32])
}

/// One MiB.
pub const MIB: usize = 1 << 20;

/// A xorshift64* generator: fast, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "invoice",
    "shipped",
    "pending",
    "cancelled",
    "refund",
    "customer",
    "warehouse",
    "berlin",
    "hamburg",
    "munich",
    "cologne",
    "frankfurt",
    "stuttgart",
    "leipzig",
    "dresden",
    "parcel",
    "express",
    "standard",
    "priority",
    "return",
    "damaged",
    "delivered",
    "in transit",
    "the",
    "and",
    "of",
    "to",
    "for",
    "with",
    "on",
    "at",
    "by",
    "from",
];

fn word(r: &mut Rng) -> &'static str {
    WORDS[r.below(WORDS.len() as u64) as usize]
}

fn timestamp(r: &mut Rng, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "2024-{:02}-{:02} {:02}:{:02}:{:02}",
        1 + r.below(12),
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60)
    );
}

/// Appends one run of `INSERT` statements or one `COPY` block to `out`.
fn dump_block(r: &mut Rng, row: &mut u64, out: &mut String) {
    use std::fmt::Write as _;
    if r.below(4) == 0 {
        for _ in 0..(20 + r.below(80)) {
            *row += 1;
            let _ = write!(
                out,
                "INSERT INTO public.customers (id, name, email, city, balance, created_at) VALUES ({}, '{} {}', '{}.{}{}@example.com', '{}', {}.{:02}, '",
                row,
                word(r),
                word(r),
                word(r),
                word(r),
                r.below(1000),
                word(r),
                r.below(100_000),
                r.below(100),
            );
            timestamp(r, out);
            out.push_str("');\n");
        }
    } else {
        out.push_str(
            "COPY public.orders (id, customer_id, status, amount, note, created_at) FROM stdin;\n",
        );
        for _ in 0..(200 + r.below(800)) {
            *row += 1;
            let _ = write!(
                out,
                "{}\t{}\t{}\t{}.{:02}\t",
                row,
                r.below(50_000),
                word(r),
                r.below(10_000),
                r.below(100)
            );
            for i in 0..(1 + r.below(6)) {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(word(r));
            }
            out.push('\t');
            timestamp(r, out);
            out.push('\n');
        }
        out.push_str("\\.\n\n");
    }
}

/// Exactly `len` bytes of dump-like text.
pub fn dump_text(len: usize) -> Vec<u8> {
    let mut r = Rng::new(1);
    let mut row = 0u64;
    let mut s = String::with_capacity(len + 256 * 1024);
    while s.len() < len {
        dump_block(&mut r, &mut row, &mut s);
    }
    let mut b = s.into_bytes();
    b.truncate(len);
    b
}

/// Writes `len` bytes of dump-like text to `w`, in pieces, without holding it all in memory.
pub fn write_dump(w: &mut impl Write, len: usize) -> std::io::Result<()> {
    let mut r = Rng::new(1);
    let mut row = 0u64;
    let mut left = len;
    let mut s = String::with_capacity(2 * MIB);
    while left > 0 {
        s.clear();
        while s.len() < MIB {
            dump_block(&mut r, &mut row, &mut s);
        }
        let n = s.len().min(left);
        w.write_all(&s.as_bytes()[..n])?;
        left -= n;
    }
    Ok(())
}

/// `len` incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(len);
    out
}
