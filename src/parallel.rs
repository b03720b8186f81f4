//! Requests in flight: [`try_map`] runs a fallible function over items on a few threads of its
//! own and gives the results in the items' order. It is for waiting, not for computing: a
//! request to object storage spends a round trip waiting, so a handful of them in flight hide
//! the latency, while rayon's pool (one thread per core) is kept for decoding.

#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Small requests (index objects, snapshots, pack headers: a round trip each, a few KiB) kept
/// in flight per connection of bulk transfer: they cost no memory worth counting, only waiting.
pub const SMALL_PER_CONNECTION: usize = 4;

/// Small requests to keep in flight for `connections` (see [`SMALL_PER_CONNECTION`]).
pub fn small_requests(connections: usize) -> usize {
    connections.max(1) * SMALL_PER_CONNECTION
}

/// `f` over every item on up to `threads` threads; the results in the items' order, or the
/// error of the first item that failed (once one fails, no further item is started). One thread
/// or one item: on the caller's thread.
pub fn try_map<T, R, F>(threads: usize, items: &[T], f: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> Result<R> + Sync,
{
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(items.len()).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    let mut g = slots.lock().unwrap_or_else(|e| e.into_inner());
                    g[i] = Some(r);
                }
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(slots.len());
    let mut first_err = None;
    for r in slots {
        match r {
            Some(Ok(v)) if first_err.is_none() => out.push(v),
            Some(Err(e)) if first_err.is_none() => first_err = Some(e),
            Some(_) => {}
            None if first_err.is_none() => {
                // Not started: only after a failure, which is reported instead.
                first_err = Some(Error::InvalidArgument(
                    "a parallel request was not started".into(),
                ));
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_reports_the_first_error() {
        let items: Vec<u32> = (0..100).collect();
        for threads in [1, 3, 8, 200] {
            let r = try_map(threads, &items, |x| Ok(x * 2)).unwrap();
            assert_eq!(r, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        let r = try_map(4, &items, |x| {
            if *x == 37 {
                Err(Error::corrupt("item 37", "bad"))
            } else {
                Ok(*x)
            }
        });
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
        assert!(try_map(4, &[] as &[u32], |x| Ok(*x)).unwrap().is_empty());
    }
}
