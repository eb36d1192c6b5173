"""The batch functions: one POST to kproxy's /batch endpoints per call.

Every function here is safe to call from many threads or tasks at once: no
state is shared between calls (each call opens its own HTTP connection).
Every request carries the ``Kproxy-Client`` header (see :mod:`._name`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _name

__all__ = [
    "BatchItemError",
    "BatchResult",
    "Client",
    "DEFAULT_URL",
    "KproxyError",
    "MAX_ITEMS",
    "PERIOD_INTERVALS",
    "ProgressEvent",
    "base_url",
    "batch_get_candlesticks",
    "batch_get_candlesticks_sync",
    "batch_get_events",
    "batch_get_events_sync",
    "batch_get_markets",
    "batch_get_markets_sync",
    "batch_get_series",
    "batch_get_series_sync",
    "batch_get_trades",
    "batch_get_trades_sync",
]

log = logging.getLogger("kproxy")

#: Where kproxy is when neither an argument nor KPROXY_URL says otherwise.
DEFAULT_URL = "http://127.0.0.1:8080"

#: kproxy's default batch.max_items: longer ticker lists are sent in chunks.
MAX_ITEMS = 100

_API_PREFIX = "/trade-api/v2"


class KproxyError(Exception):
    """A whole batch call failed: kproxy unreachable, or it refused the request.

    ``status`` is the HTTP status (None when kproxy could not be reached),
    ``code`` kproxy's machine-readable error code (e.g. ``"too_many_items"``,
    ``"bad_ticker"``), ``message`` its message.
    """

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class BatchItemError(KproxyError):
    """One ticker of a batch failed; the others are unaffected.

    ``ticker`` is the ticker, ``status`` the status Kalshi (or kproxy) gave it
    (404 for a series or event that does not exist, 429, 503, ...).
    """

    def __init__(self, ticker: str, status: Optional[int], message: str, code: Optional[str] = None):
        super().__init__(f"{ticker}: {status} {message}", status=status, code=code)
        self.ticker = ticker
        self.message = message

    def __repr__(self) -> str:
        return f"BatchItemError(ticker={self.ticker!r}, status={self.status!r}, message={self.message!r})"

    def _key(self) -> tuple:
        return (self.ticker, self.status, self.message, self.code)

    def __eq__(self, other: object) -> bool:
        # Two answers for the same ticker compare equal when they failed alike.
        if not isinstance(other, BatchItemError):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class BatchResult(dict):
    """The answer of a batch call: a plain ``dict`` of ticker -> result.

    Keys are in the order the tickers were given. A ticker that failed is left
    out (or, with ``return_exceptions=True``, maps to its
    :class:`BatchItemError`) and is listed in ``errors``, in the order the
    tickers were given. ``truncated`` maps a ticker whose listing (markets,
    trades) is incomplete (kproxy's ``batch.max_pages`` reached, or
    ``all_pages=False``) to the cursor to continue from (``""`` when kproxy
    gave none).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.errors: Dict[str, BatchItemError] = {}
        self.truncated: Dict[str, str] = {}

    def raise_for_errors(self) -> "BatchResult":
        """Raise the first ticker's :class:`BatchItemError`, if any; else return self."""
        for err in self.errors.values():
            raise err
        return self


@dataclass(frozen=True)
class ProgressEvent:
    """One ticker finished (passed to the ``progress`` callback).

    ``done`` of ``total`` tickers have finished so far; ``ok`` is False when
    this one failed (``status`` and ``error`` then say why). ``cache`` is
    kproxy's cache outcome for it (``HIT``, ``MISS``, ``STALE``) when known.
    """

    ticker: str
    status: int
    ok: bool
    done: int
    total: int
    cache: Optional[str] = None
    error: Optional[str] = None


Progress = Callable[[ProgressEvent], Any]

# Attributes that hold a base URL on common client objects: ours, the Kalshi
# SDKs' Configuration (host), hand-written clients (base_url, api_base, BASE).
_URL_ATTRS = ("kproxy_url", "base_url", "host", "api_base", "base", "BASE", "url")
# Attributes that hold an inner object that may carry it: the SDK's
# KalshiClient has .configuration; adapters wrap an SDK client.
_HOLDER_ATTRS = ("configuration", "config", "_config", "api_client", "_sdk_client", "sdk_client", "client", "_client")


