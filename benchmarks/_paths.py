"""The paths every benchmark compares, each built the same way against one server.

A path is a name and a factory that returns ``(get, close)``: ``get(key)`` runs one GET
and returns the reply, ``close()`` releases everything. The floor is a raw socket with
hiredis's ``pack_command`` and ``Reader``: what any Python client must at least spend.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import redis

import redispool

Get = Callable[[Any], Any]
Path = tuple[Get, Callable[[], None]]

FLOOR = "floor (socket + hiredis)"
SINGLE = "redis-py single connection"
REDIS_PY = "redis.Redis + redis-py pool"
DROP_IN = "redis.Redis + redispool pool"
CLIENT = "redispool.Client"
NAMES = (FLOOR, SINGLE, REDIS_PY, DROP_IN, CLIENT)


def floor(url: str, size: int, threads: int) -> Path:
    """One raw socket per thread; no locking, no pooling: the physical floor."""
    import hiredis  # type: ignore[import-not-found,import-untyped,unused-ignore]

    parts = urlparse(url)
    local = threading.local()
    socks: list[socket.socket] = []
    pack = hiredis.pack_command

    def get(key: Any) -> Any:
        if not hasattr(local, "pair"):
            sock = socket.create_connection((parts.hostname or "localhost", parts.port or 6379))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)
            local.pair = sock, hiredis.Reader(), bytearray(65536)
        sock, reader, buffer = local.pair
        sock.sendall(pack(("GET", key)))
        reply = reader.gets()
        while reply is False:
            reader.feed(buffer, 0, sock.recv_into(buffer))
            reply = reader.gets()
        return reply

    def close() -> None:
        for sock in socks:
            sock.close()

    return get, close


def single(url: str, size: int, threads: int) -> Path:
    client = redis.Redis.from_url(url, single_connection_client=True)
    return client.get, client.close


def redis_py(url: str, size: int, threads: int) -> Path:
    """redis.Redis with its own pool; BlockingConnectionPool when threads share a bound."""
    if threads > 1:
        pool: Any = redis.BlockingConnectionPool.from_url(url, max_connections=size, timeout=30)
    else:
        pool = redis.ConnectionPool.from_url(url)
    client = redis.Redis(connection_pool=pool)
    return client.get, lambda: (client.close(), pool.disconnect())


def drop_in(url: str, size: int, threads: int) -> Path:
    pool = redispool.ConnectionPool.from_url(url, max_connections=size, timeout=30)
    client = redis.Redis(connection_pool=pool)
    return client.get, lambda: (client.close(), pool.shutdown())


def client(url: str, size: int, threads: int) -> Path:
    ours = redispool.Client.from_url(url, max_connections=size, timeout=30)
    return ours.get, ours.close


FACTORIES: dict[str, Callable[[str, int, int], Path]] = {
    FLOOR: floor,
    SINGLE: single,
    REDIS_PY: redis_py,
    DROP_IN: drop_in,
    CLIENT: client,
}


def pipeline(name: str, url: str, size: int) -> tuple[Callable[[list[Any]], Any], Callable[[], None]]:
    """``run(keys)``: one pipeline of GETs (no MULTI) on redis-py's client or redispool's."""
    if name == CLIENT:
        client: Any = redispool.Client.from_url(url, max_connections=size, timeout=30)
        close: Callable[[], None] = client.close
    else:
        pool = redis.ConnectionPool.from_url(url)
        client = redis.Redis(connection_pool=pool)
        close = pool.disconnect

    def run(keys: list[Any]) -> Any:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute()

    return run, close


CHECKOUT_REDISPOOL = "redispool.ConnectionPool"
CHECKOUT_REDIS = "redis.ConnectionPool"
CHECKOUT_BLOCKING = "redis.BlockingConnectionPool"


def checkout(name: str, url: str, size: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """``once()``: borrow one connection and give it back, the pool's whole cost per command."""
    pool: Any
    if name == CHECKOUT_REDISPOOL:
        pool = redispool.ConnectionPool.from_url(url, max_connections=size, timeout=30)
        close = pool.shutdown
    elif name == CHECKOUT_BLOCKING:
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=size, timeout=30)
        close = pool.disconnect
    else:
        pool = redis.ConnectionPool.from_url(url, max_connections=size)
        close = pool.disconnect
    get, release = pool.get_connection, pool.release

    def once() -> None:
        release(get())

    return once, close
