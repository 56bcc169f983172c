"""The acquire listener hook metrics integrations build their wait-time histograms on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

import redispool
from tests.support import wait_until

MakePool = Callable[..., redispool.ConnectionPool]


def test_called_once_per_successful_acquire_with_its_duration(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=1, timeout=5)
    seen: list[float] = []
    pool.add_acquire_listener(seen.append)
    client = redis.Redis(connection_pool=pool)
    for _ in range(5):
        client.ping()
    assert len(seen) == 5 == pool.stats()["borrows"]
    assert all(s >= 0 for s in seen)

    # A caller that queues behind the only connection reports at least the time it queued.
    held = pool.acquire()
    got: list[float] = []

    def waiter() -> None:
        conn = pool.acquire()
        got.append(seen[-1])
        pool.release(conn)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: pool.stats()["waiting"] == 1)
    queued_by = time.monotonic()  # the waiter's acquire started before this
    release_start = time.monotonic()
    pool.release(held)  # hands the connection to the waiter
    thread.join(5)
    assert got and got[0] >= release_start - queued_by
    assert len(seen) == 7 == pool.stats()["borrows"]


def test_timeouts_are_not_reported_and_listener_errors_are_ignored(
    redis_url: str, make_pool: MakePool
) -> None:
    pool = make_pool(redis_url, max_connections=1)
    seen: list[float] = []

    def broken(seconds: float) -> None:
        raise RuntimeError("listener bug")

    pool.add_acquire_listener(broken)
    pool.add_acquire_listener(seen.append)
    held = pool.acquire()  # the broken listener must not break the checkout
    try:
        pool.acquire(timeout=0)
    except redispool.PoolTimeout:
        pass
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("expected PoolTimeout")
    pool.release(held)
    assert len(seen) == 1

    pool.remove_acquire_listener(seen.append)
    pool.remove_acquire_listener(seen.append)  # removing twice is harmless
    pool.release(pool.acquire())
    assert len(seen) == 1