def _url_of(obj: Any, depth: int = 0) -> Optional[str]:
    for name in _URL_ATTRS:
        v = getattr(obj, name, None)
        if isinstance(v, str) and v.startswith(("http://", "https://")):
            return v
    if depth < 3:
        for name in _HOLDER_ATTRS:
            inner = getattr(obj, name, None)
            if inner is not None and inner is not obj and not isinstance(inner, (str, bytes, int, float)):
                v = _url_of(inner, depth + 1)
                if v:
                    return v
    return None


def _is_kalshi(host: str) -> bool:
    host = host.lower()
    return host in ("kalshi.com", "kalshi.co") or host.endswith((".kalshi.com", ".kalshi.co"))


def base_url(client_or_url: Any = None) -> str:
    """Return kproxy's base URL (scheme://host[:port], no trailing slash).

    ``client_or_url`` is one of:

    - a :class:`Client`: its URL;
    - a URL string: ``"http://127.0.0.1:8080"`` or
      ``"http://127.0.0.1:8080/trade-api/v2"`` (the base URL your Kalshi
      client uses when it talks through kproxy);
    - ``None``: the ``KPROXY_URL`` environment variable, else
      ``http://127.0.0.1:8080``;
    - a client object (a Kalshi SDK ``KalshiClient``, its ``Configuration``,
      or your own wrapper around one): ``KPROXY_URL`` when set, else the URL
      found on the object (``.host``, ``.base_url``, ``.configuration.host``,
      ...), which must point at kproxy rather than at Kalshi.

    Raises ValueError when no kproxy URL can be derived.
    """
    if client_or_url is None:
        url = os.environ.get("KPROXY_URL") or DEFAULT_URL
    elif isinstance(client_or_url, Client):
        return client_or_url.kproxy_url
    elif isinstance(client_or_url, str):
        url = client_or_url
    else:
        url = os.environ.get("KPROXY_URL") or _url_of(client_or_url)
        if not url:
            raise ValueError(
                f"cannot find a base URL on {type(client_or_url).__name__} "
                "(looked for .host, .base_url, .configuration.host and the like): "
                "pass kproxy's URL as a string or set KPROXY_URL"
            )
        if _is_kalshi(urllib.parse.urlsplit(url).hostname or ""):
            raise ValueError(
                f"the client talks to Kalshi directly ({url}), not through kproxy: point it at kproxy "
                "(e.g. KALSHI_BASE_URL=http://127.0.0.1:8080/trade-api/v2) or set KPROXY_URL"
            )
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"kproxy URL {url!r}: want http://HOST:PORT")
    path = parts.path.rstrip("/")
    i = path.find(_API_PREFIX)
    if i >= 0 and path[i:] == _API_PREFIX:
        path = path[:i]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class Client:
    """Where kproxy is and the name this script goes by there.

    Pass one wherever a batch function takes ``client``::

        kp = kproxy.Client("http://127.0.0.1:8080", client_name="nvda-poller")
        markets = await batch_get_markets(kp, ["KXFEDDECISION"])

    ``url`` is kproxy's address (as for :func:`base_url`; ``None``:
    ``KPROXY_URL``, else ``http://127.0.0.1:8080``), read once here.
    ``client_name`` is sent as the ``Kproxy-Client`` header, which kproxy
    uses to share its upstream budget fairly and to name the client on its
    status page (never forwarded to Kalshi); it is cut to 64 bytes of
    ``[A-Za-z0-9._-]`` (other characters become ``_``). Without it the header
    is ``KPROXY_CLIENT``, else the script's name (see
    :func:`default_client_name`), as for any other ``client``.

    A Client holds no connection and no other state: share one freely
    between threads and tasks.
    """

    def __init__(self, url: Optional[str] = None, *, client_name: Optional[str] = None):
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a string, not {type(url).__name__}")
        self.kproxy_url: str = base_url(url)
        self.client_name: Optional[str] = None if client_name is None else _name.client_name(client_name)

    def __repr__(self) -> str:
        return f"Client({self.kproxy_url!r}, client_name={self.client_name!r})"


