#!/usr/bin/env bash
# Guards the hot paths against regressions with criterion baselines: policy evaluation
# per message (`policy`), command, DATA and header parsing (`ingest`), DKIM signing and
# verification (`mailauth`), header/body checks (`checks`), hook calls (`hooks`).
#
#   benches/guard.sh save [NAME]              run them, keep the results as baseline NAME
#                                             (default `main`; do it on the commit to compare with)
#   benches/guard.sh check [NAME] [MAX%]      run them against NAME; exit 1 if any got slower
#                                             by more than MAX% (default 10) with 95% confidence
#
# A regression is a benchmark whose change in mean time has its confidence interval's
# lower bound above MAX% (criterion's change/estimates.json): noise alone does not fail.
# Run both on the same machine in the same state, and a quiet one: the numbers are this
# machine's, and a load that changes between the two runs moves every benchmark alike
# (on a shared 2-core machine, from -70% to +300% with no code changed).
# BENCHES="policy ingest" limits the run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
mode=${1:-}; name=${2:-main}; max=${3:-10}
benches=${BENCHES:-policy ingest mailauth checks hooks}
case "$mode" in
  save) flag=(--save-baseline "$name") ;;
  check) flag=(--baseline "$name") ;;
  *) sed -n 2,15p "$0"; exit 2 ;;
esac
crit=${CARGO_TARGET_DIR:-$here/target}/criterion
stamp=$(mktemp); trap 'rm -f "$stamp"' EXIT
for b in $benches; do
  cargo bench -q --bench "$b" -- "${flag[@]}" >/dev/null
done
[ "$mode" = save ] && { echo "baseline $name saved ($benches)"; exit 0; }
python3 - "$crit" "$stamp" "$max" <<'PY'
import json, os, sys
crit, stamp, limit = sys.argv[1], os.path.getmtime(sys.argv[2]), float(sys.argv[3]) / 100
rows, bad = [], 0
for root, dirs, files in os.walk(crit):
    if os.path.basename(root) == "change" and "estimates.json" in files:
        path = os.path.join(root, "estimates.json")
        if os.path.getmtime(path) < stamp:
            continue  # not measured in this run
        with open(os.path.join(os.path.dirname(root), "new", "benchmark.json")) as f:
            title = json.load(f)["full_id"]
        with open(path) as f:
            mean = json.load(f)["mean"]
        low, est = mean["confidence_interval"]["lower_bound"], mean["point_estimate"]
        worse = low > limit
        bad += worse
        rows.append((title, est, low, worse))
if not rows:
    sys.exit("no comparison was made: save a baseline first (benches/guard.sh save)")
for title, est, low, worse in sorted(rows):
    print(f"{'REGRESSED' if worse else 'ok':9} {est * 100:+6.1f}% (at least {low * 100:+.1f}%)  {title}")
print(f"{len(rows)} benchmarks, {bad} regressed by more than {limit * 100:.0f}%")
sys.exit(1 if bad else 0)
PY
