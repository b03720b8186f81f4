#!/usr/bin/env bash
# Scale benchmark (issue 4): a 1 GiB dump backed up into an empty repository and into one
# whose catalog holds N synthetic chunks (default 10 million); prune planning on the big one.
# Usage: scripts/scale-bench.sh DUMP [N] [WORKDIR]   (DUMP: e.g. ../corpus/full/dumps/day0.sql)
set -euo pipefail
cd "$(dirname "$0")/.."
DUMP=$(realpath "$1"); N=${2:-10000000}; W=${3:-/tmp/tresor-scale}
cargo build --release --quiet --example synthetic_index
B=$PWD/target/release/tresor
export TRESOR_PASSWORD=scale-bench
rm -rf "$W"; mkdir -p "$W"
measure() { # label, command…
    local label=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f "$label: %e s, peak RSS %M KiB, %P CPU" "$@" > "$W/out.txt" 2> "$W/time.txt" || { cat "$W/out.txt" "$W/time.txt"; exit 1; }
    tail -1 "$W/time.txt"
}
$B -r "$W/empty" repo init -q
measure "backup into an empty repository" $B -r "$W/empty" --cache-dir "$W/cache" snapshot create -q --stdin --stdin-name day0.sql < "$DUMP"
$B -r "$W/big" repo init -q
./target/release/examples/synthetic_index "$W/big" "$W/cache" "$N"
measure "backup into the $N-chunk repository" $B -r "$W/big" --cache-dir "$W/cache" snapshot create -q --stdin --stdin-name day0.sql < "$DUMP"
measure "prune --dry-run on it" $B -r "$W/big" --cache-dir "$W/cache" prune --dry-run
cat "$W/out.txt"
du -sh "$W/cache"/*/catalog.sqlite "$W/big/index"
