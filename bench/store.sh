#!/usr/bin/env bash
# Store and distribution benchmark on the reference Python service: bytes on disk and on the
# wire (raw CRIU files, zstd tar, store), dedup of a second bake and of a variant (a smaller
# model: TRAIN_ESTIMATORS=100, same base and code), restore from the store vs
# from the raw CRIU files (also right after rebuilding the store's decompressed copy),
# push/pull through a real registry (Debian's docker-registry, started here on loopback and
# stopped afterwards). JSON on stdout, progress on stderr.
#   bench/store.sh [RUNS]     (default 5)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" >&2
"$root/scripts/build.sh" >&2

work=$(mktemp -d /tmp/prewarm-bench-registry.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/config.yml" <<CFG
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/data
http:
  addr: 127.0.0.1:$port
CFG
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
cleanup() { kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done

"$root/build/cmd/prewarm/prewarm" bench store "$root/examples/python/spec.yaml" \
  --runs "${1:-5}" --registry "127.0.0.1:$port/prewarm-bench/pyservice" \
  --variant-env TRAIN_ESTIMATORS=100 --json
