#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benches: Debian's server,
# initialised in a temporary directory, run as the postgres user, listening
# on a unix socket in that directory (and on 127.0.0.1:PORT when PG_PORT is
# set; PG_LISTEN overrides the addresses, PG_HBA_NET adds a trusted client
# network: tests that reach it from a network namespace they created).
#   scripts/pg.sh start DIR   → prints the store URI of database "threatfeed"
#   scripts/pg.sh stop DIR    → stops the server and removes DIR
# PG_FAST=1 turns fsync off (tests: durability across a power cut is not what
# they check, and it halves make test's time on PostgreSQL).
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: scripts/pg.sh start|stop DIR" >&2; exit 2; }
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/pg_ctl" ] || { echo "pg.sh: PostgreSQL server not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

case "$cmd" in
start)
  mkdir -p "$dir"; chmod 0755 "$dir"
  chown postgres: "$dir" 2>/dev/null || true
  as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  if [ -n "${PG_HBA_NET:-}" ]; then
    echo "host all all $PG_HBA_NET trust" >>"$dir/data/pg_hba.conf"
  fi
  listen=${PG_LISTEN:-${PG_PORT:+127.0.0.1}}
  opts="-c listen_addresses=$listen -k $dir -c max_connections=200"
  [ -n "${PG_PORT:-}" ] && opts="$opts -p $PG_PORT"
  [ "${PG_FAST:-0}" = 1 ] && opts="$opts -c fsync=off -c full_page_writes=off"
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start >/dev/null ||
    { cat "$dir/server.log" >&2; exit 1; }
  port=${PG_PORT:-5432}
  as_pg "$bin/createdb" -h "$dir" -p "$port" -U postgres threatfeed
  echo "postgresql:///threatfeed?host=$dir&port=$port&user=postgres"
  ;;
stop)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*) echo "usage: scripts/pg.sh start|stop DIR" >&2; exit 2 ;;
esac
