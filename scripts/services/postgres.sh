#!/usr/bin/env bash
# PostgreSQL 15 (Debian) on 127.0.0.1:${DF_PG_PORT:-55432} with wal_level=logical.
# usage: postgres.sh [start|stop|status]   — start prints the URL as the last stdout line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_PG_PORT:-55432}"
DB=deltaforge
URL="postgres://postgres@127.0.0.1:${PORT}/${DB}"
PGBIN=/usr/lib/postgresql/15/bin

df_init postgres
DATA="$DF_SVC_DIR/data"
LOGFILE="$DF_SVC_DIR/postgres.log"
PIDFILE="$DATA/postmaster.pid"

cd /

as_pg() { runuser -u postgres -- "$@"; }

# pg_ctl status alone is fooled by a postmaster that died but is not yet reaped (zombie).
running() {
  [ -x "$PGBIN/pg_ctl" ] && [ -f "$DATA/PG_VERSION" ] && df_pid_alive "$PIDFILE" postgres &&
    as_pg "$PGBIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

ready() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; }

install_pg() {
  if [ ! -x "$PGBIN/initdb" ] || [ ! -x "$PGBIN/pg_ctl" ]; then
    df_apt_install postgresql
  fi
  [ -x "$PGBIN/pg_ctl" ] || die "$PGBIN/pg_ctl missing after installing postgresql (is the candidate still PostgreSQL 15?)"
  command -v psql >/dev/null 2>&1 || df_apt_install postgresql-client
  if ! id -u postgres >/dev/null 2>&1; then
    log "creating system user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
}

init_pg() {
  [ -f "$DATA/PG_VERSION" ] && return 0
  log "initialising data directory $DATA"
  df_make_traversable "$DF_SVC_DIR"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  chown postgres:postgres "$DF_SVC_DIR" "$DATA"
  chmod 700 "$DATA"
  if ! as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    </dev/null >"$DF_SVC_DIR/initdb.log" 2>&1 9>&-; then
    rm -rf "$DATA"
    df_fail_with_log "$DF_SVC_DIR/initdb.log" "initdb failed"
  fi
  cat >"$DATA/pg_hba.conf" <<'EOF'
# Written by scripts/services/postgres.sh — trust on loopback only.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
host    all          all   ::1/128        trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
host    replication  all   ::1/128        trust
EOF
  echo "include_if_exists = 'deltaforge.conf'" >>"$DATA/postgresql.conf"
  chown postgres:postgres "$DATA/pg_hba.conf"
}

write_conf() {
  # Regenerated on every start so that DF_PG_PORT overrides take effect.
  cat >"$DATA/deltaforge.conf" <<EOF
# Written by scripts/services/postgres.sh on each start — do not edit.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DF_SVC_DIR'
max_connections = 100
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
fsync = on
EOF
  chown postgres:postgres "$DATA/deltaforge.conf"
}

start_pg() {
  install_pg
  init_pg
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
  else
    # A postmaster killed hard may linger as a zombie until PID 1 reaps it; the
    # new postmaster would refuse to start while that pid still "exists".
    if [ -s "$PIDFILE" ]; then df_wait_reaped "$(df_pid_of "$PIDFILE")" 60; fi
    df_check_port_free "$PORT" DF_PG_PORT
    write_conf
    chown postgres:postgres "$DF_SVC_DIR"
    touch "$LOGFILE" && chown postgres:postgres "$LOGFILE"
    log "starting on 127.0.0.1:$PORT (log $LOGFILE)"
    if ! as_pg "$PGBIN/pg_ctl" start -w -t "${DF_PG_START_TIMEOUT:-60}" -D "$DATA" -l "$LOGFILE" </dev/null >&2 9>&-; then
      df_fail_with_log "$LOGFILE" "PostgreSQL did not start on 127.0.0.1:$PORT"
    fi
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    ready && break
    sleep 0.1
  done
  ready || df_fail_with_log "$LOGFILE" "PostgreSQL not accepting TCP connections on 127.0.0.1:$PORT after 30 s"
  if [ "$(psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAXc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
    log "creating database $DB"
    psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qXc "CREATE DATABASE $DB" >&2
  fi
  echo "$URL"
}

stop_pg() {
  if running; then
    log "stopping"
    as_pg "$PGBIN/pg_ctl" stop -w -t 120 -m fast -D "$DATA" </dev/null >&2 9>&-
  else
    log "not running"
  fi
}

case "$ACTION" in
  start) start_pg ;;
  stop) stop_pg ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  *) df_usage ;;
esac
