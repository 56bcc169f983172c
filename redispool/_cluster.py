"""Redis Cluster: one redispool pool per node under redis-py's ``RedisCluster``.

redis-py builds node pools with ``connection_pool_class(**kwargs)`` only on the
``RedisCluster.from_url`` path, and it drops every keyword it does not know before they
get there, so redispool options cannot travel as plain keywords. :func:`cluster_pool_class`
bakes them into a pool class instead::

    client = RedisCluster.from_url(
        "redis://127.0.0.1:7000",
        connection_pool_class=redispool.cluster_pool_class(max_connections=20, timeout=1.0),
    )

Each node gets its own pool, with its own bound, waiters, fail-fast circuit and stats,
so one slow or dead node never blocks or fails callers of another. A node pool that is
exhausted raises :class:`redispool.PoolTimeout`, a ``MaxConnectionsError``, which
redis-py >= 6.3 passes to the caller without refreshing the cluster topology.

redis-py's ``ClusterPipeline`` does not make that distinction: any ``ConnectionError``
while it gathers node connections, ``PoolTimeout`` included, refreshes the topology and
starts over, up to its retry count. :class:`ClusterClient` pipelines raise the
``PoolTimeout`` (or ``TooManyWaiters``) at once instead: the client's
``NodesManager.initialize`` refuses to run while a pipeline of this thread is handling a
``PoolTimeout``, and the refusal, which redis-py does not retry, carries the ``PoolTimeout``
out to ``execute()``. By then
redis-py has already returned the connections it took from the other nodes. A
transaction pipeline (redis-py >= 6) retries through ``Retry.call_with_retry`` instead;
its failure handler re-raises a ``PoolTimeout``, which ends the retries.
"""

from __future__ import annotations

import difflib
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from redis.cluster import ClusterPipeline, NodesManager, RedisCluster
from redis.connection import Connection, SSLConnection

from ._options import OPTION_NAMES, PoolOptions, allowed_keywords, split_options
from ._pool import ConnectionPool
from ._stats import PoolStats
from .errors import PoolTimeout, TooManyWaiters

__all__ = ["ClusterClient", "ClusterNodePool", "cluster_pool_class"]


class ClusterNodePool(ConnectionPool):
    """The pool of one cluster node: a :class:`ConnectionPool` with class-level defaults.

    ``defaults`` holds the keywords given to :func:`cluster_pool_class`; keywords that
    ``RedisCluster`` passes itself (host, port, credentials, ``max_connections`` if you
    gave it one) win over them, as with ``functools.partial``.
    """

    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(
        self, connection_class: Any = None, max_connections: int | None = None, **kwargs: Any
    ) -> None:
        merged = {**self.defaults, **kwargs}
        if connection_class is None:
            connection_class = merged.pop("connection_class", Connection)
        if max_connections is None:
            max_connections = merged.pop("max_connections", None)
        else:
            merged.pop("max_connections", None)
        super().__init__(connection_class, max_connections, **merged)


