"""Profile one thread's GETs and bare checkouts through redis-py's pool and redispool's.

Prints, per pool, Python function calls per operation (deterministic, unlike timings on
a busy machine) and the functions with the most own time under cProfile. Uses REDIS_URL
if set, else a private redis-server. Run: ``python benchmarks/profile_pool.py``.
"""

from __future__ import annotations

import cProfile
import os
import pstats
from collections.abc import Callable
from typing import Any

import redis

import redispool
from redispool._server import embedded

N = 20000


def profile(label: str, operation: Callable[[], Any]) -> None:
    for _ in range(500):  # warm up: connect, fill caches
        operation()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(N):
        operation()
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"== {label}: {stats.total_calls / N:.0f} Python calls per operation")
    stats.sort_stats("tottime").print_stats(8)


def run(url: str) -> None:
    pools = {
        "redis-py ConnectionPool": redis.ConnectionPool.from_url(url, max_connections=1),
        "redispool.ConnectionPool": redispool.ConnectionPool.from_url(url, max_connections=1),
    }
    key = f"redispool-profile:{os.getpid()}"
    for name, pool in pools.items():
        client = redis.Redis(connection_pool=pool)
        client.set(key, b"x" * 100)
        profile(f"{name}: GET through redis.Redis", lambda client=client: client.get(key))
        profile(f"{name}: checkout+return", lambda pool=pool: pool.release(pool.get_connection()))
        client.delete(key)
        pool.disconnect()


def main() -> None:
    url = os.environ.get("REDIS_URL")
    if url:
        run(url)
        return
    with embedded() as server:
        run(server.url)


if __name__ == "__main__":
    main()
