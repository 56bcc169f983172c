"""RQ queues and workers on a bounded redispool pool (``pip install 'redispool[rq]'``).

::

    from rq import Queue
    from redispool.contrib.rq import Redis

    queue = Queue(connection=Redis.from_url("redis://localhost:6379/0?max_connections=8"))

and for the worker, RQ's own hook, its ``--connection-class`` option::

    rq worker --connection-class redispool.contrib.rq.Redis --url 'redis://localhost:6379/0?max_connections=4'

:meth:`Redis.from_url` takes redispool's options in the URL query or as keywords and
returns a client on this process's one pool for that URL, however often RQ calls it. A
``client_name`` with ``{pid}`` names each process's connections.

RQ forks a work horse per job. redispool pools reset themselves in a forked child, so
the horse opens fresh connections of its own and never touches the worker's sockets
(the worker's pub/sub thread and its blocking dequeue keep theirs). RQ's scheduler
(``--with-scheduler``) and ``rq worker-pool`` build plain redis-py pools from the
connection's settings; those are not bounded by redispool.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.connection import Connection, parse_url

from .._pool import ConnectionPool
from ._pools import per_pid_names, pool_key, shared_pool

__all__ = ["Redis", "pool_for"]


def pool_for(url: str, **options: Any) -> ConnectionPool:
    """This process's pool for ``url`` and ``options`` (made on first use).

    Query parameters and keywords may carry any redispool option and connection keyword,
    as for :meth:`redispool.ConnectionPool.from_url`; bad ones raise ``ValueError``.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, not {url!r}")
    base = options.pop("connection_class", None) or parse_url(url).get("connection_class", Connection)  # type: ignore[no-untyped-call]
    key = pool_key({"url": url, "connection_class": base, **options})
    return shared_pool(
        key, lambda: ConnectionPool.from_url(url, connection_class=per_pid_names(base), **options)
    )


class Redis(redis.Redis):
    """A redis-py client whose :meth:`from_url` uses the process's shared redispool pool."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Redis:
        """A client on :func:`pool_for` ``(url, **kwargs)``.

        The pool is shared, so ``close()`` on the client leaves it open; it closes with
        the process.
        """
        return cls(connection_pool=pool_for(url, **kwargs))
