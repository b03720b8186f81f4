#!/usr/bin/env bash
# tree-bench.sh OUT [TREE] [TOOL ...]
#
# File-tree workload for tresor, restic and borg side by side (docs/performance.md, issue 5):
#   first backup of TREE; second backup with nothing changed; restore into an empty directory;
#   for tresor also a re-restore into the directory that already holds everything.
# Without TREE (or with TREE=gen), a tree of $FILES (default 100,000) small files is generated
# in OUT/tree100k: 100 directories of 1,000 files of 0–16 KiB of text each (~800 MB).
# Each step is timed with /usr/bin/time (wall, peak RSS); results go to OUT/tree-results.csv.
# Restores go into a fresh tmpfs per tool (RESTORE_FS=tmpfs, the default when root): on the
# ext4 disk of this VM, creating files right after a large tree was deleted spends most of its
# time in ext4's search for inodes not recently deleted, which punishes whichever tool runs
# after a deletion; RESTORE_FS=disk restores onto the disk instead.
# tresor comes from $TRESOR (default target/release/tresor). Run nothing else meanwhile.
set -euo pipefail

out=${1:?usage: tree-bench.sh OUT [TREE|gen] [TOOL ...]}
tree=${2:-gen}
shift $(( $# >= 2 ? 2 : 1 ))
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(tresor restic borg)
mkdir -p "$out"
out=$(cd "$out" && pwd)
TRESOR=${TRESOR:-$(cd "$(dirname "$0")/.." && pwd)/target/release/tresor}
files=${FILES:-100000}
restore_fs=${RESTORE_FS:-$([ "$(id -u)" = 0 ] && echo tmpfs || echo disk)}

if [ "$tree" = gen ]; then
  tree=$out/tree$((files / 1000))k
  if [ ! -d "$tree" ]; then
    echo "generating $files files in $tree" >&2
    python3 - "$tree" "$files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(5)
words = [("w%d" % i).encode() for i in range(5000)]
per_dir = 1000
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // per_dir))
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    size = rng.choice([0, 100, 700, 2000, 4000, 9000, 16000])
    buf = bytearray()
    while len(buf) < size:
        buf += rng.choice(words) + b" "
    with open(os.path.join(d, "f%06d.txt" % i), "wb") as f:
        f.write(bytes(buf[:size]))
EOF
  fi
fi
tree=$(cd "$tree" && pwd)
scratch=$(mktemp -d /tmp/tree-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
csv=$out/tree-results.csv
[ -f "$csv" ] || echo "tool,tree,step,wall_s,peak_rss_kib,exit,note" > "$csv"
nfiles=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)
echo "tree $tree: $nfiles files, $bytes bytes; restores onto $restore_fs" >&2
find "$tree" -type f -print0 | xargs -0 cat > /dev/null 2>&1 || true   # warm the page cache for every tool

step() { # step TOOL NAME NOTE -- command
  local tool=$1 name=$2 note=$3 tf=$scratch/time rc=0; shift 4
  /usr/bin/time -f '%e %M' -o "$tf" "$@" > "$scratch/stdout" 2> "$scratch/stderr" || rc=$?
  read -r wall rss < <(tail -n 1 "$tf")
  if [ "$note" = json ]; then
    note="bytes_read=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_read"])' "$scratch/stdout" 2>/dev/null || echo '?')"
  fi
  echo "$tool,$(basename "$tree"),$name,$wall,$rss,$rc,$note" >> "$csv"
  printf '%-7s %-16s %8.2fs  rss %7d KiB  rc %d  %s\n' "$tool" "$name" "$wall" "$rss" "$rc" "$note" >&2
  [ "$rc" = 0 ] || { echo "--- stderr:" >&2; tail -5 "$scratch/stderr" >&2; }
}

for tool in "${tools[@]}"; do
  repo=$scratch/$tool-repo target=$scratch/$tool-restore
  mkdir -p "$target"
  [ "$restore_fs" = tmpfs ] && mount -t tmpfs -o size=8g tmpfs "$target"
  case "$tool" in
    tresor)
      export TRESOR_REPO=$repo TRESOR_PASSWORD=bench TRESOR_CACHE_DIR=$scratch/tresor-cache
      "$TRESOR" repo init -q > /dev/null
      step tresor backup-first json -- "$TRESOR" snapshot create "$tree" --json
      step tresor backup-unchanged json -- "$TRESOR" snapshot create "$tree" --json
      step tresor restore "" -- "$TRESOR" snapshot restore latest --target "$target"
      step tresor re-restore "" -- "$TRESOR" snapshot restore latest --target "$target"
      ;;
    restic)
      export RESTIC_REPOSITORY=$repo RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$scratch/restic-cache
      restic init --repository-version 2 -q > /dev/null
      step restic backup-first "" -- restic backup -q "$tree"
      step restic backup-unchanged "" -- restic backup -q "$tree"
      step restic restore "" -- restic restore latest --target "$target"
      ;;
    borg)
      export BORG_PASSPHRASE=bench BORG_BASE_DIR=$scratch/borg-base
      borg init -e repokey-blake2 "$repo" > /dev/null 2>&1
      step borg backup-first "" -- borg create --compression zstd,3 "$repo::a1" "$tree"
      step borg backup-unchanged "" -- borg create --compression zstd,3 "$repo::a2" "$tree"
      step borg restore "" -- bash -c "cd '$target' && borg extract '$repo::a2'"
      ;;
  esac
  [ "$restore_fs" = tmpfs ] && umount "$target"
  rm -rf "$repo" "$target"
done
echo "results: $csv" >&2
