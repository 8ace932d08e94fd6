#!/usr/bin/env bash
# Benchmark of the core path: datagen → discard and datagen → file, with
# SQLite checkpoints, in a release build. Prints events/s and peak RSS per
# run (median of 3), and beside them the disk's own sequential write rate
# with fsync (the physical limit of the file sink) measured in the same run.
#
# Usage: bash bench/core.sh [EVENTS]   (default 5,000,000 for discard, 2,000,000 for file)
set -euo pipefail
cd "$(dirname "$0")/.."
N_DISCARD=${1:-5000000}
N_FILE=${2:-2000000}
RUNS=${RUNS:-3}
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p deltaforge --quiet
fi
BIN=${CARGO_TARGET_DIR:-target}/release/deltaforge
WORK=$(mktemp -d /tmp/deltaforge-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (peak RSS)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi

config() { # name sink-yaml count
  cat > "$WORK/$1.yaml" <<YAML
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-$1 }
spec:
  source:
    type: datagen
    config: { id: bench-$1, count: $3, rows_per_tx: 1 }
  sinks:
    - $2
  batch: { max_events: 8192, max_bytes: 8388608, max_ms: 50, max_inflight: 2 }
YAML
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run() { # name count
  local rates=() rss=()
  for i in $(seq "$RUNS"); do
    rm -f "$WORK/$1.db"* "$WORK/$1.jsonl"
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$WORK/time.txt" "$BIN" --log-level warn run --config "$WORK/$1.yaml" --storage-path "$WORK/$1.db"
    end=$(date +%s.%N)
    rates+=("$(echo "$2 / ($end - $start)" | bc -l | cut -d. -f1)")
    rss+=("$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print int($2/1024)}' "$WORK/time.txt")")
  done
  echo "$1: $(printf '%s\n' "${rates[@]}" | median) events/s (runs: ${rates[*]}), peak RSS $(printf '%s\n' "${rss[@]}" | median) MB (runs: ${rss[*]})"
}

config discard "{ type: discard, config: { id: out } }" "$N_DISCARD"
config file "{ type: file, config: { id: out, path: $WORK/file.jsonl } }" "$N_FILE"
echo "deltaforge core benchmark: $(nproc) cores, $(date -u +%FT%TZ)"
run discard "$N_DISCARD"
run file "$N_FILE"
bytes=$(stat -c %s "$WORK/file.jsonl")
per_event=$((bytes / N_FILE))
# Physical limit of the file sink: sequential writes with an fsync per 4 MiB
# (larger than one batch), the same pattern the sink uses.
dd if=/dev/zero of="$WORK/dd.bin" bs=4M count=256 oflag=dsync 2> "$WORK/dd.txt"
disk=$(awk '/copied/ {print $(NF-1), $NF}' "$WORK/dd.txt")
echo "file sink physical limit: disk writes with fsync at $disk; at $per_event bytes/event that is about $(awk -v d="$(grep -o '[0-9.]* [MG]B/s' "$WORK/dd.txt")" -v p="$per_event" 'BEGIN {split(d,a," "); m=(a[2]=="GB/s")?1e9:1e6; printf "%d", a[1]*m/p}') events/s"
