#!/usr/bin/env bash
# The Debian package end to end, in a throw-away root (run by packaging/in-overlay.sh;
# tests/package.rs runs both):
#
#   packaging/in-overlay.sh packaging/tests/install.sh BIN_DIR
#
# builds the package from BIN_DIR's binaries, installs it with apt (which removes
# the MTA it replaces: Postfix, only in the overlay), checks what it installed, starts mtad as its systemd unit says (systemd is
# not PID 1 here: the unit's own command lines, as its User= with its capability, its
# stderr a stream to a systemd-journald started here, with JOURNAL_STREAM, and
# NOTIFY_SOCKET on a datagram socket this script reads: READY=1, RELOADING=1 and
# MONOTONIC_USEC then READY=1 on `systemctl reload`'s command, STOPPING=1 on SIGTERM;
# `journalctl -p warning -t mtad/smtpd` finds a warning, info lines are at info),
# sends mail with swaks and with bsd-mailx's `mail` through the installed
# /usr/sbin/sendmail, checks that mtad started as root becomes mtad, and purges the
# package: nothing of it is left, the user and groups are gone. Then dpkg -i on a
# host without an MTA, and a second purge.
set -euo pipefail
bin_dir=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

what="install test"
unit_file=/lib/systemd/system/mtad.service
. "$repo/packaging/tests/lib.sh"

step "build the package"
deb=$("$repo/packaging/build-deb.sh" --bin-dir "$bin_dir" --fast --out /tmp/deb)
[ -f "$deb" ] || fail "no package built"

step "apt install: mtad replaces the MTA there is (Postfix; in this overlay only)"
mtas=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Provides}\n' | awk '$1 == "ii" && /mail-transport-agent/ {print $2}')
apt-get install -y -q "$deb" >/tmp/apt.out 2>&1 || { cat /tmp/apt.out >&2; fail "apt-get install failed"; }
[ "$(dpkg-query -W -f '${db:Status-Abbrev}' mtad)" = "ii " ] || fail "mtad is not installed"
for p in $mtas; do
  [ "$(dpkg-query -W -f '${db:Status-Abbrev}' "$p")" != "ii " ] || fail "$p is still installed beside mtad"
done
[ "$(dpkg -S /usr/sbin/sendmail)" = "mtad: /usr/sbin/sendmail" ] || fail "/usr/sbin/sendmail is not mtad's"
dpkg -L mtad >/tmp/files

step "what it installed"
getent passwd mtad >/dev/null || fail "no mtad user"
getent group mtad-drop >/dev/null || fail "no mtad-drop group"
[ "$(stat -c '%a %U %G' /usr/sbin/sendmail)" = "2755 root mtad-drop" ] \
  || fail "sendmail is $(stat -c '%a %U %G' /usr/sbin/sendmail), not setgid mtad-drop"
[ "$(stat -c '%a %U %G' /var/spool/mtad/maildrop)" = "1730 mtad mtad-drop" ] \
  || fail "the maildrop is $(stat -c '%a %U %G' /var/spool/mtad/maildrop)"
[ "$(stat -c '%U' /var/spool/mtad/queue)" = mtad ] || fail "the spool is not mtad's"
for link in /usr/lib/sendmail /usr/bin/mailq /usr/bin/newaliases; do
  [ "$(readlink -f "$link")" = /usr/sbin/sendmail ] || fail "$link does not lead to /usr/sbin/sendmail"
done
grep -qx /etc/mtad/mtad.kdl /var/lib/dpkg/info/mtad.conffiles || fail "mtad.kdl is not a conffile"
for b in /usr/sbin/mtad /usr/bin/mtactl /usr/sbin/sendmail; do
  case "$(file -b "$b")" in *"not stripped"*) fail "$b is not stripped" ;; esac
  [ "$(stat -c %s "$b")" -lt 100000000 ] || fail "$b is $(stat -c %s "$b") bytes"
done
# nothing secret and world-readable: no key or password file at all
if grep -Ei '\.(key|pem|passwd)$|password' /tmp/files; then fail "key or password files installed"; fi
# man pages and completions
for page in "8 mtad" "1 mtactl" "1 sendmail" "5 mtad.kdl" "1 mailq" "1 mtactl-queue-list"; do
  man -w $page >/dev/null || fail "no man page $page"
