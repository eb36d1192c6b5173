#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Go checks and tests with the race detector, then the end-to-end runs with
# Kalshi's own TypeScript SDK and the Python example (they start their own
# servers on 127.0.0.1 and stop them by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

echo "== gofmt"
unformatted=$(gofmt -l . | grep -v '^e2e/sdk/node_modules/' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 ./...
if [ -f scripts/e2e-sdk.sh ]; then
  echo "== end-to-end: kalshi-typescript SDK through kproxy"
  bash scripts/e2e-sdk.sh
fi
if [ -f scripts/examples-test.sh ]; then
  echo "== examples: Python standard-library batch client"
  bash scripts/examples-test.sh
fi
echo "== all tests passed"
