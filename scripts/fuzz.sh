#!/usr/bin/env bash
# Runs every fuzz target of kproxy, one after the other, each for FUZZTIME
# (default 30s; any `go test -fuzztime` value: 10s, 5m, 100000x).
#
#   scripts/fuzz.sh              # every target, 30s each
#   scripts/fuzz.sh 10m          # every target, 10 minutes each
#   FUZZTIME=5s scripts/fuzz.sh  # CI: 11 targets x 5s, about 90s with builds in all
#   FUZZ_PARALLEL=4 scripts/fuzz.sh 1h  # more workers per target
#
# A failing input is written under <package>/testdata/fuzz/<Target>/ and
# the script stops with its output: commit that file with the fix (it then
# runs as a seed in every `go test`). Prints the executions of each target.
# Minimizing a new input is capped at 5s: large seeds (the legacy shim's
# answers) would otherwise stall a short run for up to a minute per input.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
FUZZTIME="${1:-${FUZZTIME:-30s}}"
PARALLEL="${FUZZ_PARALLEL:-$(nproc)}"

targets=(
  ./internal/route/:FuzzKey
  ./internal/route/:FuzzCheckPathMatch
  ./proxy/:FuzzAcceptsGzip
  ./proxy/:FuzzMatchesETag
  ./proxy/:FuzzRequestTarget
  ./internal/fetch/:FuzzParseDirectives
  ./internal/fetch/:FuzzAutoBatchSplit
  ./batch/:FuzzBatchRequest
  ./batch/:FuzzListPage
  ./internal/config/:FuzzDecode
  ./internal/legacy/:FuzzApply
  ./cache/:FuzzDecodeRecord
)
total=0
for t in "${targets[@]}"; do
  pkg="${t%%:*}" name="${t##*:}"
  echo "== $pkg $name ($FUZZTIME)"
  log=$(mktemp)
  if ! go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s -parallel "$PARALLEL" >"$log" 2>&1; then
    cat "$log"; rm -f "$log"
    echo "FAIL: $pkg $name"; exit 1
  fi
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  echo "   ${execs:-0} executions"
  total=$((total + ${execs:-0}))
  rm -f "$log"
done
echo "== all ${#targets[@]} fuzz targets passed: $total executions"
