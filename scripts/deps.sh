#!/usr/bin/env bash
# Installs the Debian packages Citrus needs to build and test. Idempotent: does nothing when all
# are present. Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libasio-dev libwebsocketpp-dev libcpp-jwt-dev nlohmann-json3-dev libsqlitecpp-dev libsqlite3-dev
  libsimdjson-dev doctest-dev libsodium-dev libssl-dev libcurl4-openssl-dev
  clang libclang-rt-dev
  "$@"
)
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
