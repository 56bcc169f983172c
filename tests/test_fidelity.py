"""Drop-in fidelity with redis-py: custom connection classes, keyword checks, the
max_connections wording, AfterConnectionReleasedEvent and the shape of ``repr(pool)``."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

import redispool
from redispool import _events
from redispool._server import RedisServer

from .support import wait_until

try:  # redis-py >= 5.3
    from redis.event import AfterConnectionReleasedEvent, EventDispatcher, EventListenerInterface
except ImportError:  # pragma: no cover - depends on the installed redis-py
    AfterConnectionReleasedEvent = None  # type: ignore[assignment,misc]
    EventDispatcher = None  # type: ignore[assignment,misc]
    EventListenerInterface = object  # type: ignore[assignment,misc]

PoolFactory = Callable[..., redispool.ConnectionPool]


def _address(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {"host": parts.hostname, "port": parts.port}


@pytest.fixture
def no_attribute_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail if the pool swallowed an AttributeError anywhere (it logs them at DEBUG)."""
    caplog.set_level(logging.DEBUG, logger="redispool")
    yield
    for record in caplog.records:
        error = record.exc_info[1] if record.exc_info else None
        assert not isinstance(error, AttributeError), record.getMessage()


# ---------------------------------------------------------------- 1. connect() is called


class CountingConnection(redis.Connection):
    connects = 0

    def connect(self) -> None:
        CountingConnection.connects += 1
        super().connect()


def test_an_overridden_connect_is_called(redis_url: str, make_pool: PoolFactory) -> None:
    CountingConnection.connects = 0
    pool = make_pool(connection_class=CountingConnection, **_address(redis_url))
    conn = pool.acquire()
    try:
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", "PONG")
    finally:
        pool.release(conn)
    assert CountingConnection.connects == 1


class FailsFirst(redis.Connection):
    attempts = 0

    def connect(self) -> None:
        FailsFirst.attempts += 1
        if FailsFirst.attempts == 1:
            raise redis.ConnectionError("first connect refused by the test double")
        super().connect()


def test_a_class_that_fails_once_shows_the_failure(redis_url: str, make_pool: PoolFactory) -> None:
    FailsFirst.attempts = 0
    pool = make_pool(connection_class=FailsFirst, timeout=5, **_address(redis_url))
    client = redispool.Client(connection_pool=pool)
    assert client.ping() is True
    stats = pool.stats()
    assert FailsFirst.attempts == 2  # the pool's backoff retried it
    assert stats["connect_errors"] == 1 and stats["connects"] == 1


class CountsDials(redis.Connection):
    dials = 0

    def _connect(self) -> Any:
        CountsDials.dials += 1
        return super()._connect()


def test_redis_py_connect_retries_stay_out_of_the_way(make_pool: PoolFactory) -> None:
    # A port nothing listens on; the class asks redis-py for 5 retries per connect.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    CountsDials.dials = 0
    pool = make_pool(
        connection_class=CountsDials,
        host="127.0.0.1",
        port=port,
        retry=Retry(ExponentialBackoff(cap=0.01, base=0.001), 5),
        fail_fast_after=None,
    )
    with pytest.raises(redis.ConnectionError):
        pool.acquire(timeout=0.4)
    # One dial per attempt of the pool's own backoff: every failure is seen and counted.
    assert CountsDials.dials == pool.stats()["connect_errors"] >= 2


def test_the_deadline_bounds_a_users_connect_and_handshake(make_pool: PoolFactory) -> None:
    # A listener that completes the TCP handshake but never answers the Redis handshake.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        CountingConnection.connects = 0
        pool = make_pool(
            connection_class=CountingConnection, host="127.0.0.1", port=port, socket_timeout=30, protocol=3
        )
        started = time.monotonic()
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            pool.acquire(timeout=0.5)
        elapsed = time.monotonic() - started
    assert CountingConnection.connects >= 1
    assert elapsed < 5.0  # socket_timeout=30 would take 30 s per attempt


class NotesOnConnect(redis.Connection):
    called = False

    def on_connect(self) -> None:
        NotesOnConnect.called = True
        super().on_connect()


def test_on_connect_override_is_called_exactly_when_redis_py_calls_it(
    redis_url: str, make_pool: PoolFactory
) -> None:
    NotesOnConnect.called = False
    theirs = NotesOnConnect(**_address(redis_url))  # what redis-py's pool does: connect()
    theirs.connect()
    theirs.disconnect()
    redis_py_calls_it = NotesOnConnect.called
    NotesOnConnect.called = False
    pool = make_pool(connection_class=NotesOnConnect, **_address(redis_url))
    pool.release(pool.acquire())
    assert NotesOnConnect.called is redis_py_calls_it
    if redis.VERSION >= (6, 0):  # connect() goes through on_connect_check_health()
        assert redis_py_calls_it is False


