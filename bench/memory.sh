#!/usr/bin/env bash
# Memory of N instances of the Python service without and with KSM merging, against one
# instance, and ksmd's CPU time. Changes /sys/kernel/mm/ksm while it runs (restored after).
# JSON on stdout (progress on stderr).
#   bench/memory.sh [INSTANCES]     (default 16)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >&2
"$root/scripts/build.sh" >&2
n=${1:-16}
out=$("$root/build/cmd/prewarm/prewarm" bench memory "$root/examples/python/spec.yaml" --instances "$n" --json)
printf '{"machine": "%s, %s CPUs, kernel %s",\n "memory": %s}\n' \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$(nproc)" "$(uname -r)" "$out"
