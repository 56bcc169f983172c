"""The background maintenance thread: one per process, weakly holding its pools."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable

import pytest
import redis

import redispool
from redispool._maintenance import Maintainer


class Recorder:
    def __init__(self) -> None:
        self.passes = 0
        self.ran = threading.Event()

    def _maintain(self) -> float:
        self.passes += 1
        self.ran.set()
        return 60.0


def test_thread_starts_with_the_first_pool_and_stops_with_the_last() -> None:
    maintainer = Maintainer()
    first, second = Recorder(), Recorder()
    maintainer.register(first)
    maintainer.register(second)
    assert first.ran.wait(10) and second.ran.wait(10)
    thread = maintainer._thread
    assert thread is not None and thread.is_alive()
    maintainer.unregister(first)
    assert thread.is_alive()
    maintainer.unregister(second)
    thread.join(10)
    assert not thread.is_alive() and not maintainer.is_running()


def test_an_unreferenced_pool_is_collected_and_dropped() -> None:
    maintainer = Maintainer()
    recorder = Recorder()
    maintainer.register(recorder)
    assert recorder.ran.wait(10)
    thread = maintainer._thread
    del recorder
    gc.collect()
    maintainer.wake()
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()


def test_wake_runs_a_pass_at_once() -> None:
    maintainer = Maintainer()
    recorder = Recorder()
    maintainer.register(recorder)
    assert recorder.ran.wait(10)
    recorder.ran.clear()
    maintainer.wake()  # the pass asked for 60 s; wake() must not wait that long
    assert recorder.ran.wait(10)
    maintainer.unregister(recorder)


def test_pool_is_collected_despite_the_thread(redis_url: str) -> None:
    pool = redispool.ConnectionPool.from_url(redis_url, min_idle=1)
    pool.wait_ready(timeout=10)
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(
    not hasattr(redis.ConnectionPool, "update_active_connections_for_reconnect"),
    reason="redis-py < 7 has no maintenance-notification members to honour",
)
def test_redis_py_maintenance_members_work(
    redis_url: str, make_pool: Callable[..., redispool.ConnectionPool]
) -> None:
    pool = make_pool(redis_url, max_connections=3)
    idle = pool.get_connection()
    busy = pool.get_connection()
    pool.release(idle)
    counts = dict((attrs["db.client.connection.state"], n) for n, attrs in pool.get_connection_count())
    assert counts == {"idle": 1, "used": 1}
    pool.update_active_connections_for_reconnect()  # in-use ones reconnect when returned
    pool.disconnect_free_connections()
    assert idle._sock is None
    pool.release(busy)
    assert pool.stats()["returned_disconnected"] == 1
    assert redis.Redis(connection_pool=pool).ping()
