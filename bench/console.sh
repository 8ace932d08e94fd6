#!/usr/bin/env bash
# What the web console costs (issue 18), in three measurements:
#
#   size   release binary built with and without the `console` cargo feature
#          (`--no-default-features`), both stripped: the byte difference.
#   rss    the two binaries side by side, each running the same 20 datagen
#          pipelines (100 events/s each, discard sink) with the history
#          sampled every second; the one with the console is read as an open
#          console reads it (every 2 s: /pipelines, /history and one pipeline
#          page's routes; the page and its assets every 10 s), the one
#          without gets /pipelines every 2 s (any API client). Prints both
#          RSS every minute for SECS seconds (default 3660: at a 1 s
#          resolution the rings hold one hour, 3600 samples, so they are
#          full at the end; the script checks it).
#   load   the console page, every asset and the first data fetched on
#          loopback, a new connection per file, 20 times: median and worst.
#          (The browser's own figure, Navigation Timing in headless
#          Chromium, is printed and asserted by the browser test:
#          `cargo test -p deltaforge --test it -- console::`.)
#
# Usage: bash bench/console.sh [size|rss|load|all] [SECS]   (default: all)
#        WITH=bin WITHOUT=bin skip the release builds (e.g. debug binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
SECS=${2:-3660}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/console-bench
mkdir -p "$OUT"

build() {
  if [ -n "${WITH:-}" ] && [ -n "${WITHOUT:-}" ]; then return; fi
  cargo build --release -p deltaforge --no-default-features --quiet
  cp "$TARGET/release/deltaforge" "$OUT/deltaforge-without-console"
  cargo build --release -p deltaforge --quiet
  cp "$TARGET/release/deltaforge" "$OUT/deltaforge-with-console"
  WITH=$OUT/deltaforge-with-console
  WITHOUT=$OUT/deltaforge-without-console
}

size() {
  strip -o "$OUT/with.stripped" "$WITH"
  strip -o "$OUT/without.stripped" "$WITHOUT"
  local a b
  a=$(stat -c %s "$OUT/with.stripped")
  b=$(stat -c %s "$OUT/without.stripped")
  echo "stripped binary with the console:    $a bytes ($WITH)"
  echo "stripped binary without the console: $b bytes ($WITHOUT)"
  echo "the console adds:                    $((a - b)) bytes"
  echo "of which embedded files: $(cat crates/control/console/src/* crates/control/console/vendor/* | wc -c) bytes"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
WORK=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT

# start BIN DIR: runs BIN with 20 datagen pipelines; sets PID and API.
start() {
  local bin=$1 dir=$2 i
  mkdir -p "$dir"
  : >"$dir/pipelines.yaml"
  for i in $(seq 1 20); do
    cat >>"$dir/pipelines.yaml" <<YAML
---
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: p$i }
spec:
  source: { type: datagen, config: { id: p$i, rate: 100 } }
  sinks: [ { type: discard, config: { id: d } } ]
YAML
  done
  local port mport
  port=$(free_port)
  mport=$(free_port)
  API=http://127.0.0.1:$port
  "$bin" run --config "$dir/pipelines.yaml" --storage-path "$dir/df.db" --api-addr "127.0.0.1:$port" \
    --metrics-addr "127.0.0.1:$mport" --history-resolution-secs 1 --log-level warn >"$dir/df.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 1 300); do curl -fs "$API/health" >/dev/null && return; sleep 0.1; done
  echo "$bin did not come up:" >&2
  cat "$dir/df.log" >&2
  exit 1
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

rss() {
  WORK=${WORK:-$(mktemp -d /tmp/deltaforge-console-bench.XXXXXX)}
  start "$WITH" "$WORK/with"
  local pid_with=$PID api_with=$API
  start "$WITHOUT" "$WORK/without"
  local pid_without=$PID api_without=$API
  if curl -fs "$api_without/" >/dev/null; then echo "$WITHOUT serves a console: not a build without it" >&2; exit 1; fi
  echo "elapsed_s  rss_with_console_KiB  rss_without_console_KiB  difference_KiB"
  local begin i=0 next=0 now a b
  begin=$(date +%s)
  while :; do
    now=$(($(date +%s) - begin))
    if [ "$now" -ge "$next" ]; then
      a=$(rss_kib "$pid_with")
      b=$(rss_kib "$pid_without")
      printf '%9d  %20d  %23d  %14d\n' "$now" "$a" "$b" $((a - b))
      next=$((next + 60))
    fi
    [ "$now" -ge "$SECS" ] && break
    if [ $((i % 5)) -eq 0 ]; then
      for f in / /console/app.js /console/core.js /console/list.js /console/pipeline.js /console/edit.js /console/app.css /console/uplot.min.js /console/uplot.min.css; do
        curl -fs "$api_with$f" >/dev/null
      done
    fi
    for p in /pipelines "/history?minutes=10" /pipelines/p1 /pipelines/p1/history /pipelines/p1/snapshot \
      /pipelines/p1/dlq /pipelines/p1/checkpoint/stored; do
      curl -fs "$api_with$p" >/dev/null
    done
    curl -fs "$api_without/pipelines" >/dev/null
    i=$((i + 1))
    sleep 2
  done
  local held
  held=$(curl -fs "$api_with/pipelines/p1/history" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["samples"]))')
  echo "samples in p1's ring at the end: $held (full at 3600, one hour at 1 s)"
  echo "ring memory when full: 20 pipelines x 3600 samples x 16 B = $((20 * 3600 * 16 / 1024)) KiB"
}

load() {
  WORK=${WORK:-$(mktemp -d /tmp/deltaforge-console-bench.XXXXXX)}
  start "$WITH" "$WORK/load"
  python3 - "$API" <<'PY'
import statistics, sys, time, urllib.request
api = sys.argv[1]
paths = ["/", "/console/uplot.min.css", "/console/app.css", "/console/uplot.min.js", "/console/app.js", "/console/core.js", "/console/list.js", "/console/pipeline.js", "/console/edit.js",
         "/pipelines", "/history?minutes=10"]
runs = []
for _ in range(20):
    t = time.perf_counter()
    for p in paths:
        urllib.request.urlopen(api + p).read()
    runs.append((time.perf_counter() - t) * 1000)
print(f"page + every asset + first data, 20 runs: median {statistics.median(runs):.1f} ms, worst {max(runs):.1f} ms")
PY
  kill "$PID"
  wait "$PID" 2>/dev/null || true
}

case $WHAT in
  size) build; size ;;
  rss) build; rss ;;
  load) build; load ;;
  all) build; size; load; rss ;;
  *) echo "usage: bash bench/console.sh [size|rss|load|all] [SECS]" >&2; exit 2 ;;
esac
