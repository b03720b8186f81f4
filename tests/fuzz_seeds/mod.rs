//! The fuzz targets' seed corpora, run on stable as ordinary tests.
//!
//! `fuzz/targets.rs` holds the body of every fuzz target; the cargo-fuzz crate and this module
//! both include it, so these tests run exactly the code the fuzzer runs: every file of
//! `fuzz/corpus/<target>/` goes through its target, which panics (failing the test) if a decoder
//! panics or a property of an accepted input breaks (round trip, ids, lengths, bounds). Corpus
//! files the fuzzer added are run too, with the seeds.
//!
//! Regenerate the committed seeds after a format change with
//! `cargo test --test it write_fuzz_seed_corpus -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/targets.rs"]
mod targets;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Runs one input; a panic becomes an Err naming the input.
fn run_one(target: &str, what: &str, data: &[u8]) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| targets::run(target, data))).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{target}: {what}: panicked: {msg}")
    })
}

#[test]
fn every_committed_corpus_file_runs_through_its_target_without_panicking() {
    let mut failures = Vec::new();
    for target in targets::TARGETS {
        let files = corpus_files(target);
        assert!(!files.is_empty(), "fuzz/corpus/{target}/ has no seeds");
        let mut accepted = 0;
        for f in &files {
            let data = fs::read(f).unwrap();
            match run_one(target, &f.display().to_string(), &data) {
                Ok(true) => accepted += 1,
                Ok(false) => {}
                Err(e) => failures.push(e),
            }
        }
        // The seeds are real objects under the test key: at least one must get past the
        // decoder, or the corpus no longer reaches the parser (format changed: regenerate).
        if accepted == 0 {
            failures.push(format!(
                "{target}: none of {} corpus files is accepted",
                files.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn freshly_made_seeds_are_accepted_as_expected() {
    let mut failures = Vec::new();
    for s in targets::seeds() {
        match run_one(s.target, s.name, &s.bytes) {
            Ok(a) if a == s.accepted => {}
            Ok(a) => failures.push(format!(
                "{}: {}: accepted {a}, expected {}",
                s.target, s.name, s.accepted
            )),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_panicking_target_is_reported() {
    // The harness itself: a target that panics must turn into a failure, not pass silently.
    let r = run_one("no such target", "x", b"");
    assert!(r.is_err());
}

#[test]
fn hostile_key_file_parameters_are_refused_or_skipped() {
    let huge =
        br#"{"version":1,"kdf":"argon2id","memory_kib":4194304,"iterations":100,"parallelism":1,
        "salt":"00112233445566778899aabbccddeeff","created":"","host":"","master":"00"}"#;
    assert!(!targets::key_file_is_cheap(huge));
    assert!(!targets::key_file(huge));
    let too_much =
        br#"{"version":1,"kdf":"argon2id","memory_kib":4194305,"iterations":1,"parallelism":1,
        "salt":"00112233445566778899aabbccddeeff","created":"","host":"","master":"00"}"#;
    let name = tresor::format::id::ObjectId::of_bytes(too_much).to_hex();
    let Err(err) = tresor::repo::keys::open(&name, too_much, b"pw") else {
        panic!("a key file asking for more than the limit was opened");
    };
    assert!(err.to_string().contains("unreasonable KDF"), "{err}");
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*; run after a format change"]
fn write_fuzz_seed_corpus() {
    for s in targets::seeds() {
        let dir = corpus_dir(s.target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{}", s.name)), &s.bytes).unwrap();
    }
}
