#!/usr/bin/env python3
"""batch_get_markets through kproxy, with requests (pip install requests).

The one line you change: KPROXY_URL below (or set the KPROXY_URL environment
variable) -- the address of your kproxy, e.g. http://kproxy:8080 in
deploy/docker-compose.yml or http://127.0.0.1:8080 for a sidecar in the same Pod.

Same as batch_get_markets_stdlib.py: one POST /batch/markets instead of one
GET /markets per series; prints "SERIES: N markets" per series.
"""

import os
import sys

import requests

KPROXY_URL = os.environ.get("KPROXY_URL", "http://127.0.0.1:8080")  # <- the one line you change

SERIES_TICKERS = [
    "KXEARNINGSMENTIONMETA",
    "KXEARNINGSMENTIONTSLA",
    "KXEARNINGSMENTIONNVDA",
]


def batch_get_markets(series_tickers, status=None, limit=200, all_pages=False, timeout=60, session=requests):
    """Return ({series: [market dict, ...]}, {series: {"status": N, "error": "..."}})."""
    body = {"series_tickers": list(series_tickers), "limit": limit}
    if status:
        body["status"] = status
    if all_pages:
        body["all_pages"] = True
    response = session.post(KPROXY_URL.rstrip("/") + "/batch/markets", json=body, timeout=timeout)
    if response.status_code != 200:
        # kproxy's own errors are JSON: {"error": "...", "code": "..."}
        raise SystemExit(f"kproxy answered {response.status_code}: {response.text}")
    result = response.json()
    return result.get("markets_by_series") or {}, result.get("errors") or {}


def main(argv):
    series_tickers = argv or SERIES_TICKERS
    try:
        markets_by_series, errors = batch_get_markets(series_tickers)
    except requests.ConnectionError as err:
        raise SystemExit(f"cannot reach kproxy at {KPROXY_URL}: {err}") from None
    for series in series_tickers:
        if series in markets_by_series:
            print(f"{series}: {len(markets_by_series[series])} markets")
    for series, err in errors.items():
        print(f"{series}: error {err.get('status')}: {err.get('error')}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
