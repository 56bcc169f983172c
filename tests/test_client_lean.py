"""The lean command path and the full path give the same answers, errors and guarantees.

Every test here runs the same assertions through both paths (the ``path`` fixture), under
RESP2 and RESP3, against a real server. ``lean`` checks that commands really took the
lean path; ``full`` turns it off for the client, as an ineligible pool would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis
from redis.client import EMPTY_RESPONSE
from redis.connection import Connection

import redispool
from redispool import _lean
from redispool._server import RedisServer

PATHS = [pytest.param("lean", id="lean"), pytest.param("full", id="full")]
PROTOCOLS = [pytest.param(2, id="resp2"), pytest.param(3, id="resp3")]

# Busy-waits inside the server for ARGV[1] microseconds: a reply that arrives late.
SLOW_SCRIPT = """
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= tonumber(ARGV[1])
return 'late'
"""


class Runs:
    """Counts the commands that went through ``_lean.run``."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def lean_runs(monkeypatch: pytest.MonkeyPatch) -> Runs:
    runs = Runs()
    real = _lean.run

    def counting(*args: Any, **kwargs: Any) -> Any:
        runs.count += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(_lean, "run", counting)
    return runs


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def make_client(redis_url: str, path: str, protocol: int, lean_runs: Runs) -> Iterator[Any]:
    made: list[redispool.Client] = []

    def make(**kwargs: Any) -> redispool.Client:
        kwargs.setdefault("protocol", protocol)
        kwargs.setdefault("max_connections", 2)
        kwargs.setdefault("timeout", 10.0)
        client = redispool.Client.from_url(kwargs.pop("url", redis_url), **kwargs)
        made.append(client)
        assert client._lean, client._lean_refusal  # a plain pool is always eligible
        if path == "full":
            client._lean = False
        return client

    yield make
    for client in made:
        client.close()
    if path == "lean":
        assert lean_runs.count > 0, "no command took the lean path"
    else:
        assert lean_runs.count == 0, "a command took the lean path on a full-path client"


@pytest.fixture
def client(make_client: Any) -> redispool.Client:
    c: redispool.Client = make_client()
    return c


def test_replies_and_callbacks_with_options(client: redispool.Client, key: str) -> None:
    assert client.set(f"{key}s", "v") is True
    assert client.get(f"{key}s") == b"v"
    assert client.get(f"{key}missing") is None
    assert client.hset(f"{key}h", mapping={"a": "1", "b": "2"}) == 2
    assert client.hgetall(f"{key}h") == {b"a": b"1", b"b": b"2"}
    client.zadd(f"{key}z", {"x": 1.5, "y": 2})
    pairs = client.zrange(f"{key}z", 0, -1, withscores=True)
    assert [tuple(p) for p in pairs] == [(b"x", 1.5), (b"y", 2.0)]  # RESP3 gives lists
    assert client.zrevrangebyscore(f"{key}z", 5, 0, withscores=True, start=0, num=1)[0][1] == 2.0
    assert client.zscore(f"{key}z", "x") == 1.5
    assert client.exists(f"{key}s", f"{key}h", f"{key}none") == 2
    assert client.execute_command("CONFIG GET", "maxmemory-policy")  # a two-word name
    assert client.incrbyfloat(f"{key}f", 0.5) == 0.5
    assert client.get(f"{key}s") == b"v"  # still in step after all of the above


def test_custom_callback_sees_options_without_keys(client: redispool.Client, key: str) -> None:
    client.set(key, "v")
    client.set_response_callback("GET", lambda response, **options: (response, options))
    assert client.get(key) == (b"v", {})


def test_decode_responses_and_encoding(make_client: Any, key: str) -> None:
    text = make_client(decode_responses=True)
    latin = make_client(decode_responses=True, encoding="latin-1")
    text.set(key, "é")
    assert text.get(key) == "é"
    text.set(f"{key}b", b"\xe9")
    assert latin.get(f"{key}b") == "é"
    assert text.hgetall(f"{key}none") == {}


def test_never_decode_keeps_bytes(make_client: Any, key: str) -> None:
    text = make_client(decode_responses=True)
    text.set(key, "value")
    dumped = text.dump(key)
    assert isinstance(dumped, bytes)
    text.restore(f"{key}copy", 0, dumped)
    assert text.get(f"{key}copy") == "value"


