#!/bin/bash
# Tests deploy/node/install.sh and sync.sh against fake host roots (temporary directories):
# files land where expected, the imports line is added once, a second run changes nothing,
# configs it must not touch are refused or left alone, labelling is skipped with a reason.
set -u
deploy=${1:?usage: install_test.sh DEPLOY_DIR}
install=$deploy/node/install.sh
work=$(mktemp -d /tmp/prewarm-install-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0; failed=0
pass() { echo "ok    $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum; find . -printf '%p %m\n' | sort) | sha256sum; }

printf '#!/bin/sh\necho fake prewarm\n' >"$work/prewarm"
printf '#!/bin/sh\necho fake prewarm-runtime\n' >"$work/prewarm-runtime"
run() {  # $1: root; more: extra arguments
  local root=$1; shift
  NODE_NAME=node-1 KUBERNETES_SERVICE_HOST= sh "$install" --host-root "$root" --no-restart \
    --host-exec none --binary "$work/prewarm" "$@" >"$work/out" 2>&1
}

refuses() { ! run "$@"; }

# 1. containerd, a version-2 config without an imports line.
r=$work/r1; mkdir -p "$r/etc/containerd"
printf 'version = 2\nroot = "/var/lib/containerd"\n\n[grpc]\n  address = "/run/containerd/containerd.sock"\n' >"$r/etc/containerd/config.toml"
check "install.sh succeeds on a fresh containerd node" run "$r"
cat "$work/out"
check "imports line added exactly once" test "$(grep -c '^imports = \["/etc/containerd/conf.d/\*.toml"\]$' "$r/etc/containerd/config.toml")" = 1
check "imports line is a top-level key (before the first table)" \
  test "$(grep -n '^imports' "$r/etc/containerd/config.toml" | cut -d: -f1)" -lt "$(grep -n '^\[' "$r/etc/containerd/config.toml" | head -1 | cut -d: -f1)"
check "the node's own settings are kept" grep -q 'address = "/run/containerd/containerd.sock"' "$r/etc/containerd/config.toml"
check "drop-in placed as conf.d/prewarm.toml, same as deploy/containerd/prewarm.toml" cmp -s "$deploy/containerd/prewarm.toml" "$r/etc/containerd/conf.d/prewarm.toml"
check "binary installed as /usr/local/bin/prewarm (0755)" test "$(stat -c %a "$r/usr/local/bin/prewarm")" = 755
check "launcher installed as /usr/local/bin/prewarm-runtime, same content" cmp -s "$work/prewarm-runtime" "$r/usr/local/bin/prewarm-runtime"
check "original config kept as config.toml.pre-prewarm" grep -q '^root = ' "$r/etc/containerd/config.toml.pre-prewarm"
check "labelling skipped with a reason (no API server)" grep -q 'skipped: labelling the node (no API server' "$work/out"
check "restart skipped with a reason (--no-restart)" grep -q 'skipped: restarting containerd (--no-restart)' "$work/out"
before=$(tree_sum "$r")
check "second run succeeds" run "$r"
check "second run changes nothing" test "$before" = "$(tree_sum "$r")"
check "second run reports no restart needed" grep -q 'configuration unchanged, no restart' "$work/out"
check "--no-label skips labelling with a reason" run "$r" --no-label
check "... and says so" grep -q 'skipped: labelling the node (--no-label)' "$work/out"

# 2. An imports line that names other files: ours is appended to it.
r=$work/r2; mkdir -p "$r/etc/containerd"
printf 'version = 2\nimports = ["/etc/containerd/other.toml"]\n' >"$r/etc/containerd/config.toml"
check "install.sh succeeds with an existing imports line" run "$r"
check "our glob appended to the existing imports array" grep -qx 'imports = \["/etc/containerd/other.toml", "/etc/containerd/conf.d/\*.toml"\]' "$r/etc/containerd/config.toml"

# 3. config.toml configures the CRI plugin: the handler goes inline, no drop-in.
r=$work/r3; mkdir -p "$r/etc/containerd/conf.d"
cat >"$r/etc/containerd/config.toml" <<'CFG'
version = 2
imports = ["/etc/containerd/conf.d/*.toml"]
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "example.test/pause:9"
CFG
cp "$deploy/containerd/prewarm.toml" "$r/etc/containerd/conf.d/prewarm.toml"
check "install.sh succeeds where config.toml configures the CRI plugin" run "$r"
check "the handler is inline in config.toml" grep -q '^\[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.prewarm\]' "$r/etc/containerd/config.toml"
check "the imported drop-in is removed (it would replace the CRI section)" test ! -e "$r/etc/containerd/conf.d/prewarm.toml"
before=$(tree_sum "$r")
run "$r"
check "inline: second run changes nothing" test "$before" = "$(tree_sum "$r")"

# 4. Configs it must refuse or leave alone.
r=$work/r4; mkdir -p "$r/etc/containerd"
printf '[plugins.cri]\n  sandbox_image = "x"\n' >"$r/etc/containerd/config.toml"
check "a version-1 config is refused" refuses "$r"
check "... with a reason" grep -q 'version-1 config' "$work/out"
check "... and left unchanged" test "$(cat "$r/etc/containerd/config.toml")" = "$(printf '[plugins.cri]\n  sandbox_image = "x"')"
r=$work/r5; mkdir -p "$r/etc/containerd/conf.d"
printf 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n' >"$r/etc/containerd/config.toml"
printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n' >"$r/etc/containerd/conf.d/registry.toml"
check "an imported file that configures CRI is refused" refuses "$r"
check "... naming the file" grep -q 'conf.d/registry.toml (imported by config.toml) configures the CRI plugin' "$work/out"
r=$work/r6; mkdir -p "$r/etc/containerd"
printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.prewarm]\n  runtime_type = "io.containerd.runc.v2"\n' >"$r/etc/containerd/config.toml"
cp "$r/etc/containerd/config.toml" "$work/r6.orig"
check "a hand-made 'prewarm' handler is left alone" run "$r"
check "... config unchanged" cmp -s "$work/r6.orig" "$r/etc/containerd/config.toml"

# 5. CRI-O.
r=$work/r7; mkdir -p "$r/etc/crio/crio.conf.d"
check "install.sh succeeds on a CRI-O node" run "$r"
check "CRI-O drop-in placed as crio.conf.d/99-prewarm.conf" cmp -s "$deploy/crio/99-prewarm.conf" "$r/etc/crio/crio.conf.d/99-prewarm.conf"
check "no containerd config made on a CRI-O node" test ! -e "$r/etc/containerd"
r=$work/r8; mkdir -p "$r/etc/crio/crio.conf.d" "$r/etc/containerd"
check "both runtimes present: refused without --runtime" refuses "$r"
check "... before changing anything" test ! -e "$r/usr/local/bin/prewarm"

# 6. sync.sh with a fake prewarm: pulls what is missing, skips what is present, then gc.
cat >"$work/fake-prewarm" <<'FAKE'
#!/bin/sh
echo "$*" >>"$FAKE_LOG"
[ "$1" = images ] && printf 'NAME CREATED\npyservice x\n'
exit 0
FAKE
chmod +x "$work/fake-prewarm"
printf '# comment\n\nreg.test/prewarm/pyservice:1\nreg.test/prewarm/other:2 other-name\nreg.test/team/tiny@sha256:abc\n' >"$work/images"
FAKE_LOG=$work/log PREWARM=$work/fake-prewarm PREWARM_IMAGES_FILE=$work/images sh "$deploy/node/sync.sh" --once >"$work/out" 2>&1
check "sync.sh --once exits 0" test $? = 0
check "sync: a present image is not pulled" bash -c "! grep -q 'pull reg.test/prewarm/pyservice:1' $work/log"
check "sync: a missing image is pulled under its NAME" grep -qx 'pull reg.test/prewarm/other:2 --name other-name' "$work/log"
check "sync: default name is the repository's last part" grep -qx 'pull reg.test/team/tiny@sha256:abc --name tiny' "$work/log"
check "sync: gc runs after the pulls" test "$(tail -n1 "$work/log")" = gc

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
