//! The `tresor` binary: parse, run, map the error to an exit code. Everything else is in cli/
//! and the library.

mod cli;

use std::process::ExitCode;

/// Keeps glibc from returning every multi-megabyte chunk buffer to the kernel.
///
/// Chunks are 0.25–4 MiB; by default glibc serves such allocations with mmap and unmaps them on
/// free, so every chunk costs fresh page faults (measured: 0.6–1.0 s of system time per GB
/// restored, against 0.1 s with these settings). Raising the mmap threshold to 32 MiB and the
/// trim threshold to 64 MiB keeps the buffers in the heap for reuse. Peak memory is bounded by
/// the pipeline's queues either way.
///
/// One arena for all threads: by default every thread that allocates (rayon's encoders, the
/// reader, the uploaders) gets an arena of its own, and each keeps its freed buffers, so the
/// process held 20–40 MiB more than the pipeline uses. Measured 2026-12-04 on the full corpus
/// (two cores), against the default: dump backups 101–120 MiB instead of 116–140, a day-6
/// restore 80–82 instead of 109–117, a tree backup 119 instead of 159–165, a tree restore 111
/// instead of 146–152. CPU time was the same or lower (tree backup 7.4–7.7 user seconds
/// against 8.1).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; it is called once, before any other
    // thread exists, with valid parameter numbers and values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    cli::main()
}
