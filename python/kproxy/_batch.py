"""The batch functions: one POST to kproxy's /batch/* endpoints per call.

Every function here is safe to call from many threads or tasks at once: no
state is shared between calls (each call opens its own HTTP connection).
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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

__all__ = [
    "BatchItemError",
    "BatchResult",
    "DEFAULT_URL",
    "KproxyError",
    "ProgressEvent",
    "base_url",
    "batch_get_events",
    "batch_get_events_sync",
    "batch_get_markets",
    "batch_get_markets_sync",
    "batch_get_series",
    "batch_get_series_sync",
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
    :class:`BatchItemError`) and is listed in ``errors``. ``truncated`` maps
    a series whose market listing is incomplete (kproxy's ``batch.max_pages``
    reached, or ``all_pages=False``) to the cursor to continue from.
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


def _unique(tickers: Iterable[str], what: str) -> List[str]:
    if isinstance(tickers, str):
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


@dataclass(frozen=True)
class _Kind:
    path: str  # kproxy endpoint
    list_field: str  # request field holding the tickers
    result_field: str  # response field holding ticker -> result
    wrap: Optional[str] = None  # wrap each result as {wrap: result}


_MARKETS = _Kind("/batch/markets", "series_tickers", "markets_by_series")
_EVENTS = _Kind("/batch/events", "event_tickers", "events")
# Series come back as {"series": {...}}: what the SDK's get_series() answers.
_SERIES = _Kind("/batch/series", "series_tickers", "series", wrap="series")


class _Counter:
    def __init__(self, total: int):
        self.done, self.total = 0, total


def _post(
    base: str,
    kind: _Kind,
    tickers: List[str],
    extra: Dict[str, Any],
    timeout: float,
    on_line: Optional[Callable[[Dict[str, Any]], None]],
) -> Dict[str, Any]:
    """Send one batch and return kproxy's JSON answer (the typed document).

    With on_line, the answer is streamed as NDJSON; each item line is passed
    to on_line as it arrives and the typed document is rebuilt from the lines.
    """
    body = dict(extra)
    body[kind.list_field] = tickers
    headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson" if on_line else "application/json"}
    req = urllib.request.Request(base + kind.path, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        with e:
            raise _error_of(e.code, e.read(), e.reason or "error") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise KproxyError(f"cannot reach kproxy at {base}: {reason}") from None
    with resp:
        if not on_line:
            try:
                return json.load(resp)
            except ValueError as e:
                raise KproxyError(f"kproxy at {base} sent a body that is not JSON: {e}") from None
        results: Dict[str, Any] = {}
        errors: Dict[str, Any] = {}
        truncated: Dict[str, str] = {}
        finished = False
        for raw in resp:
            raw = raw.strip()
            if not raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError as e:
                raise KproxyError(f"kproxy at {base} sent a progress line that is not JSON: {e}") from None
            if line.get("done"):
                finished = True
                break
            t, status = line.get("id"), line.get("status", 0)
            if 200 <= status < 300:
                results[t] = line.get("body")
                if line.get("next_cursor"):
                    truncated[t] = line["next_cursor"]
            else:
                errors[t] = {"status": status, "error": line.get("error", ""), "code": line.get("code")}
            on_line(line)
        if not finished:
            raise KproxyError(f"kproxy at {base} ended the progress stream early")
        return {kind.result_field: results, "errors": errors, "truncated": truncated}


def _run(
    client_or_url: Any,
    kind: _Kind,
    tickers: Sequence[str],
    extra: Dict[str, Any],
    return_exceptions: bool,
    timeout: float,
    on_line: Optional[Callable[[Dict[str, Any]], None]],
) -> BatchResult:
    base = base_url(client_or_url)
    tickers = _unique(tickers, kind.list_field)
    found: Dict[str, Any] = {}
    out = BatchResult()
    for i in range(0, len(tickers), MAX_ITEMS):
        doc = _post(base, kind, tickers[i : i + MAX_ITEMS], extra, timeout, on_line)
        found.update(doc.get(kind.result_field) or {})
        for t, e in (doc.get("errors") or {}).items():
            out.errors[t] = BatchItemError(t, e.get("status"), e.get("error") or "", e.get("code"))
        out.truncated.update(doc.get("truncated") or {})
    for t in tickers:
        if t in found:
            out[t] = {kind.wrap: found[t]} if kind.wrap else found[t]
        elif t in out.errors:
            if return_exceptions:
                out[t] = out.errors[t]
        else:  # kproxy promises every ticker is in one of the two
            out.errors[t] = BatchItemError(t, None, "missing from kproxy's answer")
            if return_exceptions:
                out[t] = out.errors[t]
    for err in out.errors.values():
        log.warning("kproxy batch %s: %s", kind.path, err)
    return out


def _sync_lines(progress: Optional[Progress], total: int) -> Optional[Callable[[Dict[str, Any]], None]]:
    if progress is None:
        return None
    c = _Counter(total)

    def on_line(line: Dict[str, Any]) -> None:
        c.done += 1
        progress(_event(line, c))

    return on_line


def _event(line: Dict[str, Any], c: _Counter) -> ProgressEvent:
    status = line.get("status", 0)
    return ProgressEvent(
        ticker=line.get("id", ""),
        status=status,
        ok=200 <= status < 300,
        done=c.done,
        total=c.total,
        cache=line.get("cache"),
        error=line.get("error"),
    )


async def _run_async(
    client_or_url: Any,
    kind: _Kind,
    tickers: Sequence[str],
    extra: Dict[str, Any],
    return_exceptions: bool,
    timeout: float,
    progress: Optional[Progress],
) -> BatchResult:
    # The blocking HTTP call runs in a worker thread; progress callbacks run
    # on the event loop, in arrival order (a coroutine callback is awaited
    # before the call returns).
    loop = asyncio.get_running_loop()
    on_line = None
    pending: List[Any] = []
    if progress is not None:
        c = _Counter(len(_unique(tickers, kind.list_field)))

        def deliver(ev: ProgressEvent) -> None:
            r = progress(ev)
            if inspect.isawaitable(r):
                pending.append(asyncio.ensure_future(r))

        def on_line(line: Dict[str, Any]) -> None:
            c.done += 1
            loop.call_soon_threadsafe(deliver, _event(line, c))

    result = await loop.run_in_executor(
        None, lambda: _run(client_or_url, kind, tickers, extra, return_exceptions, timeout, on_line)
    )
    # The worker scheduled every deliver() before the executor future's
    # completion, so the loop has run them all by the time we resume.
    if pending:
        await asyncio.gather(*pending)
    return result


def _markets_extra(status: Optional[str], limit: int, all_pages: bool) -> Dict[str, Any]:
    extra: Dict[str, Any] = {"limit": limit, "all_pages": bool(all_pages)}
    if status:
        extra["status"] = status
    return extra


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

    ``client`` is kproxy's URL or a client object (see :func:`base_url`): the
    Kalshi client a script already passes works when it points at kproxy, or
    when KPROXY_URL is set. The parameter is called ``client`` as in the
    helpers this mirrors, so ``batch_get_markets(client=client, ...)`` works.
    Returns ``{series_ticker: [market, ...]}`` (a :class:`BatchResult`), with
    every page of each series (``all_pages=False``: the first ``limit``
    markets only). ``status`` is Kalshi's filter (``"open"``, ``"closed"``,
    ``"settled"``, ...). A series that failed (e.g. one that does not exist:
    404) does not fail the others: it is left out of the dict and listed in
    ``result.errors``, or with ``return_exceptions=True`` it maps to its
    :class:`BatchItemError`. ``progress`` is called with a
    :class:`ProgressEvent` as each series completes. Raises
    :class:`KproxyError` when the call as a whole fails.
    """
    return await _run_async(
        client, _MARKETS, series_tickers, _markets_extra(status, limit, all_pages), return_exceptions, timeout, progress
    )


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
    extra = {"with_nested_markets": bool(with_nested_markets)}
    return await _run_async(client, _EVENTS, event_tickers, extra, return_exceptions, timeout, progress)


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
    return await _run_async(client, _SERIES, series_tickers, {}, return_exceptions, timeout, progress)


