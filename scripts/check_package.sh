#!/usr/bin/env bash
# The installed package, as an outside project sees it:
#   scripts/check_package.sh BUILD_DIR
# installs BUILD_DIR into BUILD_DIR/install, then builds and runs tests/install and examples/ with
# find_package(Citrus) (the default components, every installed component, and one that does not
# exist, which must fail), the same consumer with pkg-config alone, and finally a shared-library build
# of the libraries (BUILD_SHARED_LIBS=ON) whose SONAMEs and consumer are checked too.
# Ends with "N passed, N failed".
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "$1" && pwd)"
jobs="$(nproc)"
prefix="$build/install"
passed=0
failed=0
check() {  # check NAME COMMAND...: runs it, counts it, shows its output only when it fails
  local name="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
    echo "$out" | tail -30
  fi
}
sanitize_flags=(-fsanitize=address,undefined)  # the CI build is sanitized, so are its consumers

rm -rf "$prefix"
check "cmake --install" cmake --install "$build" --prefix "$prefix"
components="$(sed -n 's/^foreach(_citrus_component IN ITEMS \(.*\))$/\1/p' "$prefix"/lib*/cmake/Citrus/CitrusConfig.cmake)"

consumer() {  # consumer SOURCE_DIR OUT_DIR [cmake args...]: configure, build
  local src="$1" out="$2"
  shift 2
  rm -rf "$out"
  cmake -S "$src" -B "$out" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" -DCITRUS_CONSUMER_SANITIZE=ON "$@" &&
    cmake --build "$out" -j "$jobs"
}
check "find_package(Citrus COMPONENTS core memory jwt)" consumer "$root/tests/install" "$build/consumer-install"
check "  ... runs" "$build/consumer-install/citrus_install_consumer"
check "find_package(Citrus COMPONENTS $components)" \
  consumer "$root/tests/install" "$build/consumer-components" "-DCITRUS_CONSUMER_COMPONENTS=${components// /;}"
missing_component() {  # must fail, and say which component is missing
  local out
  rm -rf "$build/consumer-nosuch"
  if out="$(cmake -S "$root/tests/install" -B "$build/consumer-nosuch" -DCMAKE_PREFIX_PATH="$prefix" \
              -DCITRUS_CONSUMER_COMPONENTS="core;nosuch" 2>&1)"; then
    echo "configured although the component does not exist"
    return 1
  fi
  grep -q 'Citrus_nosuch_FOUND\|nosuch' <<<"$out" && grep -q 'CitrusConfig.cmake' <<<"$out"
}
check "find_package(Citrus COMPONENTS core nosuch) fails, naming nosuch" missing_component
check "examples/ against the installed package" consumer "$root/examples" "$build/consumer-examples"
check "  embed_hub runs" "$build/consumer-examples/embed_hub"
check "  embed_backend runs" "$build/consumer-examples/embed_backend"

pkg_consumer() {  # the same consumer with nothing but pkg-config
  local out="$build/consumer-pkgconfig"
  mkdir -p "$out"
  # shellcheck disable=SC2046
  c++ -std=c++17 "${sanitize_flags[@]}" $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags citrus-jwt citrus-memory) \
    "$root/tests/install/main.cpp" -o "$out/consumer" \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --static --libs citrus-jwt citrus-memory) &&
    "$out/consumer"
}
check "pkg-config citrus-jwt citrus-memory (static link)" pkg_consumer

# Shared libraries: only the libraries and their consumer (no tests, apps or bench), unsanitized.
shared="$build-shared"
shared_build() {
  rm -rf "$shared"
  cmake -S "$root" -B "$shared" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DCITRUS_WERROR=ON \
    -DCITRUS_BUILD_TESTS=OFF -DCITRUS_BUILD_BENCH=OFF -DCITRUS_BUILD_EXAMPLES=OFF -DCMAKE_INSTALL_PREFIX="$shared/install" &&
    cmake --build "$shared" -j "$jobs" && cmake --install "$shared"
}
check "BUILD_SHARED_LIBS=ON builds and installs" shared_build
sonames() {
  local lib ok=0
  for lib in "$shared"/install/lib*/libcitrus_*.so; do
    soname="$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
    echo "$(basename "$lib"): $soname"
    [[ "$soname" == "$(basename "$lib").0."* ]] || ok=1
  done
  return $ok
}
check "each shared library has a SONAME" sonames
shared_consumer() {
  local out="$build/consumer-shared"
  rm -rf "$out"
  cmake -S "$root/tests/install" -B "$out" -G Ninja -DCMAKE_PREFIX_PATH="$shared/install" &&
    cmake --build "$out" && "$out/citrus_install_consumer" && ldd "$out/citrus_install_consumer" | grep -q 'libcitrus_core.so'
}
check "find_package(Citrus) against the shared libraries" shared_consumer

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
