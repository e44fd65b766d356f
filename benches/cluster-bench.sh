#!/usr/bin/env bash
# Relay throughput with the rate limits shared through Redis (`cluster`) against the
# same policy with the limits in the process, alternating in the same run (issue 23's
# benchmark), and the Redis round trips each message costs (INFO commandstats before
# and after).
#
#   smtp-source (one message per connection) -> mtad -> smtp-sink
#   policy: rate-limits { connections, messages, recipients } high enough never to refuse
#
#   benches/cluster-bench.sh [MSGS] [SESSIONS] [RUNS]    (defaults 2000, 10, 3; 4 KB)
#   REUSE=1 benches/cluster-bench.sh ...   every session sends its messages over one
#                                          connection (smtp-source -d)
#   GREYLIST=1 benches/cluster-bench.sh ... a `greylist` rule too (delay 1s; one
#                                          message greylisted and retried before the
#                                          timed part, so the triplet is known)
#   PIN=1 benches/cluster-bench.sh ...      Redis alone on CPU 1, everything else (mtad,
#                                          the client, the sink) on CPU 0, in both modes:
#                                          the node's cost of the cluster when Redis has
#                                          a host of its own, as deployed (its CPU and the
#                                          loopback round trips between the cores stay)
#   PIPELINE=1 benches/cluster-bench.sh ... the client pipelines MAIL, RCPT and DATA as
#                                          MTAs do (benches/pipelined-source.py in
#                                          place of smtp-source, which cannot)
#   CLIENTS=N benches/cluster-bench.sh ...  connections come from N client addresses in
#                                          turn (127.1.0.1 and up; pipelined-source.py,
#                                          so PIPELINE=1 too): N = MSGS is an MX's
#                                          load, every client seen once, where a node
#                                          has nothing counted ahead for it
#
# Build first: cargo build --release (MTAD=path/to/mtad runs another build: the round
# trips per message do not depend on it, the throughput does). Needs redis-server and redis-cli, smtp-source and
# smtp-sink (postfix). Prints the load average before and after, msg/s per run and
# mode with mtad's own CPU per message (user + system, start-up included), the medians,
# their ratio, the Redis commands per message by command, the round trips per message
# (mtad's own count, mtad_cluster_redis_round_trips_total, background calls included), and the
# CPU time the Redis server spent per message (INFO cpu, user + system, over every
# redis run: what one Redis core's capacity in messages per second follows from).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000} S=${2:-10} RUNS=${3:-3} L=4096
REUSE_FLAG=''
[ "${REUSE:-0}" = 1 ] && REUSE_FLAG=-d
WORK=$(mktemp -d /var/tmp/mtad-cluster-bench.XXXXXX)
chmod 755 "$WORK"   # smtp-sink writes as the postfix user
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
MX=13537 SINK=13636 REDIS=13638 METRICS=13639
NODE=() ON_ITS_OWN=()
if [ "${PIN:-0}" = 1 ]; then NODE=(taskset -c 0) ON_ITS_OWN=(taskset -c 1); fi
SOURCE=(smtp-source -4)
[ -n "${CLIENTS:-}" ] && PIPELINE=1
[ "${PIPELINE:-0}" = 1 ] && SOURCE=(python3 "$here/benches/pipelined-source.py" ${CLIENTS:+-c "$CLIENTS"})
now() { local u r; read -r u r </proc/uptime; echo "$u"; }
wait_port() { for _ in $(seq 100); do ss -ltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }

"${ON_ITS_OWN[@]}" redis-server --bind 127.0.0.1 --port $REDIS --save "" --appendonly no --daemonize no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!
wait_port $REDIS

# $1: local | redis
config() {
  local cluster='' grey=''
  [ "${GREYLIST:-0}" = 1 ] && grey=greylist
  [ "$1" = redis ] && cluster="cluster {
    redis \"redis://127.0.0.1:$REDIS/0\"
    node \"bench\"
}"
  rm -rf "$WORK/mtad"; mkdir -p "$WORK/mtad"
  cat >"$WORK/mtad/mtad.kdl" <<KDL
server {
    hostname "relay.bench.test"
    spool "$WORK/mtad/spool"
    metrics "127.0.0.1:$METRICS"
}
listen "bench" address="127.0.0.1:$MX"
limits {
    connections-per-ip 1000
}
rate-limits {
    connections 1000000 per="1h"
    messages 1000000 per="1h"
    recipients 1000000 per="1h"
}
networks "loopback" "127.0.0.0/8"
greylisting {
    delay "1s"
}
stage "rcpt" {
    $grey
    accept client="loopback"
}
stage "route" {
    relay "smtp:[127.0.0.1]:$SINK" tls="none"
}
$cluster
KDL
}

