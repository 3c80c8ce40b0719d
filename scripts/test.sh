#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs dependencies, builds with warnings as errors under
# AddressSanitizer + UndefinedBehaviorSanitizer, checks that the installed package works for an
# outside consumer (scripts/check_package.sh: CMake components, pkg-config, shared libraries), builds
# the C++ API reference without a warning (scripts/check_docs.sh), runs
# the browser tests of the dashboard and a short fuzzing pass, then every other test with ctest, and
# finally installs, starts and removes the Debian package (scripts/package_test.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CITRUS_BUILD_DIR:-$root/build/ci}"
jobs="$(nproc)"

"$root/scripts/deps.sh"

# CITRUS_WITH_POSTGRES=ON: citrus::postgres must build here; CITRUS_REQUIRE_POSTGRES: its tests must run
# (they start their own server) instead of skipping. CITRUS_WITH_NATS=ON likewise for citrus::nats (the
# scaleout tests start their own nats-server).
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCITRUS_WERROR=ON -DCITRUS_SANITIZE=ON \
  -DCITRUS_WITH_POSTGRES=ON -DCITRUS_WITH_NATS=ON -DCMAKE_INSTALL_PREFIX="$build/install"
cmake --build "$build" -j "$jobs"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Leaks of third-party libraries we cannot fix here, each explained in the file.
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
export CITRUS_REQUIRE_POSTGRES=1

# The test stages run even when one fails, so that a red run shows everything at once. Each
# stage's output is kept in $build/stage-<name>.log; the last line sums them up.
failed_stages=0
total_passed=0
total_failed=0
counts=()
stage() {
  local name="$1"
  shift
  local log="$build/stage-$name.log" passed failed ok=1
  ( "$@" ) 2>&1 | tee "$log" || ok=0
  # "N passed, N failed" (e2e) or ctest's "...% tests passed, N tests failed out of M".
  if line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)" && [ -n "$line" ]; then
    passed="${line%% passed*}"
    failed="${line#*, }"
    failed="${failed%% failed*}"
  elif line="$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)" && [ -n "$line" ]; then
    failed="$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")"
    passed=$(( $(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line") - failed ))
  else
    passed=0
    failed=1  # the stage ended before it could count: a build or set-up failure
  fi
  [ "$ok" -eq 1 ] && [ "$failed" -gt 0 ] && ok=0
  [ "$ok" -eq 0 ] && [ "$failed" -eq 0 ] && failed=1
  [ "$ok" -eq 0 ] && failed_stages=$((failed_stages + 1))
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  counts+=("$name $passed/$((passed + failed))")
}

# The C++ API reference from the public headers of every lib/ target: doxygen, no warning allowed.
stage docs "$root/scripts/check_docs.sh" "$build/api"

# The installed package from outside: find_package with components, pkg-config, shared libraries.
stage package "$root/scripts/check_package.sh" "$build"

# The dashboard in a real browser (Chromium headless) against the three executables.
stage e2e "$root/scripts/e2e.sh" "$build"

# A short run of every libFuzzer target over its seed corpus (clang build in build/fuzz).
stage fuzz "$root/scripts/fuzz.sh"

# Everything else: unit, storage (memory, SQLite, PostgreSQL), transport, agent and integration tests.
stage ctest bash -c 'cd "$1" && ctest --output-on-failure -j "$2" --timeout 300' _ "$build" "$jobs"

# The Debian package on this machine (a Release build of its own): installed with apt, started from
# `citrus-backend init`'s configuration with readiness read from $NOTIFY_SOCKET, stopped, purged.
stage deb "$root/scripts/package_test.sh" "$build-deb"

echo
echo "stages: ${counts[*]}"
echo "$total_passed passed, $total_failed failed"
[ "$failed_stages" -eq 0 ]
