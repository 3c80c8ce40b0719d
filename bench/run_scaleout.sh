#!/usr/bin/env bash
# The scale-out benchmark (docs/scaling.md): three citrus-hub processes joined through one nats-server
# on loopback, driven by bench/ws_loadgen. In one run:
#   1. single hub:  commanders and agents on hub-1                      (the baseline)
#   2. cross hub:   commanders on hub-1, their agents on hub-3, through NATS
#      both at W=1 (latency) and W=32 (throughput), and the ratio cross / single;
#   3. aggregate:   one load generator per hub at once, each with its own commanders and agents on
#      its own hub, against one hub alone: what N hubs add on this machine.
#
#   bench/run_scaleout.sh [--build-dir DIR] [--no-build] [--quick]
#
# About 2 minutes on 2 cores once built (--quick: ~40 s). Needs nats-server (apt-get install nats-server).
# The hubs run with --connection-rate/--identity-rate 1000000, as in bench/run_ws.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build="$repo/build-bench-scaleout"
do_build=1
seconds=3
repeats=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build="$(realpath -m "$2")"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --quick) seconds=1; repeats=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run_scaleout.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v nats-server >/dev/null || { echo "run_scaleout.sh: nats-server is missing (apt-get install nats-server)" >&2; exit 1; }

if [[ $do_build -eq 1 ]]; then
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCITRUS_BUILD_TESTS=OFF \
        -DCITRUS_BUILD_EXAMPLES=OFF -DCITRUS_WITH_NATS=ON >/dev/null
  cmake --build "$build" --target citrus-hub citrus-backend ws_loadgen
fi
hub_bin="$build/apps/hub/citrus-hub"
backend_bin="$build/apps/backend/citrus-backend"
loadgen_bin="$build/bench/ws_loadgen"
for bin in "$hub_bin" "$backend_bin" "$loadgen_bin"; do
  [[ -x "$bin" ]] || { echo "run_scaleout.sh: $bin is missing (build first, or drop --no-build)" >&2; exit 1; }
done

out="$build/bench/scaleout-results"
mkdir -p "$out"/{single,cross,alone,together-1,together-2,together-3}
work="$(mktemp -d "${TMPDIR_WS_BENCH:-/dev/shm}/citrus-scaleout-bench.XXXXXX" 2>/dev/null || mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  cp "$work"/*.log "$out/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/common.sh
source "$here/common.sh"  # wait_port

# Identities: set k (k = 1..3) has 4 commanders and 4 agents that trust them; one session per identity
# across hubs, so parallel load generators need their own.
db="$work/citrus.db"
for k in 1 2 3; do
  agent_ids="" commander_ids=""
  for i in 1 2 3 4; do agent_ids+="${agent_ids:+,}a$k-$i"; commander_ids+="${commander_ids:+,}c$k-$i"; done
  for i in 1 2 3 4; do
    echo "commander c$k-$i $("$backend_bin" commander register "c$k-$i" --agents "$agent_ids" --db "$db" 2>/dev/null | tail -n 1)" >>"$work/keys-$k.txt"
  done
  for i in 1 2 3 4; do
    echo "agent a$k-$i $("$backend_bin" agent register "a$k-$i" --trust "$commander_ids" --db "$db" 2>/dev/null | tail -n 1)" >>"$work/keys-$k.txt"
  done
done

nats_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/js" -l "$work/nats.log" &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.05; done

declare -A hub_port hub_pid
for k in 1 2 3; do
  # Each hub its own copy of the keys: one SQLite file written by three hubs' audit trails at once would
  # measure SQLite's write lock, not routing.
  cp "$db" "$work/hub-$k.db"
  "$hub_bin" --listen 127.0.0.1:0 --db "$work/hub-$k.db" --hub-id "hub-$k" --nats-url "nats://127.0.0.1:$nats_port" \
             --ready-file "$work/hub-$k.port" --connection-rate 1000000 --identity-rate 1000000 \
             --log-level warn >"$work/hub-$k.out" 2>"$work/hub-$k.log" &
  hub_pid[$k]=$!
  pids+=($!)
done
for k in 1 2 3; do
  hub_port[$k]="$(wait_port "$work/hub-$k.port" "${hub_pid[$k]}")" || { echo "run_scaleout.sh: hub-$k did not start" >&2; cat "$work/hub-$k.log" >&2; exit 1; }
