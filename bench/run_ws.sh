#!/usr/bin/env bash
# The WebSocket benchmark suite (docs/performance.md): the real citrus-hub and a raw websocketpp relay
# (bench/ws_relay.cpp) over loopback, driven by one C++ load generator (bench/ws_loadgen.cpp).
#
#   bench/run_ws.sh [--build-dir DIR] [--no-build] [--quick] [-- ws_loadgen options...]
#
# 1. builds citrus-hub, citrus-backend, ws_relay and ws_loadgen in Release (default build-bench-ws/);
# 2. registers the commanders and agents with `citrus-backend commander|agent register` (their keys
#    are the last line of stdout) and the scale test's idle agents with `ws_loadgen provision`, in a
#    throw-away database on tmpfs;
# 3. starts citrus-hub (rate limits raised, see below) and ws_relay, both on 127.0.0.1, free ports;
# 4. runs `ws_loadgen run`: hub and relay alternately at W=1 and W=32, then 100/1000/10000 idle
#    connections on each; prints the table, writes DIR/bench/ws-results/ws_results.json;
# 5. renders DIR/bench/ws-results/ws_chart.svg with gnuplot (apt-get install -y gnuplot-nox).
#
# About 2 minutes on 2 cores once built. --quick: 1 repeat of 1 s per cell, 100/1000 idle only (~25 s).
# The hub's defaults allow 20 000 messages/s per connection and 50 000 per identity; one commander
# sends ~50 000 commands/s here, so the suite starts it with --connection-rate and --identity-rate
# 1000000: the token buckets are still checked on every message, they just never run dry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build="$repo/build-bench-ws"
do_build=1
quick=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build="$(realpath -m "$2")"; shift 2 ;;
    --build-dir=*) build="$(realpath -m "${1#*=}")"; shift ;;
    --no-build) do_build=0; shift ;;
    --quick) quick=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "run_ws.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

commanders=4
agents=4
idle_max=10000
suite_args=(--windows 1,32 --seconds 3 --repeats 3 --idle 100,1000,10000 --scale-seconds 2 --scale-repeats 3)
if [[ $quick -eq 1 ]]; then
  idle_max=1000
  suite_args=(--windows 1,32 --seconds 1 --repeats 1 --idle 100,1000 --scale-seconds 1 --scale-repeats 1)
fi

if [[ $do_build -eq 1 ]]; then
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCITRUS_BUILD_TESTS=OFF \
        -DCITRUS_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "$build" --target citrus-hub citrus-backend ws_relay ws_loadgen
fi
hub_bin="$build/apps/hub/citrus-hub"
backend_bin="$build/apps/backend/citrus-backend"
relay_bin="$build/bench/ws_relay"
loadgen_bin="$build/bench/ws_loadgen"
for bin in "$hub_bin" "$backend_bin" "$relay_bin" "$loadgen_bin"; do
  [[ -x "$bin" ]] || { echo "run_ws.sh: $bin is missing (build first, or drop --no-build)" >&2; exit 1; }
done
if ! grep -q 'CMAKE_BUILD_TYPE:STRING=Release' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "run_ws.sh: warning: $build is not a Release build; figures will not be representative" >&2
fi

# Each server and the load generator hold one descriptor per connection (10 000 idle ones + a few).
want_fds=65536
ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt $((idle_max + 1000)) ]]; then
  echo "run_ws.sh: ulimit -n is $(ulimit -n): too low for $idle_max idle connections (run as root)" >&2
  exit 1
fi

out="$build/bench/ws-results"
mkdir -p "$out"
# tmpfs: the database is thrown away, and SQLite's fsyncs (synchronous=FULL) cost nothing there.
work="$(mktemp -d "${TMPDIR_WS_BENCH:-/dev/shm}/citrus-ws-bench.XXXXXX" 2>/dev/null || mktemp -d)"
hub_pid=""
relay_pid=""
cleanup() {
  [[ -n "$hub_pid" ]] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
  [[ -n "$relay_pid" ]] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
  [[ -f "$work/hub.log" ]] && cp "$work/hub.log" "$out/hub.log"
  rm -rf "$work"
}
trap cleanup EXIT

db="$work/citrus.db"
keys="$work/keys.txt"
agent_ids=""
commander_ids=""
for i in $(seq 1 "$agents"); do agent_ids+="${agent_ids:+,}bench-agent-$i"; done
for i in $(seq 1 "$commanders"); do commander_ids+="${commander_ids:+,}bench-cmd-$i"; done
echo "registering $commanders commanders and $agents agents (citrus-backend), $idle_max idle agents (ws_loadgen provision)" >&2
for i in $(seq 1 "$commanders"); do
  key="$("$backend_bin" commander register "bench-cmd-$i" --agents "$agent_ids" --db "$db" 2>/dev/null | tail -n 1)"
  echo "commander bench-cmd-$i $key" >>"$keys"
done
for i in $(seq 1 "$agents"); do
  key="$("$backend_bin" agent register "bench-agent-$i" --trust "$commander_ids" --db "$db" 2>/dev/null | tail -n 1)"
  echo "agent bench-agent-$i $key" >>"$keys"
done
"$loadgen_bin" provision --db "$db" --count "$idle_max" --prefix bench-idle- --trust bench-cmd-1 --out "$keys"

# shellcheck source=bench/common.sh
source "$here/common.sh"  # wait_port

"$hub_bin" --listen 127.0.0.1:0 --db "$db" --ready-file "$work/hub.port" --max-connections $((idle_max + 1000)) \
           --connection-rate 1000000 --identity-rate 1000000 >"$work/hub.out" 2>"$work/hub.log" &
hub_pid=$!
"$relay_bin" --listen 127.0.0.1:0 --ready-file "$work/relay.port" >"$work/relay.out" 2>&1 &
relay_pid=$!
hub_port="$(wait_port "$work/hub.port" "$hub_pid")" || { echo "run_ws.sh: citrus-hub did not start:" >&2; cat "$work/hub.log" >&2; exit 1; }
relay_port="$(wait_port "$work/relay.port" "$relay_pid")" || { echo "run_ws.sh: ws_relay did not start" >&2; exit 1; }

status=0
"$loadgen_bin" run --hub-url "ws://127.0.0.1:$hub_port" --hub-pid "$hub_pid" \
                   --relay-url "ws://127.0.0.1:$relay_port" --relay-pid "$relay_pid" \
                   --keys "$keys" --commanders "$commanders" --agents "$agents" --payload-bytes 200 \
                   --out "$out" "${suite_args[@]}" "${extra[@]}" || status=$?

if command -v gnuplot >/dev/null 2>&1; then
  gnuplot "$out/ws_chart.gp" && echo "chart: $out/ws_chart.svg"
else
  echo "run_ws.sh: gnuplot not found (apt-get install -y gnuplot-nox): no chart; data in $out/*.dat" >&2
fi
exit $status
