#!/usr/bin/env bash
# Tests the Python client (clients/python, package kproxy): installs it with
# pip into a fresh virtual environment (offline: its build backend is in the
# tree and needs nothing from an index), then runs its unittest suite against
# kproxy in front of kalshi-sim, both built into a temporary directory and
# listening on free 127.0.0.1 ports. Stops both servers by PID.
#
#   scripts/python-client-test.sh            # with python3
#   PYTHON=python3.9 scripts/python-client-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
for tool in go "$PYTHON"; do
	command -v "$tool" >/dev/null || { echo "python-client-test: $tool not found" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kproxy-python.XXXXXX")
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
	echo "python-client-test: FAIL: $*" >&2
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

# pip install, offline: no index, default build isolation.
"$PYTHON" -m venv "$tmp/venv" || fail "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
"$tmp/venv/bin/python" -m pip install --quiet --no-index --disable-pip-version-check ./clients/python \
	>"$tmp/pip.log" 2>&1 || fail "pip install ./clients/python failed"
echo "python-client-test: pip install ./clients/python ok ($("$tmp/venv/bin/python" --version))"

go build -o "$tmp/kproxy" ./cmd/kproxy
go build -o "$tmp/kalshi-sim" ./cmd/kalshi-sim

"$tmp/kalshi-sim" -listen 127.0.0.1:0 2>"$tmp/sim.log" &
pids+=("$!")
sim=$(wait_for "$tmp/sim.log" 'http://127\.0\.0\.1:[0-9]+') || fail "kalshi-sim did not start"

# The suite sends a few hundred upstream requests in seconds: a generous rate.
env -u KPROXY_CONFIG -u KPROXY_ADMIN_TOKEN -u KPROXY_REDIS_URL \
	KPROXY_LOG_FORMAT=json KPROXY_LOG_LEVEL=info \
	KPROXY_UPSTREAM_READ_RATE=1000 \
	"$tmp/kproxy" -config config.yaml -listen 127.0.0.1:0 -upstream "$sim" 2>"$tmp/kproxy.log" &
pids+=("$!")
addr=$(wait_for "$tmp/kproxy.log" '"addr":"127\.0\.0\.1:[0-9]+"') || fail "kproxy did not start"
addr=${addr#\"addr\":\"}
export KPROXY_URL="http://${addr%\"}"
echo "python-client-test: kalshi-sim at $sim, kproxy at $KPROXY_URL"

# Run from the temporary directory so `import kproxy` is the installed copy.
(cd "$tmp" && "$tmp/venv/bin/python" -m unittest discover -s "$OLDPWD/clients/python/tests" -t "$OLDPWD/clients/python/tests" -v) \
	>"$tmp/unittest.log" 2>&1 || { cat "$tmp/unittest.log" >&2; fail "unittest failed"; }
tail -n 4 "$tmp/unittest.log"
grep -q "^import kproxy\|^from kproxy" clients/python/tests/test_batch.py
ran=$(grep -oE '^Ran [0-9]+ tests?' "$tmp/unittest.log" | grep -oE '[0-9]+')
echo "python-client-test: ${ran} passed, 0 failed"
echo "python-client-test: passed in $(($(date +%s) - start))s"
