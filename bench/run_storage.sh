#!/usr/bin/env bash
# The backend storage benchmark (docs/performance.md, "Backend storage"): the real citrus-backend's
# REST over loopback HTTP, on SQLite and on PostgreSQL in the same run, driven by bench/rest_loadgen.
#
#   bench/run_storage.sh [--build-dir DIR] [--no-build] [--quick] [--baseline REF | --no-baseline]
#                        [--clients N[,N...]] [--seconds S] [--repeats R] [--hold-s S]
#
# 1. builds citrus-backend and rest_loadgen in Release (default build-bench-storage/), and the
#    baseline REF's citrus-backend (default eb1e28b, the last main with storage on the event loop),
#    from `git archive REF` into DIR/baseline-src, built in DIR/baseline;
# 2. starts a throw-away PostgreSQL server (initdb + pg_ctl on a loopback port, as the postgres user
#    when run as root; fsync and synchronous_commit left on, as SQLite's synchronous=FULL), and puts
#    the SQLite files in a temporary directory on the same disk ($TMPDIR, default /tmp);
# 3. for each backend (this tree, then REF) and each database (SQLite, PostgreSQL): a fresh database,
#    N+2 users (`citrus-backend user add`), the backend on 127.0.0.1 with --rest-rate 100000 and CITRUS_BACKEND_OPERATION_RATE_SCALE=100000 (every
#    client is 127.0.0.1; the token bucket is still checked on every request), no hub configured
#    (creates store the site and answer 201, deploy_status "failed"); all of them running at once;
# 4. `rest_loadgen throughput` on all of them, R rounds of S seconds each, alternating: N clients,
#    GET /api/sites (20 sites each), then POST /api/sites, for each N of --clients (default 1,16;
#    its own users per N), 3 rounds of 3 s by default;
# 5. `rest_loadgen stall` on each in turn: probes unloaded, then while another connection holds the
#    write lock for --hold-s seconds (SQLite: `BEGIN IMMEDIATE` from the sqlite3 CLI; PostgreSQL:
#    `LOCK TABLE sites IN ACCESS EXCLUSIVE MODE` from psql) and a writer's POST waits behind it;
# 6. prints both tables (markdown) with the PG/SQLite and this-tree/REF ratios; raw lines in
#    DIR/bench/storage-results/results.tsv, server logs next to it.
#
# About 5 minutes on 2 cores once built (--quick: 4 clients, 1 round of 1 s, ~1.5 minutes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build="$repo/build-bench-storage"
do_build=1
# The last main before the backend's storage left the event loop (citrus::backend, storage_worker):
# what proves that change. --baseline main compares with main as it is now.
baseline="eb1e28b"
base_label="main"  # how the tables name it: main-sqlite, main-postgres
clients="1,16"
seconds=3
repeats=3
hold_s=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build="$(realpath -m "$2")"; shift 2 ;;
    --build-dir=*) build="$(realpath -m "${1#*=}")"; shift ;;
    --no-build) do_build=0; shift ;;
    --quick) clients=4; seconds=1; repeats=1; hold_s=2; shift ;;
    --baseline) baseline="$2"; base_label="$2"; shift 2 ;;
    --baseline=*) baseline="${1#*=}"; base_label="$baseline"; shift ;;
    --no-baseline) baseline=""; shift ;;
    --clients) clients="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --hold-s) hold_s="$2"; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "run_storage.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# The writes stalled behind the lock must still succeed: below the backend's 5 s busy/statement timeout.
if ! [[ "$clients" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]]; then
  echo "run_storage.sh: --clients takes counts separated by commas, e.g. 1,16" >&2; exit 2
fi
if ! [[ "$hold_s" =~ ^[0-9]+$ ]] || (( hold_s < 1 || hold_s > 4 )); then
  echo "run_storage.sh: --hold-s must be 1..4 (the backend's --db-busy-timeout-ms is 5000)" >&2; exit 2
fi

if [[ -n "$baseline" ]]; then
  if ! git -C "$repo" rev-parse -q --verify "$baseline^{commit}" >/dev/null; then
    echo "run_storage.sh: no baseline: '$baseline' is not a commit here" >&2; baseline=""
  elif [[ "$(git -C "$repo" rev-parse "$baseline^{tree}")" == "$(git -C "$repo" rev-parse "HEAD^{tree}")" ]]; then
    echo "run_storage.sh: no baseline: '$baseline' is this tree" >&2; baseline=""
  fi
fi

