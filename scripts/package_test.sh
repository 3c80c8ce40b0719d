#!/usr/bin/env bash
# The Debian package on this machine: builds it with CPack (Release, in BUILD_DIR), installs it with
# apt, writes a configuration with the installed `citrus-backend init`, starts the three installed
# binaries as the package's user with that configuration, and checks their readiness ($NOTIFY_SOCKET,
# as systemd's Type=notify reads it), /healthz, the agent's connection and metrics, and a clean stop; then removes
# the package, the files init wrote and the user. systemd need not run: the binaries are started
# directly, as their units would start them. Needs root (or sudo); refuses to run over an existing
# installation.
#
#   scripts/package_test.sh [BUILD_DIR]        default build/package
# Prints one line per check and ends with "N passed, N failed".
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build/package}"
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

passed=0
failed=0
check() {  # check NAME COMMAND...: runs it, prints ok/FAIL
  local name="$1"
  shift
  if "$@"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

if dpkg-query -W -f='${Status}' citrus 2>/dev/null | grep -q "install ok installed" || [ -e /etc/citrus/backend.toml ]; then
  echo "FAIL citrus is already installed here (or /etc/citrus/backend.toml exists): not testing over it"
  failed=1
  finish
fi
had_user=0
getent passwd citrus >/dev/null && had_user=1

"$root/scripts/deps.sh"
build_package() {
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    -DCITRUS_BUILD_TESTS=OFF -DCITRUS_BUILD_BENCH=OFF -DCITRUS_BUILD_EXAMPLES=OFF >/dev/null &&
    cmake --build "$build" --target citrus-backend citrus-hub citrus-agent -j "$(nproc)" >/dev/null &&
    (cd "$build" && rm -f citrus_*.deb && cpack -G DEB >/dev/null)
}
check "cpack builds the .deb" build_package
deb="$(ls "$build"/citrus_*.deb 2>/dev/null | head -1)"
[ -n "$deb" ] || finish
check "apt installs $(basename "$deb")" $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb"

work="$(mktemp -d /tmp/citrus-package-test.XXXXXX)"
chmod 0755 "$work"  # the package's user sends its readiness to sockets in here
pids=()
cleanup() {
  for pid in "${pids[@]}"; do $sudo_cmd kill -KILL "$pid" 2>/dev/null || true; done
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq citrus >/dev/null 2>&1 || true
  $sudo_cmd rm -rf /etc/citrus /var/lib/citrus "$work"
  [ "$had_user" -eq 0 ] && $sudo_cmd deluser --system citrus >/dev/null 2>&1 || true
}
trap cleanup EXIT

installed() {
  for f in /usr/bin/citrus-backend /usr/bin/citrus-hub /usr/bin/citrus-agent /usr/share/citrus/web/index.html \
    /usr/share/citrus/web/app.js /lib/systemd/system/citrus-backend.service /lib/systemd/system/citrus-hub.service \
    /lib/systemd/system/citrus-agent.service /usr/share/doc/citrus/configuration.md; do
    [ -e "$f" ] || { echo "  missing $f"; return 1; }
  done
}
check "the binaries, the dashboard, the units and the docs are installed" installed
check "the units are Type=notify, as user citrus, hardened" \
  bash -c 'for u in backend hub agent; do f=/lib/systemd/system/citrus-$u.service
    grep -qx "Type=notify" $f && grep -qx "User=citrus" $f && grep -qx "NoNewPrivileges=yes" $f &&
    grep -qx "ProtectSystem=strict" $f || exit 1; done'
check "the package made the user citrus and its directories (0700)" \
  bash -c '[ "$(stat -c %U:%a /var/lib/citrus)" = citrus:700 ] && [ "$(stat -c %U:%a /etc/citrus)" = citrus:700 ]'
check "citrus-backend --version answers" bash -c '/usr/bin/citrus-backend --version | grep -Eq "^citrus-backend [0-9]+\.[0-9]+\.[0-9]+$"'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend_port="$(free_port)"
hub_port="$(free_port)"
agent_metrics_port="$(free_port)"
# setpriv execs (no supervisor process in between): the pid we signal is the service itself.
as_citrus() { (cd / && $sudo_cmd setpriv --reuid citrus --regid citrus --init-groups -- "$@"); }
check "init writes the installed layout (FHS defaults)" \
  as_citrus /usr/bin/citrus-backend init --backend-listen "127.0.0.1:$backend_port" --hub-listen "127.0.0.1:$hub_port" \
  --agent-metrics-listen "127.0.0.1:$agent_metrics_port"
check "init's keys are 0600 in a 0700 directory" \
  bash -c '[ "$(stat -c %a /etc/citrus/keys)" = 700 ] && for f in /etc/citrus/keys/*; do [ "$(stat -c %a "$f")" = 600 ] || exit 1; done'
refuses_overwrite() { ! as_citrus /usr/bin/citrus-backend init 2>/dev/null; }
check "init refuses to overwrite" refuses_overwrite
check "the configuration names the installed dashboard" grep -q '^web-root = "/usr/share/citrus/web"$' /etc/citrus/backend.toml
for exe in backend hub agent; do
  args=(--config "/etc/citrus/$exe.toml" --check-config)
  [ "$exe" = backend ] && args=(serve "${args[@]}")
  check "citrus-$exe --check-config accepts init's file" as_citrus "/usr/bin/citrus-$exe" "${args[@]}"
done

# Receives the $NOTIFY_SOCKET datagrams of one service; exits 0 once READY=1 arrived.
listen_notify() {
  python3 - "$1" <<'EOF' &
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
s.settimeout(20)
with open(path + ".log", "w") as log:
    try:
        while True:
            data = s.recv(4096).decode()
            log.write(data + "\n"); log.flush()
            if "READY=1" in data.split("\n"):
                sys.exit(0)
    except socket.timeout:
        sys.exit(1)
EOF
  notify_pid=$!
  for _ in $(seq 50); do [ -S "$1" ] && return 0; sleep 0.1; done
  return 1
}
start() {  # start NAME ARGS...: the installed binary as the unit runs it, with a notify socket
  local name="$1"
  shift
  listen_notify "$work/$name.sock" || return 1
  # exec: $! is the service itself, which the stop below signals.
  (cd / && exec $sudo_cmd setpriv --reuid citrus --regid citrus --init-groups -- \
    env NOTIFY_SOCKET="$work/$name.sock" "/usr/bin/citrus-$name" "$@" >"$work/$name.out" 2>"$work/$name.err") &
  pids+=($!)
  wait "$notify_pid"
}
check "citrus-backend starts and notifies READY=1" start backend serve --config /etc/citrus/backend.toml
check "citrus-backend /healthz answers" curl -fsS "http://127.0.0.1:$backend_port/healthz" -o /dev/null
serves_dashboard() { local page; page="$(curl -fsS "http://127.0.0.1:$backend_port/")" && grep -qi '<html' <<<"$page"; }
check "the backend serves the installed dashboard" serves_dashboard
check "citrus-hub starts and notifies READY=1" start hub --config /etc/citrus/hub.toml
check "citrus-hub /healthz answers" curl -fsS "http://127.0.0.1:$hub_port/healthz" -o /dev/null
check "citrus-agent starts and notifies READY=1" start agent --config /etc/citrus/agent.toml
agent_connected() {
  for _ in $(seq 100); do grep -q "citrus-agent connected" "$work/agent.out" && return 0; sleep 0.1; done
  tail -n 3 "$work/agent.err"
  return 1
}
check "the agent authenticates at the hub (key verified by the backend)" agent_connected
hub_link_online() {
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$backend_port/metrics" | grep -qx "citrus_backend_hub_link_online 1" && return 0
    sleep 0.1
  done
  return 1
}
check "the backend's commander link to the hub is online" hub_link_online
agent_metrics_online() {  # init's configuration gives the agent /metrics on loopback
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$agent_metrics_port/metrics" | grep -qx "citrus_agent_hub_online 1" && return 0
    sleep 0.1
  done
  return 1
}
check "the agent's /metrics (init's metrics-listen) says it is online at the hub" agent_metrics_online

stop_all() {
  local pid ok=0
  for pid in "${pids[@]}"; do $sudo_cmd kill -TERM "$pid"; done
  for pid in "${pids[@]}"; do wait "$pid" || ok=1; done
  pids=()
  return $ok
}
check "SIGTERM stops all three with exit code 0" stop_all
check "apt removes the package" $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq citrus
check "its binaries and units are gone" bash -c '! [ -e /usr/bin/citrus-backend ] && ! [ -e /lib/systemd/system/citrus-hub.service ]'
finish
