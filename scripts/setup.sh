#!/usr/bin/env bash
# Installs everything prewarm needs on a Debian 12 machine, idempotently:
# Debian packages, CRIU 4.2.1 built from Debian's source tarball with the patches in
# scripts/criu-patches, and CRIU's .proto files (rpc.proto for the RPC client, images/*.proto
# for reading CRIU's image files).
set -euo pipefail

CRIU_VERSION=4.2.1
CRIU_DEB_VERSION=4.2.1-1
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRIU_SRC_CACHE=${PREWARM_CACHE:-/var/cache/prewarm}/criu

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and builds CRIU)" >&2
  exit 1
fi

PACKAGES=(
  # runtime
  runc iptables iproute2 debootstrap busybox-static curl ca-certificates tar xz-utils zstd
  # Kubernetes tests: a real containerd (its CRI plugin) driven by a gRPC client (tests/cri)
  containerd libgrpc++-dev protobuf-compiler-grpc
  # build of prewarm
  cmake g++ make pkg-config libprotobuf-dev protobuf-compiler libyaml-cpp-dev
  nlohmann-json3-dev libgtest-dev libssl-dev nettle-dev libcli11-dev libzstd-dev zlib1g-dev libcurl4-openssl-dev
  # fuzzing and sanitizer builds (scripts/fuzz.sh, scripts/sanitize.sh): clang with libFuzzer
  # and the ASan/UBSan runtimes (only recommended by clang-14, so named here)
  clang libclang-rt-14-dev
  # prewarmd's metrics are checked by the Prometheus client library's own parser (tests)
  python3-prometheus-client
  # registry tests (a real distribution registry, bcrypt htpasswd, certificates, JWT signing)
  docker-registry apache2-utils openssl
  # foreign checkpoint archive tests (a real `podman container checkpoint --export`)
  podman containernetworking-plugins
  # Kubernetes node tests: containerd's CRI plugin, and `containerd config dump` of deploy/'s
  # runtime handler (tests/deploy)
  containerd
  # build of CRIU (without GnuTLS and nftables: see CRIU_MAKE_FLAGS)
  libprotobuf-c-dev protobuf-c-compiler python3-protobuf libnl-3-dev libnl-route-3-dev
  libcap-dev libnet1-dev libbsd-dev uuid-dev libaio-dev
  libdrm-dev dpkg-dev patch
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages: all present"
fi

PROTO_DIR=/usr/local/share/prewarm/criu
tarball="$CRIU_SRC_CACHE/criu_${CRIU_VERSION}.orig.tar.xz"

# CRIU is built without GnuTLS (TLS page servers) and nftables (the nftables network lock):
# prewarm uses neither, and every restore execs CRIU, which then loads 8 shared libraries
# instead of 22 (exec to exit of `criu --version`: 1.45 ms instead of 3.2 ms here).
# libnftables is hidden from CRIU's pkg-config check even where it is installed.
CRIU_MAKE_FLAGS=(NO_GNUTLS=1)
# The patches applied to CRIU (their names and contents) and the build flags: a change to
# either rebuilds CRIU.
PATCH_DIR=$(cd "$(dirname "$0")" && pwd)/criu-patches
patches_id() {
  { (cd "$PATCH_DIR" && sha256sum ./*.patch); echo "${CRIU_MAKE_FLAGS[*]} no-nftables"; } |
    sha256sum | cut -d' ' -f1
}

criu_ok() {
  [ -x /usr/local/sbin/criu ] && [ -f "$PROTO_DIR/rpc.proto" ] &&
    [ "$(cat "$PROTO_DIR/.criu-patches" 2>/dev/null)" = "$(patches_id)" ] &&
    /usr/local/sbin/criu --version 2>/dev/null | grep -q "Version: ${CRIU_VERSION}"
}

# The image protos come from the same tarball; a machine set up before they were needed gets
# them from the cached tarball without rebuilding CRIU.
protos_ok() {
  [ -f "$PROTO_DIR/images/core.proto" ] && [ -f "$PROTO_DIR/images/stats.proto" ] &&
    [ -f "$PROTO_DIR/images/regfile.proto" ] &&
    [ "$(cat "$PROTO_DIR/images/.criu-version" 2>/dev/null)" = "$CRIU_VERSION" ]
}

install_protos() {  # $1: an unpacked CRIU source tree
  install -d -m 0755 "$PROTO_DIR/images"
  install -m 0644 "$1"/images/*.proto "$PROTO_DIR/images/"
  echo "$CRIU_VERSION" > "$PROTO_DIR/images/.criu-version"
}

fetch_tarball() {
  mkdir -p "$CRIU_SRC_CACHE"
  if ! echo "${CRIU_SHA256}  ${tarball}" | sha256sum -c --status 2>/dev/null; then
    # The source tarball is Debian's source package from sid; reuse the host's own mirror.
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || { echo "cannot find the Debian mirror in the apt configuration" >&2; exit 1; }
    cat > /etc/apt/sources.list.d/prewarm-sid-src.sources <<SRC
Types: deb-src
URIs: ${uri}
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    log "fetching CRIU ${CRIU_DEB_VERSION} source from Debian (sid)"
    apt-get update -q
    (cd "$CRIU_SRC_CACHE" && apt-get source --download-only "criu=${CRIU_DEB_VERSION}" || true)
    echo "${CRIU_SHA256}  ${tarball}" | sha256sum -c --status ||
      { echo "CRIU tarball missing or its sha256 does not match ${CRIU_SHA256}: ${tarball}" >&2; exit 1; }
  fi
}

if criu_ok; then
  log "CRIU ${CRIU_VERSION}: already installed"
else
  fetch_tarball
  build=$(mktemp -d /tmp/prewarm-criu-build.XXXXXX)
  trap 'rm -rf "$build"' EXIT
  tar -C "$build" -xf "$tarball"
  src=$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -n1)
  for p in "$PATCH_DIR"/*.patch; do
    log "patching CRIU: $(basename "$p")"
    patch -d "$src" -p1 --quiet --forward <"$p" || { echo "CRIU patch $p did not apply" >&2; exit 1; }
  done
  log "building CRIU ${CRIU_VERSION} (about 30 s)"
  printf '%s\n' '#!/bin/sh' \
    'for a in "$@"; do case "$a" in libnftables*) exit 1 ;; esac; done' \
    'exec pkg-config "$@"' >"$build/pkg-config"
  chmod 0755 "$build/pkg-config"
  make -C "$src" -j"$(nproc)" criu RUNDIR=/dev/shm "${CRIU_MAKE_FLAGS[@]}" \
    PKG_CONFIG="$build/pkg-config" >"$build/build.log" 2>&1 ||
    { tail -n 40 "$build/build.log" >&2; echo "CRIU build failed" >&2; exit 1; }
  install -D -m 0755 "$src/criu/criu" /usr/local/sbin/criu
  install -D -m 0644 "$src/images/rpc.proto" "$PROTO_DIR/rpc.proto"
  install_protos "$src"
  patches_id >"$PROTO_DIR/.criu-patches"
  criu_ok || { echo "installed CRIU does not report version ${CRIU_VERSION}" >&2; exit 1; }
  log "CRIU ${CRIU_VERSION} installed at /usr/local/sbin/criu"
fi

if protos_ok; then
  log "CRIU ${CRIU_VERSION} image protos: already installed"
else
  fetch_tarball
  protosrc=$(mktemp -d /tmp/prewarm-criu-protos.XXXXXX)
  tar -C "$protosrc" -xJf "$tarball" --wildcards '*/images/*.proto'
  install_protos "$(find "$protosrc" -mindepth 1 -maxdepth 1 -type d | head -n1)"
  rm -rf "$protosrc"
  protos_ok || { echo "CRIU image protos were not installed into $PROTO_DIR/images" >&2; exit 1; }
  log "CRIU ${CRIU_VERSION} image protos installed in $PROTO_DIR/images"
fi

# The deploy/ manifest tests validate with npm packages pinned in tests/deploy/package-lock.json
# (Node.js and npm come with machines of this kind; Debian's nodejs is not mixed in).
deploy_tests=$(cd "$(dirname "$0")/.." && pwd)/tests/deploy
if ! command -v npm >/dev/null 2>&1; then
  log "warning: npm not found: the deploy manifest tests will be skipped"
elif [ ! -d "$deploy_tests/node_modules" ] ||
     ! cmp -s "$deploy_tests/package-lock.json" "$deploy_tests/node_modules/.package-lock.json.installed"; then
  log "installing the deploy tests' npm packages (npm ci in tests/deploy)"
  (cd "$deploy_tests" && npm ci --no-audit --no-fund --loglevel=error) ||
    { echo "npm ci in $deploy_tests failed" >&2; exit 1; }
  cp "$deploy_tests/package-lock.json" "$deploy_tests/node_modules/.package-lock.json.installed"
else
  log "deploy tests' npm packages: already installed"
fi

# CRIU locks the network with iptables-restore; runc finds criu on PATH.
/usr/local/sbin/criu check >/dev/null 2>&1 || log "warning: 'criu check' did not pass; run 'prewarm doctor'"
log "done"
