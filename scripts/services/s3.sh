#!/usr/bin/env bash
# S3-compatible server (moto in server mode, from PyPI) on 127.0.0.1:${DF_S3_PORT:-59000},
# in-memory, any credentials accepted, plus DuckDB (PyPI) in the same venv for tests
# and benchmarks that read the written Parquet files back.
# usage: s3.sh [start|stop|status|python]
#   start   prints the endpoint URL as the last stdout line
#   python  prints the venv's python (with boto3 and duckdb) on stdout
#
# Why moto: it installs from PyPI in seconds (no Rust build like garage, no
# binary download like MinIO, which is not on a reachable registry), speaks
# enough of S3 for object_store (PUT, multipart uploads, LIST v2, GET,
# DELETE), and runs as one process per port, so a test can start its own
# instance (DELTAFORGE_SERVICES_DIR + DF_S3_PORT) and stop it for an outage.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_S3_PORT:-59000}"
URL="http://127.0.0.1:${PORT}"
MOTO_VERSION="${DF_MOTO_VERSION:-5.1.18}"
DUCKDB_VERSION="${DF_DUCKDB_VERSION:-1.4.2}"

df_init s3
PIDFILE="$DF_SVC_DIR/moto.pid"
LOGFILE="$DF_SVC_DIR/moto.log"
# The venv is shared by every instance (it is only software): beside the
# services base, so that a test's own services dir reuses it.
VENV="${DF_S3_VENV:-$DF_SERVICES_BASE/s3/venv}"

cd /

running() { df_pid_alive "$PIDFILE" moto_server; }

ready() { curl -sf -o /dev/null "$URL/moto-api/" 2>/dev/null || curl -sf -o /dev/null "$URL/" 2>/dev/null; }

install_venv() {
  local stamp="$VENV/.deltaforge-$MOTO_VERSION-$DUCKDB_VERSION-pytz"
  [ -e "$stamp" ] && return 0
  (
    flock -w 900 8 || die "could not take $VENV.lock"
    [ -e "$stamp" ] && exit 0
    df_need_cmd curl curl
    log "creating venv $VENV with moto[server]==$MOTO_VERSION and duckdb==$DUCKDB_VERSION (PyPI)"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" "duckdb==$DUCKDB_VERSION" boto3 pytz >&2 \
      || die "pip install of moto[server] / duckdb failed"
    touch "$stamp"
  ) 8>"$VENV.lock"
}

start_s3() {
  mkdir -p "$(dirname "$VENV")"
  install_venv
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
  else
    df_check_port_free "$PORT" DF_S3_PORT
    rm -f "$PIDFILE"
    log "starting moto on 127.0.0.1:$PORT (log $LOGFILE)"
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" </dev/null >>"$LOGFILE" 2>&1 9>&- &
    echo $! >"$PIDFILE"
  fi
  local i timeout="${DF_S3_START_TIMEOUT:-30}"
  for ((i = 0; i < timeout * 10; i++)); do
    ready && { echo "$URL"; return 0; }
    # By pid first: the command line reads empty for a moment while the process execs.
    df_proc_alive "$(df_pid_of "$PIDFILE")" || running ||
      df_fail_with_log "$LOGFILE" "moto exited during start"
    sleep 0.1
  done
  df_fail_with_log "$LOGFILE" "moto not answering on $URL after ${timeout}s"
}

case "$ACTION" in
  start) start_s3 ;;
  stop) df_stop_pid "$PIDFILE" moto_server "${DF_S3_STOP_TIMEOUT:-30}" ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  python)
    mkdir -p "$(dirname "$VENV")"
    install_venv
    echo "$VENV/bin/python"
    ;;
  *) echo "usage: $0 [start|stop|status|python]" >&2; exit 2 ;;
esac
