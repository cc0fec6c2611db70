#!/usr/bin/env bash
# `make run`: the demo stack in the foreground, on loopback.
#
#   PORT=8080 STATE_DIR=./var BUILD=build scripts/run.sh   (make run runs the build first)
#
# Starts the test upstream (tests/upstream/upstream.py --demo, pages capped at
# 100 objects so that a full run of the demo feed lasts ~20 s) on a free
# loopback port, registers the "Demo TAXII 2.1" feed (id `demo`) pointing at
# it (see "the demo feed" below for an existing one), then lighttpd with
# deploy/lighttpd/threatfeed.conf on 127.0.0.1:PORT.  STATE_DIR is kept
# between runs.  Ctrl-C (or TERM) stops everything this script started:
# active runs are stopped (stop_now), then lighttpd and its handler processes,
# any worker still using STATE_DIR's store, and the upstream.
#
# An optional $STATE_DIR/threatfeed.conf (api_token = ..., max_concurrent_runs
# = ..., see README) is used when present.
set -euo pipefail

PORT=${PORT:-8080}
STATE_DIR=${STATE_DIR:-./var}
BUILD=${BUILD:-build}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s\n' "$*"; }
die() { printf 'make run: %s\n' "$*" >&2; exit 1; }

case $PORT in ''|*[!0-9]*) die "PORT must be a number, got '$PORT'";; esac
((PORT >= 1 && PORT <= 65535)) || die "PORT out of range: $PORT"
# relative STATE_DIR / BUILD are relative to the caller's directory (make: the repo)
[[ -d $BUILD ]] || die "no build directory '$BUILD' (run: make)"
BUILD=$(cd "$BUILD" && pwd)
FCGI=$BUILD/threatfeed.fcgi
CLI=$BUILD/threatfeed
[[ -x $FCGI && -x $CLI ]] || die "$FCGI or $CLI is missing (run: make)"
command -v lighttpd >/dev/null 2>&1 || [[ -x /usr/sbin/lighttpd ]] ||
  die "lighttpd is not installed (apt-get install lighttpd)"
LIGHTTPD=$(command -v lighttpd 2>/dev/null || echo /usr/sbin/lighttpd)

# The port: refuse clearly if something listens there.  SO_REUSEADDR like
# lighttpd, so sockets of a run that just ended (TIME_WAIT) do not count.
port_check() {
  python3 - "$1" <<'EOF'
import errno, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as e:
    sys.exit(3 if e.errno == errno.EADDRINUSE else 4)
EOF
}
rc=0; port_check "$PORT" || rc=$?
if ((rc == 3)); then
  die "port $PORT is in use — try make run PORT=$((PORT == 65535 ? 8081 : PORT + 1))"
elif ((rc != 0)); then
  die "cannot listen on 127.0.0.1:$PORT (ports below 1024 need root) — try make run PORT=8080"
fi

