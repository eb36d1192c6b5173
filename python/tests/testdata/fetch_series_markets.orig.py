import asyncio
from fomc_analysis.kalshi_client_factory import get_kalshi_client, batch_get_markets

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