# one run of mode $1, into $RESULT (msg/s until the sink has every message)
measure() {
  config "$1"
  local t0 t1
  # the sink counts and exits at the N-th message (no files: creating a file a message
  # made ext4's inode allocation the bottleneck of the whole machine, run after run)
  "${NODE[@]}" smtp-sink -u postfix -M "$N" 127.0.0.1:$SINK 1024 >/dev/null 2>&1 & local sink=$!
  MTAD_LOG=warn "${NODE[@]}" "${MTAD:-$here/target/release/mtad}" --allow-root --config "$WORK/mtad/mtad.kdl" 2>"$WORK/mtad.log" & local mtad=$!
  wait_port $SINK; wait_port $MX; wait_port $METRICS
  if [ "${GREYLIST:-0}" = 1 ]; then
    # the triplet's first attempt is greylisted; after the delay it is known
    smtp-source -4 -m 1 -f bench@src.test -t rcpt@dst.test 127.0.0.1:$MX >/dev/null 2>&1 || true
    sleep 1.5
  fi
  t0=$(now)
  # -N numbers the recipients (a triplet each, with greylisting: not then)
  local number=-N
  [ "${GREYLIST:-0}" = 1 ] && number=''
  local before
  before=$(round_trips)
  if [ "${PIPELINE:-0}" = 1 ]; then
    # (a triplet per message is not what greylisting is measured with: one recipient)
    "${NODE[@]}" "${SOURCE[@]}" $REUSE_FLAG -s "$S" -m "$N" -l "$L" -f bench@src.test -t rcpt@dst.test 127.0.0.1:$MX \
      || echo "pipelined-source reported errors ($1)" >&2
  else
    "${NODE[@]}" "${SOURCE[@]}" $number $REUSE_FLAG -s "$S" -m "$N" -l "$L" -f bench@src.test -t rcpt@dst.test -S bench 127.0.0.1:$MX >/dev/null 2>&1 \
      || echo "smtp-source reported errors ($1)" >&2
  fi
  # until the sink has exited (a zombie until waited for), at most 600 s
  local waited=0
  while [ "$(awk '{print $3}' /proc/$sink/stat 2>/dev/null || echo Z)" != Z ]; do
    sleep 0.02; waited=$((waited + 1))
    [ $waited -lt 30000 ] || { echo "$1: the sink did not get all $N messages" >&2; kill $sink; break; }
  done
  wait $sink 2>/dev/null || true
  t1=$(now)
  TRIPS=$(( $(round_trips) - before ))
  # mtad's own CPU (user + system, start-up included) per message, in µs
  local ticks
  ticks=$(awk '{print $14 + $15}' /proc/$mtad/stat)
  CPU=$(echo "$ticks * 1000000 / $(getconf CLK_TCK) / $N" | bc -l | xargs printf '%.0f')
  kill $mtad; wait $mtad 2>/dev/null || true
  RESULT=$(echo "$N / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
}

# mtad's count of its requests to Redis so far (0 without a cluster: no such line)
round_trips() {
  local n
  n=$( {
    exec 3<>"/dev/tcp/127.0.0.1/$METRICS" &&
      printf 'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n' >&3 &&
      tr -d '\r' <&3
  } 2>/dev/null | awk '$1 == "mtad_cluster_redis_round_trips_total" { print $2 }')
  echo "${n:-0}"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
stats() { redis-cli -p $REDIS INFO commandstats | tr -d '\r' | grep '^cmdstat_' ; }
# the Redis server's CPU seconds so far (user + system)
redis_cpu() { redis-cli -p $REDIS INFO cpu | tr -d '\r' | awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 } END { printf "%.6f\n", s }'; }
calls() { # commandstats lines -> "cmd calls usec" per line
  sed -E 's/^cmdstat_([^:]+):calls=([0-9]+),usec=([0-9]+).*/\1 \2 \3/'
}

echo "load before: $(uptime)"
: >"$WORK/local"; : >"$WORK/redis"; : >"$WORK/local.cpu"; : >"$WORK/redis.cpu"
redis-cli -p $REDIS CONFIG RESETSTAT >/dev/null
REDIS_CPU=0
for run in $(seq "$RUNS"); do
  for mode in local redis; do
    if [ "$mode" = redis ]; then stats | calls >"$WORK/before"; cpu0=$(redis_cpu); fi
    measure $mode
    if [ "$mode" = redis ]; then
      stats | calls >"$WORK/after"; cp "$WORK/before" "$WORK/last-before"
      REDIS_CPU=$(echo "$REDIS_CPU + $(redis_cpu) - $cpu0" | bc -l)
    fi
    echo "run $run $mode: $RESULT msg/s, mtad CPU $CPU µs/msg$([ "$mode" = redis ] && echo ", $(echo "$TRIPS / $N" | bc -l | xargs printf '%.2f') Redis round trips/msg (mtad's count)")"
    echo "$RESULT" >>"$WORK/$mode"
    echo "$CPU" >>"$WORK/$mode.cpu"
  done
done
l=$(median <"$WORK/local"); r=$(median <"$WORK/redis")
echo "median: local $l msg/s, redis $r msg/s, redis/local $(echo "$r / $l" | bc -l | xargs printf '%.3f')"
lc=$(median <"$WORK/local.cpu"); rc=$(median <"$WORK/redis.cpu")
echo "median mtad CPU per message: local $lc µs, redis $rc µs, redis/local $(echo "$rc / $lc" | bc -l | xargs printf '%.3f')"
echo "Redis commands per message (last redis run, $N messages, $([ -n "$REUSE_FLAG" ] && echo "$S connections" || echo "one per connection")):"
echo "  (EVALSHA and EVAL: the script's calls; TIME and GET: greylisting's reads, alone or in a pipeline with a call)"
echo "  (command, calls, calls per message, µs Redis spent in it per message: a script's µs include the commands it ran)"
join -a 2 -e 0 -o 2.1,1.2,2.2,1.3,2.3 <(sort "$WORK/last-before") <(sort "$WORK/after") |
  awk -v n="$N" '$1 != "info" && $1 != "config" {
      d = $3 - $2; u = $5 - $4; printf "  %-18s %8d  %.2f/msg  %6.1f µs/msg\n", $1, d, d / n, u / n
    }'
echo "  round trips (mtad's count)  $(echo "$TRIPS / $N" | bc -l | xargs printf '%.2f')/msg"
echo "Redis CPU per message: $(echo "$REDIS_CPU * 1000000 / ($N * $RUNS)" | bc -l | xargs printf '%.1f') µs (user + system, $RUNS redis runs of $N)"
echo "load after: $(uptime)"
