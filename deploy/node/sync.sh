#!/bin/sh
# Keeps the node's checkpoint store filled: every PREWARM_SYNC_INTERVAL seconds, pulls each
# reference listed in PREWARM_IMAGES_FILE that the store does not have yet, then runs
# `prewarm gc`. A line is `REGISTRY/REPO:TAG [NAME]` (NAME defaults to the repository's last
# part, as `prewarm pull` names it); blank lines and lines starting with # are ignored.
# Images are pulled once per name: give a new tag (or NAME) to roll out a new bake.
#
# Usage: sync.sh [--once]
# Environment: PREWARM_IMAGES_FILE (default /etc/prewarm-node/images), PREWARM_SYNC_INTERVAL
# (seconds, default 300), PREWARM (the binary, default prewarm), PREWARM_STATE_DIR (read by
# prewarm itself), PREWARM_REGISTRY_USER / PREWARM_REGISTRY_PASSWORD (likewise).
set -u

IMAGES_FILE=${PREWARM_IMAGES_FILE:-/etc/prewarm-node/images}
INTERVAL=${PREWARM_SYNC_INTERVAL:-300}
PREWARM=${PREWARM:-prewarm}
ONCE=0
[ "${1:-}" = --once ] && ONCE=1

log() { printf '[prewarm-sync] %s\n' "$*"; }

case $INTERVAL in ''|*[!0-9]*) log "PREWARM_SYNC_INTERVAL must be a number of seconds, got '$INTERVAL'"; exit 2 ;; esac

# The name `prewarm pull REF` gives an image: the repository's last path part.
default_name() {
  ref=${1%%@*}
  last=${ref##*/}
  printf '%s\n' "${last%%:*}"
}

sync_once() {
  if [ ! -r "$IMAGES_FILE" ]; then
    log "no list of checkpoints at $IMAGES_FILE: nothing to pull"
  else
    present=$("$PREWARM" images 2>/dev/null | awk 'NR > 1 { print $1 }') || present=
    # The file is read into a variable first: prewarm must not read the list on its stdin.
    list=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$IMAGES_FILE" || true)
    printf '%s\n' "$list" | while read -r ref name _; do
      [ -n "$ref" ] || continue
      [ -n "${name:-}" ] || name=$(default_name "$ref")
      if printf '%s\n' "$present" | grep -qx -- "$name"; then
        log "present: $name ($ref)"
        continue
      fi
      log "pulling $ref as $name"
      "$PREWARM" pull "$ref" --name "$name" </dev/null || log "pull of $ref failed (status $?); trying again in ${INTERVAL} s"
    done
  fi
  "$PREWARM" gc </dev/null || log "gc failed (status $?)"
}

trap 'log "stopping"; exit 0' TERM INT
while :; do
  sync_once
  [ "$ONCE" = 1 ] && exit 0
  # sleep in the background so that SIGTERM ends the wait at once
  sleep "$INTERVAL" &
  wait $! || true
done
