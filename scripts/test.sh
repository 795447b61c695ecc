#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, build, then unit, integration and e2e
# tests (CTest labels unit / integration / e2e). Extra arguments go to ctest.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run this as root (prewarm drives runc, CRIU, mounts and namespaces)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure "$@"
