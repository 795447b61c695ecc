#!/usr/bin/env bash
# Startup benchmark on the reference Python service: cold start vs prewarm restore vs a plain
# `runc restore` of the same checkpoint, in one run; JSON on stdout (progress on stderr).
#   bench/startup.sh [RUNS] [CONCURRENCY]     (defaults: 15 runs, concurrency 4)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >&2
"$root/scripts/build.sh" >&2
exec "$root/build/cmd/prewarm/prewarm" bench startup "$root/examples/python/spec.yaml" \
  --runs "${1:-15}" --concurrency "${2:-4}" --json