def _target(client_or_url: Any) -> Tuple[str, str]:
    """kproxy's base URL and the Kproxy-Client value for one call."""
    explicit = client_or_url.client_name if isinstance(client_or_url, Client) else None
    return base_url(client_or_url), _name.client_name(explicit)


def _unique(tickers: Iterable[str], what: str) -> List[str]:
    if isinstance(tickers, (str, bytes)):
        raise TypeError(f"{what} must be a list of tickers, not one string")
    out: List[str] = []
    seen = set()
    for t in tickers:
        if not isinstance(t, str):
            raise TypeError(f"{what}: {t!r} is not a string")
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _error_of(status: Optional[int], raw: bytes, fallback: str) -> KproxyError:
    message, code = fallback, None
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict):
            err = doc.get("error")
            if isinstance(err, dict):  # Kalshi's shape, passed through
                message, code = err.get("message") or message, err.get("code")
            elif err:
                message, code = str(err), doc.get("code")
    except ValueError:
        if raw:
            message = raw[:200].decode("utf-8", "replace")
    return KproxyError(f"kproxy answered {status}: {message}" if status else message, status=status, code=code)


class _BadBody(Exception):
    """A 2xx item whose body is not the shape the function returns."""


class _Plan:
    """What one batch function sends and how it reads the answer.

    ``ids`` are the tickers, unique, in the order given; each request carries
    at most MAX_ITEMS of them. Every answer, streamed or not, is read as item
    lines: ``{"id", "status", "body" | "error", "code", "next_cursor"}``.
    """

    fn = ""  # the public function, named in the summary log line
    noun = ""  # what an id is, plural ("series", "events", "markets")
    endpoint = ""  # kproxy's path

    def __init__(self, ids: List[str]):
        self.ids = ids

    def request(self, ids: List[str]) -> Dict[str, Any]:
        raise NotImplementedError

    def lines(self, doc: Any) -> Iterator[Dict[str, Any]]:
        """The item lines of a non-streamed answer."""
        raise NotImplementedError

    def value(self, line: Dict[str, Any]) -> Any:
        """The result for a 2xx item line; raises _BadBody."""
        raise NotImplementedError

    def cursor(self, line: Dict[str, Any]) -> Optional[str]:
        """None when the item is complete, else the cursor to continue from ("" if unknown)."""
        return line.get("next_cursor") or None


class _TypedPlan(_Plan):
    """POST /batch/markets, /batch/events, /batch/series."""

    def __init__(self, fn: str, noun: str, endpoint: str, list_field: str, result_field: str,
                 ids: List[str], extra: Dict[str, Any], wrap: Optional[str] = None):
        super().__init__(ids)
        self.fn, self.noun, self.endpoint = fn, noun, endpoint
        self.list_field, self.result_field = list_field, result_field
        self.extra, self.wrap = extra, wrap

    def request(self, ids: List[str]) -> Dict[str, Any]:
        body = dict(self.extra)
        body[self.list_field] = ids
        return body

    def lines(self, doc: Any) -> Iterator[Dict[str, Any]]:
        if not isinstance(doc, dict):
            raise KproxyError(f"kproxy's answer to {self.endpoint} is not a JSON object")
        truncated = doc.get("truncated") or {}
        for t, v in (doc.get(self.result_field) or {}).items():
            yield {"id": t, "status": 200, "body": v, "next_cursor": truncated.get(t)}
        for t, e in (doc.get("errors") or {}).items():
            e = e if isinstance(e, dict) else {}
            yield {"id": t, "status": e.get("status"), "error": e.get("error"), "code": e.get("code")}

    def value(self, line: Dict[str, Any]) -> Any:
        body = line.get("body")
        return {self.wrap: body} if self.wrap else body


