#!/usr/bin/env bash
# The long versions of the crash-safety proofs (CI runs short ones):
#   - TRIALS (default 60) random SIGKILLs of `snapshot create` and `repair index`;
#   - PRUNE_TRIALS (default 30) random SIGKILLs of `prune`;
#   - DELTA_TRIALS (default 60) random SIGKILLs of delta-chain backups and `forget --prune`;
#   - the resume measurement on a RESUME_MIB (default 1024) stream.
# Usage: scripts/crash-trials.sh [TRIALS] [RESUME_MIB] [PRUNE_TRIALS] [DELTA_TRIALS];
# TRESOR_CRASH_SEED=N replays a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRESOR_CRASH_TRIALS="${1:-60}" TRESOR_RESUME_MIB="${2:-1024}" TRESOR_PRUNE_TRIALS="${3:-30}" \
    TRESOR_DELTA_CRASH_TRIALS="${4:-60}"
cargo test --release --test it -- --exact --nocapture --test-threads 1 \
    crash::random_kills_never_lose_a_committed_snapshot \
    crash::resumed_backup_reuses_what_the_killed_run_stored \
    retention::prune_killed_at_random_moments_keeps_every_kept_snapshot \
    crash::kills_during_delta_backups_and_prunes_never_lose_a_snapshot 2>&1 |
    grep -E '^(crash trials|prune trials|delta crash trials|resume|test |thread|test result)|panicked|assert'
