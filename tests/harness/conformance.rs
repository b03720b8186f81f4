//! The suite every backend must pass (the contract is in `tresor::backend`'s documentation).
//! Any backend's tests call [`run`] on a fresh, empty location.

use tresor::backend::{Backend, ObjectKind};
use tresor::error::Error;

pub fn run(b: &dyn Backend) {
    b.create().unwrap();
    assert!(
        b.create().is_err(),
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
}
