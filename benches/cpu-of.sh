#!/usr/bin/env bash
# Runs COMMAND (an MTAD COMMAND of ../shared/bench/compare-postfix.sh) and, when it is
# stopped (SIGTERM, at the end of each run), appends the CPU time the process used —
# user and system, every thread, in clock ticks, and the ticks per second — to OUT:
# one line per run, for the CPU per message (ticks / hz / messages).
#
#   ../shared/bench/compare-postfix.sh --mode relay --msgs 20000 -- \
#       benches/cpu-of.sh /tmp/on.cpu benches/mtad-bench.sh
#   ../shared/bench/compare-postfix.sh --mode relay --msgs 20000 -- \
#       benches/cpu-of.sh /tmp/off.cpu benches/mtad-bench.sh nolog
#   awk -v n=20000 '{ printf "%.0f µs/message\n", $1 / $2 / n * 1e6 }' /tmp/on.cpu
set -u
out=$1
shift
"$@" &
child=$!
stop() {
  # fields 14 and 15 of /proc/PID/stat: utime and stime of the whole process (its
  # command name, field 2, has no space: mtad)
  local stat
  read -r -a stat <"/proc/$child/stat"
  echo "$((stat[13] + stat[14])) $(getconf CLK_TCK)" >>"$out"
  kill -TERM "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  exit 0
}
trap stop TERM INT
wait "$child"
