"""What redis-py, Django, Cluster and metrics code read on a pool, and what it reports.

:class:`PoolViews` is the read-only face of :class:`redispool.ConnectionPool`: the
members redis-py's own pools have (``_available_connections``, ``_in_use_connections``,
``_created_connections``, ``get_protocol``, ``_get_pool_lock``, a pool that is never
falsy), the options, the name, ``repr``, ``stats()`` and ``connections()``. It only
reads the slot engine, under its lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from ._connect import Circuit
from ._meta import thread_name
from ._options import PoolOptions
from ._slots import Slots
from ._stats import ConnectionInfo, PoolStats

log = logging.getLogger("redispool")

_SECRET_KEYS = frozenset({"password", "username", "ssl_password", "credential_provider"})
_HIDDEN_KEYS = frozenset(
    {
        "himport_registry",
        "connection_pool",
        "maint_notifications_pool_handler",
        "maint_notifications_config",
        "oss_cluster_maint_notifications_handler",
        "event_dispatcher",
    }
)


class PoolViews:
    """Views and introspection of a pool built on a :class:`Slots` engine."""

    _slots: Slots
    _options: PoolOptions
    _circuit: Circuit
    _acquire_listeners: tuple[Callable[[float], None], ...]
    connection_class: Any
    connection_kwargs: dict[str, Any]

    def __bool__(self) -> bool:
        return True  # redis.Redis ignores a falsy pool and silently builds its own

    def __del__(self) -> None:
        pass  # idle connections close themselves when collected

    def _repr_with(self, state: str) -> str:
        kwargs = ",".join(
            f"{k}={'<REDACTED>' if k in _SECRET_KEYS else v}"
            for k, v in self.connection_kwargs.items()
            if k not in _HIDDEN_KEYS
        )
        cls = self.connection_class
        conn = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)}"
        # redis-py's shape, ending in the connection's repr and ")>", with the live state in
        # front: code in the wild (redis-py's own tests among it) parses the rest.
        return f"<[{self.name}: {state}] {type(self).__module__}.{type(self).__name__}(<{conn}({kwargs})>)>"

    # ------------------------------------------------------------------ options

    @property
    def options(self) -> PoolOptions:
        """The validated options in force (see the README's options table)."""
        return self._options

    @property
    def name(self) -> str:
        """``name`` if given, else ``host:port/db`` or the socket path; never credentials."""
        if self._options.name:
            return self._options.name
        kw = self.connection_kwargs
        if kw.get("path"):
            return f"{kw['path']}/{kw.get('db', 0)}"
        return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"

    @property
    def max_connections(self) -> int:
        return self._options.max_connections

    @max_connections.setter
    def max_connections(self, value: int) -> None:
        if getattr(self, "_ready", False):
            self.resize(max_connections=value)

    def resize(self, max_connections: int | None = None, min_idle: int | None = None) -> None:
        raise NotImplementedError  # pragma: no cover - ConnectionPool implements it

    @property
    def timeout(self) -> float | None:
        """The default acquire timeout in seconds (None waits forever)."""
        return self._options.timeout

    @property
    def _clock(self) -> Callable[[], float]:
        """The clock of lifetimes and idle times; tests replace it to move time."""
        return self._slots.clock

    @_clock.setter
    def _clock(self, clock: Callable[[], float]) -> None:
        self._slots.clock = clock

    # ------------------------------------------------------------------ redis-py's members

    @property
    def _available_connections(self) -> list[Any]:
        with self._slots.lock:
            return list(self._slots.idle)

    @property
    def _in_use_connections(self) -> set[Any]:
        with self._slots.lock:
            return set(self._slots.live_in_use())

    @property
    def _created_connections(self) -> int:
        with self._slots.lock:
            return self._slots.size()

    def _get_free_connections(self) -> list[Any]:
        return self._available_connections

    def _get_in_use_connections(self) -> set[Any]:
        return self._in_use_connections

    def get_protocol(self) -> Any:
        """The RESP version asked for in ``connection_kwargs``, or None for the default
        (redis-py < 5.1 lacks this member; callers of newer versions expect it)."""
        return self.connection_kwargs.get("protocol")

    def _get_pool_lock(self) -> threading.RLock:
        return self._slots.lock

    # ------------------------------------------------------------------ acquire listeners

    def add_acquire_listener(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(seconds)`` after every successful :meth:`acquire`.

        ``seconds`` is the time it took to obtain the connection: queueing, health
        checks and connecting together, the histogram metrics integrations need. It runs
        in the acquiring thread with no pool lock held, so it must be quick; an exception
        it raises is logged and ignored. Failed acquires are not reported (see
        ``stats()["timeouts"]``). Adding the same listener twice calls it twice.
        """
        with self._slots.lock:
            self._acquire_listeners = (*self._acquire_listeners, listener)

    def remove_acquire_listener(self, listener: Callable[[float], None]) -> None:
        """Stop calling ``listener``; removing one that was never added does nothing."""
        with self._slots.lock:
            listeners = list(self._acquire_listeners)
            if listener in listeners:
                listeners.remove(listener)
            self._acquire_listeners = tuple(listeners)

    def _notify_acquired(self, seconds: float) -> None:
        # A tuple swapped whole under the lock, so iterating it here needs no lock.
        for listener in self._acquire_listeners:
            try:
                listener(seconds)
            except Exception:  # metrics must never break a checkout
                log.debug("acquire listener %r failed", listener, exc_info=True)

    # ------------------------------------------------------------------ introspection

    def _address(self) -> str:
        kw = self.connection_kwargs
        return str(kw["path"]) if kw.get("path") else f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    def stats(self) -> PoolStats:
        """Gauges (now) and counters (since creation) under fixed keys; see the README."""
        return snapshot(self._slots, self.name, self._circuit.is_open)

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every connection the pool holds (idle and borrowed)."""
        return connection_infos(self._slots, self._address())


def quiet_disconnect(conn: Any) -> None:
    try:
        getattr(conn, "disconnect", _nothing)()
    except Exception:
        log.debug("error while closing a connection", exc_info=True)


# Per-connection handlers that redis-py >= 7 links with their connection both ways.
_BACK_LINKED = ("_maint_notifications_pool_handler", "_maint_notifications_connection_handler")


def unlink(conn: Any) -> None:
    """Break the reference cycle between a connection the pool is done with and its
    maintenance handlers, so it is freed at once, read buffer and all, instead of at
    the cyclic collector's next full pass (benchmarks/soak.py measured the difference)."""
    for name in _BACK_LINKED:
        handler = getattr(conn, name, None)
        if handler is not None and getattr(handler, "connection", None) is conn:
            handler.connection = None


def _nothing() -> None:
    pass  # the "disconnect" of a connection class that has none (a test double)


def snapshot(slots: Slots, name: str, failing_fast: bool) -> PoolStats:
    """The gauges and counters of one engine, read together under its lock."""
    with slots.lock:
        opts = slots.options
        counters = slots.counters
        return {
            "name": name,
            "max": opts.max_connections,
            "size": slots.size(),
            "idle": len(slots.idle),
            "in_use": len(slots.in_use),
            "connecting": slots.connecting,
            "closing": len(slots.closing),
            "waiting": len(slots.waiters),
            "min_idle": opts.min_idle,
            "failing_fast": failing_fast,
            **dataclasses.asdict(counters),  # type: ignore[typeddict-item]
        }


def connection_infos(slots: Slots, address: str) -> list[ConnectionInfo]:
    """A snapshot of every connection an engine holds (idle and borrowed), by id."""
    now = slots.clock()
    with slots.lock:
        rows = [(c._rp_meta, "idle") for c in slots.idle]
        rows += [(m, "in_use") for m in slots.in_use]
        rows += [(c._rp_meta, "idle") for c in slots.pinging]
    return [
        ConnectionInfo(
            id=meta.id,
            state=state,  # type: ignore[arg-type]
            address=address,
            age=now - meta.created,
            idle_for=0.0 if state == "in_use" else now - meta.last_used,
            uses=meta.uses,
            holder=thread_name(meta.holder) if state == "in_use" and meta.holder else None,
        )
        for meta, state in sorted(rows, key=lambda r: r[0].id)
    ]
