#!/usr/bin/env bash
# Benchmark of the PostgreSQL snapshot: read a ROWS-row table into the
# `file` sink with `snapshot: { mode: initial_only }` (chunked, watermarked,
# while the stream runs), and, in the same run, the rate at which the server
# itself exports the same table with `COPY (SELECT …) TO STDOUT` into
# /dev/null (psql's \copy; the physical limit). Prints rows/s, the ratio and
# deltaforge's peak RSS, medians of REPS runs. The issue's target is a
# ratio of at least 0.5.
#
# usage: bench/snapshot.sh                     (ROWS=1000000 REPS=3 CHUNK=10000)
#        ROWS=20000 REPS=1 DF_BIN=target/debug/deltaforge bench/snapshot.sh
#            (a quick check of the script with an already built binary;
#             without DF_BIN the release binary is built first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
REPS="${REPS:-3}"
CHUNK="${CHUNK:-10000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

URL="$("$ROOT/scripts/services/postgres.sh")"
echo "PostgreSQL: $URL" >&2
if [ -n "${DF_BIN:-}" ]; then
  BIN="$DF_BIN"
else
  echo "building deltaforge (release)…" >&2
  (cd "$ROOT" && cargo build --release -q -p deltaforge)
  BIN="$CARGO_TARGET_DIR/release/deltaforge"
fi
WORK="$(mktemp -d /tmp/deltaforge-bench-snap.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

sql() { psql "$URL" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
drop_slot() { sql "SELECT pg_drop_replication_slot('$1') FROM pg_replication_slots WHERE slot_name = '$1'" >/dev/null; }

echo "creating bench_snap with $ROWS rows…" >&2
sql "SET client_min_messages = warning; DROP TABLE IF EXISTS bench_snap; DROP PUBLICATION IF EXISTS bench_snap;" >/dev/null
sql "CREATE TABLE bench_snap (id bigint PRIMARY KEY, name text, amount numeric(12,2), created_at timestamptz);
     INSERT INTO bench_snap SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(1, $ROWS) g;
     CREATE PUBLICATION bench_snap FOR TABLE bench_snap;" >/dev/null
sql "VACUUM ANALYZE bench_snap" >/dev/null

printf '%-6s %16s %16s %8s %12s\n' "rep" "snapshot rows/s" "COPY rows/s" "ratio" "peak RSS MB"
df_rates=(); copy_rates=(); rss=()
for r in $(seq 1 "$REPS"); do
  # The server's limit: COPY of the same table to /dev/null through psql.
  t0=$(date +%s.%N)
  psql "$URL" -X -q -v ON_ERROR_STOP=1 -c "\\copy (SELECT * FROM bench_snap) TO '/dev/null'"
  copy=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)

  # deltaforge: snapshot → file, until every row is in the file.
  slot="bench_snap_$r"
  drop_slot "$slot"
  out="$WORK/out-$r.jsonl"
  cat >"$WORK/p.yaml" <<EOF
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-snap, tenant: bench }
spec:
  source:
    type: postgres
    config: { id: bench-snap-$r, dsn: '$URL', tables: [public.bench_snap], slot: $slot, publication: bench_snap,
              snapshot: { mode: initial_only, chunk_size: $CHUNK } }
  sinks:
    - type: file
      config: { id: out, path: $out }
  batch: { max_events: 4000, max_bytes: 4194304, max_ms: 100 }
EOF
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" run --config "$WORK/p.yaml" --storage-path "$WORK/state-$r/df.db" \
    --api-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 2>"$WORK/df.log" &
  tpid=$!
  while :; do
    n=$( (wc -l <"$out") 2>/dev/null || echo 0)
    [ "$n" -ge "$ROWS" ] && break
    if ! kill -0 "$tpid" 2>/dev/null; then echo "deltaforge exited early:" >&2; tail -20 "$WORK/df.log" >&2; exit 1; fi
    sleep 0.1
  done
  dfr=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
  for c in $(pgrep -P "$tpid"); do kill -TERM "$c" 2>/dev/null || true; done
  wait "$tpid" || true
  reads=$(grep -c '"op":"r"' "$out" || true)
  if [ "$reads" -ne "$ROWS" ]; then echo "expected $ROWS r events, found $reads" >&2; exit 1; fi
  kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  mb=$((kb / 1024))
  rm -f "$out"
  drop_slot "$slot"
  printf '%-6s %16s %16s %8s %12s\n' "$r" "$dfr" "$copy" "$(echo "scale=2; $dfr / $copy" | bc)" "$mb"
  df_rates+=("$dfr"); copy_rates+=("$copy"); rss+=("$mb")
done
mdf=$(printf '%s\n' "${df_rates[@]}" | median)
mcopy=$(printf '%s\n' "${copy_rates[@]}" | median)
mrss=$(printf '%s\n' "${rss[@]}" | median)
echo
printf '%-6s %16s %16s %8s %12s\n' "median" "$mdf" "$mcopy" "$(echo "scale=2; $mdf / $mcopy" | bc)" "$mrss"
sql "DROP PUBLICATION IF EXISTS bench_snap; DROP TABLE IF EXISTS bench_snap" >/dev/null
