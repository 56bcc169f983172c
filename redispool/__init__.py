"""redispool: a bounded, fair, thread-safe Redis connection pool for redis-py."""

from __future__ import annotations

from ._client import Client
from ._cluster import ClusterClient, cluster_pool_class
from ._options import PoolOptions
from ._pool import ConnectionPool
from ._retry import RetryPolicy
from ._sentinel import SentinelConnectionPool
from ._stats import ConnectionInfo, PoolStats
from .errors import PoolClosed, PoolError, PoolTimeout, ServerUnavailable, TooManyWaiters

__version__ = "0.1.0"

# One pool class serves both of redis-py's: it blocks like BlockingConnectionPool.
BlockingConnectionPool = ConnectionPool

__all__ = [
    "BlockingConnectionPool",
    "Client",
    "ClusterClient",
    "ConnectionInfo",
    "ConnectionPool",
    "PoolClosed",
    "PoolError",
    "PoolOptions",
    "PoolStats",
    "PoolTimeout",
    "RetryPolicy",
    "SentinelConnectionPool",
    "ServerUnavailable",
    "TooManyWaiters",
    "__version__",
    "cluster_pool_class",
]

ConnectionPool.__module__ = "redispool"
ConnectionInfo.__module__ = "redispool"
PoolStats.__module__ = "redispool"
PoolOptions.__module__ = "redispool"
SentinelConnectionPool.__module__ = "redispool"
ClusterClient.__module__ = "redispool"
