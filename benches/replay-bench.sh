#!/usr/bin/env bash
# How fast `mtactl replay` re-evaluates a decision log: a release mtad (the
# mtad-bench.sh policy, accept mode) takes N messages from smtp-source, every decision
# is logged, then the log is replayed against the same policy and timed.
#
#   benches/replay-bench.sh [N] [SESSIONS]      # default 20000 messages, 20 sessions
#
# Prints the number of decisions, the replay's wall time and decisions per second.
# Build first: cargo build --release.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-20000} S=${2:-20}
work=$(mktemp -d /tmp/replay-bench.XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/mtad"
MTAD_PORT=$port BENCH_DIR=$work/mtad SINK_PORT=9 MTAD_LOG=error \
  "$here/benches/mtad-bench.sh" accept >"$work/mtad.log" 2>&1 & pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
smtp-source -4 -N -s "$S" -m "$N" -l 1024 -f bench@src.test -t rcpt@dst.test -S bench 127.0.0.1:"$port" >/dev/null
log=$work/mtad/spool/decisions/decisions.jsonl
# the writer flushes each batch at once
sleep 1
kill "$pid"; wait "$pid" 2>/dev/null || true
decisions=$(wc -l <"$log")
t0=$(date +%s.%N)
"$here/target/release/mtactl" --config "$work/mtad/mtad.kdl" replay "$log" >"$work/replay.out"
t1=$(date +%s.%N)
cat "$work/replay.out"
awk -v d="$decisions" -v t="$(echo "$t1 - $t0" | bc)" -v b="$(stat -c %s "$log")" \
  'BEGIN { printf "decisions %d (%.1f MB), replay %.2f s, %.0f decisions/s\n", d, b/1e6, t, d/t }'
