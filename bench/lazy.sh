#!/usr/bin/env bash
# Lazy-restore benchmark: the synthetic heap sweep (100 MB, 500 MB, 1 GiB), Redis with ~1 GB of
# generated keys, and the reference Python service. Per app, in one run, samples alternate: a
# plain eager `runc restore` of the checkpoint (the baseline), prewarm's eager restore and
# prewarm's lazy restore (to ready, and until all memory is resident). JSON on stdout (progress
# on stderr).
#   bench/lazy.sh [RUNS]     (default 5)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >&2
"$root/scripts/build.sh" >&2
runs=${1:-5}
prewarm=$root/build/cmd/prewarm/prewarm
ex=$root/build/examples
sweep=$("$prewarm" bench lazy "$ex/heap/heap-100.yaml" "$ex/heap/heap-500.yaml" \
  "$ex/heap/heap-1024.yaml" --runs "$runs" --json)
redis=$("$prewarm" bench lazy "$ex/redis/spec.yaml" --runs "$runs" --json)
python=$("$prewarm" bench lazy "$root/examples/python/spec.yaml" --runs "$runs" --json)
printf '{"benchmark": "lazy", "machine": "%s, %s CPUs, kernel %s",\n "heap_sweep": %s,\n "redis": %s,\n "python": %s}\n' \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$(nproc)" "$(uname -r)" \
  "$sweep" "$redis" "$python"
