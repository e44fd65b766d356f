#!/usr/bin/env bash
# Local submission, mtad against Postfix in the same run: N sequential `sendmail -t`
# invocations of a 4 KB message, timed until every sendmail has exited (queued: the
# message is on stable storage, in the maildrop) and until smtp-sink has them all
# (delivered: picked up, through the policy, queued, relayed).
#
#   benches/sendmail-bench.sh [--msgs N] [--size BYTES] [--runs R]
#
# Postfix: a throwaway instance (its own config_directory and queue_directory under
# $WORK_DIR, relayhost = the sink), its sendmail -C (postdrop + pickup + cleanup).
# mtad: target/release/{mtad,sendmail} (cargo build --release first), a
# local-submission block, everything relayed to the sink. Both as root, same disk.
# Prints msg/s per run and system, then the medians and the ratios mtad/Postfix.
set -u
N=500 L=4096 RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --msgs) N=$2; shift 2 ;;
    --size) L=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MTAD=$ROOT/target/release/mtad
SENDMAIL=$ROOT/target/release/sendmail
[ -x "$MTAD" ] && [ -x "$SENDMAIL" ] || { echo "cargo build --release first" >&2; exit 2; }
WORK=${WORK_DIR:-/var/tmp/mtad-sendmail-bench}
PF=$WORK/postfix
SINK_PORT=${SINK_PORT:-12727}
MTAD_PORT=${MTAD_PORT:-12728}
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
wait_port() { for _ in $(seq 100); do ss -ltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; return 1; }

rm -rf "$WORK"; mkdir -p "$WORK"
# the message: To: in the headers (-t), a 4 KB body
{
  printf 'To: rcpt@dst.test\nSubject: sendmail bench\n\n'
  head -c $((L * 3 / 4)) /dev/urandom | base64 -w 76
} | head -c "$L" >"$WORK/msg.eml"
printf '\n' >>"$WORK/msg.eml"

pf_setup() {
  postfix -c "$PF/etc" stop >/dev/null 2>&1
  rm -rf "$PF"; mkdir -p "$PF/etc" "$PF/spool" "$PF/data"; chown postfix:postfix "$PF/data"
  cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $PF/etc
queue_directory = $PF/spool
data_directory = $PF/data
myhostname = relay.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$SINK_PORT
smtp_tls_security_level = none
smtputf8_enable = no
biff = no
maillog_file = $PF/maillog
EOF
  cat >"$PF/etc/master.cf" <<EOF
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
  postfix -c "$PF/etc" check >/dev/null 2>&1 || { echo "postfix check failed" >&2; exit 1; }
  postfix -c "$PF/etc" start >/dev/null 2>&1 || { echo "postfix did not start" >&2; exit 1; }
}

mtad_setup() {
  mkdir -p "$WORK/mtad"
  cat >"$WORK/mtad/mtad.kdl" <<EOF
server {
    hostname "relay.bench.test"
    spool "$WORK/mtad/spool"
}
listen "mx" address="127.0.0.1:$MTAD_PORT"
networks "trusted" "127.0.0.0/8"
stage "rcpt" {
    accept client="trusted"
}
stage "route" {
    relay "smtp:[127.0.0.1]:$SINK_PORT"
}
local-submission {
    maildrop "$WORK/mtad/maildrop"
}
delivery {
    backoff-min "1s"     // smtp-sink sometimes resets a connection under load: retry soon
}
EOF
  rm -rf "$WORK/mtad/spool" "$WORK/mtad/maildrop"
  MTAD_LOG=${MTAD_LOG:-warn} "$MTAD" --allow-root --config "$WORK/mtad/mtad.kdl" >>"$WORK/mtad.log" 2>&1 & MTAD_PID=$!
  wait_port "$MTAD_PORT" || { echo "mtad did not start; see $WORK/mtad.log" >&2; exit 1; }
}

# $1 label, then the sendmail command; prints "label queued_mps delivered_mps ok"
measure() {
  local label=$1 sink t0 t1 t2 rc=0 src=0 i
  shift
  smtp-sink -u postfix -M "$N" 127.0.0.1:"$SINK_PORT" 1024 >/dev/null 2>&1 & sink=$!
  wait_port "$SINK_PORT" || { echo "smtp-sink did not start" >&2; exit 1; }
  t0=$(now)
  for i in $(seq "$N"); do
    "$@" -t <"$WORK/msg.eml" || rc=$?
  done
  t1=$(now)
  ( sleep 300; kill "$sink" 2>/dev/null ) >/dev/null 2>&1 & local wd=$!
  wait "$sink"; src=$?
  kill "$wd" 2>/dev/null; wait "$wd" 2>/dev/null
  t2=$(now)
  awk -v l="$label" -v n="$N" -v a="$(echo "$t1 - $t0" | bc)" -v e="$(echo "$t2 - $t0" | bc)" -v rc="$rc" -v src="$src" \
    'BEGIN { if (a <= 0) a = 0.01; if (e <= 0) e = 0.01;
             printf "%s %.0f %.0f %s\n", l, n / a, n / e, (rc == 0 && src == 0) ? "ok" : "FAILED(sendmail=" rc ",sink=" src ")" }'
}

command -v bc >/dev/null || { apt-get install -y -qq bc >/dev/null 2>&1; }
trap 'postfix -c "$PF/etc" stop >/dev/null 2>&1; [ -n "${MTAD_PID:-}" ] && kill "$MTAD_PID" 2>/dev/null' EXIT
echo "msgs=$N size=$L runs=$RUNS  (msg/s: queued = until the last sendmail exited, delivered = until the sink has all)"
results=$WORK/results.txt; : >"$results"
for r in $(seq "$RUNS"); do
  pf_setup
  line=$(measure postfix /usr/sbin/sendmail -C "$PF/etc"); echo "run $r $line" | tee -a "$results"
  postfix -c "$PF/etc" stop >/dev/null 2>&1
  mtad_setup
  line=$(measure mtad "$SENDMAIL" -C "$WORK/mtad/mtad.kdl"); echo "run $r $line" | tee -a "$results"
  kill "$MTAD_PID" 2>/dev/null; wait "$MTAD_PID" 2>/dev/null; MTAD_PID=
done
med() { grep " $1 " "$results" | awk -v c="$2" '{print $c}' | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
for what in queued:4 delivered:5; do
  name=${what%:*} col=${what#*:}
  pf=$(med postfix "$col"); mt=$(med mtad "$col")
  awk -v n="$name" -v p="$pf" -v m="$mt" 'BEGIN { printf "median msg/s %s: postfix=%s mtad=%s ratio mtad/postfix=%.2f\n", n, p, m, m / p }'
done
