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
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from redis.cluster import RedisCluster
from redis.connection import Connection, SSLConnection

from ._options import OPTION_NAMES, PoolOptions, split_options
from ._pool import ConnectionPool, _connection_parameters
from ._stats import PoolStats

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
    known = _connection_parameters(options.get("connection_class", Connection))
    known |= _connection_parameters(SSLConnection)  # a rediss:// URL switches to it
    for key in connection_keywords:
        if key not in known:
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