done
# (whole outputs to grep: grep -q would close the pipe early, and pipefail see a SIGPIPE)
page=$(MANWIDTH=80 man 5 mtad.kdl 2>/dev/null)
grep -q 'local-submission' <<<"$page" || fail "mtad.kdl(5) lacks local-submission"
page=$(MANWIDTH=80 man 8 mtad 2>/dev/null)
grep -q -- '--allow-root' <<<"$page" || fail "mtad(8) lacks --allow-root"
bash -c '. /usr/share/bash-completion/completions/mtactl && complete -p mtactl' >/dev/null \
  || fail "the bash completion of mtactl does not load"
[ -f /usr/share/zsh/vendor-completions/_mtactl ] && [ -f /usr/share/fish/vendor_completions.d/mtactl.fish ] \
  || fail "no zsh or fish completion"
[ -f /lib/systemd/system/mtad.service ] || fail "no unit"
[ -L /etc/systemd/system/multi-user.target.wants/mtad.service ] || fail "the unit is not enabled"

[ "$(setting Type)" = notify ] || fail "Type= is not notify"
unit_credentials
[ "$(setting SyslogFacility)" = mail ] || fail "SyslogFacility= is not mail"

if systemctl is-system-running >/dev/null 2>&1; then
  fail "systemd runs here; this test starts the unit's command lines itself"
fi
step "ExecStartPre: $(setting ExecStartPre)"
"${as_unit[@]}" $(setting ExecStartPre) || fail "ExecStartPre failed"

step "ExecStart with NOTIFY_SOCKET, stderr to the journal: $(setting ExecStart)"
start_journald
journal_credentials
notify_log=/run/notify.log
start_notify_listener
NOTIFY_SOCKET=/run/notify.sock "${as_service[@]}" "${as_unit[@]}" $(setting ExecStart) &
mtad_pid=$!
wait_for "grep -q '^READY=1' $notify_log" 30 || { journal >&2; fail "no READY=1"; }
grep -q 'STATUS=accepting mail' "$notify_log" || fail "no STATUS= with READY=1"
[ "$(ps -o user= -p $mtad_pid)" = mtad ] || fail "mtad does not run as mtad"

step "the journal: priorities, Postfix's identifiers, the mail facility"
# a warning: an HTTP request on the SMTP port
exec 3<>/dev/tcp/127.0.0.1/25
printf 'GET / HTTP/1.0\r\n\r\n' >&3
cat <&3 >/dev/null || true
exec 3<&-
wait_for "journalctl -p warning -t mtad/smtpd | grep -q 'HTTP request on the SMTP port'" 10 \
  || { journal >&2; fail "journalctl -p warning -t mtad/smtpd does not find the warning"; }
journal -t mtad/smtpd >/tmp/smtpd.journal
grep -q '^4 2 mtad/smtpd warning: HTTP request on the SMTP port' /tmp/smtpd.journal \
  || { cat /tmp/smtpd.journal >&2; fail "the warning is not at priority 4, facility mail"; }
grep -q '^6 2 mtad/smtpd connect from localhost\[127.0.0.1\]' /tmp/smtpd.journal \
  || grep -q '^6 2 mtad/smtpd connect from unknown\[127.0.0.1\]' /tmp/smtpd.journal \
  || { cat /tmp/smtpd.journal >&2; fail "no connect line at priority 6, facility mail"; }
if journal -p warning | grep -q 'connect from'; then
  journal -p warning >&2; fail "info lines at warning or above"
fi
# nothing went through the stream: every line is the daemon's own
if journal -t mtad | grep -q .; then journal -t mtad >&2; fail "lines came through stderr"; fi

step "mail with swaks and with mail(1)"
swaks --server 127.0.0.1 --port 25 --from someone@localhost --to root@localhost \
  --header "Subject: by swaks" >/tmp/swaks.out 2>&1 || { cat /tmp/swaks.out >&2; fail "swaks failed"; }
grep -q 'queued as' /tmp/swaks.out || { cat /tmp/swaks.out >&2; fail "swaks: not queued"; }
echo "from root's mail" | mail -s "by mail as root" root || fail "mail (as root) failed"
echo "from nobody's mail" | setpriv --reuid=nobody --regid=nogroup --clear-groups mail -s "by mail as nobody" root \
  || fail "mail (as nobody) failed"
