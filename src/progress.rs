//! Progress of an operation that runs in phases (check, repair index): the trait the CLI's
//! progress bars implement. Shared by the operations, so none needs another's types for it.

#![forbid(unsafe_code)]

/// Receives progress; every method has a no-op default.
pub trait PhaseProgress: Sync {
    /// A phase starts; `total` is in its own units (bytes for reading, else items).
    fn phase(&self, _name: &str, _total: u64) {}
    /// Units done in the current phase.
    fn advance(&self, _n: u64) {}
}

/// Progress that reports nothing.
pub struct Silent;
impl PhaseProgress for Silent {}
