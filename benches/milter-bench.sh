#!/usr/bin/env bash
# Relay throughput through a milter (rspamd 3.4's proxy worker, self-scanning), mtad
# against Postfix, in the same run with the same rspamd (issue 21's benchmark), and
# mtad asking the same rspamd over its HTTP protocol instead (its normal worker):
#
#   postfix          : smtp-source -> Postfix -> smtp-sink
#   postfix+rspamd   : smtp-source -> Postfix (smtpd_milters = rspamd) -> smtp-sink
#   mtad             : smtp-source -> mtad -> smtp-sink
#   mtad+rspamd      : smtp-source -> mtad (milters="rspamd", the milter) -> smtp-sink
#   mtad+rspamd-http : smtp-source -> mtad (rspamd "..." "http://...": /checkv2) -> smtp-sink
#
# rspamd runs two proxy workers and two normal workers, so each path has the same
# number of scanning processes.
#
# Two loads: 1 session (the added latency per message: 1/rate with the milter minus
# 1/rate without) and S sessions (throughput).
#
#   benches/milter-bench.sh [MSGS] [SESSIONS]   (defaults 1000, 10; 4 KB messages;
#                                                the 1-session load sends MSGS/4)
#
# Build first: cargo build --release. Needs postfix (smtp-source, smtp-sink, the
# baseline), rspamd, bc. Prints msg/s until the sink has every message, per system and
# load, the added milliseconds per message, and the ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-1000} S=${2:-10} L=4096
N1=$((N / 4))
WORK=$(mktemp -d /var/tmp/mtad-milter-bench.XXXXXX)
chmod 755 "$WORK"   # smtp-sink writes as postfix, rspamd runs as _rspamd
PF=$WORK/postfix
cleanup() {
  postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
MTAD=13537 MTAD_M=13538 MTAD_H=13541 PFP=13539 SINK=13636 RSPAMD=13640 RSPAMD_HTTP=13641
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
wait_port() { for _ in $(seq 600); do ss -ltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }

# $1 label, $2 port, $3 messages, $4 sessions: msg/s into $RESULT
measure() {
  local dir=$WORK/sink-$1 t0 t1
  rm -rf "$dir"; mkdir -p "$dir"; chmod 777 "$dir"
  smtp-sink -u postfix -d "$dir/%M." 127.0.0.1:$SINK 1024 >/dev/null 2>&1 & local sink=$!
  wait_port $SINK
  t0=$(now)
  smtp-source -4 -N -s "$4" -m "$3" -l "$L" -f bench@src.test -t rcpt@dst.test -S bench 127.0.0.1:"$2" >/dev/null 2>&1 \
    || echo "smtp-source reported errors ($1)" >&2
  local waited=0
  while [ "$(ls "$dir" | wc -l)" -lt "$3" ]; do
    sleep 0.05; waited=$((waited + 1))
    [ $waited -lt 12000 ] || { echo "$1: the sink got $(ls "$dir" | wc -l) of $3" >&2; break; }
  done
  t1=$(now)
  kill $sink; wait $sink 2>/dev/null || true
  RESULT=$(echo "$3 / ($t1 - $t0)" | bc -l | xargs printf '%.1f')
}

# rspamd: peers.md §1, the milter and the HTTP worker, DNS to a dead port
R=$WORK/rspamd; mkdir -p "$R/run" "$R/local/local.d"; chown -R _rspamd:_rspamd "$R/run"
cat >"$R/rspamd.conf" <<EOF
.include "\$CONFDIR/common.conf"
options {
    pidfile = "\$RUNDIR/rspamd.pid";
    .include "\$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "\$LOCAL_CONFDIR/local.d/options.inc"
}
logging { type = "file"; filename = "\$LOGDIR/rspamd.log"; level = "warning"; }
worker "rspamd_proxy" {
    bind_socket = "127.0.0.1:$RSPAMD";
    milter = yes;
    timeout = 120s;
    upstream "local" { default = yes; self_scan = yes; }
    count = 2;
}
worker "normal" {
    bind_socket = "127.0.0.1:$RSPAMD_HTTP";
    .include "\$CONFDIR/worker-normal.inc"
    count = 2;
}
EOF
echo 'dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }
local_addrs = [];' >"$R/local/local.d/options.inc"
echo 'skip_local = false; use = ["x-spam-status", "x-rspamd-queue-id"];' >"$R/local/local.d/milter_headers.conf"
echo 'enabled = false;' >"$R/local/local.d/fuzzy_check.conf"
rspamd -f -u _rspamd -g _rspamd -c "$R/rspamd.conf" --var=LOCAL_CONFDIR="$R/local" \
  --var=DBDIR="$R/run" --var=RUNDIR="$R/run" --var=LOGDIR="$R/run" >/dev/null 2>&1 &
RSPAMD_PID=$!
wait_port $RSPAMD
wait_port $RSPAMD_HTTP

# Postfix: the same instance as ../shared/bench/compare-postfix.sh, with or without the milter
pf_start() { # $1: smtpd_milters value
  postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  rm -rf "$PF"; mkdir -p "$PF/etc" "$PF/spool" "$PF/data"; chown postfix:postfix "$PF/data"
  cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $PF/etc
queue_directory = $PF/spool
data_directory = $PF/data
myhostname = relay.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
relay_domains =
relayhost = [127.0.0.1]:$SINK
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
biff = no
maillog_file = $PF/maillog
smtpd_milters = $1
milter_default_action = tempfail
milter_protocol = 6
EOF
  cat >"$PF/etc/master.cf" <<EOF
127.0.0.1:$PFP inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
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
  postfix -c "$PF/etc" start >/dev/null 2>&1
  wait_port $PFP
}

# mtad: one daemon, a listener without rspamd, one with its milter, one with its HTTP
mkdir -p "$WORK/mtad"
cat >"$WORK/mtad/mtad.kdl" <<KDL
server {
    hostname "relay.bench.test"
    spool "$WORK/mtad/spool"
}
milter "rspamd" "inet:127.0.0.1:$RSPAMD"
rspamd "rspamd-http" "http://127.0.0.1:$RSPAMD_HTTP"
listen "plain" address="127.0.0.1:$MTAD"
listen "milter" address="127.0.0.1:$MTAD_M" milters="rspamd"
listen "http" address="127.0.0.1:$MTAD_H" milters="rspamd-http"
limits {
    connections-per-ip 1000
}
networks "loopback" "127.0.0.0/8"
stage "rcpt" {
    accept client="loopback"
}
stage "route" {
    relay "smtp:[127.0.0.1]:$SINK" tls="none"
}
KDL
MTAD_LOG=warn "$here/target/release/mtad" --allow-root --config "$WORK/mtad/mtad.kdl" >"$WORK/mtad.log" 2>&1 &
wait_port $MTAD_M

# warm rspamd up (its first scans compile regexps)
measure warmup $MTAD_M 50 2 >/dev/null
measure warmup $MTAD_H 50 2 >/dev/null

declare -A rate
for load in "1 $N1" "$S $N"; do
  set -- $load; s=$1 n=$2
  pf_start ""
  measure postfix $PFP "$n" "$s"; rate[postfix-$s]=$RESULT
  pf_start "inet:127.0.0.1:$RSPAMD"
  measure postfix+rspamd $PFP "$n" "$s"; rate[postfix+rspamd-$s]=$RESULT
  measure mtad $MTAD "$n" "$s"; rate[mtad-$s]=$RESULT
  measure mtad+rspamd $MTAD_M "$n" "$s"; rate[mtad+rspamd-$s]=$RESULT
  measure mtad+rspamd-http $MTAD_H "$n" "$s"; rate[mtad+rspamd-http-$s]=$RESULT
done
postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
grep -i "milter failed\|error" "$WORK/mtad.log" | head -3 >&2 || true

for s in 1 "$S"; do
  printf '%-16s %8s  (%s session(s))\n' system msg/s "$s"
  for sys in postfix postfix+rspamd mtad mtad+rspamd mtad+rspamd-http; do
    printf '%-16s %8s\n' "$sys" "${rate[$sys-$s]}"
  done
done
added() { echo "1000 / $2 - 1000 / $1" | bc -l | xargs printf '%.2f'; }
echo "added latency per message, 1 session (ms): postfix $(added "${rate[postfix-1]}" "${rate[postfix+rspamd-1]}"), mtad $(added "${rate[mtad-1]}" "${rate[mtad+rspamd-1]}"), mtad over HTTP $(added "${rate[mtad-1]}" "${rate[mtad+rspamd-http-1]}")"
echo "throughput with the milter, $S sessions: mtad/postfix = $(echo "${rate[mtad+rspamd-$S]} / ${rate[postfix+rspamd-$S]}" | bc -l | xargs printf '%.2f')"
echo "rspamd over HTTP against its milter, mtad: 1 session $(echo "${rate[mtad+rspamd-http-1]} / ${rate[mtad+rspamd-1]}" | bc -l | xargs printf '%.2f'), $S sessions $(echo "${rate[mtad+rspamd-http-$S]} / ${rate[mtad+rspamd-$S]}" | bc -l | xargs printf '%.2f')"
