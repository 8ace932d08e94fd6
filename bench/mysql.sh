#!/usr/bin/env bash
# Benchmark of the `mysql` source on MariaDB: drain a backlog of ROWS row
# changes (written while the pipeline is stopped, in transactions of 100 and
# of 1 rows) to the `file` sink, and, in the same run, the rate at which
# `mariadb-binlog --read-from-remote-server` reads the same binlog range into
# /dev/null (the server's own limit). Prints events/s, CPU seconds (user +
# system) and µs per event of both, and deltaforge's peak RSS, medians of
# REPS runs. SKIP_BUILD=1 uses the release binary already built.
#
# usage: bench/mysql.sh            (ROWS=1000000 REPS=3 TX_SIZES="100 1" by default)
#        ROWS=200000 REPS=1 bench/mysql.sh   (a quick look)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
REPS="${REPS:-3}"
TX_SIZES="${TX_SIZES:-100 1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

URL="$("$ROOT/scripts/services/mariadb.sh")"
HOSTPORT="${URL#*@}"; HOSTPORT="${HOSTPORT%%/*}"
HOST="${HOSTPORT%:*}"; PORT="${HOSTPORT##*:}"
echo "MariaDB: $URL" >&2
if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building deltaforge (release)…" >&2
  (cd "$ROOT" && cargo build --release -q -p deltaforge)
fi
BIN="$CARGO_TARGET_DIR/release/deltaforge"
WORK="$(mktemp -d /tmp/deltaforge-bench-mysql.XXXXXX)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
FLUSH_BEFORE="$(mariadb --protocol=TCP -h "$HOST" -P "$PORT" -udeltaforge -pdeltaforge -N -B -e 'SELECT @@innodb_flush_log_at_trx_commit')"
cleanup() {
  sql "SET GLOBAL innodb_flush_log_at_trx_commit = $FLUSH_BEFORE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

sql() { mariadb --protocol=TCP -h "$HOST" -P "$PORT" -udeltaforge -pdeltaforge -N -B -e "$1"; }
master() { sql "SHOW MASTER STATUS" | awk '{print $1, $2}'; }

sql "CREATE DATABASE IF NOT EXISTS dfbench; DROP TABLE IF EXISTS dfbench.bench_my; DROP PROCEDURE IF EXISTS dfbench.fill;"
sql "CREATE TABLE dfbench.bench_my (id BIGINT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), created_at DATETIME(3)) ENGINE=InnoDB"
mariadb --protocol=TCP -h "$HOST" -P "$PORT" -udeltaforge -pdeltaforge <<'SQL'
DELIMITER //
CREATE PROCEDURE dfbench.fill(n BIGINT, per_tx INT, base BIGINT)
BEGIN
  DECLARE i BIGINT DEFAULT 0;
  DECLARE j INT;
  WHILE i < n DO
    START TRANSACTION;
    SET j = 0;
    WHILE j < per_tx AND i < n DO
      INSERT INTO dfbench.bench_my VALUES (base + i + 1, CONCAT('name ', i + 1), (i + 1) * 1.5, NOW(3));
      SET i = i + 1; SET j = j + 1;
    END WHILE;
    COMMIT;
  END WHILE;
END//
DELIMITER ;
SQL
# Writing the backlog is not what is measured: relax commit durability while writing.
sql "SET GLOBAL innodb_flush_log_at_trx_commit = 2"

pipeline() { # id out
  cat >"$WORK/p.yaml" <<YAML
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-my, tenant: bench }
spec:
  source:
    type: mysql
    config: { id: $1, dsn: '$URL', tables: [dfbench.bench_my], snapshot: { mode: never } }
  sinks:
    - type: file
      config: { id: out, path: $2 }
  batch: { max_events: 4000, max_bytes: 4194304, max_ms: 100 }
YAML
}
ckpt() { # store id -> "file pos"
  sqlite3 "$1" "SELECT json_extract(value,'\$.position.file') || ' ' || json_extract(value,'\$.position.pos') FROM kv WHERE namespace='checkpoints' AND key='$2'" 2>/dev/null || true
}
# at_or_past "file pos" FILE POS: the checkpoint is at FILE:POS or later. Not
# equality: on a shared server other writers' events follow the backlog, and
# the checkpoint moves past its end with them. (Binlog names are zero-padded,
# so they compare as strings.)
at_or_past() {
  local f p
  read -r f p <<<"$1"
  [ -n "$f" ] && { [[ "$f" > "$2" ]] || { [ "$f" = "$2" ] && [ "$p" -ge "$3" ]; }; }
}

