"""pytest plugin for ``tools/compare_redis_py.py``: guards the shared server, swaps the pool.

Loaded with ``-p _compare_plugin`` into redis-py's and django-redis's own test suites.

* Always: a test that ignores ``--redis-url`` must never FLUSHALL or CONFIG SET the shared
  server. A loopback TCP connect to a port in ``REDISPOOL_COMPARE_FORBIDDEN_PORTS`` (6379 by
  default) goes to ``REDISPOOL_COMPARE_PRIVATE_PORT`` instead, a connect to such a port on
  any other address is refused, and a connect to a Unix socket in
  ``REDISPOOL_COMPARE_FORBIDDEN_SOCKETS`` goes to ``REDISPOOL_COMPARE_PRIVATE_SOCKET``
  (refused when unset), all before anything leaves the process.
* With ``REDISPOOL_COMPARE_MODE=redispool``: every ``ConnectionPool`` and
  ``BlockingConnectionPool`` name in redis-py (``redis``, ``redis.connection``,
  ``redis.client``) is rebound to ``redispool.ConnectionPool`` before the suite imports
  anything, and once more in every already imported test module after collection.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest
import redis
import redis.client
import redis.connection

import redispool

ORIGINAL_POOLS = (redis.connection.ConnectionPool, redis.connection.BlockingConnectionPool)
POOL_NAMES = ("ConnectionPool", "BlockingConnectionPool")
_FORBIDDEN_PORTS = {
    int(p) for p in os.environ.get("REDISPOOL_COMPARE_FORBIDDEN_PORTS", "6379").split(",") if p
}
_FORBIDDEN_SOCKETS = {p for p in os.environ.get("REDISPOOL_COMPARE_FORBIDDEN_SOCKETS", "").split(",") if p}
_PRIVATE_PORT = int(os.environ.get("REDISPOOL_COMPARE_PRIVATE_PORT", "0"))
_PRIVATE_SOCKET = os.environ.get("REDISPOOL_COMPARE_PRIVATE_SOCKET", "")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _checked(address: Any) -> Any:
    """``address``, or the private server's in place of the shared one's."""
    if isinstance(address, tuple) and len(address) >= 2 and address[1] in _FORBIDDEN_PORTS:
        if address[0] in _LOOPBACK and _PRIVATE_PORT:
            return (address[0], _PRIVATE_PORT, *address[2:])
        raise ConnectionRefusedError(f"compare_redis_py: connecting to {address[:2]} is forbidden")
    if isinstance(address, (str, bytes)) and os.fsdecode(address) in _FORBIDDEN_SOCKETS:
        if _PRIVATE_SOCKET:
            return _PRIVATE_SOCKET
        raise ConnectionRefusedError(f"compare_redis_py: connecting to {os.fsdecode(address)} is forbidden")
    return address


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _connect(self, _checked(address))


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    return _connect_ex(self, _checked(address))


socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]

MODE = os.environ.get("REDISPOOL_COMPARE_MODE", "shipped")


def _rebind(module: Any) -> None:
    for name in POOL_NAMES:
        if getattr(module, name, None) in ORIGINAL_POOLS:
            setattr(module, name, redispool.ConnectionPool)


if MODE == "redispool":
    for _module in (redis, redis.connection, redis.client):
        _rebind(_module)


def pytest_collection_finish(session: pytest.Session) -> None:
    if MODE != "redispool":
        return
    for name, module in list(sys.modules.items()):
        if name == "tests" or name.startswith(("tests.", "test_")):
            _rebind(module)


def pytest_report_header() -> str:
    pools = f"{redis.connection.ConnectionPool.__module__}.{redis.connection.ConnectionPool.__qualname__}"
    return f"compare_redis_py: mode={MODE}, redis.connection.ConnectionPool is {pools}"
