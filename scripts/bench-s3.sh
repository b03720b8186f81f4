#!/usr/bin/env bash
# bench-s3.sh CORPUS OUT [DELAY_MS ...]
#
# The S3 benchmark of issue 15: tresor and restic against the same SeaweedFS S3 server
# (`weed mini` on loopback), directly and through a delaying TCP proxy
# (examples/delay-proxy.rs: each direction delayed DELAY_MS/2, i.e. DELAY_MS of round trip;
# `tc netem` needs the sch_netem module, which this kind of machine does not have), with a
# local-directory repository as the baseline. Default delays: 0 and 20 (ms round trip).
#
# Per tool and target, each step timed with /usr/bin/time (wall seconds, peak RSS):
#   day0     backup of CORPUS/dumps/day0.sql from stdin (a ~1 GB dump)
#   day1     backup of day1.sql (mostly the same rows: dedup and deltas)
#   stdout   restore of day1 to /dev/null (tresor --stdout, restic dump)
#   dir      restore of day1 to a fresh directory
#   check    structure check (tresor check, restic check)
# and for tresor, on each target, a repository of over 1,000 packs (1 MiB packs, 256 KiB
# chunks, compression off; day0 timed as `packs1k`, then day1) and its structure check
# `check1k`.
# tresor's request counts (`--json` "requests") are kept in OUT/requests.txt.
#
# Needs: target/release/tresor and target/release/examples/delay-proxy (cargo build --release
# --examples), weed (WEED=..., default /tmp/s3venv/bin/weed), restic, /usr/bin/time, python3.
# Writes OUT/results.csv and OUT/results.md. Run nothing else meanwhile.
set -euo pipefail

