# Shared by packaging/tests/install.sh and production-recipe.sh (sourced). Each sets
# `what` (the prefix of its failure messages) and `unit_file` first.

fail() { echo "$what: $*" >&2; exit 1; }
step() { echo "== $*" >&2; }

# waits up to $2 seconds for the command $1 (a string for bash -c) to succeed
wait_for() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if bash -c "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# a setting of the unit, as systemd reads it (the first one)
setting() { sed -n "s/^$1=//p" "$unit_file" | head -1; }

# the array as_unit: what systemd does for User=, Group= and
# AmbientCapabilities=CAP_NET_BIND_SERVICE, as a command prefix ("${as_unit[@]}" CMD;
# an array, not a function, so that `... &` gives $! the daemon's own pid)
unit_credentials() {
  as_unit=(setpriv "--reuid=$(setting User)" "--regid=$(setting Group)" --init-groups
    --inh-caps=+net_bind_service --ambient-caps=+net_bind_service --)
}

# systemd's side of sd_notify: a datagram socket at /run/notify.sock whose messages
# are appended to /run/notify.log, one line each; sets notify_pid
start_notify_listener() {
  : >/run/notify.log
  /usr/bin/python3 - /run/notify.sock /run/notify.log <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
while True:
    data = s.recv(4096)
    with open(sys.argv[2], "a") as f:
        f.write(data.decode().replace("\n", " ").strip() + "\n")
PY
  notify_pid=$!
  wait_for "[ -S /run/notify.sock ]" 10 || fail "the notify socket is not there"
}

# systemd-journald on this root's /run (systemd is not running here), so that a
# service's stderr can go to the journal as under systemd; sets journald_pid
start_journald() {
  local j
  for j in /lib/systemd/systemd-journald /usr/lib/systemd/systemd-journald; do
    [ -x "$j" ] && break
  done
  [ -x "$j" ] || fail "systemd-journald is not installed (apt-get install systemd)"
  "$j" >/dev/null 2>&1 &
  journald_pid=$!
  wait_for "[ -S /run/systemd/journal/stdout ] && [ -S /run/systemd/journal/socket ]" 10 \
    || fail "systemd-journald did not start"
}

# the array as_service: what systemd does for StandardOutput/StandardError=journal
# (the default) and SyslogIdentifier=, as a command prefix ("${as_service[@]}" CMD):
# stdout and stderr a stream to journald, JOURNAL_STREAM its DEVICE:INODE
journal_credentials() {
  as_service=(systemd-cat -t "$(setting SyslogIdentifier)" bash -c
    'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"' journal-stream)
}

# the journal's entries for journalctl ARGS, as "PRIORITY FACILITY IDENTIFIER MESSAGE"
journal() {
  journalctl --no-pager -o json "$@" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print(e.get("PRIORITY"), e.get("SYSLOG_FACILITY"), e.get("SYSLOG_IDENTIFIER"), e.get("MESSAGE"))
'
}
