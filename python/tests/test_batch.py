"""Tests of the kproxy Python client against kproxy in front of the fake Kalshi.

Run by scripts/python-client-test.sh, which starts both and sets KPROXY_URL.
The fake Kalshi (cmd/kalshi-sim) serves KXEARNINGSMENTION{META,TSLA,NVDA,...}
with 12 markets each, KXFEDDECISION with 5 and KXBIGSERIES with 450.
"""

import asyncio
import difflib
import os
import socket
import subprocess
import sys
import threading
import unittest

import kproxy
from kproxy import (
    BatchItemError,
    KproxyError,
    batch_get_events,
    batch_get_events_sync,
    batch_get_markets,
    batch_get_markets_sync,
    batch_get_series,
    batch_get_series_sync,
)

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.dirname(HERE)
EARNINGS = ["KXEARNINGSMENTIONMETA", "KXEARNINGSMENTIONTSLA", "KXEARNINGSMENTIONNVDA"]


def kproxy_url():
    url = os.environ.get("KPROXY_URL")
    if not url:
        raise RuntimeError("KPROXY_URL is not set: run scripts/python-client-test.sh")
    return url


def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    return "http://127.0.0.1:%d" % port


class BaseURLTest(unittest.TestCase):
    def test_strings(self):
        for given, want in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/trade-api/v2", "http://127.0.0.1:8080"),
            ("http://kproxy:8080/trade-api/v2/", "http://kproxy:8080"),
            ("https://gw.example/kalshi/trade-api/v2", "https://gw.example/kalshi"),
        ]:
            self.assertEqual(kproxy.base_url(given), want, given)

    def test_bad_string(self):
        with self.assertRaises(ValueError):
            kproxy.base_url("127.0.0.1:8080")

    def test_client_objects(self):
        class Cfg:
            host = "http://127.0.0.1:9999/trade-api/v2"

        class SdkClient:  # kalshi_python_sync.KalshiClient: .configuration.host
            configuration = Cfg()

        class Adapter:  # a wrapper that holds an SDK client
            _sdk_client = SdkClient()

        class Hand:  # a hand-written client
            base_url = "http://127.0.0.1:9998/trade-api/v2"

        env = os.environ.pop("KPROXY_URL", None)
        try:
            self.assertEqual(kproxy.base_url(SdkClient()), "http://127.0.0.1:9999")
            self.assertEqual(kproxy.base_url(Adapter()), "http://127.0.0.1:9999")
            self.assertEqual(kproxy.base_url(Cfg()), "http://127.0.0.1:9999")
            self.assertEqual(kproxy.base_url(Hand()), "http://127.0.0.1:9998")
            with self.assertRaises(ValueError):
                kproxy.base_url(object())
            os.environ["KPROXY_URL"] = "http://127.0.0.1:7777"
            self.assertEqual(kproxy.base_url(Adapter()), "http://127.0.0.1:7777", "KPROXY_URL wins over the client's host")
            self.assertEqual(kproxy.base_url(None), "http://127.0.0.1:7777")
        finally:
            if env is None:
                os.environ.pop("KPROXY_URL", None)
            else:
                os.environ["KPROXY_URL"] = env

    def test_client_pointing_at_kalshi_is_refused(self):
        class Cfg:
            host = "https://api.elections.kalshi.com/trade-api/v2"

        env = os.environ.pop("KPROXY_URL", None)
        try:
            with self.assertRaisesRegex(ValueError, "talks to Kalshi directly"):
                kproxy.base_url(Cfg())
        finally:
            if env is not None:
                os.environ["KPROXY_URL"] = env


