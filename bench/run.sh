#!/usr/bin/env bash
# The whole benchmark suite, one command (docs/performance.md): the routing core in process
# (core_routing: hub vs a no-checks forwarder, allocations counted), then the real citrus-hub over
# loopback WebSockets against a raw websocketpp relay (run_ws.sh: throughput, latency, CPU per
# process, 100..10 000 idle connections), then the backend's REST on SQLite and PostgreSQL against
# the last main with storage on the loop (run_storage.sh: requests/s, p99, the loop while a write
# waits for a lock; its own Release build in build-bench-storage/). Release build in build-bench-ws/;
# a few minutes on 2 cores.
# Tables are printed; JSON and the SVG chart go under build-bench-ws/bench/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build="${CITRUS_BENCH_BUILD_DIR:-$repo/build-bench-ws}"

"$repo/scripts/deps.sh" gnuplot-nox
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCITRUS_BUILD_TESTS=OFF \
      -DCITRUS_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target core_routing citrus-hub citrus-backend ws_relay ws_loadgen

echo "== routing core, in process =="
"$build/bench/core_routing" --json="$build/bench/results/core_routing.json"
echo
echo "== citrus-hub over loopback WebSockets =="
"$here/run_ws.sh" --build-dir "$build" --no-build
echo
echo "== citrus-backend's REST on SQLite and PostgreSQL =="
"$here/run_storage.sh"