class _GenericPlan(_Plan):
    """POST /batch: one GET per ticker; a ticker's result is the list under
    list_key in its item's body (Kalshi's page, or with all_pages kproxy's
    join of every page)."""

    endpoint = "/batch"

    def __init__(self, fn: str, noun: str, paths: Dict[str, str], list_key: str, all_pages: bool):
        super().__init__(list(paths))
        self.fn, self.noun = fn, noun
        self.paths, self.list_key, self.all_pages = paths, list_key, all_pages

    def request(self, ids: List[str]) -> Dict[str, Any]:
        items = []
        for t in ids:
            item: Dict[str, Any] = {"id": t, "path": self.paths[t]}
            if self.all_pages:
                item["all_pages"] = True
            items.append(item)
        return {"requests": items}

    def lines(self, doc: Any) -> Iterator[Dict[str, Any]]:
        responses = doc.get("responses") if isinstance(doc, dict) else None
        if not isinstance(responses, list):
            raise KproxyError("kproxy's answer to /batch has no \"responses\" list")
        return (r for r in responses if isinstance(r, dict))

    def value(self, line: Dict[str, Any]) -> Any:
        body = line.get("body")
        got = body.get(self.list_key) if isinstance(body, dict) else None
        if not isinstance(got, list):
            raise _BadBody(f"the answer has no {self.list_key!r} list")
        return got

    def cursor(self, line: Dict[str, Any]) -> Optional[str]:
        body = line.get("body")
        if not isinstance(body, dict):
            return None
        if self.all_pages:
            # Contract "Backfill": the joined body says whether max_pages cut it short.
            t = body.get("truncated")
            if not t:
                return None
            if isinstance(t, str):
                return t
            return line.get("next_cursor") or body.get("cursor") or ""
        return body.get("cursor") or None  # one Kalshi page: its cursor


def _post(base: str, name: str, plan: _Plan, ids: List[str], timeout: float, stream: bool) -> Iterator[Dict[str, Any]]:
    """Send one request for ids and yield kproxy's item lines.

    With stream, the answer is NDJSON (Accept: application/x-ndjson) and each
    line is yielded as it arrives; else it is one JSON document.
    """
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/x-ndjson" if stream else "application/json",
        _name.CLIENT_HEADER: name,
    }
    data = json.dumps(plan.request(ids)).encode("utf-8")
    req = urllib.request.Request(base + plan.endpoint, data=data, headers=headers, method="POST")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        with e:
            raise _error_of(e.code, e.read(), e.reason or "error") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise KproxyError(f"cannot reach kproxy at {base}: {reason}") from None
    with resp:
        if not stream:
            try:
                doc = json.load(resp)
            except ValueError as e:
                raise KproxyError(f"kproxy at {base} sent a body that is not JSON: {e}") from None
            yield from plan.lines(doc)
            return
        for raw in resp:
            raw = raw.strip()
            if not raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError as e:
                raise KproxyError(f"kproxy at {base} sent a progress line that is not JSON: {e}") from None
            if not isinstance(line, dict):
                raise KproxyError(f"kproxy at {base} sent a progress line that is not an object")
            if line.get("done"):
                return
            yield line
        raise KproxyError(f"kproxy at {base} ended the progress stream early")


#: How many failed tickers the summary log line names.
SUMMARY_NAMES = 5


def _summary(plan: _Plan, errors: Dict[str, BatchItemError]) -> None:
    """Log one warning for all of a call's failed tickers (none when all succeeded)."""
    if not errors:
        return
    shown = list(errors.values())[:SUMMARY_NAMES]
    names = ", ".join(f"{e.ticker} ({e.status if e.status is not None else 'no answer'})" for e in shown)
    if len(errors) > SUMMARY_NAMES:
        names += f", ... (first {SUMMARY_NAMES})"
    log.warning("%s: %d of %d %s failed: %s", plan.fn, len(errors), len(plan.ids), plan.noun, names)


def _run(
    client_or_url: Any,
    plan: _Plan,
    return_exceptions: bool,
    timeout: float,
    on_event: Optional[Callable[[ProgressEvent], None]],
) -> BatchResult:
    """Run a plan, MAX_ITEMS tickers per request, one request after another."""
    base, name = _target(client_or_url)
    found: Dict[str, Any] = {}
    errors: Dict[str, BatchItemError] = {}
    out = BatchResult()
    done = 0
    for i in range(0, len(plan.ids), MAX_ITEMS):
        for line in _post(base, name, plan, plan.ids[i : i + MAX_ITEMS], timeout, on_event is not None):
            t = str(line.get("id", ""))
            status = line.get("status")
            status = status if isinstance(status, int) else None
            if status is not None and 200 <= status < 300:
                try:
                    found[t] = plan.value(line)
                    cursor = plan.cursor(line)
                    if cursor is not None:
                        out.truncated[t] = cursor
                except _BadBody as e:
                    errors[t] = BatchItemError(t, status, str(e), "bad_answer")
            else:
                errors[t] = BatchItemError(t, status, line.get("error") or "", line.get("code"))
            if on_event is not None:
                done += 1
                err = errors.get(t)
                on_event(ProgressEvent(
                    ticker=t, status=status or 0, ok=err is None, done=done, total=len(plan.ids),
                    cache=line.get("cache"), error=err.message if err else None,
                ))
    for t in plan.ids:
        if t in found and t not in errors:
            out[t] = found[t]
            continue
        if t not in errors:  # kproxy promises every ticker is in its answer
            errors[t] = BatchItemError(t, None, "missing from kproxy's answer")
        out.errors[t] = errors[t]
        if return_exceptions:
            out[t] = errors[t]
    _summary(plan, out.errors)
    return out