class MarketsTest(unittest.TestCase):
    def test_markets_by_series(self):
        got = asyncio.run(batch_get_markets(kproxy_url(), EARNINGS))
        self.assertEqual(list(got), EARNINGS, "keys in the order given")
        for series, markets in got.items():
            self.assertEqual(len(markets), 12, series)
            for m in markets:
                self.assertIsInstance(m, dict)
                self.assertTrue(m["ticker"].startswith(series + "-"), m["ticker"])
        self.assertEqual(got.errors, {})

    def test_same_as_sync_twin_and_accepts_their_keywords(self):
        a = asyncio.run(batch_get_markets(client=kproxy_url(), series_tickers=EARNINGS[:2], status="open", limit=200))
        b = batch_get_markets_sync(kproxy_url(), EARNINGS[:2], status="open", limit=200)
        self.assertEqual(a, b)
        self.assertEqual([len(v) for v in a.values()], [12, 12])

    def test_all_pages_by_default(self):
        got = batch_get_markets_sync(kproxy_url(), ["KXBIGSERIES"], limit=200)
        tickers = [m["ticker"] for m in got["KXBIGSERIES"]]
        self.assertEqual(len(tickers), 450)
        self.assertEqual(len(set(tickers)), 450, "no market twice across pages")
        self.assertEqual(got.truncated, {})

    def test_first_page_only(self):
        got = batch_get_markets_sync(kproxy_url(), ["KXBIGSERIES"], limit=200, all_pages=False)
        self.assertEqual(len(got["KXBIGSERIES"]), 200)
        self.assertIn("KXBIGSERIES", got.truncated, "the cursor to continue from")
        self.assertTrue(got.truncated["KXBIGSERIES"])

    def test_unknown_series_does_not_fail_the_others(self):
        got = asyncio.run(batch_get_markets(kproxy_url(), ["KXEARNINGSMENTIONMETA", "KXNOSUCHSERIES"]))
        self.assertEqual(list(got), ["KXEARNINGSMENTIONMETA"])
        err = got.errors["KXNOSUCHSERIES"]
        self.assertIsInstance(err, BatchItemError)
        self.assertEqual((err.ticker, err.status), ("KXNOSUCHSERIES", 404))
        with self.assertRaises(BatchItemError):
            got.raise_for_errors()

    def test_return_exceptions(self):
        got = asyncio.run(
            batch_get_markets(kproxy_url(), ["KXNOSUCHSERIES", "KXFEDDECISION"], return_exceptions=True)
        )
        self.assertEqual(list(got), ["KXNOSUCHSERIES", "KXFEDDECISION"])
        self.assertIsInstance(got["KXNOSUCHSERIES"], BatchItemError)
        self.assertEqual(got["KXNOSUCHSERIES"].status, 404)
        self.assertEqual(len(got["KXFEDDECISION"]), 5)

    def test_more_tickers_than_one_batch_holds(self):
        # kproxy takes at most 100 tickers per request; the client splits.
        # 110 failures: all returned, one warning for the whole call.
        unknown = ["KXNONE%03d" % i for i in range(110)]
        with self.assertLogs("kproxy", "WARNING") as cm:
            got = batch_get_markets_sync(kproxy_url(), ["KXFEDDECISION"] + unknown + ["KXFEDDECISION"])
        self.assertEqual(list(got), ["KXFEDDECISION"])
        self.assertEqual(len(got.errors), 110)
        self.assertTrue(all(e.status == 404 for e in got.errors.values()))
        self.assertEqual(len(cm.records), 1, cm.output)
        self.assertTrue(cm.records[0].getMessage().startswith(
            "batch_get_markets: 110 of 111 series failed: KXNONE000 (404), "), cm.output)

    def test_whole_request_errors_raise(self):
        with self.assertRaises(KproxyError) as cm:
            batch_get_markets_sync(kproxy_url(), ["not a ticker!"])
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "bad_ticker"))
        with self.assertRaises(KproxyError) as cm:
            asyncio.run(batch_get_markets(closed_port_url(), EARNINGS))
        self.assertIsNone(cm.exception.status)
        self.assertIn("cannot reach kproxy", str(cm.exception))
        with self.assertRaises(TypeError):
            batch_get_markets_sync(kproxy_url(), "KXFEDDECISION")


class ProgressTest(unittest.TestCase):
    def test_sync_progress(self):
        events = []
        got = batch_get_markets_sync(kproxy_url(), EARNINGS + ["KXNOSUCHSERIES", "KXBIGSERIES"], progress=events.append)
        self.assertEqual(sorted(e.ticker for e in events), sorted(EARNINGS + ["KXNOSUCHSERIES", "KXBIGSERIES"]))
        self.assertEqual([e.done for e in events], [1, 2, 3, 4, 5])
        self.assertTrue(all(e.total == 5 for e in events))
        bad = [e for e in events if not e.ok]
        self.assertEqual([(e.ticker, e.status) for e in bad], [("KXNOSUCHSERIES", 404)])
        self.assertTrue(bad[0].error)
        # The streamed answer is the same answer.
        self.assertEqual(len(got["KXBIGSERIES"]), 450)
        self.assertEqual(got, batch_get_markets_sync(kproxy_url(), EARNINGS + ["KXNOSUCHSERIES", "KXBIGSERIES"]))

    def test_async_progress_runs_on_the_loop(self):
        seen = []

        async def main():
            loop_thread = threading.get_ident()

            def on_progress(ev):
                seen.append((ev.ticker, threading.get_ident() == loop_thread))

            return await batch_get_series(kproxy_url(), EARNINGS, progress=on_progress)

        got = asyncio.run(main())
        self.assertEqual(sorted(t for t, _ in seen), sorted(EARNINGS))
        self.assertTrue(all(on_loop for _, on_loop in seen), "callbacks run on the event loop's thread")
        self.assertEqual(list(got), EARNINGS)

    def test_coroutine_progress_is_awaited(self):
        seen = []

        async def on_progress(ev):
            await asyncio.sleep(0)
            seen.append(ev.ticker)

        asyncio.run(batch_get_events(kproxy_url(), ["KXFEDDECISION-26JUN30"], progress=on_progress))
        self.assertEqual(seen, ["KXFEDDECISION-26JUN30"])


