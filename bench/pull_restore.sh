#!/usr/bin/env bash
# A first restore on a node that does not have the image yet: `prewarm pull` then `prewarm run`
# (the restore waits for the whole download), against `prewarm pull` with `prewarm run` started
# beside it (the restore starts once the pull has the lazy copy's packs; the other pages are
# served as their packs arrive). Time from the pull's start until the instance is ready, and
# until its whole heap checks out (GET /check reads every page). A real docker-registry on
# loopback serves the heap example (HEAP_MB, default 1024, with a tarball base), pushed once
# from a "node A" state dir; every sample pulls into a fresh "node B" state dir. The two ways
# alternate. JSON on stdout, progress on stderr.
#   bench/pull_restore.sh [HEAP_MB] [RUNS]        (defaults: 1024, 3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mb=${1:-1024}
runs=${2:-3}
"$root/scripts/setup.sh" >&2
"$root/scripts/build.sh" >&2
pw="$root/build/cmd/prewarm/prewarm"
heap_spec="$root/build/examples/heap/heap-$mb.yaml"
[ -f "$heap_spec" ] || { echo "no $heap_spec (PREWARM_EXAMPLE_HEAP_SIZES)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/prewarm-bench-pull.XXXXXX)
registry_pid=
bridges=()
cleanup() {
  for s in "$work"/node-*; do
    [ -d "$s" ] && PREWARM_STATE_DIR="$s" "$pw" rm --all >/dev/null 2>&1 || true
  done
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
  for b in "${bridges[@]}"; do ip link del "$b" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A /24 of 10.94.0.0/16 that no interface here overlaps.
free_subnet() {
  for i in $(seq 1 250); do
    if ! ip -4 -o addr show | grep -q " 10\.94\.$i\."; then echo "10.94.$i.0/24"; return; fi
  done
  echo "no free /24 in 10.94.0.0/16" >&2; exit 1
}

# The registry.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/data
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$port
  secret: prewarm-bench-secret
EOF
/usr/bin/docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

# Node A: the heap example with its rootfs as a tarball (images from elsewhere may not name a
# host directory), baked and pushed.
tar -C "$root/build/examples/heap/rootfs" --sort=name --mtime=@0 --owner=0 --group=0 \
  --numeric-owner -cf "$work/base.tar" .
sed -e "s|directory: \"[^\"]*\"|tarball: \"$work/base.tar\"|" "$heap_spec" >"$work/spec.yaml"
node_env() {  # STATE_DIR BRIDGE -> env assignments
  echo "PREWARM_STATE_DIR=$1 PREWARM_BRIDGE=$2 PREWARM_SUBNET=$3"
}
a_subnet=$(free_subnet)
bridges+=(pwbpa$$)
env $(node_env "$work/node-a" "pwbpa$$" "$a_subnet") "$pw" bake "$work/spec.yaml" --name heap >&2
ref="127.0.0.1:$port/bench/heap:v1"
env $(node_env "$work/node-a" "pwbpa$$" "$a_subnet") "$pw" push heap "$ref" >&2
env $(node_env "$work/node-a" "pwbpa$$" "$a_subnet") "$pw" rm --all >/dev/null
ip link del "pwbpa$$" 2>/dev/null || true

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
seq_ready=() seq_all=() con_ready=() con_all=() con_pull=() seq_pull=()
sample() {  # MODE N
  local mode=$1 n=$2 state="$work/node-b$2-$1" bridge="pwbpb$2$$" subnet
  subnet=$(free_subnet)
  bridges+=("$bridge")
  local e; e=$(node_env "$state" "$bridge" "$subnet")
  local t0 t_ready t_pull t_all out pull_pid ip
  t0=$(now_ms)
  if [ "$mode" = seq ]; then
    env $e "$pw" pull "$ref" --name heap >"$state.pull.log" 2>&1
    t_pull=$(now_ms)
    out=$(env $e "$pw" run heap 2>>"$state.run.log")
    t_ready=$(now_ms)
  else
    env $e "$pw" pull "$ref" --name heap >"$state.pull.log" 2>&1 &
    pull_pid=$!
    # `run` waits for the pull's first part by itself once the pull holds its lock.
    while [ ! -e "$state/pulls/heap.lock" ]; do sleep 0.002; done
    out=$(env $e "$pw" run heap 2>>"$state.run.log")
    t_ready=$(now_ms)
    wait "$pull_pid"
    t_pull=$(now_ms)
  fi
  ip=$(echo "$out" | awk '/ready in/ {print $2; exit}')
  curl -fs --max-time 120 "http://$ip:8080/check" | grep -q " ok" ||
    { echo "heap check failed after a $mode restore" >&2; exit 1; }
  t_all=$(now_ms)
  env $e "$pw" rm --all >/dev/null
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$state"
  echo "[bench] $mode $n: ready after $((t_ready - t0)) ms, pull done after $((t_pull - t0)) ms, heap checked after $((t_all - t0)) ms" >&2
  if [ "$mode" = seq ]; then
    seq_ready+=($((t_ready - t0))); seq_pull+=($((t_pull - t0))); seq_all+=($((t_all - t0)))
  else
    con_ready+=($((t_ready - t0))); con_pull+=($((t_pull - t0))); con_all+=($((t_all - t0)))
  fi
}
for n in $(seq 1 "$runs"); do
  if [ $((n % 2)) -eq 1 ]; then sample seq "$n"; sample con "$n"; else sample con "$n"; sample seq "$n"; fi
done

python3 - "$mb" "$runs" "${seq_ready[*]}" "${seq_pull[*]}" "${seq_all[*]}" \
  "${con_ready[*]}" "${con_pull[*]}" "${con_all[*]}" <<'EOF'
import json, os, statistics, sys
mb, runs = int(sys.argv[1]), int(sys.argv[2])
lists = [[float(x) for x in a.split()] for a in sys.argv[3:]]
names = ["pull_then_run", "run_during_pull"]
out = {"benchmark": "pull_restore", "heap_mb": mb, "runs": runs,
       "host": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
for i, name in enumerate(names):
    ready, pull, allres = lists[3 * i: 3 * i + 3]
    out[name] = {"ready_ms": {"median": statistics.median(ready), "samples": ready},
                 "pull_done_ms": {"median": statistics.median(pull), "samples": pull},
                 "heap_checked_ms": {"median": statistics.median(allres), "samples": allres}}
out["ratios"] = {
    "ready_during_pull_vs_after_pull":
        out["run_during_pull"]["ready_ms"]["median"] / out["pull_then_run"]["ready_ms"]["median"],
    "heap_checked_during_pull_vs_after_pull":
        out["run_during_pull"]["heap_checked_ms"]["median"] / out["pull_then_run"]["heap_checked_ms"]["median"]}
print(json.dumps(out, indent=2))
EOF
