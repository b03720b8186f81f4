#!/usr/bin/env bash
# The main job, end to end: build tresor, create a repository in a temporary directory, back up
# a file tree and a database-dump-like stream (twice, to show dedup), restore both, and prove the
# restored bytes are identical. Exits non-zero if anything differs.
#
#   ./scripts/demo.sh            # uses a fresh temp dir, removed afterwards
#   KEEP=1 ./scripts/demo.sh     # keep the temp dir to look around
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
tresor=$PWD/target/release/tresor
work=$(mktemp -d /tmp/tresor-demo.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

export TRESOR_REPO=$work/repo TRESOR_CACHE_DIR=$work/cache
printf 'demo-password\n' > "$work/password"
export TRESOR_PASSWORD_FILE=$work/password

# A dump-like stream: 200,000 rows of an orders table (~9 MB); day N changes a few recent rows
# and appends N×1000 new ones, the way an application's table changes from one night to the next.
cat > "$work/dump.sh" <<'SH'
awk -v day="$1" 'BEGIN {
  print "COPY public.orders (id, customer, status, note) FROM stdin;";
  srand(42);
  for (i = 1; i <= 200000; i++) {
    status = (i > 195000 && i % 7 == day) ? "shipped" : "new";
    printf "%d\t%d\t%s\tnote %d for customer %d\n", i, int(rand() * 50000), status, i * 7, i % 997;
  }
  for (i = 200001; i <= 200000 + day * 1000; i++) printf "%d\t%d\tnew\tlate order\n", i, i % 50000;
  print "\\.";
}'
SH
dump() { bash "$work/dump.sh" "$1"; }

# A file tree: this project's sources and docs.
mkdir -p "$work/tree"
cp -r src docs README.md Cargo.toml "$work/tree/"
ln -s src/lib.rs "$work/tree/lib-link"

echo "== tresor repo init"
"$tresor" repo init
echo "== back up a file tree"
"$tresor" snapshot create "$work/tree" --tag files
echo "== back up a dump from a command (day 1), then a changed dump (day 2) from stdin"
"$tresor" snapshot create --command "bash $work/dump.sh 1" --stdin-name orders.sql --tag db
dump 2 | "$tresor" snapshot create --stdin --stdin-name orders.sql --tag db
echo "== a failing dump command writes no snapshot"
if "$tresor" snapshot create --command 'echo partial; exit 7' --stdin-name broken.sql; then
  echo "FAIL: a failing command produced a snapshot" >&2; exit 1
fi
echo "== snapshot list"
"$tresor" snapshot list
echo "== restore and compare"
files_id=$("$tresor" snapshot list --json | python3 -c 'import json,sys; print([s["short_id"] for s in json.load(sys.stdin) if "files" in s["tags"]][0])')
"$tresor" snapshot restore "$files_id" --target "$work/restored"
diff -r "$work/tree" "$work/restored${work}/tree"
"$tresor" snapshot restore latest --stdout --path orders.sql > "$work/orders.restored"
dump 2 | cmp - "$work/orders.restored"
"$tresor" check --read-data
echo "OK: file tree and dump restored byte for byte; repository checked"
du -sh "$work/repo"
