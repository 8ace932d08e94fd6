#!/usr/bin/env bash
# DeltaForge beside Debezium's embedded engine, in the same run, on the same
# data. Per case and repetition, one reader after the other: the server's own
# reader (where there is one: pg_recvlogical, mariadb-binlog, COPY,
# mariadb-dump) into /dev/null, DeltaForge (release build, source → `file`
# sink, SQLite checkpoints), then Debezium (bench/debezium: embedded engine,
# JSON converter, one JSON line per data event to a file). Both write every
# event to a file and sync it per batch. Prints events/s, CPU seconds
# (user + sys) and peak RSS (`/usr/bin/time -v`) for both, and the ratios,
# medians of REPS runs.
#
# Cases (CASES, default all, in this order):
#   pg100 pg1   PostgreSQL backlog of ROWS inserts, 100 / 1 rows per
#               transaction, written while no reader runs; every reader
#               drains it from its own copy of a slot made before it.
#   my100 my1   the same on MariaDB; each reader starts from the binlog
#               position it stored in a first run made before the backlog.
#   pgsnap      initial snapshot of a ROWS-row PostgreSQL table.
#   mysnap      initial snapshot of a ROWS-row MariaDB table.
#
# DeltaForge's rate runs from its process's launch until its file holds ROWS
# lines; Debezium's from the engine's start (after the JVM's boot, printed
# apart as "jvm s") to the ROWS-th event written and synced. CPU and RSS are
# the whole processes'.
#
# usage: bench/debezium.sh      (ROWS=1000000 REPS=3, all cases)
#        ROWS=20000 REPS=1 CASES="pg100 my100" SKIP_BUILD=1 bench/debezium.sh
# SKIP_BUILD=1 uses the existing $CARGO_TARGET_DIR/release/deltaforge
# (default target dir: the repo's `target`). Needs java 17+ and mvn.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
REPS="${REPS:-3}"
CASES="${CASES:-pg100 pg1 my100 my1 pgsnap mysnap}"
CHUNK="${CHUNK:-10000}"
DBZ_TIMEOUT="${DBZ_TIMEOUT:-3600}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
. "$ROOT/bench/debezium/cases.sh"

if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "building deltaforge (release)…" >&2
  (cd "$ROOT" && cargo build --release -q -p deltaforge)
fi
BIN="$CARGO_TARGET_DIR/release/deltaforge"
[ -x "$BIN" ] || { echo "no deltaforge binary at $BIN" >&2; exit 1; }
echo "building the Debezium runner (mvn)…" >&2
WORK="$(mktemp -d /tmp/deltaforge-bench-dbz.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
if ! (cd "$ROOT/bench/debezium" && mvn -B -q -Dstyle.color=never package && mvn -B -q -Dstyle.color=never -Pmariadb package) >"$WORK/mvn.log" 2>&1; then
  cat "$WORK/mvn.log" >&2; exit 1
fi
PGJAR="$ROOT/bench/debezium/target/postgres/dbz-bench.jar"
MYJAR="$ROOT/bench/debezium/target/mariadb/dbz-bench.jar"

PGURL="$("$ROOT/scripts/services/postgres.sh" | tail -1)"
PGPORT="${PGURL##*:}"; PGPORT="${PGPORT%%/*}"
PGDB="${PGURL##*/}"
MYURL="$("$ROOT/scripts/services/mariadb.sh" | tail -1)"
rest="${MYURL#*://}"; auth="${rest%@*}"; hostport="${rest##*@}"; hostport="${hostport%%/*}"
MYUSER="${auth%%:*}"; MYPASS="${auth#*:}"; MYHOST="${hostport%:*}"; MYPORT="${hostport##*:}"
echo "PostgreSQL: $PGURL  MariaDB: $MYURL" >&2

: >"$WORK/slots"
CUR=""      # the reader running now (its /usr/bin/time pid), stopped on exit
FLUSH_BEFORE=""
cleanup() {
  if [ -n "$CUR" ]; then stop_timed "$CUR"; fi
  local s
  while read -r s; do drop_slot "$s" 2>/dev/null || true; done < <(sort -u "$WORK/slots")
  pgsql "DROP PUBLICATION IF EXISTS bench_dbz_pg; DROP PUBLICATION IF EXISTS bench_dbz_snap;
         DROP TABLE IF EXISTS bench_dbz_pg, bench_dbz_snap; DROP PROCEDURE IF EXISTS bench_dbz_pg_fill" \
    >/dev/null 2>&1 || true
  if [ -n "$FLUSH_BEFORE" ]; then my "SET GLOBAL innodb_flush_log_at_trx_commit = $FLUSH_BEFORE" >/dev/null 2>&1 || true; fi
  my "DROP DATABASE IF EXISTS bench_dbz" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "Debezium beside DeltaForge: $(nproc) cores, $(date -u +%FT%TZ), ROWS=$ROWS REPS=$REPS"
echo "$("$BIN" --version 2>/dev/null), Debezium $(dbz_version "$PGJAR") (PostgreSQL) / $(dbz_version "$MYJAR") (MariaDB), $(java -version 2>&1 | head -1)"
header
for c in $CASES; do
  case "$c" in
    pg100) case_pg_backlog pg100 100 ;;
    pg1) case_pg_backlog pg1 1 ;;
    my100) case_my_backlog my100 100 ;;
    my1) case_my_backlog my1 1 ;;
    pgsnap) case_pg_snapshot ;;
    mysnap) case_my_snapshot ;;
    *) echo "unknown case $c (pg100 pg1 my100 my1 pgsnap mysnap)" >&2; exit 2 ;;
  esac
done
echo
echo "medians of $REPS:"
header
cat "$WORK/summary"
