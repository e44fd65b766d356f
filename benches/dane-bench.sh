#!/usr/bin/env bash
# Relay throughput to a DANE-protected next hop (`delivery { tls "dane" }`: the MX and
# address records validated with DNSSEC, the TLSA record looked up and the next hop's
# key matched against it) against the same next hop with plain opportunistic TLS
# (`tls "opportunistic"`: no DNSSEC, no TLSA, any certificate), alternating in the same
# run (issue 22's benchmark).
#
#   smtp-source -> mtad (relay) --STARTTLS--> mtad (sink: TLS, discards)
#   DNS: knotd serving a signed `test.` (the trust anchor), a signed child `dane.test`
#   (secure delegation: its DS in test.) with `dane.test MX mx.dane.test`,
#   `mx.dane.test A 127.0.0.1` and `_PORT._tcp.mx.dane.test TLSA 3 1 1` of the sink's key.
#
#   benches/dane-bench.sh [MSGS] [SESSIONS] [RUNS]    (defaults 5000, 20, 3; 4 KB)
#
# Build first: cargo build --release. Needs knotd, knotc, keymgr, kdig (knot,
# knot-dnsutils), openssl, smtp-source (postfix) and curl. The time of a run is from the
# first message sent to the relay's `mtad_deliveries_total{status="sent"}` reaching MSGS
# (polled every 50 ms); a run in which any delivery is deferred or bounced fails. Also
# the relay's CPU time per message (user + system, from /proc), which a busy machine
# disturbs less than the throughput: the difference is what DANE's lookups and checks
# cost a delivery. PERF=DIR records a profile of the relay in each mode (perf record -g,
# DIR/MODE.perf.data, the last run's).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-5000} S=${2:-20} RUNS=${3:-3} L=4096
bin=$here/target/release
for t in "$bin/mtad" knotd knotc keymgr kdig openssl smtp-source curl; do
  command -v "$t" >/dev/null || { echo "dane-bench: $t is missing" >&2; exit 2; }
