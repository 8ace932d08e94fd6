#!/usr/bin/env bash
# Prometheus (Debian prometheus, which also ships promtool) on 127.0.0.1:${DF_PROMETHEUS_PORT:-59090},
# scraping every target listed in file_sd files and evaluating deploy/prometheus/alerts.yml.
# usage: prometheus.sh [start|stop|status]   — start prints the URL as the last stdout line.
#
# Generated config ($DF_SVC_DIR/prometheus.yml, rewritten on each start; a running
# server is reloaded when it changed):
#   * scrape and evaluation interval ${DF_PROMETHEUS_INTERVAL:-1s} (short, for tests);
#   * job "deltaforge": targets from $DF_SVC_DIR/targets/*.json (file_sd, re-read
#     within a second): a test writes its own file, e.g.
#     [{"targets": ["127.0.0.1:9000"], "labels": {"instance": "mine"}}], and removes it;
#     DF_PROMETHEUS_TARGET=host:port writes targets/default.json with that one target;
#   * rule_files: ${DF_PROMETHEUS_RULES:-<repo>/deploy/prometheus/alerts.yml} (space-separated
#     list) plus $DF_SVC_DIR/rules.d/*.yml, where a test may put its own rules and then
#     POST /-/reload (the lifecycle API is on).
# DF_PROMETHEUS_CONFIG=/path/prometheus.yml runs with that file instead of the generated one.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_PROMETHEUS_PORT:-59090}"
URL="http://127.0.0.1:${PORT}"
INTERVAL="${DF_PROMETHEUS_INTERVAL:-1s}"
RULES="${DF_PROMETHEUS_RULES:-$DF_REPO_ROOT/deploy/prometheus/alerts.yml}"

df_init prometheus
PIDFILE="$DF_SVC_DIR/prometheus.pid"
LOGFILE="$DF_SVC_DIR/prometheus.log"
GENERATED="$DF_SVC_DIR/prometheus.yml"
CONFIG="${DF_PROMETHEUS_CONFIG:-$GENERATED}"

cd /

running() { df_pid_alive "$PIDFILE" prometheus; }

ready() { curl -fsS -m 2 "$URL/-/ready" >/dev/null 2>&1; }

install_prometheus() {
  df_need_cmd curl curl
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    # Keep the package from starting its own server (we run the binary ourselves).
    local policy=/usr/sbin/policy-rc.d backup=""
    if [ -e "$policy" ]; then
      backup="$(mktemp /tmp/policy-rc.d.XXXXXX)"
      cp -p "$policy" "$backup"
    fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    local rc=0
    (df_apt_install prometheus) || rc=$?
    if [ -n "$backup" ]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi
    [ "$rc" = 0 ] || die "installing prometheus failed"
  fi
  command -v prometheus >/dev/null 2>&1 || die "prometheus missing after installing the prometheus package"
  command -v promtool >/dev/null 2>&1 || die "promtool missing after installing the prometheus package"
}

write_config() {
  mkdir -p "$DF_SVC_DIR/data" "$DF_SVC_DIR/targets" "$DF_SVC_DIR/rules.d"
  if [ -n "${DF_PROMETHEUS_TARGET:-}" ]; then
    printf '[{"targets": ["%s"], "labels": {"instance": "default"}}]\n' "$DF_PROMETHEUS_TARGET" \
      >"$DF_SVC_DIR/targets/default.json"
  fi
  local tmp="$GENERATED.tmp" f
  {
    echo "# Written by scripts/services/prometheus.sh — do not edit (regenerated on start)."
    echo "global:"
    echo "  scrape_interval: $INTERVAL"
    echo "  scrape_timeout: $INTERVAL"
    echo "  evaluation_interval: $INTERVAL"
    echo "rule_files:"
    for f in $RULES; do echo "  - \"$f\""; done
    echo "  - \"$DF_SVC_DIR/rules.d/*.yml\""
    echo "scrape_configs:"
    echo "  - job_name: deltaforge"
    echo "    file_sd_configs:"
    echo "      - files: [\"$DF_SVC_DIR/targets/*.json\"]"
    echo "        refresh_interval: 1s"
  } >"$tmp"
  if cmp -s "$tmp" "$GENERATED"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$GENERATED"
  return 0
}

start_prometheus() {
  install_prometheus
  local changed=0
  write_config && changed=1
  if [ "$CONFIG" != "$GENERATED" ]; then changed=1; fi
  if running; then
    if [ "$changed" = 1 ]; then
      log "already running (pid $(df_pid_of "$PIDFILE")); reloading its configuration"
      curl -fsS -m 10 -X POST "$URL/-/reload" >&2 || kill -HUP "$(df_pid_of "$PIDFILE")"
    else
      log "already running (pid $(df_pid_of "$PIDFILE"))"
    fi
  else
    df_check_port_free "$PORT" DF_PROMETHEUS_PORT
    rm -f "$PIDFILE"
    log "starting on 127.0.0.1:$PORT (config $CONFIG, log $LOGFILE)"
    setsid prometheus --config.file="$CONFIG" --storage.tsdb.path="$DF_SVC_DIR/data" \
      --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$PORT" \
      --web.enable-lifecycle --web.enable-admin-api \
      </dev/null >>"$LOGFILE" 2>&1 9>&- &
    echo $! >"$PIDFILE"
  fi
  local i timeout="${DF_PROMETHEUS_START_TIMEOUT:-30}"
  for ((i = 0; i < timeout * 10; i++)); do
    ready && { echo "$URL"; return 0; }
    # By pid first: while the process execs, its command line reads empty for
    # a moment, so the name check alone fails a server that is starting (seen on CI).
    df_proc_alive "$(df_pid_of "$PIDFILE")" || running ||
      df_fail_with_log "$LOGFILE" "prometheus exited during start"
    sleep 0.1
  done
  df_fail_with_log "$LOGFILE" "Prometheus not ready on $URL/-/ready after ${timeout}s"
}

case "$ACTION" in
  start) start_prometheus ;;
  stop) df_stop_pid "$PIDFILE" prometheus "${DF_PROMETHEUS_STOP_TIMEOUT:-30}" ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  *) df_usage ;;
esac
