#!/usr/bin/env bash
# Benchmark of the Kafka sink: datagen → kafka (idempotent producer,
# acks=all, native envelope) in a release build, beside Kafka's own load
# tool (org.apache.kafka.tools.ProducerPerformance, i.e.
# kafka-producer-perf-test) on the same broker with the same record size
# and the same producer settings, as the physical limit. Prints events/s
# and deltaforge's peak RSS, medians of RUNS (default 3) runs each.
#
# Usage: bash bench/kafka.sh [EVENTS]   (default 1,000,000)
#        EXACTLY_ONCE=true bash bench/kafka.sh   — the transactional mode
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
RUNS=${RUNS:-3}
EOS=${EXACTLY_ONCE:-false}
BROKERS=$(bash scripts/services/kafka.sh start | tail -n1)
LIB=$(cd "$(dirname "$0")/.." && pwd)/.services/kafka/lib
[ -d "$LIB" ] || { echo "no Kafka jars in $LIB (scripts/services/kafka.sh should have fetched them)" >&2; exit 1; }
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo build --release -p deltaforge --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/deltaforge
WORK=$(mktemp -d /tmp/deltaforge-bench-kafka.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (peak RSS)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi
STAMP=$(date +%s)

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
  batch: { max_events: 8192, max_bytes: 16777216, max_ms: 50, max_inflight: 4 }
YAML
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Record size: the average native envelope datagen produces.
config size "{ type: file, config: { id: out, path: $WORK/size.jsonl } }" 10000
"$BIN" --log-level warn run --config "$WORK/size.yaml" --storage-path "$WORK/size.db"
SIZE=$(( $(stat -c %s "$WORK/size.jsonl") / 10000 - 1 ))

echo "deltaforge kafka benchmark: $(nproc) cores, $(date -u +%FT%TZ), $N events of ~$SIZE bytes, exactly_once=$EOS, broker $BROKERS"

rates=() rss=()
for i in $(seq "$RUNS"); do
  topic="bench-df-$STAMP-$i"
  config "df$i" "{ type: kafka, config: { id: out, brokers: \"$BROKERS\", topic: $topic, exactly_once: $EOS } }" "$N"
  start=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" --log-level warn run --config "$WORK/df$i.yaml" --storage-path "$WORK/df$i.db"
  end=$(date +%s.%N)
  rates+=("$(echo "$N / ($end - $start)" | bc -l | cut -d. -f1)")
  rss+=("$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print int($2/1024)}' "$WORK/time.txt")")
done
df_rate=$(printf '%s\n' "${rates[@]}" | median)
echo "deltaforge datagen → kafka: $df_rate events/s (runs: ${rates[*]}), peak RSS $(printf '%s\n' "${rss[@]}" | median) MB (runs: ${rss[*]})"

limits=()
for i in $(seq "$RUNS"); do
  topic="bench-perf-$STAMP-$i"
  out=$(java -Xmx512m -cp "$LIB/*" org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$N" \
    --record-size "$SIZE" --throughput -1 \
    --producer-props bootstrap.servers="$BROKERS" acks=all enable.idempotence=true linger.ms=5 2>/dev/null | tail -n1)
  limits+=("$(echo "$out" | sed -n 's/.* \([0-9.]*\) records\/sec.*/\1/p' | cut -d. -f1)")
done
limit=$(printf '%s\n' "${limits[@]}" | median)
echo "kafka-producer-perf-test (same broker, $SIZE-byte records, acks=all, idempotent): $limit records/s (runs: ${limits[*]})"
echo "ratio deltaforge / limit: $(echo "scale=2; $df_rate / $limit" | bc -l)"