class EventsSeriesTest(unittest.TestCase):
    def test_events(self):
        got = asyncio.run(batch_get_events(kproxy_url(), ["KXFEDDECISION-26JUN30", "KXNOSUCHEVENT-1"]))
        self.assertEqual(list(got), ["KXFEDDECISION-26JUN30"])
        ev = got["KXFEDDECISION-26JUN30"]
        self.assertEqual(ev["event"]["event_ticker"], "KXFEDDECISION-26JUN30")
        self.assertEqual(len(ev["markets"]), 5)
        self.assertEqual(got.errors["KXNOSUCHEVENT-1"].status, 404)
        self.assertEqual(got, batch_get_events_sync(kproxy_url(), ["KXFEDDECISION-26JUN30", "KXNOSUCHEVENT-1"]))

    def test_series_shape_is_get_series(self):
        got = batch_get_series_sync(kproxy_url(), ["KXFEDDECISION", "KXNOSUCHSERIES"], return_exceptions=True)
        self.assertEqual(got["KXFEDDECISION"]["series"]["ticker"], "KXFEDDECISION")
        self.assertIsInstance(got["KXNOSUCHSERIES"], BatchItemError)
        self.assertEqual(got, asyncio.run(batch_get_series(kproxy_url(), ["KXFEDDECISION", "KXNOSUCHSERIES"], return_exceptions=True)))

    def test_gather_in_parallel(self):
        async def main():
            return await asyncio.gather(
                batch_get_markets(kproxy_url(), EARNINGS),
                batch_get_series(kproxy_url(), EARNINGS),
                batch_get_events(kproxy_url(), [t + "-26JUN30" for t in EARNINGS], with_nested_markets=False),
            )

        markets, series, events = asyncio.run(main())
        self.assertEqual(list(markets), EARNINGS)
        self.assertEqual([s["series"]["ticker"] for s in series.values()], EARNINGS)
        self.assertEqual(len(events), 3)


class TheirExamplesTest(unittest.TestCase):
    """The team's own example scripts, with only their import changed, run as shipped."""

    EXAMPLES = os.path.join(CLIENT_DIR, "examples")
    FIXTURE_SAYS = "fomc_analysis test fixture: get_kalshi_client"

    def run_example(self, name, fomc_analysis=False):
        """Runs python/examples/NAME with the installed kproxy, from another directory.

        As shipped: KPROXY_URL only, no PYTHONPATH (the example's stand-in
        client). With fomc_analysis: the team's package (a test fixture here)
        on PYTHONPATH and the URL only in their client's KALSHI_BASE_URL.
        """
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KALSHI_BASE_URL")}
        if fomc_analysis:
            env.pop("KPROXY_URL")  # the URL must come from their client
            env["KALSHI_BASE_URL"] = kproxy_url().rstrip("/") + "/trade-api/v2"
            env["PYTHONPATH"] = os.path.join(HERE, "fixtures")
        p = subprocess.run(
            [sys.executable, os.path.join(self.EXAMPLES, name)],
            env=env, capture_output=True, text=True, timeout=120, cwd=HERE,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.FIXTURE_SAYS in p.stderr, fomc_analysis, "whose get_kalshi_client ran: " + p.stderr)
        return p.stdout

    def assert_only_imports_changed(self, name):
        with open(os.path.join(HERE, "testdata", name + ".orig")) as f:
            orig = f.read().splitlines()
        with open(os.path.join(self.EXAMPLES, name)) as f:
            text = f.read()
        # The example's docstring comes first; the code after it is theirs.
        code = text.split('"""', 2)[2].lstrip("\n").splitlines()
        changed = [l for l in difflib.unified_diff(orig, code, lineterm="", n=0)
                   if l[:1] in "+-" and not l.startswith(("+++", "---"))]
        self.assertTrue(changed, "the example must differ from theirs by its import")
        for line in changed:
            body = line[1:].strip()
            self.assertTrue(
                body.startswith(("from ", "import ", "try:", "except ModuleNotFoundError:"))
                or body in (")", "get_kalshi_client,", "batch_get_markets,", "batch_get_series,"),
                "a line other than the import changed: %r" % line,
            )
        self.assertIn("+from kproxy import batch_get_markets", "\n".join(changed))

    def test_every_example_runs_as_shipped(self):
        names = sorted(n for n in os.listdir(self.EXAMPLES) if n.endswith(".py") and not n.startswith("_"))
        self.assertGreaterEqual(len(names), 2)
        for name in names:
            with self.subTest(name):
                self.assertTrue(self.run_example(name), "an example prints what it fetched")

    def test_fetch_series_markets(self):
        self.assert_only_imports_changed("fetch_series_markets.py")
        want = "KXEARNINGSMENTIONMETA: 12 markets\nKXEARNINGSMENTIONTSLA: 12 markets\nKXEARNINGSMENTIONNVDA: 12 markets\n"
        self.assertEqual(self.run_example("fetch_series_markets.py"), want)
        self.assertEqual(self.run_example("fetch_series_markets.py", fomc_analysis=True), want)

    def test_mixed_async_operations(self):
        self.assert_only_imports_changed("mixed_async_operations.py")
        want = "Fetched 2 market batches\nFetched 2 series info\n"
        self.assertEqual(self.run_example("mixed_async_operations.py"), want)
        self.assertEqual(self.run_example("mixed_async_operations.py", fomc_analysis=True), want)


if __name__ == "__main__":
    unittest.main()
