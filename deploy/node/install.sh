#!/bin/sh
# Sets a Kubernetes node up for RuntimeClass "prewarm": copies the prewarm binary to the host
# (as prewarm and prewarm-runtime), adds the runtime handler to containerd or CRI-O, restarts
# the container runtime when its configuration changed, checks that the host can run the
# wrapper, and labels the node prewarm.dev/ready=true. Idempotent: a second run changes nothing.
#
# Usage: install.sh [--host-root DIR] [--runtime auto|containerd|crio] [--no-restart]
#                   [--no-label] [--binary FILE] [--files DIR] [--host-exec nsenter|direct|none]
#   --host-root DIR  the host's root as this script sees it (default $HOST_ROOT or /)
#   --files DIR      where prewarm.toml and 99-prewarm.conf are (default: beside this script,
#                    then ../containerd and ../crio of the source tree)
#   --host-exec      how host commands run (systemctl, containerd config dump, the binary
#                    check): nsenter into PID 1's namespaces (needs hostPID), directly, or not
#                    at all (then those steps are skipped with a reason). Default: direct when
#                    the host root is /, nsenter otherwise.
# Environment: NODE_NAME (the node to label), HOST_ROOT, PREWARM_BINARY.
set -eu

HOST_ROOT=${HOST_ROOT:-/}
RUNTIME=auto
RESTART=1
LABEL=1
BINARY=${PREWARM_BINARY:-/usr/local/bin/prewarm}
FILES_DIR=
HOST_EXEC=