async def _run_async(client_or_url: Any, plan: _Plan, return_exceptions: bool, timeout: float,
                     progress: Optional[Progress]) -> BatchResult:
    # The blocking HTTP call runs in a worker thread; progress callbacks run
    # on the event loop, in arrival order (a coroutine callback is awaited
    # before the call returns).
    loop = asyncio.get_running_loop()
    on_event = None
    pending: List[Any] = []
    if progress is not None:

        def deliver(ev: ProgressEvent) -> None:
            r = progress(ev)
            if inspect.isawaitable(r):
                pending.append(asyncio.ensure_future(r))

        def on_event(ev: ProgressEvent) -> None:
            loop.call_soon_threadsafe(deliver, ev)

    result = await loop.run_in_executor(None, lambda: _run(client_or_url, plan, return_exceptions, timeout, on_event))
    # The worker scheduled every deliver() before the executor future's
    # completion, so the loop has run them all by the time we resume.
    if pending:
        await asyncio.gather(*pending)
    return result


# --- the plans of the public functions ---------------------------------------


def _markets_plan(series_tickers: List[str], status: Optional[str], limit: int, all_pages: bool) -> _Plan:
    extra: Dict[str, Any] = {"limit": limit, "all_pages": bool(all_pages)}
    if status:
        extra["status"] = status
    ids = _unique(series_tickers, "series_tickers")
    return _TypedPlan("batch_get_markets", "series", "/batch/markets", "series_tickers", "markets_by_series", ids, extra)


def _events_plan(event_tickers: List[str], with_nested_markets: bool) -> _Plan:
    ids = _unique(event_tickers, "event_tickers")
    extra = {"with_nested_markets": bool(with_nested_markets)}
    return _TypedPlan("batch_get_events", "events", "/batch/events", "event_tickers", "events", ids, extra)


def _series_plan(series_tickers: List[str]) -> _Plan:
    # Series come back as {"series": {...}}: what the SDK's get_series() answers.
    ids = _unique(series_tickers, "series_tickers")
    return _TypedPlan("batch_get_series", "series", "/batch/series", "series_tickers", "series", ids, {}, wrap="series")


def _ts(name: str, v: Any, required: bool = False) -> Optional[int]:
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be Unix seconds as an int, not {v!r}")
    if v < 0:
        raise ValueError(f"{name} {v}: want Unix seconds, not a negative number")
    return v


def _trades_plan(tickers: List[str], min_ts: Optional[int], max_ts: Optional[int], limit: int, all_pages: bool) -> _Plan:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValueError(f"limit {limit!r}: want 1 to 1000 trades per page")
    query: List[Tuple[str, Any]] = [("limit", limit)]
    for name, v in (("min_ts", _ts("min_ts", min_ts)), ("max_ts", _ts("max_ts", max_ts))):
        if v is not None:
            query.append((name, v))
    paths = {
        t: f"{_API_PREFIX}/markets/trades?" + urllib.parse.urlencode([("ticker", t)] + query)
        for t in _unique(tickers, "tickers")
    }
    return _GenericPlan("batch_get_trades", "markets", paths, "trades", bool(all_pages))


#: Candle widths Kalshi serves, in minutes.
PERIOD_INTERVALS = (1, 60, 1440)

Markets = Union[Mapping[str, str], Iterable[Tuple[str, str]]]


