#!/usr/bin/env bash
# Benchmark of the `postgres` table sink. In one run, into fresh target
# databases on the test PostgreSQL:
#
#   copy      the target's own bulk ingest: `COPY … FROM` a file holding the
#             same ROWS rows (the limit);
#   pg-upsert a backlog of ROWS inserts (transactions of 100 rows) in a
#             PostgreSQL source table drained by postgres → postgres
#             (upsert mode, staging COPY + INSERT … ON CONFLICT);
#   pg-snap   the same ROWS rows as an initial snapshot (op `r`, bulk path);
#   my-upsert a backlog of ROWS inserts (100 rows per transaction) in
#             MariaDB drained by mysql → postgres.
#
# Prints rows/s, the ratio to `copy` and deltaforge's peak RSS, medians of
# REPS runs. Targets: upsert ≥ 0.5 × copy, snapshot ≥ 0.7 × copy, RSS < 150 MB.
#
# usage: bench/table_sink.sh              (ROWS=1000000 REPS=1 by default)
#        ROWS=200000 bench/table_sink.sh  (a quick look)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
REPS="${REPS:-1}"
CASES="${CASES:-copy pg-upsert pg-snap my-upsert}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

URL="$("$ROOT/scripts/services/postgres.sh" | tail -1)"
MYURL="$("$ROOT/scripts/services/mariadb.sh" | tail -1)"
BASE="${URL%/*}"
echo "PostgreSQL: $URL  MariaDB: $MYURL" >&2
echo "building deltaforge (release)…" >&2
(cd "$ROOT" && cargo build --release -q -p deltaforge)
BIN="$CARGO_TARGET_DIR/release/deltaforge"
WORK="$(mktemp -d /tmp/deltaforge-bench-table.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

