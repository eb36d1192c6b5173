"""Markets and series info in parallel: a Kalshi script's own example, through kproxy.

The "Mixed Async Operations" example of the async batching helpers in
fomc_analysis.kalshi_client_factory, unchanged except for its import: the
batch functions now come from kproxy.

Run it (kproxy at http://127.0.0.1:8080, or set KPROXY_URL):

    pip install ./python && python3 python/examples/mixed_async_operations.py
    PYTHONPATH=python python3 python/examples/mixed_async_operations.py     # from the repository, no install

Outside the fomc-analysis repository, get_kalshi_client comes from
_kalshi_client.py beside this file (a stand-in with the same shape).
"""
import asyncio
try:
    from fomc_analysis.kalshi_client_factory import get_kalshi_client
except ModuleNotFoundError:  # outside the fomc-analysis repo: _kalshi_client.py beside this file
    from _kalshi_client import get_kalshi_client
from kproxy import batch_get_markets, batch_get_series

async def main():
    client = get_kalshi_client()

    tickers = ["KXEARNINGSMENTIONMETA", "KXEARNINGSMENTIONTSLA"]

    # Fetch markets AND series info in parallel
    markets_task = batch_get_markets(client, tickers)
    series_task = batch_get_series(client, tickers)

    markets_by_series, series_by_ticker = await asyncio.gather(
        markets_task,
        series_task,
    )

    # Both fetches happened in parallel!
    print(f"Fetched {len(markets_by_series)} market batches")
    print(f"Fetched {len(series_by_ticker)} series info")

    client.close()

asyncio.run(main())
