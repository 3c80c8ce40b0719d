#!/usr/bin/env bash
# The demo: builds Citrus, then runs backend, hub and agent on loopback with a SQLite file under
# data/ (override with CITRUS_DATA). The first run writes the configuration files and keys with
# `citrus-backend init` (data/etc/) and creates demo users; later runs reuse them. Stop with Ctrl-C.
#
#   scripts/demo.sh            build and run
#   CITRUS_DEMO_PORT=9090 scripts/demo.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CITRUS_BUILD_DIR:-$root/build/demo}"
data="${CITRUS_DATA:-$root/data}"
backend_port="${CITRUS_DEMO_PORT:-8080}"
hub_port="${CITRUS_DEMO_HUB_PORT:-7000}"
agent_metrics_port="${CITRUS_DEMO_AGENT_METRICS_PORT:-9470}"

"$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCITRUS_BUILD_TESTS=OFF \
  -DCITRUS_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target citrus-backend citrus-hub citrus-agent -j "$(nproc)"
bin="$build/apps"
backend="$bin/backend/citrus-backend"

umask 077
etc="$data/etc"
mkdir -p "$data/logs"
if [ ! -s "$etc/backend.toml" ]; then
  if [ -e "$data/citrus.db" ]; then
    echo "$data holds a database from an older demo without configuration files: move it away" >&2
    echo "(mv $data $data.old) and run scripts/demo.sh again." >&2
    exit 1
  fi
  echo "First run: writing the configuration, keys and demo users in $data"
  # The same command an operator runs once on a new installation (docs/configuration.md).
  "$backend" init --config-dir "$etc" --data-dir "$data" --web-root "$root/apps/web" \
    --backend-listen "127.0.0.1:$backend_port" --hub-listen "127.0.0.1:$hub_port" \
    --agent-metrics-listen "127.0.0.1:$agent_metrics_port" >/dev/null
  printf 'alice-demo\n' | "$backend" user add alice --config "$etc/backend.toml" >/dev/null
  printf 'bob-demo\n' | "$backend" user add bob --config "$etc/backend.toml" >/dev/null
  printf 'admin-demo\n' | "$backend" user add admin --admin --config "$etc/backend.toml" >/dev/null
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "Stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Waits until NAME wrote its port to FILE (--ready-file); if it does not, shows why and stops.
wait_ready() {
  local name="$1" file="$2" port_variable="$3"
  for _ in $(seq 100); do [ -s "$file" ] && return 0; sleep 0.1; done
  echo "The $name did not start:" >&2
  grep -v '^{' "$data/logs/$name.log" | tail -n 3 >&2
  echo "(If its port is taken, choose another: $port_variable=PORT scripts/demo.sh)" >&2
  exit 1
}

rm -f "$data/backend.port" "$data/hub.port"
# Everything comes from the files init wrote; only the ports are given here, so that
# CITRUS_DEMO_PORT and CITRUS_DEMO_HUB_PORT work on every run (the command line wins over the file).
"$backend" serve --config "$etc/backend.toml" --listen "127.0.0.1:$backend_port" \
  --hub-url "ws://127.0.0.1:$hub_port/" \
  --allowed-origin "http://127.0.0.1:$backend_port" --allowed-origin "http://localhost:$backend_port" \
  --ready-file "$data/backend.port" 2>>"$data/logs/backend.log" &
pids+=($!)
wait_ready backend "$data/backend.port" CITRUS_DEMO_PORT

"$bin/hub/citrus-hub" --config "$etc/hub.toml" --listen "127.0.0.1:$hub_port" \
  --verify-url "http://127.0.0.1:$backend_port/api/verify-agent" \
  --ready-file "$data/hub.port" 2>>"$data/logs/hub.log" &
pids+=($!)
wait_ready hub "$data/hub.port" CITRUS_DEMO_HUB_PORT

rm -f "$data/agent.port"
"$bin/agent/citrus-agent" --config "$etc/agent.toml" --hub-url "ws://127.0.0.1:$hub_port/" \
  --metrics-listen "127.0.0.1:$agent_metrics_port" --ready-file "$data/agent.port" 2>>"$data/logs/agent.log" &
pids+=($!)
wait_ready agent "$data/agent.port" CITRUS_DEMO_AGENT_METRICS_PORT

sleep 1
cat <<EOF

Citrus is running (configuration in $etc, logs in $data/logs, sites served from $data/sites).

  Open   http://127.0.0.1:$backend_port/
  Log in as  alice / alice-demo   or   bob / bob-demo   (admin / admin-demo administers agents)

  Hub metrics:      curl http://127.0.0.1:$hub_port/metrics
  Agent metrics:    curl http://127.0.0.1:$agent_metrics_port/metrics
  Backend health:   curl http://127.0.0.1:$backend_port/healthz

Press Ctrl-C to stop.
EOF
wait -n "${pids[@]}" || true
echo "A process exited; see $data/logs." >&2
