#!/usr/bin/env bash
# Benchmark of the `postgres` source: drain a backlog of ROWS row changes
# (written while the pipeline is stopped, in transactions of 100 and of 1
# rows) to the `file` sink, and, in the same run, the rate at which
# pg_recvlogical with pgoutput reads the same backlog into /dev/null (the
# server's own limit), each over TLS (sslmode=prefer) and plain TCP. Prints
# events/s, CPU seconds (user + system) and CPU µs per event, and
# deltaforge's peak RSS, medians of REPS runs.
#
# usage: bench/pg.sh            (ROWS=1000000 REPS=3 TX_SIZES="100 1" by default)
#        ROWS=200000 REPS=1 SSLMODES=prefer bench/pg.sh   (a quick look)
#        SKIP_BUILD=1 bench/pg.sh   (use the release binary already built)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
REPS="${REPS:-3}"
TX_SIZES="${TX_SIZES:-100 1}"
# sslmode of both readers: prefer (the default: TLS, as the test server
# serves it) and disable (plain TCP).
SSLMODES="${SSLMODES:-prefer disable}"
PGBIN=/usr/lib/postgresql/15/bin
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

URL="$("$ROOT/scripts/services/postgres.sh")"
PORT="${URL##*:}"; PORT="${PORT%%/*}"
echo "PostgreSQL: $URL" >&2
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building deltaforge (release)…" >&2
  (cd "$ROOT" && cargo build --release -q -p deltaforge)
fi
BIN="$CARGO_TARGET_DIR/release/deltaforge"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
WORK="$(mktemp -d /tmp/deltaforge-bench-pg.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

sql() { psql "$URL" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

sql "DROP TABLE IF EXISTS bench_pg; DROP PUBLICATION IF EXISTS bench_pg;" >/dev/null
sql "CREATE TABLE bench_pg (id bigint PRIMARY KEY, name text, amount numeric(12,2), created_at timestamptz);
     CREATE PUBLICATION bench_pg FOR TABLE bench_pg;
     CREATE OR REPLACE PROCEDURE bench_pg_fill(n bigint, per_tx int) LANGUAGE plpgsql AS \$\$
     DECLARE i bigint := 0;
     BEGIN
       WHILE i < n LOOP
         INSERT INTO bench_pg SELECT g, 'name ' || g, g * 1.5, now()
           FROM generate_series(i + 1, least(i + per_tx, n)) g;
         i := i + per_tx;
         COMMIT;
       END LOOP;
     END \$\$;" >/dev/null

hdr() { printf '%-7s %-8s %-6s %12s %12s %6s %8s %8s %8s %7s\n' tx_rows sslmode rep "df ev/s" "recv ev/s" ratio "df cpu s" "df µs/ev" "recv cpu" "RSS MB"; }
row() { printf '%-7s %-8s %-6s %12s %12s %6s %8s %8s %8s %7s\n' "$@"; }
hdr
summary=()
for TX in $TX_SIZES; do
  sql "TRUNCATE bench_pg" >/dev/null
  # One slot per run, for the engine and for pg_recvlogical, created before
  # the backlog so that each reads all of it.
  for mode in $SSLMODES; do
    for r in $(seq 1 "$REPS"); do
      for kind in df raw; do
        slot="bench_${kind}_${mode}_$r"
        sql "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
        sql "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
      done
    done
  done
  echo "writing $ROWS rows in transactions of $TX…" >&2
  t0=$(date +%s.%N)
  sql "CALL bench_pg_fill($ROWS, $TX)" >/dev/null
  echo "  written in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
  # A non-transactional logical message right after the backlog: its LSN is
  # where pg_recvlogical stops (it receives it with messages=true), so it
  # need not wait for a server keepalive past the backlog's end.
  ENDPOS="$(sql "SELECT pg_logical_emit_message(false, 'bench-end', '')")"
  for mode in $SSLMODES; do
    df_rates=(); raw_rates=(); rss=(); df_cpus=(); raw_cpus=()
    for r in $(seq 1 "$REPS"); do
      # Server limit: pg_recvlogical to /dev/null up to the backlog's end,
      # over the same kind of connection (TLS or not).
      t0=$(date +%s.%N)
      /usr/bin/time -v -o "$WORK/raw-time.txt" "$PGBIN/pg_recvlogical" \
        -d "host=127.0.0.1 port=$PORT user=postgres dbname=deltaforge sslmode=$mode" --start --slot "bench_raw_${mode}_$r" \
        --plugin pgoutput -o proto_version=1 -o publication_names=bench_pg -o messages=true -f /dev/null --endpos "$ENDPOS" --no-loop
      raw=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
      rawcpu=$(time_cpu_s "$WORK/raw-time.txt")

      # deltaforge: postgres → file, until every row is in the file.
      out="$WORK/out-$TX-$r.jsonl"
      cat >"$WORK/p.yaml" <<EOF
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-pg, tenant: bench }
spec:
  source:
    type: postgres
    config: { id: bench-pg-$TX-$mode-$r, dsn: '$URL?sslmode=$mode', tables: [public.bench_pg], slot: bench_df_${mode}_$r, publication: bench_pg, snapshot: { mode: never } }
  sinks:
    - type: file
      config: { id: out, path: $out }
  batch: { max_events: 4000, max_bytes: 4194304, max_ms: 100 }
EOF
      t0=$(date +%s.%N)
      /usr/bin/time -v -o "$WORK/time.txt" "$BIN" run --config "$WORK/p.yaml" --storage-path "$WORK/state-$TX-$mode-$r/df.db" \
        2>"$WORK/df.log" &
      tpid=$!
      wait_lines "$out" "$ROWS" "$tpid" "$WORK/df.log" 0.2
      dfr=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
      for c in $(pgrep -P "$tpid"); do kill -TERM "$c"; done
      wait "$tpid" || true
      mb=$(time_rss_mb "$WORK/time.txt")
      cpu=$(time_cpu_s "$WORK/time.txt")
      rm -f "$out"
      # shellcheck disable=SC2046
      row "$TX" "$mode" "$r" $(reader_cols "$dfr" "$raw" "$cpu" "$rawcpu" "$mb")
      df_rates+=("$dfr"); raw_rates+=("$raw"); rss+=("$mb"); df_cpus+=("$cpu"); raw_cpus+=("$rawcpu")
    done
    # shellcheck disable=SC2046
    summary+=("$(row "$TX" "$mode" median $(reader_cols "$(median_of "${df_rates[@]}")" "$(median_of "${raw_rates[@]}")" \
      "$(median_of "${df_cpus[@]}")" "$(median_of "${raw_cpus[@]}")" "$(median_of "${rss[@]}")"))")
    for r in $(seq 1 "$REPS"); do
      for kind in df raw; do
        sql "SELECT pg_drop_replication_slot('bench_${kind}_${mode}_$r')" >/dev/null || true
      done
    done
  done
done
echo
hdr
printf '%s\n' "${summary[@]}"
sql "DROP PUBLICATION IF EXISTS bench_pg; DROP TABLE IF EXISTS bench_pg; DROP PROCEDURE IF EXISTS bench_pg_fill" >/dev/null
