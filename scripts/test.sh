#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Go checks and tests with the race detector, then the end-to-end runs with
# Kalshi's own TypeScript SDK and the Python example (they start their own
# servers on 127.0.0.1 and stop them by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

# System packages the tests need: a real redis-server (the shared tier's
# tests start their own on a free loopback port), Debian's chromium (the
# status page's browser test) and promtool from Debian's prometheus package
# (dashboard and alert rules). Installed only when missing.
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian package starts a system-wide Redis on port 6379; the tests
  # never use it (each starts its own), so stop it again.
  if [[ " ${need[*]} " == *" redis-server "* ]]; then
    $sudo systemctl stop redis-server 2>/dev/null || $sudo service redis-server stop 2>/dev/null || true
  fi
fi

echo "== gofmt"
unformatted=$(gofmt -l . | grep -v '^e2e/sdk/node_modules/' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 ./...
echo "== fuzz targets, a few seconds each (scripts/fuzz.sh runs them as long as asked)"
FUZZTIME="${FUZZTIME:-4s}" FUZZ_PARALLEL=2 bash scripts/fuzz.sh
echo "== soak, 60 s (scripts/soak.sh runs it for minutes)"
go test -count=1 -run '^TestSoak$' ./internal/app/ -soak 60s
if [ -f scripts/e2e-sdk.sh ]; then
  echo "== end-to-end: kalshi-typescript SDK through kproxy"
  bash scripts/e2e-sdk.sh
fi
if [ -f scripts/examples-test.sh ]; then
  echo "== examples: Python standard-library batch client"
  bash scripts/examples-test.sh
fi
if [ -f scripts/python-client-test.sh ]; then
  echo "== Python client (python) through kproxy"
  bash scripts/python-client-test.sh
fi
echo "== all tests passed"
