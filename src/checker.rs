//! `tresor check`: structural audit, and with `read_data` a full read of every pack.
//!
//! Structure: every index object opens; every pack it names exists with the recorded size;
//! every snapshot opens and every tree and chunk it needs is indexed. Read-data: every pack is
//! read once (in parallel), its bytes must hash to its name, its header must open and agree with
//! the index, and every blob must authenticate, inflate and hash to its id.
//!
//! Problems are collected, not fatal, so one run reports all the damage it can see.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::backend::{Backend, ObjectKind};
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::Result;
use crate::format::PACK_TRAILER_LEN;
use crate::id::{BlobId, ObjectId};
use crate::index::{self, IndexedPack};
use crate::pack;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::tree::NodeKind;

/// What a check found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Packs in the repository.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Bytes read with `read_data`.
    pub bytes_read: u64,
    /// Packs present but not in any index object (left by an interrupted backup; harmless).
    pub unindexed_packs: Vec<String>,
    /// Damage, one line each, naming the object.
    pub problems: Vec<String>,
}

/// Runs the check.
pub fn check(repo: &Repo, read_data: bool) -> Result<CheckReport> {
    let backend = repo.backend();
    let key = repo.key();
    let mut report = CheckReport::default();
    let stored: HashMap<String, u64> = backend.list(ObjectKind::Pack)?.into_iter().collect();
    report.packs = stored.len() as u64;

    let mut indexed: HashMap<ObjectId, IndexedPack> = HashMap::new();
    for (name, _) in backend.list(ObjectKind::Index)? {
        let decoded = ObjectId::from_hex(&name)
            .and_then(|id| index::decode(key, &id, &backend.get(ObjectKind::Index, &name)?));
        match decoded {
            Ok(packs) => {
                for p in packs {
                    indexed.insert(p.id, p);
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    let mut blobs: HashSet<BlobId> = HashSet::new();
    for (id, p) in &indexed {
        match stored.get(&id.to_hex()) {
            None => report
                .problems
                .push(format!("pack {} is indexed but missing", id.to_hex())),
            Some(size) if *size != p.size => report.problems.push(format!(
                "pack {} has {size} bytes, the index says {}",
                id.to_hex(),
                p.size
            )),
            Some(_) => {}
        }
        blobs.extend(p.entries.iter().map(|e| e.id));
    }
    report.blobs = blobs.len() as u64;
    for name in stored.keys() {
        if ObjectId::from_hex(name)
            .map(|id| !indexed.contains_key(&id))
            .unwrap_or(true)
        {
            report.unindexed_packs.push(name.clone());
        }
    }

    let mut trees_seen: HashSet<BlobId> = HashSet::new();
    for (name, _) in backend.list(ObjectKind::Snapshot)? {
        report.snapshots += 1;
        let snap = ObjectId::from_hex(&name)
            .and_then(|id| Snapshot::decode(key, &id, &backend.get(ObjectKind::Snapshot, &name)?));
        let snap = match snap {
            Ok(s) => s,
            Err(e) => {
                report.problems.push(format!("snapshot {name}: {e}"));
                continue;
            }
        };
        let mut stack = vec![(snap.root, String::new())];
        while let Some((tree_id, path)) = stack.pop() {
            if !trees_seen.insert(tree_id) {
                continue;
            }
            let tree = match repo.load_tree(&tree_id) {
                Ok(t) => t,
                Err(e) => {
                    report.problems.push(format!(
                        "snapshot {}: directory {:?}: {e}",
                        &name[..8],
                        if path.is_empty() { "/" } else { &path }
                    ));
                    continue;
                }
            };
            for n in &tree.nodes {
                let p = if path.is_empty() {
                    n.name.clone()
                } else {
                    format!("{path}/{}", n.name)
                };
                match n.kind {
                    NodeKind::Dir => {
                        if let Some(s) = n.subtree {
                            stack.push((s, p));
                        }
                    }
                    NodeKind::File => {
                        let missing = n.content.iter().filter(|c| !blobs.contains(&c.0)).count();
                        if missing > 0 {
                            report.problems.push(format!(
                                "snapshot {}: file {p:?}: {missing} chunks are not in any index",
                                &name[..8]
                            ));
                        }
                    }
                    NodeKind::Symlink => {}
                }
            }
        }
    }

    if read_data {
        let (backend, key) = (backend.as_ref(), key.as_ref());
        let results: Vec<(u64, Vec<String>)> = indexed
            .par_iter()
            .filter(|(id, _)| stored.contains_key(&id.to_hex()))
            .map(|(id, p)| read_pack(backend, key, id, p))
            .collect();
        for (bytes, problems) in results {
            report.bytes_read += bytes;
            report.problems.extend(problems);
        }
    }
    report.problems.sort();
    report.unindexed_packs.sort();
    Ok(report)
}

fn read_pack(
    backend: &dyn Backend,
    key: &MasterKey,
    id: &ObjectId,
    indexed: &IndexedPack,
) -> (u64, Vec<String>) {
    let name = id.to_hex();
    let mut problems = Vec::new();
    let bytes = match backend.get(ObjectKind::Pack, &name) {
        Ok(b) => b,
        Err(e) => return (0, vec![format!("pack {name}: {e}")]),
    };
    let n = bytes.len() as u64;
    if ObjectId::of_bytes(&bytes) != *id {
        problems.push(format!(
            "pack {name}: content does not match its name (damaged)"
        ));
    }
    let header = (|| {
        if bytes.len() < PACK_TRAILER_LEN {
            return Err(crate::Error::corrupt(format!("pack {name}"), "too short"));
        }
        let hlen = pack::parse_trailer(id, &bytes[bytes.len() - PACK_TRAILER_LEN..], n)? as usize;
        let start = bytes.len() - PACK_TRAILER_LEN - hlen;
        pack::parse_header(key, id, &bytes[start..start + hlen], n)
    })();
    match header {
        Ok(entries) if entries != indexed.entries => {
            problems.push(format!("pack {name}: header disagrees with the index"))
        }
        Ok(_) => {}
        Err(e) => problems.push(e.to_string()),
    }
    for e in &indexed.entries {
        let end = e.offset as usize + e.stored_len as usize;
        let result = match bytes.get(e.offset as usize..end) {
            Some(s) => codec::decode(key, e.kind, &e.id, s, e.raw_len).map(|_| ()),
            None => Err(crate::Error::corrupt(
                format!("blob {}", e.id.to_hex()),
                "lies past the end of its pack",
            )),
        };
        if let Err(err) = result {
            problems.push(format!("pack {name}: {err}"));
        }
    }
    (n, problems)
}
