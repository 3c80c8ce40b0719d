#!/usr/bin/env bash
# The fuzz targets, as CI runs them: configures a clang build with CITRUS_FUZZ=ON (libraries instrumented
# for libFuzzer, ASan and UBSan), builds the targets in tests/fuzz and runs each for a bounded time over its
# seed corpus with ctest -L fuzz. A failure leaves the input in $build/tests/fuzz/artifacts/.
#   CITRUS_FUZZ_BUILD_DIR  build directory (default build/fuzz)
#   CITRUS_FUZZ_SECONDS    seconds per target (default 20)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CITRUS_FUZZ_BUILD_DIR:-$root/build/fuzz}"
seconds="${CITRUS_FUZZ_SECONDS:-20}"
jobs="$(nproc)"
clangxx="${CITRUS_FUZZ_CXX:-clang++}"

if ! command -v "$clangxx" >/dev/null; then
  echo "fuzz.sh: $clangxx not found (Debian: apt-get install clang libclang-rt-dev)" >&2
  exit 1
fi

# -O1 -gline-tables-only as OSS-Fuzz builds: quick to compile, symbolised stacks, and assert() stays on.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$clangxx" -DCMAKE_BUILD_TYPE= \
  -DCMAKE_CXX_FLAGS="-O1 -gline-tables-only" -DCITRUS_FUZZ=ON -DCITRUS_FUZZ_SECONDS="$seconds" \
  -DCITRUS_BUILD_TESTS=OFF -DCITRUS_BUILD_APPS=OFF -DCITRUS_BUILD_EXAMPLES=OFF -DCITRUS_BUILD_BENCH=OFF \
  -DCITRUS_WITH_POSTGRES=OFF -DCITRUS_WITH_NATS=OFF >/dev/null
cmake --build "$build" -j "$jobs"

cd "$build"
status=0
ctest -L fuzz --output-on-failure -j "$jobs" || status=$?
# libFuzzer's final statistics: how many inputs each target ran.
awk '/ Testing: /{name=$3} /^stat::number_of_executed_units:/{printf "%s: %s executions\n", name, $2; total+=$2}
     END{printf "fuzz: %d executions in all\n", total}' Testing/Temporary/LastTest.log
exit "$status"
