#!/usr/bin/env bash
# Installs the Debian packages Citrus needs to build and test. Idempotent: does nothing when all
# are present.
#   scripts/deps.sh [extra-package ...]     the build and test packages, plus any extra ones
#   scripts/deps.sh --only package ...       just those (scripts/e2e.sh: the browser and Node)
set -euo pipefail
if [ "${1:-}" = "--only" ]; then
  shift
  packages=("$@")
else
  packages=(
    build-essential cmake ninja-build pkg-config git
    libasio-dev libwebsocketpp-dev libcpp-jwt-dev nlohmann-json3-dev libsqlitecpp-dev libsqlite3-dev
    sqlite3
    libsimdjson-dev doctest-dev libsodium-dev libssl-dev libcurl4-openssl-dev
    libpqxx-dev libpq-dev postgresql
    libnats-dev nats-server
    libcli11-dev
    doxygen
    prometheus  # promtool: tests/integration/test_monitoring.cpp checks docs/monitoring/citrus-alerts.yml
    clang libclang-rt-dev
    "$@"
  )
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
