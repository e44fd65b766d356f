#!/usr/bin/env bash
# examples/production's install recipe, as written in its mtad.service, in a
# throw-away root (run by packaging/in-overlay.sh; tests/package.rs runs it):
#
#   packaging/in-overlay.sh packaging/tests/production-recipe.sh BIN_DIR
#
# Each recipe line runs as written, from the repository, with two stand-ins: the
# binaries are BIN_DIR's (the build cargo test made, for `cargo build --release` and
# target/release/), and systemd is not PID 1 here, so `systemctl daemon-reload` is
# skipped and `systemctl enable --now mtad` is what systemd would do: the unit's
# StateDirectory and RuntimeDirectory, then its ExecStartPre and ExecStart as its User=
# with its capability, with NOTIFY_SOCKET on a socket this script reads. Then mail
# with swaks to the MX listener, a reload (ExecReload), and SIGTERM.
set -euo pipefail
bin_dir=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
export LC_ALL=C.UTF-8

what="production recipe"
. "$repo/packaging/tests/lib.sh"

# the recipe: the indented command lines of the unit's first comment block
mapfile -t recipe < <(sed -n '1,/^# cp -L/{s/^#   \(.*\)$/\1/p}' "$repo/examples/production/mtad.service")
[ "${#recipe[@]}" -ge 6 ] || fail "no recipe found in examples/production/mtad.service"
cd "$repo"
enabled=no
for line in "${recipe[@]}"; do
  step "$line"
  case "$line" in
    "cargo build --release") continue ;;            # BIN_DIR is built already
    "systemctl enable --now mtad") enabled=yes; continue ;;
  esac
  line=${line//target\/release\//$bin_dir/}
  line=${line/ && systemctl daemon-reload/}
  bash -euo pipefail -c "$line" || fail "the recipe line failed: $line"
done
[ $enabled = yes ] || fail "the recipe does not start mtad"
unit_file=/etc/systemd/system/mtad.service
[ -f "$unit_file" ] || fail "the recipe did not install the unit"

step "no key or password is readable by everyone"
if find /etc/mtad -perm -o=r -type f | grep .; then fail "world-readable files in /etc/mtad"; fi

step "systemctl enable --now mtad, as systemd would run it"
[ "$(setting Type)" = notify ] || fail "Type= is not notify"
unit_credentials
user=$(setting User)
install -d -o "$user" -g "$(setting Group)" -m "$(setting StateDirectoryMode)" "/var/lib/$(setting StateDirectory)"
install -d -o "$user" -g "$(setting Group)" -m "$(setting RuntimeDirectoryMode)" "/run/$(setting RuntimeDirectory)"
"${as_unit[@]}" $(setting ExecStartPre) || fail "ExecStartPre failed"
start_notify_listener
NOTIFY_SOCKET=/run/notify.sock MTAD_LOG=info "${as_unit[@]}" $(setting ExecStart) 2>/run/mtad.log &
mtad_pid=$!
wait_for "grep -q '^READY=1' /run/notify.log" 30 || { cat /run/mtad.log >&2; fail "no READY=1"; }

step "mail to the MX (port 25) from the trusted network"
swaks --server 127.0.0.1 --port 25 --from app@example.net --to alice@example.net \
  >/tmp/swaks.out 2>&1 || { cat /tmp/swaks.out >&2; fail "swaks failed"; }
grep -q 'queued as' /tmp/swaks.out || { cat /tmp/swaks.out >&2; fail "not queued"; }
queue=$(/usr/local/bin/mtactl queue list --config /etc/mtad/mtad.kdl)
grep -q 'alice@example.net' <<<"$queue" || { echo "$queue" >&2; fail "the message is not in the queue"; }

step "systemctl reload mtad: $(setting ExecReload)"
"${as_unit[@]}" $(setting ExecReload) || fail "ExecReload failed"
wait_for "[ \$(grep -c '^READY=1' /run/notify.log) -ge 2 ]" 10 || fail "no READY=1 after the reload"

step "systemctl stop mtad (SIGTERM)"
kill -TERM $mtad_pid
wait $mtad_pid || fail "mtad exited with $? on SIGTERM"
grep -q '^STOPPING=1' /run/notify.log || fail "no STOPPING=1"
kill $notify_pid
step "ok"
