import asyncio
from fomc_analysis.kalshi_client_factory import (
    get_kalshi_client,
    batch_get_markets,
    batch_get_series,
)

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
