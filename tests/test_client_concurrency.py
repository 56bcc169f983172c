"""Many threads, one Client, few connections: every thread gets exactly its own results."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import redispool

THREADS = 32
CONNECTIONS = 4
ROUNDS = 25


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_32_threads_pipelines_and_transactions_over_4_connections(
    redis_url: str, key: str, protocol: int
) -> None:
    client = redispool.Client.from_url(
        redis_url, protocol=protocol, max_connections=CONNECTIONS, timeout=60.0
    )
    start = threading.Barrier(THREADS)
    failures: list[str] = []
    peak = [0]
    peak_lock = threading.Lock()

    def watch_peak() -> None:
        size = client.pool.stats()["size"]
        with peak_lock:
            peak[0] = max(peak[0], size)

    def worker(n: int) -> None:
        mine = f"{key}{n}:"
        try:
            start.wait()
            for i in range(ROUNDS):
                token = f"t{n}-{i}"
                with client.pipeline(transaction=False) as pipe:
                    got = pipe.set(mine + "s", token).incr(mine + "n").get(mine + "s").execute()
                expect: list[Any] = [True, 2 * i + 1, token.encode()]
                if got != expect:
                    failures.append(f"thread {n} pipeline {i}: {got!r} != {expect!r}")
                with client.pipeline(transaction=True) as pipe:
                    got = pipe.incr(mine + "n").rpush(mine + "l", token).lrange(mine + "l", -1, -1).execute()
                expect = [2 * i + 2, i + 1, [token.encode()]]
                if got != expect:
                    failures.append(f"thread {n} transaction {i}: {got!r} != {expect!r}")

                def bump(pipe: Any, mine: str = mine) -> None:
                    value = int(pipe.get(mine + "w") or 0)
                    pipe.multi()
                    pipe.set(mine + "w", value + 1)
                    pipe.get(mine + "w")

                got = client.transaction(bump, mine + "w")
                expect = [True, str(i + 1).encode()]
                if got != expect:
                    failures.append(f"thread {n} watched transaction {i}: {got!r} != {expect!r}")
                if client.get(mine + "s") != token.encode():
                    failures.append(f"thread {n} get {i}: not its own value")
                watch_peak()
        except Exception as error:  # report, do not hide, anything unexpected
            failures.append(f"thread {n}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=worker, args=(n,), name=f"worker-{n}") for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failures == []
        stats = client.pool.stats()
        assert peak[0] <= CONNECTIONS
        assert stats["size"] <= CONNECTIONS
        assert stats["in_use"] == 0
        assert stats["borrows"] == stats["returns"]
        assert stats["closed_dirty"] == 0
        assert stats["waits"] > 0  # the pool really was contended
        for n in range(THREADS):
            mine = f"{key}{n}:"
            assert client.get(mine + "n") == str(2 * ROUNDS).encode()
            assert client.llen(mine + "l") == ROUNDS
            assert client.get(mine + "w") == str(ROUNDS).encode()
            client.delete(mine + "s", mine + "n", mine + "l", mine + "w")
    finally:
        client.pool.shutdown()
