#!/usr/bin/env bash
# Runs every test layer and ends with one summary line "N passed, N failed".
# Layers: unit (cmocka, ASan+UBSan), upstream self-test, integration (Python
# stdlib, real lighttpd + handler + workers, ASan binaries), browser
# (playwright-core + Debian chromium).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export TF_BIN_DIR="$PWD/$BUILD/asan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
logdir="$BUILD/test-logs"
mkdir -p "$logdir"
passed=0 failed=0
failures=()

count() { # name passed failed
  passed=$((passed + $2)); failed=$((failed + $3))
  if [ "$3" -gt 0 ]; then failures+=("$1"); fi
  printf '%-34s %4d passed, %d failed\n' "$1" "$2" "$3"
}

# --- unit -----------------------------------------------------------------
for t in "$BUILD"/asan/tests/test_*; do
  [ -x "$t" ] || continue
  name=unit/$(basename "$t")
  out="$logdir/$(basename "$t").log"
  timeout 300 "$t" >"$out" 2>&1; rc=$?
  p=$(grep -oE '^\[  PASSED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
  f=$(grep -oE '^\[  FAILED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed / sanitizer abort
  count "$name" "$p" "$f"
  if [ "$f" -gt 0 ]; then tail -n 40 "$out"; fi
done

# --- the writer thread under ThreadSanitizer ---------------------------------
t="$BUILD/tsan/tests/test_writer"
if [ -x "$t" ]; then
  out="$logdir/tsan-test_writer.log"
  TSAN_OPTIONS="halt_on_error=1" timeout 300 "$t" >"$out" 2>&1; rc=$?
  p=$(grep -oE '^\[  PASSED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
  f=$(grep -oE '^\[  FAILED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count unit-tsan/test_writer "$p" "$f"
  if [ "$f" -gt 0 ]; then tail -n 40 "$out"; fi
fi

# --- fuzz regression: every libFuzzer harness over its seed corpus ------------
if grep -q '^fuzz-regress:' Makefile; then
  out="$logdir/fuzz-regress.log"
  make --no-print-directory -s fuzz-regress BUILD="$BUILD" >"$out" 2>&1; rc=$?
  p=$(grep -c ': inputs ok$\|inputs ok' "$out")
  f=$(grep -c 'FAILED' "$out")
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count fuzz-regress "$p" "$f"
  if [ "$f" -gt 0 ]; then tail -n 40 "$out"; fi
fi

# --- python suites (upstream self-test, integration) -------------------------
pysuite() { # name dir
  local out="$logdir/$1.log"
  timeout 1500 python3 tests/pyrun.py "$2" >"$out" 2>&1
  local rc=$? line
  line=$(grep -E '^pyrun: [0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
  local p f
  p=$(echo "$line" | awk '{print $2}'); f=$(echo "$line" | awk '{print $4}')
  p=${p:-0}; f=${f:-0}
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count "$1" "$p" "$f"
  if [ "$f" -gt 0 ]; then grep -E -A 30 '^(FAIL|ERROR):' "$out" | head -n 150; tail -n 20 "$out"; fi
}
pysuite upstream tests/upstream
pysuite integration tests/integration

# --- browser ------------------------------------------------------------------
if ls tests/browser/*.test.mjs >/dev/null 2>&1; then
  out="$logdir/browser.log"
  (cd tests/browser && timeout 900 node --test --test-reporter=tap ./*.test.mjs) >"$out" 2>&1; rc=$?
  p=$(grep -E '^# pass [0-9]+' "$out" | awk '{print $3}'); f=$(grep -E '^# fail [0-9]+' "$out" | awk '{print $3}')
  p=${p:-0}; f=${f:-0}
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count browser "$p" "$f"
  if [ "$f" -gt 0 ]; then grep -B2 -A25 '^not ok' "$out" | head -n 150; fi
fi

echo
if ((${#failures[@]})); then echo "failing suites: ${failures[*]} (logs in $logdir/)"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
