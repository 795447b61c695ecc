#!/usr/bin/env bash
# The demo, from a fresh machine: set-up, build, bake the reference Python service (numpy,
# scipy, pandas, scikit-learn; ~5 s to start cold), restore it several times, and compare
# with a cold start.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run this as root (prewarm drives runc, CRIU, mounts and namespaces)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
pw="$root/build/cmd/prewarm/prewarm"
spec="$root/examples/python/spec.yaml"

echo "== prewarm doctor"
"$pw" doctor
echo "== bake (the first run also builds the Debian rootfs, a minute or two)"
"$pw" bake "$spec"
echo "== cold start, for comparison"
"$pw" run pyservice --cold
echo "== 3 restores, one after another"
for _ in 1 2 3; do "$pw" run pyservice; done
echo "== 4 restores at once"
"$pw" run pyservice --count 4
echo "== instances"
"$pw" ps
ip=$("$pw" ps --json | python3 -c 'import json,sys; print([i for i in json.load(sys.stdin) if i["startedBy"]=="restore"][0]["ip"])')
echo "== a restored instance answers from its checkpointed, warm state: GET http://$ip:8080/predict"
curl -s "http://$ip:8080/predict"; echo
echo "== cleaning up"
"$pw" rm --all >/dev/null
echo "done (the image stays: prewarm images; run it again with: $pw run pyservice)"
