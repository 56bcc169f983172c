"""Pool mechanics with fakeredis connections: bounds, fairness, timeouts, misuse."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis

import redispool
from redispool import errors

from .support import wait_until

# fakeredis >= 2.33 renamed the class; the old name became a deprecated factory.
FakeConnection = getattr(fakeredis, "FakeRedisConnection", None) or fakeredis.FakeConnection


@pytest.fixture
def fake_pool(make_pool: Callable[..., redispool.ConnectionPool]) -> Callable[..., redispool.ConnectionPool]:
    server = fakeredis.FakeServer()

    def make(**kwargs: Any) -> redispool.ConnectionPool:
        kwargs.setdefault("max_connections", 2)
        kwargs.setdefault("timeout", 5.0)
        return make_pool(connection_class=FakeConnection, server=server, **kwargs)

    return make


def test_is_a_redis_pool_and_never_falsy(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool()
    assert isinstance(pool, redis.ConnectionPool)
    assert bool(pool) is True
    client = redis.Redis(connection_pool=pool)
    assert client.connection_pool is pool
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_errors_are_what_callers_already_catch() -> None:
    assert issubclass(redispool.PoolTimeout, redis.exceptions.MaxConnectionsError)
    assert issubclass(redispool.PoolTimeout, redis.ConnectionError)
    assert issubclass(redispool.TooManyWaiters, redis.exceptions.MaxConnectionsError)
    assert issubclass(redispool.ServerUnavailable, redis.ConnectionError)
    assert issubclass(redispool.PoolClosed, redis.ConnectionError)
    for cls in (
        redispool.PoolTimeout,
        redispool.TooManyWaiters,
        redispool.PoolClosed,
        redispool.ServerUnavailable,
    ):
        assert issubclass(cls, errors.PoolError)
        assert cls.__module__ == "redispool"


def test_never_more_than_max_connections(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool(max_connections=3)
    held = [pool.acquire() for _ in range(3)]
    assert len({id(c) for c in held}) == 3
    with pytest.raises(redispool.PoolTimeout):
        pool.acquire(timeout=0)
    assert pool.stats()["size"] == 3
    for conn in held:
        pool.release(conn)
    assert pool.stats()["idle"] == 3


def test_timeout_zero_never_waits(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool(max_connections=1, timeout=0)
    conn = pool.get_connection()
    started = time.monotonic()
    with pytest.raises(redispool.PoolTimeout) as caught:
        pool.get_connection()
    assert time.monotonic() - started < 0.5
    assert pool.stats()["waiting"] == 0
    assert pool.stats()["timeouts"] == 1
    assert "1 of 1 in use" in str(caught.value)
    pool.release(conn)


def test_timeout_raised_at_the_deadline_not_before(
    fake_pool: Callable[..., redispool.ConnectionPool],
) -> None:
    pool = fake_pool(max_connections=1)
    conn = pool.acquire()
    started = time.monotonic()
    with pytest.raises(redispool.PoolTimeout) as caught:
        pool.acquire(timeout=0.3)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 2.0
    message = str(caught.value)
    assert "after 0.3" in message and "max_connections" in message
    assert pool.stats()["waiting"] == 0
    pool.release(conn)


def test_waiters_are_served_in_arrival_order(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool(max_connections=1)
    holder = pool.acquire()
    served: list[int] = []
    threads = []
    for index in range(8):
        # Start waiters one at a time and only go on once this one is queued.
        def wait(i: int = index) -> None:
            conn = pool.acquire(timeout=10)
            served.append(i)
            pool.release(conn)

        thread = threading.Thread(target=wait)
        thread.start()
        threads.append(thread)
        wait_until(lambda n=index + 1: pool.stats()["waiting"] == n)
    pool.release(holder)
    for thread in threads:
        thread.join(10)
    assert served == list(range(8))


def test_released_connection_goes_to_the_waiter_not_a_newcomer(
    fake_pool: Callable[..., redispool.ConnectionPool],
) -> None:
    pool = fake_pool(max_connections=1)
    conn = pool.acquire()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=10)))
    waiter.start()
    wait_until(lambda: pool.stats()["waiting"] == 1)
    pool.release(conn)
    # A newcomer arriving right after the release must not overtake the waiter.
    with pytest.raises(redispool.PoolTimeout):
        pool.acquire(timeout=0)
    waiter.join(10)
    assert got == [conn]
    pool.release(got[0])


def test_max_waiting_refuses_at_once(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool(max_connections=1, max_waiting=2)
    conn = pool.acquire()
    results: list[Any] = []

    def borrow_and_return() -> None:
        got = pool.acquire(timeout=10)
        results.append(got)
        pool.release(got)

    threads = [threading.Thread(target=borrow_and_return) for _ in range(2)]
    for count, thread in enumerate(threads, 1):
        thread.start()
        wait_until(lambda n=count: pool.stats()["waiting"] == n)
    started = time.monotonic()
    with pytest.raises(redispool.TooManyWaiters, match="max_waiting=2"):
        pool.acquire(timeout=10)
    assert time.monotonic() - started < 1.0
    assert pool.stats()["refused"] == 1
    pool.release(conn)
    for thread in threads:
        thread.join(10)
    assert results == [conn, conn]


def test_double_release_cannot_make_two_borrowers_share(
    fake_pool: Callable[..., redispool.ConnectionPool],
) -> None:
    pool = fake_pool(max_connections=2)
    conn = pool.acquire()
    pool.release(conn)
    pool.release(conn)  # harmless
    first, second = pool.acquire(), pool.acquire()
    assert first is not second
    assert pool.stats()["size"] == 2


def test_stale_release_from_another_thread_is_ignored(
    fake_pool: Callable[..., redispool.ConnectionPool],
) -> None:
    pool = fake_pool(max_connections=1)
    conn = pool.acquire()
    pool.release(conn)
    borrowed = threading.Event()
    done = threading.Event()
    other: list[Any] = []

    def borrower() -> None:
        other.append(pool.acquire())
        borrowed.set()
        done.wait(10)
        pool.release(other[0])

    thread = threading.Thread(target=borrower)
    thread.start()
    borrowed.wait(10)
    assert other[0] is conn
    pool.release(conn)  # this thread already gave it back once: must be ignored
    assert pool.stats()["in_use"] == 1
    assert pool.stats()["double_releases"] == 1
    with pytest.raises(redispool.PoolTimeout):
        pool.acquire(timeout=0)  # still held by the other thread, not handed out twice
    done.set()
    thread.join(10)


def test_foreign_release_is_harmless(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool, other = fake_pool(), fake_pool()
    stranger = other.acquire()
    pool.release(stranger)
    pool.release(redis.Connection())
    pool.release(None)  # type: ignore[arg-type]
    assert pool.stats()["returns"] == 0
    assert other.stats()["in_use"] == 1
    other.release(stranger)


def test_release_after_reset_closes_the_forgotten_connection(
    fake_pool: Callable[..., redispool.ConnectionPool],
) -> None:
    pool = fake_pool(max_connections=1)
    conn = pool.acquire()
    pool.reset()
    fresh = pool.acquire(timeout=0)  # reset() freed the slot
    pool.release(conn)
    assert pool.stats()["in_use"] == 1
    assert conn not in pool._available_connections
    pool.release(fresh)


def test_failing_connect_frees_its_slot(make_pool: Callable[..., redispool.ConnectionPool]) -> None:
    # Nothing listens on port 1: every connect is refused.
    pool = make_pool(host="127.0.0.1", port=1, max_connections=1, timeout=0.3, fail_fast_after=None)
    for _ in range(3):
        with pytest.raises(redis.ConnectionError) as caught:
            pool.acquire()
        # The deadline passed while retrying: the caller sees the real connect error.
        assert not isinstance(caught.value, redispool.PoolTimeout)
        assert "refused" in str(caught.value).lower()
    stats = pool.stats()
    assert stats["size"] == 0 and stats["connecting"] == 0
    assert stats["connect_errors"] >= 3


def test_constructor_error_frees_its_slot(make_pool: Callable[..., redispool.ConnectionPool]) -> None:
    class Exploding(redis.Connection):
        def __init__(self, **kwargs: Any) -> None:
            raise RuntimeError("boom")

    pool = make_pool(connection_class=Exploding, max_connections=1, timeout=0.5)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            pool.acquire()
    assert pool.stats()["size"] == 0


def test_connection_context_manager_returns_and_discards_on_error(
    fake_pool: Callable[..., redispool.ConnectionPool],
) -> None:
    pool = fake_pool()
    with pool.connection() as conn:
        conn.send_command("PING")
        assert conn.read_response() == b"PONG"
    assert pool.stats()["idle"] == 1
    with pytest.raises(redis.ConnectionError), pool.connection(timeout=1) as conn:
        raise redis.ConnectionError("simulated")
    assert pool.stats()["in_use"] == 0
    assert conn not in pool._available_connections
    with pytest.raises(KeyError), pool.connection() as conn:
        raise KeyError("not a connection problem")
    assert pool.stats()["idle"] == 1


def test_shutdown_is_terminal_and_wakes_waiters(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool(max_connections=1)
    conn = pool.acquire()
    errors_seen: list[BaseException] = []

    def wait() -> None:
        try:
            pool.acquire(timeout=30)
        except BaseException as error:
            errors_seen.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    wait_until(lambda: pool.stats()["waiting"] == 1)
    pool.shutdown()
    thread.join(10)
    assert isinstance(errors_seen[0], redispool.PoolClosed)
    with pytest.raises(redispool.PoolClosed):
        pool.acquire()
    pool.release(conn)  # still harmless
    assert pool.stats()["size"] == 0


def test_close_keeps_the_pool_usable(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool()
    client = redis.Redis(connection_pool=pool)
    client.set("k", "1")
    pool.close()
    assert pool.stats()["idle"] == 0
    assert client.get("k") == b"1"


def test_lock_is_reentrant(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool()
    with pool._lock:
        conn = pool.get_connection()  # redis-py cluster code holds _lock while calling in
        pool.release(conn)


def test_stress_invariants(fake_pool: Callable[..., redispool.ConnectionPool]) -> None:
    pool = fake_pool(max_connections=8, timeout=30)
    holders: dict[int, int] = {}
    guard = threading.Lock()
    violations: list[str] = []
    peak = [0]
    start = threading.Barrier(64)

    def work() -> None:
        start.wait()
        for _ in range(300):
            conn = pool.acquire()
            with guard:
                if id(conn) in holders:
                    violations.append("two holders")
                holders[id(conn)] = threading.get_ident()
                peak[0] = max(peak[0], len(holders))
            with guard:
                del holders[id(conn)]
            pool.release(conn)

    threads = [threading.Thread(target=work) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stats = pool.stats()
    assert not violations
    assert peak[0] <= 8
    assert stats["size"] <= 8 and stats["in_use"] == 0 and stats["waiting"] == 0
    assert stats["borrows"] == stats["returns"] == 64 * 300


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt without stopping pytest."""


def test_interrupted_waiter_passes_on_what_it_was_handed(
    fake_pool: Callable[..., redispool.ConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = fake_pool(max_connections=1)
    held = pool.acquire()

    class Signal:
        def acquire(self, timeout: float = -1) -> bool:
            pool.release(held)  # the handoff lands...
            raise Interrupt  # ...just as the waiting thread is interrupted

        def release(self) -> None:
            pass

    monkeypatch.setattr(redispool._slots, "new_signal", Signal)
    with pytest.raises(Interrupt):
        pool.acquire(timeout=5)
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["idle"] == 1 and stats["waiting"] == 0
    assert stats["borrows"] == stats["returns"] == 1
    assert pool.acquire(timeout=0) is held


def test_interrupted_health_check_frees_the_slot(
    fake_pool: Callable[..., redispool.ConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = fake_pool(max_connections=1)
    pool.release(pool.acquire())

    def interrupted(conn: Any, deadline: float | None = None) -> str | None:
        raise Interrupt

    monkeypatch.setattr(pool, "_check_out", interrupted)
    with pytest.raises(Interrupt):
        pool.acquire()
    monkeypatch.undo()
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["size"] == 0
    assert pool.acquire(timeout=0) is not None
