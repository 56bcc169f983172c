"""redispool.Client against a real server: construction, the command surface, pinning.

Every test runs under RESP2 and RESP3 where the protocol could matter.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.retry import Retry

import redispool
from redispool import _maintenance
from redispool._server import RedisServer, ServerNotFound

from .support import missing

PROTOCOLS = [pytest.param(2, id="resp2"), pytest.param(3, id="resp3")]


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def client(redis_url: str, protocol: int) -> Iterator[redispool.Client]:
    c = redispool.Client.from_url(redis_url, protocol=protocol, max_connections=4, timeout=10.0)
    yield c
    c.pool.shutdown()


# ---------------------------------------------------------------- construction


def test_from_url_builds_and_owns_its_pool(redis_url: str) -> None:
    with redispool.Client.from_url(redis_url, max_connections=5, timeout=2.0) as client:
        assert isinstance(client.pool, redispool.ConnectionPool)
        assert client.pool.max_connections == 5
        assert client.pool.timeout == 2.0
        assert client.ping() is True
        assert client.pool.stats()["idle"] == 1
    assert client.pool.stats()["idle"] == 0  # the owned pool was closed with the client


def test_keywords_build_the_pool(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    client = redispool.Client(host="127.0.0.1", port=port, max_connections=3, decode_responses=True)
    try:
        assert client.pool.max_connections == 3
        assert client.echo("hi") == "hi"  # decode_responses reached the connections
    finally:
        client.close()
    assert client.pool.stats()["idle"] == 0


def test_shared_pool_is_not_closed_by_a_client(redis_url: str, make_pool: Any, key: str) -> None:
    pool = make_pool(redis_url, max_connections=2)
    first = redispool.Client(connection_pool=pool)
    second = redispool.Client(connection_pool=pool)
    first.set(key + "a", 1)
    assert second.get(key + "a") == b"1"
    first.close()
    assert pool.stats()["idle"] == 1  # not closed: the pool belongs to the caller
    assert second.delete(key + "a") == 1
    assert pool.stats()["borrows"] == 3


def test_from_pool_takes_ownership(redis_url: str) -> None:
    pool = redispool.ConnectionPool.from_url(redis_url)
    client = redispool.Client.from_pool(pool)
    client.ping()
    client.close()
    assert pool.stats()["idle"] == 0
    pool.shutdown()


def test_construction_errors(redis_url: str, make_pool: Any) -> None:
    pool = make_pool(redis_url)
    with pytest.raises(TypeError, match="connection_pool"):
        redispool.Client(connection_pool=pool, host="127.0.0.1")
    with pytest.raises(TypeError, match=r"redispool\.ConnectionPool"):
        redispool.Client(connection_pool=redis.ConnectionPool())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_on_timeout"):
        redispool.Client(retry_on_timeout=True)
    with pytest.raises(TypeError, match="retry_on_timeout"):
        redispool.Client.from_url(redis_url + "?retry_on_timeout=true")
    with pytest.raises(TypeError, match="connection-level Retry"):
        redispool.Client(connection_pool=pool, retry=Retry(backoff=None, retries=3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry must be"):
        redispool.Client(connection_pool=pool, retry=3)
    with pytest.raises(ValueError, match="unknown query parameter"):
        redispool.Client.from_url(redis_url + "?max_conections=3")


def test_single_connection_client_and_client_method(client: redispool.Client, key: str) -> None:
    single = client.client()  # redis-py's own way to get a one-connection client
    assert isinstance(single, redispool.Client)
    assert single.set(key, 1) is True
    assert client.pool.stats()["in_use"] == 1
    single.close()
    assert client.pool.stats()["in_use"] == 0


def test_repr_names_the_pool_and_no_password(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://:s3cret@")
    pool = redispool.ConnectionPool.from_url(url)
    client = redispool.Client(connection_pool=pool)
    assert "redispool.Client" in repr(client)
    assert "s3cret" not in repr(client)
    pool.shutdown()


# ---------------------------------------------------------------- one connection per command


def test_each_plain_command_borrows_once_and_returns(client: redispool.Client, key: str) -> None:
    before = client.pool.stats()
    for i in range(10):
        client.set(key + str(i), i)
    assert client.mget([key + str(i) for i in range(10)]) == [str(i).encode() for i in range(10)]
    client.delete(*(key + str(i) for i in range(10)))
    after = client.pool.stats()
    assert after["borrows"] - before["borrows"] == 12
    assert after["returns"] - before["returns"] == 12
    assert after["in_use"] == 0
    assert after["size"] == 1  # one thread never needs a second connection


def test_errors_return_the_connection(client: redispool.Client, key: str) -> None:
    client.set(key, "text")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.lpush(key, 1)
    with pytest.raises(redis.ResponseError):
        client.incr(key)
    assert client.pool.stats()["in_use"] == 0
    assert client.get(key) == b"text"  # the same connection, clean
    assert client.pool.stats()["closed_dirty"] == 0
    client.delete(key)


def test_connections_introspection_loop(client: redispool.Client) -> None:
    client.ping()
    with client.pinned() as first, client.pinned() as second:
        first.ping()
        second.ping()
        busy = [(info.id, info.state, info.holder) for info in client.pool.connections()]  # the seed's loop
    me = threading.current_thread().name
    assert len(busy) == 2
    assert len({conn_id for conn_id, _, _ in busy}) == 2
    assert [(state, holder) for _, state, holder in busy] == [("in_use", me), ("in_use", me)]
    idle = client.pool.connections()
    assert [(info.id, info.state, info.holder) for info in idle] == [(i, "idle", None) for i, _, _ in busy]
    assert all(info.uses >= 1 and info.address for info in idle)


# ---------------------------------------------------------------- the command surface


def test_strings_hashes_lists_sets_zsets(client: redispool.Client, key: str) -> None:
    k = key
    assert client.set(k + "s", "v", ex=60) is True
    assert client.get(k + "s") == b"v"
    assert client.append(k + "s", "w") == 2
    assert client.incrby(k + "n", 5) == 5
    assert client.incrbyfloat(k + "n", 0.5) == 5.5
    assert 0 < client.ttl(k + "s") <= 60
    assert client.hset(k + "h", mapping={"a": "1", "b": "2"}) == 2
    assert client.hgetall(k + "h") == {b"a": b"1", b"b": b"2"}
    assert client.hincrby(k + "h", "a", 2) == 3
    assert client.rpush(k + "l", "x", "y", "z") == 3
    assert client.lrange(k + "l", 0, -1) == [b"x", b"y", b"z"]
    assert client.lpop(k + "l") == b"x"
    assert client.sadd(k + "set", "a", "b") == 2
    assert client.smembers(k + "set") == {b"a", b"b"}
    assert client.sismember(k + "set", "a")
    assert client.zadd(k + "z", {"one": 1, "two": 2}) == 2
    assert client.zscore(k + "z", "two") == 2.0
    assert [(m, float(s)) for m, s in client.zrange(k + "z", 0, -1, withscores=True)] == [
        (b"one", 1.0),
        (b"two", 2.0),
    ]
    assert client.zincrby(k + "z", 5, "one") == 6.0
    assert client.delete(k + "s", k + "n", k + "h", k + "l", k + "set", k + "z") == 6


def test_streams(client: redispool.Client, key: str) -> None:
    stream = key + "stream"
    first = client.xadd(stream, {"f": "1"})
    client.xadd(stream, {"f": "2"})
    assert client.xlen(stream) == 2
    assert [fields for _, fields in client.xrange(stream)] == [{b"f": b"1"}, {b"f": b"2"}]
    assert client.xgroup_create(stream, "g", id="0") is True
    entries = client.xreadgroup("g", "c", {stream: ">"}, count=1)
    if isinstance(entries, dict):  # RESP3: {stream: [[(id, fields), ...]]}
        (name, (messages,)) = next(iter(entries.items()))
    else:  # RESP2: [[stream, [(id, fields), ...]]]
        (name, messages) = entries[0]
    assert name == stream.encode()
    assert messages == [(first, {b"f": b"1"})]
    assert client.xack(stream, "g", first) == 1
    client.delete(stream)


def test_scripts(client: redispool.Client, key: str) -> None:
    assert client.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, key, 7) == 7
    script = client.register_script("return redis.call('GET', KEYS[1])")
    assert script(keys=[key]) == b"7"
    assert client.evalsha(script.sha, 1, key) == b"7"
    assert client.eval_ro("return redis.call('GET', KEYS[1])", 1, key) == b"7"
    client.delete(key)


def test_lock(client: redispool.Client, key: str) -> None:
    lock = client.lock(key + "lock", timeout=10, blocking_timeout=5)
    with lock:
        assert lock.owned()
        assert not client.lock(key + "lock", blocking=False).acquire()
    assert client.get(key + "lock") is None
    assert client.pool.stats()["in_use"] == 0


def test_pubsub_publish_and_receive(client: redispool.Client, key: str) -> None:
    channel = key + "channel"
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    first = pubsub.get_message(timeout=5)  # wait for the subscription to be acknowledged
    assert first is None or first["type"] == "subscribe"
    assert client.pool.stats()["in_use"] == 1  # pub/sub holds its connection
    assert client.publish(channel, "hello") == 1
    message = None
    for _ in range(10):
        message = pubsub.get_message(timeout=5)
        if message is not None:
            break
    assert message is not None
    assert message["data"] == b"hello"
    pubsub.close()
    stats = client.pool.stats()
    assert stats["in_use"] == 0
    assert client.ping()  # the subscribed connection was not handed to a plain command


def test_forgotten_pubsub_is_reported_as_a_leak(
    redis_url: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with redispool.Client.from_url(redis_url, leak_warning_after=30) as client:
        now = [1000.0]
        client.pool._clock = lambda: now[0]  # a clock the test moves, instead of waiting 30 s
        pubsub = client.pubsub()
        pubsub.subscribe(key + "forgotten")
        now[0] += 31
        with caplog.at_level(logging.WARNING, logger="redispool"):
            client.pool.run_maintenance()
        assert client.pool.stats()["leaks"] == 1
        assert "leak_warning_after" in caplog.text
        pubsub.close()
        assert client.pool.stats()["in_use"] == 0


@pytest.mark.parametrize("transaction", [True, False], ids=["multi", "plain"])
def test_pipeline(client: redispool.Client, key: str, transaction: bool) -> None:
    borrows = client.pool.stats()["borrows"]
    with client.pipeline(transaction=transaction) as pipe:
        pipe.set(key, 1).incr(key).incr(key).get(key)
        assert pipe.execute() == [True, 2, 3, b"3"]
    assert client.pool.stats()["borrows"] == borrows + 1  # one connection for the whole pipeline
    assert client.pool.stats()["in_use"] == 0
    client.delete(key)


def test_watch_conflict_is_retried_by_transaction(client: redispool.Client, key: str) -> None:
    client.set(key, 10)
    calls = []

    def double(pipe: Any) -> None:
        value = int(pipe.get(key))
        calls.append(value)
        if len(calls) == 1:
            client.set(key, 20)  # another connection changes the watched key: EXEC must fail
        pipe.multi()
        pipe.set(key, value * 2)

    client.transaction(double, key)
    assert calls == [10, 20]
    assert client.get(key) == b"40"
    assert client.pool.stats()["in_use"] == 0
    client.delete(key)


def test_monitor(client: redispool.Client, key: str) -> None:
    with client.monitor() as monitor:
        client.get(key + "monitored")
        for command in monitor.listen():
            if key in command["command"]:
                break
    assert client.pool.stats()["in_use"] == 0


def test_decode_responses(redis_url: str, protocol: int, key: str) -> None:
    with redispool.Client.from_url(redis_url, protocol=protocol, decode_responses=True) as client:
        client.hset(key, "f", "v")
        assert client.hgetall(key) == {"f": "v"}
        with client.pipeline() as pipe:
            assert pipe.hget(key, "f").delete(key).execute() == ["v", 1]


# ---------------------------------------------------------------- pinned()


def test_pinned_select_never_leaks(redis_url: str, protocol: int, key: str) -> None:
    # One connection only: the pinned one is exactly the one later plain commands get.
    with redispool.Client.from_url(redis_url, protocol=protocol, max_connections=1) as client:
        client.set(key, "db0")
        with client.pinned() as pinned:
            assert pinned.select(3)
            pinned.set(key, "db3")
            assert pinned.get(key) == b"db3"
            with pinned.pipeline() as pipe:  # pipelines of a pinned client use its connection
                assert pipe.get(key).execute() == [b"db3"]
        for _ in range(5):
            assert client.get(key) == b"db0"
        assert client.client_info()["db"] in (0, "0")
        assert client.pool.stats()["session_resets"] == 1
        with client.pinned() as pinned:
            pinned.select(3)
            assert pinned.delete(key) == 1
        client.delete(key)


def test_pinned_setname_and_watch_are_undone(redis_url: str, protocol: int, key: str) -> None:
    with redispool.Client.from_url(redis_url, protocol=protocol, max_connections=1) as client:
        with client.pinned() as pinned:
            pinned.client_setname("worker-7")
            pinned.execute_command("WATCH", key)
            assert pinned.client_getname() in (b"worker-7", "worker-7")
        assert client.client_getname() is None
        with client.pipeline() as pipe:  # WATCH gone: a MULTI elsewhere is not aborted
            pipe.set(key, 1)
            client.set(key, 2)
            assert pipe.execute() == [True]
        client.delete(key)


def test_pinned_multi_by_hand(redis_url: str, protocol: int, key: str) -> None:
    with redispool.Client.from_url(redis_url, protocol=protocol, max_connections=1) as client:
        with client.pinned() as pinned:
            assert pinned.execute_command("MULTI") in (b"OK", "OK", True)
            assert pinned.execute_command("INCR", key) in (b"QUEUED", "QUEUED")
            assert pinned.execute_command("EXEC") == [1]
        with client.pinned() as pinned:
            pinned.execute_command("MULTI")
            pinned.execute_command("INCR", key)  # left inside MULTI: must never reach anyone
        assert client.get(key) == b"1"  # not queued: the dirty connection was closed
        assert client.pool.stats()["closed_dirty"] == 1
        client.delete(key)


def test_pinned_client_unusable_after_the_block(client: redispool.Client) -> None:
    with client.pinned() as pinned:
        pinned.ping()
    with pytest.raises(redis.ConnectionError, match="after its"):
        pinned.ping()
    with pytest.raises(redis.ConnectionError, match="after its"):
        pinned.pipeline()
    assert client.pool.stats()["in_use"] == 0


def test_pinned_connection_lost_is_not_silently_replaced(client: redispool.Client) -> None:
    with client.pinned() as pinned:
        pinned.select(2)
        my_id = pinned.client_id()
        assert client.client_kill_filter(_id=my_id) == 1
        with pytest.raises(redis.ConnectionError):
            pinned.ping()
        # A reconnect would quietly run on db 0; the pinned client refuses instead.
        with pytest.raises(redis.ConnectionError, match="lost"):
            pinned.set("never-written", 1)
    assert client.exists("never-written") == 0
    assert client.pool.stats()["in_use"] == 0


def test_pinned_timeout_override(redis_url: str) -> None:
    client = redispool.Client.from_url(redis_url, max_connections=1, timeout=30.0)
    with client, client.pinned(), pytest.raises(redispool.PoolTimeout), client.pinned(timeout=0):
        pass


def test_pinned_close_inside_block(client: redispool.Client) -> None:
    with client.pinned() as pinned:
        pinned.ping()
        pinned.close()
        assert client.pool.stats()["in_use"] == 0
    assert client.pool.stats()["in_use"] == 0
    assert client.pool.stats()["double_releases"] == 0


# ---------------------------------------------------------------- garbage collection


def test_client_collected_inside_the_maintainer_lock_does_not_deadlock(redis_url: str) -> None:
    # A client that owns its pool closes it from __del__, which unregisters the pool from
    # the maintenance thread's registry. A collection can start at any allocation,
    # including one made while this thread holds the registry lock (register() does).
    client = redispool.Client.from_url(redis_url)  # no connection yet: nothing else to finalize
    client.cycle = client  # type: ignore[attr-defined]  # only the cycle collector frees it
    del client
    done = threading.Event()

    def collect_under_the_lock() -> None:
        with _maintenance.maintainer._lock:
            gc.collect()
        done.set()

    thread = threading.Thread(target=collect_under_the_lock, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert done.is_set(), "deadlock: Client.__del__ -> pool.close() -> maintainer.unregister()"


def test_unix_socket_path_keyword(tmp_path: Any) -> None:
    path = str(tmp_path / "redis.sock")
    try:
        server = RedisServer("--unixsocket", path, "--unixsocketperm", "700")
    except ServerNotFound as error:
        missing(str(error))  # skips, or fails under REDISPOOL_REQUIRE_REDIS=1
    with server, redispool.Client(unix_socket_path=path, max_connections=2) as client:
        assert client.ping()
        assert client.pool.connection_kwargs["path"] == path
        assert [info.address for info in client.pool.connections()] == [path]
