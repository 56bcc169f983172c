"""The pools under test: how each candidate is built, instrumented and timed alone.

Every candidate is a ``redis.Redis`` (or ``redispool.Client``) over a fresh pool. Its
pool's ``get_connection`` and ``make_connection`` are shadowed on the instance by the
same timing/counting closures, so "acquire wait" is the time spent inside
``get_connection`` (queueing, health checks, connecting) for every pool alike, and
"opened" counts connections the pool actually made.
"""

from __future__ import annotations

import inspect
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import redis

import redispool

from .._options import OPTION_NAMES
from . import floor

# Short names used on the command line, in the table and in the JSON output.
REDIS_PY = "redis-py"
REDIS_PY_BLOCKING = "redis-py-blocking"
REDISPOOL = "redispool"
CLIENT = "redispool-client"
FLOOR = "floor"  # not a pool: a raw socket per thread, see floor.py

LABELS = {
    REDIS_PY: "redis-py ConnectionPool",
    REDIS_PY_BLOCKING: "redis-py BlockingConnectionPool",
    REDISPOOL: "redispool.ConnectionPool",
    CLIENT: "redispool.Client",
    FLOOR: "floor: raw socket + " + ("hiredis" if floor.hiredis is not None else "redis-py parser"),
}


def available_candidates() -> list[str]:
    """Every candidate, in table order: redis-py's two pools first, the reference first of all."""
    return [name for name in LABELS if name != FLOOR]


# The calling thread's acquire-wait list, filled by the get_connection wrapper.
samples = threading.local()


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Remove redispool's own options from a URL's query string; return both parts.

    redis-py's pools reject query parameters they do not know, so the URL given to
    them must not carry ``max_idle`` and friends; redispool's pools get them back.
    """
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in OPTION_NAMES}
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in OPTION_NAMES])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), own


def build_client(candidate: str, url: str, max_connections: int, timeout: float) -> Any:
    """A ``redis.Redis`` (or ``redispool.Client``) over a fresh pool, or the floor's client."""
    base, own = split_url(url)
    options: dict[str, Any] = {**own, "max_connections": max_connections}
    client: Any
    if candidate == FLOOR:
        client = floor.FloorClient(base)
    elif candidate == REDIS_PY:
        client = redis.Redis(
            connection_pool=redis.ConnectionPool.from_url(base, max_connections=max_connections)
        )
    elif candidate == REDIS_PY_BLOCKING:
        pool = redis.BlockingConnectionPool.from_url(base, max_connections=max_connections, timeout=timeout)
        client = redis.Redis(connection_pool=pool)
    elif candidate == REDISPOOL:
        options.setdefault("timeout", timeout)
        client = redis.Redis(connection_pool=redispool.ConnectionPool.from_url(base, **options))
    elif candidate == CLIENT:
        options.setdefault("timeout", timeout)
        client = redispool.Client.from_url(base, **options)
    else:
        raise ValueError(f"unknown candidate {candidate!r}; choose from {', '.join(LABELS)}")
    return client


def close_client(client: Any) -> None:
    """Close the client and its pool; redispool's pools are shut down for good."""
    pool = client.connection_pool
    try:
        client.close()
    finally:
        shutdown = getattr(pool, "shutdown", None)
        if shutdown is not None:
            shutdown()
        else:
            pool.disconnect()


class Counter:
    """Connections created by one pool; ``+=`` on an int is atomic enough under the GIL
    for a tally that only one side reads after the workers have joined."""

    def __init__(self) -> None:
        self.value = 0


def instrument(pool: Any) -> Counter:
    """Shadow ``get_connection``/``make_connection`` on this pool instance.

    Both wrappers are plain closures so their overhead is the same for every pool.
    """
    opened = Counter()
    inner_get: Callable[..., Any] = pool.get_connection
    inner_make: Callable[[], Any] = pool.make_connection
    clock = time.perf_counter

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        conn = inner_get(*args, **kwargs)
        waits = getattr(samples, "waits", None)
        if waits is not None:
            waits.append(clock() - start)
        return conn

    def make_connection() -> Any:
        conn = inner_make()  # redis-py's raises "Too many connections" here: not an opening
        opened.value += 1
        return conn

    pool.get_connection = get_connection
    pool.make_connection = make_connection
    return opened


def checkout_cost(candidate: str, url: str, iterations: int) -> float:
    """Seconds per ``get_connection()`` + ``release()`` with no command, one thread.

    The first checkout opens the connection and a short warm-up follows; neither is
    timed. The pool is built exactly as for the workload, without instrumentation.
    """
    client = build_client(candidate, url, 1, 10.0)
    pool: Any = client.connection_pool
    try:
        get = _plain_get_connection(pool)
        release = pool.release
        for _ in range(min(iterations, 200)):
            release(get())
        clock = time.perf_counter
        start = clock()
        for _ in range(iterations):
            release(get())
        return (clock() - start) / iterations
    finally:
        close_client(client)


def _plain_get_connection(pool: Any) -> Callable[[], Any]:
    """``pool.get_connection`` callable with no arguments on every redis-py >= 5.

    redis-py < 5.3 requires a command name; >= 5.3 warns if one is passed.
    """
    parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    if parameter is not None and parameter.default is inspect.Parameter.empty:
        return lambda: pool.get_connection("PING")
    return pool.get_connection  # type: ignore[no-any-return]
