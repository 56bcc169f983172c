"""Safe retries: reads survive a lost connection, writes are never repeated.

Faults are real: a loopback proxy loses the reply to one chosen command after the server
has run it (so a retry would show as a second execution in ``INFO commandstats``), or
``CLIENT KILL`` cuts a connection while its command is blocked on the server. Each test
owns its server, so the command counts are exact.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import tenacity
from redis.backoff import NoBackoff
from redis.retry import Retry

import redispool
from redispool._server import RedisServer


class FaultProxy:
    """A loopback TCP proxy that can lose the reply to a command containing ``marker``.

    ``lose_reply(marker, times)``: the next ``times`` requests containing ``marker`` reach
    the server and run, but their reply is dropped; with ``close=True`` the client's
    connection is then closed (the client sees EOF), else it stays open and silent (the
    client's read times out).
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker = b""
        self._times = 0
        self._close = True
        self._stopped = threading.Event()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply(self, marker: str, times: int = 1, close: bool = True) -> None:
        with self._lock:
            self._marker, self._times, self._close = marker.encode(), times, close

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        doomed = silent = False
        try:
            while not self._stopped.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        with self._lock:
                            if self._times and self._marker in data:
                                self._times -= 1
                                doomed = True
                                close = self._close
                        upstream.sendall(data)
                    elif doomed:
                        doomed = False
                        if close:
                            return  # the reply is lost and the connection with it
                        silent = True
                    elif not silent:
                        client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._stopped.set()
        self.listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def proxy(own_server: RedisServer) -> Iterator[FaultProxy]:
    p = FaultProxy(own_server.port)
    yield p
    p.close()


@pytest.fixture
def admin(own_server: RedisServer) -> Iterator[redis.Redis]:
    r = redis.Redis(port=own_server.port)
    yield r
    r.close()


def calls(admin: redis.Redis, command: str) -> int:
    stats = admin.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def make_client(url: str, **kwargs: Any) -> redispool.Client:
    # No PING at checkout: its reply must not be the one the proxy loses.
    kwargs.setdefault("ping_after_idle", None)
    kwargs.setdefault("protocol", 2)
    return redispool.Client.from_url(url, **kwargs)


# ---------------------------------------------------------------- reads are retried


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_read_survives_a_lost_connection(
    proxy: FaultProxy, admin: redis.Redis, key: str, protocol: int
) -> None:
    admin.set(key, "value")
    with make_client(proxy.url, protocol=protocol) as client:
        client.ping()
        proxy.lose_reply(key)
        assert client.get(key) == b"value"
        stats = client.pool.stats()
    assert calls(admin, "get") == 2  # run twice: once lost, once answered
    assert stats["returned_disconnected"] == 1  # the broken connection was not pooled
    assert stats["connects"] == 2  # the retry ran on a fresh connection
    assert stats["in_use"] == 0


def test_read_survives_a_timeout(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    admin.set(key, "value")
    with make_client(proxy.url, socket_timeout=0.3) as client:
        client.ping()
        proxy.lose_reply(key, close=False)  # the reply never comes: the read times out
        assert client.get(key) == b"value"
    assert calls(admin, "get") == 2


def test_blocked_read_survives_client_kill(own_server: RedisServer, admin: redis.Redis, key: str) -> None:
    stream = key + "stream"
    result: list[Any] = []
    with redispool.Client.from_url(own_server.url, protocol=2) as client:
        reader = threading.Thread(target=lambda: result.append(client.xread({stream: "$"}, block=30_000)))
        reader.start()
        try:
            first = _blocked_xread_client(admin, exclude=None)
            assert admin.client_kill_filter(_id=first) == 1  # cut it while the server blocks it
            _blocked_xread_client(admin, exclude=first)  # the retry, on another connection
            entry = admin.xadd(stream, {"f": "v"})
        finally:
            reader.join(timeout=60)
        assert result == [[[stream.encode(), [(entry, {b"f": b"v"})]]]]
        assert client.pool.stats()["returned_disconnected"] == 1
        # Exactly one retry, on one fresh connection. (Not INFO commandstats: Redis 8.2
        # never counts a command killed while blocked there; 7.0 does.)
        assert client.pool.stats()["connects"] == 2


def _blocked_xread_client(admin: redis.Redis, exclude: int | None) -> int:
    """Poll CLIENT LIST until a client other than ``exclude`` is blocked in XREAD.

    There is no event for "the server blocked a client", so poll with a deadline."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for info in admin.client_list():
            if info.get("cmd") == "xread" and "b" in info.get("flags", "") and int(info["id"]) != exclude:
                return int(info["id"])
        time.sleep(0.01)
    raise AssertionError("no client blocked in XREAD within 30s")


def test_read_survives_server_restart(own_server: RedisServer, key: str) -> None:
    with redispool.Client.from_url(own_server.url) as client:
        client.set(key, 1)
        own_server.restart()  # every pooled socket is now dead
        assert client.get(key) is None  # a new, empty server answered
        assert client.pool.stats()["in_use"] == 0


def test_read_only_script_is_retried(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    admin.set(key, "v")
    with make_client(proxy.url) as client:
        client.ping()
        proxy.lose_reply(key)
        assert client.eval_ro("return redis.call('GET', KEYS[1])", 1, key) == b"v"
    assert calls(admin, "eval_ro") == 2


# ---------------------------------------------------------------- writes are not


@pytest.mark.parametrize(
    "command, effect",
    [
        ("incrby", lambda c, k: c.incr(k)),  # redis-py sends INCR as INCRBY
        ("lpush", lambda c, k: c.lpush(k, "x")),
        ("eval", lambda c, k: c.eval("return redis.call('INCR', KEYS[1])", 1, k)),
    ],
    ids=["incr", "lpush", "eval"],
)
def test_write_is_never_retried(
    proxy: FaultProxy, admin: redis.Redis, key: str, command: str, effect: Any
) -> None:
    with make_client(proxy.url) as client:
        client.ping()
        proxy.lose_reply(key)
        with pytest.raises(redis.ConnectionError):
            effect(client, key)
        assert client.pool.stats()["in_use"] == 0
    assert calls(admin, command) == 1  # it ran once on the server; nobody ran it again
    value = admin.lrange(key, 0, -1) if command == "lpush" else admin.get(key)
    assert value in (b"1", [b"x"])


def test_write_timeout_is_not_retried(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    with make_client(proxy.url, socket_timeout=0.3) as client:
        client.ping()
        proxy.lose_reply(key, close=False)
        with pytest.raises(redis.TimeoutError):
            client.incr(key)
    assert admin.get(key) == b"1"


def test_blocking_write_is_not_retried(own_server: RedisServer, admin: redis.Redis, key: str) -> None:
    # BLPOP pops: after its connection is cut, a retry would swallow the next element.
    errors: list[BaseException] = []
    with redispool.Client.from_url(own_server.url, protocol=2) as client:

        def pop() -> None:
            try:
                client.blpop([key], 30)
            except redis.ConnectionError as error:
                errors.append(error)

        popper = threading.Thread(target=pop)
        popper.start()
        deadline = time.monotonic() + 30
        victim = None
        while victim is None and time.monotonic() < deadline:  # no event for "blocked"
            victim = next((int(c["id"]) for c in admin.client_list() if c.get("cmd") == "blpop"), None)
            time.sleep(0.01)
        assert victim is not None
        admin.client_kill_filter(_id=victim)
        popper.join(timeout=60)
        admin.rpush(key, "precious")
        assert client.pool.stats()["connects"] == 1  # no second BLPOP on a fresh connection
    assert len(errors) == 1
    assert admin.lrange(key, 0, -1) == [b"precious"]


def test_connection_level_retry_of_a_shared_pool_is_bypassed(
    proxy: FaultProxy, admin: redis.Redis, key: str
) -> None:
    # The user's pool asks redis-py to retry everything 3 times; plain commands through
    # Client still run once: the client's policy is the only one for them.
    pool = redispool.ConnectionPool.from_url(proxy.url, retry=Retry(NoBackoff(), 3), ping_after_idle=None)
    client = redispool.Client(connection_pool=pool)
    try:
        client.ping()
        proxy.lose_reply(key)
        with pytest.raises(redis.ConnectionError):
            client.incr(key)
    finally:
        pool.shutdown()
    assert calls(admin, "incrby") == 1


# ---------------------------------------------------------------- the policy


def test_retry_off(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    with make_client(proxy.url, retry=None) as client:
        assert client.retry_policy is None
        client.ping()
        proxy.lose_reply(key)
        with pytest.raises(redis.ConnectionError):
            client.get(key)
    assert calls(admin, "get") == 1


def test_attempts_are_bounded(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    policy = redispool.RetryPolicy(attempts=3, backoff=0.01, jitter=0.01)
    with make_client(proxy.url, retry=policy) as client:
        client.ping()
        proxy.lose_reply(key, times=10)
        with pytest.raises(redis.ConnectionError):
            client.get(key)
        assert client.pool.stats()["in_use"] == 0
    assert calls(admin, "get") == 3


def test_deadline_stops_retries(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    policy = redispool.RetryPolicy(attempts=1000, deadline=0.3, backoff=0.05, max_backoff=0.1, jitter=0)
    with make_client(proxy.url, retry=policy) as client:
        client.ping()
        proxy.lose_reply(key, times=1000)
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            client.get(key)
        elapsed = time.monotonic() - started
    # Waits of 0.05, 0.1, 0.1, ... fit at most a handful of attempts into 0.3 s.
    assert 2 <= calls(admin, "get") <= 8
    assert elapsed < 10  # generous: the bound is the deadline, not the attempt count


def test_declared_idempotent_write_is_retried(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    policy = redispool.RetryPolicy(idempotent={"set", "client setname"})
    with make_client(proxy.url, retry=policy) as client:
        client.ping()
        proxy.lose_reply(key)
        assert client.set(key, "v") is True
    assert calls(admin, "set") == 2


def test_tenacity_retrying_is_accepted(proxy: FaultProxy, admin: redis.Redis, key: str) -> None:
    slept: list[float] = []
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(2),
        wait=tenacity.wait_fixed(0.01),
        sleep=slept.append,  # tenacity's own test hook: record instead of sleeping
    )
    with make_client(proxy.url, retry=retrying) as client:
        client.ping()
        proxy.lose_reply(key)
        assert client.get(key) is None
        assert slept == [0.01]
        proxy.lose_reply(key, times=5)
        with pytest.raises(redis.ConnectionError):  # the redis-py error, not tenacity.RetryError
            client.get(key)
        proxy.lose_reply(key, times=0)
        with pytest.raises(redis.ResponseError):  # a server error is never retried
            client.execute_command("GET", key, "extra-argument")
        assert int(admin.info("commandstats")["cmdstat_get"]["rejected_calls"]) == 1
    assert calls(admin, "get") == 2 + 2


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="attempts"):
        redispool.RetryPolicy(attempts=0)
    with pytest.raises(TypeError, match="attempts"):
        redispool.RetryPolicy(attempts=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="deadline"):
        redispool.RetryPolicy(deadline=0)
    with pytest.raises(ValueError, match="backoff"):
        redispool.RetryPolicy(backoff=-1)
    with pytest.raises(ValueError, match="jitter"):
        redispool.RetryPolicy(jitter=float("nan"))
    with pytest.raises(TypeError, match="idempotent"):
        redispool.RetryPolicy(idempotent="SET")
    with pytest.raises(TypeError, match="retrying"):
        redispool.RetryPolicy(retrying=object())  # type: ignore[arg-type]
    assert redispool.RetryPolicy(idempotent=["set", "CLIENT SETNAME"]).idempotent == frozenset(
        {"SET", "CLIENT|SETNAME"}
    )


def test_pool_errors_are_not_retried(own_server: RedisServer, key: str) -> None:
    with redispool.Client.from_url(own_server.url, max_connections=1, timeout=0) as client:
        with client.pinned(), pytest.raises(redispool.PoolTimeout):
            client.get(key)
        assert client.pool.stats()["timeouts"] == 1  # one attempt, not three
