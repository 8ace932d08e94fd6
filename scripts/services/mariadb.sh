#!/usr/bin/env bash
# MariaDB 10.11 (Debian mariadb-server) on 127.0.0.1:${DF_MARIADB_PORT:-53306},
# row-based binlog with GTIDs for CDC.
# usage: mariadb.sh [start|stop|status]   — start prints the URL as the last stdout line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_MARIADB_PORT:-53306}"
URL="mysql://deltaforge:deltaforge@127.0.0.1:${PORT}/deltaforge"

df_init mariadb
CNF="$DF_SVC_DIR/my.cnf"
DATA="$DF_SVC_DIR/data"
BINLOG_DIR="$DF_SVC_DIR/binlog"
SOCK="$DF_SVC_DIR/mariadb.sock"
PIDFILE="$DF_SVC_DIR/mariadb.pid"
ERRLOG="$DF_SVC_DIR/mariadb.err"
OUTLOG="$DF_SVC_DIR/mariadbd.out"
STAMP="$DF_SVC_DIR/.bootstrapped"

cd /

running() { df_pid_alive "$PIDFILE" mariadbd; }

install_mariadb() {
  if ! command -v mariadbd >/dev/null 2>&1 || ! command -v mariadb-install-db >/dev/null 2>&1 ||
    ! command -v mariadb >/dev/null 2>&1 || ! command -v mariadb-admin >/dev/null 2>&1; then
    # Keep the package from starting its own server (no systemd here anyway).
    local policy=/usr/sbin/policy-rc.d backup=""
    if [ -e "$policy" ]; then
      backup="$(mktemp /tmp/policy-rc.d.XXXXXX)"
      cp -p "$policy" "$backup"
    fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    local rc=0
    (df_apt_install mariadb-server mariadb-client) || rc=$?
    if [ -n "$backup" ]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi
    [ "$rc" = 0 ] || die "installing mariadb-server failed"
  fi
  command -v mariadbd >/dev/null 2>&1 || die "mariadbd missing after installing mariadb-server"
  if ! id -u mysql >/dev/null 2>&1; then
    log "creating system user mysql"
    useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin mysql
  fi
}

write_cnf() {
  # Regenerated on every start so that DF_MARIADB_PORT overrides take effect.
  cat >"$CNF" <<EOF
# Written by scripts/services/mariadb.sh — do not edit (regenerated on start).
[client]
socket = $SOCK
port = $PORT

[mariadbd]
user = mysql
port = $PORT
bind-address = 127.0.0.1
socket = $SOCK
datadir = $DATA
pid-file = $PIDFILE
log-error = $ERRLOG
skip-name-resolve
server_id = 1
log_bin = $BINLOG_DIR/mariadb-bin
log_bin_index = $BINLOG_DIR/mariadb-bin.index
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_strict_mode = 1
log_bin_compress = OFF
innodb_buffer_pool_size = 256M
max_connections = 200
EOF
  chmod 644 "$CNF"
}

init_mariadb() {
  [ -d "$DATA/mysql" ] && return 0
  log "initialising data directory $DATA"
  df_make_traversable "$DF_SVC_DIR"
  rm -rf "$DATA" "$STAMP"
  mkdir -p "$DATA" "$BINLOG_DIR"
  chown -R mysql:mysql "$DF_SVC_DIR"
  write_cnf
  if ! mariadb-install-db --defaults-file="$CNF" --user=mysql --datadir="$DATA" \
    --skip-test-db --auth-root-authentication-method=socket </dev/null >"$DF_SVC_DIR/install-db.log" 2>&1 9>&-; then
    rm -rf "$DATA"
    df_fail_with_log "$DF_SVC_DIR/install-db.log" "mariadb-install-db failed"
  fi
}

bootstrap_sql() {
  [ -e "$STAMP" ] && return 0
  log "creating user deltaforge@'%' and database deltaforge"
  mariadb --defaults-file="$CNF" -uroot <<'EOF' >&2
CREATE USER IF NOT EXISTS 'deltaforge'@'%' IDENTIFIED BY 'deltaforge';
ALTER USER 'deltaforge'@'%' IDENTIFIED BY 'deltaforge';
GRANT ALL PRIVILEGES ON *.* TO 'deltaforge'@'%';
CREATE DATABASE IF NOT EXISTS deltaforge;
FLUSH PRIVILEGES;
EOF
  touch "$STAMP"
}

start_mariadb() {
  install_mariadb
  init_mariadb
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
  else
    df_check_port_free "$PORT" DF_MARIADB_PORT
    write_cnf
    mkdir -p "$BINLOG_DIR"
    chown mysql:mysql "$DF_SVC_DIR" "$BINLOG_DIR"
    rm -f "$PIDFILE"
    log "starting on 127.0.0.1:$PORT (log $ERRLOG)"
    # --defaults-file must be the first option.
    setsid nohup mariadbd --defaults-file="$CNF" </dev/null >>"$OUTLOG" 2>&1 9>&- &
    local pid=$! i ok=0 timeout="${DF_MARIADB_START_TIMEOUT:-90}"
    for ((i = 0; i < timeout * 10; i++)); do
      if mariadb-admin --defaults-file="$CNF" -uroot --connect-timeout=2 ping >/dev/null 2>&1; then
        ok=1
        break
      fi
      if ! df_proc_alive "$pid" && ! running; then
        df_fail_with_log "$ERRLOG" "mariadbd exited during startup (see also $OUTLOG)"
      fi
      sleep 0.1
    done
    [ "$ok" = 1 ] || df_fail_with_log "$ERRLOG" "MariaDB not ready after ${timeout}s"
  fi
  bootstrap_sql
  if ! mariadb --defaults-file="$CNF" --protocol=TCP -h 127.0.0.1 -P "$PORT" -udeltaforge -pdeltaforge -e 'SELECT 1' deltaforge >/dev/null 2>&1; then
    df_fail_with_log "$ERRLOG" "TCP login as deltaforge@127.0.0.1:$PORT failed"
  fi
  # A server already running keeps the settings of the my.cnf it started
  # with; binlog_row_metadata is dynamic, so make sure it is FULL now (the
  # CDC source builds schemas from it; see crates/sources/mysql).
  if ! mariadb --defaults-file="$CNF" --protocol=TCP -h 127.0.0.1 -P "$PORT" -udeltaforge -pdeltaforge \
    -e "SET GLOBAL binlog_row_metadata = 'FULL'" >/dev/null 2>&1; then
    df_fail_with_log "$ERRLOG" "SET GLOBAL binlog_row_metadata = 'FULL' failed"
  fi
  echo "$URL"
}

stop_mariadb() {
  df_stop_pid "$PIDFILE" mariadbd "${DF_MARIADB_STOP_TIMEOUT:-120}"
}

case "$ACTION" in
  start) start_mariadb ;;
  stop) stop_mariadb ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  *) df_usage ;;
esac
