# Readers for bench/debezium.sh (sourced): SQL helpers, one timed run of
# DeltaForge and of the Debezium runner, their configs, and the table.
# Uses the caller's ROWS, WORK, BIN, PGURL, MY*, CUR.

pgsql() { psql "$PGURL" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
my() { mariadb --protocol=TCP -h "$MYHOST" -P "$MYPORT" -u "$MYUSER" "-p$MYPASS" -N -B -e "$1"; }
now() { date +%s.%N; }
# rate T0 T1: ROWS per second between two `now` readings.
rate() { echo "$ROWS / ($2 - $1)" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }

drop_slot() { pgsql "SELECT pg_drop_replication_slot('$1') FROM pg_replication_slots WHERE slot_name = '$1'" >/dev/null; }
# new_slot NAME [FROM]: a pgoutput slot NAME, new or a copy of slot FROM
# (same position); dropped on exit if still there.
new_slot() {
  echo "$1" >>"$WORK/slots"
  drop_slot "$1"
  if [ -n "${2:-}" ]; then
    pgsql "SELECT pg_copy_logical_replication_slot('$2', '$1')" >/dev/null
  else
    pgsql "SELECT pg_create_logical_replication_slot('$1', 'pgoutput')" >/dev/null
  fi
}

# df_pipeline FILE SOURCE_TYPE SOURCE_CONFIG OUT: a pipeline into the file sink.
df_pipeline() {
  cat >"$1" <<EOF
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: bench-dbz, tenant: bench }
spec:
  source:
    type: $2
    config: $3
  sinks:
    - type: file
      config: { id: out, path: $4 }
  batch: { max_events: 4000, max_bytes: 4194304, max_ms: 100 }
EOF
}

# check_out FILE WHO: FILE must hold exactly ROWS lines with ROWS distinct
# row ids (the value of "id" in the row image), or the script fails.
check_out() {
  local n ids
  n=$(wc -l <"$1")
  ids=$(grep -o '"after":{"id":[0-9]*' "$1" | sort -u | wc -l)
  if [ "$n" -ne "$ROWS" ] || [ "$ids" -ne "$ROWS" ]; then
    echo "$2: $n lines, $ids distinct ids in $1; expected $ROWS of each" >&2
    exit 1
  fi
}

# run_df CONFIG STATE_DIR: runs DeltaForge until $WORK/df.jsonl holds ROWS
# lines; sets DF to "events/s cpu_s rss_mb". (Results go to variables, not
# stdout: a failure in a command substitution would not end the script.)
run_df() {
  local out="$WORK/df.jsonl" t0 r
  rm -f "$out"
  t0=$(now)
  /usr/bin/time -v -o "$WORK/df.time" "$BIN" run --config "$1" --storage-path "$2/df.db" \
    --api-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 2>"$WORK/df.log" &
  CUR=$!
  wait_lines "$out" "$ROWS" "$CUR" "$WORK/df.log" 0.05
  r=$(rate "$t0" "$(now)")
  stop_timed "$CUR"
  CUR=""
  check_out "$out" deltaforge
  rm -f "$out"
  DF="$r $(time_cpu_s "$WORK/df.time") $(time_rss_mb "$WORK/df.time")"
}

# run_dbz JAR PROPS: runs the Debezium runner until it has written ROWS data
# events to $WORK/dbz.jsonl; sets DBZ to "events/s cpu_s rss_mb jvm_boot_s".
run_dbz() {
  local out="$WORK/dbz.jsonl" line secs boot
  rm -f "$out"
  /usr/bin/time -v -o "$WORK/dbz.time" timeout "$DBZ_TIMEOUT" java -jar "$1" "$2" "$ROWS" "$out" \
    >"$WORK/dbz.out" 2>"$WORK/dbz.log" &
  CUR=$!
  if ! wait "$CUR"; then
    CUR=""
    echo "debezium failed:" >&2; grep -E 'ERROR|Exception|stopped early' "$WORK/dbz.log" | head -20 >&2; exit 1
  fi
  CUR=""
  line=$(cat "$WORK/dbz.out")
  secs=$(sed -n 's/.*engine_s=\([0-9.]*\).*/\1/p' <<<"$line")
  boot=$(sed -n 's/.*boot_s=\([0-9.]*\).*/\1/p' <<<"$line")
  echo "  debezium: $line" >&2
  check_out "$out" debezium
  rm -f "$out"
  DBZ="$(echo "$ROWS / $secs" | bc) $(time_cpu_s "$WORK/dbz.time") $(time_rss_mb "$WORK/dbz.time") $boot"
}

