"""End-to-end tests of batch_get_trades and batch_get_candlesticks against kproxy.

They need kproxy's Backfill (POST /batch items with "all_pages": true,
CONTRACT.md "History tier (disk)") and a kalshi-sim that serves
/markets/trades and the series candlestick route;
scripts/python-client-test.sh runs them. A kproxy that answers 400 to
all_pages makes these tests FAIL, never skip. Run it by hand with the
servers up:

    KPROXY_URL=http://127.0.0.1:PORT python3 -m unittest python/tests/test_history_e2e.py -v

Each result is checked against the same data fetched page by page through
kproxy's plain pass-through route (GET /trade-api/v2/...), the way a script
without the batch helpers would.
"""

import asyncio
import datetime
import json
import math
import os
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from kproxy import KproxyError, batch_get_candlesticks_sync, batch_get_markets_sync, batch_get_trades, batch_get_trades_sync

SERIES = "KXFEDDECISION"  # kalshi-sim: 5 markets
MAX_DIRECT_PAGES = 200


def kproxy_url():
    url = os.environ.get("KPROXY_URL")
    if not url:
        raise RuntimeError("KPROXY_URL is not set: run scripts/python-client-test.sh")
    return url.rstrip("/")


def get(path, **query):
    """(status, JSON body) of GET kproxy_url() + path?query."""
    url = kproxy_url() + path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode("utf-8", "replace")


def direct_trades(ticker, limit, **window):
    """Every trade of ticker, following Kalshi's cursor through kproxy."""
    trades, cursor = [], ""
    for _ in range(MAX_DIRECT_PAGES):
        q = dict(window, ticker=ticker, limit=limit)
        if cursor:
            q["cursor"] = cursor
        status, body = get("/trade-api/v2/markets/trades", **q)
        if status != 200:
            raise AssertionError("GET /markets/trades?ticker=%s: %s %s" % (ticker, status, body))
        trades.extend(body["trades"])
        cursor = body.get("cursor") or ""
        if not cursor:
            return trades
    raise AssertionError("%s: more than %d pages" % (ticker, MAX_DIRECT_PAGES))


def backfill(fn, *args, **kwargs):
    """Calls fn; a kproxy without Backfill (400 for all_pages) is a failure with a clear message."""
    try:
        return fn(*args, **kwargs)
    except KproxyError as e:
        if e.status == 400 and "all_pages" in str(e):
            raise AssertionError("kproxy refused \"all_pages\" on POST /batch items (%s): Backfill is not there" % e) from None
        raise


class HistoryE2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        markets = batch_get_markets_sync(kproxy_url(), [SERIES]).raise_for_errors()[SERIES]
        cls.tickers = [m["ticker"] for m in markets]
        if not cls.tickers:
            raise AssertionError("kalshi-sim lists no market of %s" % SERIES)
        # Candles exist only while a market is open: the window ends at the
        # last close (kalshi-sim's KXFEDDECISION markets close on 2026-06-30).
        closes = [datetime.datetime.fromisoformat(m["close_time"].replace("Z", "+00:00")).timestamp() for m in markets]
        cls.last_close = int(max(closes))

    def test_trades_every_page_joined(self):
        whole = {t: direct_trades(t, 1000) for t in self.tickers}
        most = max(len(v) for v in whole.values())
        self.assertGreater(most, 1, "kalshi-sim must serve more than one trade for some %s market: %s" % (SERIES, {t: len(v) for t, v in whole.items()}))
        # A page size that makes the busiest market span at least three
        # pages (well under batch.max_pages; Kalshi's limit is at most 1000).
        limit = max(1, min(1000, math.ceil(most / 3)))
        want = {t: direct_trades(t, limit) for t in self.tickers}
        events = []
        got = backfill(batch_get_trades_sync, kproxy_url(), self.tickers, limit=limit, progress=events.append)
        self.assertEqual(dict(got), want)
        self.assertEqual((got.errors, got.truncated), ({}, {}))
        self.assertEqual(sorted(e.ticker for e in events), sorted(self.tickers))
        self.assertEqual([e.done for e in events], list(range(1, len(self.tickers) + 1)))

    def test_trades_time_window_and_async_twin(self):
        window = {"min_ts": 0, "max_ts": int(time.time()) - 120}
        got = backfill(batch_get_trades_sync, kproxy_url(), self.tickers, **window)
        want = {t: direct_trades(t, 1000, **window) for t in self.tickers}
        self.assertEqual(dict(got), want)
        again = backfill(asyncio.run, batch_get_trades(kproxy_url(), self.tickers, **window))
        self.assertEqual(again, got)

    def test_candlesticks(self):
        end = min(int(time.time()), self.last_close)
        start = end - 60 * 86400
        want = {}
        for t in self.tickers:
            status, body = get("/trade-api/v2/series/%s/markets/%s/candlesticks" % (SERIES, t),
                               start_ts=start, end_ts=end, period_interval=1440)
            self.assertEqual(status, 200, "GET candlesticks of %s: %s" % (t, body))
            want[t] = body["candlesticks"]
        self.assertTrue(any(want.values()), "kalshi-sim must serve some candles for %s" % SERIES)
        got = batch_get_candlesticks_sync(kproxy_url(), {t: SERIES for t in self.tickers}, start, end, period_interval=1440)
        self.assertEqual(dict(got), want)
        pairs = batch_get_candlesticks_sync(kproxy_url(), [(SERIES, t) for t in self.tickers], start, end)
        self.assertEqual(pairs, got)


if __name__ == "__main__":
    unittest.main()
