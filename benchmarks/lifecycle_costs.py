"""What the lifecycle features cost and what they buy (issue 3), in one run.

1. The default health policy on the checkout hot path: checkout+return with the default
   policy vs with every check off, next to one GET round trip on loopback.
2. A Redis restart under a warmed pool of 8: reads that failed, redispool vs redis-py's
   BlockingConnectionPool, same server, same workload.

Prints markdown tables (ratios, because the machine is noisy). Starts its own servers on
free loopback ports; never touches any other server.

    python benchmarks/lifecycle_costs.py [--rounds 5] [--ops 20000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

import redispool
from redispool import _health
from redispool._server import RedisServer


def per_op(fn: Callable[[], None], ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - start) / ops * 1e6


def checkout_cost(url: str, rounds: int, ops: int) -> None:
    default = redispool.ConnectionPool.from_url(url)
    checks_off = redispool.ConnectionPool.from_url(url, ping_after_idle=None)
    client = redis.Redis(connection_pool=redispool.ConnectionPool.from_url(url))
    client.set("bench:k", "v")

    def cycle(pool: redispool.ConnectionPool) -> Callable[[], None]:
        def run() -> None:
            pool.release(pool.get_connection())

        return run

    real_probe = _health.probe
    results: dict[str, list[float]] = {"default": [], "off": [], "get": []}
    for _ in range(rounds):  # interleaved, so drift hits every candidate alike
        results["default"].append(per_op(cycle(default), ops))
        _health.probe = lambda conn, poller=None: "ok"  # type: ignore[assignment]
        try:
            results["off"].append(per_op(cycle(checks_off), ops))
        finally:
            _health.probe = real_probe  # type: ignore[assignment]
        results["get"].append(per_op(lambda: client.get("bench:k"), ops // 4))
    med = {k: statistics.median(v) for k, v in results.items()}
    extra = med["default"] - med["off"]
    print("| measurement | median µs | ratio to one GET round trip |")
    print("|---|---|---|")
    print(
        f"| checkout+return, default policy (probe always, PING after 2 s idle) | {med['default']:.2f} | "
        f"{med['default'] / med['get']:.1%} |"
    )
    print(f"| checkout+return, all checks off | {med['off']:.2f} | {med['off'] / med['get']:.1%} |")
    print(
        f"| **cost of the default policy** | **{extra:.2f}** | **{extra / med['get']:.1%}** (target < 10 %) |"
    )
    print(f"| GET round trip through redis.Redis + redispool | {med['get']:.2f} | 100% |")
    client.delete("bench:k")
    for pool in (default, checks_off, client.connection_pool):
        pool.shutdown()


def restart_outcome(reads_per_thread: int) -> None:
    print()
    print("| pool (8 warmed connections, 8 threads) | reads | failed reads | connects after restart |")
    print("|---|---|---|---|")
    for label, make in (
        (
            "redispool.ConnectionPool",
            lambda url: redispool.ConnectionPool.from_url(url, max_connections=8, timeout=10),
        ),
        (
            "redis.BlockingConnectionPool",
            lambda url: redis.BlockingConnectionPool.from_url(url, max_connections=8, timeout=10),
        ),
    ):
        with RedisServer() as server:
            pool: Any = make(server.url)
            client = redis.Redis(connection_pool=pool)
            held = [pool.get_connection() for _ in range(8)]  # warm all 8
            for conn in held:
                pool.release(conn)
            client.set("k", "v")
            server.restart()
            failures = [0]
            lock = threading.Lock()
            threads = [
                threading.Thread(target=_read, args=(client, reads_per_thread, failures, lock))
                for _ in range(8)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            admin = redis.Redis.from_url(server.url)
            connects = int(admin.info("stats")["total_connections_received"]) - 1
            admin.close()
            print(f"| {label} | {8 * reads_per_thread} | {failures[0]} | {connects} |")
            pool.disconnect()


def _read(client: redis.Redis, reads: int, failures: list[int], lock: threading.Lock) -> None:
    for _ in range(reads):
        try:
            client.get("k")
        except redis.RedisError:
            with lock:
                failures[0] += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--reads", type=int, default=200, help="reads per thread after the restart")
    args = parser.parse_args()
    with RedisServer() as server:
        checkout_cost(server.url, args.rounds, args.ops)
    restart_outcome(args.reads)


if __name__ == "__main__":
    main()
