"""redispool: a bounded, fair, thread-safe Redis connection pool for redis-py."""

from __future__ import annotations

from ._client import Client
from ._options import PoolOptions
from ._pool import ConnectionPool
from ._retry import RetryPolicy
from ._stats import ConnectionInfo
from .errors import PoolClosed, PoolError, PoolTimeout, ServerUnavailable, TooManyWaiters

__version__ = "0.1.0"

# One pool class serves both of redis-py's: it blocks like BlockingConnectionPool.
BlockingConnectionPool = ConnectionPool

__all__ = [
    "BlockingConnectionPool",
    "Client",
    "ConnectionInfo",
    "ConnectionPool",
    "PoolClosed",
    "PoolError",
    "PoolOptions",
    "PoolTimeout",
    "RetryPolicy",
    "ServerUnavailable",
    "TooManyWaiters",
    "__version__",
]

ConnectionPool.__module__ = "redispool"
ConnectionInfo.__module__ = "redispool"
PoolOptions.__module__ = "redispool"
