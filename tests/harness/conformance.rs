//! The suite every backend must pass (the contract is in `tresor::backend`'s documentation).
//!
//! A backend's tests call [`run`] on a fresh, empty location: the local backend on a temporary
//! directory, the memory backend, wrappers (retry over injected faults), and any new backend
//! (an S3 one against a real local server). Besides the basics it tries what an object store
//! can get wrong: an overwriting put, ranges at and past the end, `exists` of the config and of
//! packs, listing after a delete, the `data/XX/` fan-out, an object of several MiB, every kind
//! listed apart from the others, stale-temporary removal that touches no object, 16 writers
//! racing to create one object (exactly one wins), and a listing longer than an S3 page.

use std::time::Duration;

use tresor::backend::{Backend, ObjectKind};
use tresor::error::Error;

/// Runs every case, in order, on one fresh backend; panics naming the first broken promise.
pub fn run(b: &dyn Backend) {
    basics(b);
    config_and_exists(b);
    ranges(b);
    overwrite_with_identical_bytes(b);
    fan_out(b);
    large_object(b);
    list_after_delete(b);
    kinds_are_apart(b);
    stale_temporaries(b);
    create_only_races(b);
    listing_past_a_page(b);
}

/// A pack name as tresor makes them: 64 hex digits, starting with `first`.
pub fn name(first: u8, n: u8) -> String {
    let mut bytes = [n; 32];
    bytes[0] = first;
    hex::encode(bytes)
}

/// Deterministic bytes that do not repeat in short cycles.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn ok<T>(what: &str, r: tresor::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn sorted(mut l: Vec<(String, u64)>) -> Vec<(String, u64)> {
    l.sort();
    l
}

/// The cases the suite began with: create once, put, get, ranges, list, delete, forget
/// records in a repository whose `forgotten/` may be new.
pub fn basics(b: &dyn Backend) {
    b.create().unwrap();
    assert!(
        matches!(b.create(), Err(Error::RepoExists(_))),
        "create over an existing layout must fail"
    );
    assert!(!b.exists(ObjectKind::Pack, "aa11").unwrap());
    b.put(ObjectKind::Pack, "aa11", b"hello world").unwrap();
    b.put(ObjectKind::Config, "config", b"cfg").unwrap();
    assert!(b.exists(ObjectKind::Pack, "aa11").unwrap());
    assert_eq!(b.get(ObjectKind::Pack, "aa11").unwrap(), b"hello world");
    assert_eq!(b.get(ObjectKind::Config, "config").unwrap(), b"cfg");
    assert_eq!(
        b.get_range(ObjectKind::Pack, "aa11", 6, 5).unwrap(),
        b"world"
    );
    assert!(
        b.get_range(ObjectKind::Pack, "aa11", 6, 6).is_err(),
        "short read must fail"
    );
    assert!(matches!(
        b.get(ObjectKind::Index, "aa11"),
        Err(Error::Missing { .. })
    ));
    b.put(ObjectKind::Pack, "bb22", b"x").unwrap();
    let mut l = b.list(ObjectKind::Pack).unwrap();
    l.sort();
    assert_eq!(l, vec![("aa11".to_string(), 11), ("bb22".to_string(), 1)]);
    assert!(b.list(ObjectKind::Snapshot).unwrap().is_empty());
    b.delete(ObjectKind::Pack, "aa11").unwrap();
    b.delete(ObjectKind::Pack, "aa11").unwrap();
    assert_eq!(b.list(ObjectKind::Pack).unwrap().len(), 1);
    assert!(b.list(ObjectKind::Forgotten).unwrap().is_empty());
    b.put(ObjectKind::Forgotten, "cc33", b"f").unwrap();
    assert_eq!(b.get(ObjectKind::Forgotten, "cc33").unwrap(), b"f");
    // Clean up for the cases that follow.
    b.delete(ObjectKind::Pack, "bb22").unwrap();
    b.delete(ObjectKind::Forgotten, "cc33").unwrap();
}

