#!/usr/bin/env bash
# Benchmark of the snapshot: read a ROWS-row table with `snapshot: { mode:
# initial_only }` (chunked, watermarked, while the stream runs) into the
# SINK (`discard`, the default: events built and delivered, then dropped,
# as the server's export drops its rows in /dev/null; or `file`: JSON lines
# written to disk, bound by the file sink's own rate), and, in the same run,
# the rate at which the server itself exports the same table into /dev/null:
# PostgreSQL `COPY (SELECT …) TO STDOUT` (psql's \copy), MariaDB
# `mariadb-dump --single-transaction --quick`.
# Prints rows/s, the ratio and deltaforge's peak RSS per repetition and the
# medians of REPS runs, for each source in SOURCES. The issue's target is a
# ratio of at least 0.5. Start-up (connecting, creating the slot) is inside
# deltaforge's time.
#
# usage: bench/snapshot.sh     (ROWS=1000000 REPS=3 CHUNK=10000 SOURCES="postgres mariadb" SINK=discard)
#        ROWS=20000 REPS=1 DF_BIN=target/debug/deltaforge bench/snapshot.sh
#            (a quick check of the script with an already built binary;
#             without DF_BIN the release binary is built first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
REPS="${REPS:-3}"
CHUNK="${CHUNK:-10000}"
SINK="${SINK:-discard}"
SOURCES="${SOURCES:-postgres mariadb}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

if [ -n "${DF_BIN:-}" ]; then
  BIN="$DF_BIN"
else
  echo "building deltaforge (release)…" >&2
  (cd "$ROOT" && cargo build --release -q -p deltaforge)
  BIN="$CARGO_TARGET_DIR/release/deltaforge"
fi
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
WORK="$(mktemp -d /tmp/deltaforge-bench-snap.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { printf '%-9s %-6s %16s %16s %8s %12s\n' "$@"; }

# Writes the pipeline of source type $1 with source config $2 to $WORK/p.yaml.
pipeline() {
  cat >"$WORK/p.yaml" <<EOF
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-snap, tenant: bench }
spec:
  source:
    type: $1
    config: $2
  sinks:
    - type: $SINK
      config: { id: out$([ "$SINK" = file ] && echo ", path: $WORK/out.jsonl") }
  batch: { max_events: 4000, max_bytes: 4194304, max_ms: 100 }
EOF
}

# Runs $WORK/p.yaml until every row is in the file; prints "rows/s peakMB".
run_df() {
  local state="$1" out="$WORK/out.jsonl" t0 tpid dfr kb reads
  rm -f "$out"
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" run --config "$WORK/p.yaml" --storage-path "$state/df.db" \
    --api-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 2>"$WORK/df.log" &
  tpid=$!
  if [ "$SINK" = file ]; then
    wait_lines "$out" "$ROWS" "$tpid" "$WORK/df.log" 0.1
    dfr=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
    for c in $(pgrep -P "$tpid"); do kill -TERM "$c" 2>/dev/null || true; done
    wait "$tpid" || true
    reads=$(grep -c '"op":"r"' "$out" || true)
  else
    # initial_only: the pipeline finishes by itself once every row is
    # delivered and the table's progress stored; its log counts the events.
    wait "$tpid" || { echo "deltaforge failed:" >&2; tail -20 "$WORK/df.log" >&2; exit 1; }
    dfr=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
    reads=$(sed -n 's/.*pipeline finished.* events=\([0-9]*\).*/\1/p' "$WORK/df.log" | tail -1)
  fi
  if [ "${reads:-0}" -ne "$ROWS" ]; then echo "expected $ROWS r events, found ${reads:-none}" >&2; exit 1; fi
  kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  rm -f "$out"
  echo "$dfr $((kb / 1024))"
}

record() {
  row "$1" "$2" "$3" "$4" "$(echo "scale=2; $3 / $4" | bc)" "$5"
  echo "$3" >>"$WORK/df_rates"; echo "$4" >>"$WORK/ref_rates"; echo "$5" >>"$WORK/rss"
}

summary() {
  local mdf mref
  mdf=$(median <"$WORK/df_rates"); mref=$(median <"$WORK/ref_rates")
  row "$1" "median" "$mdf" "$mref" "$(echo "scale=2; $mdf / $mref" | bc)" "$(median <"$WORK/rss")"
  : >"$WORK/df_rates"; : >"$WORK/ref_rates"; : >"$WORK/rss"
}

