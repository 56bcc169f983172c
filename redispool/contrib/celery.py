"""Celery's broker and result backend on bounded redispool pools (``redispool[celery]``).

Importing this module registers the kombu transport alias ``redispool``, so::

    import redispool.contrib.celery  # noqa: F401  (registers redispool://)

    app = Celery(
        "tasks",
        broker="redispool://localhost:6379/0",
        backend="redispool.contrib.celery:RedisBackend+redis://localhost:6379/1",
    )

The extension points are kombu's and Celery's own:

- Broker: ``kombu.transport.TRANSPORT_ALIASES["redispool"]`` names :class:`Transport`, a
  subclass of kombu's Redis transport whose :class:`Channel` overrides ``_get_pool``.
  (``broker_transport = "redispool.contrib.celery:Transport"`` with a ``redis://`` URL
  does the same without the alias.)
- Result backend: Celery splits ``result_backend`` at ``+`` and imports the part before
  it, so ``redispool.contrib.celery:RedisBackend+redis://...`` selects
  :class:`RedisBackend`, a subclass of Celery's whose ``_get_pool`` is overridden.

Both keep one pool per process and setting, however many channels, connections or
per-thread backends Celery makes, so ``max_connections`` bounds the process.
``max_connections`` comes from ``broker_transport_options["max_connections"]`` and
``redis_max_connections``; any other redispool option from a ``"redispool"`` dict in
``broker_transport_options`` / ``result_backend_transport_options``. A ``client_name``
(broker transport option, or ``"redispool": {"client_name": ...}`` for the backend)
may contain ``{pid}``. Pools are closed on ``worker_process_shutdown`` and
``worker_shutdown``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import redis
from celery import signals  # type: ignore[import-untyped,unused-ignore]
from celery.backends.redis import (  # type: ignore[import-untyped,unused-ignore]
    RedisBackend as _CeleryRedisBackend,
)
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from .._options import OPTION_NAMES
from .._pool import ConnectionPool
from ._pools import close_shared, per_pid_names, pool_key, shared_pool

__all__ = ["Channel", "RedisBackend", "Transport", "close_pools"]

OPTIONS_KEY = "redispool"  # the transport-options entry holding redispool's own options
# Per-instance identification that must not split one pool into many.
_NOT_IDENTITY = ("driver_info", "lib_name", "lib_version")

_channels: weakref.WeakSet[Any] = weakref.WeakSet()  # every live Channel
_aware_classes: dict[type, type] = {}


def _pool_options(value: Any, where: str) -> dict[str, Any]:
    """The ``"redispool"`` transport option, checked: a dict of pool options."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{where}[{OPTIONS_KEY!r}] must be a dict of pool options, not {type(value).__name__}"
        )
    unknown = sorted(set(value) - OPTION_NAMES - {"client_name"})
    if unknown:
        raise ValueError(
            f"{where}[{OPTIONS_KEY!r}] has unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(OPTION_NAMES | {'client_name'}))}"
        )
    return dict(value)


def _make_pool(params: dict[str, Any], options: Mapping[str, Any]) -> ConnectionPool:
    """This process's pool for ``params`` (connection keywords) plus pool ``options``."""
    params = {**params, **options}
    if params.get("max_connections") is None:
        params.pop("max_connections", None)  # redispool's default bound, never unbounded
    params["connection_class"] = per_pid_names(params["connection_class"])
    key = pool_key(params, _NOT_IDENTITY)
    return shared_pool(key, lambda: ConnectionPool(**params))


def _channel_aware(base: type[Any]) -> type:
    """``base`` whose ``disconnect()`` tells the channel polling it, as kombu's per-channel
    class does. One class serves every channel, so channels can share a pool."""
    made = _aware_classes.get(base)
    if made is None:

        def disconnect(self: Any, *args: Any, **kwargs: Any) -> None:
            base.disconnect(self, *args, **kwargs)
            for channel in list(_channels):
                if channel._polls(self):
                    channel._on_connection_disconnect(self)

        made = type(base.__name__, (base,), {"disconnect": disconnect})
        made.__module__ = base.__module__
        made = _aware_classes.setdefault(base, made)
    return made


class Channel(kombu_redis.Channel):  # type: ignore[misc,unused-ignore]
    """kombu's Redis channel, drawing every connection from the process's shared pool.

    kombu pins one connection per consuming channel for ``BRPOP`` and one for fanout
    ``SUBSCRIBE``; they count against ``max_connections`` like every other.
    """

    from_transport_options = (  # type: ignore[assignment,unused-ignore]
        *kombu_redis.Channel.from_transport_options,
        OPTIONS_KEY,
    )
    redispool: Mapping[str, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _channels.add(self)
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]

    def _get_pool(self, asynchronous: bool = False) -> ConnectionPool:
        # Always the plain parameters: kombu's asynchronous variant makes a class per
        # channel, which would give every channel a pool of its own.
        params: dict[str, Any] = self._connparams(asynchronous=False)  # type: ignore[no-untyped-call,unused-ignore]
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        params["connection_class"] = _channel_aware(params["connection_class"])
        return _make_pool(params, _pool_options(self.redispool, "broker_transport_options"))

    def _polls(self, connection: Any) -> bool:
        """True if this channel holds ``connection`` for BRPOP or SUBSCRIBE."""
        if not self._registered:
            return False
        if connection is self._in_poll or connection is self._in_listen:
            return True
        return any(
            getattr(self.__dict__.get(a), "connection", None) is connection for a in ("client", "subclient")
        )

    def _disconnect_pools(self) -> None:
        # kombu disconnects its private pool here; ours is shared, so only this
        # channel's pinned connections go, closed and given back.
        pool = self._pool or self._async_pool
        self._pool = self._async_pool = None
        if pool is None:
            return
        for attr in ("client", "subclient"):
            client = self.__dict__.get(attr)
            connection = getattr(client, "connection", None)
            if client is not None and connection is not None:
                client.connection = None
                connection.disconnect()
                pool.release(connection)

    def _after_fork(self) -> None:
        # redispool already reset the pool in this child; the parent's sockets stay put.
        self._pool = self._async_pool = None
        for attr in ("client", "subclient"):
            self.__dict__.pop(attr, None)


class Transport(kombu_redis.Transport):  # type: ignore[misc,unused-ignore]
    """kombu's Redis transport with :class:`Channel`; URL scheme ``redispool://``."""

    Channel = Channel  # driver_type stays "redis": Celery keys Redis-only behaviour on it


class RedisBackend(_CeleryRedisBackend):  # type: ignore[misc,unused-ignore]
    """Celery's Redis result backend on the process's shared redispool pool.

    Celery makes a backend per thread; they all share one pool per setting.
    """

    def _get_pool(self, **params: Any) -> ConnectionPool:
        options = _pool_options(self._transport_options.get(OPTIONS_KEY), "result_backend_transport_options")
        params.setdefault("connection_class", redis.Connection)
        return _make_pool(params, options)


def close_pools(**_: Any) -> None:
    """Close this process's shared pools (connected to Celery's shutdown signals)."""
    close_shared()


TRANSPORT_ALIASES.setdefault("redispool", "redispool.contrib.celery:Transport")
signals.worker_process_shutdown.connect(close_pools, weak=False)
signals.worker_shutdown.connect(close_pools, weak=False)