/// `exists` says yes for the config and for packs exactly when they are stored; the config
/// lists as one object named `config`.
pub fn config_and_exists(b: &dyn Backend) {
    let cfg = b"config bytes, sealed in real life".to_vec();
    ok("put config", b.put(ObjectKind::Config, "config", &cfg));
    assert!(ok("exists config", b.exists(ObjectKind::Config, "config")));
    assert_eq!(
        ok("list config", b.list(ObjectKind::Config)),
        vec![("config".to_string(), cfg.len() as u64)]
    );
    let p = name(0x5a, 1);
    assert!(!ok("exists pack", b.exists(ObjectKind::Pack, &p)));
    ok("put pack", b.put(ObjectKind::Pack, &p, b"pack"));
    assert!(ok("exists pack", b.exists(ObjectKind::Pack, &p)));
    assert!(
        !ok("exists index", b.exists(ObjectKind::Index, &p)),
        "a pack's name must not exist as an index object"
    );
    ok("delete pack", b.delete(ObjectKind::Pack, &p));
    assert!(!ok("exists deleted pack", b.exists(ObjectKind::Pack, &p)));
}

/// Ranges: the last bytes, an empty range at the very end, and every range that runs past the
/// end (an error naming damage, not a short read, not a panic).
pub fn ranges(b: &dyn Backend) {
    let p = name(0x3c, 2);
    let data = bytes(1000, 1);
    ok("put", b.put(ObjectKind::Pack, &p, &data));
    let get = |offset, len| b.get_range(ObjectKind::Pack, &p, offset, len);
    assert_eq!(ok("first byte", get(0, 1)), &data[..1]);
    assert_eq!(ok("whole object", get(0, 1000)), data);
    assert_eq!(ok("last 8 bytes", get(992, 8)), &data[992..]);
    assert_eq!(ok("last byte", get(999, 1)), &data[999..]);
    assert_eq!(ok("empty range at the end", get(1000, 0)), Vec::<u8>::new());
    for (offset, len) in [
        (992, 9),
        (999, 2),
        (1000, 1),
        (1001, 0),
        (5000, 10),
        (0, 1001),
        (u64::MAX, 2),
        (2, u64::MAX),
    ] {
        match get(offset, len) {
            Err(Error::Corrupt { .. }) => {}
            other => panic!(
                "a read of {len} bytes at {offset} of a 1000-byte object must fail as damage, got {:?}",
                other.map(|v| v.len())
            ),
        }
    }
    assert!(matches!(
        b.get_range(ObjectKind::Pack, &name(0x3c, 3), 0, 1),
        Err(Error::Missing { .. })
    ));
    ok("delete", b.delete(ObjectKind::Pack, &p));
}

/// A put over an existing name (with identical bytes, as tresor only does) leaves one object
/// with those bytes.
pub fn overwrite_with_identical_bytes(b: &dyn Backend) {
    let p = name(0x77, 4);
    let data = bytes(4096, 2);
    for kind in [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Lock] {
        ok("first put", b.put(kind, &p, &data));
        ok("second put", b.put(kind, &p, &data));
        assert_eq!(ok("get", b.get(kind, &p)), data, "{kind:?}");
        let listed: Vec<_> = ok("list", b.list(kind))
            .into_iter()
            .filter(|(n, _)| *n == p)
            .collect();
        assert_eq!(listed, vec![(p.clone(), 4096)], "{kind:?} listed once");
        ok("delete", b.delete(kind, &p));
    }
}

/// Packs spread over `data/XX/` by their first two hex digits: the extremes, two in one
/// directory, listed together with their sizes.
pub fn fan_out(b: &dyn Backend) {
    let names = [
        name(0x00, 5),
        name(0x00, 6),
        name(0x0f, 5),
        name(0x7f, 5),
        name(0xab, 5),
        name(0xff, 5),
    ];
    for (i, n) in names.iter().enumerate() {
        ok("put", b.put(ObjectKind::Pack, n, &bytes(100 + i, i as u64)));
    }
    let want: Vec<(String, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), 100 + i as u64))
        .collect();
    assert_eq!(sorted(ok("list", b.list(ObjectKind::Pack))), sorted(want));
    for (i, n) in names.iter().enumerate() {
        assert!(ok("exists", b.exists(ObjectKind::Pack, n)), "{n}");
        assert_eq!(
            ok("get", b.get(ObjectKind::Pack, n)),
            bytes(100 + i, i as u64)
        );
        assert_eq!(
            ok("get_range", b.get_range(ObjectKind::Pack, n, 10, 20)),
            &bytes(100 + i, i as u64)[10..30]
        );
    }
    for n in &names {
        ok("delete", b.delete(ObjectKind::Pack, n));
    }
    assert!(ok("list", b.list(ObjectKind::Pack)).is_empty());
}

