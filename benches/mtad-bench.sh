#!/usr/bin/env bash
# Starts mtad the way ../shared/bench/compare-postfix.sh expects: listening on
# 127.0.0.1:$MTAD_PORT, spool in $BENCH_DIR, accepting anything from loopback.
#
#   ../shared/bench/compare-postfix.sh --mode accept -- benches/mtad-bench.sh
#
# Build first: cargo build --release.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
: "${MTAD_PORT:?}" "${BENCH_DIR:?}"
cat >"$BENCH_DIR/mtad.kdl" <<KDL
server {
    hostname "relay.bench.test"
    spool "$BENCH_DIR/spool"
}
listen "bench" address="127.0.0.1:$MTAD_PORT"
limits {
    connections-per-ip 1000
}
networks "loopback" "127.0.0.0/8"
stage "rcpt" {
    accept client="loopback"
}
KDL
export MTAD_LOG=${MTAD_LOG:-warn}
exec "$here/target/release/mtad" --config "$BENCH_DIR/mtad.kdl"
