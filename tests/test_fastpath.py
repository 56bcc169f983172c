"""The pool's fast paths and its full paths, run through the same assertions.

A borrow that finds an idle connection with nothing else to do is served by
``Slots.lend_idle`` and one ``poll(0)``; a clean return reads the connection's state
without a call (see ``ConnectionPool._borrow`` and ``release``). Every test here runs
twice: on a plain pool, which takes the fast paths, and on a pool subclass that
overrides ``_check_out`` and so always takes the full paths. Both must behave alike, and
the first test proves that each pool really takes the path it is named for.

Everything goes over real sockets to a real Redis.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import redispool

from .support import wait_until


class FullPathPool(redispool.ConnectionPool):
    """Overrides a checkout check (doing nothing more), so the pool takes the full paths."""

    def _check_out(self, conn: Any, deadline: float | None = None) -> str | None:
        return super()._check_out(conn, deadline)


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["fast", "full"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pool_of(path: str, redis_url: str) -> Iterator[Callable[..., redispool.ConnectionPool]]:
    made: list[redispool.ConnectionPool] = []

    def make(**kwargs: Any) -> redispool.ConnectionPool:
        cls = redispool.ConnectionPool if path == "fast" else FullPathPool
        kwargs.setdefault("max_connections", 2)
        kwargs.setdefault("timeout", 5)
        pool = cls.from_url(redis_url, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.shutdown()


def counters(pool: redispool.ConnectionPool, *names: str) -> dict[str, Any]:
    stats = pool.stats()
    return {name: stats[name] for name in names}  # type: ignore[literal-required]


def readable(sock: Any) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_each_pool_takes_the_path_it_is_named_for(
    path: str, pool_of: Callable[..., redispool.ConnectionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = pool_of()
    pool.release(pool.get_connection())  # the first borrow opens the connection
    slow_borrows: list[Any] = []
    verdicts: list[Any] = []
    acquire, give_back = pool._acquire, pool._slots.give_back
    monkeypatch.setattr(pool, "_acquire", lambda *a: slow_borrows.append(a) or acquire(*a))
    monkeypatch.setattr(pool._slots, "give_back", lambda c, m, v: verdicts.append(v) or give_back(c, m, v))
    client = redis.Redis(connection_pool=pool)
    for n in range(20):
        assert client.set("fastpath:k", n) and client.get("fastpath:k") == str(n).encode()
    assert len(verdicts) == 40
    if path == "fast":
        assert slow_borrows == [] and verdicts == [None] * 40
    else:
        assert len(slow_borrows) == 40 and None not in verdicts
    assert counters(pool, "borrows", "returns", "connects") == {"borrows": 41, "returns": 41, "connects": 1}


def test_a_reply_left_unread_closes_the_connection_on_return(
    pool_of: Callable[..., redispool.ConnectionPool], key: str
) -> None:
    pool = pool_of()
    redis.Redis(connection_pool=pool).set(key, "mine")
    conn = pool.get_connection()
    conn.send_command("GET", key + "other")  # its reply is never read
    pool.release(conn)
    assert counters(pool, "closed_dirty", "size") == {"closed_dirty": 1, "size": 0}
    assert redis.Redis(connection_pool=pool).get(key) == b"mine"  # not the stale nil


def test_bytes_nobody_asked_for_are_caught_at_checkout(
    pool_of: Callable[..., redispool.ConnectionPool], key: str
) -> None:
    pool = pool_of(max_connections=1)
    redis.Redis(connection_pool=pool).set(key, "mine")
    conn = pool.get_connection()
    conn._sock.sendall(b"*1\r\n$4\r\nPING\r\n")  # behind the tracking's back: looks clean
    pool.release(conn)
    assert pool.stats()["idle"] == 1
    wait_until(lambda: readable(conn._sock))  # the unread +PONG has arrived
    assert redis.Redis(connection_pool=pool).get(key) == b"mine"  # not "PONG"
    assert counters(pool, "health_data", "connects") == {"health_data": 1, "connects": 2}


def test_a_connection_the_server_closed_is_replaced_at_checkout(
    pool_of: Callable[..., redispool.ConnectionPool], redis_url: str, key: str
) -> None:
    pool = pool_of(max_connections=1)
    client = redis.Redis(connection_pool=pool)
    client.set(key, "mine")
    with pool.connection() as conn:
        sock = conn._sock
        conn_id = conn.send_command("CLIENT", "ID") or conn.read_response()
    with redis.Redis.from_url(redis_url) as admin:
        assert admin.client_kill_filter(_id=conn_id) == 1
    wait_until(lambda: readable(sock))  # the FIN has arrived
    assert client.get(key) == b"mine"
    assert counters(pool, "health_eof", "connects") == {"health_eof": 1, "connects": 2}


def test_session_state_is_undone_at_checkout(
    pool_of: Callable[..., redispool.ConnectionPool], key: str
) -> None:
    pool = pool_of(max_connections=1)
    client = redis.Redis(connection_pool=pool)
    client.set(key, "db0")
    with pool.connection() as conn:
        conn.send_command("SELECT", 1)
        assert conn.read_response() in (b"OK", "OK", True)
    assert client.get(key) == b"db0"  # back on db 0, on the same connection
    assert counters(pool, "session_resets", "connects") == {"session_resets": 1, "connects": 1}


def test_a_connection_idle_past_ping_after_idle_is_pinged_first(
    pool_of: Callable[..., redispool.ConnectionPool], redis_url: str
) -> None:
    pool = pool_of(ping_after_idle=5.0)
    clock = Clock(pool._slots.clock())
    pool._slots.clock = clock
    conn = pool.get_connection()
    conn_id = conn.send_command("CLIENT", "ID") or conn.read_response()
    pool.release(conn)

    def last_command() -> str:
        with redis.Redis.from_url(redis_url) as admin:
            line = admin.execute_command("CLIENT", "LIST", "ID", conn_id, NEVER_DECODE=True)
        fields = dict(f.split(b"=", 1) for f in line.split() if b"=" in f)
        return fields[b"cmd"].decode()

    clock.now += 4.0  # idle 4 s: lent as it is
    pool.release(pool.get_connection())
    assert last_command() == "client|id"
    clock.now += 5.0  # idle 5 s: PINGed before it is lent
    pool.release(pool.get_connection())
    assert last_command() == "ping"
    assert pool.stats()["connects"] == 1


def test_lifetime_and_drain_retire_connections(pool_of: Callable[..., redispool.ConnectionPool]) -> None:
    pool = pool_of(max_lifetime=60.0)
    clock = Clock(pool._slots.clock())
    pool._slots.clock = clock
    client = redis.Redis(connection_pool=pool)
    assert client.ping()
    clock.now += 61.0  # the idle connection is past its lifetime: closed, not lent
    assert client.ping()
    assert counters(pool, "retired_lifetime", "connects", "size") == {
        "retired_lifetime": 1,
        "connects": 2,
        "size": 1,
    }
    conn = pool.get_connection()
    pool.drain()  # borrowed now: closed when it comes back
    pool.release(conn)
    assert counters(pool, "drained", "size") == {"drained": 1, "size": 0}
    assert client.ping()


def test_a_shrunk_pool_closes_returns_until_it_fits(pool_of: Callable[..., redispool.ConnectionPool]) -> None:
    pool = pool_of(max_connections=3)
    held = [pool.get_connection() for _ in range(3)]
    pool.resize(max_connections=1)
    for conn in held:
        pool.release(conn)
    assert counters(pool, "size", "idle") == {"size": 1, "idle": 1}
    for _ in range(3):  # it fits now: kept on every return
        pool.release(pool.get_connection())
    assert counters(pool, "size", "connects") == {"size": 1, "connects": 3}


def test_leak_warnings_record_the_borrowers_stack(pool_of: Callable[..., redispool.ConnectionPool]) -> None:
    pool = pool_of(leak_warning_after=60.0)
    pool.release(pool.get_connection())
    conn = pool.get_connection()
    try:
        stack = conn._rp_meta.stack
        assert stack is not None
        assert any(frame.name == "test_leak_warnings_record_the_borrowers_stack" for frame in stack)
    finally:
        pool.release(conn)


def test_a_double_release_is_ignored(pool_of: Callable[..., redispool.ConnectionPool]) -> None:
    pool = pool_of(max_connections=1)
    conn = pool.get_connection()
    pool.release(conn)
    pool.release(conn)
    assert counters(pool, "borrows", "returns", "idle", "size") == {
        "borrows": 1,
        "returns": 1,
        "idle": 1,
        "size": 1,
    }
