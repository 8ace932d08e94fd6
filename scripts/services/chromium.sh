#!/usr/bin/env bash
# Headless Chromium for the console's browser tests: Debian's `chromium` and
# `chromium-driver`, with chromedriver (WebDriver) on 127.0.0.1:${DF_CHROMEDRIVER_PORT:-59515}.
# The tests open their own headless browser sessions through it.
# usage: chromium.sh [start|stop|status]   — start prints the WebDriver URL as the last stdout line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_CHROMEDRIVER_PORT:-59515}"
URL="http://127.0.0.1:${PORT}"

df_init chromium
PIDFILE="$DF_SVC_DIR/chromedriver.pid"
LOGFILE="$DF_SVC_DIR/chromedriver.log"

cd /

running() { df_pid_alive "$PIDFILE" chromedriver; }

ready() { curl -fsS "$URL/status" 2>/dev/null | grep -q '"ready": *true'; }

start_chromedriver() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    df_apt_install chromium chromium-driver fonts-dejavu-core
  fi
  df_need_cmd curl curl
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
  else
    df_check_port_free "$PORT" DF_CHROMEDRIVER_PORT
    rm -f "$PIDFILE"
    log "starting chromedriver on 127.0.0.1:$PORT (log $LOGFILE)"
    nohup chromedriver --port="$PORT" --allowed-ips=127.0.0.1 --log-path="$LOGFILE" \
      </dev/null >>"$DF_SVC_DIR/chromedriver.out" 2>&1 9>&- &
    echo $! >"$PIDFILE"
  fi
  local i timeout="${DF_CHROMIUM_START_TIMEOUT:-30}"
  for ((i = 0; i < timeout * 10; i++)); do
    ready && { echo "$URL"; return 0; }
    sleep 0.1
  done
  df_fail_with_log "$LOGFILE" "chromedriver not ready on $URL after ${timeout}s"
}

case "$ACTION" in
  start) start_chromedriver ;;
  stop) df_stop_pid "$PIDFILE" chromedriver "${DF_CHROMIUM_STOP_TIMEOUT:-30}" ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  *) df_usage ;;
esac
