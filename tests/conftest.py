"""Shared fixtures: a real Redis for every test that needs one, and tidy pools."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import redispool
from redispool._server import RedisServer

from .support import missing, private_server


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