done
sleep 2  # the hubs hear each other's heartbeats

common=(--keys "$work/keys-1.txt" --commanders 4 --agents 4 --payload-bytes 200 --seconds "$seconds" --repeats "$repeats")
echo "== single hub: commanders and agents on hub-1" >&2
"$loadgen_bin" run --hub-url "ws://127.0.0.1:${hub_port[1]}" --hub-pid "${hub_pid[1]}" --windows 1,32 \
  --out "$out/single" "${common[@]}" >"$out/single.txt"
echo "== cross hub: commanders on hub-1, agents on hub-3 (through NATS)" >&2
"$loadgen_bin" run --hub-url "ws://127.0.0.1:${hub_port[1]}" --agent-url "ws://127.0.0.1:${hub_port[3]}" \
  --hub-pid "${hub_pid[1]}" --windows 1,32 --out "$out/cross" "${common[@]}" >"$out/cross.txt"

echo "== aggregate: one load generator per hub at once (W=32), against one hub alone" >&2
agg=(--payload-bytes 200 --seconds "$seconds" --repeats "$repeats" --windows 32 --commanders 4 --agents 4)
"$loadgen_bin" run --hub-url "ws://127.0.0.1:${hub_port[1]}" --hub-pid "${hub_pid[1]}" --keys "$work/keys-1.txt" \
  --out "$out/alone" "${agg[@]}" >"$out/alone.txt"
gen=()
for k in 1 2 3; do
  "$loadgen_bin" run --hub-url "ws://127.0.0.1:${hub_port[$k]}" --hub-pid "${hub_pid[$k]}" --keys "$work/keys-$k.txt" \
    --out "$out/together-$k" "${agg[@]}" >"$out/together-$k.txt" 2>"$out/together-$k.err" &
  gen+=($!)
done
status=0
for pid in "${gen[@]}"; do wait "$pid" || status=1; done

python3 - "$out" "$(nproc)" <<'EOF'
import json, sys
out, cores = sys.argv[1], sys.argv[2]
def cells(name):
    with open(f"{out}/{name}/ws_results.json") as f:
        return {c["window"]: c for c in json.load(f)["summary"] if c["target"] == "hub"}
single, cross = cells("single"), cells("cross")
print(f"scale-out through NATS, loopback, {cores} cores (round trips: command -> agent -> result)")
print(f"{'W':>4} {'single rt/s':>12} {'cross rt/s':>11} {'cross/single':>13} {'single p50 us':>14} {'cross p50 us':>13}"
      f" {'errors single/cross':>20}")
for w in sorted(single):
    s, c = single[w], cross.get(w)
    if not c: continue
    print(f"{w:>4} {s['round_trips_per_s']:>12.0f} {c['round_trips_per_s']:>11.0f} {c['round_trips_per_s']/s['round_trips_per_s']:>13.2f}"
          f" {s['p50_us']:>14.1f} {c['p50_us']:>13.1f} {str(s['errors']) + '/' + str(c['errors']):>20}")
print("(errors: commands refused, e.g. storage_unavailable when the audit trail cannot keep up: counted, not hidden)")
alone = cells("alone")[32]["round_trips_per_s"]
together = [cells(f"together-{k}")[32]["round_trips_per_s"] for k in (1, 2, 3)]
print(f"aggregate W=32: one hub alone {alone:.0f} rt/s; three hubs at once {sum(together):.0f} rt/s "
      f"({' + '.join(f'{t:.0f}' for t in together)}), ratio {sum(together)/alone:.2f}")
summary = {"single": {w: single[w]["round_trips_per_s"] for w in single},
           "cross": {w: cross[w]["round_trips_per_s"] for w in cross},
           "single_p50_us": {w: single[w]["p50_us"] for w in single},
           "cross_p50_us": {w: cross[w]["p50_us"] for w in cross},
           "aggregate_alone": alone, "aggregate_three": together, "cores": int(cores)}
with open(f"{out}/scaleout_results.json", "w") as f:
    json.dump(summary, f, indent=1)
print(f"results: {out}/scaleout_results.json")
EOF
exit $status
