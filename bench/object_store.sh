#!/usr/bin/env bash
# Benchmark of the `object_store` sink: events/s and deltaforge's peak RSS
# writing Parquet (128 MiB files) to the local file system and to the S3
# server of scripts/services/s3.sh (moto), from
#   - datagen (ROWS synthetic inserts), and
#   - a PostgreSQL backlog of ROWS rows (transactions of 100, written while
#     the pipeline is stopped), also into the `file` sink (JSON lines) to
#     show the source's own rate,
# beside the limit measured in the same run: DuckDB's
# `COPY (SELECT * FROM read_csv(...)) TO '...parquet'` of the same rows from
# a CSV (psql \copy of the table).
# A run ends when the manifests list ROWS rows (the last file is committed
# by max_age_ms = 1 s after its last row).
#
# usage: bench/object_store.sh          (ROWS=1000000 by default)
#        ROWS=200000 bench/object_store.sh   (a quick look)
#        DELTAFORGE_BIN=target/debug/deltaforge ROWS=200000 bench/object_store.sh   (no release build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

URL="$("$ROOT/scripts/services/postgres.sh")"
S3="$("$ROOT/scripts/services/s3.sh")"
PY="$("$ROOT/scripts/services/s3.sh" python)"
echo "PostgreSQL: $URL  S3: $S3" >&2
if [ -n "${DELTAFORGE_BIN:-}" ]; then
  BIN="$DELTAFORGE_BIN"   # an existing binary (e.g. a debug build for a quick look; not for the record)
else
  echo "building deltaforge (release)…" >&2
  (cd "$ROOT" && cargo build --release -q -p deltaforge)
  BIN="$CARGO_TARGET_DIR/release/deltaforge"
fi
WORK="$(mktemp -d /tmp/deltaforge-bench-os.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
BUCKET="bench-$$"
curl -sf -X PUT "$S3/$BUCKET" >/dev/null

