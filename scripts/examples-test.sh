#!/usr/bin/env bash
# Runs examples/batch_get_markets_stdlib.py (and the requests variant when the
# requests package is installed) against kproxy in front of kalshi-sim, both
# built into a temporary directory and listening on free 127.0.0.1 ports, and
# checks the output: 3 series with 12 markets each; an unknown series is
# reported as an error with exit status 1. Stops both servers by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in go python3; do
	command -v "$tool" >/dev/null || { echo "examples-test: $tool not found" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kproxy-examples.XXXXXX")
pids=()
cleanup() {
	local pid i
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for ((i = 0; i < 100; i++)); do # at most 10 s, then SIGKILL
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
	echo "examples-test: FAIL: $*" >&2
	for log in "$tmp"/*.log; do
		[ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
	done
	exit 1
}

# wait_for LOG REGEX: prints the first match of REGEX in LOG, waiting up to 10 s.
wait_for() {
	local i match
	for ((i = 0; i < 100; i++)); do
		match=$(grep -oE "$2" "$1" 2>/dev/null | head -n 1 || true)
		if [ -n "$match" ]; then
			echo "$match"
			return 0
		fi
		sleep 0.1
	done
	return 1
}

start=$(date +%s)
go build -o "$tmp/kproxy" ./cmd/kproxy
go build -o "$tmp/kalshi-sim" ./cmd/kalshi-sim

"$tmp/kalshi-sim" -listen 127.0.0.1:0 2>"$tmp/sim.log" &
pids+=("$!")
sim=$(wait_for "$tmp/sim.log" 'http://127\.0\.0\.1:[0-9]+') || fail "kalshi-sim did not start"

env -u KPROXY_CONFIG -u KPROXY_ADMIN_TOKEN -u KPROXY_REDIS_URL \
	KPROXY_LOG_FORMAT=json KPROXY_LOG_LEVEL=info \
	"$tmp/kproxy" -config config.yaml -listen 127.0.0.1:0 -upstream "$sim" 2>"$tmp/kproxy.log" &
pids+=("$!")
addr=$(wait_for "$tmp/kproxy.log" '"addr":"127\.0\.0\.1:[0-9]+"') || fail "kproxy did not start"
addr=${addr#\"addr\":\"}
export KPROXY_URL="http://${addr%\"}"
echo "examples-test: kalshi-sim at $sim, kproxy at $KPROXY_URL"

want="KXEARNINGSMENTIONMETA: 12 markets
KXEARNINGSMENTIONTSLA: 12 markets
KXEARNINGSMENTIONNVDA: 12 markets"

check() { # check NAME SCRIPT: runs an example and compares its output.
	local got
	got=$(python3 "$2") || fail "$1 exited $?"
	[ "$got" = "$want" ] || fail "$1 printed:
$got
want:
$want"
	echo "examples-test: $1 ok"
	printf '    %s\n' "${got//$'\n'/$'\n    '}"
}

check "batch_get_markets_stdlib.py" examples/batch_get_markets_stdlib.py

# An unknown series is an error of its own: the others still come back, exit 1.
set +e
out=$(python3 examples/batch_get_markets_stdlib.py KXEARNINGSMENTIONMETA KXNOSUCHSERIES 2>"$tmp/err.txt")
status=$?
set -e
[ "$status" -eq 1 ] || fail "with an unknown series: exit $status, want 1"
[ "$out" = "KXEARNINGSMENTIONMETA: 12 markets" ] || fail "with an unknown series, stdout: $out"
grep -q '^KXNOSUCHSERIES: error 404' "$tmp/err.txt" || fail "with an unknown series, stderr: $(cat "$tmp/err.txt")"
echo "examples-test: unknown series reported as an error ok"

if python3 -c 'import requests' 2>/dev/null; then
	check "batch_get_markets_requests.py" examples/batch_get_markets_requests.py
else
	echo "examples-test: requests not installed: batch_get_markets_requests.py skipped"
fi

echo "examples-test: passed in $(($(date +%s) - start))s"
