# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (sourced, not run).

# Prints the port a server wrote to its --ready-file ($1) once it is there; fails when the server
# ($2: its pid) exits first or after ${3:-10} seconds.
wait_port() {
  local tries=$(( ${3:-10} * 20 ))
  for _ in $(seq 1 "$tries"); do
    [[ -s "$1" ]] && { cat "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
