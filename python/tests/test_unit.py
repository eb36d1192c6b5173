"""Unit tests of the kproxy client against a stand-in kproxy (stubkproxy.py).

No kproxy, no Kalshi: these run anywhere with Python 3.9+:

    cd python && python3 -m unittest discover -s tests -p 'test_unit.py' -v

(scripts/python-client-test.sh runs them too, with the installed package.)
"""

import asyncio
import inspect
import logging
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import kproxy  # noqa: E402
from kproxy import (  # noqa: E402
    BatchItemError,
    Client,
    KproxyError,
    batch_get_candlesticks,
    batch_get_candlesticks_sync,
    batch_get_markets,
    batch_get_markets_sync,
    batch_get_trades,
    batch_get_trades_sync,
)
from stubkproxy import StubKproxy, make_candles, make_trades  # noqa: E402


def no_env(*names):
    """A patch of os.environ without the named variables."""
    env = {k: v for k, v in os.environ.items() if k not in names}
    return mock.patch.dict(os.environ, env, clear=True)


class Records(logging.Handler):
    """Collects the records of the kproxy logger (assertNoLogs is 3.10+)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        logging.getLogger("kproxy").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("kproxy").removeHandler(self)


class ClientNameTest(unittest.TestCase):
    """The Kproxy-Client value, per case, without a server."""

    def name_for(self, argv0, env=None, explicit=None):
        with no_env("KPROXY_CLIENT"), mock.patch.object(sys, "argv", [argv0, "--flag"]):
            if env is not None:
                os.environ["KPROXY_CLIENT"] = env
            return kproxy._name.client_name(explicit)

    def test_cases(self):
        long = "x" * 100
        for name, argv0, env, explicit, want in [
            ("script path", "/home/ana/scripts/nvda_poller.py", None, None, "nvda_poller"),
            ("relative script", "poll.py", None, None, "poll"),
            ("no .py suffix", "/usr/local/bin/kpoll", None, None, "kpoll"),
            ("space", "/tmp/my poller.py", None, None, "my_poller"),
            ("non-ASCII", "données.py", None, None, "donn_es"),
            ("only .py is cut", "archive.tar.py", None, None, "archive.tar"),
            ("dots dashes kept", "fed-decision_v2.1.py", None, None, "fed-decision_v2.1"),
            ("64 bytes at most", "/s/%s.py" % long, None, None, "x" * 64),
            ("python -m pkg", "/src/fedwatch/__main__.py", None, None, "fedwatch"),
            ("python -c", "-c", None, None, "python"),
            ("interactive", "", None, None, "python"),
            ("nothing usable", "!!!.py", None, None, "python"),
            ("env wins over script", "/s/poll.py", "nvda poller", None, "nvda_poller"),
            ("empty env ignored", "/s/poll.py", "", None, "poll"),
            ("env cut to 64", "/s/poll.py", long, None, "x" * 64),
            ("argument wins over env", "/s/poll.py", "from-env", "from-arg", "from-arg"),
            ("argument sanitized", "/s/poll.py", None, "my name/é", "my_name__"),
        ]:
            with self.subTest(name):
                got = self.name_for(argv0, env, explicit)
                self.assertEqual(got, want)
                self.assertLessEqual(len(got.encode()), 64)

    def test_empty_argument_is_refused(self):
        for bad in ("", "   ", "///"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                Client("http://127.0.0.1:1", client_name=bad)
        with self.assertRaises(TypeError):
            Client("http://127.0.0.1:1", client_name=42)

    def test_client_object(self):
        with no_env("KPROXY_URL"):
            c = Client("http://127.0.0.1:9/trade-api/v2", client_name="a b")
            self.assertEqual((c.kproxy_url, c.client_name), ("http://127.0.0.1:9", "a_b"))
            os.environ["KPROXY_URL"] = "http://127.0.0.1:7"
            self.assertEqual(kproxy.base_url(c), "http://127.0.0.1:9", "a Client's own URL wins over KPROXY_URL")
            self.assertEqual(Client().kproxy_url, "http://127.0.0.1:7", "no URL: KPROXY_URL")


class HeaderOnTheWireTest(unittest.TestCase):
    """Every request carries Kproxy-Client; the value is the one asked for."""

    def setUp(self):
        self.stub = StubKproxy().__enter__()
        self.addCleanup(self.stub.__exit__)
        self.stub.markets = {"KXA": [{"ticker": "KXA-1"}]}

    def headers(self):
        return [r.headers.get("Kproxy-Client") for r in self.stub.recorded()]

    def test_default_is_the_script_name(self):
        with no_env("KPROXY_CLIENT"), mock.patch.object(sys, "argv", ["/opt/jobs/fed_watch.py"]):
            batch_get_markets_sync(self.stub.url, ["KXA"])
        self.assertEqual(self.headers(), ["fed_watch"])

    def test_env_and_argument(self):
        with no_env("KPROXY_CLIENT"):
            os.environ["KPROXY_CLIENT"] = "from-env"
            batch_get_markets_sync(self.stub.url, ["KXA"])
            batch_get_markets_sync(Client(self.stub.url, client_name="nvda-poller"), ["KXA"])
            batch_get_markets_sync(Client(self.stub.url), ["KXA"])
        self.assertEqual(self.headers(), ["from-env", "nvda-poller", "from-env"])

    def test_every_request_of_a_split_call(self):
        tickers = ["KXA"] + ["KXN%03d" % i for i in range(149)]  # 150: two requests
        with Records():
            asyncio.run(batch_get_markets(Client(self.stub.url, client_name="bulk"), tickers))
            batch_get_trades_sync(Client(self.stub.url, client_name="bulk"), tickers)
        self.assertEqual(self.headers(), ["bulk"] * 4)

    def test_a_real_script_sends_its_file_name(self):
        with tempfile.TemporaryDirectory() as d:
            script = os.path.join(d, "nightly backfill.py")
            with open(script, "w") as f:
                f.write("import sys, kproxy\nkproxy.batch_get_markets_sync(sys.argv[1], ['KXA'])\n")
            env = {k: v for k, v in os.environ.items() if k != "KPROXY_CLIENT"}
            env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(kproxy.__file__)), env.get("PYTHONPATH", "")])
            p = subprocess.run([sys.executable, script, self.stub.url], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.headers(), ["nightly_backfill"])


class SyncTwinsTest(unittest.TestCase):
    """Every async batch function has a _sync twin that takes the same arguments and sends the same request."""

    def test_same_signature(self):
        for name in kproxy.__all__:
            if name.startswith("batch_get_") and not name.endswith("_sync"):
                with self.subTest(name):
                    fn, twin = getattr(kproxy, name), getattr(kproxy, name + "_sync")
                    self.assertTrue(inspect.iscoroutinefunction(fn))
                    self.assertFalse(inspect.iscoroutinefunction(twin))
                    self.assertEqual(inspect.signature(twin), inspect.signature(fn))
                    self.assertEqual(twin.__name__, name + "_sync")

    def test_same_request(self):
        with StubKproxy() as stub:
            stub.markets = {"KXA": [{"ticker": "KXA-1"}]}
            got = batch_get_markets_sync(stub.url, ["KXA"], "open", 50, all_pages=False)
            want = asyncio.run(batch_get_markets(stub.url, ["KXA"], "open", 50, all_pages=False))
            sent = [r.body for r in stub.recorded()]
        self.assertEqual(got, want)
        self.assertEqual(len(sent), 2)
        self.assertEqual(sent[0], sent[1], "the twin sends what the async function sends")
        self.assertEqual((sent[0]["status"], sent[0]["limit"], sent[0]["all_pages"]), ("open", 50, False))
        with self.assertRaises(TypeError):
            batch_get_markets_sync(stub.url, ["KXA"], "open", 50, False)  # all_pages is keyword-only


class FailureSummaryTest(unittest.TestCase):
    """Failed tickers: returned, and at most one warning for the whole call."""

    def setUp(self):
        self.stub = StubKproxy().__enter__()
        self.addCleanup(self.stub.__exit__)
        self.stub.markets = {"KXA": [{"ticker": "KXA-1"}], "KXB": [{"ticker": "KXB-1"}]}

    def test_150_unknown_series_one_record(self):
        unknown = ["KXNONE%03d" % i for i in range(150)]
        with self.assertLogs("kproxy", "WARNING") as cm:
            got = batch_get_markets_sync(self.stub.url, unknown)
        self.assertEqual(len(cm.records), 1, cm.output)
        self.assertEqual(len(self.stub.recorded()), 2, "150 tickers are two requests: still one summary")
        self.assertEqual(dict(got), {})
        self.assertEqual(list(got.errors), unknown, "every failure is returned, in the order given")
        self.assertEqual(
            cm.records[0].getMessage(),
            "batch_get_markets: 150 of 150 series failed: KXNONE000 (404), KXNONE001 (404), KXNONE002 (404), "
            "KXNONE003 (404), KXNONE004 (404), ... (first 5)",
        )

    def test_few_failures_are_all_named(self):
        tickers = ["KXA", "KXNO1", "KXB", "KXNO2", "KXNO3"]
        with self.assertLogs("kproxy", "WARNING") as cm:
            got = asyncio.run(batch_get_markets(self.stub.url, tickers, progress=lambda ev: None))
        self.assertEqual(list(got), ["KXA", "KXB"])
        self.assertEqual(
            [r.getMessage() for r in cm.records],
            ["batch_get_markets: 3 of 5 series failed: KXNO1 (404), KXNO2 (404), KXNO3 (404)"],
        )

    def test_no_failure_no_record(self):
        with Records() as rec:
            batch_get_markets_sync(self.stub.url, ["KXA", "KXB"])
        self.assertEqual(rec.records, [])

    def test_nothing_printed_but_the_summary(self):
        # A script with no logging set up: Python's last-resort handler
        # prints the one warning; the client itself prints nothing.
        code = "import sys, kproxy\nkproxy.batch_get_markets_sync(sys.argv[1], ['KXNO%03d' % i for i in range(150)])\n"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(kproxy.__file__)), env.get("PYTHONPATH", "")])
        p = subprocess.run([sys.executable, "-c", code, self.stub.url], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertTrue(lines[0].startswith("batch_get_markets: 150 of 150 series failed: KXNO000 (404)"), lines[0])


T0 = 1_700_000_000


class TradesTest(unittest.TestCase):
    def setUp(self):
        self.stub = StubKproxy().__enter__()
        self.addCleanup(self.stub.__exit__)
        self.stub.trades = {
            "KXA-26JUN30-T1": make_trades("KXA-26JUN30-T1", 2500, T0),
            "KXB-26JUN30-T2": make_trades("KXB-26JUN30-T2", 7, T0),
        }

    def test_every_page_joined(self):
        got = batch_get_trades_sync(self.stub.url, ["KXA-26JUN30-T1", "KXB-26JUN30-T2"])
        self.assertEqual(list(got), ["KXA-26JUN30-T1", "KXB-26JUN30-T2"])
        self.assertEqual(got["KXA-26JUN30-T1"], self.stub.trades["KXA-26JUN30-T1"], "2500 trades, 3 pages, in order")
        self.assertEqual(len(got["KXB-26JUN30-T2"]), 7)
        self.assertEqual((got.errors, got.truncated), ({}, {}))
        [req] = self.stub.recorded()
        self.assertEqual(req.path, "/batch")
        self.assertEqual(req.body, {"requests": [
            {"id": "KXA-26JUN30-T1", "path": "/trade-api/v2/markets/trades?ticker=KXA-26JUN30-T1&limit=1000", "all_pages": True},
            {"id": "KXB-26JUN30-T2", "path": "/trade-api/v2/markets/trades?ticker=KXB-26JUN30-T2&limit=1000", "all_pages": True},
        ]})

    def test_time_window_and_page_size(self):
        got = asyncio.run(batch_get_trades(self.stub.url, ["KXA-26JUN30-T1"], min_ts=T0 + 100, max_ts=T0 + 349, limit=50))
        ts = sorted(t["created_time_ts"] for t in got["KXA-26JUN30-T1"])
        self.assertEqual(ts, list(range(T0 + 100, T0 + 350)))
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.stub.recorded()[0].body["requests"][0]["path"]).query)
        self.assertEqual(q, {"ticker": ["KXA-26JUN30-T1"], "limit": ["50"], "min_ts": [str(T0 + 100)], "max_ts": [str(T0 + 349)]})

    def test_truncated_by_max_pages(self):
        self.stub.max_pages = 2
        got = batch_get_trades_sync(self.stub.url, ["KXA-26JUN30-T1", "KXB-26JUN30-T2"])
        self.assertEqual(len(got["KXA-26JUN30-T1"]), 2000)
        self.assertEqual(got.truncated, {"KXA-26JUN30-T1": "2000"})

    def test_first_page_only(self):
        got = batch_get_trades_sync(self.stub.url, ["KXA-26JUN30-T1"], limit=1000, all_pages=False)
        self.assertEqual(len(got["KXA-26JUN30-T1"]), 1000)
        self.assertEqual(got.truncated, {"KXA-26JUN30-T1": "1000"}, "Kalshi's cursor to continue from")
        self.assertNotIn("all_pages", self.stub.recorded()[0].body["requests"][0])

    def test_errors_progress_and_twins(self):
        tickers = ["KXA-26JUN30-T1", "KXNOPE-1", "KXB-26JUN30-T2", "KXA-26JUN30-T1"]
        events = []
        with self.assertLogs("kproxy", "WARNING") as cm:
            got = batch_get_trades_sync(self.stub.url, tickers, progress=events.append)
        self.assertEqual(list(got), ["KXA-26JUN30-T1", "KXB-26JUN30-T2"])
        self.assertEqual((got.errors["KXNOPE-1"].status, len(got.errors)), (404, 1))
        self.assertEqual([r.getMessage() for r in cm.records], ["batch_get_trades: 1 of 3 markets failed: KXNOPE-1 (404)"])
        # Streamed last-first: events in arrival order, counted 1..3 of 3.
        self.assertEqual([(e.ticker, e.ok, e.done, e.total) for e in events],
                         [("KXB-26JUN30-T2", True, 1, 3), ("KXNOPE-1", False, 2, 3), ("KXA-26JUN30-T1", True, 3, 3)])
        self.assertEqual(self.stub.recorded()[0].headers.get("Accept"), "application/x-ndjson")
        with self.assertLogs("kproxy", "WARNING"):
            plain = batch_get_trades_sync(self.stub.url, tickers, return_exceptions=True)
            seen = []

            async def main():
                async def on_progress(ev):
                    await asyncio.sleep(0)
                    seen.append(ev.ticker)

                return await batch_get_trades(self.stub.url, tickers, progress=on_progress, return_exceptions=True)

            streamed = asyncio.run(main())
        self.assertEqual(plain, streamed, "the streamed answer is the same answer")
        self.assertIsInstance(plain["KXNOPE-1"], BatchItemError)
        self.assertEqual(sorted(seen), sorted(set(tickers)))

    def test_more_than_one_batch(self):
        tickers = ["KXB-26JUN30-T2"] + ["KXN-%03d" % i for i in range(120)]
        with Records() as rec:
            got = batch_get_trades_sync(self.stub.url, tickers)
        self.assertEqual([len(r.body["requests"]) for r in self.stub.recorded()], [100, 21])
        self.assertEqual((list(got), len(got.errors), len(rec.records)), (["KXB-26JUN30-T2"], 120, 1))

    def test_server_without_backfill_fails_the_call(self):
        self.stub.all_pages_supported = False
        with self.assertRaises(KproxyError) as cm:
            batch_get_trades_sync(self.stub.url, ["KXB-26JUN30-T2"])
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("all_pages", str(cm.exception))

    def test_bad_arguments(self):
        for kwargs, err in [
            ({"limit": 0}, ValueError), ({"limit": 1001}, ValueError), ({"limit": True}, ValueError),
            ({"min_ts": "1700000000"}, TypeError), ({"max_ts": -1}, ValueError), ({"min_ts": 1.5}, TypeError),
        ]:
            with self.subTest(**kwargs), self.assertRaises(err):
                batch_get_trades_sync(self.stub.url, ["KXB-26JUN30-T2"], **kwargs)
        with self.assertRaises(TypeError):
            batch_get_trades_sync(self.stub.url, "KXB-26JUN30-T2")
        self.assertEqual(self.stub.recorded(), [], "nothing sent")

    def test_answer_without_its_list_is_an_item_error(self):
        self.stub.bad_body = {"KXB-26JUN30-T2"}
        with self.assertLogs("kproxy", "WARNING"):
            got = batch_get_trades_sync(self.stub.url, ["KXA-26JUN30-T1", "KXB-26JUN30-T2"])
        self.assertEqual(list(got), ["KXA-26JUN30-T1"])
        err = got.errors["KXB-26JUN30-T2"]
        self.assertEqual((err.status, err.code), (200, "bad_answer"))

    def test_stream_cut_short_raises(self):
        self.stub.drop_done = True
        with self.assertRaisesRegex(KproxyError, "ended the progress stream early"):
            batch_get_trades_sync(self.stub.url, ["KXB-26JUN30-T2"], progress=lambda ev: None)


class CandlesticksTest(unittest.TestCase):
    def setUp(self):
        self.stub = StubKproxy().__enter__()
        self.addCleanup(self.stub.__exit__)
        self.stub.candles = {
            ("KXFED", "KXFED-26JUN-T4.50"): make_candles("KXFED-26JUN-T4.50", 30, 1440, T0) + make_candles("x", 5, 60, T0),
            ("KXCPI", "KXCPI-26MAY-T3.0"): make_candles("KXCPI-26MAY-T3.0", 10, 1440, T0),
        }

    def test_by_dict_and_by_pairs(self):
        end = T0 + 10 * 86400
        by_dict = batch_get_candlesticks_sync(
            self.stub.url, {"KXFED-26JUN-T4.50": "KXFED", "KXCPI-26MAY-T3.0": "KXCPI"}, T0, end)
        by_pairs = asyncio.run(batch_get_candlesticks(
            self.stub.url, [("KXFED", "KXFED-26JUN-T4.50"), ("KXCPI", "KXCPI-26MAY-T3.0")], T0, end, period_interval=1440))
        self.assertEqual(by_dict, by_pairs)
        self.assertEqual(list(by_dict), ["KXFED-26JUN-T4.50", "KXCPI-26MAY-T3.0"])
        self.assertEqual([len(v) for v in by_dict.values()], [10, 10])
        self.assertEqual(by_dict["KXFED-26JUN-T4.50"], self.stub.candles[("KXFED", "KXFED-26JUN-T4.50")][:10])
        first, second = self.stub.recorded()
        self.assertEqual(first.body, second.body, "the same request either way")
        self.assertEqual(first.body["requests"][0], {
            "id": "KXFED-26JUN-T4.50",
            "path": "/trade-api/v2/series/KXFED/markets/KXFED-26JUN-T4.50/candlesticks?start_ts=%d&end_ts=%d&period_interval=1440" % (T0, end),
        })

    def test_period_and_errors(self):
        events = []
        with self.assertLogs("kproxy", "WARNING") as cm:
            got = batch_get_candlesticks_sync(
                self.stub.url, [("KXFED", "KXFED-26JUN-T4.50"), ("KXFED", "KXFED-NOPE")], T0, T0 + 10**6,
                period_interval=60, progress=events.append)
        self.assertEqual(len(got["KXFED-26JUN-T4.50"]), 5)
        self.assertEqual(got.errors["KXFED-NOPE"].status, 404)
        self.assertEqual(len(cm.records), 1)
        self.assertEqual(sorted((e.ticker, e.ok) for e in events), [("KXFED-26JUN-T4.50", True), ("KXFED-NOPE", False)])

    def test_tickers_are_one_path_segment(self):
        with Records():
            batch_get_candlesticks_sync(self.stub.url, {"A/B?x": "S S"}, T0, T0 + 1)
        path = self.stub.recorded()[0].body["requests"][0]["path"]
        self.assertTrue(path.startswith("/trade-api/v2/series/S%20S/markets/A%2FB%3Fx/candlesticks?"), path)

    def test_bad_arguments(self):
        for args, kwargs, err in [
            (({"M": "S"}, T0, T0 + 1), {"period_interval": 5}, ValueError),
            (({"M": "S"}, T0, T0 + 1), {"period_interval": True}, ValueError),
            (({"M": "S"}, None, T0), {}, TypeError),
            (("KXFED-26JUN-T4.50", T0, T0 + 1), {}, TypeError),
            (([("S", "M", "x")], T0, T0 + 1), {}, TypeError),
            (([("S1", "M"), ("S2", "M")], T0, T0 + 1), {}, ValueError),
        ]:
            with self.subTest(args=args, kwargs=kwargs), self.assertRaises(err):
                batch_get_candlesticks_sync(self.stub.url, *args, **kwargs)
        self.assertEqual(self.stub.recorded(), [], "nothing sent")


if __name__ == "__main__":
    unittest.main()
