#!/bin/sh
# Assembles a busybox rootfs for the static C examples (tiny's counter server, heap): a statically
# linked busybox with a few applets, the app's binary as /bin/<its file name>, and the minimal
# /etc a container expects.
#
#   make-rootfs.sh OUT_DIR APP_BINARY [BUSYBOX]
#
# Idempotent: the tree is built next to OUT_DIR under a temporary name and then swapped in, so
# OUT_DIR is always either the previous complete rootfs or the new complete one.
set -eu

usage() { echo "usage: $0 OUT_DIR APP_BINARY [BUSYBOX]" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
out=$1
app=$2
app_name=$(basename -- "$app")
busybox=${3:-/bin/busybox}

die() { echo "make-rootfs.sh: $*" >&2; exit 1; }

# The rootfs has no libc, so both binaries must be statically linked.
check_static() {
  [ -f "$1" ] && [ -x "$1" ] || die "$1: not an executable file"
  if command -v file >/dev/null 2>&1; then
    desc=$(file -L "$1")
    case $desc in
      *"statically linked"* | *"static-pie linked"*) ;;
      *) die "$1 is not statically linked ($desc)${2:+; $2}" ;;
    esac
  elif command -v readelf >/dev/null 2>&1; then
    if readelf -lW "$1" | grep -q 'INTERP'; then
      die "$1 is dynamically linked (it has a program interpreter)${2:+; $2}"
    fi
  fi
}
check_static "$busybox" "install Debian's busybox-static"
check_static "$app" ""

# Applets linked into /bin (only those this busybox has).
applets="sh cat echo ls sleep hostname wget true false mkdir rm ps
  env grep sed head tail wc touch cp mv ln kill id uname date test [ printf ip nc"
for a in busybox $applets; do
  [ "$app_name" != "$a" ] || die "$app: its name would replace /bin/$a; rename it"
done

parent=$(dirname -- "$out")
name=$(basename -- "$out")
mkdir -p -- "$parent"
tmp=$(mktemp -d "$parent/.$name.tmp.XXXXXX")
old=""
cleanup() {
  [ -n "$tmp" ] && rm -rf -- "$tmp"
  [ -n "$old" ] && rm -rf -- "$old"
  return 0
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

chmod 0755 "$tmp"
mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/tmp" "$tmp/root" \
  "$tmp/run" "$tmp/var/tmp"
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
chmod 0700 "$tmp/root"

cp -- "$busybox" "$tmp/bin/busybox"
chmod 0755 "$tmp/bin/busybox"
cp -- "$app" "$tmp/bin/$app_name"
chmod 0755 "$tmp/bin/$app_name"

available=$("$tmp/bin/busybox" --list)
for a in $applets; do
  if printf '%s\n' "$available" | grep -qxF -- "$a"; then
    ln -s busybox "$tmp/bin/$a"
  else
    case $a in
      sh | cat | echo | ls | sleep | hostname | wget | true | false | mkdir | rm | ps)
        die "$busybox has no '$a' applet" ;;
    esac
  fi
done

cat >"$tmp/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$tmp/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat >"$tmp/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
chmod 0644 "$tmp/etc/passwd" "$tmp/etc/group" "$tmp/etc/hosts"

# Swap the new tree in. Never a partial tree at $out: at worst (a failure between the two
# renames) nothing is there, and the next build makes it again.
if [ -e "$out" ] || [ -L "$out" ]; then
  old=$(mktemp -d "$parent/.$name.old.XXXXXX")
  mv -- "$out" "$old/rootfs"
fi
mv -- "$tmp" "$out"
tmp=""
