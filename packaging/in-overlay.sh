#!/usr/bin/env bash
# Runs SCRIPT as root in a throw-away copy of this host: new mount, network and PID
# namespaces, an overlay whose lower layer is / and whose upper layer is a tmpfs,
# chrooted into. Whatever SCRIPT installs, purges or starts (dpkg -i, dpkg --purge
# postfix, a daemon on port 25) happens in the overlay and vanishes with the
# namespaces; the network namespace has only its own loopback.
#
#   packaging/in-overlay.sh SCRIPT [ARGS...]
#
# SCRIPT runs with the repository (read-only) at its own path and ARGS as given; its
# exit status is this script's. Afterwards the host is checked: /usr/sbin/sendmail,
# the dpkg database and the mtad user are what they were before. Needs root
# (CAP_SYS_ADMIN) and overlayfs; fails loudly without them.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 SCRIPT [ARGS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "in-overlay: needs root" >&2; exit 1; }
repo=$(cd "$(dirname "$0")/.." && pwd)

fingerprint() {
  {
    if [ -e /usr/sbin/sendmail ]; then sha256sum /usr/sbin/sendmail; else echo "no /usr/sbin/sendmail"; fi
    sha256sum /var/lib/dpkg/status
    ls /var/lib/dpkg/info | sha256sum
    getent passwd mtad || echo "no mtad user"
    getent group mtad-drop || echo "no mtad-drop group"
  } 2>&1
}
before=$(fingerprint)

tmp=$(mktemp -d /tmp/mtad-overlay.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# the part that runs inside the new namespaces (still on the host's root)
cat >"$tmp/enter.sh" <<'EOF'
set -euo pipefail
tmp=$1 repo=$2; shift 2
mount -t tmpfs -o mode=0755 tmpfs "$tmp"
mkdir "$tmp/upper" "$tmp/work" "$tmp/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$tmp/upper,workdir=$tmp/work" "$tmp/root"
r=$tmp/root
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
# systemd-journald needs /sys/fs/cgroup (the install test starts one)
mount --rbind /sys "$r/sys"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
# the repository (and the build it holds), read-only, wherever it lives
mkdir -p "$r$repo"
mount --bind "$repo" "$r$repo"
mount -o remount,bind,ro "$r$repo"
for extra in ${MTAD_OVERLAY_RO:-}; do
  mkdir -p "$r$extra"
  mount --bind "$extra" "$r$extra"
  mount -o remount,bind,ro "$r$extra"
done
ip link set lo up
exec chroot "$r" /bin/bash "$@"
EOF

status=0
unshare --mount --net --pid --fork --propagation private \
  /bin/bash "$tmp/enter.sh" "$tmp" "$repo" "$@" || status=$?

after=$(fingerprint)
if [ "$before" != "$after" ]; then
  echo "in-overlay: THE HOST CHANGED:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
exit $status
