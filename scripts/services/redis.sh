#!/usr/bin/env bash
# Redis 7 (Debian redis-server) on 127.0.0.1:${DF_REDIS_PORT:-56379}, no persistence.
# usage: redis.sh [start|stop|status]   — start prints the URL as the last stdout line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_REDIS_PORT:-56379}"
URL="redis://127.0.0.1:${PORT}"

df_init redis
PIDFILE="$DF_SVC_DIR/redis.pid"
LOGFILE="$DF_SVC_DIR/redis.log"

cd /

running() { df_pid_alive "$PIDFILE" redis-server; }

ping() { [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = "PONG" ]; }

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    df_apt_install redis-server redis-tools
  fi
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
  else
    df_check_port_free "$PORT" DF_REDIS_PORT
    rm -f "$PIDFILE"
    log "starting on 127.0.0.1:$PORT (log $LOGFILE)"
    if ! redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --dir "$DF_SVC_DIR" \
      --pidfile "$PIDFILE" --logfile "$LOGFILE" --save "" --appendonly no \
      </dev/null >>"$DF_SVC_DIR/redis.out" 2>&1 9>&-; then
      cat "$DF_SVC_DIR/redis.out" >&2 || true
      df_fail_with_log "$LOGFILE" "redis-server failed to start"
    fi
  fi
  local i timeout="${DF_REDIS_START_TIMEOUT:-30}"
  for ((i = 0; i < timeout * 10; i++)); do
    ping && { echo "$URL"; return 0; }
    sleep 0.1
  done
  df_fail_with_log "$LOGFILE" "Redis not answering PING on 127.0.0.1:$PORT after ${timeout}s"
}

case "$ACTION" in
  start) start_redis ;;
  stop) df_stop_pid "$PIDFILE" redis-server "${DF_REDIS_STOP_TIMEOUT:-30}" ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  *) df_usage ;;
esac
