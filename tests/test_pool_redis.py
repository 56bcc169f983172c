"""The pool against a real Redis: every redis-py feature through it, dirty connections,
fork safety and a concurrency stress run."""

from __future__ import annotations

import gc
import os
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import redis

import redispool
from redispool._server import RedisServer

MakePool = Callable[..., redispool.ConnectionPool]


def test_redis_client_commands_pipeline_transaction_watch(
    redis_url: str, make_pool: MakePool, key: str
) -> None:
    pool = make_pool(redis_url, max_connections=4)
    r = redis.Redis(connection_pool=pool)
    assert r.set(key + "a", "1") and r.get(key + "a") == b"1"
    with r.pipeline(transaction=False) as pipe:
        assert pipe.incr(key + "n").incr(key + "n").execute() == [1, 2]
    with r.pipeline() as pipe:
        assert pipe.set(key + "b", "x").get(key + "b").execute() == [True, b"x"]
    with r.pipeline() as pipe:
        pipe.watch(key + "w")
        r.set(key + "w", "changed by someone else")  # through another connection
        pipe.multi()
        pipe.set(key + "w", "mine")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert r.get(key + "w") == b"changed by someone else"
    assert r.transaction(lambda p: p.multi() or p.incr(key + "t"), key + "t") == [1]
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["closed_dirty"] == 0


def test_pubsub_lock_monitor_script_from_pool(redis_url: str, make_pool: MakePool, key: str) -> None:
    pool = make_pool(redis_url, max_connections=4)
    r = redis.Redis(connection_pool=pool)
    pubsub = r.pubsub()
    pubsub.subscribe(key + "chan")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    r.publish(key + "chan", "hello")
    assert pubsub.get_message(timeout=5)["data"] == b"hello"
    pubsub.close()
    with r.lock(key + "lock", timeout=5) as lock:
        assert lock.owned()
    script = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert script(keys=[key + "s"], args=[5]) == 5
    with r.monitor() as monitor:
        r.get(key + "monitored")
        for event in monitor.listen():
            if key + "monitored" in event["command"]:
                break
    owned = redis.Redis.from_pool(make_pool(redis_url))
    assert owned.ping()
    owned.close()
    assert pool.stats()["in_use"] == 0
    # The subscribed and monitoring connections were not put back as they were.
    assert all(info.state == "idle" for info in pool.connections())
    assert r.get(key + "s") == b"5"