# dbz_position JAR PROPS: the positioning run (N = 0): stops once streaming
# is connected, leaving its offsets (and schema history) in place.
dbz_position() {
  if ! timeout 300 java -jar "$1" "$2" 0 /dev/null >/dev/null 2>"$WORK/dbz-pos.log"; then
    echo "debezium positioning failed:" >&2; grep -E 'ERROR|Exception' "$WORK/dbz-pos.log" | head -20 >&2; exit 1
  fi
}

# dbz_common FILE DIR: the settings both connectors share; offsets in DIR.
dbz_common() {
  cat >"$1" <<EOF
name=bench-dbz
offset.storage=org.apache.kafka.connect.storage.FileOffsetBackingStore
offset.storage.file.filename=$2/offsets.dat
topic.prefix=bench
decimal.handling.mode=string
converter.schemas.enable=false
EOF
}

# dbz_pg_props FILE DIR SLOT PUBLICATION TABLE SNAPSHOT_MODE
dbz_pg_props() {
  dbz_common "$1" "$2"
  cat >>"$1" <<EOF
connector.class=io.debezium.connector.postgresql.PostgresConnector
database.hostname=127.0.0.1
database.port=$PGPORT
database.user=postgres
database.password=
database.dbname=$PGDB
plugin.name=pgoutput
slot.name=$3
publication.name=$4
publication.autocreate.mode=disabled
table.include.list=public.$5
snapshot.mode=$6
EOF
}

# dbz_my_props FILE DIR TABLE SNAPSHOT_MODE (database bench_dbz; schema
# history in DIR)
dbz_my_props() {
  dbz_common "$1" "$2"
  cat >>"$1" <<EOF
connector.class=io.debezium.connector.mariadb.MariaDbConnector
database.hostname=$MYHOST
database.port=$MYPORT
database.user=$MYUSER
database.password=$MYPASS
database.server.id=5401
database.include.list=bench_dbz
table.include.list=bench_dbz.$3
schema.history.internal=io.debezium.storage.file.history.FileSchemaHistory
schema.history.internal.file.filename=$2/history.dat
snapshot.mode=$4
EOF
}

dbz_version() { find "$(dirname "$1")/lib" -name 'debezium-embedded-*.jar' | sed 's/.*debezium-embedded-\(.*\)\.jar/\1/'; }

ROW_FMT='%-7s %-6s %9s %9s %6s %9s %7s %7s %6s %6s %6s %6s %6s\n'
header() {
  # shellcheck disable=SC2059
  printf "$ROW_FMT" case rep "df ev/s" "dbz ev/s" "df/dbz" "server" "df cpu" "dbz cpu" "dbz/df" "df MB" "dbz MB" "dbz/df" "jvm s"
}

# record CASE REP SERVER_RATE: prints a row from DF and DBZ and keeps the
# figures for the case's medians.
record() {
  local dfr dfc dfm dbr dbc dbm boot
  read -r dfr dfc dfm <<<"$DF"
  read -r dbr dbc dbm boot <<<"$DBZ"
  # shellcheck disable=SC2059
  printf "$ROW_FMT" "$1" "$2" "$dfr" "$dbr" "$(ratio "$dfr" "$dbr")" "$3" "$dfc" "$dbc" "$(ratio "$dbc" "$dfc")" \
    "$dfm" "$dbm" "$(ratio "$dbm" "$dfm")" "$boot"
  echo "$dfr $dbr $3 $dfc $dbc $dfm $dbm $boot" >>"$WORK/reps-$1"
}

# summarize CASE: the medians of the case's repetitions, into $WORK/summary.
summarize() {
  local m=() i
  for i in 1 2 3 4 5 6 7 8; do m+=("$(awk -v c="$i" '{print $c}' "$WORK/reps-$1" | median)"); done
  # shellcheck disable=SC2059
  printf "$ROW_FMT" "$1" median "${m[0]}" "${m[1]}" "$(ratio "${m[0]}" "${m[1]}")" "${m[2]}" "${m[3]}" "${m[4]}" \
    "$(ratio "${m[4]}" "${m[3]}")" "${m[5]}" "${m[6]}" "$(ratio "${m[6]}" "${m[5]}")" "${m[7]}" | tee -a "$WORK/summary"
}