sql() { psql "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"; }
my() { mariadb -h 127.0.0.1 -P "$(echo "$MYURL" | sed -E 's|.*:([0-9]+)/.*|\1|')" -u deltaforge -pdeltaforge deltaforge -N -e "$1"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
fresh_db() { sql "$URL" "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null; sql "$URL" "CREATE DATABASE $1" >/dev/null; echo "$BASE/$1"; }
COLS="(id bigint PRIMARY KEY, name text, amount numeric(12,2), created_at timestamptz)"

# run_df CONFIG TARGET_URL TABLE: runs deltaforge until TABLE in the target
# holds ROWS rows; prints "rows/s peak_MB".
run_df() {
  local cfg="$1" turl="$2" table="$3" state="${4:-$WORK/state-$RANDOM/df.db}" t0 n kb tpid
  t0=$(now)
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" run --config "$cfg" --storage-path "$state" 2>"$WORK/df.log" &
  tpid=$!
  while :; do
    n=$(sql "$turl" "SELECT CASE WHEN to_regclass('$table') IS NULL THEN 0 ELSE (SELECT count(*) FROM $table) END" 2>/dev/null || echo 0)
    [ "$n" -ge "$ROWS" ] && break
    if ! kill -0 "$tpid" 2>/dev/null; then echo "deltaforge exited early:" >&2; tail -20 "$WORK/df.log" >&2; exit 1; fi
    sleep 0.5
  done
  local rate; rate=$(echo "$ROWS / ($(now) - $t0)" | bc)
  for c in $(pgrep -P "$tpid"); do kill -TERM "$c"; done
  wait "$tpid" || true
  kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  echo "$rate $((kb / 1024))"
}

pipeline() { # NAME SOURCE_TYPE SOURCE_CONFIG TARGET_URL
  cat >"$WORK/$1.yaml" <<EOF
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: $1, tenant: bench }
spec:
  source:
    type: $2
    config: $3
  sinks:
    - type: postgres
      config: { id: replica, dsn: '$4', tables: { template: "replica.\${table}" } }
  batch: { max_events: 20000, max_bytes: 16777216, max_ms: 200 }
EOF
  echo "$WORK/$1.yaml"
}

# Source data, written once.
sql "$URL" "DROP TABLE IF EXISTS bench_ts; DROP PUBLICATION IF EXISTS bench_ts; CREATE TABLE bench_ts $COLS;
  CREATE PUBLICATION bench_ts FOR TABLE bench_ts;
  CREATE OR REPLACE PROCEDURE bench_ts_fill(n bigint, per_tx int) LANGUAGE plpgsql AS \$\$
  DECLARE i bigint := 0;
  BEGIN
    WHILE i < n LOOP
      INSERT INTO bench_ts SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(i + 1, least(i + per_tx, n)) g;
      i := i + per_tx; COMMIT;
    END LOOP;
  END \$\$;" >/dev/null
sql "$URL" "COPY (SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(1, $ROWS) g) TO STDOUT" >"$WORK/rows.tsv"

printf '%-10s %-4s %12s %10s %8s %12s\n' case rep "rows/s" "copy rows/s" ratio "peak RSS MB"
declare -A results
copy_rate=0
for r in $(seq 1 "$REPS"); do
  for c in $CASES; do
    tdb="bench_ts_${c//-/_}_$r"; turl=$(fresh_db "$tdb")
    case "$c" in
      copy)
        sql "$turl" "CREATE TABLE bench_copy $COLS" >/dev/null
        t0=$(now); sql "$turl" "\\copy bench_copy FROM '$WORK/rows.tsv'" >/dev/null
        rate=$(echo "$ROWS / ($(now) - $t0)" | bc); copy_rate=$rate; mb=-
        ;;
      pg-upsert)
        sql "$URL" "TRUNCATE bench_ts" >/dev/null
        sql "$URL" "SELECT pg_drop_replication_slot('bench_ts_up') FROM pg_replication_slots WHERE slot_name = 'bench_ts_up'" >/dev/null
        sql "$URL" "SELECT pg_create_logical_replication_slot('bench_ts_up', 'pgoutput')" >/dev/null
        sql "$URL" "CALL bench_ts_fill($ROWS, 100)" >/dev/null
        cfg=$(pipeline "bench-ts-up-$r" postgres "{ id: bench-ts-up-$r, dsn: '$URL', tables: [public.bench_ts], slot: bench_ts_up, publication: bench_ts, snapshot: { mode: never } }" "$turl")
        read -r rate mb < <(run_df "$cfg" "$turl" replica.bench_ts)
        sql "$URL" "SELECT pg_drop_replication_slot('bench_ts_up')" >/dev/null
        ;;
      pg-snap)
        sql "$URL" "TRUNCATE bench_ts; INSERT INTO bench_ts SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(1, $ROWS) g; ANALYZE bench_ts" >/dev/null
        cfg=$(pipeline "bench-ts-snap-$r" postgres "{ id: bench-ts-snap-$r, dsn: '$URL', tables: [public.bench_ts], slot: bench_ts_snap, publication: bench_ts, snapshot: { mode: initial, chunk_size: 20000 } }" "$turl")
        # The snapshot of a quiet table has no registered schema: the
        # target is created with the source's DDL (README).
        sql "$turl" "CREATE SCHEMA replica; CREATE TABLE replica.bench_ts $COLS" >/dev/null
        read -r rate mb < <(run_df "$cfg" "$turl" replica.bench_ts)
        sql "$URL" "SELECT pg_drop_replication_slot('bench_ts_snap')" >/dev/null || true
        ;;
      my-upsert)
        my "DROP TABLE IF EXISTS bench_ts; CREATE TABLE bench_ts (id BIGINT PRIMARY KEY, name TEXT, amount DECIMAL(12,2), created_at TIMESTAMP(6))"
        src="{ id: bench-ts-my-$r, dsn: '$MYURL', tables: [deltaforge.bench_ts], heartbeat_secs: 1, snapshot: { mode: never } }"
        cfg=$(pipeline "bench-ts-my-$r" mysql "$src" "$turl")
        # A first start stores a checkpoint at the binlog's end (heartbeats);
        # the backlog is written after it, then drained by a second start.
        state="$WORK/state-my-$r/df.db"
        "$BIN" run --config "$cfg" --storage-path "$state" 2>"$WORK/df-first.log" &
        first=$!
        for _ in $(seq 1 100); do
          [ -n "$(sqlite3 "$state" "SELECT 1 FROM kv WHERE namespace = 'checkpoints'" 2>/dev/null)" ] && break
          sleep 0.2
        done
        kill -TERM "$first"; wait "$first" || true
        if [ -z "$(sqlite3 "$state" "SELECT 1 FROM kv WHERE namespace = 'checkpoints'" 2>/dev/null)" ]; then
          echo "my-upsert: the first start stored no checkpoint; skipped" >&2; continue
        fi
        # The backlog: ROWS rows in transactions of 100, one client session.
        awk -v n="$ROWS" 'BEGIN { print "SET autocommit = 1;"; for (i = 0; i < n; i += 100)
            printf "INSERT INTO bench_ts SELECT seq, CONCAT(\x27name \x27, seq), seq * 1.5, NOW(6) FROM seq_%d_to_%d;\n", i + 1, (i + 100 < n ? i + 100 : n) }' |
          mariadb -h 127.0.0.1 -P "$(echo "$MYURL" | sed -E 's|.*:([0-9]+)/.*|\1|')" -u deltaforge -pdeltaforge deltaforge
        read -r rate mb < <(run_df "$cfg" "$turl" replica.bench_ts "$state")
        ;;
    esac
    printf '%-10s %-4s %12s %10s %8s %12s\n' "$c" "$r" "$rate" "$copy_rate" "$(echo "scale=2; $rate / $copy_rate" | bc)" "$mb"
    results[$c]+="$rate "
    sql "$URL" "DROP DATABASE IF EXISTS $tdb WITH (FORCE)" >/dev/null
  done
done
sql "$URL" "DROP PUBLICATION IF EXISTS bench_ts; DROP TABLE IF EXISTS bench_ts; DROP PROCEDURE IF EXISTS bench_ts_fill" >/dev/null
