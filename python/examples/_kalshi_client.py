"""A stand-in for fomc_analysis.kalshi_client_factory, so these examples run anywhere.

The examples are the fomc-analysis team's own scripts: inside that
repository they import its get_kalshi_client(). Elsewhere (a fresh clone of
kproxy) they fall back to this module, whose client has the shape kproxy's
batch functions look for in theirs: a KalshiSdkAdapter wrapping a Kalshi SDK
client (``_sdk_client.configuration.host``) whose base URL is
``KALSHI_BASE_URL``, here defaulting to a kproxy on this machine
(``http://127.0.0.1:8080/trade-api/v2``). ``KPROXY_URL``, when set, wins
over the client's URL, as always.
"""

import os

DEFAULT_BASE_URL = "http://127.0.0.1:8080/trade-api/v2"


class _Configuration:
    def __init__(self, host):
        self.host = host


class _SdkClient:
    def __init__(self, host):
        self.configuration = _Configuration(host)


class KalshiSdkAdapter:
    def __init__(self):
        self._sdk_client = _SdkClient(os.environ.get("KALSHI_BASE_URL") or DEFAULT_BASE_URL)

    def close(self):
        pass


def get_kalshi_client():
    return KalshiSdkAdapter()
