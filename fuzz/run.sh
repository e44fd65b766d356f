#!/usr/bin/env bash
# Builds and runs mtad's fuzz targets with AFL++ on stable Rust (docs/fuzzing.md).
#
#   fuzz/run.sh build                 build every target (instrumented, release)
#   fuzz/run.sh TARGET SECONDS        fuzz one target for SECONDS
#   fuzz/run.sh all SECONDS           fuzz every target in turn, SECONDS each, then a summary
#   fuzz/run.sh ci [SECONDS]          build, then every target for SECONDS (default 20);
#                                     exits 1 if any crash or hang was found
#   fuzz/run.sh hours [CPU_SECONDS]   fuzz every target until it has used CPU_SECONDS of CPU
#                                     (default 3600: the issue's CPU-hour), resuming where
#                                     an earlier run stopped (kept in fuzz/long/TARGET, or
#                                     in a new checkout from fuzz/progress and fuzz/corpus)
#   fuzz/run.sh save                  keep long/'s CPU, execs and corpus in fuzz/progress/
#                                     and fuzz/corpus/ (committed) for the next checkout
#   fuzz/run.sh seeds                 run every seed and crashes/ reproducer through its
#                                     target once (no fuzzing; fixed bugs stay fixed)
#   fuzz/run.sh repro TARGET FILE...  run inputs through a target and show what it says
#   fuzz/run.sh list                  the targets
#
# FUZZ_TARGETS="a b" limits all/ci/seeds to those targets.
# Instrumentation is what cargo-afl does, without cargo-afl: rustc's SanitizerCoverage
# pass (stable `-C passes=sancov-module`, trace-pc-guard and trace-compares) linked
# against AFL++'s runtime object, and the `afl` crate's persistent-mode harness. The
# runtime and afl-fuzz come from Debian's afl++ package (`apt-get install afl++`);
# AFL_RT=/path/to/afl-compiler-rt.o and AFL_FUZZ=/path/to/afl-fuzz use others (for
# instance those `cargo afl config --build` installs).
#
# Each run starts from the seeds in fuzz/seeds/TARGET and writes to fuzz/out/TARGET
# (afl's queue, crashes/ and hangs/). Found crashes and hangs are copied to
# fuzz/findings/TARGET/ (not committed; move reproducers worth keeping to
# fuzz/crashes/TARGET/). Limits per run: FUZZ_MEM (MB, afl's -m, default 2048),
# FUZZ_TIMEOUT (ms per input, afl's -t; default per target below).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
caller="$PWD"
cd "$here"

TARGETS=(smtp proxy message table checks config suite hook milter policy_reply tls_policy rspamd_reply tls_rpt postfix_conf decision_record)
# FUZZ_TARGETS="smtp proxy" restricts `all`, `ci` and `seeds` to those targets
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a TARGETS <<<"$FUZZ_TARGETS"
fi

# ms per input before afl calls it a hang: the targets that compile a policy per input
# (config, checks) or run a suite's dry runs get more than the parsers
timeout_of() {
  case "$1" in
    config | checks | suite | postfix_conf) echo 2000 ;;
    hook) echo 1000 ;;
    *) echo 500 ;;
  esac
}

AFL_FUZZ="${AFL_FUZZ:-$(command -v afl-fuzz || true)}"
AFL_RT="${AFL_RT:-/usr/lib/afl/afl-compiler-rt.o}"
FUZZ_MEM="${FUZZ_MEM:-2048}"

die() {
  echo "fuzz/run.sh: $*" >&2
  exit 2
}

need_afl() {
  [ -n "$AFL_FUZZ" ] && [ -x "$AFL_FUZZ" ] || die "afl-fuzz not found: apt-get install afl++ (or set AFL_FUZZ)"
  [ -f "$AFL_RT" ] || die "AFL++ runtime $AFL_RT not found: apt-get install afl++ (or set AFL_RT)"
}

is_target() {
  local t
  for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
  return 1
}