/// An object of several MiB (a pack at the default 16 MiB target is bigger still): whole,
/// ranged far into it, and its size listed.
pub fn large_object(b: &dyn Backend) {
    let p = name(0xc4, 7);
    let data = bytes(6 << 20, 3);
    ok("put 6 MiB", b.put(ObjectKind::Pack, &p, &data));
    assert!(ok("get 6 MiB", b.get(ObjectKind::Pack, &p)) == data);
    assert!(
        ok(
            "range 1 MiB at 5 MiB",
            b.get_range(ObjectKind::Pack, &p, 5 << 20, 1 << 20)
        ) == data[5 << 20..]
    );
    assert!(
        ok(
            "range across 4 MiB",
            b.get_range(ObjectKind::Pack, &p, (4 << 20) - 3, 7)
        ) == data[(4 << 20) - 3..(4 << 20) + 4]
    );
    assert_eq!(
        ok("list", b.list(ObjectKind::Pack)),
        vec![(p.clone(), 6 << 20)]
    );
    ok("delete", b.delete(ObjectKind::Pack, &p));
}

/// A deleted object is gone from the listing, from `exists` and from reads; deleting it again,
/// or deleting what never existed, succeeds.
pub fn list_after_delete(b: &dyn Backend) {
    let (keep, gone) = (name(0x12, 8), name(0x12, 9));
    for kind in [ObjectKind::Pack, ObjectKind::Snapshot] {
        ok("put", b.put(kind, &keep, b"keep"));
        ok("put", b.put(kind, &gone, b"gone"));
        ok("delete", b.delete(kind, &gone));
        assert_eq!(
            ok("list", b.list(kind)),
            vec![(keep.clone(), 4)],
            "{kind:?}"
        );
        assert!(!ok("exists", b.exists(kind, &gone)));
        assert!(matches!(b.get(kind, &gone), Err(Error::Missing { .. })));
        assert!(matches!(
            b.get_range(kind, &gone, 0, 1),
            Err(Error::Missing { .. })
        ));
        ok("delete again", b.delete(kind, &gone));
        ok("delete what never was", b.delete(kind, &name(0x13, 9)));
        ok("delete", b.delete(kind, &keep));
        assert!(ok("list", b.list(kind)).is_empty(), "{kind:?}");
    }
}

/// One object of every kind under the same name: each kind lists exactly its own, and deleting
/// one leaves the others.
pub fn kinds_are_apart(b: &dyn Backend) {
    let n = name(0xee, 10);
    let body = |kind: ObjectKind| format!("{kind:?} object").into_bytes();
    let dirs = [
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Forgotten,
    ];
    let before: Vec<Vec<(String, u64)>> = dirs
        .iter()
        .map(|k| sorted(ok("list", b.list(*k))))
        .collect();
    for kind in dirs {
        ok("put", b.put(kind, &n, &body(kind)));
    }
    for (kind, before) in dirs.iter().zip(&before) {
        let mut want = before.clone();
        want.push((n.clone(), body(*kind).len() as u64));
        assert_eq!(sorted(ok("list", b.list(*kind))), sorted(want), "{kind:?}");
        assert_eq!(ok("get", b.get(*kind, &n)), body(*kind), "{kind:?}");
    }
    assert_eq!(
        ok("list config", b.list(ObjectKind::Config)).len(),
        1,
        "objects of other kinds are not the config"
    );
    ok("delete key", b.delete(ObjectKind::Key, &n));
    for kind in &dirs[1..] {
        assert!(ok("exists", b.exists(*kind, &n)), "{kind:?} survives");
    }
    for kind in &dirs[1..] {
        ok("delete", b.delete(*kind, &n));
    }
}

