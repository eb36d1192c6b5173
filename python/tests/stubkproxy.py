"""A tiny in-process stand-in for kproxy, for the client's unit tests.

It answers POST /batch, /batch/markets and /batch/series the way
/work/shared/CONTRACT.md ("Batch", "History tier (disk)": Backfill) says
kproxy does, from data the test gives it, and records every request it gets
(headers and JSON body) so tests can check what the client sent. It listens
on 127.0.0.1 on a free port, in a thread; use it as a context manager.
GET /trade-api/v2/... answers like Kalshi (kproxy's pass-through route).

Only what the client uses is here: trades (GET /markets/trades, paginated
by an offset cursor, joined under "trades" with "pages" and "truncated" for an
item with "all_pages": true), single-market candlesticks, markets by series
and series by ticker. A ticker in ``unknown`` is Kalshi's 404.
"""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple

NOT_FOUND = {"error": {"code": "not_found", "message": "not found", "service": "kalshi"}}


class Recorded:
    def __init__(self, path: str, headers: Dict[str, str], body: Any):
        self.path, self.headers, self.body = path, headers, body


class StubKproxy:
    """Answers as kproxy would. Attributes a test may set before calling:

    trades: {market: [trade, ...]} (each trade has "created_time_ts")
    candles: {(series, market): [candle, ...]} (each has "end_period_ts")
    markets: {series: [market, ...]}; series: {series: {...}}
    max_pages: kproxy's batch.max_pages for all_pages items
    all_pages_supported: False answers a request whose item has all_pages
        with 400, as a kproxy that predates Backfill does
    stream_order: "reverse" streams item lines last-first (completion order
        differs from request order)
    drop_done: leave the final {"done": true} line out of a stream
    bad_body: tickers whose 2xx body lacks its list
    """

    def __init__(self) -> None:
        self.trades: Dict[str, List[Dict[str, Any]]] = {}
        self.candles: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
        self.markets: Dict[str, List[Dict[str, Any]]] = {}
        self.series: Dict[str, Dict[str, Any]] = {}
        self.max_pages = 50
        self.max_items = 100
        self.all_pages_supported = True
        self.stream_order = "reverse"
        self.drop_done = False
        self.bad_body: set = set()
        self.requests: List[Recorded] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                stub._serve(self)

            def do_GET(self) -> None:  # the pass-through route: one Kalshi GET
                status, body = stub._get(self.path)
                stub._json(self, status, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "StubKproxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def recorded(self) -> List[Recorded]:
        with self._lock:
            return list(self.requests)

    # --- serving --------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            return self._json(h, 400, {"error": "malformed JSON", "code": "bad_json"})
        with self._lock:
            self.requests.append(Recorded(h.path, dict(h.headers.items()), body))
        stream = "application/x-ndjson" in (h.headers.get("Accept") or "")
        if h.path == "/batch":
            return self._batch(h, body, stream)
        if h.path in ("/batch/markets", "/batch/series"):
            return self._typed(h, body, stream)
        self._json(h, 404, {"error": "no such kproxy path", "code": "not_found"})

    def _batch(self, h: BaseHTTPRequestHandler, body: Dict[str, Any], stream: bool) -> None:
        items = body.get("requests")
        if not isinstance(items, list) or not items:
            return self._json(h, 400, {"error": "requests: want a non-empty list", "code": "bad_request"})
        if len(items) > self.max_items:
            return self._json(h, 413, {"error": "too many items", "code": "too_many_items"})
        allowed = {"id", "path", "method"} | ({"all_pages"} if self.all_pages_supported else set())
        for i, it in enumerate(items):
            extra = set(it) - allowed
            if extra:
                field = sorted(extra)[0]
                return self._json(h, 400, {"error": 'json: unknown field "%s"' % field, "code": "bad_request"})
        lines = [self._item(str(it.get("id", i)), it["path"], bool(it.get("all_pages"))) for i, it in enumerate(items)]
        if stream:
            return self._stream(h, lines)
        self._json(h, 200, {"responses": lines})

    def _typed(self, h: BaseHTTPRequestHandler, body: Dict[str, Any], stream: bool) -> None:
        tickers = body.get("series_tickers") or []
        if len(tickers) > self.max_items:
            return self._json(h, 413, {"error": "too many tickers", "code": "too_many_items"})
        table = self.markets if h.path == "/batch/markets" else self.series
        lines = []
        for t in tickers:
            if t in table:
                lines.append({"id": t, "status": 200, "cache": "MISS", "body": table[t]})
            else:
                lines.append({"id": t, "status": 404, "cache": "MISS", "error": "series %s not found" % t})
        if stream:
            return self._stream(h, lines)
        key = "markets_by_series" if h.path == "/batch/markets" else "series"
        doc = {
            key: {l["id"]: l["body"] for l in lines if l["status"] == 200},
            "errors": {l["id"]: {"status": l["status"], "error": l["error"]} for l in lines if l["status"] != 200},
        }
        self._json(h, 200, doc)

    def _item(self, item_id: str, path: str, all_pages: bool) -> Dict[str, Any]:
        status, body = self._get(path)
        if status == 200 and all_pages:
            # Backfill: every page joined under the list key, with pages and truncated.
            joined, pages = list(body["trades"]), 1
            while body.get("cursor") and pages < self.max_pages:
                _, body = self._get(_with_cursor(path, body["cursor"]))
                joined.extend(body["trades"])
                pages += 1
            body = {"trades": joined, "pages": pages, "truncated": bool(body.get("cursor")), "cursor": body.get("cursor", "")}
        line: Dict[str, Any] = {"id": item_id, "status": status, "cache": "MISS", "body": body}
        if status != 200:
            line["error"] = "not found"
        elif item_id in self.bad_body:
            line["body"] = {"something": "else"}
        return line

    def _get(self, path: str) -> Tuple[int, Dict[str, Any]]:
        """One Kalshi GET: (status, body)."""
        u = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(u.query))
        parts = u.path.split("/")
        if u.path == "/trade-api/v2/markets/trades":
            t = q.get("ticker", "")
            if t not in self.trades:
                return 404, NOT_FOUND
            rows = [r for r in self.trades[t]
                    if ("min_ts" not in q or r["created_time_ts"] >= int(q["min_ts"]))
                    and ("max_ts" not in q or r["created_time_ts"] <= int(q["max_ts"]))]
            off, limit = int(q.get("cursor") or 0), int(q.get("limit") or 100)
            page = rows[off : off + limit]
            more = off + limit < len(rows)
            return 200, {"trades": page, "cursor": str(off + limit) if more else ""}
        if len(parts) == 8 and parts[:4] == ["", "trade-api", "v2", "series"] and parts[5] == "markets" and parts[7] == "candlesticks":
            s, m = urllib.parse.unquote(parts[4]), urllib.parse.unquote(parts[6])
            if (s, m) not in self.candles:
                return 404, NOT_FOUND
            lo, hi = int(q["start_ts"]), int(q["end_ts"])
            rows = [c for c in self.candles[(s, m)] if lo <= c["end_period_ts"] <= hi and c.get("period") == int(q["period_interval"])]
            return 200, {"ticker": m, "candlesticks": rows}
        return 404, NOT_FOUND

    def _stream(self, h: BaseHTTPRequestHandler, lines: List[Dict[str, Any]]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.end_headers()
        order = list(reversed(lines)) if self.stream_order == "reverse" else lines
        for l in order:
            h.wfile.write(json.dumps(l).encode() + b"\n")
            h.wfile.flush()
        if not self.drop_done:
            ok = sum(1 for l in lines if 200 <= l["status"] < 300)
            h.wfile.write(json.dumps({"done": True, "ok": ok, "failed": len(lines) - ok, "elapsed_ms": 1}).encode() + b"\n")

    def _json(self, h: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _with_cursor(path: str, cursor: str) -> str:
    u = urllib.parse.urlsplit(path)
    q = [(k, v) for k, v in urllib.parse.parse_qsl(u.query) if k != "cursor"] + [("cursor", cursor)]
    return urllib.parse.urlunsplit(("", "", u.path, urllib.parse.urlencode(q), ""))


def make_trades(ticker: str, n: int, start_ts: int = 1_700_000_000) -> List[Dict[str, Any]]:
    """n trades of ticker, one a second from start_ts, newest first as Kalshi lists them."""
    rows = [
        {"trade_id": "%s-%05d" % (ticker, i), "ticker": ticker, "count_fp": "1.00",
         "yes_price_dollars": "0.%02d" % (i % 100), "taker_side": "yes", "created_time_ts": start_ts + i}
        for i in range(n)
    ]
    return list(reversed(rows))


def make_candles(ticker: str, n: int, period: int, start_ts: int = 1_700_000_000) -> List[Dict[str, Any]]:
    """n candles of period minutes ending at start_ts + k*period*60."""
    return [
        {"end_period_ts": start_ts + (k + 1) * period * 60, "period": period,
         "price": {"close_dollars": "0.%02d" % (k % 100)}, "volume_fp": "%d.00" % k}
        for k in range(n)
    ]


__all__ = ["StubKproxy", "make_trades", "make_candles"]
