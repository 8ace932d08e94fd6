#!/usr/bin/env bash
# Benchmark of the Redis Streams and NATS JetStream sinks: datagen → redis
# and datagen → nats (native envelope) in a release build, with SQLite
# checkpoints. Prints events/s and deltaforge's peak RSS (medians of RUNS,
# default 3), and beside them the servers' own limits measured in the same
# run:
#   - Redis: redis-benchmark pipelining XADD (-P 64) with the same four
#     fields (id, op, key, value) and a value of the same size as the
#     envelope deltaforge writes;
#   - NATS: Debian ships no `nats` CLI (so no `nats bench`); no load tool of
#     the server's own is available, and only deltaforge's figure is printed.
#
# Usage: bash bench/rnh.sh [EVENTS]   (default 500,000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500000}
RUNS=${RUNS:-3}
REDIS_URL=$(bash scripts/services/redis.sh start | tail -n1)
NATS_URL=$(bash scripts/services/nats.sh start | tail -n1)
REDIS_PORT=${REDIS_URL##*:}
cargo build --release -p deltaforge --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/deltaforge
WORK=$(mktemp -d /tmp/deltaforge-bench-rnh.XXXXXX)
TAG="rnhbench$$"
cleanup() {
  redis-cli -p "$REDIS_PORT" --scan --pattern "$TAG*" | xargs -r redis-cli -p "$REDIS_PORT" DEL >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (peak RSS)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi

config() { # name sink-yaml
  cat > "$WORK/$1.yaml" <<YAML
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-$1 }
spec:
  source:
    type: datagen
    config: { id: bench-$1, count: $N, rows_per_tx: 1 }
  sinks:
    - $2
  batch: { max_events: 4096, max_bytes: 16777216, max_ms: 50, max_inflight: 4 }
YAML
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run() { # name before-each-run-function after-each-run-function (both get the run number)
  local rates=() rss=()
  for i in $(seq "$RUNS"); do
    rm -f "$WORK/$1.db"*
    "$2" "$i"
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$WORK/time.txt" "$BIN" --log-level warn run --config "$WORK/$1.yaml" --storage-path "$WORK/$1.db"
    end=$(date +%s.%N)
    rates+=("$(echo "$N / ($end - $start)" | bc -l | cut -d. -f1)")
    rss+=("$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print int($2/1024)}' "$WORK/time.txt")")
    "$3" "$i"
  done
  echo "$1: $(printf '%s\n' "${rates[@]}" | median) events/s (runs: ${rates[*]}), peak RSS $(printf '%s\n' "${rss[@]}" | median) MB (runs: ${rss[*]})"
}

echo "deltaforge redis/nats sink benchmark: $N events, $(nproc) cores, $(date -u +%FT%TZ)"

# Redis: deltaforge, then redis-benchmark with a value of the same size.
redis_before() {
  redis-cli -p "$REDIS_PORT" DEL "$TAG.orders" >/dev/null
  config redis "{ type: redis, config: { id: out, uri: \"$REDIS_URL\", stream: \"$TAG.\${table}\" } }"
}
redis_after() { :; }
run redis redis_before redis_after
value_len=$(redis-cli -p "$REDIS_PORT" XREVRANGE "$TAG.orders" + - COUNT 1 | sed -n 9p | wc -c)
redis-cli -p "$REDIS_PORT" DEL "$TAG.orders" >/dev/null
value=$(head -c "$value_len" /dev/zero | tr '\0' 'x')
for clients in 1 4; do
  limits=()
  for i in $(seq "$RUNS"); do
    redis-cli -p "$REDIS_PORT" DEL "$TAG.limit" >/dev/null
    out=$(redis-benchmark -p "$REDIS_PORT" -n "$N" -P 64 -c "$clients" -q XADD "$TAG.limit" '*' id "bench-redis:123456:0" op c key '{"id":123456}' value "$value" 2>&1)
    limits+=("$(echo "$out" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -n1 | cut -d. -f1 | cut -d' ' -f1)")
  done
  echo "redis limit (redis-benchmark XADD -P 64 -c $clients, 4 fields, value $value_len bytes): $(printf '%s\n' "${limits[@]}" | median) XADD/s (runs: ${limits[*]})"
done
redis-cli -p "$REDIS_PORT" DEL "$TAG.limit" >/dev/null

# NATS JetStream: a fresh stream per run (create_stream: true), deleted
# afterwards through the JetStream API spoken over a raw socket (no CLI).
NATS_PORT=${NATS_URL##*:}
nats_delete() { # stream
  exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT"
  printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s _INBOX.rnhbench 0\r\n\r\nPING\r\n' "$1" >&3
  timeout 5 grep -q -m1 PONG <&3 || true
  exec 3<&-
}
nats_before() {
  config nats "{ type: nats, config: { id: out, url: \"$NATS_URL\", subject: \"$TAG$1.\${table}\", stream: \"$TAG$1\", create_stream: true } }"
}
nats_after() { nats_delete "$TAG$1"; }
run nats nats_before nats_after
echo "nats limit: not measured: Debian ships no nats CLI (no \`nats bench\`) and no other load tool of the server's own is installed"