def _series_by_market(markets: Markets) -> Dict[str, str]:
    if isinstance(markets, (str, bytes)):
        raise TypeError("markets must be {market_ticker: series_ticker} or [(series_ticker, market_ticker), ...]")
    pairs = ((s, m) for m, s in markets.items()) if isinstance(markets, Mapping) else markets
    out: Dict[str, str] = {}
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise TypeError(f"markets: {pair!r} is not a (series_ticker, market_ticker) pair of strings")
        series, market = pair
        if out.setdefault(market, series) != series:
            raise ValueError(f"markets: {market} is given with two series, {out[market]} and {series}")
    return out


def _segment(ticker: str) -> str:
    """A ticker as one path segment (kproxy refuses an encoded slash)."""
    return urllib.parse.quote(ticker, safe="")


def _candles_plan(markets: Markets, start_ts: int, end_ts: int, period_interval: int) -> _Plan:
    _ts("start_ts", start_ts, required=True)
    _ts("end_ts", end_ts, required=True)
    if isinstance(period_interval, bool) or period_interval not in PERIOD_INTERVALS:
        raise ValueError(f"period_interval {period_interval!r}: want one of {PERIOD_INTERVALS} (minutes)")
    query = urllib.parse.urlencode([("start_ts", start_ts), ("end_ts", end_ts), ("period_interval", period_interval)])
    paths = {
        m: f"{_API_PREFIX}/series/{_segment(s)}/markets/{_segment(m)}/candlesticks?{query}"
        for m, s in _series_by_market(markets).items()
    }
    return _GenericPlan("batch_get_candlesticks", "markets", paths, "candlesticks", False)


# --- the public functions -----------------------------------------------------


async def batch_get_markets(
    client: Any,
    series_tickers: List[str],
    status: Optional[str] = None,
    limit: int = 200,
    *,
    all_pages: bool = True,
    progress: Optional[Progress] = None,
    return_exceptions: bool = False,
    timeout: float = 120.0,
) -> Dict[str, List[Dict[str, Any]]]:
    """Fetch markets for multiple series tickers in parallel (one call to kproxy).

    ``client`` is kproxy's URL, a :class:`Client`, or a client object (see
    :func:`base_url`): the Kalshi client a script already passes works when
    it points at kproxy, or when KPROXY_URL is set. The parameter is called
    ``client`` as in the helpers this mirrors, so
    ``batch_get_markets(client=client, ...)`` works. Returns
    ``{series_ticker: [market, ...]}`` (a :class:`BatchResult`), with every
    page of each series (``all_pages=False``: the first ``limit`` markets
    only). ``status`` is Kalshi's filter (``"open"``, ``"closed"``,
    ``"settled"``, ...). A series that failed (e.g. one that does not exist:
    404) does not fail the others: it is left out of the dict and listed in
    ``result.errors``, or with ``return_exceptions=True`` it maps to its
    :class:`BatchItemError`; one warning on the ``kproxy`` logger sums up
    the failures of the call. ``progress`` is called with a
    :class:`ProgressEvent` as each series completes. Raises
    :class:`KproxyError` when the call as a whole fails.
    """
    plan = _markets_plan(series_tickers, status, limit, all_pages)
    return await _run_async(client, plan, return_exceptions, timeout, progress)


async def batch_get_events(
    client: Any,
    event_tickers: List[str],
    with_nested_markets: bool = True,
    *,
    progress: Optional[Progress] = None,
    return_exceptions: bool = False,
    timeout: float = 120.0,
) -> Dict[str, Dict[str, Any]]:
    """Fetch events for multiple tickers in parallel (one call to kproxy).

    Returns ``{event_ticker: {"event": {...}, "markets": [...]}}``, what
    Kalshi's ``GET /events/{ticker}`` answers. Errors and ``progress`` as in
    :func:`batch_get_markets`.
    """
    return await _run_async(client, _events_plan(event_tickers, with_nested_markets), return_exceptions, timeout, progress)


async def batch_get_series(
    client: Any,
    series_tickers: List[str],
    *,
    progress: Optional[Progress] = None,
    return_exceptions: bool = False,
    timeout: float = 120.0,
) -> Dict[str, Dict[str, Any]]:
    """Fetch series info for multiple tickers in parallel (one call to kproxy).

    Returns ``{series_ticker: {"series": {...}}}``, what Kalshi's
    ``GET /series/{ticker}`` answers. Errors and ``progress`` as in
    :func:`batch_get_markets`.
    """
    return await _run_async(client, _series_plan(series_tickers), return_exceptions, timeout, progress)