wait_for "[ \$(ls /var/spool/mtad/mail/root/new | wc -l) -ge 3 ]" 30 \
  || { journal >&2; ls -R /var/spool/mtad >&2; fail "the three messages did not arrive in root's Maildir"; }
for subject in "by swaks" "by mail as root" "by mail as nobody"; do
  grep -lq "^Subject: $subject" /var/spool/mtad/mail/root/new/* || fail "no message \"$subject\""
done
grep -q '^From: .*nobody@localhost' /var/spool/mtad/mail/root/new/* || fail "nobody's From: is not nobody@localhost"
queue=$(mailq)
grep -q 'Mail queue is empty' <<<"$queue" || fail "mailq: $queue"

step "ExecReload: $(setting ExecReload)"
"${as_unit[@]}" $(setting ExecReload) || fail "ExecReload failed"
wait_for "grep -q '^RELOADING=1 MONOTONIC_USEC=[0-9]' $notify_log" 10 || fail "no RELOADING=1 with MONOTONIC_USEC"
wait_for "[ \$(grep -c '^READY=1' $notify_log) -ge 2 ]" 10 || fail "no READY=1 after the reload"

step "stop (SIGTERM, as systemd sends)"
kill -TERM $mtad_pid
wait $mtad_pid || fail "mtad exited with $? on SIGTERM"
grep -q '^STOPPING=1' "$notify_log" || fail "no STOPPING=1"
kill $notify_pid
journalctl --no-pager -t mtad/master | grep -q 'stopped\|stopping' || { journal >&2; fail "no stop in the journal"; }
kill $journald_pid
cat "$notify_log" >&2

step "started as root (no systemd): binds port 25, then becomes mtad"
/usr/sbin/mtad --config /etc/mtad/mtad.kdl 2>/run/mtad-root.log &
mtad_pid=$!
wait_for "grep -q 'mtad started' /run/mtad-root.log" 30 || { cat /run/mtad-root.log >&2; fail "mtad did not start as root"; }
[ "$(ps -o user= -p $mtad_pid)" = mtad ] || fail "mtad started as root still runs as $(ps -o user= -p $mtad_pid)"
swaks --server 127.0.0.1 --port 25 --to root@localhost >/tmp/swaks.out 2>&1 || { cat /tmp/swaks.out >&2; fail "swaks failed"; }
kill -TERM $mtad_pid
wait $mtad_pid || fail "mtad exited with $? on SIGTERM"

step "dpkg --purge (bsd-mailx and logwatch depend on an MTA: forced, as for Postfix above)"
dpkg --purge --force-depends mtad
[ "$(dpkg-query -W -f '${db:Status-Abbrev}' mtad 2>/dev/null)" != "ii " ] || fail "mtad is still installed"
getent passwd mtad && fail "the mtad user is left"
getent group mtad && fail "the mtad group is left"
getent group mtad-drop && fail "the mtad-drop group is left"
[ -z "$(dpkg-statoverride --list /usr/sbin/sendmail)" ] || fail "the statoverride is left"
for d in /etc/mtad /var/spool/mtad /usr/share/mtad /usr/share/doc/mtad; do
  [ ! -e "$d" ] || fail "$d is left"
done
while read -r f; do
  [ -d "$f" ] && continue   # shared directories (/usr/share/man/man1 ...) stay
  [ ! -e "$f" ] && [ ! -L "$f" ] || fail "$f is left"
done </tmp/files
[ ! -e /etc/systemd/system/multi-user.target.wants/mtad.service ] || fail "the unit is still enabled"

step "dpkg -i on a host without an MTA, and purged again"
dpkg -i "$deb" >/dev/null
[ "$(dpkg-query -W -f '${db:Status-Abbrev}' mtad)" = "ii " ] || fail "mtad is not installed by dpkg -i"
/usr/bin/mtactl check --config /etc/mtad/mtad.kdl >/dev/null || fail "the installed configuration does not check"
dpkg --purge --force-depends mtad >/dev/null
[ ! -e /etc/mtad ] && ! getent passwd mtad >/dev/null || fail "the second purge left /etc/mtad or the user"
step "ok"
