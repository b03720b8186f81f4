//! Backends: the conformance suite over every backend.

use tresor::backend::local::LocalBackend;
use tresor::backend::mem::MemBackend;

use crate::conformance;

#[test]
fn local_conforms() {
    let t = tempfile::tempdir().unwrap();
    conformance::run(&LocalBackend::new(t.path().join("repo")));
}

#[test]
fn mem_conforms() {
    conformance::run(&MemBackend::new());
}