async def batch_get_trades(
    client: Any,
    tickers: List[str],
    min_ts: Optional[int] = None,
    max_ts: Optional[int] = None,
    limit: int = 1000,
    *,
    all_pages: bool = True,
    progress: Optional[Progress] = None,
    return_exceptions: bool = False,
    timeout: float = 120.0,
) -> Dict[str, List[Dict[str, Any]]]:
    """Fetch the trades of multiple markets in parallel (one call to kproxy's POST /batch).

    Returns ``{market_ticker: [trade, ...]}``: Kalshi's
    ``GET /markets/trades?ticker=T&limit=..[&min_ts=..][&max_ts=..]``, every
    page of it joined by kproxy (``all_pages``, bounded by its
    ``batch.max_pages``; a market cut short is in ``result.truncated``).
    ``min_ts``/``max_ts`` are Unix seconds; ``limit`` is the page size (1 to
    1000). ``all_pages=False`` takes the first page only. Trades with a
    ``max_ts`` at least a minute in the past never change, and kproxy keeps
    them on disk: a backtest that asks again costs no Kalshi request.
    Errors and ``progress`` as in :func:`batch_get_markets`.
    """
    plan = _trades_plan(tickers, min_ts, max_ts, limit, all_pages)
    return await _run_async(client, plan, return_exceptions, timeout, progress)


async def batch_get_candlesticks(
    client: Any,
    markets: Markets,
    start_ts: int,
    end_ts: int,
    period_interval: int = 1440,
    *,
    progress: Optional[Progress] = None,
    return_exceptions: bool = False,
    timeout: float = 120.0,
) -> Dict[str, List[Dict[str, Any]]]:
    """Fetch the candlesticks of multiple markets in parallel (one call to kproxy's POST /batch).

    ``markets`` is ``{market_ticker: series_ticker}`` or a list of
    ``(series_ticker, market_ticker)`` pairs (the order of Kalshi's path).
    Returns ``{market_ticker: [candle, ...]}``: the ``candlesticks`` of
    Kalshi's ``GET /series/{s}/markets/{t}/candlesticks?start_ts=..&end_ts=..
    &period_interval=..``. ``start_ts``/``end_ts`` are Unix seconds;
    ``period_interval`` is the candle width in minutes: 1, 60 or 1440.
    Errors and ``progress`` as in :func:`batch_get_markets`.
    """
    plan = _candles_plan(markets, start_ts, end_ts, period_interval)
    return await _run_async(client, plan, return_exceptions, timeout, progress)


def _blocking(fn: Callable[..., Any], plan_of: Callable[..., _Plan]) -> Callable[..., BatchResult]:
    """The ``_sync`` twin of the async batch function ``fn``, run in the calling thread.

    The twin takes ``fn``'s parameters (its signature, bound and defaulted
    the same way, so a call that suits one suits the other) and builds the
    same plan: ``plan_of`` is called with ``fn``'s arguments of its
    parameters' names.
    """
    sig = inspect.signature(fn)
    plan_args = list(inspect.signature(plan_of).parameters)

    def twin(*args: Any, **kwargs: Any) -> BatchResult:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        plan = plan_of(*(a[name] for name in plan_args))
        return _run(a["client"], plan, a["return_exceptions"], a["timeout"], a["progress"])

    twin.__name__ = twin.__qualname__ = fn.__name__ + "_sync"
    twin.__module__ = fn.__module__
    twin.__doc__ = f":func:`{fn.__name__}` without asyncio (blocks the calling thread)."
    twin.__annotations__ = dict(fn.__annotations__)
    twin.__signature__ = sig  # type: ignore[attr-defined]
    return twin


batch_get_markets_sync = _blocking(batch_get_markets, _markets_plan)
batch_get_events_sync = _blocking(batch_get_events, _events_plan)
batch_get_series_sync = _blocking(batch_get_series, _series_plan)
batch_get_trades_sync = _blocking(batch_get_trades, _trades_plan)
batch_get_candlesticks_sync = _blocking(batch_get_candlesticks, _candles_plan)