build() {
  need_afl
  local flags=(
    -C passes=sancov-module
    -C llvm-args=-sanitizer-coverage-level=3
    -C llvm-args=-sanitizer-coverage-trace-pc-guard
    -C llvm-args=-sanitizer-coverage-prune-blocks=0
    -C llvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -C "link-arg=$AFL_RT"
  )
  echo "fuzz/run.sh: building the targets (rustc $(rustc --version | cut -d' ' -f2), runtime $AFL_RT)" >&2
  RUSTFLAGS="${flags[*]} ${RUSTFLAGS:-}" cargo build --release --locked --bins
}

bin_of() { echo "$here/target/release/$1"; }

# afl's fuzzer_stats field, or 0
stat() {
  local file="$1" key="$2"
  awk -F' *: *' -v k="$key" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }' "$file" 2>/dev/null || echo 0
}

# Fuzzes $1 for $2 seconds; prints one summary line; returns 1 if it found anything.
fuzz_one() {
  local target="$1" seconds="$2"
  is_target "$target" || die "no target \`$target\` (fuzz/run.sh list)"
  local bin out tmp
  bin="$(bin_of "$target")"
  [ -x "$bin" ] || die "$bin is not built: fuzz/run.sh build"
  out="$here/out/$target"
  rm -rf "$out"
  mkdir -p "$out"
  # scratch files of the targets that fuzz files (tables, suites) live here
  tmp="$out/tmp"
  mkdir -p "$tmp"
  local dict=()
  [ -f "$here/dict/$target.dict" ] && dict=(-x "$here/dict/$target.dict")
  local log="$out/afl.log"
  echo "fuzz/run.sh: $target for ${seconds}s (log: ${log#"$here"/})" >&2
  # AFL_NO_AFFINITY: the machine is shared; AFL_SKIP_CPUFREQ and
  # AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES: no root-only tuning is needed to run.
  TMPDIR="$tmp" AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 \
    AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1 AFL_NO_CRASH_README=1 \
    nice -n "${FUZZ_NICE:-19}" "$AFL_FUZZ" -i "$here/seeds/$target" -o "$out" \
    -V "$seconds" -m "$FUZZ_MEM" -t "${FUZZ_TIMEOUT:-$(timeout_of "$target")}" "${dict[@]}" \
    -- "$bin" >"$log" 2>&1 || {
    echo "fuzz/run.sh: afl-fuzz failed on $target; the end of its log:" >&2
    tail -n 30 "$log" >&2
    return 2
  }
  rm -rf "$tmp"
  local stats="$out/default/fuzzer_stats"
  local execs crashes hangs secs corpus
  execs="$(stat "$stats" execs_done)"
  crashes="$(stat "$stats" saved_crashes)"
  [ "$crashes" = 0 ] && crashes="$(stat "$stats" unique_crashes)"
  hangs="$(stat "$stats" saved_hangs)"
  [ "$hangs" = 0 ] && hangs="$(stat "$stats" unique_hangs)"
  secs="$(stat "$stats" run_time)"
  corpus="$(stat "$stats" corpus_count)"
  [ "$corpus" = 0 ] && corpus="$(stat "$stats" paths_total)"
  printf '%-8s %8ss %12s execs %8s/s %6s paths %4s crashes %4s hangs\n' \
    "$target" "$secs" "$execs" "$(stat "$stats" execs_per_sec)" "$corpus" "$crashes" "$hangs"
  keep_findings "$target" "$out" "$crashes" "$hangs"
}

# Copies what a run in $2 found for target $1 ($3 crashes, $4 hangs) to findings/TARGET;
# returns 1 if it found anything.
keep_findings() {
  local target="$1" out="$2" crashes="$3" hangs="$4"
  if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
    local keep="$here/findings/$target"
    mkdir -p "$keep"
    cp "$out"/default/crashes/id* "$out"/default/hangs/id* "$keep"/ 2>/dev/null || true
    echo "fuzz/run.sh: $target: $crashes crash(es), $hangs hang(s): inputs in ${keep#"$here"/}/ (fuzz/run.sh repro $target FILE)" >&2
    return 1
  fi
  return 0
}