def batch_get_markets_sync(
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
    """:func:`batch_get_markets` without asyncio (blocks the calling thread)."""
    return _run(
        client,
        _MARKETS,
        series_tickers,
        _markets_extra(status, limit, all_pages),
        return_exceptions,
        timeout,
        _sync_lines(progress, len(_unique(series_tickers, "series_tickers"))),
    )


def batch_get_events_sync(
    client: Any,
    event_tickers: List[str],
    with_nested_markets: bool = True,
    *,
    progress: Optional[Progress] = None,
    return_exceptions: bool = False,
    timeout: float = 120.0,
) -> Dict[str, Dict[str, Any]]:
    """:func:`batch_get_events` without asyncio (blocks the calling thread)."""
    extra = {"with_nested_markets": bool(with_nested_markets)}
    on_line = _sync_lines(progress, len(_unique(event_tickers, "event_tickers")))
    return _run(client, _EVENTS, event_tickers, extra, return_exceptions, timeout, on_line)


def batch_get_series_sync(
    client: Any,
    series_tickers: List[str],
    *,
    progress: Optional[Progress] = None,
    return_exceptions: bool = False,
    timeout: float = 120.0,
) -> Dict[str, Dict[str, Any]]:
    """:func:`batch_get_series` without asyncio (blocks the calling thread)."""
    on_line = _sync_lines(progress, len(_unique(series_tickers, "series_tickers")))
    return _run(client, _SERIES, series_tickers, {}, return_exceptions, timeout, on_line)
