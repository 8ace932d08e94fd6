#!/usr/bin/env bash
# PostgreSQL 15 (Debian) on 127.0.0.1:${DF_PG_PORT:-55432} with wal_level=logical.
# usage: postgres.sh [start|stop|status]   — start prints the URL as the last stdout line.
# TLS: the server accepts TLS as well as plain connections. `start` creates,
# once, a self-signed CA and a server certificate for localhost and 127.0.0.1
# in $DF_SVC_DIR/tls/; the CA for `sslrootcert=` is at the fixed path
# ${DELTAFORGE_SERVICES_DIR:-<repo>/.services}/postgres/tls/ca.crt. A data
# directory made before TLS was added gets it on its next `start` (with a
# configuration reload when the server is already running).
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
TLSDIR="$DF_SVC_DIR/tls"

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

# ensure_certs — a CA (tls/ca.crt; its key tls/ca.key, root only) and a
# server certificate signed by it for DNS:localhost and IP:127.0.0.1
# (tls/server.crt; key tls/server.key, owned by postgres, 0600). Made once;
# made again only when a file is missing or the server certificate expires
# within a day.
ensure_certs() {
  if [ -s "$TLSDIR/ca.crt" ] && [ -s "$TLSDIR/server.crt" ] && [ -s "$TLSDIR/server.key" ] &&
    openssl x509 -checkend 86400 -noout -in "$TLSDIR/server.crt" >/dev/null 2>&1; then
    return 0
  fi
  df_need_cmd openssl openssl
  log "creating a test CA and a server certificate in $TLSDIR"
  local tmp
  tmp="$(mktemp -d "$DF_SVC_DIR/.tls.XXXXXX")"
  if ! (
    set -e
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=DeltaForge test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr -subj "/CN=localhost"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
    openssl x509 -req -sha256 -days 3650 -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -extfile server.ext -out server.crt
  ) </dev/null >"$DF_SVC_DIR/openssl.log" 2>&1; then
    rm -rf "$tmp"
    df_fail_with_log "$DF_SVC_DIR/openssl.log" "creating the TLS certificates failed"
  fi
  mkdir -p "$TLSDIR"
  chmod 755 "$TLSDIR"
  chmod 600 "$tmp/ca.key" "$tmp/server.key"
  chmod 644 "$tmp/ca.crt" "$tmp/server.crt"
  chown postgres:postgres "$tmp/server.key" "$tmp/server.crt"
  mv -f "$tmp/ca.key" "$tmp/ca.crt" "$tmp/server.key" "$tmp/server.crt" "$TLSDIR/"
  rm -rf "$tmp"
  CERTS_NEW=1
}

# write_tls_conf — the TLS settings, in their own file included from
# postgresql.conf (the include is added to data directories made before it).
write_tls_conf() {
  ensure_certs
  {
    echo "# Written by scripts/services/postgres.sh on each start — do not edit."
    echo "ssl = on"
    echo "ssl_cert_file = '$TLSDIR/server.crt'"
    echo "ssl_key_file = '$TLSDIR/server.key'"
  } >"$DATA/deltaforge-tls.conf"
  chown postgres:postgres "$DATA/deltaforge-tls.conf"
  if ! grep -qxF "include_if_exists = 'deltaforge-tls.conf'" "$DATA/postgresql.conf"; then
    echo "include_if_exists = 'deltaforge-tls.conf'" >>"$DATA/postgresql.conf"
  fi
}

# psql_q SQL — one query on the running server, unaligned output.
psql_q() { psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAXc "$1"; }

# enable_tls_running — a server started before TLS was configured (or whose
# certificate was just renewed): reload its configuration (the ssl settings
# take effect on reload) and wait for ssl to be on.
CERTS_NEW=0
enable_tls_running() {
  [ "$CERTS_NEW" = 0 ] && [ "$(psql_q "SHOW ssl")" = "on" ] && return 0
  log "turning TLS on / loading the new certificate (reloading the configuration)"
  psql_q "SELECT pg_reload_conf()" >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(psql_q "SHOW ssl")" = "on" ] && return 0
    sleep 0.1
  done
  df_fail_with_log "$LOGFILE" "ssl is still off after reloading the configuration (the log says why)"
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
  write_tls_conf
  local was_running=0
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
    was_running=1
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
  if [ "$was_running" = 1 ]; then enable_tls_running; fi
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
