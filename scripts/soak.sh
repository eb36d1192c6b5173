#!/usr/bin/env bash
# The soak: mixed load (hits, cold misses, coalesced bursts, NDJSON
# batches, private calls from 4 keys, writes with unique ids) on one kproxy
# in front of the fake Kalshi, faults injected every 250ms on /events, all on
# 127.0.0.1. Asserts no cross-user leak, every write id upstream exactly
# once, no error beyond those injected, and flat RSS/goroutines/fds (slopes
# printed; bounds enforced for runs of 30s or more).
#
#   scripts/soak.sh            # 10 minutes
#   scripts/soak.sh 60         # 60 minutes
#   SOAK=60s scripts/soak.sh   # CI length (any Go duration)
#   RACE=1 scripts/soak.sh 5   # with the race detector (slower)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
dur="${SOAK:-${1:-10}m}"
[[ -n "${SOAK:-}" ]] && dur="$SOAK"
race=()
[[ "${RACE:-0}" == 1 ]] && race=(-race)
go test "${race[@]}" -count=1 -run '^TestSoak$' -v -timeout 0 ./internal/app/ -soak "$dur" | grep -E '^(=== RUN|--- |\s+soak_test|ok|FAIL|PASS)|soak '
