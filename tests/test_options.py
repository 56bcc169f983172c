"""Options: defaults, coercion from URLs, and clear errors for bad input."""

from __future__ import annotations

import queue
from typing import Any

import pytest

import redispool


def test_defaults_are_documented_values() -> None:
    pool = redispool.ConnectionPool()
    opts = pool.options
    assert (opts.max_connections, opts.timeout, opts.max_waiting, opts.min_idle) == (50, 5.0, None, 0)
    assert (opts.max_idle, opts.max_lifetime, opts.ping_after_idle) == (300.0, 3600.0, 2.0)
    assert pool.max_connections == 50 and pool.timeout == 5.0
    pool.shutdown()


def test_url_query_options_get_their_types() -> None:
    pool = redispool.ConnectionPool.from_url(
        "redis://localhost:6379/2?max_connections=7&timeout=1.5&min_idle=0&max_idle=none"
        "&max_waiting=3&idle_order=FIFO&ping_after_idle=0&leak_warning_after=30&name=cache"
        "&socket_timeout=2"
    )
    opts = pool.options
    assert opts.max_connections == 7 and isinstance(opts.max_connections, int)
    assert opts.timeout == 1.5 and opts.max_idle is None and opts.max_waiting == 3
    assert opts.idle_order == "fifo" and opts.ping_after_idle == 0.0 and opts.leak_warning_after == 30.0
    assert pool.name == "cache"
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["socket_timeout"] == 2.0
    assert "min_idle" not in pool.connection_kwargs  # options never reach the connection
    pool.shutdown()


def test_from_url_accepts_url_as_keyword_and_string_options() -> None:
    # django-redis passes url= by keyword; Django passes OPTIONS values as given.
    pool = redispool.ConnectionPool.from_url(url="redis://localhost:6379/1", max_connections="9", timeout="2")
    assert pool.options.max_connections == 9 and pool.options.timeout == 2.0
    assert pool.connection_kwargs["db"] == 1
    pool.shutdown()


def test_unix_and_tls_urls_pick_the_connection_class() -> None:
    import redis

    unix = redispool.ConnectionPool.from_url("unix:///tmp/redis.sock?db=3")
    assert unix.connection_class is redis.UnixDomainSocketConnection
    assert unix.name == "/tmp/redis.sock/3"
    tls = redispool.ConnectionPool.from_url("rediss://localhost:6380/0")
    assert tls.connection_class is redis.SSLConnection
    unix.shutdown()
    tls.shutdown()


def test_blocking_pool_queue_class_maps_to_idle_order() -> None:
    fifo = redispool.ConnectionPool(queue_class=queue.Queue)
    lifo = redispool.BlockingConnectionPool(queue_class=queue.LifoQueue)
    assert fifo.options.idle_order == "fifo" and lifo.options.idle_order == "lifo"
    fifo.shutdown()
    lifo.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"max_connections": 0}, ValueError, "max_connections must be greater than 0"),
        ({"max_connections": -3}, ValueError, "max_connections"),
        ({"max_connections": 2.5}, TypeError, "max_connections must be a whole number"),
        ({"max_connections": True}, TypeError, "max_connections must be a number"),
        ({"timeout": -1}, ValueError, "timeout must be 0 or more"),
        ({"timeout": "soon"}, ValueError, "timeout must be a number"),
        ({"max_waiting": -1}, ValueError, "max_waiting must be 0 or more"),
        (
            {"min_idle": 5, "max_connections": 4},
            ValueError,
            "min_idle (5) must not exceed max_connections (4)",
        ),
        ({"max_idle": 0}, ValueError, "max_idle must be greater than 0"),
        ({"ping_timeout": None}, TypeError, "ping_timeout must not be None"),
        ({"idle_order": "random"}, ValueError, "idle_order must be 'lifo' or 'fifo'"),
        ({"idle_order": 3}, TypeError, "idle_order must be a string"),
        ({"max_lifetime": float("nan")}, ValueError, "max_lifetime must be a finite number"),
        ({"leak_warning_after": [1]}, TypeError, "leak_warning_after must be a number"),
    ],
)
def test_bad_options_name_the_parameter(kwargs: dict[str, Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error) as caught:
        redispool.ConnectionPool(**kwargs)
    assert words in str(caught.value)


def test_unknown_url_query_parameter_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"unknown query parameter 'min_idel'.*did you mean 'min_idle'"):
        redispool.ConnectionPool.from_url("redis://localhost:6379/0?min_idel=2")


def test_bad_url_query_value_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="min_idle must be a whole number"):
        redispool.ConnectionPool.from_url("redis://localhost:6379/0?min_idle=two")


def test_resize_validates_too() -> None:
    pool = redispool.ConnectionPool(max_connections=4)
    with pytest.raises(ValueError, match="min_idle"):
        pool.resize(min_idle=10)
    assert pool.options.max_connections == 4  # nothing half-done
    pool.shutdown()
