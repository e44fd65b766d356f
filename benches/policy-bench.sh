#!/usr/bin/env bash
# Policy delegation and DNS lists, measured: the accept throughput of mtad and of a
# throw-away Postfix, each without and with a policy server asked at every RCPT
# (`check-policy-service` / `check_policy_service`), the same server for both
# (tests/peers/policy_recorder.py answering DUNNO, recording nothing), and mtad with
# a DNS list asked at every connection (`reject-dnsbl`, dnsmasq on loopback, the
# client not listed). Same load, one run each, same session; the difference per
# recipient is what one policy question costs each server.
#
#   benches/policy-bench.sh [MESSAGES] [SESSIONS]        (default 5000 10)
#
# Needs smtp-source and postfix, dnsmasq, python3; run as root (Postfix's start);
# builds mtad in release first.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-5000} S=${2:-10}
tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$tmp/pf/etc" ] && postfix -c "$tmp/pf/etc" stop >/dev/null 2>&1 || true
  sleep 0.5; rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

cd "$here"
cargo build --release -q

# the policy server
python3 tests/peers/policy_recorder.py - DUNNO >"$tmp/policy.port" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$tmp/policy.port" && break; sleep 0.05; done
policy_port=$(awk '/ready/ {print $2}' "$tmp/policy.port")

# dnsmasq with a DNS list that does not list 127.0.0.1
dns_port=$(free_port)
dnsmasq --no-daemon --no-resolv --no-hosts --keep-in-foreground --bind-interfaces \
  --listen-address=127.0.0.1 --port="$dns_port" --pid-file --local=/test/ \
  --host-record=2.0.0.127.bl.test,127.0.0.2 2>/dev/null &
pids+=($!)

rate() { python3 -c "import sys; print(f'{sys.argv[1]:40} {int(sys.argv[2])/(float(sys.argv[4])-float(sys.argv[3])):8.0f} msg/s')" "$@"; }
load() { # name, port
  local start end
  start=$(date +%s.%N)
  smtp-source -4 -s "$S" -m "$N" -l 1024 -r 1 -f bench@src.test -t rcpt@dst.test 127.0.0.1:"$2" >/dev/null 2>&1 \
    || echo "smtp-source reported errors ($1)" >&2
  end=$(date +%s.%N)
  rate "$1" "$N" "$start" "$end"
}

mtad_run() { # name, extra config, rcpt rules
  local port dir; port=$(free_port); dir="$tmp/mtad-$RANDOM"; mkdir -p "$dir"
  cat >"$dir/mtad.kdl" <<KDL
server {
    hostname "accept.bench.test"
    spool "$dir/spool"
}
listen "bench" address="127.0.0.1:$port"
limits {
    connections-per-ip 1000
}
domains "dst" "dst.test"
delivery {
    queue-only #true
    dns-server "127.0.0.1:$dns_port"
}
$2
stage "rcpt" {
$3
    accept rcpt-domain="dst"
}
KDL
  MTAD_LOG=warn "$here/target/release/mtad" --allow-root --config "$dir/mtad.kdl" 2>"$dir/log" &
  local pid=$!
  wait_port "$port"
  load "$1" "$port"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

pf_start() { # extra main.cf
  local pf="$tmp/pf" port; port=$(free_port)
  [ -d "$pf/etc" ] && { postfix -c "$pf/etc" stop >/dev/null 2>&1 || true; sleep 1; rm -rf "$pf"; }
  mkdir -p "$pf/etc" "$pf/spool" "$pf/data"; chown postfix:postfix "$pf/data"
  cat >"$pf/etc/main.cf" <<CF
compatibility_level = 3.6
config_directory = $pf/etc
queue_directory = $pf/spool
data_directory = $pf/data
maillog_file_prefixes = $pf
maillog_file = $pf/maillog
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
alias_maps =
alias_database =
relay_domains = dst.test
mynetworks = 127.0.0.0/8
smtpd_client_connection_rate_limit = 0
smtpd_client_connection_count_limit = 0
default_transport = discard
relay_transport = discard
$1
CF
  printf '%s\n' "127.0.0.1:$port inet n - n - - smtpd" \
    "pickup unix n - n 60 1 pickup" "cleanup unix n - n - 0 cleanup" "qmgr unix n - n 300 1 qmgr" \
    "rewrite unix - - n - - trivial-rewrite" "bounce unix - - n - 0 bounce" "defer unix - - n - 0 bounce" \
    "trace unix - - n - 0 bounce" "verify unix - - n - 1 verify" "proxymap unix - - n - - proxymap" \
    "discard unix - - n - - discard" "anvil unix - - n - 1 anvil" "scache unix - - n - 1 scache" \
    "error unix - - n - - error" "retry unix - - n - - error" "showq unix n - n - - showq" \
    "postlog unix-dgram n - n - 1 postlogd" >"$pf/etc/master.cf"
  postfix -c "$pf/etc" start >/dev/null 2>&1
  wait_port "$port"
  echo "$port"
}

echo "== accept, $N messages of 1 recipient, $S sessions"
mtad_run "mtad" "" ""
mtad_run "mtad + check-policy-service" \
  "policy-service \"p\" address=\"inet:127.0.0.1:$policy_port\"" "    check-policy-service \"p\""
mtad_run "mtad + reject-dnsbl (per recipient)" \
  "dnsbl \"bl\" \"bl.test\"" "    reject-dnsbl \"bl\""
port=$(pf_start "smtpd_recipient_restrictions = permit_mynetworks, reject")
load "postfix" "$port"
port=$(pf_start "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:$policy_port, permit_mynetworks, reject")
load "postfix + check_policy_service" "$port"
