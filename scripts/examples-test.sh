#!/usr/bin/env bash
# Runs the examples against kproxy in front of kalshi-sim, both built into a
# temporary directory and listening on free 127.0.0.1 ports; stops both
# servers by PID. Fails if any example fails.
#   - examples/batch_get_markets_stdlib.py (and the requests variant when the
#     requests package is installed): 3 series with 12 markets each; an
#     unknown series is reported as an error with exit status 1.
#   - every python/examples/*.py, as shipped, the way docs/python.md says to
#     run them from the repository without installing anything:
#     PYTHONPATH=python python3 python/examples/NAME.py
#     (each must exit 0, print something, and write nothing to stderr).
#     scripts/python-client-test.sh runs them again with the package
#     installed by pip.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in go python3; do
	command -v "$tool" >/dev/null || { echo "examples-test: $tool not found" >&2; exit 1; }
done

. scripts/lib/servers.sh
servers_init examples-test

start=$(date +%s)
start_servers

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

n=0
for example in python/examples/*.py; do
	case $(basename "$example") in _*) continue ;; esac # helper modules, not examples
	out=$(env -u KALSHI_BASE_URL PYTHONPATH=python python3 "$example" 2>"$tmp/err.txt") ||
		fail "$example exited $?: $(cat "$tmp/err.txt")"
	[ -n "$out" ] || fail "$example printed nothing"
	[ ! -s "$tmp/err.txt" ] || fail "$example wrote to stderr: $(cat "$tmp/err.txt")"
	echo "examples-test: $example ok"
	printf '    %s\n' "${out//$'\n'/$'\n    '}"
	n=$((n + 1))
done
[ "$n" -ge 2 ] || fail "found $n examples under python/examples, want at least 2"

echo "examples-test: passed in $(($(date +%s) - start))s"