release_flags=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCITRUS_BUILD_TESTS=OFF -DCITRUS_BUILD_EXAMPLES=OFF -DCITRUS_WITH_POSTGRES=ON)
if [[ $do_build -eq 1 ]]; then
  "$repo/scripts/deps.sh" sqlite3
  cmake -S "$repo" -B "$build" "${release_flags[@]}" >/dev/null
  cmake --build "$build" --target citrus-backend rest_loadgen
  if [[ -n "$baseline" ]]; then
    rm -rf "$build/baseline-src"
    mkdir -p "$build/baseline-src"
    git -C "$repo" archive "$baseline" | tar -x -C "$build/baseline-src"
    cmake -S "$build/baseline-src" -B "$build/baseline" "${release_flags[@]}" >/dev/null
    cmake --build "$build/baseline" --target citrus-backend
    git -C "$repo" rev-parse --short "$baseline" >"$build/baseline/SOURCE_COMMIT"
  fi
fi
backend_bin="$build/apps/backend/citrus-backend"
baseline_bin="$build/baseline/apps/backend/citrus-backend"
loadgen_bin="$build/bench/rest_loadgen"
for bin in "$backend_bin" "$loadgen_bin" ${baseline:+"$baseline_bin"}; do
  [[ -x "$bin" ]] || { echo "run_storage.sh: $bin is missing (build first, or drop --no-build)" >&2; exit 1; }
done
if ! grep -q 'CMAKE_BUILD_TYPE:STRING=Release' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "run_storage.sh: warning: $build is not a Release build; figures will not be representative" >&2
fi