/// Removing stale temporaries succeeds on a repository that has none, and touches no object.
pub fn stale_temporaries(b: &dyn Backend) {
    let p = name(0x99, 11);
    ok("put", b.put(ObjectKind::Pack, &p, b"durable"));
    ok("put", b.put(ObjectKind::Index, &p, b"durable"));
    let removed = ok(
        "remove_stale_temporaries",
        b.remove_stale_temporaries(Duration::ZERO),
    );
    assert!(removed.is_empty(), "nothing was left behind: {removed:?}");
    ok(
        "remove_stale_temporaries (a day old)",
        b.remove_stale_temporaries(Duration::from_secs(86_400)),
    );
    assert_eq!(ok("get", b.get(ObjectKind::Pack, &p)), b"durable");
    assert_eq!(ok("get", b.get(ObjectKind::Index, &p)), b"durable");
    assert!(ok("exists config", b.exists(ObjectKind::Config, "config")));
    ok("delete", b.delete(ObjectKind::Pack, &p));
    ok("delete", b.delete(ObjectKind::Index, &p));
}

/// Sixteen writers race to create one lock object with different bytes: exactly one wins,
/// the others get `AlreadyExists`, and the object holds the winner's bytes. A later `put_new`
/// of it fails the same way and changes nothing.
pub fn create_only_races(b: &dyn Backend) {
    let lock = name(0x42, 1);
    let results: Vec<(usize, tresor::Result<()>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let lock = &lock;
                s.spawn(move || (i, b.put_new(ObjectKind::Lock, lock, &bytes(64, i as u64))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer thread panicked"))
            .collect()
    });
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one create-only put wins: {results:?}"
    );
    for (i, r) in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::AlreadyExists { .. }),
                "writer {i} lost with {e:?}, not AlreadyExists"
            );
        }
    }
    let winner = winners[0];
    assert_eq!(
        ok("get", b.get(ObjectKind::Lock, &lock)),
        bytes(64, winner as u64)
    );
    assert!(matches!(
        b.put_new(ObjectKind::Lock, &lock, b"later"),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        ok("get", b.get(ObjectKind::Lock, &lock)),
        bytes(64, winner as u64)
    );
    assert_eq!(ok("list", b.list(ObjectKind::Lock)).len(), 1);
    ok("delete", b.delete(ObjectKind::Lock, &lock));
    ok(
        "put_new after delete",
        b.put_new(ObjectKind::Lock, &lock, b"again"),
    );
    ok("delete", b.delete(ObjectKind::Lock, &lock));
}

/// 1,100 objects of one kind (an S3 listing page holds 1,000 keys): every one is listed, with
/// its size, and every one deleted.
pub fn listing_past_a_page(b: &dyn Backend) {
    let names: Vec<String> = (0..1100u32)
        .map(|i| {
            let mut n = [0u8; 32];
            n[..4].copy_from_slice(&i.to_be_bytes());
            n[4] = 0x5a;
            n.iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect();
    let size = |i: usize| 10 + i % 7;
    let each = |f: &(dyn Fn(usize, &str) + Sync)| {
        let per = names.len().div_ceil(8);
        std::thread::scope(|s| {
            for (p, part) in names.chunks(per).enumerate() {
                s.spawn(move || {
                    for (j, n) in part.iter().enumerate() {
                        f(p * per + j, n)
                    }
                });
            }
        })
    };
    each(&|i, n| ok("put", b.put(ObjectKind::Index, n, &bytes(size(i), 1))));
    let want: Vec<(String, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), size(i) as u64))
        .collect();
    assert_eq!(sorted(ok("list", b.list(ObjectKind::Index))), sorted(want));
    each(&|_, n| ok("delete", b.delete(ObjectKind::Index, n)));
    assert!(ok("list", b.list(ObjectKind::Index)).is_empty());
}
