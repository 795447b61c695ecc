#!/usr/bin/env bash
# Warm-pool benchmark: claim → ready from a pool a background thread keeps full (refills at
# SCHED_IDLE), for the tiny counter and the Python service, with restore → ready of the same image
# in the same run, and the pool's refill rate. JSON on stdout (progress on stderr).
#   bench/pool.sh [CLAIMS]     (default 200)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >&2
"$root/scripts/build.sh" >&2
claims=${1:-200}
prewarm=$root/build/cmd/prewarm/prewarm
out=$("$prewarm" bench pool "$root/build/examples/tiny/spec.yaml" "$root/examples/python/spec.yaml" \
  --claims "$claims" --json)
printf '{"machine": "%s, %s CPUs, kernel %s",\n "pool": %s}\n' \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$(nproc)" "$(uname -r)" "$out"
