#!/usr/bin/env bash
# Starts mtad the way ../shared/bench/compare-postfix.sh expects: listening on
# 127.0.0.1:$MTAD_PORT, spool in $BENCH_DIR, accepting anything from loopback, and
# relaying everything to smtp:[127.0.0.1]:$SINK_PORT — or, with `accept`, keeping it.
#
#   ../shared/bench/compare-postfix.sh --mode relay -- benches/mtad-bench.sh
#   ../shared/bench/compare-postfix.sh --mode accept -- benches/mtad-bench.sh accept
#   ../shared/bench/compare-postfix.sh --mode relay -- benches/mtad-bench.sh dkim
#     (relay, every message DKIM-signed with a fresh RSA-2048 key for src.test)
#   ../shared/bench/compare-postfix.sh --mode relay -- benches/mtad-bench.sh nolog
#     (relay with the decision log off: compare with the default, where it is on)
#
# Build first: cargo build --release.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
: "${MTAD_PORT:?}" "${BENCH_DIR:?}" "${SINK_PORT:?}"
queue_only='#false'
[ "${1:-relay}" = accept ] && queue_only='#true'
dkim=''
if [ "${1:-relay}" = dkim ]; then
  rm -f "$BENCH_DIR/src.test.bench.key"
  "$here/target/release/mtactl" dkim keygen --domain src.test --selector bench --out "$BENCH_DIR" >/dev/null
  dkim="dkim \"src.test\" selector=\"bench\" key=\"$BENCH_DIR/src.test.bench.key\""
fi
decisions=''
[ "${1:-relay}" = nolog ] && decisions='decision-log { output "off"; }'
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
stage "route" {
    relay "smtp:[127.0.0.1]:$SINK_PORT" tls="none"
}
delivery {
    queue-only $queue_only
}
$dkim
$decisions
KDL
export MTAD_LOG=${MTAD_LOG:-warn}
exec "$here/target/release/mtad" --allow-root --config "$BENCH_DIR/mtad.kdl"
