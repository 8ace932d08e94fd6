# The cases of bench/debezium.sh (sourced): each writes its data, then per
# repetition runs the server's reader, DeltaForge and Debezium one after the
# other and records a row; then the medians. Tables, slots and the database
# are named bench_dbz*.
. "$(dirname "${BASH_SOURCE[0]}")/readers.sh"

PGBIN=/usr/lib/postgresql/15/bin

pg_setup_backlog() {
  [ -n "$(pgsql "SELECT to_regclass('bench_dbz_pg')")" ] && return 0
  pgsql "SET client_min_messages = warning; DROP PUBLICATION IF EXISTS bench_dbz_pg;
         CREATE TABLE bench_dbz_pg (id bigint PRIMARY KEY, name text, amount numeric(12,2), created_at timestamptz);
         CREATE PUBLICATION bench_dbz_pg FOR TABLE bench_dbz_pg;
         CREATE OR REPLACE PROCEDURE bench_dbz_pg_fill(n bigint, per_tx int) LANGUAGE plpgsql AS \$\$
         DECLARE i bigint := 0;
         BEGIN
           WHILE i < n LOOP
             INSERT INTO bench_dbz_pg SELECT g, 'name ' || g, g * 1.5, now()
               FROM generate_series(i + 1, least(i + per_tx, n)) g;
             i := i + per_tx;
             COMMIT;
           END LOOP;
         END \$\$;" >/dev/null
}

# case_pg_backlog NAME TX: one template slot made before the backlog; each
# reader drains a copy of it (same position), dropped after its run.
case_pg_backlog() {
  local name="$1" tx="$2" t0 endpos srv r
  pg_setup_backlog
  pgsql "TRUNCATE bench_dbz_pg" >/dev/null
  new_slot bench_dbz_tpl
  echo "$name: writing $ROWS rows in transactions of $tx…" >&2
  t0=$(now)
  pgsql "CALL bench_dbz_pg_fill($ROWS, $tx)" >/dev/null
  echo "  written in $(echo "$(now) - $t0" | bc) s" >&2
  endpos="$(pgsql "SELECT pg_current_wal_lsn()")"
  for r in $(seq 1 "$REPS"); do
    new_slot bench_dbz_raw bench_dbz_tpl
    t0=$(now)
    "$PGBIN/pg_recvlogical" -h 127.0.0.1 -p "$PGPORT" -U postgres -d "$PGDB" --start --slot bench_dbz_raw \
      --plugin pgoutput -o proto_version=1 -o publication_names=bench_dbz_pg -f /dev/null --endpos "$endpos" --no-loop
    srv=$(rate "$t0" "$(now)")
    drop_slot bench_dbz_raw

    new_slot bench_dbz_df bench_dbz_tpl
    df_pipeline "$WORK/p.yaml" postgres "{ id: bench-dbz-$name-$r, dsn: '$PGURL', tables: [public.bench_dbz_pg], slot: bench_dbz_df, publication: bench_dbz_pg, snapshot: { mode: never } }" "$WORK/df.jsonl"
    rm -rf "$WORK/df-state"
    run_df "$WORK/p.yaml" "$WORK/df-state"
    drop_slot bench_dbz_df

    new_slot bench_dbz_dbz bench_dbz_tpl
    rm -rf "$WORK/dbz-state" && mkdir -p "$WORK/dbz-state"
    dbz_pg_props "$WORK/dbz.properties" "$WORK/dbz-state" bench_dbz_dbz bench_dbz_pg bench_dbz_pg no_data
    run_dbz "$PGJAR" "$WORK/dbz.properties"
    drop_slot bench_dbz_dbz
    record "$name" "$r" "$srv"
  done
  drop_slot bench_dbz_tpl
  summarize "$name"
}

my_setup() {
  [ -n "$FLUSH_BEFORE" ] && return 0
  FLUSH_BEFORE="$(my "SELECT @@innodb_flush_log_at_trx_commit")"
  my "DROP DATABASE IF EXISTS bench_dbz; CREATE DATABASE bench_dbz;
      CREATE TABLE bench_dbz.bench_dbz_my (id BIGINT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), created_at DATETIME(3)) ENGINE=InnoDB"
  mariadb --protocol=TCP -h "$MYHOST" -P "$MYPORT" -u "$MYUSER" "-p$MYPASS" <<'SQL'