def test_pool_interface_members(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, decode_responses=True, protocol=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        legacy = pool.get_connection("GET", "somekey")  # redis-py < 5.3 callers pass arguments
    assert pool.owns_connection(legacy)
    pool.release(legacy)
    encoder = pool.get_encoder()
    assert encoder.decode_responses is True
    assert pool.get_protocol() == 2
    retry = redis.retry.Retry(redis.backoff.NoBackoff(), 1)
    pool.set_retry(retry)
    with pool.connection() as conn:
        assert conn.retry is retry
    pool.connection_kwargs["client_name"] = "renamed"  # read when the next connection is made
    pool.disconnect()
    r = redis.Redis(connection_pool=pool)
    assert r.client_getname() == "renamed"
    held = pool.get_connection()
    pool.disconnect(inuse_connections=False)
    assert held._sock is not None  # in-use connections untouched
    pool.disconnect(inuse_connections=True)
    assert held._sock is None
    pool.release(held)
    assert r.ping()


def test_context_manager_hands_out_connected_connection(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url)
    with pool.connection() as conn:
        assert isinstance(conn, redis.Connection)
        assert conn._sock is not None
        conn.send_command("PING")
        assert conn.read_response() == b"PONG"
    assert pool.stats()["idle"] == 1


@pytest.mark.parametrize("protocol", [2, 3])
def test_dirty_connection_is_never_handed_on(
    redis_url: str, make_pool: MakePool, key: str, protocol: int
) -> None:
    pool = make_pool(redis_url, max_connections=1, protocol=protocol)
    r = redis.Redis(connection_pool=pool)
    r.set(key, "value")
    conn = pool.get_connection()
    conn.send_command("ECHO", "stale-reply")  # sent, never read
    pool.release(conn)
    assert r.get(key) == b"value"  # not b"stale-reply"
    assert pool.stats()["closed_dirty"] == 1


@pytest.mark.parametrize("protocol", [2, 3])
def test_unread_pipeline_and_open_multi_are_closed(
    redis_url: str, make_pool: MakePool, key: str, protocol: int
) -> None:
    pool = make_pool(redis_url, max_connections=1, protocol=protocol)
    conn = pool.get_connection()
    conn.send_packed_command(conn.pack_commands([("SET", key, "1"), ("GET", key)]))
    conn.read_response()  # one of two replies read
    pool.release(conn)
    conn = pool.get_connection()
    conn.send_command("MULTI")
    conn.read_response()
    pool.release(conn)  # inside MULTI: the next command would be queued
    r = redis.Redis(connection_pool=pool)
    assert r.get(key) == b"1"
    assert pool.stats()["closed_dirty"] == 2


def test_session_state_is_undone_before_reuse(redis_url: str, make_pool: MakePool, key: str) -> None:
    pool = make_pool(redis_url, max_connections=1, client_name="app")
    r = redis.Redis(connection_pool=pool)
    r.execute_command("SELECT", 5)
    r.execute_command("CLIENT SETNAME", "borrowed")
    r.execute_command("WATCH", key)
    info = r.client_info()
    assert info["db"] == 0 and info["name"] == "app" and info["flags"] == "N"
    assert pool.stats()["connects"] == 1 and pool.stats()["session_resets"] >= 1


def test_failed_connect_reports_the_servers_error(make_pool: MakePool) -> None:
    with RedisServer("--requirepass", "secret") as server:
        pool = make_pool(server.url, password="wrong", timeout=2)
        with pytest.raises(redis.AuthenticationError):
            pool.get_connection()
        assert pool.stats()["size"] == 0
        assert "wrong" not in repr(pool) and "secret" not in repr(pool)


def test_unix_socket(make_pool: MakePool, tmp_path: Any) -> None:
    path = str(tmp_path / "redis.sock")
    with RedisServer("--unixsocket", path, "--unixsocketperm", "700"):
        pool = make_pool(f"unix://{path}?db=1", max_connections=2)
        r = redis.Redis(connection_pool=pool)
        assert r.ping() and r.client_info()["db"] == 1


def test_concurrency_stress_over_real_sockets(redis_url: str, make_pool: MakePool, key: str) -> None:
    pool = make_pool(redis_url, max_connections=8, timeout=30)
    holders: set[int] = set()
    guard = threading.Lock()
    problems: list[str] = []
    peak = [0]
    start = threading.Barrier(64)
    rounds = 100

    def work(index: int) -> None:
        start.wait()
        mine = f"{key}{index}"
        for n in range(rounds):
            conn = pool.get_connection()
            with guard:
                if id(conn) in holders:
                    problems.append("one connection in two hands")
                holders.add(id(conn))
                peak[0] = max(peak[0], len(holders))
            conn.send_command("SET", mine, n)
            ok = conn.read_response()
            conn.send_command("GET", mine)
            if ok != b"OK" or conn.read_response() != str(n).encode():
                problems.append("another caller's reply")
            with guard:
                holders.discard(id(conn))
            pool.release(conn)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stats = pool.stats()
    assert problems == []
    assert peak[0] <= 8 and stats["connects"] <= 8
    assert stats["in_use"] == 0 and stats["waiting"] == 0
    assert stats["borrows"] == stats["returns"] == 64 * rounds


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_fork_child_gets_fresh_pool_and_parent_keeps_working(
    redis_url: str, make_pool: MakePool, key: str
) -> None:
    pool = make_pool(redis_url, max_connections=2)
    r = redis.Redis(connection_pool=pool)
    parent_id = r.client_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its connection id and whether it reused the parent's
        try:
            child = redis.Redis(connection_pool=pool)
            child.set(key + "child", "yes")
            message = f"{child.client_id()} {pool.stats()['connects']}"
        except BaseException as error:  # report, never raise in the child
            message = f"error {error!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    reply = os.read(read_end, 1024).decode()
    os.close(read_end)
    assert status == 0
    child_id, child_connects = reply.split()
    assert int(child_id) != parent_id  # the child opened its own socket
    assert child_connects == "1"  # and its pool started fresh
    assert r.client_id() == parent_id  # the parent's connection survived the child's exit
    assert r.get(key + "child") == b"yes"


def test_a_closed_connection_is_freed_without_the_cyclic_collector(
    redis_url: str, make_pool: Callable[..., redispool.ConnectionPool]
) -> None:
    # redis-py >= 7 links a connection and its maintenance handlers both ways; the pool
    # unlinks them when it closes a connection, so it (and its read buffer) is freed at
    # once rather than at the cyclic collector's next full pass.
    pool = make_pool(redis_url, max_connections=2)
    gc.collect()
    gc.disable()
    try:
        gone = []
        for dirty in (True, False):
            conn = pool.get_connection()
            if dirty:
                conn.send_command("PING")  # its reply is never read: closed on return
            else:
                pool.drain()  # closed on return too
            ref = weakref.ref(conn)
            pool.release(conn)
            del conn
            gone.append(ref() is None)
        assert gone == [True, True]
        assert pool.stats()["size"] == 0
    finally:
        gc.enable()