def test_error_reply_is_consumed_and_the_connection_kept(client: redispool.Client, key: str) -> None:
    client.set(key, "not a number")
    before = client.pool.stats()
    with pytest.raises(redis.ResponseError, match="not an integer"):
        client.incr(key)
    assert client.execute_command("INCR", key, **{EMPTY_RESPONSE: "empty"}) == "empty"
    assert client.get(key) == b"not a number"
    after = client.pool.stats()
    assert after["closed_dirty"] == before["closed_dirty"]
    assert after["connects"] == before["connects"]


def test_unsendable_argument_raises_data_error_and_leaves_the_connection_clean(
    client: redispool.Client, key: str
) -> None:
    before = client.pool.stats()
    with pytest.raises(redis.DataError):
        client.set(key, None)  # type: ignore[arg-type]
    assert client.set(key, "ok") is True
    assert client.pool.stats()["closed_dirty"] == before["closed_dirty"]


def test_large_values_round_trip(client: redispool.Client, key: str) -> None:
    value = bytes(range(256)) * 800  # 200 KB: the pure-Python packer sends it as its own buffer
    assert client.set(key, value) is True
    assert client.get(key) == value
    assert client.set(key, memoryview(value)) is True
    assert client.get(key) == value


def test_stats_count_every_borrow_and_return(client: redispool.Client, key: str) -> None:
    before = client.pool.stats()
    for _ in range(5):
        client.get(key)
    after = client.pool.stats()
    assert after["borrows"] - before["borrows"] == 5
    assert after["returns"] - before["returns"] == 5
    assert after["in_use"] == 0


def test_timeout_mid_read_closes_the_connection_and_the_next_reply_is_fresh(
    make_client: Any, own_server: RedisServer, key: str
) -> None:
    c = make_client(url=own_server.url, max_connections=1, socket_timeout=0.2)
    c.set(key, "mine")
    before = c.pool.stats()
    with pytest.raises(redis.TimeoutError):
        c.eval(SLOW_SCRIPT, 0, 500_000)  # a write: never retried
    with redis.Redis.from_url(own_server.url) as other:
        assert other.ping()  # answered once the script is done and its late reply sent
    assert c.get(key) == b"mine"  # not the late 'late'
    after = c.pool.stats()
    assert after["connects"] == before["connects"] + 1  # the late reply's socket was closed
    assert after["borrows"] - before["borrows"] == after["returns"] - before["returns"] == 2


def test_interrupt_mid_read_never_pools_the_unread_reply(make_client: Any, key: str) -> None:
    c = make_client(max_connections=1)
    c.set(key, "mine")
    with c.pool.connection() as conn:
        parser = conn._parser
    real = parser.read_response

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        parser.read_response = real  # once
        raise KeyboardInterrupt

    parser.read_response = interrupted
    before = c.pool.stats()
    with pytest.raises(KeyboardInterrupt):
        c.set(f"{key}other", "x")  # its +OK stays unread on the socket
    assert c.get(key) == b"mine"
    after = c.pool.stats()
    assert after["connects"] == before["connects"] + 1
    assert after["idle"] + after["in_use"] <= 1


def test_push_message_before_a_reply_is_not_taken_for_it(
    make_client: Any, key: str, request: pytest.FixtureRequest
) -> None:
    if redis.__version__.startswith("5.") and _lean.HIREDIS:
        request.applymarker(
            pytest.mark.xfail(reason="redis-py 5.x's hiredis parser returns a RESP3 push as the reply")
        )
    c = make_client(max_connections=1, protocol=3)  # push messages exist only in RESP3
    with c.pool.connection() as conn:
        conn.send_command("CLIENT", "TRACKING", "ON")
        assert conn.read_response() in (b"OK", "OK")
    c.set(key, "1")
    assert c.get(key) == b"1"  # the server now tracks the key for this connection
    assert c.set(key, "2") is True  # the invalidation push comes first, then +OK
    assert c.get(key) == b"2"


def test_blocking_command_longer_than_socket_timeout(make_client: Any, key: str) -> None:
    c = make_client(socket_timeout=0.2)
    assert c.blpop([f"{key}list"], timeout=0.5) is None
    c.rpush(f"{key}list", "x")
    assert tuple(c.blpop([f"{key}list"], timeout=0.5)) == (f"{key}list".encode(), b"x")