def cluster_pool_class(**options: Any) -> type[ClusterNodePool]:
    """A node-pool class for ``RedisCluster.from_url(url, connection_pool_class=...)``.

    ``options`` are redispool options (``max_connections``, ``timeout``, ``min_idle``,
    ``ping_after_idle``, ...) and, if needed, connection keywords that ``RedisCluster``
    would strip (``health_check_interval``, say). Everything is checked here, so a typo
    fails at once (``TypeError``/``ValueError`` naming it) rather than when the first node
    is contacted.
    """
    connection_keywords = dict(options)
    own = split_options(connection_keywords)
    if own:
        PoolOptions.from_kwargs(own)
    plain = allowed_keywords(options.get("connection_class", Connection))
    tls = allowed_keywords(SSLConnection)  # a rediss:// URL switches to it
    # None: a class that takes any keyword, so there is nothing to refuse.
    known = None if plain is None or tls is None else plain | tls
    for key in connection_keywords:
        if known is not None and key not in known:
            hint = difflib.get_close_matches(key, sorted(known | OPTION_NAMES), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise TypeError(f"cluster_pool_class() got an unknown option {key!r}{suggestion}")
    return type(
        "ClusterNodePool",
        (ClusterNodePool,),
        {"defaults": MappingProxyType(dict(options)), "__module__": "redispool"},
    )


def _pools_of(cluster: RedisCluster) -> list[tuple[str, ConnectionPool]]:
    """Every redispool pool under ``cluster``: current nodes first, then startup nodes
    (whose pools may be separate objects), each pool once."""
    manager = cluster.nodes_manager
    found: dict[int, tuple[str, ConnectionPool]] = {}
    for node in [*manager.nodes_cache.values(), *manager.startup_nodes.values()]:
        pool = getattr(node.redis_connection, "connection_pool", None)
        if isinstance(pool, ConnectionPool):
            found.setdefault(id(pool), (node.name, pool))
    return list(found.values())


# A node pool that is full, as opposed to a node that fails: never a reason to refresh.
_EXHAUSTED = (PoolTimeout, TooManyWaiters)


class _NodeExhausted(Exception):
    """A node pool's ``PoolTimeout`` on its way out of redis-py's pipeline retry loop,
    which retries every ``ConnectionError`` but lets any other exception through."""

    def __init__(self, error: PoolTimeout | TooManyWaiters) -> None:
        super().__init__(str(error))
        self.error = error


class _Executing(threading.local):
    depth = 0  # ClusterClient pipelines executing in this thread (nested ones count too)


_executing = _Executing()


def _initialize_unless_exhausted(manager: NodesManager) -> Callable[..., Any]:
    """``manager.initialize``, except while a pipeline is handling a node pool's
    ``PoolTimeout``: an exhausted pool is not a changed topology."""
    ref = weakref.ref(manager)  # the manager holds this function: no cycle through it

    def initialize(*args: Any, **kwargs: Any) -> Any:
        error = sys.exc_info()[1]
        if isinstance(error, _EXHAUSTED) and _executing.depth:
            raise _NodeExhausted(error)
        target = ref()
        assert target is not None  # called through the manager, so it is alive
        return type(target).initialize(target, *args, **kwargs)

    return initialize


class _Pipeline(ClusterPipeline):
    """``ClusterPipeline`` whose ``execute()`` raises a node pool's ``PoolTimeout``
    without refreshing the topology or retrying, as single commands do."""

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        _executing.depth += 1
        try:
            return super().execute(raise_on_error)
        except _NodeExhausted as exhausted:
            raise exhausted.error from None
        finally:
            _executing.depth -= 1


def _stop_on_pool_timeout(on_error: Callable[..., Any]) -> Callable[..., Any]:
    """A transaction's retry failure handler that ends the retries on ``PoolTimeout``."""

    def handle(error: Exception, *args: Any) -> Any:
        if isinstance(error, _EXHAUSTED):
            raise error
        return on_error(error, *args)

    return handle


class ClusterClient(RedisCluster):
    """``RedisCluster`` whose node pools are redispool pools, with per-node stats.

    Accepts everything ``RedisCluster`` does, plus redispool options as keywords::

        client = redispool.ClusterClient.from_url("redis://127.0.0.1:7000", max_connections=20)
        client.stats()  # {"127.0.0.1:7000": {...}, ...}

    ``host``/``port`` and ``startup_nodes`` work too: they are turned into the URL that
    redis-py needs to use a custom pool class.
    """

    def __init__(
        self, host: str | None = None, port: int = 6379, url: str | None = None, **kwargs: Any
    ) -> None:
        kwargs["connection_pool_class"] = cluster_pool_class(**split_options(kwargs))
        if url is None:
            nodes = kwargs.get("startup_nodes") or []
            if host is None and not nodes:
                raise ValueError("ClusterClient needs url, host or startup_nodes")
            if host is None:
                host, port = nodes[0].host, nodes[0].port
            scheme = "rediss" if kwargs.pop("ssl", False) else "redis"
            url = f"{scheme}://{host}:{port}"
        super().__init__(url=url, **kwargs)
        self.nodes_manager.initialize = _initialize_unless_exhausted(self.nodes_manager)  # type: ignore[method-assign]

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        """redis-py's ``ClusterPipeline``, except that a node pool that stays exhausted
        raises ``PoolTimeout`` from ``execute()`` at once, with no topology refresh."""
        pipe: ClusterPipeline = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        pipe.__class__ = _Pipeline  # same object, so every redis-py version's fields carry over
        # redis-py >= 6 runs a transaction through Retry.call_with_retry, whose failure
        # handler is this strategy method: raising from it ends the retries at once.
        strategy = getattr(pipe, "_execution_strategy", None)
        on_error = getattr(strategy, "_reinitialize_on_error", None)
        if on_error is not None:
            strategy._reinitialize_on_error = _stop_on_pool_timeout(on_error)  # type: ignore[union-attr]
        return pipe

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ClusterClient:
        return cls(url=url, **kwargs)

    def pools(self) -> dict[str, ConnectionPool]:
        """The redispool pool of every known node, by ``host:port``."""
        found: dict[str, ConnectionPool] = {}
        for name, pool in _pools_of(self):
            found.setdefault(name, pool)
        return found

    def close(self) -> None:
        """Close the client and its node pools' connections.

        ``RedisCluster.close()`` leaves the node pools' idle sockets open (redis-py does
        not own a pool it was given); this client made them, so it closes them too. The
        pools stay usable, as ``ConnectionPool.close()`` promises.
        """
        pools = _pools_of(self)
        try:
            super().close()
        finally:
            for _, pool in pools:
                pool.close()

    def stats(self) -> dict[str, PoolStats]:
        """``pool.stats()`` of every node, by ``host:port``."""
        return {name: pool.stats() for name, pool in self.pools().items()}
