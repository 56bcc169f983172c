"""What a 64-thread chaos run found, each reproduced alone against a real Redis.

- Sockets open never exceed ``max_connections``: a connection being closed keeps its
  slot until its socket is closed (dirty returns, failed checkouts, shrinking).
- Every round trip inside ``acquire`` (the PING after idle, the session reset) is
  bounded by the acquire deadline.
- An asynchronous exception (KeyboardInterrupt) at any line of acquire and release
  loses no slot: see ``test_interrupts.py``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import redispool

from .proxy import BlackholeProxy

MakePool = Callable[..., redispool.ConnectionPool]


class SocketCounter:
    """Counts the sockets a connection class has open right now, and the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0

    def opened(self) -> None:
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        with self.lock:
            self.open -= 1


def counting_class(counter: SocketCounter) -> type[redis.Connection]:
    class Counted(redis.Connection):
        def _connect(self) -> socket.socket:
            sock = super()._connect()
            counter.opened()
            return sock

        def disconnect(self, *args: Any) -> None:
            had = self._sock is not None
            super().disconnect(*args)
            if had and self._sock is None:
                counter.closed()

    return Counted


def _hammer(pool: redispool.ConnectionPool, threads: int, rounds: int, step: Callable[[Any], None]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                conn = pool.acquire()
                try:
                    step(conn)
                finally:
                    pool.release(conn)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not errors, errors[:3]


@pytest.mark.slow
def test_dirty_returns_never_open_more_sockets_than_max(redis_url: str, make_pool: MakePool) -> None:
    counter = SocketCounter()
    pool = make_pool(redis_url, max_connections=4, timeout=60, connection_class=counting_class(counter))

    def dirty(conn: Any) -> None:
        conn.send_command("PING")  # the reply is never read: the pool must close it

    _hammer(pool, threads=32, rounds=300, step=dirty)
    stats = pool.stats()
    assert counter.peak <= 4, f"{counter.peak} sockets open at once with max_connections=4"
    assert stats["closed_dirty"] == 32 * 300 and stats["connects"] == 32 * 300
    assert stats["closing"] == 0 and stats["connecting"] == 0 and stats["in_use"] == 0
    assert counter.open == stats["size"] == 0


def test_failed_checkouts_never_open_more_sockets_than_max(redis_url: str, make_pool: MakePool) -> None:
    counter = SocketCounter()
    pool = make_pool(redis_url, max_connections=2, timeout=30, connection_class=counting_class(counter))

    def broken(conn: Any) -> None:
        conn._sock.shutdown(socket.SHUT_RDWR)  # the next borrower's probe finds EOF

    _hammer(pool, threads=8, rounds=100, step=broken)
    stats = pool.stats()
    assert counter.peak <= 2, f"{counter.peak} sockets open at once with max_connections=2"
    assert stats["health_eof"] > 0
    assert stats["closing"] == 0 and stats["connecting"] == 0 and stats["size"] == counter.open


def test_shrinking_closes_before_serving_waiters(redis_url: str, make_pool: MakePool) -> None:
    counter = SocketCounter()
    pool = make_pool(redis_url, max_connections=3, timeout=10, connection_class=counting_class(counter))
    held = [pool.acquire() for _ in range(3)]
    for conn in held:
        pool.release(conn)
    pool.resize(max_connections=1)
    assert counter.open == 1 and pool.stats()["size"] == 1
    _hammer(pool, threads=4, rounds=50, step=lambda conn: conn.send_command("PING"))
    assert counter.peak <= 3 and pool.stats()["closing"] == 0


@pytest.fixture
def blackhole(redis_url: str) -> Iterator[BlackholeProxy]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with BlackholeProxy(port) as proxy:
        yield proxy


def _timed_acquire(pool: redispool.ConnectionPool, timeout: float) -> float:
    """Seconds one acquire took. The stale connection fails its check; a new one
    through the proxy may or may not fit in what is left of the deadline."""
    started = time.monotonic()
    with contextlib.suppress(redispool.PoolTimeout):
        pool.release(pool.acquire(timeout=timeout))
    return time.monotonic() - started


def test_ping_after_idle_is_bounded_by_the_acquire_deadline(
    blackhole: BlackholeProxy, make_pool: MakePool
) -> None:
    pool = make_pool(blackhole.url, max_connections=1, ping_after_idle=0, ping_timeout=5.0)
    pool.release(pool.acquire())
    blackhole.blackhole()  # the PING after idle now gets no answer
    took = _timed_acquire(pool, 0.3)
    assert took < 2.0, f"acquire(timeout=0.3) took {took:.2f}s: the PING was bounded by ping_timeout"
    stats = pool.stats()
    assert stats["health_ping"] == 1 and stats["connecting"] == 0 and stats["closing"] == 0


def test_session_reset_is_bounded_by_the_acquire_deadline(
    blackhole: BlackholeProxy, make_pool: MakePool
) -> None:
    pool = make_pool(blackhole.url, max_connections=1, ping_after_idle=None, socket_timeout=5.0)
    conn = pool.acquire()
    conn.send_command("SELECT", 1)
    conn.read_response()
    pool.release(conn)  # SELECT is undone at the next checkout, with one round trip
    blackhole.blackhole()
    took = _timed_acquire(pool, 0.3)
    assert took < 2.0, f"acquire(timeout=0.3) took {took:.2f}s: the reset was bounded by socket_timeout"
    stats = pool.stats()
    assert stats["session_resets"] == 0 and stats["connecting"] == 0 and stats["closing"] == 0