bench_postgres() {
  local url
  url="$("$ROOT/scripts/services/postgres.sh")"
  echo "PostgreSQL: $url" >&2
  sql() { psql "$url" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
  drop_slot() { sql "SELECT pg_drop_replication_slot('$1') FROM pg_replication_slots WHERE slot_name = '$1'" >/dev/null; }
  echo "creating public.bench_snap with $ROWS rows…" >&2
  sql "SET client_min_messages = warning; DROP TABLE IF EXISTS bench_snap; DROP PUBLICATION IF EXISTS bench_snap;" >/dev/null
  sql "CREATE TABLE bench_snap (id bigint PRIMARY KEY, name text, amount numeric(12,2), created_at timestamptz);
       INSERT INTO bench_snap SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(1, $ROWS) g;
       CREATE PUBLICATION bench_snap FOR TABLE bench_snap;" >/dev/null
  sql "VACUUM ANALYZE bench_snap" >/dev/null
  for r in $(seq 1 "$REPS"); do
    local t0 copy slot="bench_snap_$r" dfr mb
    t0=$(date +%s.%N)
    psql "$url" -X -q -v ON_ERROR_STOP=1 -c "\\copy (SELECT * FROM bench_snap) TO '/dev/null'"
    copy=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
    drop_slot "$slot"
    pipeline postgres "{ id: bench-snap-pg-$r, dsn: '$url', tables: [public.bench_snap], slot: $slot, publication: bench_snap, snapshot: { mode: initial_only, chunk_size: $CHUNK } }"
    read -r dfr mb < <(run_df "$WORK/state-pg-$r")
    drop_slot "$slot"
    record postgres "$r" "$dfr" "$copy" "$mb"
  done
  summary postgres
  sql "DROP PUBLICATION IF EXISTS bench_snap; DROP TABLE IF EXISTS bench_snap" >/dev/null
}

bench_mariadb() {
  local url rest auth hostpart user pass hostport db host port
  url="$("$ROOT/scripts/services/mariadb.sh")"
  echo "MariaDB: $url" >&2
  rest="${url#*://}"; auth="${rest%@*}"; hostpart="${rest##*@}"
  user="${auth%%:*}"; pass="${auth#*:}"; hostport="${hostpart%%/*}"; db="${hostpart#*/}"
  host="${hostport%:*}"; port="${hostport##*:}"
  my() { mariadb --protocol=TCP -h "$host" -P "$port" -u "$user" "-p$pass" -N -B "$db" -e "$1"; }
  echo "creating $db.bench_snap with $ROWS rows…" >&2
  my "DROP TABLE IF EXISTS bench_snap;
      CREATE TABLE bench_snap (id BIGINT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), created_at TIMESTAMP NULL);
      INSERT INTO bench_snap SELECT seq, CONCAT('name ', seq), seq * 1.5, NOW() FROM seq_1_to_$ROWS;
      ANALYZE TABLE bench_snap;" >/dev/null
  for r in $(seq 1 "$REPS"); do
    local t0 dump dfr mb
    t0=$(date +%s.%N)
    mariadb-dump --protocol=TCP -h "$host" -P "$port" -u "$user" "-p$pass" --single-transaction --quick \
      --skip-lock-tables --no-create-info "$db" bench_snap >/dev/null
    dump=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
    pipeline mysql "{ id: bench-snap-my-$r, dsn: '$url', tables: [$db.bench_snap], snapshot: { mode: initial_only, chunk_size: $CHUNK } }"
    read -r dfr mb < <(run_df "$WORK/state-my-$r")
    record mariadb "$r" "$dfr" "$dump" "$mb"
  done
  summary mariadb
  my "DROP TABLE IF EXISTS bench_snap" >/dev/null
}

: >"$WORK/df_rates"; : >"$WORK/ref_rates"; : >"$WORK/rss"
echo "snapshot benchmark: $(nproc) cores, $(date -u +%FT%TZ), $ROWS rows, chunk_size $CHUNK, sink $SINK"
row "source" "rep" "snapshot rows/s" "server rows/s" "ratio" "peak RSS MB"
for src in $SOURCES; do
  case "$src" in
    postgres | mariadb) "bench_$src" ;;
    *) echo "unknown source $src (postgres, mariadb)" >&2; exit 2 ;;
  esac
done
