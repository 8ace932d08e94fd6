#!/usr/bin/env bash
# Start (default), stop or query several local services.
# usage: all.sh [start|stop|status] [postgres mariadb redis nats kafka prometheus s3 ...]
#   start  prints one NAME=URL line per service on stdout; exits non-zero if any failed.
#   stop   stops them (in reverse order).
#   status prints one status line per service; exits non-zero if any is stopped.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL=(postgres mariadb redis nats kafka prometheus s3 chromium)

ACTION=start
case "${1:-}" in
  start | stop | status) ACTION="$1"; shift ;;
esac
if [ "$#" -gt 0 ]; then NAMES=("$@"); else NAMES=("${ALL[@]}"); fi

for n in "${NAMES[@]}"; do
  [ -x "$HERE/$n.sh" ] || { echo "[all] unknown service '$n' (known: ${ALL[*]})" >&2; exit 2; }
done

failed=()
case "$ACTION" in
  start)
    for n in "${NAMES[@]}"; do
      t0=$(date +%s%N)
      if url="$("$HERE/$n.sh" start | tail -n 1)" && [ -n "$url" ]; then
        ms=$((($(date +%s%N) - t0) / 1000000))
        printf '[all] %s ready in %d.%03ds\n' "$n" $((ms / 1000)) $((ms % 1000)) >&2
        echo "$n=$url"
      else
        echo "[all] $n FAILED to start" >&2
        failed+=("$n")
      fi
    done
    ;;
  stop)
    for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do
      "$HERE/${NAMES[i]}.sh" stop || failed+=("${NAMES[i]}")
    done
    ;;
  status)
    for n in "${NAMES[@]}"; do
      "$HERE/$n.sh" status || failed+=("$n")
    done
    ;;
esac

if [ "${#failed[@]}" -gt 0 ]; then
  echo "[all] $ACTION failed for: ${failed[*]}" >&2
  exit 1
fi
