#!/usr/bin/env bash
# Relay throughput with an after-queue content filter in the path, against the filter
# alone, in the same run (issue 5's benchmark). The filter is tests/peers/filter_peer.py
# (aiosmtpd; tags the message, injects it again over SMTP).
#
#   filter alone : smtp-source -> filter -> smtp-sink
#   with mtad    : smtp-source -> mtad "mx" -> filter -> mtad "reinject" -> smtp-sink
#
#   benches/filter-bench.sh [MSGS] [SESSIONS]      (defaults 2000, 10; 4 KB messages)
#
# Build first: cargo build --release. Needs smtp-source/smtp-sink (postfix) and
# python3-aiosmtpd. Prints msg/s for both (until the sink has every message) and the
# ratio.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000} S=${2:-10} L=4096
WORK=$(mktemp -d /var/tmp/mtad-filter-bench.XXXXXX)
chmod 755 "$WORK"   # smtp-sink writes as the postfix user
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
MX=13527 REINJECT=13528 FILTER=13529 SINK=13626
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
wait_port() { for _ in $(seq 100); do ss -ltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }

# one measurement: $1 label, $2 port to load, into $RESULT: msg/s until the sink has
# stored every message (smtp-sink -M would exit before answering the last one)
measure() {
  local dir=$WORK/sink-$1 t0 t1
  mkdir -p "$dir"; chmod 777 "$dir"
  smtp-sink -u postfix -d "$dir/%M." 127.0.0.1:$SINK 1024 >/dev/null 2>&1 & local sink=$!
  wait_port $SINK
  t0=$(now)
  smtp-source -4 -N -s "$S" -m "$N" -l "$L" -f bench@src.test -t rcpt@dst.test -S bench 127.0.0.1:"$2" >/dev/null 2>&1 \
    || echo "smtp-source reported errors ($1)" >&2
  local waited=0
  while [ "$(ls "$dir" | wc -l)" -lt "$N" ]; do
    sleep 0.05; waited=$((waited + 1))
    [ $waited -lt 12000 ] || { echo "$1: the sink got $(ls "$dir" | wc -l) of $N" >&2; break; }
  done
  t1=$(now)
  kill $sink; wait $sink 2>/dev/null || true
  RESULT="$1 $(echo "$N / ($t1 - $t0)" | bc -l | xargs printf '%.0f')"
}

filter() { # $1 reinject port
  mkdir -p "$WORK/filter-$1"
  /usr/bin/python3 "$here/tests/peers/filter_peer.py" "$WORK/filter-$1" $FILTER "$1" >/dev/null &
  FILTER_PID=$!
  wait_port $FILTER
}

# the filter alone, injecting straight into the sink
filter $SINK
measure filter-alone $FILTER; alone=$RESULT
kill $FILTER_PID; wait $FILTER_PID 2>/dev/null || true

# mtad in front of and behind the same filter
mkdir -p "$WORK/mtad"
cat >"$WORK/mtad/mtad.kdl" <<KDL
server {
    hostname "relay.bench.test"
    spool "$WORK/mtad/spool"
}
listen "mx" address="127.0.0.1:$MX" content-filter="scan"
listen "reinject" address="127.0.0.1:$REINJECT" filtered=#true
limits {
    connections-per-ip 1000
}
content-filter "scan" "smtp:[127.0.0.1]:$FILTER"
networks "loopback" "127.0.0.0/8"
stage "rcpt" {
    accept client="loopback"
}
stage "route" {
    relay "smtp:[127.0.0.1]:$SINK" tls="none"
}
KDL
MTAD_LOG=warn "$here/target/release/mtad" --allow-root --config "$WORK/mtad/mtad.kdl" >"$WORK/mtad.log" 2>&1 &
wait_port $MX
filter $REINJECT
measure mtad+filter $MX; with=$RESULT
echo "$alone"
echo "$with"
awk -v a="${alone#* }" -v w="${with#* }" 'BEGIN { printf "ratio (mtad+filter)/(filter alone)=%.2f\n", w / a }'
