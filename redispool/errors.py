"""The exceptions redispool raises.

Every class derives from :class:`PoolError` and from the redis-py exception a caller
already catches, so ``except redis.ConnectionError`` keeps working unchanged.
Exhaustion errors derive from :class:`redis.exceptions.MaxConnectionsError`, which
tells ``RedisCluster`` that the node is healthy and its topology need not be refreshed.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

try:  # redis-py >= 5.0.1; fall back to ConnectionError for the oldest 5.0 releases
    from redis.exceptions import MaxConnectionsError
except ImportError:  # pragma: no cover - depends on the installed redis-py
    MaxConnectionsError = RedisConnectionError  # type: ignore[misc,assignment]

__all__ = [
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "ServerUnavailable",
    "TooManyWaiters",
]


class PoolError(RedisError):
    """Base class of every error raised by redispool itself."""


class PoolTimeout(PoolError, MaxConnectionsError):
    """No connection could be handed out before the acquire deadline."""


class TooManyWaiters(PoolError, MaxConnectionsError):
    """Refused at once: ``max_waiting`` callers are already queued for a connection."""


class PoolClosed(PoolError, RedisConnectionError):
    """The pool was shut down with :meth:`ConnectionPool.shutdown` and hands out nothing."""


class ServerUnavailable(PoolError, RedisConnectionError):
    """Redis has refused every connect for a while; the pool fails fast until it answers."""


for _cls in (PoolError, PoolTimeout, TooManyWaiters, PoolClosed, ServerUnavailable):
    _cls.__module__ = "redispool"
del _cls
