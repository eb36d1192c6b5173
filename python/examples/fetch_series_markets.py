"""Fetch multiple series in parallel: a Kalshi script's own example, through kproxy.

This is the "Fetch Multiple Series in Parallel" example of the async batching
helpers in fomc_analysis.kalshi_client_factory, unchanged except for one
import line:

    from fomc_analysis.kalshi_client_factory import get_kalshi_client, batch_get_markets
becomes
    from fomc_analysis.kalshi_client_factory import get_kalshi_client
    from kproxy import batch_get_markets

The client it passes is the script's own Kalshi client; kproxy's address is
taken from it (its base URL, e.g. KALSHI_BASE_URL=http://127.0.0.1:8080/trade-api/v2)
or from KPROXY_URL.

Run it (kproxy at http://127.0.0.1:8080, or set KPROXY_URL):

    pip install ./python && python3 python/examples/fetch_series_markets.py
    PYTHONPATH=python python3 python/examples/fetch_series_markets.py     # from the repository, no install

Outside the fomc-analysis repository, get_kalshi_client comes from
_kalshi_client.py beside this file (a stand-in with the same shape).
"""
import asyncio
try:
    from fomc_analysis.kalshi_client_factory import get_kalshi_client
except ModuleNotFoundError:  # outside the fomc-analysis repo: _kalshi_client.py beside this file
    from _kalshi_client import get_kalshi_client
from kproxy import batch_get_markets

async def main():
    client = get_kalshi_client()

    # Fetch contracts for multiple companies in parallel
    tickers = [
        "KXEARNINGSMENTIONMETA",
        "KXEARNINGSMENTIONTSLA",
        "KXEARNINGSMENTIONNVDA",
    ]

    markets_by_series = await batch_get_markets(client, tickers)

    for series, markets in markets_by_series.items():
        print(f"{series}: {len(markets)} markets")

    client.close()

asyncio.run(main())