# Fuzzes $1 until it has used $2 seconds of CPU (user + system time of afl-fuzz, its fork
# server and the target, sampled by fuzz/cputree.py; not wall time: the machine is shared and afl runs at nice
# 19). Work is kept in long/TARGET, so an interrupted run resumes (afl's `-i -`) and the
# CPU already spent counts. Prints one summary line; returns 1 if anything was found.
fuzz_hours_one() {
  local target="$1" want="$2"
  is_target "$target" || die "no target \`$target\`"
  local bin out spent execs chunk input rc cpu
  bin="$(bin_of "$target")"
  [ -x "$bin" ] || die "$bin is not built: fuzz/run.sh build"
  out="$here/long/$target"
  mkdir -p "$out"
  # a new checkout: the CPU, execs and corpus an earlier session saved (`save`)
  local saved="$here/progress/$target" before=0
  if [ ! -f "$out/cpu_seconds" ] && [ -f "$saved" ]; then
    read -r spent before <"$saved"
    echo "$spent" >"$out/cpu_seconds"
    echo "$before" >"$out/execs_before"
    echo "$before" >"$out/execs"
  fi
  before="$(cat "$out/execs_before" 2>/dev/null || echo 0)"
  spent="$(cat "$out/cpu_seconds" 2>/dev/null || echo 0)"
  execs="$(cat "$out/execs" 2>/dev/null || echo 0)"
  local dict=()
  [ -f "$here/dict/$target.dict" ] && dict=(-x "$here/dict/$target.dict")
  while [ "$spent" -lt "$want" ]; do
    chunk=$((want - spent))
    [ "$chunk" -gt 600 ] && chunk=600
    [ "$chunk" -lt 10 ] && chunk=10
    input="$here/seeds/$target"
    [ -d "$here/corpus/$target" ] && input="$here/corpus/$target"
    [ -d "$out/default/queue" ] && input=-
    mkdir -p "$out/tmp"
    echo "fuzz/run.sh: $target: ${spent}s of ${want}s CPU; fuzzing ${chunk}s more" >&2
    TMPDIR="$out/tmp" AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 \
      AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1 AFL_NO_CRASH_README=1 \
      AFL_AUTORESUME=1 nice -n "${FUZZ_NICE:-19}" "$AFL_FUZZ" -i "$input" -o "$out" \
      -V "$chunk" -m "$FUZZ_MEM" -t "${FUZZ_TIMEOUT:-$(timeout_of "$target")}" "${dict[@]}" \
      -- "$bin" >"$out/afl.log" 2>&1 &
    local pid=$!
    cpu="$(python3 "$here/cputree.py" "$pid")"
    rc=0
    wait "$pid" || rc=$?
    if [ $rc -ne 0 ]; then
      echo "fuzz/run.sh: afl-fuzz failed on $target; the end of its log:" >&2
      tail -n 30 "$out/afl.log" >&2
      return 2
    fi
    spent=$((spent + cpu))
    # afl keeps its own counters across resumed runs
    execs=$((before + $(stat "$out/default/fuzzer_stats" execs_done)))
    echo "$spent" >"$out/cpu_seconds"
    echo "$execs" >"$out/execs"
  done
  rm -rf "$out/tmp"
  local crashes hangs corpus
  crashes="$( (find "$out/default/crashes" -name 'id*' 2>/dev/null || true) | wc -l)"
  hangs="$( (find "$out/default/hangs" -name 'id*' 2>/dev/null || true) | wc -l)"
  corpus="$( (find "$out/default/queue" -maxdepth 1 -name 'id*' 2>/dev/null || true) | wc -l)"
  printf '%-8s %8ss CPU %12s execs %6s paths %4s crashes %4s hangs\n' \
    "$target" "$spent" "$execs" "$corpus" "$crashes" "$hangs"
  keep_findings "$target" "$out" "$crashes" "$hangs"
}