# The contract with the wrapper and the RuntimeClass (see deploy/README.md).
IMPORT_GLOB=/etc/containerd/conf.d/*.toml
BIN_DIR=/usr/local/bin
READY_LABEL=prewarm.dev/ready
BEGIN_MARK="# BEGIN prewarm runtime handler (managed by prewarm-node install.sh; do not edit)"
END_MARK="# END prewarm runtime handler"

log() { printf '[prewarm-node] %s\n' "$*"; }
die() { printf '[prewarm-node] error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --host-root) HOST_ROOT=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --no-restart) RESTART=0; shift ;;
    --no-label) LABEL=0; shift ;;
    --binary) BINARY=$2; shift 2 ;;
    --files) FILES_DIR=$2; shift 2 ;;
    --host-exec) HOST_EXEC=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

HOST_ROOT=${HOST_ROOT%/}
[ -d "$HOST_ROOT/" ] || die "host root '$HOST_ROOT' is not a directory"
if [ -z "$HOST_EXEC" ]; then
  if [ -z "$HOST_ROOT" ]; then HOST_EXEC=direct; else HOST_EXEC=nsenter; fi
fi
case $HOST_EXEC in nsenter|direct|none) ;; *) die "--host-exec must be nsenter, direct or none" ;; esac
case $RUNTIME in auto|containerd|crio) ;; *) die "--runtime must be auto, containerd or crio" ;; esac

script_dir=$(cd "$(dirname "$0")" && pwd)
find_file() {  # $1: file name, $2: its directory in the source tree
  for f in ${FILES_DIR:+"$FILES_DIR/$1"} "$script_dir/$1" "$script_dir/../$2/$1"; do
    [ -f "$f" ] && { printf '%s\n' "$f"; return 0; }
  done
  die "cannot find $1 (looked in ${FILES_DIR:+$FILES_DIR, }$script_dir and $script_dir/../$2; use --files DIR)"
}

# Runs a command on the host: in PID 1's namespaces, directly, or not at all (status 125).
host_run() {
  case $HOST_EXEC in
    nsenter) nsenter -t 1 -m -u -i -n -p -- "$@" ;;
    direct) "$@" ;;
    none) return 125 ;;
  esac
}

CHANGED=0   # did the container runtime's configuration change (restart needed)?

# Replaces $2 with $1 unless they are equal; atomic (temp file + rename); prints what it did.
put_file() {  # $1: source, $2: destination, $3: mode
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    log "unchanged: ${2#"$HOST_ROOT"}"
    return 1
  fi
  mkdir -p "$(dirname "$2")"
  tmp="$2.prewarm-tmp.$$"
  cp "$1" "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$2" || { rm -f "$tmp"; die "cannot write $2"; }
  log "installed: ${2#"$HOST_ROOT"}"
  return 0
}

install_binary() {
  [ -f "$BINARY" ] || die "prewarm binary '$BINARY' not found (--binary FILE)"
  # The runtime is a small launcher beside prewarm (it runs prewarm only when it has to).
  launcher="$(dirname "$BINARY")/prewarm-runtime"
  [ -f "$launcher" ] || die "prewarm-runtime not found beside '$BINARY'"
  put_file "$BINARY" "$HOST_ROOT$BIN_DIR/prewarm" 0755 || true
  put_file "$launcher" "$HOST_ROOT$BIN_DIR/prewarm-runtime" 0755 || true
}

detect_runtime() {
  [ "$RUNTIME" = auto ] || return 0
  has_containerd=0; has_crio=0
  [ -d "$HOST_ROOT/etc/containerd" ] && has_containerd=1
  { [ -f "$HOST_ROOT/etc/crio/crio.conf" ] || [ -d "$HOST_ROOT/etc/crio/crio.conf.d" ]; } && has_crio=1
  case $has_containerd$has_crio in
    10) RUNTIME=containerd ;;
    01) RUNTIME=crio ;;
    11) die "both /etc/containerd and /etc/crio exist on the host: say which runtime the kubelet uses with --runtime" ;;
    00) die "neither /etc/containerd nor /etc/crio exists under host root '$HOST_ROOT/': is this a Kubernetes node? (--runtime containerd creates containerd's config)" ;;
  esac
  log "container runtime: $RUNTIME"
}

# --- containerd -------------------------------------------------------------------------------

# Table headers that configure the CRI plugin (version-2 name, or the version-1 short name),
# outside the block this script manages.
cri_tables() {  # $1: file
  awk -v b="$BEGIN_MARK" -v e="$END_MARK" '
    $0 == b { skip = 1; next } $0 == e { skip = 0; next }
    !skip && /^[[:space:]]*\[+[[:space:]]*plugins[[:space:]]*\.[[:space:]]*("io\.containerd\.grpc\.v1\.cri"|cri)([[:space:]]*[].])/ { print }
    !skip && /^[[:space:]]*\[+[[:space:]]*plugins[[:space:]]*\]/ { print }' "$1"
}

# The runtime handler's tables without the version line and comments: what goes inline.
handler_block() {  # $1: the drop-in
  printf '%s\n' "$BEGIN_MARK"
  grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*version[[:space:]]*=' -e '^[[:space:]]*$' "$1"
  printf '%s\n' "$END_MARK"
}

# Writes $1 without the managed block, and without the blank lines that end it, to stdout.
without_block() {
  awk -v b="$BEGIN_MARK" -v e="$END_MARK" '
    $0 == b { skip = 1; next } $0 == e { skip = 0; next } skip { next }
    /^[[:space:]]*$/ { blanks = blanks $0 "\n"; next }
    { printf "%s", blanks; blanks = ""; print }' "$1"
}

# The single-line imports array of $1 ("" when there is none); dies on a multi-line one.
imports_line() {
  line=$(grep -E '^[[:space:]]*imports[[:space:]]*=' "$1" || true)
  [ -z "$line" ] && return 0
  [ "$(printf '%s\n' "$line" | wc -l)" -eq 1 ] || die "$1 has more than one imports line"
  case $line in
    *\]*) printf '%s\n' "$line" ;;
    *) die "$1: the imports array spans several lines; put it on one line, or add \"$IMPORT_GLOB\" to it by hand" ;;
  esac
}

# Files other than ours that the imports of $1 name (host paths, globs expanded in the host root).
imported_files() {  # $1: config, $2: our drop-in (host path)
  line=$(imports_line "$1")
  [ -n "$line" ] || return 0
  printf '%s\n' "$line" | sed 's/^[^[]*\[//; s/\].*$//' | tr ',' '\n' |
    sed 's/^[[:space:]]*"//; s/"[[:space:]]*$//' | while IFS= read -r pattern; do
      [ -n "$pattern" ] || continue
      for f in $HOST_ROOT$pattern; do
        if [ -f "$f" ] && [ "${f#"$HOST_ROOT"}" != "$2" ]; then printf '%s\n' "$f"; fi
      done
    done
}

configure_containerd() {
  src=$(find_file prewarm.toml containerd)
  cfg=$HOST_ROOT/etc/containerd/config.toml
  dropin_host=/etc/containerd/conf.d/prewarm.toml
  dropin=$HOST_ROOT$dropin_host
  new=$(mktemp "${TMPDIR:-/tmp}/prewarm-config.XXXXXX")
  trap 'rm -f "$new"' EXIT

  if [ -f "$cfg" ]; then cp "$cfg" "$new"; else : >"$new"; fi

  if awk -v b="$BEGIN_MARK" -v e="$END_MARK" '$0 == b { s = 1; next } $0 == e { s = 0; next }
        !s && /runtimes\.("?)prewarm("?)[[:space:]]*\]/ { found = 1 } END { exit !found }' "$new"; then
    log "config.toml already has a runtime handler 'prewarm' that this script did not write: left as it is"
    return 0
  fi

  version=$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$new" | head -n1)
  case ${version:-none} in
    2) ;;
    3) die "containerd config version 3 (containerd 2.x) is not supported by this script yet: add the runtime handler by hand (see deploy/README.md)" ;;
    *)
      if grep -q '^[[:space:]]*\[' "$new"; then
        die "${cfg#"$HOST_ROOT"} is a version-1 config (no 'version = 2'): migrate it to version 2 first (containerd 1.6's imports and this handler's plugin names need it)"
      fi
      # Only comments or top-level keys: version 2 means the same defaults.
      { printf 'version = 2\n'; cat "$new"; } >"$new.v" && mv "$new.v" "$new"
      ;;
  esac

  # containerd before 2.0 replaces a whole plugin section with an imported file's: a drop-in
  # would wipe the node's own CRI settings (sandbox image, SystemdCgroup, CNI, registries).
  others=$(imported_files "$new" "$dropin_host")
  for f in $others; do
    if [ -n "$(cri_tables "$f")" ]; then
      die "${f#"$HOST_ROOT"} (imported by config.toml) configures the CRI plugin, so an imported prewarm.toml would replace it or be replaced (containerd before 2.0 does not merge plugin sections): add the tables of prewarm.toml to that file by hand"
    fi
  done

  if [ -n "$(cri_tables "$new")" ]; then
    mode=inline
    log "config.toml configures the CRI plugin itself: the handler goes into config.toml (an import would replace those settings)"
    { without_block "$new"; printf '\n'; handler_block "$src"; } >"$new.b" && mv "$new.b" "$new"
  else
    mode=import
    without_block "$new" >"$new.b" && mv "$new.b" "$new"
    line=$(imports_line "$new")
    if [ -z "$line" ]; then
      awk -v imp="imports = [\"$IMPORT_GLOB\"]" '
        !done && /^[[:space:]]*version[[:space:]]*=/ { print; print imp; done = 1; next } { print }' \
        "$new" >"$new.i" && mv "$new.i" "$new"
    else
      case $line in
        *"\"$IMPORT_GLOB\""*) ;;
        *) awk -v add="\"$IMPORT_GLOB\"" '
             !done && /^[[:space:]]*imports[[:space:]]*=/ {
               sub(/\][^]]*$/, "")
               if ($0 ~ /\[[[:space:]]*$/) print $0 add "]"; else print $0 ", " add "]"
               done = 1; next } { print }' "$new" >"$new.i" && mv "$new.i" "$new" ;;
      esac
    fi
  fi

  # Apply: keep the node's original config once, and this run's for a rollback.
  [ -f "$cfg" ] && [ ! -e "$cfg.pre-prewarm" ] && cp -p "$cfg" "$cfg.pre-prewarm"
  rollback=$(mktemp "${TMPDIR:-/tmp}/prewarm-rollback.XXXXXX")
  had_cfg=0; [ -f "$cfg" ] && { cp -p "$cfg" "$rollback"; had_cfg=1; }
  had_dropin=0; [ -f "$dropin" ] && { cp -p "$dropin" "$rollback.dropin"; had_dropin=1; }
  trap 'rm -f "$new" "$rollback" "$rollback.dropin"' EXIT

  if [ "$mode" = import ]; then
    put_file "$src" "$dropin" 0644 && CHANGED=1
  elif [ -f "$dropin" ]; then
    rm -f "$dropin"; CHANGED=1
    log "removed ${dropin_host}: imported, it would replace config.toml's CRI settings"
  fi
  put_file "$new" "$cfg" 0644 && CHANGED=1

  [ "$CHANGED" = 1 ] || return 0
  # A config containerd cannot read stops every pod on the node: check it with the host's
  # containerd before any restart, and put the old files back if it fails.
  if out=$(host_run containerd --config /etc/containerd/config.toml config dump 2>&1); then
    if printf '%s\n' "$out" | grep -q 'runtimes\.prewarm\]' &&
       printf '%s\n' "$out" | grep -q "BinaryName = \"$BIN_DIR/prewarm-runtime\""; then
      log "containerd accepts the new config and has the runtime handler 'prewarm'"
      return 0
    fi
    reason="containerd's dump of the new config has no runtime handler 'prewarm'"
  else
    [ $? -eq 125 ] && { log "skipped: checking the config with the host's containerd (--host-exec none)"; return 0; }
    reason="containerd refuses the new config: $(printf '%s\n' "$out" | tail -n 3)"
  fi
  if [ "$had_cfg" = 1 ]; then cp -p "$rollback" "$cfg"; else rm -f "$cfg"; fi
  if [ "$had_dropin" = 1 ]; then cp -p "$rollback.dropin" "$dropin"; else rm -f "$dropin"; fi
  die "$reason; the previous files are back in place, containerd was not restarted"
}

# --- CRI-O ------------------------------------------------------------------------------------

configure_crio() {
  src=$(find_file 99-prewarm.conf crio)
  put_file "$src" "$HOST_ROOT/etc/crio/crio.conf.d/99-prewarm.conf" 0644 && CHANGED=1
  return 0
}

# --- restart, checks, label -------------------------------------------------------------------

restart_runtime() {
  unit=$RUNTIME
  if [ "$CHANGED" = 0 ]; then log "$unit: configuration unchanged, no restart"; return 0; fi
  if [ "$RESTART" = 0 ]; then log "skipped: restarting $unit (--no-restart); restart it for the handler to take effect"; return 0; fi
  if host_run systemctl restart "$unit"; then
    log "restarted $unit"
  else
    rc=$?
    [ $rc -eq 125 ] && { log "skipped: restarting $unit (--host-exec none)"; return 0; }
    die "'systemctl restart $unit' on the host failed (status $rc)"
  fi
}

# The wrapper must run on the host (its libraries there) and find runc; CRIU is needed to
# restore (without it every pod cold-starts, which the wrapper reports).
check_host() {
  if host_run "$BIN_DIR/prewarm" --help >/dev/null 2>&1; then
    log "the host runs $BIN_DIR/prewarm"
  else
    rc=$?
    [ $rc -eq 125 ] && { log "skipped: checking that the host runs $BIN_DIR/prewarm (--host-exec none)"; return 0; }
    die "the host cannot run $BIN_DIR/prewarm (status $rc; missing shared libraries?): node not labelled"
  fi
  host_run sh -c 'command -v runc' >/dev/null 2>&1 || die "no runc on the host's PATH: node not labelled"
  host_run sh -c 'command -v criu' >/dev/null 2>&1 ||
    log "warning: no criu on the host's PATH: pods will cold-start (the wrapper writes why)"
}

label_node() {
  if [ "$LABEL" = 0 ]; then log "skipped: labelling the node (--no-label)"; return 0; fi
  [ -n "${NODE_NAME:-}" ] || { log "skipped: labelling the node (NODE_NAME is not set)"; return 0; }
  if command -v kubectl >/dev/null 2>&1 && [ -n "${KUBERNETES_SERVICE_HOST:-}" ]; then
    kubectl label node "$NODE_NAME" --overwrite "$READY_LABEL=true" >/dev/null ||
      die "kubectl could not label node $NODE_NAME"
    log "labelled node $NODE_NAME $READY_LABEL=true"
    return 0
  fi
  sa=/var/run/secrets/kubernetes.io/serviceaccount
  if [ -n "${KUBERNETES_SERVICE_HOST:-}" ] && [ -r "$sa/token" ] && command -v curl >/dev/null 2>&1; then
    host=$KUBERNETES_SERVICE_HOST
    case $host in *:*) host="[$host]" ;; esac
    curl -fsS --max-time 30 --cacert "$sa/ca.crt" -H "Authorization: Bearer $(cat "$sa/token")" \
      -H 'Content-Type: application/strategic-merge-patch+json' -X PATCH \
      --data "{\"metadata\":{\"labels\":{\"$READY_LABEL\":\"true\"}}}" \
      "https://$host:${KUBERNETES_SERVICE_PORT:-443}/api/v1/nodes/$NODE_NAME" >/dev/null ||
      die "the API server refused to label node $NODE_NAME"
    log "labelled node $NODE_NAME $READY_LABEL=true"
    return 0
  fi
  log "skipped: labelling the node (no API server here: KUBERNETES_SERVICE_HOST unset, or neither kubectl nor curl with a service account token)"
}

detect_runtime
install_binary
case $RUNTIME in
  containerd) configure_containerd ;;
  crio) configure_crio ;;
esac
restart_runtime
check_host
label_node
log "done"