corpus=${1:?usage: bench-s3.sh CORPUS OUT [DELAY_MS ...]}
out=${2:?usage: bench-s3.sh CORPUS OUT [DELAY_MS ...]}
shift 2
delays=("$@")
[ ${#delays[@]} -gt 0 ] || delays=(0 20)
here=$(cd "$(dirname "$0")/.." && pwd)
tresor=${TRESOR:-$here/target/release/tresor}
proxy=${PROXY:-$here/target/release/examples/delay-proxy}
weed=${WEED:-/tmp/s3venv/bin/weed}
tools=${TOOLS:-"tresor restic"}
day0=$corpus/dumps/day0.sql
day1=$corpus/dumps/day1.sql
for f in "$tresor" "$proxy" "$weed" "$day0" "$day1"; do
  [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
scratch=$out/scratch
rm -rf "$scratch"
mkdir -p "$scratch"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=benchaccess AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1
export TRESOR_PASSWORD=bench-password RESTIC_PASSWORD=bench-password

# weed mini opens ~15 ports: give each a free one.
names=(s3.port s3.port.grpc s3.port.iceberg s3.port.lance s3.debug.port master.port
  master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc admin.port
  admin.port.grpc debug.port webdav.port)
n=$(( ${#names[@]} + ${#delays[@]} ))
read -r -a ports <<<"$(python3 -c "
import socket
ss=[socket.socket() for _ in range($n)]
for s in ss: s.bind(('127.0.0.1',0))
print(' '.join(str(s.getsockname()[1]) for s in ss))")"
args=()
for i in "${!names[@]}"; do args+=("-${names[$i]}=${ports[$i]}"); done
s3port=${ports[0]}
mkdir -p "$scratch/weed/data"
(cd "$scratch/weed" && exec "$weed" mini -dir="$scratch/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -admin.ui=false -master.telemetry=false -webdav=false -bucket=bench \
  -filer.localSocket="$scratch/weed/filer.sock" -s3.localSocket="$scratch/weed/s3.sock" \
  "${args[@]}" >"$scratch/weed/weed.log" 2>&1) &
pids+=($!)
for _ in $(seq 120); do
  restic -r "s3:http://127.0.0.1:$s3port/bench/probe" cat config >/dev/null 2>&1 && break
  # An empty prefix answers "not found" once the gateway is up; curl says when it listens.
  curl -s -o /dev/null "http://127.0.0.1:$s3port/" && break
  sleep 1
done
sleep 2

declare -A endpoint
for i in "${!delays[@]}"; do
  d=${delays[$i]}
  if [ "$d" = 0 ]; then
    endpoint[$d]=127.0.0.1:$s3port
  else
    p=${ports[$(( ${#names[@]} + i ))]}
    "$proxy" "127.0.0.1:$p" "127.0.0.1:$s3port" $(( d / 2 )) &
    pids+=($!)
    endpoint[$d]=127.0.0.1:$p
  fi
done
sleep 1

echo "tool,target,step,seconds,peak_rss_mib,mb_per_s" >"$out/results.csv"
: >"$out/requests.txt"
size_of() { stat -c %s "$1"; }

# timed TOOL TARGET STEP BYTES CMD...: runs CMD, records wall time and peak RSS.
timed() {
  local tool=$1 target=$2 step=$3 bytes=$4
  shift 4
  local tf=$scratch/time.out rc=0
  /usr/bin/time -f '%e %M' -o "$tf" "$@" || rc=$?
  local secs rss
  read -r secs rss <"$tf"
  local mbs=""
  [ "$bytes" -gt 0 ] && mbs=$(python3 -c "print(round($bytes/1e6/max($secs,0.01)))")
  echo "$tool,$target,$step,$secs,$(( rss / 1024 )),$mbs" | tee -a "$out/results.csv"
  [ $rc -eq 0 ] || { echo "step $tool $target $step failed ($rc)" >&2; return $rc; }
}

# requests LABEL JSONFILE: appends tresor's request counts of one step.
requests() {
  python3 - "$1" "$2" >>"$out/requests.txt" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
try:
    v = json.load(open(path))
    r = v.get("requests", {})
    print(f"{label}: " + ", ".join(f"{k}={r[k]}" for k in
          ("total", "get", "get_range", "put", "list", "delete", "exists") if k in r))
except Exception as e:
    print(f"{label}: no counts ({e})")
EOF
}

run_tresor() {
  local target=$1 repo=$2
  export TRESOR_REPO=$repo TRESOR_CACHE_DIR=$scratch/tresor-cache-$target
  local j=$scratch/json
  timed tresor "$target" init 0 "$tresor" -q repo init
  timed tresor "$target" day0 "$(size_of "$day0")" \
    bash -c "'$tresor' snapshot create --json --stdin --stdin-name db.sql <'$day0' >'$j'"
  requests "$target day0" "$j"
  timed tresor "$target" day1 "$(size_of "$day1")" \
    bash -c "'$tresor' snapshot create --json --stdin --stdin-name db.sql <'$day1' >'$j'"
  requests "$target day1" "$j"
  timed tresor "$target" stdout "$(size_of "$day1")" \
    bash -c "'$tresor' snapshot restore latest --stdout --path db.sql >/dev/null"
  rm -rf "$scratch/restore"
  timed tresor "$target" dir "$(size_of "$day1")" \
    bash -c "'$tresor' snapshot restore latest --json --target '$scratch/restore' >'$j'"
  requests "$target dir" "$j"
  cmp -s "$day1" "$(find "$scratch/restore" -name db.sql | head -1)" ||
    echo "tresor $target: restored day1 differs" >&2
  rm -rf "$scratch/restore"
  timed tresor "$target" check 0 bash -c "'$tresor' check --json >'$j'"
  requests "$target check" "$j"
  # ~1,000 packs: 1 MiB packs of 256 KiB chunks, no compression, the 1 GB dump.
  export TRESOR_REPO=$3 TRESOR_CACHE_DIR=$scratch/tresor-cache-$target-1k
  "$tresor" -q repo init --pack-size-mib 1 --compression-level 0 \
    --chunk-min 65536 --chunk-avg 262144 --chunk-max 1048576
  timed tresor "$target" packs1k "$(size_of "$day0")" \
    bash -c "'$tresor' snapshot create --json --stdin --stdin-name db.sql <'$day0' >'$j'"
  requests "$target packs1k" "$j"
  # Day 1 on top, so the repository holds more than 1,000 packs.
  "$tresor" -q snapshot create --stdin --stdin-name db.sql <"$day1"
  timed tresor "$target" check1k 0 bash -c "'$tresor' check --json >'$j'"
  requests "$target check1k" "$j"
  python3 -c "import json; v=json.load(open('$j')); print('$target check1k: packs', v.get('packs'), 'index objects', v.get('index_objects'))" >>"$out/requests.txt" || true
  unset TRESOR_REPO TRESOR_CACHE_DIR
}

run_restic() {
  local target=$1 repo=$2
  export RESTIC_REPOSITORY=$repo RESTIC_CACHE_DIR=$scratch/restic-cache-$target
  timed restic "$target" init 0 restic init --repository-version 2 -q
  timed restic "$target" day0 "$(size_of "$day0")" \
    bash -c "restic backup -q --stdin --stdin-filename db.sql <'$day0'"
  timed restic "$target" day1 "$(size_of "$day1")" \
    bash -c "restic backup -q --stdin --stdin-filename db.sql <'$day1'"
  timed restic "$target" stdout "$(size_of "$day1")" \
    bash -c "restic dump -q latest /db.sql >/dev/null"
  rm -rf "$scratch/restore"
  timed restic "$target" dir "$(size_of "$day1")" \
    restic restore -q latest --target "$scratch/restore"
  rm -rf "$scratch/restore"
  timed restic "$target" check 0 restic check -q
  unset RESTIC_REPOSITORY RESTIC_CACHE_DIR
}

for tool in $tools; do
  "run_$tool" local "$scratch/$tool-local" "$scratch/$tool-local-1k"
  rm -rf "$scratch/$tool-local" "$scratch/$tool-local-1k"
  for d in "${delays[@]}"; do
    prefix=$tool-$d-$RANDOM
    "run_$tool" "s3-${d}ms" "s3:http://${endpoint[$d]}/bench/$prefix" \
      "s3:http://${endpoint[$d]}/bench/$prefix-1k"
  done
done

python3 - "$out" <<'EOF'
import csv, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/results.csv")))
targets = []
for r in rows:
    if r["target"] not in targets:
        targets.append(r["target"])
steps = ["day0", "day1", "stdout", "dir", "check", "packs1k", "check1k"]
with open(f"{out}/results.md", "w") as f:
    f.write("| tool | step | " + " | ".join(targets) + " |\n")
    f.write("|---|---|" + "---|" * len(targets) + "\n")
    for tool in sorted({r["tool"] for r in rows}, reverse=True):
        for step in steps:
            cells = []
            for t in targets:
                m = [r for r in rows if r["tool"] == tool and r["target"] == t and r["step"] == step]
                if not m:
                    cells.append("")
                    continue
                r = m[0]
                c = f"{float(r['seconds']):.1f} s"
                if r["mb_per_s"]:
                    c += f", {r['mb_per_s']} MB/s"
                c += f", {r['peak_rss_mib']} MiB"
                cells.append(c)
            if any(cells):
                f.write(f"| {tool} | {step} | " + " | ".join(cells) + " |\n")
print(open(f"{out}/results.md").read())
EOF
