#!/usr/bin/env bash
# Runs every test layer and ends with one summary line "N passed, N failed".
# Layers: unit (cmocka, ASan+UBSan), upstream self-test, integration (Python
# stdlib, real lighttpd + handler + workers, ASan binaries), browser
# (playwright-core + Debian chromium), and a 45 s soak (tests/soak/soak.py,
# fixed seed).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export TF_BIN_DIR="$PWD/$BUILD/asan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
logdir="$BUILD/test-logs"
mkdir -p "$logdir"
rm -f "$logdir"/*.rc
passed=0 failed=0 skipped=0
failures=()

count() { # name passed failed [skipped]
  local s=${4:-0}
  passed=$((passed + $2)); failed=$((failed + $3)); skipped=$((skipped + s))
  if [ "$3" -gt 0 ]; then failures+=("$1"); fi
  printf '%-34s %4d passed, %d failed, %d skipped\n' "$1" "$2" "$3" "$s"
}

# One cmocka binary: passed/failed/skipped from its summary lines.
cmocka_run() { # name binary log [env...]
  local name=$1 bin=$2 out=$3; shift 3
  env "$@" timeout 300 "$bin" >"$out" 2>&1; local rc=$?
  local p f s
  p=$(grep -oE '^\[  PASSED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
  f=$(grep -oE '^\[  FAILED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
  s=$(grep -oE '^\[  SKIPPED \] [0-9]+ test' "$out" | awk '{s+=$4} END {print s+0}')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed / sanitizer abort
  count "$name" "$p" "$f" "$s"
  if [ "$f" -gt 0 ]; then tail -n 40 "$out"; fi
}

# A throwaway PostgreSQL for the store-backed tests on the second backend.
pgdir=$(mktemp -d /tmp/threatfeed-test-pg.XXXXXX)
trap 'scripts/pg.sh stop "$pgdir" >/dev/null 2>&1 || true' EXIT
pg_uri=$(PG_FAST=1 scripts/pg.sh start "$pgdir" 2>"$logdir/pg-start.log") || pg_uri=

# --- unit -----------------------------------------------------------------
for t in "$BUILD"/asan/tests/test_*; do
  [ -x "$t" ] || continue
  cmocka_run "unit/$(basename "$t")" "$t" "$logdir/$(basename "$t").log"
done

# --- the store-backed unit tests again, on PostgreSQL --------------------------
if [ -n "$pg_uri" ]; then
  for t in test_store test_records test_task test_runctl test_index test_feed test_writer test_metrics test_webhook test_auth; do
    cmocka_run "unit-pg/$t" "$BUILD/asan/tests/$t" "$logdir/pg-$t.log" TF_TEST_PG="$pg_uri"
  done
else
  count unit-pg/start-postgresql 0 1
  cat "$logdir/pg-start.log"
fi

# --- the writer thread under ThreadSanitizer ---------------------------------
t="$BUILD/tsan/tests/test_writer"
if [ -x "$t" ]; then
  cmocka_run unit-tsan/test_writer "$t" "$logdir/tsan-test_writer.log" TSAN_OPTIONS=halt_on_error=1
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

# --- python suites and the browser, in parallel lanes -------------------------
# These suites mostly wait on real processes (runs, grace periods, stalls), so
# two lanes on two cores take little more than half the time of one (three
# loaded the machine enough to slow every test's processes). Each test class
# starts its own stack on random ports, so lanes share nothing; pyrun deals
# the integration suite's classes to two shares. Every lane writes its log and
# exit status; the counting happens afterwards, in a fixed order.
pyrun() { # name [pyrun args...]
  local name=$1; shift
  timeout 1500 python3 tests/pyrun.py "$@" >"$logdir/$name.log" 2>&1
  echo $? >"$logdir/$name.rc"
}
pycount() { # name
  local name=$1 out="$logdir/$1.log" rc line p f s
  rc=$(cat "$logdir/$name.rc" 2>/dev/null || echo 1)
  line=$(grep -E '^pyrun: [0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
  p=$(echo "$line" | awk '{print $2}'); f=$(echo "$line" | awk '{print $4}')
  s=$(echo "$line" | awk '{print $6}')
  p=${p:-0}; f=${f:-0}; s=${s:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count "$name" "$p" "$f" "$s"
  if [ "$f" -gt 0 ]; then grep -E -A 30 '^(FAIL|ERROR):' "$out" | head -n 150; tail -n 20 "$out"; fi
}
browser() {
  local out="$logdir/browser.log"
  (cd tests/browser && timeout 900 node --test --test-reporter=tap ./*.test.mjs) >"$out" 2>&1
  echo $? >"$logdir/browser.rc"
}
browsercount() {
  local out="$logdir/browser.log" rc p f s
  rc=$(cat "$logdir/browser.rc" 2>/dev/null || echo 1)
  p=$(grep -E '^# pass [0-9]+' "$out" | awk '{print $3}'); f=$(grep -E '^# fail [0-9]+' "$out" | awk '{print $3}')
  s=$(grep -E '^# (skipped|todo) [0-9]+' "$out" | awk '{s+=$3} END {print s+0}')
  p=${p:-0}; f=${f:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count browser "$p" "$f" "$s"
  if [ "$f" -gt 0 ]; then grep -B2 -A25 '^not ok' "$out" | head -n 150; fi
}
pg_suites=(test_runs.CompleteAndIncremental test_runs.Cancels test_runs.Queue test_runs.QueueLimits
  test_runs.Crashes test_runs.Escalation test_api.Basics test_api.Runs test_api.Pollers test_api.HandlerKilled
  test_shapes test_metrics test_indicators test_webhooks.Delivery test_webhooks.Retries
  test_audit test_taxii_server test_freeze test_scale)
pyrun upstream tests/upstream
# Runs, every cancel path, kills, the queue and the API through lighttpd,
# again on PostgreSQL (each test gets its own migrated schema), half of it
# in each lane: the share with the kills and cancels goes to the lane whose
# integration share is the shorter.
( pyrun integration-1 --shard 1/2 tests/integration
  if ls tests/browser/*.test.mjs >/dev/null 2>&1; then browser; fi
  if [ -n "$pg_uri" ]; then
    TF_IT_PG="$pg_uri" pyrun integration-pg-1 --shard 2/2 tests/integration "${pg_suites[@]}"
  fi ) &
( pyrun integration-2 --shard 2/2 tests/integration
  if [ -n "$pg_uri" ]; then
    TF_IT_PG="$pg_uri" pyrun integration-pg-2 --shard 1/2 tests/integration "${pg_suites[@]}"
  fi ) &
wait
pycount upstream
pycount integration-1
pycount integration-2
if [ -n "$pg_uri" ]; then pycount integration-pg-1; pycount integration-pg-2; fi
if [ -f "$logdir/browser.rc" ]; then browsercount; fi

# --- soak: a short chaos run with a fixed seed, alone after the other layers
# (`make soak` runs the long one; README "Soak") ------------------------------
out="$logdir/soak.log"
SOAK_S=${SOAK_SHORT_S:-45} SOAK_SEED=${SOAK_SHORT_SEED:-14} SOAK_BIN="$TF_BIN_DIR" \
  SOAK_OUT="$BUILD/soak" TF_STACK_QUIET=1 timeout 900 python3 tests/soak/soak.py >"$out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q '^violations: 0$' "$out"; then count soak 1 0; else count soak 0 1; tail -n 60 "$out"; fi

echo
if ((${#failures[@]})); then echo "failing suites: ${failures[*]} (logs in $logdir/)"; fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
