#!/usr/bin/env bash
# Relay throughput to a DANE-protected next hop against plain opportunistic TLS, in the
# same run with the same peers (issue 22's benchmark):
#
#   opportunistic : smtp-source -> mtad -> aiosmtpd (STARTTLS), MX of opp.bench.test,
#                   TLS level opportunistic (no DNSSEC lookup, no certificate check)
#   dane          : smtp-source -> mtad -> the same aiosmtpd, MX of dane.bench.test,
#                   TLS level dane (tls-policy-map): MX and TLSA records validated
#                   (DNSSEC, knot signs and serves bench.test), DANE-EE 3 1 1 check
#
# Both MX hosts are the same aiosmtpd on 127.0.0.1 (its certificate, made here with
# openssl, is what the TLSA record names). Loads: 1 session (per-message latency: the
# policy lookups with a warm cache and the DANE check are what `dane` adds to each
# delivery) and S sessions (throughput). Every delivery asks the TLS policy afresh
# (delivery decides per transaction), so the added time per message bounds the cost
# of the policy lookup with a warm cache.
#
#   benches/dane-bench.sh [MSGS] [SESSIONS]   (defaults 600, 10; 4 KB messages; the
#                                              1-session load sends MSGS/3)
#
# Build first: cargo build --release. Needs knot, knot-dnsutils (kdig, keymgr),
# postfix (smtp-source), python3-aiosmtpd, openssl, bc.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-600} S=${2:-10} L=4096
N1=$((N / 3))
WORK=$(mktemp -d /var/tmp/mtad-dane-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
MTAD=13737 KNOT=13739
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
wait_port() { for _ in $(seq 600); do ss -ltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }
for t in knotd kdig keymgr smtp-source openssl bc; do
  command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || { echo "dane-bench: $t is missing" >&2; exit 1; }
done
/usr/bin/python3 -c 'import aiosmtpd' || { echo "dane-bench: python3-aiosmtpd is missing" >&2; exit 1; }
[ -x "$here/target/release/mtad" ] || { echo "dane-bench: cargo build --release first" >&2; exit 1; }
PATH=$PATH:/usr/sbin

# the next hop's certificate and its TLSA record (DANE-EE, SPKI, SHA-256)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=mx-dane.bench.test -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
TLSA=$(openssl x509 -in "$WORK/cert.pem" -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)

# the next hop: aiosmtpd with STARTTLS, on a port it picks (the TLSA record names it)
SINKDIR=$WORK/sink; mkdir -p "$SINKDIR"
/usr/bin/python3 "$here/tests/peers/aiosmtpd_peer.py" "$SINKDIR" --tls "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/aio.out" 2>"$WORK/aio.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^ready ' "$WORK/aio.out" 2>/dev/null && break; sleep 0.1; done
SINK=$(sed -n 's/^ready //p' "$WORK/aio.out")
[ -n "$SINK" ] || { echo "dane-bench: aiosmtpd did not start: $(cat "$WORK/aio.err")" >&2; exit 1; }

# knot signs and serves bench.test (peers.md §8)
K=$WORK/knot; mkdir -p "$K/zones" "$K/db" "$K/run"
cat >"$K/zones/bench.test.zone" <<EOF
\$ORIGIN bench.test.
\$TTL 3600
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 127.0.0.1
dane MX 10 mx-dane
mx-dane A 127.0.0.1
_$SINK._tcp.mx-dane TLSA 3 1 1 $TLSA
opp MX 10 mx-opp
mx-opp A 127.0.0.1
EOF
cat >"$K/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$KNOT
    rundir: $K/run
log:
  - target: $K/run/knot.log
    any: warning
database:
    storage: $K/db
policy:
  - id: bench
    algorithm: ecdsap256sha256
    ksk-lifetime: 0
    zsk-lifetime: 0
    nsec3: off
template:
  - id: default
    storage: $K/zones
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: all
zone:
  - domain: bench.test
    dnssec-signing: on
    dnssec-policy: bench
EOF
knotd -c "$K/knot.conf" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  kdig @127.0.0.1 -p $KNOT bench.test DNSKEY +short 2>/dev/null | grep -q '^257 ' && break
  sleep 0.1
done
kdig @127.0.0.1 -p $KNOT bench.test DNSKEY +short | grep '^257 ' | sed 's/^/bench.test. 3600 IN DNSKEY /' >"$WORK/anchors"
[ -s "$WORK/anchors" ] || { echo "dane-bench: knot did not sign bench.test" >&2; exit 1; }

mkdir -p "$WORK/mtad"
printf 'dane.bench.test dane-only\n' >"$WORK/tls_policy"
cat >"$WORK/mtad/mtad.kdl" <<KDL
server {
    hostname "mx.src.test"
    spool "$WORK/mtad/spool"
}
listen "in" address="127.0.0.1:$MTAD"
stage "rcpt" {
    accept
}
delivery {
    dns-server "127.0.0.1:$KNOT"
    dnssec-trust-anchors "$WORK/anchors"
    tls-policy-map "$WORK/tls_policy"
    smtp-port $SINK
}
KDL
MTAD_LOG=warn "$here/target/release/mtad" --allow-root --config "$WORK/mtad/mtad.kdl" >"$WORK/mtad.log" 2>&1 &
PIDS+=($!)
wait_port $MTAD

delivered() { echo $(( $(find "$SINKDIR" -name '*.eml' | wc -l) )); }
# $1 label, $2 recipient domain, $3 messages, $4 sessions: msg/s into $RESULT
measure() {
  local before t0 t1 waited=0 want
  before=$(delivered); want=$((before + $3))
  t0=$(now)
  smtp-source -4 -N -s "$4" -m "$3" -l "$L" -f bench@src.test -t "rcpt@$2" -S bench 127.0.0.1:$MTAD >/dev/null 2>&1 \
    || echo "smtp-source reported errors ($1)" >&2
  while [ "$(delivered)" -lt "$want" ]; do
    sleep 0.05; waited=$((waited + 1))
    [ $waited -lt 12000 ] || { echo "$1: the sink got $(( $(delivered) - before )) of $3" >&2; break; }
  done
  t1=$(now)
  RESULT=$(echo "$3 / ($t1 - $t0)" | bc -l | xargs printf '%.1f')
}

measure warmup-opp opp.bench.test 30 2
measure warmup-dane dane.bench.test 30 2
declare -A rate
for round in 1 2; do
  for load in "1 $N1" "$S $N"; do
    set -- $load
    measure opp opp.bench.test "$2" "$1"; rate[opp-$1-$round]=$RESULT
    measure dane dane.bench.test "$2" "$1"; rate[dane-$1-$round]=$RESULT
  done
done
if grep -q "dane: \|TLS failure" "$WORK/mtad.log"; then
  echo "mtad deferred something:" >&2; grep "dane: \|TLS failure" "$WORK/mtad.log" | head -3 >&2
fi
# every DANE delivery was verified against the TLSA record (dane-only defers otherwise)
echo "messages at the sink: $(delivered)"
for round in 1 2; do
  for s in 1 "$S"; do
    o=${rate[opp-$s-$round]} d=${rate[dane-$s-$round]}
    added=$(echo "1000 / $d - 1000 / $o" | bc -l | xargs printf '%.2f')
    share=$(echo "100 * (1 / $d - 1 / $o) / (1 / $d)" | bc -l | xargs printf '%.1f')
    echo "round $round, $s session(s): opportunistic $o msg/s, dane $d msg/s, dane/opportunistic $(echo "$d / $o" | bc -l | xargs printf '%.2f'), added per message ${added} ms (${share}% of a DANE delivery)"
  done
done
