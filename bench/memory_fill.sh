#!/usr/bin/env bash
# What filling a restored app's memory costs on this machine, and whether huge pages or
# pre-faulting would help: reads FILE (default: the Python example's pages-1.img, baked if
# missing) into fresh memory with 4 KiB pages, MADV_HUGEPAGE and MADV_POPULATE_WRITE,
# alternating; JSON on stdout. IDLE_S > 0 sleeps before every fill, as memory sits idle between
# restores on a real node (see memory_fill.c).   bench/memory_fill.sh [FILE] [RUNS] [IDLE_S]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
file=${1:-}
if [ -z "$file" ]; then
  "$root/scripts/setup.sh" >&2
  "$root/scripts/build.sh" >&2
  pw="$root/build/cmd/prewarm/prewarm"
  state=${PREWARM_STATE_DIR:-/var/lib/prewarm}
  [ -d "$state/images/pyservice" ] || "$pw" bake "$root/examples/python/spec.yaml" >&2
  file=$(ls "$state"/images/pyservice/checkpoint/pages-*.img | head -n1)
fi
bin=$(mktemp /tmp/prewarm-memory-fill.XXXXXX)
trap 'rm -f "$bin"' EXIT
cc -O2 -o "$bin" "$root/bench/memory_fill.c"
"$bin" "$file" "${2:-15}" "${3:-0}"
