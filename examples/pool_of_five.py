"""The classic "pool of 5 clients" scenario, threaded.

Twenty threads share one redispool.ConnectionPool of 5 connections through a plain
redis.Redis client: get/set, a pipeline on one checked-out connection, and at the end a
loop printing each pooled connection's id and state. Runs with no arguments (starts a
private Redis unless REDIS_URL is set).
"""

from __future__ import annotations

import threading

import redis
from _common import redis_url

import redispool


def main() -> None:
    with redis_url() as url:
        pool = redispool.ConnectionPool.from_url(url, max_connections=5, timeout=2.0)
        client = redis.Redis(connection_pool=pool)  # every redis-py call site keeps working

        def worker(n: int) -> None:
            client.set(f"example:worker:{n}", n)
            assert client.get(f"example:worker:{n}") == str(n).encode()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # A pipeline runs on one checked-out connection from start to finish.
        with client.pipeline() as pipe:
            client.delete("example:counter")
            # redis-py types a pipeline's commands as returning "ResponseT", not the pipeline,
            # so mypy --strict refuses pipe.incr(...).incr(...): queue one call per line.
            pipe.incr("example:counter")
            pipe.incr("example:counter")
            print("pipeline:", pipe.execute())

        for info in pool.connections():
            print(f"connection #{info.id}: {info.state}, used {info.uses}x, idle {info.idle_for:.3f}s")
        stats = pool.stats()
        print(f"stats: {stats['borrows']} borrows, {stats['connects']} connects, max {stats['max']}")
        client.delete("example:counter", *(f"example:worker:{n}" for n in range(20)))
        pool.shutdown()


if __name__ == "__main__":
    main()
