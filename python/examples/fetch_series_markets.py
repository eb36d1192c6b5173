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
"""
import asyncio
from fomc_analysis.kalshi_client_factory import get_kalshi_client
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
