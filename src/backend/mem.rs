//! An in-memory backend for tests and fuzzing. Not durable, by design. Objects are kept under
//! their keys ([`layout::key`]), as an object store would keep them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Backend, ObjectKind, layout};
use crate::error::{Error, Result};

/// Objects in a map from their keys, behind a mutex.
#[derive(Default)]
pub struct MemBackend {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    created: Mutex<bool>,
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces an object's bytes without any checks (for corruption tests).
    pub fn tamper(&self, kind: ObjectKind, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(v) = self.map().get_mut(&layout::key(kind, name)) {
            f(v)
        }
    }
}

impl Backend for MemBackend {
    fn location(&self) -> String {
        "memory".into()
    }
    fn create(&self) -> Result<()> {
        let mut c = self.created.lock().unwrap_or_else(|e| e.into_inner());
        if *c || !self.map().is_empty() {
            return Err(Error::RepoExists(self.location()));
        }
        *c = true;
        Ok(())
    }
    fn exists(&self, kind: ObjectKind, name: &str) -> Result<bool> {
        Ok(self.map().contains_key(&layout::key(kind, name)))
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.map().insert(layout::key(kind, name), data.to_vec());
        Ok(())
    }
    fn put_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        match self.map().entry(layout::key(kind, name)) {
            std::collections::btree_map::Entry::Occupied(_) => Err(Error::AlreadyExists {
                object: format!("{kind:?} {name}"),
            }),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(data.to_vec());
                Ok(())
            }
        }
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.map()
            .get(&layout::key(kind, name))
            .cloned()
            .ok_or_else(|| Error::Missing {
                object: format!("{kind:?} {name}"),
            })
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let map = self.map();
        let v = map
            .get(&layout::key(kind, name))
            .ok_or_else(|| Error::Missing {
                object: format!("{kind:?} {name}"),
            })?;
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= v.len() as u64)
            .ok_or_else(|| {
                Error::corrupt(
                    format!("{kind:?} {name}"),
                    format!(
                        "{} bytes, read of {len} at {offset} runs past the end",
                        v.len()
                    ),
                )
            })?;
        Ok(v[offset as usize..end as usize].to_vec())
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
        let prefix = layout::prefix(kind);
        Ok(self
            .map()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| match layout::parse(k) {
                Some((kind_of, name)) if kind_of == kind => {
                    Some((name.to_string(), v.len() as u64))
                }
                _ => None,
            })
            .collect())
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.map().remove(&layout::key(kind, name));
        Ok(())
    }
}
