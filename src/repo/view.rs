//! A read-only view of a repository for a thread that does not own the [`Repo`]: the read path
//! ([`BlobReader`]) and a second, read-only connection to the catalog file (a SQLite connection
//! is not `Sync`, and the `Repo`'s one writes; WAL mode lets this one read meanwhile).
//!
//! The backup's source walk uses it to load parent trees and to ask whether a parent's chunks
//! are still indexed, on its own thread.

use std::cell::Cell;

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{ContentRef, Tree};
use crate::repo::catalog::Catalog;
use crate::repo::{BlobReader, Repo};

/// Loads trees and checks chunk ids from a thread that does not own the `Repo`.
pub struct RepoView {
    reader: BlobReader,
    catalog: Catalog,
    /// Lookups left in the current read transaction; 0: none is open.
    txn_left: Cell<u32>,
}

/// Lookups per read transaction: amortizes SQLite's per-transaction locking and checks without
/// holding one WAL snapshot (which keeps the writer from checkpointing) for the whole backup.
const LOOKUPS_PER_TXN: u32 = 20_000;

impl RepoView {
    /// Opens a read-only view of `repo`'s catalog for another thread.
    pub fn new(repo: &Repo) -> Result<RepoView> {
        Ok(RepoView {
            reader: repo.reader().clone(),
            catalog: repo.catalog().reader()?,
            txn_left: Cell::new(0),
        })
    }

    /// Loads one tree.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let loc = self.catalog.locate(id)?.ok_or_else(|| Error::Missing {
            object: format!("tree {} (not in any index object)", id.to_hex()),
        })?;
        self.reader.read_tree(id, &loc)
    }

    /// Whether every chunk is still indexed.
    pub fn all_present(&self, content: &[ContentRef]) -> Result<bool> {
        if self.txn_left.get() == 0 {
            self.catalog.begin_read()?;
            self.txn_left.set(LOOKUPS_PER_TXN);
        }
        let mut present = Ok(true);
        for c in content {
            match self.catalog.contains(&c.0) {
                Ok(true) => {}
                other => {
                    present = other;
                    break;
                }
            }
        }
        let used = u32::try_from(content.len()).unwrap_or(u32::MAX).max(1);
        let left = self.txn_left.get().saturating_sub(used);
        if left == 0 {
            self.catalog.end_read()?;
        }
        self.txn_left.set(left);
        present
    }
}
