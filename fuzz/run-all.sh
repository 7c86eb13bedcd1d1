#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 600) and print one summary line per
# target. Works on the stable toolchain through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags).
#
#   fuzz/run-all.sh [SECONDS]
#
# Environment:
#   JOBS=1|2          targets run at once (default 1; each fuzzer uses one core)
#   SANITIZER=address|none   (default address; `none` if ASan is unavailable)
#   TARGETS="a b"     subset of targets (default: all, from `cargo fuzz list`)
#   NICE=10           niceness of the fuzz processes
#   FUZZ_ARGS="..."   extra libFuzzer flags (e.g. "-max_len=65536 -rss_limit_mb=4096")
#
# Corpora grow in fuzz/corpus/<target> (gitignored), seeded from fuzz/seeds/<target>; logs go to
# fuzz/logs/<target>.log; a crash is written to fuzz/artifacts/<target>/ and named in the summary.
# Exit status: 0 if no target crashed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")"

secs=${1:-600}
jobs_max=${JOBS:-1}
san=${SANITIZER:-address}
nice_lvl=${NICE:-10}
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2
  exit 2
fi
targets=${TARGETS:-$(cargo fuzz list)}

echo "== building (sanitizer: $san)"
if ! nice -n "$nice_lvl" cargo fuzz build -O --sanitizer "$san" >build.log 2>&1; then
  tail -30 build.log >&2
  echo "build failed (see fuzz/build.log)" >&2
  exit 2
fi
mkdir -p logs
triple=$(rustc -vV | sed -n 's/^host: //p')

run_one() {
  local t=$1
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  local start=$SECONDS
  # The binary built above, run directly (what `cargo fuzz run -O` would run), so a source
  # change elsewhere in the tree during a long run does not trigger a rebuild mid-way.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0} nice -n "$nice_lvl" \
    "target/$triple/release/$t" -artifact_prefix="artifacts/$t/" "corpus/$t" "seeds/$t" \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-} >"logs/$t.log" 2>&1
  echo "$? $((SECONDS - start))" >"logs/$t.rc"
}

echo "== fuzzing ${secs}s per target, $jobs_max at a time: $(echo $targets)"
for t in $targets; do
  while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n; done
  echo "   start $t ($(date +%H:%M:%S))"
  run_one "$t" &
done
wait

echo "== summary"
failed=0
for t in $targets; do
  log="logs/$t.log"
  read -r rc took <"logs/$t.rc"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  if [ "$rc" = 0 ]; then
    status=ok
  else
    failed=1
    art=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -1)
    status="CRASH rc=$rc ${art:-(see $log)}"
  fi
  printf '%-18s %-4s %5ss  execs=%-10s exec/s=%-6s cov=%-5s ft=%-6s corpus=%s\n' \
    "$t" "${status%% *}" "$took" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  [ "$status" = ok ] || echo "    $status"
done
exit $failed
