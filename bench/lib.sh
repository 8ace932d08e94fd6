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
