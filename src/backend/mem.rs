//! An in-memory backend for tests and fuzzing. Not durable, by design.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Backend, ObjectKind};
use crate::error::{Error, Result};

/// Objects in a map behind a mutex.
#[derive(Default)]
pub struct MemBackend {
    objects: Mutex<BTreeMap<(u8, String), Vec<u8>>>,
    created: Mutex<bool>,
}

fn key(kind: ObjectKind, name: &str) -> (u8, String) {
    (kind as u8, name.to_string())
}

impl MemBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u8, String), Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces an object's bytes without any checks (for corruption tests).
    pub fn tamper(&self, kind: ObjectKind, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(v) = self.map().get_mut(&key(kind, name)) {
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
        Ok(self.map().contains_key(&key(kind, name)))
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.map().insert(key(kind, name), data.to_vec());
        Ok(())
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.map()
            .get(&key(kind, name))
            .cloned()
            .ok_or_else(|| Error::Missing {
                object: format!("{kind:?} {name}"),
            })
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let map = self.map();
        let v = map.get(&key(kind, name)).ok_or_else(|| Error::Missing {
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
        Ok(self
            .map()
            .iter()
            .filter(|((k, _), _)| *k == kind as u8)
            .map(|((_, n), v)| (n.clone(), v.len() as u64))
            .collect())
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.map().remove(&key(kind, name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conforms() {
        super::super::conformance::run(&super::MemBackend::new());
    }
}
