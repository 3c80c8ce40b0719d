#!/usr/bin/env bash
# The dashboard's end-to-end tests in a real browser: Debian's Chromium, headless, driven by
# playwright-core, against citrus-backend, citrus-hub and citrus-agent on loopback ports.
#
# Installs what it needs when missing (idempotent, like deps.sh): chromium, the DejaVu fonts and
# nodejs/npm from Debian, then playwright-core from npm (it downloads no browser). Builds the three
# executables in BUILD_DIR if they are not up to date (configuring it like scripts/test.sh when it
# has never been configured). Screenshots of the main screens go to BUILD_DIR/e2e-screenshots.
# Ends with the line "N passed, N failed"; exits non-zero when a test failed.
#
# Usage: scripts/e2e.sh [BUILD_DIR]      (default: $CITRUS_BUILD_DIR, else build/ci)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-${CITRUS_BUILD_DIR:-$root/build/ci}}"
case "$build" in
  /*) ;;
  *) build="$PWD/$build" ;;
esac

# --- Debian packages --------------------------------------------------------------------------
wanted=(chromium fonts-dejavu-core)
# Node may come from another Debian-format source that bundles npm: only ask for what is absent.
command -v node >/dev/null 2>&1 || wanted+=(nodejs)
command -v npm >/dev/null 2>&1 || wanted+=(npm)
"$root/scripts/deps.sh" --only "${wanted[@]}"
[ -x /usr/bin/chromium ] || { echo "e2e: /usr/bin/chromium is missing after installing chromium" >&2; exit 1; }

# --- the executables --------------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
  "$root/scripts/deps.sh"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCITRUS_WERROR=ON -DCITRUS_SANITIZE=ON \
    -DCMAKE_INSTALL_PREFIX="$build/install" >/dev/null
fi
cmake --build "$build" --target citrus-backend citrus-hub citrus-agent -j "$(nproc)"
for exe in apps/backend/citrus-backend apps/hub/citrus-hub apps/agent/citrus-agent; do
  "$build/$exe" --help >/dev/null || { echo "e2e: $build/$exe does not run" >&2; exit 1; }
done

# --- playwright-core and axe-core, pinned by package-lock.json ------------------------------------
cd "$root/tests/e2e"
if ! node -e '
  const wanted = require("./package-lock.json").packages;
  for (const [dir, entry] of Object.entries(wanted)) {
    if (!dir) continue;
    let version = "";
    try { version = require(`./${dir}/package.json`).version; } catch {}
    if (version !== entry.version) process.exit(1);
  }' 2>/dev/null; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

# --- the tests --------------------------------------------------------------------------------
export CITRUS_BUILD_DIR="$build"
export CITRUS_CHROMIUM=/usr/bin/chromium
exec node --test-reporter=./reporter.mjs dashboard.test.mjs