done
WORK=$(mktemp -d /var/tmp/mtad-dane-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
MX=13737 SINK=13738 DNS=13739 METRICS=13740
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
wait_port() { for _ in $(seq 100); do ss -ltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }
dig() { kdig @127.0.0.1 -p $DNS "$@" +short +timeout=1 +retry=0; }

# the sink's certificate, from a CA no root store knows (DANE-EE does not need one)
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mx.dane.test \
  -keyout sink.key -out sink.csr 2>/dev/null
printf 'subjectAltName=DNS:mx.dane.test\n' >ext
openssl x509 -req -in sink.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext -out sink.pem 2>/dev/null
spki=$(openssl x509 -in sink.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)

# the zones, signed by knotd itself
mkdir -p knot/zones knot/db knot/run
test_zone() { # $1 serial, $2 the DS line
  printf '$ORIGIN test.\n$TTL 300\n@ SOA ns1 hostmaster %s 3600 600 86400 300\n@ NS ns1\nns1 A 127.0.0.1\ndane NS ns1.dane\nns1.dane A 127.0.0.1\n%s\n' "$1" "$2"
}
test_zone 1 '' >knot/zones/test.zone
cat >knot/zones/dane.test.zone <<ZONE
\$ORIGIN dane.test.
\$TTL 300
@ SOA ns1.test. hostmaster.test. 1 3600 600 86400 300
@ NS ns1.test.
@ MX 10 mx
mx A 127.0.0.1
_$SINK._tcp.mx TLSA 3 1 1 $spki
ZONE
cat >knot/knot.conf <<CONF
server:
    listen: 127.0.0.1@$DNS
    rundir: $WORK/knot/run
log:
  - target: $WORK/knot/run/knot.log
    any: info
database:
    storage: $WORK/knot/db
policy:
  - id: bench
    algorithm: ecdsap256sha256
    ksk-lifetime: 0
    zsk-lifetime: 0
    nsec3: off
template:
  - id: default
    global-module: mod-stats
    storage: $WORK/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: all
zone:
  - domain: test
    dnssec-signing: on
    dnssec-policy: bench
  - domain: dane.test
    dnssec-signing: on
    dnssec-policy: bench
CONF
knotd -c knot/knot.conf >/dev/null 2>&1 &
for _ in $(seq 200); do [ -n "$(dig dane.test MX 2>/dev/null)" ] && break; sleep 0.1; done
[ -n "$(dig dane.test MX)" ] || { echo "knotd never answered" >&2; cat knot/run/knot.log >&2; exit 1; }
ds=$(keymgr -c knot/knot.conf dane.test ds | awk '$2 == "DS" && $5 == 2')
[ -n "$ds" ] || { echo "no DS for dane.test from keymgr" >&2; exit 1; }
test_zone 2 "$ds" >knot/zones/test.zone
knotc -c knot/knot.conf zone-reload test >/dev/null
for _ in $(seq 200); do [ -n "$(dig dane.test DS)" ] && break; sleep 0.1; done
dig test DNSKEY | awk 'NF { print "test. 3600 IN DNSKEY " $0 }' >anchors
grep -q ' 257 3 13 ' anchors || { echo "no KSK for test.: $(cat anchors)" >&2; exit 1; }

# the next hop: mtad offering STARTTLS with that certificate, discarding what it gets
mkdir -p sink
cat >sink/mtad.kdl <<KDL
server {
    hostname "mx.dane.test"
    spool "$WORK/sink/spool"
    tls-certificate "$WORK/sink.pem"
    tls-key "$WORK/sink.key"
}
listen "sink" address="127.0.0.1:$SINK"
limits {
    connections-per-ip 1000
}
networks "loopback" "127.0.0.0/8"
stage "rcpt" {
    discard client="loopback"
}
KDL
MTAD_LOG=warn "$bin/mtad" --allow-root --config sink/mtad.kdl 2>sink.log &
wait_port $SINK

# $1: dane | opportunistic
config() {
  rm -rf relay; mkdir -p relay
  cat >relay/mtad.kdl <<KDL
server {
    hostname "relay.bench.test"
    spool "$WORK/relay/spool"
    metrics "127.0.0.1:$METRICS"
}
listen "bench" address="127.0.0.1:$MX"
limits {
    connections-per-ip 1000
}
networks "loopback" "127.0.0.0/8"
stage "rcpt" {
    accept client="loopback"
}
delivery {
    dns-server "127.0.0.1:$DNS"
    smtp-port $SINK
    tls "$1"
    dnssec-trust-anchors "$WORK/anchors"
}
KDL
}

sent() { # deliveries by status $1 so far, from the relay's metrics
  curl -s "http://127.0.0.1:$METRICS/metrics" |
    awk -v s="status=\"$1\"" '/^mtad_deliveries_total\{/ && index($0, s) { n += $NF } END { print n + 0 }'
}

# one run of mode $1 with $2 messages, into $RESULT (msg/s until all were sent)
measure() {
  config "$1"
  MTAD_LOG=${LOG:-warn} "$bin/mtad" --allow-root --config relay/mtad.kdl 2>relay.log &
  local mtad=$! t0 t1 waited=0 perf=''
  wait_port $MX
  if [ -n "${PERF:-}" ]; then
    perf record -q -F 999 --call-graph dwarf,16384 -p $mtad -o "$PERF/$1.perf.data" 2>/dev/null &
    perf=$!
  fi
  queries() { knotc -c knot/knot.conf stats mod-stats.request-protocol | awk -F' = ' '{ n += $2 } END { print n + 0 }'; }
  local q0
  q0=$(queries)
  t0=$(now)
  smtp-source -4 -N -s "$S" -m "$2" -l "$L" -f bench@src.test -t rcpt@dane.test -S bench 127.0.0.1:$MX >/dev/null 2>&1 \
    || echo "smtp-source reported errors ($1)" >&2
  while [ "$(sent sent)" -lt "$2" ]; do
    sleep 0.05; waited=$((waited + 1))
    if [ "$(sent deferred)" != 0 ] || [ "$(sent bounced)" != 0 ] || [ $waited -ge 12000 ]; then
      echo "$1: sent $(sent sent) of $2, deferred $(sent deferred), bounced $(sent bounced)" >&2
      tail -n 5 relay.log >&2
      exit 1
    fi
  done
  t1=$(now)
  # the relay's CPU (user + system, clock ticks): less disturbed by a busy machine than
  # the wall time
  local ticks
  ticks=$(awk '{ print $14 + $15 }' /proc/$mtad/stat)
  if [ -n "$perf" ]; then kill -TERM $perf; wait $perf 2>/dev/null || true; fi
  kill $mtad; wait $mtad 2>/dev/null || true
  RESULT=$(echo "$2 / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
  CPU=$(echo "$ticks * 1000000 / $(getconf CLK_TCK) / $2" | bc -l | xargs printf '%.0f')
  QUERIES=$(($(queries) - q0))
}

# first, that each mode is what it says: the delivery log line's tls=
for mode in dane opportunistic; do
  LOG=info measure $mode 1
  grep -q "status=sent.* tls=$mode" relay.log || {
    echo "$mode: no delivery with tls=$mode:" >&2; grep status= relay.log >&2; exit 1
  }
done
echo "checked: tls=dane and tls=opportunistic deliveries to mx.dane.test"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >dane.runs; : >opportunistic.runs; : >dane.cpu; : >opportunistic.cpu
for run in $(seq "$RUNS"); do
  for mode in opportunistic dane; do
    measure $mode "$N"
    echo "run $run $mode: $RESULT msg/s, relay CPU $CPU µs/msg, $QUERIES DNS queries"
    echo "$RESULT" >>$mode.runs
    echo "$CPU" >>$mode.cpu
  done
done
o=$(median <opportunistic.runs); d=$(median <dane.runs)
oc=$(median <opportunistic.cpu); dc=$(median <dane.cpu)
echo "median: opportunistic $o msg/s, dane $d msg/s, dane/opportunistic $(echo "$d / $o" | bc -l | xargs printf '%.3f')"
echo "median relay CPU per message: opportunistic $oc µs, dane $dc µs, dane's cost $(echo "($dc - $oc) * 100 / $oc" | bc -l | xargs printf '%+.1f')% of a delivery"