sql() { psql "$URL" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

# wait_rows URL PID: returns once the manifests under URL (file:// or s3://)
# list ROWS rows; fails if PID exits first. One long-lived poller (Python
# and boto3 start once), each manifest read once, a listing every 0.2 s.
wait_rows() {
  "$PY" - "$1" "$S3" "$ROWS" "$2" <<'PY'
import json, os, sys, time
url, endpoint, rows, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
seen, total = set(), 0
if url.startswith("s3://"):
    import boto3
    bucket, _, prefix = url[5:].partition("/")
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
alive = True
while total < rows:
    if not alive:
        sys.exit("deltaforge exited early")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        alive = False  # count once more: it may have finished (datagen ends)
    if url.startswith("s3://"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/_manifest/"):
            for o in page.get("Contents", []):
                if o["Key"] not in seen:
                    seen.add(o["Key"])
                    total += json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())["rows"]
    else:
        for d, _, names in os.walk(os.path.join(url[7:], "_manifest")):
            for n in names:
                p = os.path.join(d, n)
                if p not in seen and not n.startswith("."):
                    seen.add(p)
                    total += json.load(open(p))["rows"]
    if total < rows and alive:
        time.sleep(0.2)
PY
}

# wait_file PATH PID: returns once the file sink's output holds the event
# of id ROWS (the last one of the backlog, events arrive in order).
wait_file() {
  while ! tail -c 4096 "$1" 2>/dev/null | grep -Eq "\"id\":\"?$ROWS\"?[,}]"; do
    kill -0 "$2" 2>/dev/null || { echo "deltaforge exited early" >&2; exit 1; }
    sleep 0.2
  done
}

# run NAME SOURCE_YAML URL: runs deltaforge until the manifests list ROWS
# rows (URL file:// or s3://), or until the file sink has written the last
# row (URL a plain path: the `file` sink, JSON lines, fsync per batch).
run() {
  local name="$1" source="$2" url="$3" s3conf="" sink
  case "$url" in s3://*) s3conf="s3: { endpoint: '$S3', region: us-east-1, path_style: true, allow_http: true, access_key_id: test, secret_access_key: test }" ;; esac
  case "$url" in
    /*) sink="{ type: file, config: { id: out, path: '$url' } }" ;;
    *) sink="{ type: object_store, config: { id: lake, url: '$url', max_bytes: 134217728, max_rows: 10000000, max_age_ms: 1000, $s3conf } }" ;;
  esac
  cat >"$WORK/$name.yaml" <<YAML
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-os, tenant: bench }
spec:
  source: $source
  sinks:
    - $sink
  batch: { max_events: 4000, max_bytes: 4194304, max_ms: 100 }
YAML
  local t0 n
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" run --config "$WORK/$name.yaml" --storage-path "$WORK/state-$name/df.db" \
    2>"$WORK/df-$name.log" &
  local tpid=$!
  case "$url" in
    /*) wait_file "$url" "$tpid" ;;
    *) wait_rows "$url" "$tpid" || { tail -20 "$WORK/df-$name.log" >&2; exit 1; } ;;
  esac
  local secs; secs=$(echo "$(date +%s.%N) - $t0" | bc)
  for c in $(pgrep -P "$tpid"); do kill -TERM "$c"; done
  wait "$tpid" || true
  local kb; kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  printf '%-28s %12s %10s\n' "$name" "$(echo "$ROWS / $secs" | bc)" "$((kb / 1024))"
}

sql "DROP TABLE IF EXISTS bench_os; DROP PUBLICATION IF EXISTS bench_os;" >/dev/null
sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bench_os_%'" >/dev/null
sql "CREATE TABLE bench_os (id bigint PRIMARY KEY, name text, amount numeric(12,2), created_at timestamptz);
     CREATE PUBLICATION bench_os FOR TABLE bench_os;" >/dev/null
# One slot per run, created before the backlog so that each reads all of it.
sql "SELECT pg_create_logical_replication_slot('bench_os_local', 'pgoutput')" >/dev/null
sql "SELECT pg_create_logical_replication_slot('bench_os_s3', 'pgoutput')" >/dev/null
sql "SELECT pg_create_logical_replication_slot('bench_os_file', 'pgoutput')" >/dev/null
echo "writing $ROWS rows in transactions of 100…" >&2
sql "DO \$\$ DECLARE i bigint := 0; BEGIN
       WHILE i < $ROWS LOOP
         INSERT INTO bench_os SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(i + 1, least(i + 100, $ROWS)) g;
         i := i + 100;
       END LOOP; END \$\$;" >/dev/null
psql "$URL" -X -q -c "\\copy bench_os TO '$WORK/rows.csv' WITH (FORMAT csv, HEADER)"

printf '%-28s %12s %10s\n' "run" "events/s" "peak RSS MB"
duck=$("$PY" - "$WORK" <<'PY'
import sys, time, duckdb
work = sys.argv[1]
con = duckdb.connect()
t0 = time.time()
con.sql(f"COPY (SELECT * FROM read_csv('{work}/rows.csv')) TO '{work}/duck.parquet' (FORMAT parquet)")
n = con.sql(f"SELECT count(*) FROM read_parquet('{work}/duck.parquet')").fetchone()[0]
print(int(n / (time.time() - t0)))
PY
)
printf '%-28s %12s %10s\n' "duckdb COPY csv→parquet" "$duck" "-"
dg="{ type: datagen, config: { id: bench-os-dg, count: $ROWS, tables: [demo.orders] } }"
pg() { echo "{ type: postgres, config: { id: bench-os-$1, dsn: '$URL', tables: [public.bench_os], slot: bench_os_$1, publication: bench_os, snapshot: { mode: never } } }"; }
run "datagen → parquet local" "$dg" "file://$WORK/dg-local"
run "datagen → parquet s3" "${dg/bench-os-dg/bench-os-dg-s3}" "s3://$BUCKET/dg"
rm -rf "$WORK/dg-local"
run "postgres → parquet local" "$(pg local)" "file://$WORK/pg-local"
run "postgres → parquet s3" "$(pg s3)" "s3://$BUCKET/pg"
# The same backlog into the `file` sink: the PostgreSQL source's own rate.
run "postgres → file (jsonl)" "$(pg file)" "$WORK/pg.jsonl"
rm -f "$WORK/pg.jsonl"
sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bench_os_%'" >/dev/null
sql "DROP PUBLICATION IF EXISTS bench_os; DROP TABLE IF EXISTS bench_os" >/dev/null
