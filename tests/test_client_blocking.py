"""Blocking commands through Client: a block time beyond socket_timeout is not a timeout.

The server does the waiting in every test (a blocking command's own timeout), so no test
sleeps; plain redis.Redis is shown failing the same call, which is the trap being fixed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import redispool

SOCKET_TIMEOUT = 0.2
BLOCK = 0.5  # seconds; comfortably longer than SOCKET_TIMEOUT


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(redis_url: str, request: pytest.FixtureRequest) -> Iterator[redispool.Client]:
    c = redispool.Client.from_url(redis_url, protocol=request.param, socket_timeout=SOCKET_TIMEOUT)
    yield c
    c.pool.shutdown()


def _socket_timeouts(client: redispool.Client) -> list[float | None]:
    return [conn._sock.gettimeout() for conn in client.pool._available_connections]


def test_plain_redis_py_times_out(redis_url: str, key: str) -> None:
    plain = redis.Redis.from_url(redis_url, socket_timeout=SOCKET_TIMEOUT, retry=None)
    try:
        with pytest.raises(redis.TimeoutError):
            plain.blpop([key], BLOCK)
    finally:
        plain.close()


BLOCKING_CALLS: dict[str, Callable[[redispool.Client, str], Any]] = {
    "blpop": lambda c, k: c.blpop([k], BLOCK),
    "brpop": lambda c, k: c.brpop([k], BLOCK),
    "brpoplpush": lambda c, k: c.brpoplpush(k, k + "dst", BLOCK),
    "blmove": lambda c, k: c.blmove(k, k + "dst", BLOCK, "LEFT", "RIGHT"),
    "bzpopmin": lambda c, k: c.bzpopmin([k], BLOCK),
    "bzpopmax": lambda c, k: c.bzpopmax([k], BLOCK),
    "blmpop": lambda c, k: c.blmpop(BLOCK, 1, k, direction="LEFT"),
    "bzmpop": lambda c, k: c.bzmpop(BLOCK, 1, [k], min=True),
    "xread": lambda c, k: c.xread({k: "$"}, block=int(BLOCK * 1000)),
    "wait": lambda c, k: c.wait(1, int(BLOCK * 1000)),  # no replica exists: waits it out
}


@pytest.mark.parametrize("call", list(BLOCKING_CALLS), ids=list(BLOCKING_CALLS))
def test_block_time_beyond_socket_timeout(client: redispool.Client, key: str, call: str) -> None:
    started = time.monotonic()
    result = BLOCKING_CALLS[call](client, key)
    assert time.monotonic() - started >= BLOCK * 0.9  # the server did wait; no early timeout
    assert result in (None, [], {}, 0, [None, None])
    assert _socket_timeouts(client) == [SOCKET_TIMEOUT]  # restored for the next borrower
    assert client.pool.stats()["returned_disconnected"] == 0


def test_block_forever_gets_data_pushed_later(client: redispool.Client, key: str) -> None:
    pusher = redis.Redis.from_url(_url(client))

    def push_later() -> None:
        # Redis itself waits BLOCK seconds here, longer than the reader's socket_timeout.
        pusher.blpop([key + "never"], BLOCK)
        pusher.rpush(key, "late")

    thread = threading.Thread(target=push_later)
    thread.start()
    try:
        started = time.monotonic()
        popped = client.blpop([key], 0)  # 0: block until something arrives
    finally:
        thread.join()
        pusher.close()
    assert popped in ([key.encode(), b"late"], (key.encode(), b"late"))
    assert time.monotonic() - started >= BLOCK * 0.9
    assert _socket_timeouts(client) == [SOCKET_TIMEOUT]


def test_ordinary_commands_still_time_out(own_server: Any, key: str) -> None:
    # Only blocking commands get extra time: a write the server holds back (CLIENT PAUSE
    # WRITE) still fails after socket_timeout.
    admin = redis.Redis(port=own_server.port)
    with redispool.Client.from_url(own_server.url, socket_timeout=SOCKET_TIMEOUT) as client:
        assert client.ping()
        admin.client_pause(10_000, all=False)
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                client.incr(key)
            assert time.monotonic() - started < 10  # not held for the whole pause
            assert client.get(key) in (None, b"1")  # reads still run during the pause
        finally:
            admin.client_unpause()
            admin.close()


def test_blocking_command_in_a_pipeline(client: redispool.Client, key: str) -> None:
    with client.pipeline(transaction=False) as pipe:
        pipe.blpop([key], BLOCK).blpop([key], BLOCK)
        started = time.monotonic()
        assert pipe.execute() == [None, None]
    assert time.monotonic() - started >= 2 * BLOCK * 0.9
    assert _socket_timeouts(client) == [SOCKET_TIMEOUT]


def test_blocking_command_on_a_pinned_client(client: redispool.Client, key: str) -> None:
    with client.pinned() as pinned:
        assert pinned.blpop([key], BLOCK) is None
        assert pinned.ping()
    assert _socket_timeouts(client) == [SOCKET_TIMEOUT]


def _url(client: redispool.Client) -> str:
    kw = client.pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"
