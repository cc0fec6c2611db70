#!/usr/bin/env bash
# Installs the Debian packages (and npm modules) a target needs, and only the
# missing ones, so `make run` / `make test` work on a fresh Debian 12 machine.
# Usage: scripts/deps.sh build|run|test|bench|deb
set -euo pipefail

build_pkgs=(build-essential pkg-config libfcgi-dev libfcgi-bin libcurl4-openssl-dev
            libjson-c-dev liblmdb-dev lmdb-utils libpq-dev libssl-dev python3 curl ca-certificates)
run_pkgs=(lighttpd)
test_pkgs=(libcmocka-dev lighttpd nginx-light apache2 libapache2-mod-fcgid spawn-fcgi
           chromium nodejs npm clang libclang-rt-14-dev postgresql prometheus)
bench_pkgs=(lighttpd wrk postgresql)
# `make deb`: dpkg-shlibdeps (dpkg-dev) for Depends, lintian to check it
deb_pkgs=(dpkg-dev lintian)
# tests/integration/test_deb.py installs the package (adduser: its Depends)
# and checks its units with systemd-analyze (systemd; not PID 1 needed)
test_pkgs+=("${deb_pkgs[@]}" adduser systemd)
# tests/integration/test_netw.py: a real HTTP proxy (the binary only: the
# tinyproxy package would also start a system-wide one) and certificates
test_pkgs+=(tinyproxy-bin openssl)

want=("${build_pkgs[@]}")
case "${1:-build}" in
  build) ;;
  run)   want+=("${run_pkgs[@]}") ;;
  test)  want+=("${test_pkgs[@]}") ;;
  bench) want+=("${bench_pkgs[@]}") ;;
  deb)   want+=("${deb_pkgs[@]}") ;;
  *) echo "deps.sh: unknown target '$1' (build|run|test|bench|deb)" >&2; exit 2 ;;
esac

installed() {
  # nodejs may come from another source (e.g. a preinstalled node); a working
  # binary is what matters.
  case "$1" in
    nodejs) command -v node >/dev/null 2>&1 && return 0 ;;
    npm)    command -v npm  >/dev/null 2>&1 && return 0 ;;
  esac
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done

if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
    echo "deps.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts daemons on install where it can; we never want system copies
  # of the web servers (or of Prometheus, on :9090) competing for ports with
  # the ones the tests start.
  for svc in lighttpd nginx apache2 prometheus; do
    if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
  done
fi

if [ "${1:-build}" = test ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  if [ ! -d "$here/tests/browser/node_modules/playwright-core" ]; then
    echo "deps.sh: installing playwright-core (npm)"
    (cd "$here/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
