#!/usr/bin/env bash
# End-to-end test with Kalshi's TypeScript SDK (kalshi-typescript, pinned in
# e2e/sdk/package-lock.json): builds kproxy and kalshi-sim into a temporary
# directory, installs the SDK with `npm ci`, and runs `node --test --test-timeout=120000 e2e/sdk/`.
# The test starts both binaries on free 127.0.0.1 ports and stops them by PID.
# Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in go node npm; do
	command -v "$tool" >/dev/null || { echo "e2e-sdk: $tool not found" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kproxy-e2e-sdk.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

start=$(date +%s)
echo "e2e-sdk: building kproxy and kalshi-sim into $tmp"
go build -o "$tmp/kproxy" ./cmd/kproxy
go build -o "$tmp/kalshi-sim" ./cmd/kalshi-sim

echo "e2e-sdk: npm ci (e2e/sdk)"
(cd e2e/sdk && npm ci --no-audit --no-fund --loglevel=error)

echo "e2e-sdk: node --test --test-timeout=120000 e2e/sdk/"
KPROXY_BIN="$tmp/kproxy" SIM_BIN="$tmp/kalshi-sim" node --test --test-timeout=120000 e2e/sdk/
echo "e2e-sdk: passed in $(($(date +%s) - start))s"
