#!/usr/bin/env bash
# month-bench.sh CORPUS OUT [small|full]
#
# The month benchmark of issue 16: 30 daily dumps (day 0 and 29 days of churn) backed up one
# per day from stdin by tresor and by restic, each into a fresh local repository.
#
# CORPUS is a month corpus (`DAYS=29 ../shared/bench/make-corpus.sh CORPUS small|full`); it is
# generated when CORPUS/dumps/day29.sql is missing (the size given, default small; the full
# month is ~30 GB: keep it outside the checkout).
#
# Prints and writes to OUT/results.md:
#   - the storage floor (../shared/bench/floor.sh: day 0 zstd -3, every later day
#     `zstd --patch-from` the previous day), per day and in total;
#   - per day and tool: bytes the repository grew by, backup wall time, peak RSS;
#   - restores of the first, middle and last day to /dev/null (wall time, MB/s, peak RSS), each
#     checked byte for byte against its dump;
#   - `forget` all but the last 7 days with prune: repository size after, and the size of a
#     fresh repository holding only those 7 days (what the kept days alone would cost);
#   - tresor's `check --read-data` of the month before forgetting (time, peak RSS).
#
# Needs: target/release/tresor (cargo build --release), restic, zstd, /usr/bin/time, python3.
# Run nothing else meanwhile: the machine has 2 cores.
set -euo pipefail

corpus=${1:?usage: month-bench.sh CORPUS OUT [small|full]}
out=${2:?usage: month-bench.sh CORPUS OUT [small|full]}
size=${3:-small}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH:-$here/../shared/bench}
tresor=${TRESOR:-$here/target/release/tresor}
tools=${TOOLS:-"tresor restic"}
days=30
keep=7

if [ ! -e "$corpus/dumps/day$((days - 1)).sql" ]; then
  echo "== generating the month corpus ($size) in $corpus"
  DAYS=$((days - 1)) bash "$bench/make-corpus.sh" "$corpus" "$size"
fi
[ -x "$tresor" ] || { echo "missing $tresor (cargo build --release)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
md=$out/results.md
: >"$md"
say() { echo "$*" | tee -a "$md"; }

# tool-specific commands, each run with TOOL_REPO set
init() {
  case $1 in
    tresor) TRESOR_REPO=$2 "$tresor" repo init >/dev/null ;;
    restic) restic -r "$2" init --repository-version 2 >/dev/null ;;
  esac
}
# backup and restore run under /usr/bin/time, which writes "seconds max_rss_kib" to $timefile
timefile=$out/t
backup() { # tool repo dump
  case $1 in
    tresor) TRESOR_REPO=$2 /usr/bin/time -f "%e %M" -o "$timefile" \
      "$tresor" snapshot create --stdin --stdin-name db.sql <"$3" >/dev/null ;;
    restic) /usr/bin/time -f "%e %M" -o "$timefile" \
      restic -r "$2" backup --stdin --stdin-filename db.sql -q <"$3" >/dev/null ;;
  esac
}
restore() { # tool repo snapshot-index (0-based)
  case $1 in
    tresor)
      id=$(TRESOR_REPO=$2 "$tresor" snapshot list --json |
        python3 -c "import json,sys; print(json.load(sys.stdin)[$3]['id'])")
      TRESOR_REPO=$2 /usr/bin/time -f "%e %M" -o "$timefile" \
        "$tresor" snapshot restore "$id" --stdout --path db.sql ;;
    restic)
      id=$(restic -r "$2" snapshots --json |
        python3 -c "import json,sys; print(json.load(sys.stdin)[$3]['short_id'])")
      /usr/bin/time -f "%e %M" -o "$timefile" restic -r "$2" dump -q "$id" db.sql ;;
  esac
}
forget() { # tool repo
  case $1 in
    tresor) TRESOR_REPO=$2 "$tresor" snapshot forget --keep-last $keep --prune >/dev/null ;;
    restic) restic -r "$2" forget -q --keep-last $keep --prune >/dev/null ;;
  esac
}
bytes() { du -sb "$1" | cut -f1; }
mb() { python3 -c "print(f'{$1/1e6:.2f}')"; }

export TRESOR_PASSWORD=month-bench RESTIC_PASSWORD=month-bench
export TRESOR_CACHE_DIR=$out/cache RESTIC_CACHE_DIR=$out/restic-cache

