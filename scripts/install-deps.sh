#!/usr/bin/env bash
# Installs what the test suite needs and a fresh Debian machine lacks, and nothing else:
# Debian's Chromium and Firefox ESR (the real-browser tests never download a browser),
# Node.js with npm (they drive the browsers), nftables and iproute2 (the tests that put a
# guest in a network namespace of its own), coturn (the TURN tests start their own
# `turnserver`; the system service the package brings is disabled), redis-server (the
# cluster test starts its own; likewise no system service), postgresql (the store's tests
# and the cluster test start throwaway clusters with initdb; likewise no system service),
# cargo-fuzz (the fuzz
# step) and the browser drivers' npm packages (tests/browser/package-lock.json). Safe to
# run again: what is there is left alone.
#
#   ./scripts/install-deps.sh           install what is missing (apt-get needs root or sudo)
#   ./scripts/install-deps.sh --check   only say what is missing; exit 1 if anything is
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=false
case "${1:-}" in
  --check) check_only=true ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "install-deps.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
esac

# command -> Debian package
declare -A packages=(
  [chromium]=chromium
  [firefox-esr]=firefox-esr
  [node]=nodejs
  [npm]=npm
  [nft]=nftables   # network conditions in the guest-network tests
  [ip]=iproute2    # their network namespaces and veth pairs
  [turnserver]=coturn   # the TURN tests (tests/turn.rs)
  [redis-server]=redis-server   # the cluster test (tests/cluster.rs) starts its own
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
# PostgreSQL's server programs (initdb, postgres): Debian keeps them off PATH, in
# /usr/lib/postgresql/<version>/bin, where the tests look for them (src/store/testing.rs).
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if $check_only; then
    echo "missing Debian packages: ${missing[*]}"
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-deps.sh: the suite needs the Debian packages ${missing[*]}; install them as root:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "==> installing ${missing[*]} (Debian packages; the first time takes a few minutes)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  # The coturn package enables a system-wide TURN server on port 3478 with the stock
  # /etc/turnserver.conf. The tests need none (each starts its own on ports of its own):
  # do not leave one running.
  if [[ " ${missing[*]} " == *" coturn "* ]] && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl disable --now coturn.service >/dev/null 2>&1 || true
  fi
  # Likewise redis-server's system service: tests/cluster.rs starts its own on a free port.
  if [[ " ${missing[*]} " == *" redis-server "* ]] && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl disable --now redis-server.service >/dev/null 2>&1 || true
  fi
  # Likewise PostgreSQL's: the package makes a cluster `main` on port 5432 and starts it;
  # the tests start their own on free ports and need none.
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    if [ -d /run/systemd/system ]; then
      "${sudo[@]}" systemctl disable --now postgresql.service >/dev/null 2>&1 || true
    elif command -v pg_lsclusters >/dev/null 2>&1; then
      pg_lsclusters -h 2>/dev/null | while read -r version name _; do
        "${sudo[@]}" pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
      done
    fi
  fi
fi

# cargo-fuzz, for the fuzz step (scripts/fuzz.sh): built from source, about 4 minutes once.
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  if $check_only; then
    echo "cargo-fuzz is missing (cargo install cargo-fuzz --locked)"
    exit 1
  fi
  echo "==> cargo install cargo-fuzz (the fuzz targets; about 4 minutes, once)"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# The browser drivers: exactly the versions in the lockfile, installed again only when it changed.
lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.package-lock.json
if [ -f "$lock" ] && { [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; }; then
  if $check_only; then
    echo "tests/browser/node_modules is missing or older than its lockfile"
    exit 1
  fi
  echo "==> npm ci in tests/browser (playwright-core, puppeteer-core; no browser is downloaded)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
