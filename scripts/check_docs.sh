#!/usr/bin/env bash
# The C++ API reference: runs doxygen over the public headers of every lib/ target (docs/Doxyfile)
# and fails on any warning. Counts each public header as passed (no warning) or failed, and a
# warning about anything else (the main page) as one more failure; the last line says
# "N passed, N failed" like the other stages of scripts/test.sh.
#   scripts/check_docs.sh [OUTPUT_DIR]      default: build/api (the HTML lands in OUTPUT_DIR/html)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/build/api}"
cd "$root"
command -v doxygen >/dev/null || { echo "check_docs: doxygen is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
warnings="$out/warnings.log"

# Every lib/<target>/include must be an input: a new target's headers cannot be left out unnoticed.
inputs="$(sed -n '/^INPUT /,/^[A-Z_]* *=/p' docs/Doxyfile)"
missing=0
for dir in lib/*/include; do
  if ! grep -qw "$dir" <<<"$inputs"; then
    echo "check_docs: $dir is not in INPUT of docs/Doxyfile" >&2
    missing=$((missing + 1))
  fi
done

status=0
{ cat docs/Doxyfile; echo "OUTPUT_DIRECTORY = $out"; echo "WARN_LOGFILE = $warnings"; } | doxygen - >/dev/null || status=$?
[ -f "$warnings" ] || : >"$warnings"
# Doxygen repeats a warning once per pass; each distinct line is reported once.
sort -u "$warnings" | sed "s|^$root/||"

passed=0
failed=$missing
while IFS= read -r header; do
  if grep -q "^$root/$header:" "$warnings"; then failed=$((failed + 1)); else passed=$((passed + 1)); fi
done < <(find lib/*/include -name '*.hpp' | sort)
# Warnings about anything but a public header (docs/api-mainpage.md, a bad configuration line).
others="$(grep -vc "^$root/lib/[^/]*/include/.*\.hpp:" "$warnings" || true)"
failed=$((failed + others))
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1  # doxygen itself failed

echo "API reference: $out/html/index.html"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
