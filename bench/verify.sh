#!/usr/bin/env bash
# Benchmark of `deltaforge verify` against a `postgres` table sink: a
# PostgreSQL table of ROWS rows (id bigint key, int, text, numeric,
# timestamptz) is replicated by an initial snapshot into a table sink on
# the same server (a fresh target database), the pipeline is stopped, then
# `deltaforge verify` runs twice:
#
#   hashes    chunk hashes per key range in SQL on both sides (the default);
#   full      --no-hashes: every row read from both sides and compared.
#
# Prints each run's wall seconds, peak RSS and verdict. Target (issue 16):
# hashes in less than half the full read's time.
#
# usage: bench/verify.sh                       (ROWS=2000000, release build)
#        PROFILE=debug ROWS=200000 bench/verify.sh   (the debug binary, no build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-2000000}"
PROFILE="${PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

URL="$("$ROOT/scripts/services/postgres.sh" | tail -1)"
BASE="${URL%/*}"
if [ "$PROFILE" = release ]; then
  echo "building deltaforge (release)…" >&2
  (cd "$ROOT" && cargo build --release -q -p deltaforge)
fi
BIN="$CARGO_TARGET_DIR/$PROFILE/deltaforge"
WORK="$(mktemp -d /tmp/deltaforge-bench-verify.XXXXXX)"
TDB=bench_vf_target
cleanup() {
  sql "$URL" "SELECT pg_drop_replication_slot('bench_vf') FROM pg_replication_slots WHERE slot_name = 'bench_vf'" >/dev/null 2>&1 || true
  sql "$URL" "DROP PUBLICATION IF EXISTS bench_vf; DROP TABLE IF EXISTS bench_vf" >/dev/null 2>&1 || true
  sql "$URL" "DROP DATABASE IF EXISTS $TDB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

sql() { psql "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"; }
now() { date +%s.%N; }
COLS="(id bigint PRIMARY KEY, v int NOT NULL, pad text, amount numeric(12,2), created_at timestamptz)"

echo "loading $ROWS rows…" >&2
sql "$URL" "SELECT pg_drop_replication_slot('bench_vf') FROM pg_replication_slots WHERE slot_name = 'bench_vf'" >/dev/null
sql "$URL" "DROP PUBLICATION IF EXISTS bench_vf; DROP TABLE IF EXISTS bench_vf; CREATE TABLE bench_vf $COLS;
  INSERT INTO bench_vf SELECT g, g % 1000, md5(g::text), g * 1.5, now() FROM generate_series(1, $ROWS) g;
  ANALYZE bench_vf; CREATE PUBLICATION bench_vf FOR TABLE bench_vf" >/dev/null
sql "$URL" "DROP DATABASE IF EXISTS $TDB WITH (FORCE)" >/dev/null
sql "$URL" "CREATE DATABASE $TDB" >/dev/null
TURL="$BASE/$TDB"
# The snapshot of a quiet table has no registered schema: the target is
# created with the source's DDL (README, table sinks).
sql "$TURL" "CREATE SCHEMA replica; CREATE TABLE replica.bench_vf $COLS" >/dev/null

cat >"$WORK/p.yaml" <<EOF
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-vf, tenant: bench }
spec:
  source:
    type: postgres
    config: { id: bench-vf, dsn: '$URL', tables: [public.bench_vf], slot: bench_vf, publication: bench_vf,
              snapshot: { mode: initial, chunk_size: 20000 } }
  sinks:
    - type: postgres
      config: { id: replica, dsn: '$TURL', tables: { template: "replica.\${table}" } }
  batch: { max_events: 20000, max_bytes: 16777216, max_ms: 200 }
EOF

echo "replicating into the table sink…" >&2
t0=$(now)
"$BIN" run --config "$WORK/p.yaml" --storage-path "$WORK/df.db" 2>"$WORK/df.log" &
pid=$!
while :; do
  n=$(sql "$TURL" "SELECT count(*) FROM replica.bench_vf" 2>/dev/null || echo 0)
  [ "$n" -ge "$ROWS" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then echo "deltaforge exited early:" >&2; tail -20 "$WORK/df.log" >&2; exit 1; fi
  sleep 1
done
sleep 2 # the checkpoint after the last batch
kill -TERM "$pid"; wait "$pid" || true
echo "replicated in $(echo "$(now) - $t0" | bc) s" >&2

# run_verify NAME ARGS…: prints "NAME seconds peak_MB verdict".
run_verify() {
  local name="$1"; shift
  local t0 rc=0 kb secs
  t0=$(now)
  /usr/bin/time -v -o "$WORK/time-$name.txt" "$BIN" verify --config "$WORK/p.yaml" --storage-path "$WORK/df.db" \
    bench-vf --catch-up-secs 10 "$@" >"$WORK/report-$name.txt" 2>"$WORK/verify-$name.log" || rc=$?
  secs=$(echo "$(now) - $t0" | bc)
  kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time-$name.txt")
  printf '%-8s %10.1f %12s %s\n' "$name" "$secs" "$((kb / 1024))" "$(head -1 "$WORK/report-$name.txt") (exit $rc)"
  grep -h "compared by" "$WORK/report-$name.txt" >&2 || true
}

printf '%-8s %10s %12s %s\n' run seconds "peak RSS MB" verdict
run_verify hashes
run_verify full --no-hashes
