#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs dependencies, builds with warnings as errors under
# AddressSanitizer + UndefinedBehaviorSanitizer, checks that the installed package works for an
# outside consumer (tests/install and examples/), runs the browser tests of the dashboard, then every
# other test with ctest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CITRUS_BUILD_DIR:-$root/build/ci}"
jobs="$(nproc)"

"$root/scripts/deps.sh"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCITRUS_WERROR=ON -DCITRUS_SANITIZE=ON \
  -DCMAKE_INSTALL_PREFIX="$build/install"
cmake --build "$build" -j "$jobs"

# The installed, exported package: find_package(Citrus) from a separate project.
rm -rf "$build/install"
cmake --install "$build" >/dev/null
for consumer in tests/install examples; do
  out="$build/consumer-$(basename "$consumer")"
  cmake -S "$root/$consumer" -B "$out" -G Ninja -DCMAKE_PREFIX_PATH="$build/install" -DCITRUS_CONSUMER_SANITIZE=ON >/dev/null
  cmake --build "$out" -j "$jobs" >/dev/null
done
"$build/consumer-install/citrus_install_consumer"
"$build/consumer-examples/embed_hub"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# The dashboard in a real browser (Chromium headless) against the three executables.
"$root/scripts/e2e.sh" "$build"

# A short run of every libFuzzer target over its seed corpus (clang build in build/fuzz).
"$root/scripts/fuzz.sh"

# Everything else: unit, storage, transport, agent and integration tests (ctest's summary ends the run).
cd "$build" && ctest --output-on-failure -j "$jobs" --timeout 300
