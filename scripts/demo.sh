#!/usr/bin/env bash
# The demo: builds Citrus, then runs backend, hub and agent on loopback with a SQLite file under
# data/ (override with CITRUS_DATA). The first run creates demo users and the agent, commander and hub
# keys; later runs reuse them. Stop with Ctrl-C.
#
#   scripts/demo.sh            build and run
#   CITRUS_DEMO_PORT=9090 scripts/demo.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CITRUS_BUILD_DIR:-$root/build/demo}"
data="${CITRUS_DATA:-$root/data}"
backend_port="${CITRUS_DEMO_PORT:-8080}"
hub_port="${CITRUS_DEMO_HUB_PORT:-7000}"

"$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCITRUS_BUILD_TESTS=OFF \
  -DCITRUS_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target citrus-backend citrus-hub citrus-agent -j "$(nproc)"
bin="$build/apps"
backend="$bin/backend/citrus-backend"

umask 077
mkdir -p "$data/keys" "$data/logs"
db="$data/citrus.db"
key() { tail -n 1; }  # the key is the last line the register commands print

if [ ! -s "$data/keys/agent.key" ]; then
  echo "First run: creating demo users and credentials in $data"
  printf 'alice-demo\n' | "$backend" user add alice --db "$db" >/dev/null
  printf 'bob-demo\n' | "$backend" user add bob --db "$db" >/dev/null
  printf 'admin-demo\n' | "$backend" user add admin --admin --db "$db" >/dev/null
  "$backend" commander register backend-1 --agents agent-1 --db "$db" | key > "$data/keys/commander.key"
  "$backend" hub register hub-1 --db "$db" | key > "$data/keys/hub.key"
  "$backend" agent register agent-1 --trust backend-1 --db "$db" | key > "$data/keys/agent.key"
  head -c 48 /dev/urandom | base64 > "$data/keys/jwt.secret"
fi

web_args=()
[ -d "$root/apps/web" ] && web_args=(--web-root "$root/apps/web")

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
"$backend" serve --listen "127.0.0.1:$backend_port" --db "$db" --hub-url "ws://127.0.0.1:$hub_port/" \
  --commander-id backend-1 --commander-key-file "$data/keys/commander.key" \
  --jwt-secret-file "$data/keys/jwt.secret" "${web_args[@]}" \
  --allowed-origin "http://127.0.0.1:$backend_port,http://localhost:$backend_port" \
  --ready-file "$data/backend.port" 2>>"$data/logs/backend.log" &
pids+=($!)
wait_ready backend "$data/backend.port" CITRUS_DEMO_PORT

"$bin/hub/citrus-hub" --listen "127.0.0.1:$hub_port" --db "$db" \
  --verify-url "http://127.0.0.1:$backend_port/api/verify-agent" --hub-id hub-1 \
  --hub-key-file "$data/keys/hub.key" --ready-file "$data/hub.port" 2>>"$data/logs/hub.log" &
pids+=($!)
wait_ready hub "$data/hub.port" CITRUS_DEMO_HUB_PORT

CITRUS_AGENT_KEY="$(cat "$data/keys/agent.key")" "$bin/agent/citrus-agent" --hub-url "ws://127.0.0.1:$hub_port/" \
  --agent-id agent-1 --trust backend-1 --root "$data/sites" 2>>"$data/logs/agent.log" &
pids+=($!)

sleep 1
cat <<EOF

Citrus is running (logs in $data/logs, sites served from $data/sites).

  Open   http://127.0.0.1:$backend_port/
  Log in as  alice / alice-demo   or   bob / bob-demo   (admin / admin-demo administers agents)

  Hub metrics:      curl http://127.0.0.1:$hub_port/metrics
  Backend health:   curl http://127.0.0.1:$backend_port/healthz

Press Ctrl-C to stop.
EOF
wait -n "${pids[@]}" || true
echo "A process exited; see $data/logs." >&2
