"""Opening connections: construct, connect within the deadline, back off, fail fast.

:class:`PoolOpening` is the part of :class:`redispool.ConnectionPool` that makes new
connections. A connection is opened in a slot the engine reserved for it; on success it
is lent to the caller or handed on (to a waiter, or the idle set), on failure the slot
is freed and the circuit that makes the pool fail fast is told.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis

from . import _connect, _health, _tracking
from ._compat import quiet_disconnect, unlink
from ._maintenance import maintainer
from ._meta import Meta, Request, reclaimer
from ._options import PoolOptions
from ._slots import Slots
from .errors import ServerUnavailable

try:  # redis-py >= 5.1: client-side caching
    from redis.connection import CacheProxyConnection
except ImportError:  # pragma: no cover - depends on the installed redis-py
    CacheProxyConnection = None  # type: ignore[assignment,misc]

log = logging.getLogger("redispool")

# Connections expire up to this fraction before max_lifetime, so they do not all
# reconnect together and max_lifetime stays a true maximum.
LIFETIME_JITTER = 0.1


class PoolOpening:
    """Making connections, on top of a :class:`Slots` engine (see the module docstring)."""

    _slots: Slots
    _options: PoolOptions
    _lock: threading.RLock
    _circuit: _connect.Circuit
    _tracked_class: Any
    _plain: bool
    connection_kwargs: dict[str, Any]

    _give_up: Callable[[Request], None]  # ConnectionPool's
    _address: Callable[[], str]  # PoolViews's

    @property
    def name(self) -> str:
        raise NotImplementedError  # pragma: no cover - PoolViews's comes first

    def make_connection(self) -> Any:
        """Construct (not connect) a connection from ``connection_kwargs`` as they are now."""
        kwargs = dict(self.connection_kwargs)
        conn = self._tracked_class(**kwargs)
        cache = getattr(self, "cache", None)  # redis-py < 5.1 has no client-side caching
        if cache is not None and CacheProxyConnection is not None:
            conn = CacheProxyConnection(conn, cache, self._lock)  # type: ignore[abstract]
        slots = self._slots
        now = slots.clock()
        lifetime = self._options.max_lifetime
        expires = (
            float("inf") if lifetime is None else now + lifetime * (1 - random.uniform(0, LIFETIME_JITTER))
        )
        meta = Meta(slots, slots.epoch, now, expires)
        meta.ref = weakref.ref(conn, reclaimer(weakref.ref(slots), meta))
        real = _tracking.inner(conn)
        meta.real = real if real is not conn else None
        should = getattr(type(conn), "should_reconnect", None)
        meta.should_reconnect = should
        meta.plain = (
            self._plain
            and real is conn
            and isinstance(conn, _tracking.TrackedConnection)
            and (should is None or should is _REDIS_SHOULD_RECONNECT)
        )
        conn._rp_meta = meta
        return conn

    def _open(self, req: Request, deadline: float | None, *, for_caller: bool) -> Any:
        """Open a connection in the slot ``req`` holds; lend it to the caller or hand it
        on. On failure the slot is freed and the connect error raised."""

        def attempt() -> Any:
            req.opening = conn = self.make_connection()
            try:
                _connect.connect_within(conn, deadline)
            except BaseException as error:
                quiet_disconnect(conn)
                unlink(conn)
                req.opening = None
                self._connect_failed(error)
                raise
            return conn

        try:
            conn = _connect.open_with_backoff(attempt, deadline, self._circuit_gate)
            remember_socket(conn._rp_meta, _health.socket_of(conn))
            with self._lock:
                reopened = self._circuit.succeeded()
                self._slots.opened(req, conn, for_caller)
        except BaseException:
            self._give_up(req)
            raise
        if reopened:
            log.warning("Redis at %s answers again; pool %s stops failing fast", self._address(), self.name)
        log.debug("opened connection #%d to %s", conn._rp_meta.id, self._address())
        return conn

    def open_into(self, req: Request, deadline: float | None) -> None:
        """Open a connection in ``req``'s slot for the idle set or a waiter (upkeep)."""
        self._open(req, deadline, for_caller=False)

    def _circuit_gate(self) -> None:
        with self._lock:
            if self._circuit.may_attempt(time.monotonic()):
                return
            self._slots.counters.fail_fast += 1
            since = time.monotonic() - (self._circuit.failing_since or time.monotonic())
            cause = self._circuit.last_error
        raise ServerUnavailable(
            f"Redis at {self._address()} has refused connections for {since:.1f}s "
            f"(last error: {cause}); failing fast until it answers again"
        ) from cause

    def _connect_failed(self, error: BaseException) -> None:
        if not _connect.retryable(error):
            return
        with self._lock:
            self._slots.counters.connect_errors += 1
            opened = self._circuit.failed(time.monotonic(), error)
        if opened:
            log.warning(
                "Redis at %s refused connections for %.1fs (%s); pool %s fails fast until it answers",
                self._address(),
                self._options.fail_fast_after,
                error,
                self.name,
            )
            maintainer.wake()

    @property
    def failing_fast(self) -> bool:
        """True while Redis has refused connections long enough to fail fast."""
        return self._circuit.is_open


def _reads_only_should_reconnect(method: Any) -> bool:
    code = getattr(method, "__code__", None)
    return code is not None and code.co_names == ("_should_reconnect",)


# redis-py's own should_reconnect (>= 7), when its body only returns
# ``self._should_reconnect``: release() may then read the attribute instead of calling it.
_REDIS_SHOULD_RECONNECT = getattr(redis.connection.AbstractConnection, "should_reconnect", None)
if not _reads_only_should_reconnect(_REDIS_SHOULD_RECONNECT):  # pragma: no cover - redis-py
    _REDIS_SHOULD_RECONNECT = object()


def remember_socket(meta: Meta, sock: Any) -> None:
    """Keep the connection's current socket on its meta: the borrow probe polls it, and
    if the connection is leaked and collected, the reclaim closes it explicitly."""
    if sock is not meta.sock:  # (re)connected since the last look: new poll object
        meta.sock = sock
        meta.poller = _health.poller_for(sock) if isinstance(sock, socket.socket) else None
        # TLS cannot be probed by poll() alone (see _health._probe_tls).
        meta.quick = meta.poller if meta.plain and not isinstance(sock, ssl.SSLSocket) else None