say "# Month benchmark: $days daily dumps of $corpus"
say ""
say "## Storage floor (floor.sh)"
bash "$bench/floor.sh" "$corpus/dumps" >"$out/floor.txt"
floor=$(awk '/floor total/{print $3}' "$out/floor.txt")
say ""
say "floor total: $(mb "$floor") MB"

for tool in $tools; do
  repo=$out/$tool-repo
  init "$tool" "$repo"
  prev=$(bytes "$repo")
  : >"$out/$tool-days.txt"
  for d in $(seq 0 $((days - 1))); do
    backup "$tool" "$repo" "$corpus/dumps/day$d.sql"
    now=$(bytes "$repo")
    read -r secs rss <"$out/t"
    echo "$d $((now - prev)) $secs $rss" >>"$out/$tool-days.txt"
    echo "$tool day $d: +$(mb $((now - prev))) MB in ${secs}s, $((rss / 1024)) MiB"
    prev=$now
  done
  echo "$now" >"$out/$tool-total.txt"
  if [ "$tool" = tresor ]; then
    TRESOR_REPO=$repo /usr/bin/time -f "%e %M" -o "$out/check" "$tresor" check --read-data >/dev/null
  fi
  : >"$out/$tool-restores.txt"
  for d in 0 $((days / 2)) $((days - 1)); do
    restore "$tool" "$repo" "$d" >"$out/restored"
    read -r secs rss <"$out/t"
    cmp -s "$out/restored" "$corpus/dumps/day$d.sql" || { echo "$tool day $d restores wrong" >&2; exit 1; }
    n=$(stat -c %s "$out/restored")
    rm -f "$out/restored"
    echo "$d $secs $rss $n" >>"$out/$tool-restores.txt"
  done
  forget "$tool" "$repo"
  bytes "$repo" >"$out/$tool-after-forget.txt"
  # The kept days alone, in a fresh repository.
  fresh=$out/$tool-fresh
  init "$tool" "$fresh"
  for d in $(seq $((days - keep)) $((days - 1))); do
    backup "$tool" "$fresh" "$corpus/dumps/day$d.sql"
  done
  bytes "$fresh" >"$out/$tool-fresh7.txt"
  rm -rf "$fresh"
done

say ""
say "## Per day: MB added (time s, peak RSS MiB)"
say ""
header="| day | floor |"
sep="|---|---|"
for tool in $tools; do header="$header $tool |"; sep="$sep---|"; done
say "$header"
say "$sep"
for d in $(seq 0 $((days - 1))); do
  f=$(awk -v d="day$d" '$1 == d {print $2}' "$out/floor.txt")
  row="| $d | $(mb "$f") |"
  for tool in $tools; do
    read -r _ added secs rss < <(awk -v d="$d" '$1 == d' "$out/$tool-days.txt")
    row="$row $(mb "$added") (${secs} s, $((rss / 1024)) MiB) |"
  done
  say "$row"
done
row="| total | $(mb "$floor") |"
for tool in $tools; do
  t=$(cat "$out/$tool-total.txt")
  row="$row $(mb "$t") ($(python3 -c "print(f'{$t/$floor:.2f}')")× the floor) |"
done
say "$row"
say ""
say "## Restores to /dev/null (checked byte for byte)"
say ""
say "| tool | day | time | MB/s | peak RSS |"
say "|---|---|---|---|---|"
for tool in $tools; do
  while read -r d secs rss n; do
    say "| $tool | $d | $secs s | $(python3 -c "print(f'{$n/1e6/max($secs,0.01):.0f}')") | $((rss / 1024)) MiB |"
  done <"$out/$tool-restores.txt"
done
say ""
say "## Keep the last $keep days (forget --keep-last $keep --prune)"
say ""
say "| tool | after prune | the $keep days alone | ratio |"
say "|---|---|---|---|"
for tool in $tools; do
  a=$(cat "$out/$tool-after-forget.txt")
  f=$(cat "$out/$tool-fresh7.txt")
  say "| $tool | $(mb "$a") MB | $(mb "$f") MB | $(python3 -c "print(f'{$a/$f:.2f}')")× |"
done
if [ -e "$out/check" ]; then
  read -r secs rss <"$out/check"
  say ""
  say "tresor check --read-data of the month: $secs s, $((rss / 1024)) MiB"
fi
