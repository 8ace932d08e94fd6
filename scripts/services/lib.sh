# shellcheck shell=bash
# Common helpers for scripts/services/*.sh — sourced, not executed.
#
# Conventions shared by every service script:
#   * progress and errors go to stderr; on `start` the ONLY stdout line is the
#     connection string (printed last);
#   * everything a service owns lives in $DF_SVC_DIR = ${DELTAFORGE_SERVICES_DIR:-<repo>/.services}/<name>/;
#   * a per-service flock serialises concurrent invocations of the same script;
#   * daemons are started with stdin/stdout/stderr redirected and the lock fd
#     closed, so `url=$(scripts/services/x.sh)` returns as soon as it is ready.

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export DEBIAN_FRONTEND=noninteractive

DF_SERVICES_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DF_REPO_ROOT="$(cd "$DF_SERVICES_LIB_DIR/../.." && pwd)"
DF_SERVICES_BASE="${DELTAFORGE_SERVICES_DIR:-$DF_REPO_ROOT/.services}"
DF_LOCK_FD=9

log() { printf '[%s] %s\n' "${DF_SVC_NAME:-services}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# df_init NAME — sets DF_SVC_NAME / DF_SVC_DIR, creates the folder, takes the lock.
df_init() {
  DF_SVC_NAME="$1"
  mkdir -p "$DF_SERVICES_BASE"
  DF_SERVICES_BASE="$(cd "$DF_SERVICES_BASE" && pwd)"
  DF_SVC_DIR="$DF_SERVICES_BASE/$DF_SVC_NAME"
  mkdir -p "$DF_SVC_DIR"
  # Serialise concurrent runs of the same script (fd 9 is closed for daemons).
  eval "exec ${DF_LOCK_FD}>\"\$DF_SVC_DIR/.lock\""
  if ! flock -w 600 "$DF_LOCK_FD"; then
    die "could not take lock $DF_SVC_DIR/.lock within 600 s"
  fi
}

# Make every parent of $1 traversable (o+x) so that a non-root service user
# (postgres, mysql) can reach its folder. Only touches directories that lack it.
df_make_traversable() {
  local d
  d="$(dirname "$1")"
  while [ "$d" != "/" ]; do
    if [ "$(( 0$(stat -c '%a' "$d") & 1 ))" -eq 0 ]; then
      log "adding o+x to $d so the service user can reach its folder"
      chmod o+x "$d"
    fi
    d="$(dirname "$d")"
  done
}

# ---------------------------------------------------------------- apt helpers
DF_APT_STAMP="${DF_APT_STAMP:-/var/lib/apt/deltaforge-apt-updated.stamp}"
DF_APT_OPTS=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --no-install-recommends)

df_apt_update_once() {
  if [ -e "$DF_APT_STAMP" ]; then
    return 1 # already updated once on this machine: nothing more to try
  fi
  log "apt-get update (once per machine; stamp $DF_APT_STAMP)"
  apt-get -q -o DPkg::Lock::Timeout=600 update >&2
  mkdir -p "$(dirname "$DF_APT_STAMP")"
  touch "$DF_APT_STAMP"
}

# df_apt_install PKG... — install packages; runs `apt-get update` (at most once
# per machine) only if the first attempt fails. Serialised by a machine-wide lock.
df_apt_install() {
  log "installing Debian packages: $*"
  (
    flock -w 900 8 || die "could not take /var/lock/deltaforge-apt.lock"
    if [ ! -e "$DF_APT_STAMP" ] && ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
      df_apt_update_once || true
    fi
    if ! apt-get install "${DF_APT_OPTS[@]}" "$@" </dev/null >&2; then
      df_apt_update_once || die "apt-get install $* failed (apt-get update already done once on this machine; remove $DF_APT_STAMP to force another)"
      apt-get install "${DF_APT_OPTS[@]}" "$@" </dev/null >&2 || die "apt-get install $* failed"
    fi
  ) 8>/var/lock/deltaforge-apt.lock
}

df_need_cmd() { # df_need_cmd COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || df_apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# ---------------------------------------------------------- process helpers
# df_pid_alive PIDFILE PATTERN — true if the pid in PIDFILE is alive and its
# command line contains PATTERN (guards against stale pid files / pid reuse).
df_pid_alive() {
  local pidfile="$1" pattern="$2" pid
  [ -s "$pidfile" ] || return 1
  pid="$(head -n1 "$pidfile" | tr -dc '0-9')"
  [ -n "$pid" ] || return 1
  df_proc_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

# df_proc_alive PID — alive and not a zombie (PID 1 here may reap late).
df_proc_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [ "$state" != "Z" ]
}

# df_wait_reaped PID [TIMEOUT] — wait until a dead (zombie) PID has been reaped.
df_wait_reaped() {
  local i
  for ((i = 0; i < ${2:-60} * 10; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    df_proc_alive "$1" && return 0 # alive and not a zombie: nothing to wait for
    sleep 0.1
  done
  log "pid $1 is still a zombie after ${2:-60}s"
}

df_pid_of() { head -n1 "$1" 2>/dev/null | tr -dc '0-9'; }

# df_port_busy PORT — true if something listens on 127.0.0.1:PORT.
df_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

df_check_port_free() { # df_check_port_free PORT ENVVAR
  if df_port_busy "$1"; then
    die "port $1 on 127.0.0.1 is already in use by another process (not ours); set $2 to another port"
  fi
}

# df_stop_pid PIDFILE PATTERN TIMEOUT — SIGTERM, wait, SIGKILL as last resort.
df_stop_pid() {
  local pidfile="$1" pattern="$2" timeout="${3:-60}" pid i
  if ! df_pid_alive "$pidfile" "$pattern"; then
    log "not running"
    rm -f "$pidfile"
    return 0
  fi
  pid="$(df_pid_of "$pidfile")"
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    df_proc_alive "$pid" || { rm -f "$pidfile"; log "stopped"; return 0; }
    sleep 0.1
  done
  log "pid $pid did not exit within ${timeout}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
  rm -f "$pidfile"
}

# df_fail_with_log LOGFILE MESSAGE — print the log tail and exit 1.
df_fail_with_log() {
  local logfile="$1"
  shift
  log "ERROR: $*"
  if [ -f "$logfile" ]; then
    log "---- last 40 lines of $logfile ----"
    tail -n 40 "$logfile" >&2 || true
    log "---- end of $logfile ----"
  else
    log "(no log file at $logfile)"
  fi
  exit 1
}

df_usage() {
  echo "usage: $0 [start|stop|status]" >&2
  exit 2
}

# df_status RUNNING(0/1) URL PID — prints status on stdout; exit 0 running, 3 stopped.
df_status() {
  if [ "$1" = 0 ]; then
    echo "$DF_SVC_NAME running (pid $3) $2"
    exit 0
  fi
  echo "$DF_SVC_NAME stopped"
  exit 3
}
