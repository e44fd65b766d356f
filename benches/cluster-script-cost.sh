#!/usr/bin/env bash
# What one call of the cluster's limits script costs the Redis server, in CPU (user +
# system) per call, against a script that returns a constant (what any request costs
# it: its event loop, the socket, the wake-up). One client, one call at a time, as a
# node's calls mostly come. The script is read from src/cluster/limits.rs (`SCRIPT`);
# the ops are a connection's: a release riding along, the `connections` rate, the
# lease, and a message and a recipient counted ahead.
#
#   benches/cluster-script-cost.sh [CALLS]     (default 50000; needs redis-server,
#                                              redis-cli and redis-benchmark)
#   PIPE=2 benches/cluster-script-cost.sh      calls sent two at a time (redis-benchmark -P)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-50000} PORT=13641
WORK=$(mktemp -d /tmp/mtad-script-cost.XXXXXX)
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
redis-server --bind 127.0.0.1 --port $PORT --save "" --appendonly no --daemonize no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
for _ in $(seq 100); do redis-cli -p $PORT PING >/dev/null 2>&1 && break; sleep 0.1; done
python3 - "$here/src/cluster/limits.rs" >"$WORK/script.lua" <<'PY'
import sys
s = open(sys.argv[1]).read()
start = s.index('pub const SCRIPT: &str = r#"') + len('pub const SCRIPT: &str = r#"')
print(s[start:s.index('"#;', start)])
PY
cpu() { redis-cli -p $PORT INFO cpu | tr -d '\r' | awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 } END { printf "%.6f\n", s }'; }
# $1: the script's text, $2: its name
cost() {
  local sha c0 c1
  sha=$(redis-cli -p $PORT SCRIPT LOAD "$1")
  [[ $sha =~ ^[0-9a-f]{40}$ ]] || { echo "$2: not loaded: $sha" >&2; exit 1; }
  c0=$(cpu)
  redis-benchmark -p $PORT -c 1 -P "${PIPE:-1}" -n "$N" -q EVALSHA "$sha" 5 k:conn:rel k:rate:conn k:conn k:rate:msg k:rate:rcpt \
    release 0 0 n:1:1 1 take 1000000 3600 "" 1 lease 1000 60000 n:1:2 1 try 500000 3600 "" 1 try 500000 3600 "" 1 >/dev/null
  c1=$(cpu)
  printf '%-40s %6.1f µs of Redis CPU a call\n' "$2" "$(echo "($c1 - $c0) * 1000000 / $N" | bc -l)"
}
cost "$(cat "$WORK/script.lua")" "the limits script, a connection's ops"
cost "return {1, 0, 0, 0, 0, 0}" "a script returning a constant"