DELIMITER //
CREATE PROCEDURE bench_dbz.fill(n BIGINT, per_tx INT)
BEGIN
  DECLARE i BIGINT DEFAULT 0;
  DECLARE j INT;
  WHILE i < n DO
    START TRANSACTION;
    SET j = 0;
    WHILE j < per_tx AND i < n DO
      INSERT INTO bench_dbz.bench_dbz_my VALUES (i + 1, CONCAT('name ', i + 1), (i + 1) * 1.5, NOW(3));
      SET i = i + 1; SET j = j + 1;
    END WHILE;
    COMMIT;
  END WHILE;
END//
DELIMITER ;
SQL
}

master() { my "SHOW MASTER STATUS" | awk '{print $1, $2}'; }
df_ckpt() { # STORE ID -> "file pos"
  sqlite3 "$1" "SELECT json_extract(value,'\$.position.file') || ' ' || json_extract(value,'\$.position.pos') FROM kv WHERE namespace='checkpoints' AND key='$2'" 2>/dev/null || true
}

# case_my_backlog NAME TX: DeltaForge and Debezium each run once before the
# backlog (storing their start position), and every repetition starts from a
# copy of that state.
case_my_backlog() {
  local name="$1" tx="$2" id="bench-dbz-$1" pid sfile spos efile epos files t0 srv r
  my_setup
  my "TRUNCATE bench_dbz.bench_dbz_my"
  df_pipeline "$WORK/p.yaml" mysql "{ id: $id, dsn: '$MYURL', tables: [bench_dbz.bench_dbz_my], snapshot: { mode: never } }" "$WORK/df.jsonl"
  rm -rf "$WORK/df-pos"
  "$BIN" run --config "$WORK/p.yaml" --storage-path "$WORK/df-pos/df.db" \
    --api-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 2>"$WORK/df-pos.log" &
  pid=$!
  for _ in $(seq 1 300); do [ -n "$(df_ckpt "$WORK/df-pos/df.db" "$id")" ] && break; sleep 0.1; done
  kill -TERM "$pid"; wait "$pid" || true
  [ -n "$(df_ckpt "$WORK/df-pos/df.db" "$id")" ] || { echo "deltaforge stored no position:" >&2; tail -20 "$WORK/df-pos.log" >&2; exit 1; }
  rm -rf "$WORK/dbz-pos" && mkdir -p "$WORK/dbz-pos"
  dbz_my_props "$WORK/dbz-pos.properties" "$WORK/dbz-pos" bench_dbz_my no_data
  dbz_position "$MYJAR" "$WORK/dbz-pos.properties"
  [ -s "$WORK/dbz-pos/offsets.dat" ] || { echo "debezium stored no offsets" >&2; exit 1; }

  read -r sfile spos < <(master)
  echo "$name: writing $ROWS rows in transactions of $tx…" >&2
  # Writing the backlog is not what is measured: relax commit durability while writing.
  my "SET GLOBAL innodb_flush_log_at_trx_commit = 2"
  t0=$(now)
  my "CALL bench_dbz.fill($ROWS, $tx)"
  echo "  written in $(echo "$(now) - $t0" | bc) s" >&2
  my "SET GLOBAL innodb_flush_log_at_trx_commit = $FLUSH_BEFORE"
  read -r efile epos < <(master)
  files=$(my "SHOW BINARY LOGS" | awk -v s="$sfile" -v e="$efile" '$1 >= s && $1 <= e {print $1}')
  for r in $(seq 1 "$REPS"); do
    t0=$(now)
    # shellcheck disable=SC2086
    mariadb-binlog --read-from-remote-server --host="$MYHOST" --port="$MYPORT" --user="$MYUSER" --password="$MYPASS" \
      --start-position="$spos" --stop-position="$epos" $files >/dev/null
    srv=$(rate "$t0" "$(now)")

    rm -rf "$WORK/df-state" && cp -r "$WORK/df-pos" "$WORK/df-state"
    run_df "$WORK/p.yaml" "$WORK/df-state"

    rm -rf "$WORK/dbz-state" && cp -r "$WORK/dbz-pos" "$WORK/dbz-state"
    dbz_my_props "$WORK/dbz.properties" "$WORK/dbz-state" bench_dbz_my no_data
    run_dbz "$MYJAR" "$WORK/dbz.properties"
    record "$name" "$r" "$srv"
  done
  summarize "$name"
}