hdr() { printf '%-7s %-6s %12s %12s %6s %8s %8s %8s %7s\n' tx_rows rep "df ev/s" "binlog ev/s" ratio "df cpu s" "df µs/ev" "raw cpu" "RSS MB"; }
row() { printf '%-7s %-6s %12s %12s %6s %8s %8s %8s %7s\n' "$@"; }
hdr
summary=()
base=0
for TX in $TX_SIZES; do
  # Each run's pipeline records its start (the current end) before the backlog is written.
  for r in $(seq 1 "$REPS"); do
    pipeline "bench-my-$TX-$r" /dev/null
    "$BIN" run --config "$WORK/p.yaml" --storage-path "$WORK/state-$TX-$r/df.db" 2>"$WORK/df-init.log" &
    pid=$!
    for _ in $(seq 1 100); do [ -n "$(ckpt "$WORK/state-$TX-$r/df.db" "bench-my-$TX-$r")" ] && break; sleep 0.1; done
    kill -TERM "$pid"; wait "$pid" || true
  done
  read -r SFILE SPOS < <(master)
  echo "writing $ROWS rows in transactions of $TX…" >&2
  t0=$(date +%s.%N)
  sql "CALL dfbench.fill($ROWS, $TX, $base)"
  base=$((base + ROWS))
  echo "  written in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
  read -r EFILE EPOS < <(master)
  FILES=$(sql "SHOW BINARY LOGS" | awk -v s="$SFILE" -v e="$EFILE" '$1 >= s && $1 <= e {print $1}')
  df_rates=(); raw_rates=(); rss=(); df_cpus=(); raw_cpus=()
  for r in $(seq 1 "$REPS"); do
    # Server limit: mariadb-binlog over the replication protocol, to /dev/null.
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    /usr/bin/time -v -o "$WORK/raw-time.txt" mariadb-binlog --read-from-remote-server --host="$HOST" --port="$PORT" --user=deltaforge --password=deltaforge \
      --start-position="$SPOS" --stop-position="$EPOS" $FILES >/dev/null
    raw=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
    rawcpu=$(time_cpu_s "$WORK/raw-time.txt")

    out="$WORK/out-$TX-$r.jsonl"
    store="$WORK/state-$TX-$r/df.db"
    pipeline "bench-my-$TX-$r" "$out"
    t0=$(date +%s.%N)
    /usr/bin/time -v -o "$WORK/time.txt" "$BIN" run --config "$WORK/p.yaml" --storage-path "$store" 2>"$WORK/df.log" &
    tpid=$!
    while :; do
      at_or_past "$(ckpt "$store" "bench-my-$TX-$r")" "$EFILE" "$EPOS" && break
      if ! kill -0 "$tpid" 2>/dev/null; then echo "deltaforge exited early:" >&2; tail -20 "$WORK/df.log" >&2; exit 1; fi
      sleep 0.1
    done
    dfr=$(echo "$ROWS / ($(date +%s.%N) - $t0)" | bc)
    for c in $(pgrep -P "$tpid"); do kill -TERM "$c"; done
    wait "$tpid" || true
    n=$(wc -l <"$out")
    [ "$n" -ge "$ROWS" ] || { echo "only $n of $ROWS events in the file" >&2; exit 1; }
    mb=$(time_rss_mb "$WORK/time.txt")
    cpu=$(time_cpu_s "$WORK/time.txt")
    rm -f "$out"
    # shellcheck disable=SC2046
    row "$TX" "$r" $(reader_cols "$dfr" "$raw" "$cpu" "$rawcpu" "$mb")
    df_rates+=("$dfr"); raw_rates+=("$raw"); rss+=("$mb"); df_cpus+=("$cpu"); raw_cpus+=("$rawcpu")
  done
  # shellcheck disable=SC2046
  summary+=("$(row "$TX" median $(reader_cols "$(median_of "${df_rates[@]}")" "$(median_of "${raw_rates[@]}")" \
    "$(median_of "${df_cpus[@]}")" "$(median_of "${raw_cpus[@]}")" "$(median_of "${rss[@]}")"))")
done
echo
hdr
printf '%s\n' "${summary[@]}"
sql "DROP DATABASE IF EXISTS dfbench" >/dev/null
