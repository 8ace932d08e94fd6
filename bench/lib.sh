# Helpers shared by the benchmark scripts (sourced, not run).

# wait_lines FILE N PID LOG [INTERVAL]: waits until FILE holds at least N
# lines; exits the script with LOG's tail if process PID ends first. Counts
# only the bytes added since the last look, so that polling a large file
# costs little CPU beside the process measured.
wait_lines() {
  local file="$1" want="$2" pid="$3" log="$4" interval="${5:-0.1}" n=0 off=0 size alive
  while :; do
    # Liveness first: a process that writes its last lines and exits between
    # the count and the check has still written them.
    alive=1
    kill -0 "$pid" 2>/dev/null || alive=0
    size=$(stat -c %s "$file" 2>/dev/null || echo 0)
    if [ "$size" -gt "$off" ]; then
      n=$((n + $(dd if="$file" iflag=skip_bytes,count_bytes skip="$off" count=$((size - off)) status=none | wc -l)))
      off=$size
    fi
    [ "$n" -ge "$want" ] && return 0
    if [ "$alive" = 0 ]; then echo "deltaforge exited early:" >&2; tail -20 "$log" >&2; exit 1; fi
    sleep "$interval"
  done
}

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# time_rss_mb FILE: peak RSS in MB from a `/usr/bin/time -v -o FILE` report.
time_rss_mb() { awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); printf "%d\n", $2 / 1024}' "$1"; }

# time_cpu_s FILE: user + system CPU seconds from a `/usr/bin/time -v -o FILE` report.
time_cpu_s() { awk -F: '/User time|System time/ {s += $2} END {printf "%.2f\n", s}' "$1"; }

# stop_timed PID: stops the program run under `/usr/bin/time` with pid PID
# (TERM to its children) and waits for the report.
stop_timed() {
  local c
  for c in $(pgrep -P "$1"); do kill -TERM "$c" 2>/dev/null || true; done
  wait "$1" || true
}

# median_of VALUE...: the median of the values given.
median_of() { printf '%s\n' "$@" | median; }

# reader_cols DF_RATE RAW_RATE DF_CPU RAW_CPU RSS_MB: the measurement columns
# of bench/pg.sh and bench/mysql.sh: both rates, their ratio, DeltaForge's CPU
# seconds and µs per event (of ROWS), the server reader's CPU seconds, RSS.
reader_cols() {
  echo "$1" "$2" "$(echo "scale=2; $1 / $2" | bc)" "$3" "$(echo "scale=2; $3 * 1000000 / $ROWS" | bc)" "$4" "$5"
}
