"""Sentinel: a redispool pool whose connections follow the master, or rotate over replicas.

Use it through redis-py's own entry points::

    sentinel = redis.sentinel.Sentinel([("127.0.0.1", 26379)], socket_timeout=0.5)
    client = sentinel.master_for("mymaster", connection_pool_class=redispool.SentinelConnectionPool,
                                 max_connections=20, timeout=2.0)

Every new connection asks Sentinel where to go (the master, or the next replica in
round-robin order). When a connect learns that the master moved, the pool retires every
connection to the previous master: idle ones are closed at once, borrowed ones when they
are returned, and none is ever handed out again. A retired connection frees its slot
like any other closed one, so a failover never shrinks the pool (redis-py #4187).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis.connection import Connection, SSLConnection
from redis.sentinel import SentinelConnectionPool as _RedisSentinelPool
from redis.sentinel import (
    SentinelConnectionPoolProxy,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from ._meta import Meta
from ._pool import ConnectionPool
from ._stats import SentinelPoolStats
from ._tracking import inner

log = logging.getLogger("redispool")

_RETIRED = "connected to the previous master"


class _RoutedConnection(SentinelManagedConnection):
    """Makes every way of connecting ask Sentinel for the address first.

    The pool connects through ``connect_check_health`` (redis-py >= 6.0) to bound the
    handshake by its own deadline; on a Sentinel connection that method alone would dial
    the placeholder host. Routed here, it picks the master (or the next replica) exactly
    as ``connect()`` does, without ``connect()``'s retries: the pool owns retries.
    """

    _rp_routing = False  # True while an address has been chosen and is being dialled

    def _connect_retry(self) -> Any:
        self._rp_routing = True
        try:
            return super()._connect_retry()  # type: ignore[no-untyped-call]
        finally:
            self._rp_routing = False

    def connect_check_health(self, check_health: bool = True, *args: Any, **kwargs: Any) -> Any:
        if self._sock:
            return None
        if self._rp_routing:  # args: retry_socket_connect on redis-py >= 6.3
            return super().connect_check_health(check_health, *args, **kwargs)
        return self._connect_retry()


_routed: dict[type[Any], type[Any]] = {}
_routed_lock = threading.Lock()


def _connection_class(requested: Any, ssl: bool) -> Any:
    """The connection class for a Sentinel pool: redis-py's Sentinel classes, routed.

    Plain ``Connection``/``SSLConnection`` (what ``from_url`` puts in) become their
    Sentinel-managed twins; a custom class that is not Sentinel-managed is used as given.
    """
    if requested is None or requested is Connection:
        requested = SentinelManagedSSLConnection if ssl else SentinelManagedConnection
    elif requested is SSLConnection:
        requested = SentinelManagedSSLConnection
    if not isinstance(requested, type) or not issubclass(requested, SentinelManagedConnection):
        return requested
    if issubclass(requested, _RoutedConnection):
        return requested
    with _routed_lock:
        cls = _routed.get(requested)
        if cls is None:
            namespace = {"__module__": requested.__module__}
            cls = type(requested.__name__, (_RoutedConnection, requested), namespace)
            _routed[requested] = cls
        return cls


class _Proxy(SentinelConnectionPoolProxy):
    """redis-py's proxy, but a master switch retires connections instead of merely
    closing the idle ones (which would let borrowed ones come back and be reused)."""

    def get_master_address(self) -> Any:
        address = self.sentinel_manager.discover_master(self.service_name)
        if self.is_master:
            pool = self.connection_pool_ref()
            if pool is not None:
                pool._master_is(address)  # compares and retires under the pool lock
            else:
                self.master_address = address
        return address


class SentinelConnectionPool(_RedisSentinelPool, ConnectionPool):  # type: ignore[override]
    """A :class:`redispool.ConnectionPool` managed by Redis Sentinel.

    Both a ``redis.sentinel.SentinelConnectionPool`` (django-redis checks that) and a
    redispool pool: bounds, FIFO waiters, health checks, eviction and stats all apply.
    Built by ``Sentinel.master_for``/``slave_for`` as ``X(service_name, sentinel_manager,
    **kwargs)``; redispool options go in those keywords.

    Master pools: when a new connection finds that Sentinel names another master, idle
    connections to the old one are closed at once, borrowed ones on return, and a
    checkout never hands one out (counted in ``stats()["retired_previous_master"]``;
    ``stats()["master_switches"]`` counts switches seen). Replica pools: each new
    connection goes to the next live replica in turn, then to the master if none is left.
    """

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        self.service_name = service_name
        self.sentinel_manager = sentinel_manager
        self.is_master = bool(kwargs.pop("is_master", True))
        self.check_connection = bool(kwargs.pop("check_connection", False))
        self._switches = 0  # guarded by self._lock once the pool exists
        self._retired = 0
        # The proxy must exist before the pool does: redis-py's __init__ calls reset(),
        # and a min_idle pool may open its first connection before __init__ returns.
        self.proxy = _Proxy(  # type: ignore[no-untyped-call]
            connection_pool=self,
            is_master=self.is_master,
            check_connection=self.check_connection,
            service_name=service_name,
            sentinel_manager=sentinel_manager,
        )
        ssl = kwargs.pop("ssl", False)
        kwargs["connection_class"] = _connection_class(kwargs.get("connection_class"), ssl)
        kwargs["connection_pool"] = self.proxy
        # Skip redis-py's SentinelConnectionPool.__init__: it builds its own proxy.
        ConnectionPool.__init__(self, **kwargs)

    def __repr__(self) -> str:
        return ConnectionPool.__repr__(self)

    @property
    def name(self) -> str:
        """``name`` if given, else ``service(master)`` or ``service(replica)``."""
        if self._options.name:
            return self._options.name
        return f"{self.service_name}({'master' if self.is_master else 'replica'})"

    def _address(self) -> str:
        address = self.proxy.master_address if self.is_master else None
        if address is not None:
            return f"{address[0]}:{address[1]}"
        return f"{self.service_name} {'master' if self.is_master else 'replicas'} via Sentinel"

    # ------------------------------------------------------------------ failover

    def _master_is(self, current: tuple[str, int]) -> None:
        """Record what Sentinel named as master; on a change, close idle connections to
        the previous one now (the rest retire on return or checkout)."""
        with self._lock:  # critical section: master address, idle list and slots
            previous = self.proxy.master_address
            if previous == current:
                return
            self.proxy.master_address = current
            if previous is None:
                return  # the first answer, or the first after reset(): nothing to retire
            self._switches += 1
            doomed = self._slots.evict_idle(_RETIRED, self._stale)
            self._retired += len(doomed)
        log.info(
            "Sentinel names %s:%s as master of %s (was %s:%s); retiring %d idle connections "
            "to the old master, borrowed ones when returned",
            current[0],
            current[1],
            self.service_name,
            previous[0],
            previous[1],
            len(doomed),
        )
        self.close_doomed(doomed)

    def _stale(self, conn: Any) -> bool:
        """True for a master pool's connection that does not point at the current master."""
        if not self.is_master:
            return False
        current = self.proxy.master_address
        if current is None:
            return False
        real = inner(conn)
        return (getattr(real, "host", None), getattr(real, "port", None)) != tuple(current)

    def _check_out(self, conn: Any, deadline: float | None = None) -> str | None:
        if self._stale(conn):
            with self._lock:
                self._retired += 1
            return _RETIRED
        return super()._check_out(conn, deadline)

    def _return_verdict(self, conn: Any, meta: Meta, now: float) -> str | None:
        reason = super()._return_verdict(conn, meta, now)
        if reason is None and self._stale(conn):
            self._retired += 1
            return _RETIRED
        return reason

    # ------------------------------------------------------------------ introspection

    def stats(self) -> SentinelPoolStats:
        """:meth:`ConnectionPool.stats` plus two counters: ``master_switches`` (master
        changes this pool saw) and ``retired_previous_master`` (connections to an old
        master closed because of them)."""
        base = super().stats()
        with self._lock:
            return SentinelPoolStats(
                **base, master_switches=self._switches, retired_previous_master=self._retired
            )

    def _after_fork(self) -> None:
        super()._after_fork()
        self._switches = 0
        self._retired = 0
