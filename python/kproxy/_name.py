"""The Kproxy-Client request header: who is asking, in a few safe bytes.

kproxy shares its upstream budget fairly between clients and lists the
busiest ones on its status page; a client is named by this header. It is
never forwarded to Kalshi.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Optional

#: The request header that names the calling script to kproxy.
CLIENT_HEADER = "Kproxy-Client"

#: The environment variable that overrides the script's name.
CLIENT_ENV = "KPROXY_CLIENT"

#: The name sent when nothing better is known (an interactive session, ``python -c``).
FALLBACK_NAME = "python"

#: At most this many bytes are sent.
MAX_NAME_BYTES = 64

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def sanitize_client_name(name: str) -> str:
    """Return ``name`` as a header value: every character outside
    ``[A-Za-z0-9._-]`` becomes ``_``, cut to 64 bytes. The result is ASCII, so
    64 characters are 64 bytes. An empty result means nothing usable was left
    (the name was empty or only underscores after replacement)."""
    safe = _UNSAFE.sub("_", name)[:MAX_NAME_BYTES]
    return "" if not safe.strip("_") else safe


def _script_name(argv0: str) -> str:
    # python -c / interactive / stdin: no script to name.
    if argv0 in ("", "-c", "-"):
        return ""
    base = os.path.basename(argv0.rstrip("/\\"))
    if base.endswith(".py"):
        base = base[: -len(".py")]
    if base == "__main__":  # python -m pkg: the package is the better name
        base = os.path.basename(os.path.dirname(os.path.abspath(argv0)))
    return base


def default_client_name() -> str:
    """The ``Kproxy-Client`` value sent when the caller names none.

    ``KPROXY_CLIENT`` when set (sanitized), else the running script's name
    (the basename of ``sys.argv[0]`` without ``.py``; for ``python -m pkg``
    the package's name), sanitized; else ``"python"``. Read at each call, so a
    script may set ``KPROXY_CLIENT`` after importing kproxy.
    """
    env = sanitize_client_name(os.environ.get(CLIENT_ENV, ""))
    if env:
        return env
    argv = getattr(sys, "argv", None) or [""]
    return sanitize_client_name(_script_name(argv[0] or "")) or FALLBACK_NAME


def client_name(explicit: Optional[str]) -> str:
    """The header value for a call: ``explicit`` when given, else :func:`default_client_name`.

    Raises ValueError when ``explicit`` is given but nothing of it survives
    sanitizing (e.g. ``""`` or ``"   "``).
    """
    if explicit is None:
        return default_client_name()
    if not isinstance(explicit, str):
        raise TypeError(f"client_name must be a string, not {type(explicit).__name__}")
    safe = sanitize_client_name(explicit)
    if not safe:
        raise ValueError(f"client_name {explicit!r}: want a short name of A-Z a-z 0-9 . _ -")
    return safe
