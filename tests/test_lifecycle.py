"""Connection lifecycle: health checks, eviction, pre-warm, lifetime, keepalive,
reconnect backoff and fail-fast, leaks, stats and runtime controls.

Maintenance is triggered with ``pool.run_maintenance()`` and time is moved with an
injected clock, so nothing here waits for the background thread.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

import redispool
from redispool import _maintenance, _pool
from redispool._server import RedisServer

from .proxy import BlackholeProxy
from .support import wait_until

MakePool = Callable[..., redispool.ConnectionPool]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def with_clock(pool: redispool.ConnectionPool) -> Clock:
    clock = Clock()
    pool._clock = clock
    return clock


def server_client_ids(url: str) -> set[int]:
    admin = redis.Redis.from_url(url)
    try:
        return {int(c["id"]) for c in admin.client_list()} - {admin.client_id()}
    finally:
        admin.close()


# ---------------------------------------------------------------- health on borrow


def test_connection_killed_by_server_is_replaced_transparently(
    own_server: RedisServer, make_pool: MakePool
) -> None:
    pool = make_pool(own_server.url, max_connections=2, ping_after_idle=None)
    r = redis.Redis(connection_pool=pool)
    victim = r.client_id()
    with redis.Redis.from_url(own_server.url) as admin:
        admin.client_kill_filter(_id=victim)
    wait_until(lambda: victim not in server_client_ids(own_server.url))
    assert r.ping()  # no error reaches the caller
    assert r.client_id() != victim
    assert pool.stats()["health_eof"] == 1


def test_server_idle_timeout_is_survived(own_server: RedisServer, make_pool: MakePool) -> None:
    admin = redis.Redis.from_url(own_server.url)
    admin.config_set("timeout", 1)
    pool = make_pool(own_server.url, ping_after_idle=None)
    r = redis.Redis(connection_pool=pool)
    first = r.client_id()
    wait_until(lambda: first not in server_client_ids(own_server.url))
    assert r.get("missing") is None
    assert pool.stats()["health_eof"] == 1
    admin.close()


def test_warmed_pool_survives_a_restart_without_failed_reads(
    own_server: RedisServer, make_pool: MakePool
) -> None:
    pool = make_pool(own_server.url, max_connections=8, min_idle=8, timeout=10)
    pool.wait_ready(timeout=10)
    r = redis.Redis(connection_pool=pool)
    own_server.restart()
    failures = 0
    for _ in range(50):
        try:
            r.get("k")
        except redis.RedisError:
            failures += 1
    assert failures == 0
    assert pool.stats()["health_eof"] >= 1


def test_half_open_connection_detected_within_ping_timeout(redis_url: str, make_pool: MakePool) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with BlackholeProxy(port) as proxy:
        pool = make_pool(proxy.url, max_connections=2, ping_after_idle=0, ping_timeout=0.3, socket_timeout=10)
        r = redis.Redis(connection_pool=pool)
        assert r.ping()
        proxy.blackhole()  # existing flow silently dropped; new flows still work
        started = time.monotonic()
        assert r.ping()
        elapsed = time.monotonic() - started
        assert elapsed < 2.0  # far less than the 10 s socket timeout
        stats = pool.stats()
        assert stats["health_ping"] == 1 and stats["connects"] == 2


def test_recently_used_connection_is_not_pinged(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, ping_after_idle=2.0)
    clock = with_clock(pool)
    r = redis.Redis(connection_pool=pool)
    r.ping()
    calls: list[str] = []
    original = _pool._health.ping
    _pool._health.ping = lambda conn, timeout: calls.append("ping")  # type: ignore[assignment]
    try:
        clock.advance(1.0)
        r.get("k")
        assert calls == []
        clock.advance(2.5)
        r.get("k")
        assert calls == ["ping"]
    finally:
        _pool._health.ping = original  # type: ignore[assignment]


# ---------------------------------------------------------------- idle eviction


def test_idle_connections_evicted_in_background_but_not_below_min_idle(
    redis_url: str, make_pool: MakePool
) -> None:
    # max 5: while all 5 are borrowed, the background min_idle refill has no room to add one.
    pool = make_pool(redis_url, max_connections=5, min_idle=2, max_idle=60)
    clock = with_clock(pool)
    held = [pool.get_connection() for _ in range(5)]
    for conn in held:
        pool.release(conn)
    assert pool.stats()["idle"] == 5
    clock.advance(59)
    pool.run_maintenance()
    assert pool.stats()["idle"] == 5
    clock.advance(2)
    pool.run_maintenance()
    stats = pool.stats()
    assert stats["idle"] == 2 and stats["evicted_idle"] == 3


def test_idle_expiry_is_also_checked_at_checkout(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=3, max_idle=60, idle_order="fifo")
    clock = with_clock(pool)
    held = [pool.get_connection() for _ in range(3)]
    for conn in held:
        pool.release(conn)
    clock.advance(61)
    conn = pool.get_connection()  # no maintenance ran: the checkout itself evicts
    assert conn not in held
    assert pool.stats()["evicted_idle"] == 3
    pool.release(conn)


# ---------------------------------------------------------------- pre-warm


def test_min_idle_prewarm_and_top_up(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=4, min_idle=3)
    pool.wait_ready(timeout=10)
    assert pool.stats()["idle"] >= 3
    connects = pool.stats()["connects"]
    r = redis.Redis(connection_pool=pool)
    r.ping()  # served from the warm set: no connect latency
    assert pool.stats()["connects"] == connects
    pool.drain()
    pool.run_maintenance()
    stats = pool.stats()
    assert stats["idle"] == 3 and stats["size"] <= 4


def test_background_thread_prewarms_a_new_pool(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=4, min_idle=2)
    assert _maintenance.maintainer.is_running()
    wait_until(lambda: pool.stats()["idle"] == 2)


def test_min_idle_never_exceeds_max_connections(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=2, min_idle=2)
    held = [pool.get_connection() for _ in range(2)]
    pool.run_maintenance()
    assert pool.stats()["size"] == 2
    for conn in held:
        pool.release(conn)


# ---------------------------------------------------------------- max lifetime


def test_lifetime_jitter_is_negative_and_spread(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_lifetime=1000)
    clock = with_clock(pool)
    expiries = {pool.make_connection()._rp_meta.expires - clock.now for _ in range(200)}
    assert all(1000 * (1 - _pool.LIFETIME_JITTER) <= e <= 1000 for e in expiries)
    assert len(expiries) > 100  # spread, not all at once


def test_in_use_connection_is_never_killed_and_retires_on_return(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_lifetime=100)
    clock = with_clock(pool)
    conn = pool.get_connection()
    clock.advance(101)
    pool.run_maintenance()
    conn.send_command("PING")
    assert conn.read_response() == b"PONG"  # still usable while borrowed
    pool.release(conn)
    stats = pool.stats()
    assert stats["retired_lifetime"] == 1 and stats["idle"] == 0


def test_expired_idle_connection_is_not_handed_out(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_lifetime=100, max_idle=None)
    clock = with_clock(pool)
    first = pool.get_connection()
    pool.release(first)
    clock.advance(100)
    second = pool.get_connection()
    assert second is not first
    assert pool.stats()["retired_lifetime"] == 1
    pool.release(second)


# ---------------------------------------------------------------- keepalive


def test_keepalive_pings_idle_connections(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, keepalive_interval=30, max_idle=None)
    clock = with_clock(pool)
    r = redis.Redis(connection_pool=pool)
    conn_id = r.client_id()
    clock.advance(31)
    pool.run_maintenance()
    assert pool.stats()["keepalive_pings"] == 1
    admin = redis.Redis.from_url(redis_url)
    (entry,) = [c for c in admin.client_list() if int(c["id"]) == conn_id]
    assert entry["cmd"] == "ping"
    admin.close()
    assert pool.stats()["idle"] == 1


# ---------------------------------------------------------------- backoff and fail-fast


def test_connect_retries_with_backoff_then_fails_fast(own_server: RedisServer, make_pool: MakePool) -> None:
    pool = make_pool(own_server.url, timeout=3.0, fail_fast_after=0.5, min_idle=0)
    r = redis.Redis(connection_pool=pool)
    assert r.ping()
    own_server.kill()
    pool.disconnect()
    with pytest.raises(redis.ConnectionError) as first:
        pool.acquire(timeout=0.45)  # attempts start within fail_fast_after: plain retries, then the error
    assert not isinstance(first.value, redispool.ServerUnavailable)
    assert pool.stats()["connect_errors"] >= 2  # retried with backoff inside one deadline
    with pytest.raises(redispool.ServerUnavailable):
        r.ping()  # retries until failures have lasted fail_fast_after, then the circuit opens
    started = time.monotonic()
    with pytest.raises(redispool.ServerUnavailable, match="failing fast"):
        r.ping()
    assert time.monotonic() - started < 0.3
    assert pool.stats()["failing_fast"] is True
    own_server.start()
    wait_until(lambda: (pool.run_maintenance(), not pool.stats()["failing_fast"])[1])
    assert r.ping()


def test_authentication_error_is_not_retried(make_pool: MakePool) -> None:
    with RedisServer("--requirepass", "right") as server:
        pool = make_pool(server.url, password="wrong", timeout=5)
        started = time.monotonic()
        with pytest.raises(redis.AuthenticationError):
            pool.get_connection()
        assert time.monotonic() - started < 1.0
        assert pool.stats()["connect_errors"] == 0


# ---------------------------------------------------------------- leaks


def borrow_and_forget(pool: redispool.ConnectionPool) -> Any:
    return pool.get_connection()  # the line a leak warning must point at


def test_leak_warning_carries_the_borrowing_line(
    redis_url: str, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(redis_url, leak_warning_after=30)
    clock = with_clock(pool)
    conn = borrow_and_forget(pool)
    clock.advance(31)
    with caplog.at_level(logging.WARNING, logger="redispool"):
        pool.run_maintenance()
        pool.run_maintenance()  # warned once, not on every pass
    warnings = [r for r in caplog.records if "leak_warning_after" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "test_lifecycle.py" in message and "borrow_and_forget" in message
    assert "the line a leak warning must point at" in message
    assert pool.stats()["leaks"] == 1
    pool.release(conn)


def test_garbage_collected_checkout_is_reclaimed(
    own_server: RedisServer, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(own_server.url, max_connections=1, leak_warning_after=60)
    with caplog.at_level(logging.WARNING, logger="redispool"):
        borrow_and_forget(pool)  # result dropped at once: a leak
        gc.collect()
        # The background thread may reclaim it first; either way the slot comes back.
        conn = pool.acquire(timeout=5)
    assert pool.stats()["reclaimed"] == 1
    assert any("garbage-collected without release" in r.getMessage() for r in caplog.records)
    # The leaked connection's socket was closed by the reclaim: only the new one is left.
    wait_until(lambda: len(server_client_ids(own_server.url)) == 1)
    pool.release(conn)


# ---------------------------------------------------------------- stats, repr, controls


def test_stats_invariants_under_concurrency(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=4, timeout=30)
    r = redis.Redis(connection_pool=pool)
    start = threading.Barrier(16)

    def work() -> None:
        start.wait()
        for _ in range(100):
            r.ping()

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    held = pool.get_connection()
    for thread in threads:
        thread.join(60)
    stats = pool.stats()
    assert stats["borrows"] == stats["returns"] + stats["in_use"] + stats["reclaimed"]
    assert stats["in_use"] == 1 and stats["size"] <= 4
    assert stats["waits"] >= 1 and stats["wait_time_max"] >= 0
    assert set(stats) >= {"max", "idle", "waiting", "timeouts", "connects", "evicted_idle"}
    pool.release(held)


def test_repr_shows_live_state_and_no_password(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url.replace("redis://", "redis://user:hunter2@"), name=None)
    text = repr(pool)
    assert "hunter2" not in text and "<REDACTED>" in text
    assert "0 in use" in text and "max 50" in text
    assert "hunter2" not in str(pool.stats())


def test_resize_grows_for_waiters_and_shrinks_idle(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=1, timeout=10)
    held = pool.get_connection()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get_connection()))
    waiter.start()
    wait_until(lambda: pool.stats()["waiting"] == 1)
    pool.resize(max_connections=3)
    waiter.join(10)
    assert len(got) == 1
    pool.release(got[0])
    pool.release(held)
    assert pool.stats()["idle"] == 2
    pool.resize(max_connections=1)
    assert pool.stats()["size"] == 1


def test_drain_replaces_every_connection(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=3)
    r = redis.Redis(connection_pool=pool)
    held = pool.get_connection()
    before = r.client_id()  # a second connection, idle afterwards
    pool.drain()
    assert r.client_id() != before  # idle ones replaced at once
    pool.release(held)  # borrowed one retires on return
    assert held not in pool._available_connections
    assert pool.stats()["drained"] == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_maintenance_resumes_in_a_forked_child(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=4, min_idle=2)
    pool.wait_ready(timeout=10)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            running = _maintenance.maintainer.is_running()
            pool.wait_ready(timeout=10)  # the child's pool starts empty and warms again
            message = f"{running} {pool.stats()['idle']} {pool.stats()['connects']}"
        except BaseException as error:
            message = f"error {error!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    reply = os.read(read_end, 1024).decode()
    os.close(read_end)
    assert reply == "True 2 2", reply
    assert pool.stats()["idle"] == 2  # the parent's pool is untouched


def test_wait_ready_returns_when_the_pool_is_full(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url, max_connections=3, min_idle=3)
    held = [pool.get_connection() for _ in range(2)]  # min_idle idle is out of reach now
    started = time.monotonic()
    pool.wait_ready(timeout=10)
    assert time.monotonic() - started < 5
    stats = pool.stats()  # the background thread may still be opening the third
    assert stats["size"] == 3 and stats["idle"] + stats["connecting"] == 1
    for conn in held:
        pool.release(conn)


def test_wait_ready_fails_fast_when_redis_is_down(make_pool: MakePool) -> None:
    pool = make_pool("redis://127.0.0.1:1/0", min_idle=2, fail_fast_after=None)
    with pytest.raises(redis.ConnectionError):
        pool.wait_ready(timeout=0.5)
    stats = pool.stats()  # the background refill may be mid-attempt: only slots held
    assert stats["idle"] == 0 and stats["in_use"] == 0
