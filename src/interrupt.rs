//! Stopping on a signal: SIGINT (Ctrl-C), SIGTERM (systemd, `kill`), SIGHUP (a closed terminal).
//!
//! The binary installs the handlers ([`install`]); a signal only sets a flag here. Operations
//! poll it with [`check`] at their safe points — the backup between batches and before each
//! commit (index object, snapshot), restore between files and chunks, check between packs,
//! prune between the steps of its crash-safe order — and unwind with
//! [`Error::Interrupted`]: their temporary files are finished or removed on the way out (the
//! uploader is joined), the lock is deleted when the `Repo` drops, and nothing more is committed.
//! The process then exits with 128 + the signal number.
//!
//! A second signal while the first is being handled means "now": the handler deletes the locks
//! this process holds and exits at once (a temporary file may be left; the next run removes
//! it). Commands that commit nothing (list, show, ls, …) take that path on the first signal.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::error::{Error, Result};

/// The first signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Whether the running command polls [`check`] (else the first signal exits at once).
static COOPERATIVE: AtomicBool = AtomicBool::new(false);

/// Fails with [`Error::Interrupted`] once a signal asked to stop.
pub fn check() -> Result<()> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => Ok(()),
        signal => Err(Error::Interrupted { signal }),
    }
}

/// The signal that asked to stop, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Records a signal as if it had been received (the handler thread, and tests).
pub fn raise(signal: i32) {
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// Says whether the running command stops cleanly at its safe points (`true`) or should be
/// ended at once by the first signal (`false`, the default).
pub fn set_cooperative(yes: bool) {
    COOPERATIVE.store(yes, Ordering::SeqCst);
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP: a thread waits for them, records the
/// first for [`check`], and on a second signal (or the first, for a command that is not
/// cooperative) removes this process's locks and exits with 128 + the signal.
pub fn install() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::io("installing signal handlers", e))?;
    std::thread::Builder::new()
        .name("tresor-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let first = received().is_none();
                raise(sig);
                if first && COOPERATIVE.load(Ordering::SeqCst) {
                    eprintln!(
                        "tresor: {} received: stopping at the next safe point (again to stop now)",
                        crate::error::signal_name(sig)
                    );
                    continue;
                }
                crate::repo::lock::release_all_for_exit();
                std::process::exit(128 + sig);
            }
        })
        .map_err(|e| Error::io("starting the signal thread", e))?;
    Ok(())
}