# PostgreSQL: the newest /usr/lib/postgresql/*/bin, as tests/postgres/pg_server.cpp finds it.
pg_bin="${CITRUS_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[[ -x "$pg_bin/initdb" && -x "$pg_bin/pg_ctl" ]] || { echo "run_storage.sh: initdb/pg_ctl not found (scripts/deps.sh installs postgresql)" >&2; exit 1; }
as_pg=()
if [[ "$(id -u)" -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || { echo "run_storage.sh: running as root and there is no 'postgres' user" >&2; exit 1; }
  as_pg=(runuser -u postgres --)
fi

out="$build/bench/storage-results"
mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
work="$(mktemp -d "${TMPDIR:-/tmp}/citrus-storage-bench.XXXXXX")"
pg_dir="$work/pg"
backend_pids=()
pg_started=0
cleanup() {
  for pid in "${backend_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  if [[ $pg_started -eq 1 ]]; then "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  cp "$work"/*.log "$out/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

chmod 755 "$work"
mkdir -p "$pg_dir"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres: "$pg_dir"
chmod 700 "$pg_dir"
echo "starting PostgreSQL ($pg_bin)" >&2
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U citrus --auth=trust -E UTF8 --no-locale --no-instructions \
  >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
pg_port=""
for _ in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 40000))
  if "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
       -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg_dir -c max_connections=60" start >/dev/null 2>&1; then
    pg_port=$port; pg_started=1; break
  fi
done
[[ -n "$pg_port" ]] || { echo "run_storage.sh: PostgreSQL did not start:" >&2; tail -n 20 "$pg_dir/server.log" >&2; exit 1; }
pg_url() { echo "postgresql://citrus@127.0.0.1:$pg_port/$1?sslmode=disable"; }

password="bench-password-$RANDOM$RANDOM"
printf '%s\n' "$password" >"$work/password"

# shellcheck source=bench/common.sh
source "$here/common.sh"  # wait_port

# One backend on one database: a fresh database, its users, its lock-holding script, the server.
# $1 label, $2 binary, $3 sqlite|postgres. Sets urls[label], appends to labels.
declare -A urls=()
labels=()
start_case() {
  local label="$1" bin="$2" kind="$3" db hold="$work/hold-$1.sh"
  if [[ "$kind" == sqlite ]]; then
    db="$work/$label.db"
    # .timeout: the backend may be writing at that moment. The CLI flushes 'locked' before the sleep.
    cat >"$hold" <<EOF
#!/bin/sh
printf '.timeout 10000\nBEGIN IMMEDIATE;\nSELECT %s;\n.shell sleep $hold_s\nCOMMIT;\n' "'locked'" | exec sqlite3 -batch '$db'
EOF
  else
    local name="bench_${label//-/_}"
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U citrus -d postgres -c "CREATE DATABASE \"$name\"" >/dev/null
    db="$(pg_url "$name")"
    # ACCESS EXCLUSIVE stops reads of sites as well; EXCLUSIVE only writes, as SQLite's write lock.
    local mode
    for mode in "ACCESS EXCLUSIVE" EXCLUSIVE; do
      cat >"$work/hold-$label-${mode// /-}.sh" <<EOF
#!/bin/sh
printf "BEGIN;\nLOCK TABLE sites IN $mode MODE;\nSELECT 'locked';\nSELECT pg_sleep($hold_s);\nCOMMIT;\n" | exec psql -X -q -At -v ON_ERROR_STOP=1 '$db'
EOF
      chmod +x "$work/hold-$label-${mode// /-}.sh"
    done
  fi
  [[ -f "$hold" ]] && chmod +x "$hold"
  local users=() n i
  for n in ${clients//,/ }; do
    for i in $(seq 1 "$n"); do users+=("bench-c$n-u$i"); done
  done
  users+=(bench-writer bench-reader)
  echo "== $label: ${#users[@]} users, server" >&2
  for u in "${users[@]}"; do
    "$bin" user add "$u" --db "$db" <"$work/password" >/dev/null 2>>"$work/$label-admin.log" \
      || { echo "run_storage.sh: user add $u failed ($label):" >&2; tail -n 5 "$work/$label-admin.log" >&2; exit 1; }
  done
  # Every client creates sites far past a person's pace: the per-user operation rates are raised
  # through the environment (a baseline that predates them ignores the variable).
  CITRUS_BACKEND_OPERATION_RATE_SCALE=100000 \
  "$bin" serve --listen 127.0.0.1:0 --db "$db" --ready-file "$work/$label.port" --rest-rate 100000 \
         --log-level warn >"$work/$label.out" 2>"$work/$label.log" &
  local pid=$!
  backend_pids+=("$pid")
  local port
  port="$(wait_port "$work/$label.port" "$pid" 20)" || { echo "run_storage.sh: citrus-backend ($label) did not start:" >&2; tail -n 20 "$work/$label.log" >&2; exit 1; }
  urls[$label]="http://127.0.0.1:$port"
  labels+=("$label")
}

start_case sqlite "$backend_bin" sqlite
start_case postgres "$backend_bin" postgres
ratios=(--ratio postgres/sqlite)
if [[ -n "$baseline" ]]; then
  start_case "$base_label-sqlite" "$baseline_bin" sqlite
  start_case "$base_label-postgres" "$baseline_bin" postgres
  ratios+=(--ratio "sqlite/$base_label-sqlite" --ratio "postgres/$base_label-postgres")
fi

echo "== throughput: ${labels[*]}, rounds alternating" >&2
target_args=()
for l in "${labels[@]}"; do target_args+=(--target "$l=${urls[$l]}"); done
for n in ${clients//,/ }; do
  "$loadgen_bin" throughput "${target_args[@]}" --password-file "$work/password" --user-prefix "bench-c$n-u" \
                 --clients "$n" --seconds "$seconds" --repeats "$repeats" --warmup 0.5 --sites 20 --out "$results"
done
stall() {  # $1 label, $2 backend label, $3 hold script
  echo "== stall: $1 (lock held ${hold_s} s)" >&2
  "$loadgen_bin" stall --url "${urls[$2]}" --password-file "$work/password" --writer bench-writer --reader bench-reader \
                 --hold-cmd "$3" --idle-seconds 2 --interval-ms 10 --sites 20 --label "$1" --out "$results"
}
for l in "${labels[@]}"; do
  if [[ -f "$work/hold-$l.sh" ]]; then
    stall "$l" "$l" "$work/hold-$l.sh"
  else
    stall "$l ACCESS EXCLUSIVE" "$l" "$work/hold-$l-ACCESS-EXCLUSIVE.sh"
    stall "$l EXCLUSIVE" "$l" "$work/hold-$l-EXCLUSIVE.sh"
  fi
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
# The commit the baseline binary was built from (with --no-build, REF may have moved since).
baseline_commit="$(cat "$build/baseline/SOURCE_COMMIT" 2>/dev/null || echo "unknown commit")"
echo "this tree: $(git -C "$repo" rev-parse --short HEAD)${baseline:+, baseline ($base_label-*) built from $baseline_commit}; clients $clients, $repeats rounds of ${seconds} s per route and backend, lock held ${hold_s} s"
"$loadgen_bin" report "$results" "${ratios[@]}"
echo
echo "raw: $results"
