"""kproxy: batch Kalshi market data through a kproxy caching proxy.

Drop-in async batch helpers with the names and return shapes Python Kalshi
scripts already use::

    from kproxy import batch_get_markets

    markets_by_series = await batch_get_markets(client, ["KXFEDDECISION"])

Each call is one POST to kproxy's /batch/* endpoint, which fetches the
tickers concurrently through its cache, request coalescing and rate limiter.
Standard library only; Python 3.9+.
"""

from ._batch import (
    DEFAULT_URL,
    BatchItemError,
    BatchResult,
    KproxyError,
    ProgressEvent,
    base_url,
    batch_get_events,
    batch_get_events_sync,
    batch_get_markets,
    batch_get_markets_sync,
    batch_get_series,
    batch_get_series_sync,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "BatchItemError",
    "BatchResult",
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
