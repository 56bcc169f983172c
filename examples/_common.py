"""Shared by the examples: a Redis URL from REDIS_URL, or a private embedded server."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from redispool._server import embedded


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """Yield ``$REDIS_URL`` if set, else the URL of a throw-away local redis-server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with embedded() as server:
        yield server.url
