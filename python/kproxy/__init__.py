"""kproxy: batch Kalshi market data through a kproxy caching proxy.

Drop-in async batch helpers with the names and return shapes Python Kalshi
scripts already use::

    from kproxy import batch_get_markets

    markets_by_series = await batch_get_markets(client, ["KXFEDDECISION"])

Each call is one POST to kproxy's /batch endpoints, which fetch the tickers
concurrently through its cache, request coalescing and rate limiter. Every
request names the script to kproxy in a ``Kproxy-Client`` header (see
:class:`Client`). Standard library only; Python 3.9+.
"""

from . import _batch
from ._batch import *  # noqa: F401,F403 (the public names are _batch.__all__)
from ._name import CLIENT_ENV, CLIENT_HEADER, default_client_name

__version__ = "0.2.0"

__all__ = sorted(_batch.__all__ + ["CLIENT_ENV", "CLIENT_HEADER", "default_client_name"])
