#!/bin/bash
# Checks with the real containerd (`containerd config dump`, no daemon, no root needed) that
# deploy/containerd/prewarm.toml is accepted and gives the runtime handler "prewarm" its
# BinaryName and annotations, both ways install.sh installs it: imported from conf.d, and
# inline in a config.toml that configures the CRI plugin (where it must keep those settings).
set -u
deploy=${1:?usage: containerd_config_test.sh DEPLOY_DIR}
command -v containerd >/dev/null 2>&1 || { echo "SKIP: containerd is not installed (scripts/setup.sh installs it)"; exit 77; }
work=$(mktemp -d /tmp/prewarm-containerd-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0; failed=0
check() { local what=$1; shift; if "$@"; then echo "ok    $what"; passed=$((passed + 1)); else echo "FAIL  $what"; failed=$((failed + 1)); fi; }
echo "containerd: $(containerd --version)"

# The runtime handler's settings, as containerd dumps them (section -> keys).
has_handler() {  # $1: dump
  awk '/^ *\[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.prewarm\]/ { s = 1; next }
       /^ *\[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.prewarm.options\]/ { o = 1; s = 0; next }
       /^ *\[/ { s = 0; o = 0 }
       s && /runtime_type = "io.containerd.runc.v2"/ { t = 1 }
       s && /pod_annotations = \["prewarm.dev\/\*"\]/ { p = 1 }
       s && /container_annotations = \["prewarm.dev\/\*"\]/ { c = 1 }
       o && /BinaryName = "\/usr\/local\/bin\/prewarm-runtime"/ { b = 1 }
       END { exit !(t && p && c && b) }' "$1"
}
dump() {  # $1: config, $2: output
  containerd --config "$1" config dump >"$2" 2>"$2.err" || { cat "$2.err"; return 1; }
}
# install.sh writes host paths; a fake root's config must name the fake root's files to dump.
map_root() { sed -i "s|\"/etc/containerd/|\"$1/etc/containerd/|g" "$1/etc/containerd/config.toml"; }
printf '#!/bin/sh\n' >"$work/prewarm"
cp "$work/prewarm" "$work/prewarm-runtime"
install() { sh "$deploy/node/install.sh" --host-root "$1" --no-restart --no-label --host-exec none --binary "$work/prewarm" >"$work/install.out" 2>&1 || { cat "$work/install.out"; return 1; }; }

# 1. The drop-in as shipped, imported by a minimal version-2 config.
mkdir -p "$work/a/conf.d"
cp "$deploy/containerd/prewarm.toml" "$work/a/conf.d/"
printf 'version = 2\nimports = ["%s/conf.d/*.toml"]\n' "$work/a" >"$work/a/config.toml"
check "containerd accepts deploy/containerd/prewarm.toml" dump "$work/a/config.toml" "$work/a/dump"
check "the dump has handler prewarm: runc.v2, BinaryName, pod and container annotations" has_handler "$work/a/dump"

# 2. install.sh on a node whose config.toml does not configure CRI: imported.
r=$work/b; mkdir -p "$r/etc/containerd"
printf 'version = 2\n[grpc]\n  max_recv_message_size = 16777216\n' >"$r/etc/containerd/config.toml"
check "install.sh (import) succeeds" install "$r"
map_root "$r"
check "containerd accepts what install.sh made (import)" dump "$r/etc/containerd/config.toml" "$r/dump"
check "... with the handler" has_handler "$r/dump"
check "... and the node's own settings" grep -q 'max_recv_message_size = 16777216' "$r/dump"

# 3. install.sh on a node whose config.toml configures CRI: inline, keeping those settings.
r=$work/c; mkdir -p "$r/etc/containerd"
cat >"$r/etc/containerd/config.toml" <<'CFG'
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "example.test/pause:9"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
CFG
check "install.sh (inline) succeeds" install "$r"
check "containerd accepts what install.sh made (inline)" dump "$r/etc/containerd/config.toml" "$r/dump"
check "... with the handler" has_handler "$r/dump"
check "... keeping sandbox_image" grep -q 'sandbox_image = "example.test/pause:9"' "$r/dump"
check "... keeping runc's SystemdCgroup = true" grep -q 'SystemdCgroup = true' "$r/dump"

# 4. Why inline: on this containerd an import replaces the whole CRI section (containerd
#    merges plugin sections only from 2.0 on). If this stops holding, the import could be
#    used everywhere.
r=$work/d; mkdir -p "$r/conf.d"
cp "$deploy/containerd/prewarm.toml" "$r/conf.d/"
{ printf 'version = 2\nimports = ["%s/conf.d/*.toml"]\n' "$r"; sed 1d "$work/c/etc/containerd/config.toml.pre-prewarm"; } >"$r/config.toml"
dump "$r/config.toml" "$r/dump"
major=$(containerd --version | sed -n 's/.* v\{0,1\}\([0-9][0-9]*\)\.[0-9].*/\1/p')
if [ "${major:-0}" -lt 2 ]; then
  check "containerd $major.x: an imported drop-in loses config.toml's sandbox_image (hence inline)" \
    bash -c "! grep -q 'example.test/pause:9' '$r/dump'"
else
  echo "note: containerd $major.x merges imported plugin sections; the inline route is not needed there"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
