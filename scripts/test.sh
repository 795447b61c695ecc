#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, build, then unit, integration, e2e and
# soak tests (CTest labels unit / integration / e2e / soak), the unit tests again under
# ASan+UBSan (sanitize.sh), and every fuzz target for PREWARM_FUZZ_SECONDS (default 20) each
# (fuzz.sh). Extra arguments go to the first ctest. Each part runs even if an earlier one
# failed; the run fails if any did, and says how long each took.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run this as root (prewarm drives runc, CRIU, mounts and namespaces)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"

failed=() times=()
part() {  # part NAME COMMAND...
  local name=$1 start=$SECONDS rc=0
  shift
  "$@" || rc=$?
  times+=("$name $((SECONDS - start)) s")
  [ "$rc" -eq 0 ] || failed+=("$name")
}
part ctest bash -c 'cd "$1/build" && shift && ctest --output-on-failure "$@"' _ "$root" "$@"
part sanitize "$root/scripts/sanitize.sh"
part fuzz "$root/scripts/fuzz.sh" "${PREWARM_FUZZ_SECONDS:-20}"
printf '[test] %s\n' "${times[@]}" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "[test] failed: ${failed[*]}" >&2
  exit 1
fi
