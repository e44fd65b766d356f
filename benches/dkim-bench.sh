#!/usr/bin/env bash
# Relay throughput with every message DKIM-signed against without, back to back in one
# invocation, each against the same local Postfix baseline and smtp-source→smtp-sink
# ceiling (../shared/bench/compare-postfix.sh), then the ratio signed/unsigned.
#
#   benches/dkim-bench.sh [compare-postfix options, e.g. --runs 3 --msgs 10000]
#
# COMPARE names another copy of compare-postfix.sh. Build first: cargo build --release.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
compare=${COMPARE:-$here/../shared/bench/compare-postfix.sh}
cd "$here"
plain=$("$compare" --mode relay "$@" -- benches/mtad-bench.sh | tee /dev/stderr | awk '/^median/ { sub("mtad=", "", $NF); print $NF }')
signed=$("$compare" --mode relay "$@" -- benches/mtad-bench.sh dkim | tee /dev/stderr | awk '/^median/ { sub("mtad=", "", $NF); print $NF }')
awk -v p="$plain" -v s="$signed" 'BEGIN { printf "mtad relay msg/s: unsigned=%s signed=%s  signed/unsigned=%.2f\n", p, s, s / p }'
