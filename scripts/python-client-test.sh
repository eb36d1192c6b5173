#!/usr/bin/env bash
# Tests the Python client (python, package kproxy): installs it with
# pip into a fresh virtual environment (offline: its build backend is in the
# tree and needs nothing from an index), then runs its unittest suite against
# kproxy in front of kalshi-sim, both built into a temporary directory and
# listening on free 127.0.0.1 ports. Stops both servers by PID. The suite is
# every python/tests/test*.py: the unit tests against a stand-in kproxy
# (test_unit.py), the tests against the real one (test_batch.py, which also
# runs every python/examples/*.py as shipped) and test_history_e2e.py
# (batch_get_trades/candlesticks end to end, over kproxy's Backfill).
#
#   scripts/python-client-test.sh            # with python3
#   PYTHON=python3.9 scripts/python-client-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
for tool in go "$PYTHON"; do
	command -v "$tool" >/dev/null || { echo "python-client-test: $tool not found" >&2; exit 1; }
done

. scripts/lib/servers.sh
servers_init python-client-test

start=$(date +%s)

# pip install, offline: no index, default build isolation.
"$PYTHON" -m venv "$tmp/venv" || fail "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
"$tmp/venv/bin/python" -m pip install --quiet --no-index --disable-pip-version-check ./python \
	>"$tmp/pip.log" 2>&1 || fail "pip install ./python failed"
echo "python-client-test: pip install ./python ok ($("$tmp/venv/bin/python" --version))"

# The suite sends a few hundred upstream requests in seconds: a generous rate.
start_servers KPROXY_UPSTREAM_READ_RATE=1000

# Run from the temporary directory so `import kproxy` is the installed copy.
(cd "$tmp" && "$tmp/venv/bin/python" -m unittest discover -s "$OLDPWD/python/tests" -t "$OLDPWD/python/tests" -v) \
	>"$tmp/unittest.log" 2>&1 || { cat "$tmp/unittest.log" >&2; fail "unittest failed"; }
tail -n 4 "$tmp/unittest.log"
grep -q "^import kproxy\|^from kproxy" python/tests/test_batch.py
ran=$(grep -oE '^Ran [0-9]+ tests?' "$tmp/unittest.log" | grep -oE '[0-9]+')
echo "python-client-test: ${ran} passed, 0 failed"
echo "python-client-test: passed in $(($(date +%s) - start))s"