mkdir -p "$STATE_DIR" || die "cannot create STATE_DIR '$STATE_DIR'"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
cd "$here"
# make run DB=postgresql://… serves the same on PostgreSQL: the schema is
# created (or upgraded) first, as an operator would with `threatfeed db migrate`.
if [[ ${DB:-} == postgres://* || ${DB:-} == postgresql://* ]]; then
  THREATFEED_DB=$DB "$CLI" db migrate >/dev/null || die "cannot migrate the PostgreSQL store $DB"
else
  DB=$STATE_DIR/db
  mkdir -p "$DB"
fi
export THREATFEED_STATE_DIR=$STATE_DIR THREATFEED_DB=$DB THREATFEED_WORKER=$CLI
CONF=
if [[ -f $STATE_DIR/threatfeed.conf ]]; then
  CONF=$STATE_DIR/threatfeed.conf
  export THREATFEED_CONF=$CONF
else
  unset THREATFEED_CONF
fi
TOKEN=
if [[ -n $CONF ]]; then
  TOKEN=$(sed -n 's/^[[:space:]]*api_token[[:space:]]*=[[:space:]]*\(.*[^[:space:]]\)[[:space:]]*$/\1/p' "$CONF" | tail -1)
fi

# --- process bookkeeping ---------------------------------------------------
# Each child runs in its own session (so the terminal's Ctrl-C reaches only
# this script, which then stops them in order) and gets SIGTERM if this
# script dies without cleaning up (PR_SET_PDEATHSIG).
PIDS=()
spawn() {  # spawn LOGFILE CMD... ; sets SPAWNED
  local log=$1; shift
  setsid python3 -c '
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
' "$$" "$@" </dev/null >>"$log" 2>&1 &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_group() {  # stop_group PID: TERM its process group, KILL after 5 s
  local pid=$1 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

api() {  # api METHOD PATH [JSON] -> body on stdout, fails on non-2xx
  local args=(-sS -f --max-time 5 -X "$1" "http://127.0.0.1:$PORT$2")
  [[ -n $TOKEN ]] && args+=(-H "Authorization: Bearer $TOKEN")
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  curl "${args[@]}"
}

stop_active_runs() {  # graceful: stop_now every active run, wait a little
  local ids id i
  ids=$(api GET '/api/threat-feeds/tasks/?active=1' 2>/dev/null |
        python3 -c 'import json,sys; [print(t["task_id"]) for t in json.load(sys.stdin).get("tasks",[])]' 2>/dev/null) || return 0
  [[ -n $ids ]] || return 0
  say "stopping active runs: ${ids//$'\n'/ }"
  for id in $ids; do api POST "/api/threat-feeds/cancel-task/$id/" '{"mode":"stop_now"}' >/dev/null 2>&1 || true; done
  for ((i = 0; i < 50; i++)); do
    [[ -z $(api GET '/api/threat-feeds/tasks/?active=1' 2>/dev/null |
            python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("tasks",[])) or "")' 2>/dev/null) ]] && break
    sleep 0.1
  done
}

store_pids() {  # processes (workers) whose environment names this store
  local p
  for p in /proc/[0-9]*; do
    [[ ${p#/proc/} == "$$" || ${p#/proc/} == "$BASHPID" ]] && continue
    tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF "THREATFEED_DB=$DB" && echo "${p#/proc/}"
  done
  return 0
}

CLEANED=
cleanup() {
  local rc=$? p i
  [[ -n $CLEANED ]] && return
  CLEANED=1
  trap '' INT TERM
  [[ -n ${LIGHTTPD_PID:-} ]] && alive "$LIGHTTPD_PID" && stop_active_runs
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_group "${PIDS[i]}"; done
  local -a left
  mapfile -t left < <(store_pids)
  if ((${#left[@]})); then
    kill -TERM "${left[@]}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
      mapfile -t left < <(for p in "${left[@]}"; do alive "$p" && echo "$p"; done)
      ((${#left[@]})) || break
      sleep 0.1
    done
    if ((${#left[@]})); then kill -KILL "${left[@]}" 2>/dev/null || true; fi
  fi
  say "threatfeed stopped (state kept in $STATE_DIR)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the upstream ------------------------------------------------------------
UPORT_FILE=$STATE_DIR/upstream.port
rm -f "$UPORT_FILE"
spawn "$STATE_DIR/upstream.log" python3 tests/upstream/upstream.py --port 0 \
  --port-file "$UPORT_FILE" --demo --max-page-size 100 --quiet --lifetime-s 31536000
UPSTREAM_PID=$SPAWNED
UPORT=
for ((i = 0; i < 200; i++)); do
  [[ -s $UPORT_FILE ]] && UPORT=$(<"$UPORT_FILE") && [[ -n $UPORT ]] && break
  alive "$UPSTREAM_PID" || break
  sleep 0.1
done
[[ -n $UPORT ]] || { tail -20 "$STATE_DIR/upstream.log" >&2 || true; die "the demo upstream did not start (log: $STATE_DIR/upstream.log)"; }
UPSTREAM_URL="http://127.0.0.1:$UPORT/taxii2/"
COLLECTION=91a7b528-80eb-42ed-a74d-c6fbd5a26116
FEED_JSON=$(printf '{"id":"demo","name":"Demo TAXII 2.1","type":"taxii21","url":"%s","collection":"%s","interval_s":0,"enabled":true}' "$UPSTREAM_URL" "$COLLECTION")

# --- lighttpd ------------------------------------------------------------------
export TF_PORT=$PORT TF_BIND=127.0.0.1 TF_WWW=$here/www TF_FCGI=$FCGI TF_STATE=$STATE_DIR \
       TF_DB=$DB TF_WORKER=$CLI TF_RUNDIR=$STATE_DIR TF_ERRORLOG=- TF_LOG=stderr \
       TF_ACCESSLOG=$STATE_DIR/lighttpd-access.log TF_FCGI_PROCS=${TF_FCGI_PROCS:-4}
export TF_CONF=$CONF
unset TF_USER TF_GROUP
spawn /dev/stderr "$LIGHTTPD" -D -f "$here/deploy/lighttpd/threatfeed.conf"
LIGHTTPD_PID=$SPAWNED

ok=
for ((i = 0; i < 200; i++)); do
  alive "$LIGHTTPD_PID" || break
  if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 ${TOKEN:+-H "Authorization: Bearer $TOKEN"} \
           "http://127.0.0.1:$PORT/api/health" 2>/dev/null) == 200 ]]; then ok=1; break; fi
  sleep 0.1
done
[[ -n $ok ]] || die "lighttpd did not answer GET /api/health with 200 within 20 s (its errors are above)"

# --- the demo feed ---------------------------------------------------------------
# Through the API, like any client.  The upstream's data is the same on every
# start, so a demo feed that already ingested all of it would have nothing
# left to fetch: it is re-created (a fresh ~20 s run to watch).  A demo feed
# whose last run was stopped or failed keeps its history and cursor (the next
# run continues where it ended); it is only pointed at this run's upstream.
api_status() {  # api_status METHOD PATH [JSON] -> HTTP status on stdout, body in $API_OUT
  local args=(-s -o "$API_OUT" -w '%{http_code}' --max-time 10 -X "$1")
  [[ -n $TOKEN ]] && args+=(-H "Authorization: Bearer $TOKEN")
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  curl "${args[@]}" "http://127.0.0.1:$PORT$2" || true
}
API_OUT=$STATE_DIR/.run-api.out
code=$(api_status GET /api/threat-feeds/demo/)
last=
if [[ $code == 200 ]]; then
  last=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("last_status") or "")' "$API_OUT" 2>/dev/null || true)
fi
if [[ $code == 200 && $last == completed ]]; then
  code=$(api_status DELETE /api/threat-feeds/demo/)
  [[ $code == 204 ]] || say "make run: warning: could not re-create the demo feed: HTTP $code $(cat "$API_OUT" 2>/dev/null)" >&2
  [[ $code == 204 ]] && code=404
fi
case $code in
  200) code=$(api_status PATCH /api/threat-feeds/demo/ "{\"url\":\"$UPSTREAM_URL\",\"collection\":\"$COLLECTION\"}")
       [[ $code == 200 ]] ||
         say "make run: warning: could not point the demo feed at $UPSTREAM_URL: HTTP $code $(cat "$API_OUT" 2>/dev/null)" >&2 ;;
  404) code=$(api_status POST /api/threat-feeds/ "$FEED_JSON")
       [[ $code == 201 ]] || die "could not register the demo feed: HTTP $code $(cat "$API_OUT" 2>/dev/null)" ;;
  *)   say "make run: warning: cannot read the demo feed: HTTP $code $(cat "$API_OUT" 2>/dev/null)" >&2 ;;
esac
rm -f "$API_OUT"

say "threatfeed is up: http://127.0.0.1:$PORT/"
say "  demo upstream: $UPSTREAM_URL (feed \"demo\")"
say "  TAXII 2.1 server (read-only, one collection per feed): http://127.0.0.1:$PORT/taxii2/"
say "  state: $STATE_DIR   access log: $STATE_DIR/lighttpd-access.log"
if [[ -z $TOKEN ]]; then
  say "  note: no API token is configured — fine on loopback only (set api_token in $STATE_DIR/threatfeed.conf)"
fi
say "  Ctrl-C stops everything."

# Foreground until lighttpd ends or a signal arrives (traps run during wait).
rc=0; wait "$LIGHTTPD_PID" || rc=$?
if [[ -z $CLEANED ]]; then
  say "make run: lighttpd exited ($rc)" >&2
  exit 1
fi