# Keeps what the long runs in long/ have done where git keeps it, for the next checkout:
# progress/TARGET (`CPU_SECONDS EXECS`) and corpus/TARGET (afl's queue), from which
# `hours` resumes. Refuses while a target has findings (they must be looked at first).
save_progress() {
  local t out n
  for t in "${TARGETS[@]}"; do
    out="$here/long/$t"
    [ -f "$out/cpu_seconds" ] || continue
    n="$( (find "$out/default/crashes" "$out/default/hangs" -name 'id*' 2>/dev/null || true) | wc -l)"
    [ "$n" = 0 ] || die "$t has $n finding(s) in long/$t: look at them before saving"
    mkdir -p "$here/progress"
    echo "$(cat "$out/cpu_seconds") $(cat "$out/execs" 2>/dev/null || echo 0)" >"$here/progress/$t.tmp"
    mv "$here/progress/$t.tmp" "$here/progress/$t"
    if [ -d "$out/default/queue" ]; then
      rm -rf "$here/corpus/$t"
      mkdir -p "$here/corpus/$t"
      find "$out/default/queue" -maxdepth 1 -type f -name 'id*' -exec cp {} "$here/corpus/$t/" \;
    fi
    echo "fuzz/run.sh: $t: $(cut -d' ' -f1 "$here/progress/$t")s of CPU saved, $(find "$here/corpus/$t" -type f | wc -l) inputs" >&2
  done
}

# Runs `$1 TARGET $2` for every target in turn; a summary table at the end ($3 says
# what $2 is). 1 if anything was found.
each() {
  local run="$1" seconds="$2" what="$3" found=0 lines=() t line rc
  for t in "${TARGETS[@]}"; do
    rc=0
    line="$("$run" "$t" "$seconds")" || rc=$?
    [ $rc -ge 2 ] && return $rc
    [ $rc -ne 0 ] && found=1
    lines+=("$line")
  done
  echo "== summary: ${seconds}${what} per target =="
  printf '%s\n' "${lines[@]}"
  return $found
}

# Fuzzes every target in turn for $1 seconds (wall time).
fuzz_all() {
  each fuzz_one "$1" "s"
}

seeds() {
  local t f bad=0
  for t in "${TARGETS[@]}"; do
    # the seeds, and the reproducers of every crash found so far (fixed: they must pass)
    for f in "$here/seeds/$t"/* "$here/crashes/$t"/*; do
      [ -e "$f" ] || continue
      if ! TMPDIR="${TMPDIR:-/tmp}" timeout 10 "$(bin_of "$t")" <"$f" >/dev/null 2>"$here/target/seed.err"; then
        echo "seed ${f#"$here"/} fails $t:" >&2
        tail -n 5 "$here/target/seed.err" >&2
        bad=1
      fi
    done
  done
  [ $bad = 0 ] && echo "fuzz/run.sh: every seed and reproducer runs through its target" >&2
  return $bad
}

repro() {
  local target="$1" f rc
  shift
  is_target "$target" || die "no target \`$target\`"
  for f in "$@"; do
    # a relative FILE names a path from where the script was called, not from fuzz/
    case "$f" in /*) ;; *) f="$caller/$f" ;; esac
    rc=0
    timeout 60 "$(bin_of "$target")" <"$f" >/dev/null || rc=$?
    case $rc in
      0) echo "$f: ok" ;;
      124) echo "$f: still running after 60 s (a hang)" ;;
      *) echo "$f: exit $rc (a crash)" ;;
    esac
  done
}

case "${1:-}" in
  build) build ;;
  list) printf '%s\n' "${TARGETS[@]}" ;;
  seeds) seeds ;;
  repro)
    [ $# -ge 3 ] || die "usage: fuzz/run.sh repro TARGET FILE..."
    shift
    repro "$@"
    ;;
  ci)
    build
    seeds
    fuzz_all "${2:-20}"
    ;;
  hours)
    each fuzz_hours_one "${2:-3600}" "s of CPU"
    ;;
  save)
    save_progress
    ;;
  all)
    [ $# -eq 2 ] || die "usage: fuzz/run.sh all SECONDS"
    fuzz_all "$2"
    ;;
  "" | -h | --help)
    sed -n '2,32p' "$here/run.sh" | sed 's/^# \{0,1\}//'
    ;;
  *)
    [ $# -eq 2 ] || die "usage: fuzz/run.sh TARGET SECONDS"
    fuzz_one "$1" "$2"
    ;;
esac
