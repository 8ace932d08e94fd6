# Helpers shared by the benchmark scripts (sourced, not run).

# wait_lines FILE N PID LOG [INTERVAL]: waits until FILE holds at least N
# lines; exits the script with LOG's tail if process PID ends first.
wait_lines() {
  local file="$1" want="$2" pid="$3" log="$4" interval="${5:-0.1}" n
  while :; do
    n=$( (wc -l <"$file") 2>/dev/null || echo 0)
    [ "$n" -ge "$want" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then echo "deltaforge exited early:" >&2; tail -20 "$log" >&2; exit 1; fi
    sleep "$interval"
  done
}

# peak_rss_mb FILE: the peak RSS in MB from a `/usr/bin/time -v` report.
peak_rss_mb() {
  awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print int($2 / 1024)}' "$1"
}

# cpu_seconds FILE: user + system CPU seconds from a `/usr/bin/time -v` report.
cpu_seconds() {
  awk -F: '/User time \(seconds\)/ {u = $2} /System time \(seconds\)/ {s = $2} END {printf "%.2f\n", u + s}' "$1"
}
