#!/usr/bin/env bash
# Benchmark of the processors: datagen → discard without processors (the
# baseline: the engine's own limit on this machine, measured in the same
# run), then with a filter, a mask, and a small JavaScript transform, in a
# release build. Prints events/s, the cost per event relative to the
# baseline, and deltaforge's peak RSS, medians of RUNS (default 3) runs.
#
# Usage: bash bench/proc.sh [EVENTS]   (SKIP_BUILD=1 reuses an existing release binary)
#          (default 2,000,000; the JavaScript
#        run uses EVENTS/2 to keep the run short — rates are per second)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
N_JS=$((N / 2))
RUNS=${RUNS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p deltaforge --quiet
BIN=$TARGET/release/deltaforge
WORK=$(mktemp -d /tmp/deltaforge-bench-proc.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (peak RSS)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi
export BENCH_MASK_SECRET=bench-secret-0123456789abcdef

config() { # name count processors-yaml
  cat > "$WORK/$1.yaml" <<YAML
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-$1 }
spec:
  source:
    type: datagen
    config: { id: bench-$1, count: $2, rows_per_tx: 1, tables: [demo.orders, demo.customers] }
  processors:
$3
  sinks:
    - { type: discard, config: { id: out } }
  batch: { max_events: 8192, max_bytes: 16777216, max_ms: 50, max_inflight: 4 }
YAML
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RATE
run() { # name count
  local rates=() rss=()
  for _ in $(seq "$RUNS"); do
    rm -f "$WORK/$1.db"*
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$WORK/time.txt" "$BIN" --log-level warn run --config "$WORK/$1.yaml" --storage-path "$WORK/$1.db"
    end=$(date +%s.%N)
    rates+=("$(echo "$2 / ($end - $start)" | bc -l | cut -d. -f1)")
    rss+=("$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print int($2/1024)}' "$WORK/time.txt")")
  done
  RATE[$1]=$(printf '%s\n' "${rates[@]}" | median)
  local extra=""
  if [ "$1" != none ]; then
    # Per-event time relative to the baseline: rate_none / rate_this.
    extra=", per-event time $(echo "${RATE[none]} / ${RATE[$1]}" | bc -l | xargs printf '%.2f')x the baseline"
  fi
  echo "$1: ${RATE[$1]} events/s (runs: ${rates[*]})$extra, peak RSS $(printf '%s\n' "${rss[@]}" | median) MB (runs: ${rss[*]})"
}

config none "$N" "    []"
config filter "$N" '    - type: filter
      config:
        ops: [c]
        include: ["demo.*"]
        where:
          all:
            - { field: after.status, in: [new, paid, shipped, delivered] }
            - { field: after.amount, gte: 0 }'
config mask "$N" '    - type: mask
      config:
        hmac_secret: "${BENCH_MASK_SECRET}"
        rules:
          - table: "demo.*"
            columns: { note: hash, customer_id: drop, created_at: { truncate: 10 } }'
config javascript "$N_JS" '    - type: javascript
      config:
        script: |
          function process(events) {
            for (const e of events) { e.after.amount_cents = Math.round(parseFloat(e.after.amount) * 100); }
            return events;
          }'
echo "deltaforge processor benchmark: $(nproc) cores, $(date -u +%FT%TZ), $N events ($N_JS for javascript)"
run none "$N"
run filter "$N"
run mask "$N"
run javascript "$N_JS"