def test_dirty_tracking_still_sees_session_commands(client: redispool.Client) -> None:
    before = client.pool.stats()
    client.execute_command("MULTI")  # left open: the connection must not be reused
    assert client.pool.stats()["closed_dirty"] == before["closed_dirty"] + 1
    assert client.ping() is True


def test_threads_each_get_their_own_replies(make_client: Any, key: str) -> None:
    c = make_client(max_connections=3)
    errors: list[str] = []
    barrier = threading.Barrier(6)

    def worker(n: int) -> None:
        mine = f"{key}{n}"
        barrier.wait()
        for i in range(200):
            c.set(mine, f"{n}:{i}")
            got = c.get(mine)
            if got != f"{n}:{i}".encode():
                errors.append(f"thread {n} step {i} got {got!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert c.pool.stats()["in_use"] == 0


# ---------------------------------------------------------------- who goes lean


class _LoggingConnection(Connection):
    seen: ClassVar[list[Any]] = []

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append(args[0])
        super().send_command(*args, **kwargs)


class _ParsingClient(redispool.Client):
    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        return ("parsed", super().parse_response(connection, command_name, **options))


def test_a_connection_class_that_overrides_io_keeps_the_full_path(redis_url: str, lean_runs: Runs) -> None:
    pool = redispool.ConnectionPool.from_url(redis_url, connection_class=_LoggingConnection)
    client = redispool.Client(connection_pool=pool)
    try:
        assert not client._lean
        assert "_LoggingConnection overrides send_command" in str(client._lean_refusal)
        client.ping()
        assert "PING" in _LoggingConnection.seen
        assert lean_runs.count == 0
    finally:
        pool.shutdown()


def test_a_client_that_overrides_parse_response_keeps_the_full_path(redis_url: str, lean_runs: Runs) -> None:
    client = _ParsingClient.from_url(redis_url)
    try:
        assert not client._lean
        assert client.ping() == ("parsed", True)
        assert lean_runs.count == 0
    finally:
        client.close()


def test_health_check_interval_keeps_the_full_path(redis_url: str) -> None:
    client = redispool.Client.from_url(redis_url, health_check_interval=30)
    try:
        assert not client._lean
        assert "health_check_interval" in str(client._lean_refusal)
        assert client.ping() is True
    finally:
        client.close()


def test_routes() -> None:
    assert _lean.route("GET") == (None, "GET")
    assert _lean.route(b"get") == (None, b"GET")
    assert _lean.route("CONFIG GET") == ((b"CONFIG", b"GET"), "CONFIG GET")
    for name in ("MULTI", "select", "CLIENT SETNAME", b"WATCH", "BLPOP", "XREAD", "SUBSCRIBE", "HIMPORT SET"):
        assert _lean.route(name) is _lean.FULL, name
    assert _lean.route(["unhashable"]) is _lean.FULL


def test_pipeline_replies_errors_and_callbacks(client: redispool.Client, key: str) -> None:
    client.set(f"{key}text", "abc")
    client.get(key)  # the fixture's lean check wants one plain command too
    with client.pipeline(transaction=False) as pipe:
        pipe.set(key, "1").incr(key).incr(f"{key}text").hset(f"{key}h", "f", "v").hgetall(f"{key}h")
        replies = pipe.execute(raise_on_error=False)
    assert replies[:2] == [True, 2]
    assert isinstance(replies[2], redis.ResponseError)
    assert replies[3:] == [1, {b"f": b"v"}]
    with client.pipeline(transaction=False) as pipe:
        pipe.get(key).incr(f"{key}text").get(key)
        with pytest.raises(redis.ResponseError, match="Command # 2"):
            pipe.execute()
    assert client.get(key) == b"2"  # every reply was read: nothing stale
    assert client.pool.stats()["closed_dirty"] == 0
    with client.pipeline() as pipe:  # MULTI/EXEC: redis-py's own path
        assert pipe.incr(key).get(key).execute() == [3, b"3"]


def test_sentinel_managed_connections_keep_the_full_path() -> None:
    from redis.sentinel import SentinelManagedConnection

    bare = redispool.Client.__new__(redispool.Client)  # eligible() looks at the class only
    refusal = _lean.eligible(bare, _FakePool(SentinelManagedConnection), redispool.Client)
    assert "SentinelManagedConnection overrides read_response" in str(refusal)


class _FakePool:
    cache = None
    connection_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, connection_class: type[Any]) -> None:
        self.connection_class = connection_class
