#!/usr/bin/env bash
# Pods benchmark on the Python example through a real containerd's CRI: cold pod vs RuntimeClass
# prewarm (native restore) vs runtime in runtime, 1 pod and K at once, against `prewarm run` of
# the same checkpoint, in one run; JSON on stdout (progress on stderr).
#   bench/pods.sh [RUNS] [CONCURRENCY]     (defaults: 5 runs, 5 pods at once)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >&2
"$root/scripts/build.sh" >&2
exec "$root/build/bench/pods/prewarm-bench-pods" --runs "${1:-5}" --concurrency "${2:-5}"
