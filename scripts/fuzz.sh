#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo-fuzz + libFuzzer) and runs each for SECONDS
# (default 60), from a seed corpus generated from the project's test data
# (scripts/fuzz_seeds.py) plus what earlier runs found (fuzz/corpus, gitignored).
# Prints per target the executions and the result; exits 1 on a crash or an oracle
# failure, naming the input that caused it (fuzz/artifacts/<target>/...).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_SANITIZER=address scripts/fuzz.sh 600   # ASan build (default: none, see README)
#   FUZZ_JOBS=2 ...                               # targets run side by side
#   FUZZ_BUILD=dev ...                            # unoptimized build (faster to build)
# Reproduce a failure: fuzz/target/x86_64-unknown-linux-gnu/{release,debug}/<target> <input>
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
ALL=(dissect http_split http_head dns_udp dns_tcp tls_hello defrag tcp_reassembly tcp_edit pcap config lua_fields)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
SAN=${FUZZ_SANITIZER:-none}
JOBS=${FUZZ_JOBS:-1}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz not found; run scripts/setup.sh" >&2
  exit 1
fi
# cargo-fuzz passes nightly flags (-Zsanitizer, sancov passes): the stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1. One build for every target (one cargo call).
# FUZZ_BUILD=dev (what scripts/test.sh uses for its short runs): unoptimized, about 40%
# less build time, slower runs.
if [ "${FUZZ_BUILD:-release}" = dev ]; then
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --dev -a --sanitizer "$SAN")
  BIN=fuzz/target/x86_64-unknown-linux-gnu/debug
else
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O -a --sanitizer "$SAN" --codegen-units 16)
  BIN=fuzz/target/x86_64-unknown-linux-gnu/release
fi

SEEDS=fuzz/seeds
rm -rf "$SEEDS"
echo "fuzz: seeds: $(python3 scripts/fuzz_seeds.py "$SEEDS")"

run_one() {
  local t=$1 log=fuzz/artifacts/$t/last.log
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  rm -f "fuzz/artifacts/$t"/{crash,timeout,oom,leak}-*
  set +e
  "$BIN/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=4096 -max_len=65600 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" "fuzz/corpus/$t" "$SEEDS/$t" >"$log" 2>&1
  local rc=$?
  set -e
  local execs corpus crash
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log" | tail -1)
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  crash=$(ls "fuzz/artifacts/$t"/{crash,timeout,oom,leak}-* 2>/dev/null | head -1 || true)
  if [ $rc -eq 0 ] && [ -z "$crash" ]; then
    printf 'fuzz: %-15s %12s execs  corpus %5s  ok\n' "$t" "${execs:-?}" "$corpus"
  else
    local why
    why=$(grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" -A1 "$log" | tr '\n' ' ' | cut -c1-300)
    printf 'fuzz: %-15s %12s execs  corpus %5s  FAILED (exit %s): %s\n' "$t" "${execs:-?}" "$corpus" "$rc" "${crash:-no input saved}"
    echo "fuzz:   $why"
    echo "fuzz:   log: $log"
    return 1
  fi
}

fail=0
if [ "$JOBS" -le 1 ]; then
  for t in "${TARGETS[@]}"; do run_one "$t" || fail=1; done
else
  pids=()
  for t in "${TARGETS[@]}"; do
    run_one "$t" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  done
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
fi
if [ $fail -ne 0 ]; then
  echo "fuzz: FAILED (inputs above; rerun one with $BIN/<target> <input>)"
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, ${SECS}s each: no crash, every oracle held"
