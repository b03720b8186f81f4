//! The plan: the sources checked and arranged into the one tree they are stored as (an
//! absolute path's parent directories become directories of their own, streams sit at the
//! root, clashing names are refused), and the production of the item stream from it, each
//! source handed to the walk or to the stream that reads it.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::source::meta::Meta;
use crate::source::stream::emit_stream;
use crate::source::walk::{Walker, walk_source};
use crate::source::{Item, Sink, SourceSpec, warn_soft};

#[derive(Default)]
struct PlanDir {
    real: Option<PathBuf>,
    /// Set for a directory that only exists to hold deeper sources.
    meta_from: Option<PathBuf>,
    children: BTreeMap<Vec<u8>, PlanDir>,
    stream: Option<SourceSpec>,
}

/// Normalizes a source path to an absolute path without `.` or `..` (no symlinks resolved).
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::BadSource {
        path: p.into(),
        reason: e.to_string(),
    })?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Checks sources and builds the plan: refuses missing paths and clashing names.
fn plan(sources: &[SourceSpec]) -> Result<PlanDir> {
    let mut root = PlanDir::default();
    for s in sources {
        match s {
            SourceSpec::Path(p) => {
                let abs = absolute(p)?;
                fs::symlink_metadata(&abs).map_err(|e| Error::BadSource {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
                let comps: Vec<&OsStr> = abs
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n),
                        _ => None,
                    })
                    .collect();
                if comps.is_empty() {
                    return Err(Error::BadSource {
                        path: p.clone(),
                        reason: "backing up / itself is not supported yet; name its directories"
                            .into(),
                    });
                }
                let mut node = &mut root;
                let mut sofar = PathBuf::from("/");
                for (i, c) in comps.iter().enumerate() {
                    sofar.push(c);
                    if node.real.is_some() {
                        break; // an ancestor is already a source and covers this path
                    }
                    let child = node.children.entry(c.as_bytes().to_vec()).or_default();
                    if child.stream.is_some() {
                        return Err(Error::InvalidArgument(format!(
                            "{} clashes with a stream name",
                            abs.display()
                        )));
                    }
                    if i + 1 == comps.len() {
                        child.real = Some(sofar.clone());
                        child.children.clear();
                    } else {
                        child.meta_from = Some(sofar.clone());
                    }
                    node = child;
                }
            }
            SourceSpec::Stdin { name } | SourceSpec::Command { name, .. } => {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(Error::InvalidArgument(format!(
                        "{name:?} is not a valid file name for a stream"
                    )));
                }
                if root.children.contains_key(name.as_bytes()) {
                    return Err(Error::InvalidArgument(format!(
                        "two sources would both be stored as {name:?}"
                    )));
                }
                root.children.insert(
                    name.as_bytes().to_vec(),
                    PlanDir {
                        stream: Some(s.clone()),
                        ..Default::default()
                    },
                );
            }
            SourceSpec::Database(db) => place_nested(&mut root, &db.path, s)?,
        }
    }
    Ok(root)
}

/// Places a stream at a nested stored path (`postgres/local/shop.sql`): its parent directories
/// exist only in the snapshot; a clash with another source is refused.
fn place_nested(root: &mut PlanDir, path: &str, s: &SourceSpec) -> Result<()> {
    let comps: Vec<&str> = path.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(Error::InvalidArgument(format!(
            "{path:?} is not a valid stored path for a stream"
        )));
    }
    let mut node = root;
    for (i, c) in comps.iter().enumerate() {
        if node.real.is_some() || node.stream.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{path:?} clashes with another source"
            )));
        }
        let last = i + 1 == comps.len();
        if last && node.children.contains_key(c.as_bytes()) {
            return Err(Error::InvalidArgument(format!(
                "two sources would both be stored as {path:?}"
            )));
        }
        node = node.children.entry(c.as_bytes().to_vec()).or_default();
        if last {
            node.stream = Some(s.clone());
        }
    }
    Ok(())
}

/// Validates sources without reading them (used before any work starts).
pub fn check(sources: &[SourceSpec]) -> Result<()> {
    plan(sources).map(|_| ())
}

/// Produces the item stream for `sources` into `sink`, ending at the root's contents.
pub fn produce(sources: &[SourceSpec], w: &mut Walker<'_>, sink: &mut Sink<'_>) {
    match plan(sources) {
        Ok(root) => {
            for (name, child) in root.children {
                if !emit_plan(OsStr::from_bytes(&name), child, w, sink) {
                    return;
                }
            }
        }
        Err(e) => {
            sink(Item::Fatal(e));
        }
    }
}

fn emit_plan(name: &OsStr, node: PlanDir, w: &mut Walker<'_>, sink: &mut Sink<'_>) -> bool {
    if let Some(stream) = node.stream {
        let (known, prior) = w.parent.stream(name);
        return emit_stream(name, &stream, w.chunker, &w.commands, known, prior, sink);
    }
    if let Some(real) = node.real {
        return walk_source(&real, name, w, sink);
    }
    let meta = match node.meta_from.as_deref().map(fs::metadata) {
        Some(Ok(md)) => Meta::of(&md),
        _ => Meta {
            mode: 0o755,
            ..Meta::default()
        },
    };
    if !sink(Item::DirStart {
        name: name.to_os_string(),
        meta,
    }) {
        return false;
    }
    if let Some(m) = w.parent.enter(name)
        && !warn_soft(sink, m)
    {
        return false;
    }
    for (n, child) in node.children {
        if !emit_plan(OsStr::from_bytes(&n), child, w, sink) {
            return false;
        }
    }
    w.parent.leave();
    sink(Item::DirEnd)
}
