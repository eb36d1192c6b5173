#!/usr/bin/env python3
"""batch_get_markets through kproxy, with the Python standard library only.

The one line you change: KPROXY_URL below (or set the KPROXY_URL environment
variable) -- the address of your kproxy, e.g. http://kproxy:8080 in
deploy/docker-compose.yml or http://127.0.0.1:8080 for a sidecar in the same Pod.

It mirrors the batch_get_markets() example of the async batching changelog
(one GET /markets?series_ticker=...&limit=200 per series, run concurrently),
but sends ONE request: POST /batch/markets. kproxy fetches the series
concurrently upstream, through its cache, coalescing and rate limiter, and
answers {"markets_by_series": {SERIES: [market, ...]}, "errors": {...}}.

    python3 examples/batch_get_markets_stdlib.py                  # the three series below
    python3 examples/batch_get_markets_stdlib.py KXFEDDECISION    # or name your own

Prints "SERIES: N markets" per series; exits 1 when a series failed.
"""

import json
import os
import sys
import urllib.error
import urllib.request

KPROXY_URL = os.environ.get("KPROXY_URL", "http://127.0.0.1:8080")  # <- the one line you change

SERIES_TICKERS = [
    "KXEARNINGSMENTIONMETA",
    "KXEARNINGSMENTIONTSLA",
    "KXEARNINGSMENTIONNVDA",
]


def batch_get_markets(series_tickers, status=None, limit=200, all_pages=False, timeout=60):
    """Return ({series: [market dict, ...]}, {series: {"status": N, "error": "..."}})."""
    body = {"series_tickers": list(series_tickers), "limit": limit}
    if status:
        body["status"] = status  # Kalshi's filter vocabulary: unopened|open|paused|closed|settled
    if all_pages:
        body["all_pages"] = True  # follow cursors (bounded by kproxy's batch.max_pages)
    request = urllib.request.Request(
        KPROXY_URL.rstrip("/") + "/batch/markets",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            result = json.load(response)
    except urllib.error.HTTPError as err:
        # kproxy's own errors are JSON: {"error": "...", "code": "..."}
        detail = err.read().decode("utf-8", errors="replace")
        raise SystemExit(f"kproxy answered {err.code}: {detail}") from None
    except urllib.error.URLError as err:
        raise SystemExit(f"cannot reach kproxy at {KPROXY_URL}: {err.reason}") from None
    return result.get("markets_by_series") or {}, result.get("errors") or {}


def main(argv):
    series_tickers = argv or SERIES_TICKERS
    markets_by_series, errors = batch_get_markets(series_tickers)
    for series in series_tickers:
        if series in markets_by_series:
            print(f"{series}: {len(markets_by_series[series])} markets")
    for series, err in errors.items():
        print(f"{series}: error {err.get('status')}: {err.get('error')}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