# ---------------------------------------------------------------- 2. classes without _sock


class DummyConnection:
    """Shaped like the test double in redis-py's own tests/test_connection_pool.py."""

    description_format = "DummyConnection<>"

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def connect(self) -> None:
        pass

    def can_read(self) -> bool:
        return False


def test_a_class_without_sock_is_pooled(make_pool: PoolFactory, no_attribute_errors: None) -> None:
    pool = make_pool(connection_class=DummyConnection, max_connections=2, ping_after_idle=0, foo="bar")
    first = pool.acquire()
    assert first.kwargs["foo"] == "bar"
    second = pool.acquire()
    with pytest.raises(redispool.PoolTimeout):
        pool.acquire(timeout=0)
    pool.release(first)
    assert pool.acquire() is first  # reused: nothing to probe, nothing to PING
    pool.release(first)
    pool.release(second)
    pool.run_maintenance()
    pool.drain()
    pool.disconnect()
    assert pool.stats()["idle"] == 0 and pool.stats()["in_use"] == 0
    assert "DummyConnection" in repr(pool)


class Wrapped:
    """A real connection behind a class that has no ``_sock`` of its own."""

    def __init__(self, **kwargs: Any) -> None:
        self._inner = redis.Connection(**kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "_sock":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_class_without_sock_talks_to_a_real_server(
    redis_url: str, make_pool: PoolFactory, key: str, no_attribute_errors: None
) -> None:
    pool = make_pool(connection_class=Wrapped, max_connections=2, ping_after_idle=0, **_address(redis_url))
    client = redispool.Client(connection_pool=pool)
    client.set(key, "v")
    assert client.get(key) == b"v"
    assert client.delete(key) == 1
    assert pool.stats()["connects"] == 1 and pool.stats()["health_eof"] == 0
    pool.run_maintenance()


# ---------------------------------------------------------------- 3. keywords


def test_a_misspelt_keyword_is_refused_at_construction(redis_url: str) -> None:
    with pytest.raises(TypeError, match=r"'max_conections'.*did you mean 'max_connections'"):
        redispool.ConnectionPool(max_conections=3)
    with pytest.raises(TypeError, match=r"'max_conections'.*did you mean 'max_connections'"):
        redispool.Client.from_url(redis_url, max_conections=3)
    with pytest.raises(TypeError, match=r"'socket_timeot'.*did you mean 'socket_timeout'"):
        redispool.ConnectionPool.from_url(redis_url, socket_timeot=3)
    with pytest.raises(TypeError, match="did you mean 'ssl_certfile'"):
        redispool.ConnectionPool(connection_class=redis.SSLConnection, ssl_certfle="x")


class WithExtra(redis.Connection):
    def __init__(self, *, tenant: str = "", **kwargs: Any) -> None:
        self.tenant = tenant
        super().__init__(**kwargs)


def test_keywords_follow_the_connection_class(redis_url: str, make_pool: PoolFactory) -> None:
    # A subclass's own keyword is accepted; a typo of it, or of a base keyword, is not.
    pool = make_pool(redis_url, connection_class=WithExtra, tenant="a")
    conn = pool.acquire()
    assert conn.tenant == "a"
    pool.release(conn)
    with pytest.raises(TypeError, match="did you mean 'tenant'"):
        redispool.ConnectionPool(connection_class=WithExtra, tenat="a")
    # A class whose **kwargs go nowhere accepts anything, from keywords and URLs alike.
    anything = make_pool("redis://localhost:6379/0?colour=blue", connection_class=DummyConnection, size=3)
    assert anything.connection_kwargs["colour"] == "blue" and anything.connection_kwargs["size"] == 3
    with pytest.raises(ValueError, match="did you mean 'tenant'"):
        redispool.ConnectionPool.from_url("redis://localhost:6379/0?tenat=a", connection_class=WithExtra)


def test_a_bad_url_option_gets_redispools_message() -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a number, not 'abc' \(in the Redis URL\)$"):
        redispool.ConnectionPool.from_url("redis://localhost:6379/0?timeout=abc")
    pool = redispool.ConnectionPool.from_url(
        "redis://localhost:6379/0?timeout=1.5&socket_timeout=2", timeout=9
    )
    assert pool.options.timeout == 1.5  # the URL wins, as in redis-py
    assert pool.connection_kwargs["socket_timeout"] == 2.0 and "timeout" not in pool.connection_kwargs
    pool.shutdown()


def test_sentinel_and_cluster_plumbing_keywords_pass() -> None:
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", 1)], socket_timeout=0.1)
    pool = redispool.SentinelConnectionPool("mymaster", sentinel, socket_timeout=0.2, max_connections=3)
    assert pool.options.max_connections == 3
    assert "mymaster(master)" in repr(pool)
    node_pool = redispool.cluster_pool_class(max_connections=4)(host="127.0.0.1", port=7000)
    assert node_pool.options.max_connections == 4
    for each in (pool, node_pool):
        assert re.fullmatch(r"<\[.*\] redispool\.\w+\(<[\w.]+\(.*\)>\)>", repr(each)), repr(each)
        each.shutdown()


# ---------------------------------------------------------------- 4. max_connections wording

REDIS_PY_WORDING = '"max_connections" must be a positive integer'


@pytest.mark.parametrize(
    ("value", "error", "detail"),
    [
        (0, ValueError, "must be greater than 0, not 0"),
        (-1, ValueError, "must be greater than 0, not -1"),
        (2.5, TypeError, "must be a whole number, not 2.5"),
        (True, TypeError, "must be a number, not bool"),
        ("many", ValueError, "must be a whole number, not 'many'"),
    ],
)
def test_max_connections_errors_use_redis_py_wording(value: Any, error: type[Exception], detail: str) -> None:
    with pytest.raises(error) as caught:
        redispool.ConnectionPool(max_connections=value)
    assert str(caught.value).startswith(REDIS_PY_WORDING) and detail in str(caught.value)


def test_max_connections_wording_from_url_and_resize() -> None:
    with pytest.raises(ValueError, match=re.escape(REDIS_PY_WORDING)):
        redispool.ConnectionPool.from_url("redis://localhost:6379/0?max_connections=x")
    pool = redispool.ConnectionPool(max_connections=2)
    with pytest.raises(ValueError, match=re.escape(REDIS_PY_WORDING)):
        pool.resize(max_connections=0)
    pool.shutdown()


# ---------------------------------------------------------------- 5. release events


# Version features, not missing prerequisites: redis-py < 5.3 has no redis.event, and
# 5.3's dispatcher has only its built-in listeners (no register_listeners).
needs_events = pytest.mark.skipif(
    AfterConnectionReleasedEvent is None, reason="redis-py < 5.3: no redis.event"
)
needs_listeners = pytest.mark.skipif(
    not hasattr(EventDispatcher, "register_listeners"), reason="this redis-py has no register_listeners"
)


class Recorder(EventListenerInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def listen(self, event: Any) -> None:
        self.seen.append(event.connection)


@needs_listeners
def test_a_registered_listener_sees_every_release(redis_url: str, make_pool: PoolFactory) -> None:
    pool = make_pool(redis_url, max_connections=2)
    assert pool._release_events == _events.NEVER  # redis-py's own re-auth listener alone
    recorder = Recorder()
    pool._event_dispatcher.register_listeners({AfterConnectionReleasedEvent: [recorder]})
    assert pool._release_events == _events.ALWAYS
    client = redispool.Client(connection_pool=pool)
    for _ in range(5):
        assert client.ping() is True
    first, second = pool.acquire(), pool.acquire()
    pool.release(first)
    pool.release(second)
    pool.release(second)  # a double release is ignored, so it is not an event either
    assert len(recorder.seen) == 7 and recorder.seen[-2:] == [first, second]
    if hasattr(pool._event_dispatcher, "unregister_listeners"):
        pool._event_dispatcher.unregister_listeners({AfterConnectionReleasedEvent: [recorder]})
        assert pool._release_events == _events.NEVER
        client.ping()
        assert len(recorder.seen) == 7


@needs_listeners
def test_listeners_given_at_construction_and_shared_dispatchers(make_pool: PoolFactory) -> None:
    recorder = Recorder()
    dispatcher = EventDispatcher(event_listeners={AfterConnectionReleasedEvent: [recorder]})
    early = make_pool(event_dispatcher=dispatcher)
    assert early._release_events == _events.ALWAYS
    shared = EventDispatcher()
    pools = [make_pool(event_dispatcher=shared) for _ in range(2)]
    assert [p._release_events for p in pools] == [_events.NEVER] * 2
    shared.register_listeners({AfterConnectionReleasedEvent: [Recorder()]})
    assert [p._release_events for p in pools] == [_events.ALWAYS] * 2


class Failing(EventListenerInterface):  # type: ignore[misc]
    def listen(self, event: Any) -> None:
        raise redis.AuthenticationError("re-auth refused by the test")


@needs_listeners
def test_a_failing_listener_never_breaks_release(redis_url: str, make_pool: PoolFactory) -> None:
    pool = make_pool(redis_url)
    pool._event_dispatcher.register_listeners({AfterConnectionReleasedEvent: [Failing()]})
    conn = pool.acquire()
    pool.release(conn)  # must not raise
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["idle"] == 0  # its authentication is unknown: closed


class Token:
    """What redis-py's streaming credential providers hand over (``TokenInterface``)."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def try_get(self, key: str) -> str:
        return self.user

    def get_value(self) -> str:
        return self.password


@needs_events
def test_re_authentication_on_release(own_server: RedisServer, make_pool: PoolFactory) -> None:
    from redis.credentials import StreamingCredentialProvider

    class Streaming(StreamingCredentialProvider):  # type: ignore[misc]
        def get_credentials(self) -> tuple[str, str]:
            return ("first", "pw-1")

        def on_next(self, callback: Any) -> None:
            pass

        def on_error(self, callback: Any) -> None:
            pass

        def is_streaming(self) -> bool:
            return True

    admin = redis.Redis(host="127.0.0.1", port=own_server.port)
    admin.execute_command("ACL SETUSER", "first", "on", ">pw-1", "+@all", "~*")
    admin.execute_command("ACL SETUSER", "second", "on", ">pw-2", "+@all", "~*")
    pool = make_pool(host="127.0.0.1", port=own_server.port, credential_provider=Streaming())
    assert pool._release_events == _events.RE_AUTH
    idle, busy = pool.acquire(), pool.acquire()
    pool.release(idle)
    # What redis-py's RegisterReAuthForPooledConnections does when a new token streams in:
    # idle connections re-authenticate now, borrowed ones when they are released.
    pool.re_auth_callback(Token("second", "pw-2"))
    busy.send_command("ACL WHOAMI")
    assert busy.read_response() in (b"first", "first")
    pool.release(busy)
    for conn in (pool.acquire(), pool.acquire()):
        conn.send_command("ACL WHOAMI")
        assert conn.read_response() in (b"second", "second")
    admin.close()


# ---------------------------------------------------------------- 6. repr


def test_repr_keeps_redis_py_shape_with_live_state(make_pool: PoolFactory) -> None:
    pool = make_pool(host="localhost", port=6379, db=0, password="hunter2", name="web", max_connections=3)
    text = repr(pool)
    state = "web: 0 in use, 0 idle, 0 connecting, 0 waiting, max 3"
    assert text.startswith(f"<[{state}] redispool.ConnectionPool(")
    assert text.endswith(")>)>") and "hunter2" not in text and "password=<REDACTED>" in text
    match = re.fullmatch(r"<\[(.*)\] (.*?)\(<(.*?)\((.*)\)>\)>", text)
    assert match is not None
    assert match.group(2) == "redispool.ConnectionPool" and match.group(3) == "redis.connection.Connection"
    assert match.group(4).startswith("host=localhost,port=6379,db=0")
    # The regex redis-py's own test_connect_from_url_tcp parses a pool's repr with.
    parsed = re.match(r"< .*?([^\.]+) \( < .*?([^\.]+) \( (.+) \) > \) >", text, re.VERBOSE)
    assert parsed is not None and parsed.groups()[:2] == ("ConnectionPool", "Connection")
    # What redis-py's own test asserts: the connection keywords appear in order.
    unix = make_pool(connection_class=redis.UnixDomainSocketConnection, path="abc", db=0)
    assert "(<redis.connection.UnixDomainSocketConnection(path=abc,db=0" in repr(unix)


def test_repr_shows_live_counts(redis_url: str, make_pool: PoolFactory) -> None:
    pool = make_pool(redis_url, max_connections=3, name="live")
    held = [pool.acquire() for _ in range(2)]
    pool.release(held.pop())
    assert repr(pool).startswith("<[live: 1 in use, 1 idle, 0 connecting, 0 waiting")

    def borrow() -> None:
        pool.release(pool.acquire(timeout=5))

    held += [pool.acquire(), pool.acquire()]
    worker = threading.Thread(target=borrow)
    worker.start()
    wait_until(lambda: "3 in use, 0 idle, 0 connecting, 1 waiting" in repr(pool))
    for conn in held:
        pool.release(conn)
    worker.join()
    assert "0 in use, 3 idle, 0 connecting, 0 waiting" in repr(pool)
