#!/usr/bin/env bash
# A/B of two (or more) mtad builds on the same relay load, alternating, so that a
# shared machine's load falls on each alike. Each run starts the build fresh on an
# empty spool, relays MSGS 4 KB messages from smtp-source (SESSIONS at once) to an
# smtp-sink, and stops when mtad_deliveries_total{status="sent"} has them all. It
# prints per run: msg/s, mtad's CPU per message (user + system, from /proc), its spool
# fsyncs (mtad_spool_fsyncs_total) and context switches per message (every thread).
#
#   benches/relay-ab.sh [-n MSGS] [-s SESSIONS] [-r RUNS] BIN[:nolog] BIN[:nolog] ...
#
#   cp target/release/mtad /tmp/mtad-before    # then change, cargo build --release
#   benches/relay-ab.sh /tmp/mtad-before target/release/mtad
#   benches/relay-ab.sh target/release/mtad target/release/mtad:nolog   # the decision log's cost
#
# `:nolog` runs that build with `decision-log { output "off"; }`. Needs smtp-source,
# smtp-sink (Postfix), curl and bc; ports 14125-14127 on 127.0.0.1.
set -u
N=20000 S=20 RUNS=3
while getopts n:s:r: o; do
  case $o in n) N=$OPTARG ;; s) S=$OPTARG ;; r) RUNS=$OPTARG ;; *) sed -n 2,17p "$0"; exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n 2,17p "$0"; exit 2; }
W=$(mktemp -d)
MX=14125 SINK=14126 MET=14127
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
wait_port() { for _ in $(seq 100); do ss -ltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; return 1; }
sent() { curl -s http://127.0.0.1:$MET/metrics | awk '/^mtad_deliveries_total\{/ && /status="sent"/ { n += $NF } END { print n + 0 }'; }
smtp-sink -u postfix 127.0.0.1:$SINK 1024 >/dev/null 2>&1 & sink=$!
trap 'kill $sink 2>/dev/null; rm -rf "$W"' EXIT
wait_port $SINK || { echo "smtp-sink did not start" >&2; exit 1; }
as_root=(); [ "$(id -u)" = 0 ] && as_root=(--allow-root)
for run in $(seq "$RUNS"); do
  for spec in "$@"; do
    bin=${spec%%:*} extra=''
    [ "$spec" != "${spec%:nolog}" ] && extra='decision-log { output "off"; }'
    rm -rf "$W/spool"
    cat >"$W/mtad.kdl" <<KDL
server {
    hostname "relay.bench.test"
    spool "$W/spool"
    metrics "127.0.0.1:$MET"
}
listen "bench" address="127.0.0.1:$MX"
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
$extra
KDL
    MTAD_LOG=warn "$bin" "${as_root[@]}" --config "$W/mtad.kdl" 2>"$W/err" & m=$!
    wait_port $MX || { echo "$bin did not start:" >&2; cat "$W/err" >&2; exit 1; }
    t0=$(now)
    smtp-source -4 -N -s "$S" -m "$N" -l 4096 -f a@src.test -t b@dst.test 127.0.0.1:$MX >/dev/null 2>&1
    deadline=$(( $(date +%s) + 600 ))
    while [ "$(sent)" -lt "$N" ]; do
      [ "$(date +%s)" -lt $deadline ] || { echo "$spec: not everything was relayed" >&2; kill $m; exit 1; }
      sleep 0.05
    done
    t1=$(now)
    ticks=$(awk '{ print $14 + $15 }' /proc/$m/stat)
    hz=$(getconf CLK_TCK)
    fs=$(curl -s http://127.0.0.1:$MET/metrics | awk '/^mtad_spool_fsyncs_total/ { print $NF }')
    cs=$(cat /proc/$m/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }')
    kill $m; wait $m
    printf "%s run %d: %.0f msg/s, %.0f µs CPU/msg, %s fsyncs/msg, %.1f context switches/msg\n" \
      "$spec" "$run" "$(echo "$N / ($t1 - $t0)" | bc -l)" "$(echo "$ticks * 1000000 / $hz / $N" | bc -l)" \
      "$(if [ -n "$fs" ]; then printf %.2f "$(echo "$fs / $N" | bc -l)"; else echo '?'; fi)" "$(echo "$cs / $N" | bc -l)"
  done
done
