#!/usr/bin/env bash
# NATS 2.9 with JetStream (Debian nats-server) on 127.0.0.1:${DF_NATS_PORT:-54222},
# monitoring on 127.0.0.1:${DF_NATS_HTTP_PORT:-58222}.
# usage: nats.sh [start|stop|status]   — start prints the URL as the last stdout line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_NATS_PORT:-54222}"
HTTP_PORT="${DF_NATS_HTTP_PORT:-58222}"
URL="nats://127.0.0.1:${PORT}"
HEALTHZ="http://127.0.0.1:${HTTP_PORT}/healthz?js-enabled-only=true"

df_init nats
PIDFILE="$DF_SVC_DIR/nats.pid"
LOGFILE="$DF_SVC_DIR/nats.log"
STORE="$DF_SVC_DIR" # nats-server appends /jetstream itself

cd /

running() { df_pid_alive "$PIDFILE" nats-server; }

healthy() { curl -fsS --max-time 2 "$HEALTHZ" >/dev/null 2>&1; }

start_nats() {
  command -v nats-server >/dev/null 2>&1 || df_apt_install nats-server
  df_need_cmd curl curl
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
  else
    df_check_port_free "$PORT" DF_NATS_PORT
    df_check_port_free "$HTTP_PORT" DF_NATS_HTTP_PORT
    rm -f "$PIDFILE"
    log "starting on 127.0.0.1:$PORT, monitoring on 127.0.0.1:$HTTP_PORT (log $LOGFILE)"
    setsid nohup nats-server -a 127.0.0.1 -p "$PORT" --http_port "$HTTP_PORT" -js -sd "$STORE" \
      -P "$PIDFILE" -l "$LOGFILE" </dev/null >>"$DF_SVC_DIR/nats.out" 2>&1 9>&- &
    local pid=$!
    local i timeout="${DF_NATS_START_TIMEOUT:-30}"
    for ((i = 0; i < timeout * 10; i++)); do
      healthy && break
      if ! df_proc_alive "$pid" && ! running; then
        cat "$DF_SVC_DIR/nats.out" >&2 2>/dev/null || true
        df_fail_with_log "$LOGFILE" "nats-server exited during startup"
      fi
      sleep 0.1
    done
  fi
  healthy || df_fail_with_log "$LOGFILE" "NATS JetStream not healthy at $HEALTHZ"
  echo "$URL"
}

case "$ACTION" in
  start) start_nats ;;
  stop) df_stop_pid "$PIDFILE" nats-server "${DF_NATS_STOP_TIMEOUT:-30}" ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  *) df_usage ;;
esac