case_pg_snapshot() {
  local t0 srv r
  echo "pgsnap: creating public.bench_dbz_snap with $ROWS rows…" >&2
  pgsql "SET client_min_messages = warning; DROP TABLE IF EXISTS bench_dbz_snap; DROP PUBLICATION IF EXISTS bench_dbz_snap;" >/dev/null
  pgsql "CREATE TABLE bench_dbz_snap (id bigint PRIMARY KEY, name text, amount numeric(12,2), created_at timestamptz);
         INSERT INTO bench_dbz_snap SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(1, $ROWS) g;
         CREATE PUBLICATION bench_dbz_snap FOR TABLE bench_dbz_snap;" >/dev/null
  pgsql "VACUUM ANALYZE bench_dbz_snap" >/dev/null
  for r in $(seq 1 "$REPS"); do
    t0=$(now)
    psql "$PGURL" -X -q -v ON_ERROR_STOP=1 -c "\\copy (SELECT * FROM bench_dbz_snap) TO '/dev/null'"
    srv=$(rate "$t0" "$(now)")

    # Both create their slot at start (inside the time), as users run them.
    echo bench_dbz_snap_df >>"$WORK/slots"; drop_slot bench_dbz_snap_df
    df_pipeline "$WORK/p.yaml" postgres "{ id: bench-dbz-pgsnap-$r, dsn: '$PGURL', tables: [public.bench_dbz_snap], slot: bench_dbz_snap_df, publication: bench_dbz_snap, snapshot: { mode: initial_only, chunk_size: $CHUNK } }" "$WORK/df.jsonl"
    rm -rf "$WORK/df-state"
    run_df "$WORK/p.yaml" "$WORK/df-state"
    drop_slot bench_dbz_snap_df

    echo bench_dbz_snap_dbz >>"$WORK/slots"; drop_slot bench_dbz_snap_dbz
    rm -rf "$WORK/dbz-state" && mkdir -p "$WORK/dbz-state"
    dbz_pg_props "$WORK/dbz.properties" "$WORK/dbz-state" bench_dbz_snap_dbz bench_dbz_snap bench_dbz_snap initial
    run_dbz "$PGJAR" "$WORK/dbz.properties"
    drop_slot bench_dbz_snap_dbz
    record pgsnap "$r" "$srv"
  done
  summarize pgsnap
  pgsql "DROP PUBLICATION IF EXISTS bench_dbz_snap; DROP TABLE IF EXISTS bench_dbz_snap" >/dev/null
}

case_my_snapshot() {
  local t0 srv r
  my_setup
  echo "mysnap: creating bench_dbz.bench_dbz_snap with $ROWS rows…" >&2
  my "USE bench_dbz; DROP TABLE IF EXISTS bench_dbz_snap;
      CREATE TABLE bench_dbz_snap (id BIGINT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), created_at TIMESTAMP NULL);
      INSERT INTO bench_dbz_snap SELECT seq, CONCAT('name ', seq), seq * 1.5, NOW() FROM seq_1_to_$ROWS;
      ANALYZE TABLE bench_dbz_snap;" >/dev/null
  for r in $(seq 1 "$REPS"); do
    t0=$(now)
    mariadb-dump --protocol=TCP -h "$MYHOST" -P "$MYPORT" -u "$MYUSER" "-p$MYPASS" --single-transaction --quick \
      --skip-lock-tables --no-create-info bench_dbz bench_dbz_snap >/dev/null
    srv=$(rate "$t0" "$(now)")

    df_pipeline "$WORK/p.yaml" mysql "{ id: bench-dbz-mysnap-$r, dsn: '$MYURL', tables: [bench_dbz.bench_dbz_snap], snapshot: { mode: initial_only, chunk_size: $CHUNK } }" "$WORK/df.jsonl"
    rm -rf "$WORK/df-state"
    run_df "$WORK/p.yaml" "$WORK/df-state"

    rm -rf "$WORK/dbz-state" && mkdir -p "$WORK/dbz-state"
    dbz_my_props "$WORK/dbz.properties" "$WORK/dbz-state" bench_dbz_snap initial
    run_dbz "$MYJAR" "$WORK/dbz.properties"
    record mysnap "$r" "$srv"
  done
  summarize mysnap
}
