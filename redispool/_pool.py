"""The pool: slots, waiters, checkout and return.

A slot is the right to hold one connection. ``size`` counts idle connections, borrowed
ones, connects in progress and idle ones out for a background PING; it never exceeds
``max_connections``. A caller that finds no idle connection and no free slot queues as a
:class:`Waiter`. Whoever frees something hands it straight to the longest waiter: a
returned connection, or a slot when a connection was closed. So waiters are served in
arrival order and a newcomer can never overtake them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _connect, _events, _health, _lifecycle, _tracking
from ._maintenance import maintainer
from ._meta import Meta, Waiter, borrow_stack, reclaimer
from ._options import PoolOptions, check_keywords, from_url_keywords, split_options
from ._stats import ConnectionInfo, Counters
from .errors import PoolClosed, PoolTimeout, ServerUnavailable, TooManyWaiters

try:  # redis-py >= 5.1: client-side caching
    from redis.connection import CacheProxyConnection
except ImportError:  # pragma: no cover - depends on the installed redis-py
    CacheProxyConnection = None  # type: ignore[assignment,misc]

log = logging.getLogger("redispool")

_P = TypeVar("_P", bound="ConnectionPool")

# Connections expire up to this fraction before max_lifetime, so they do not all
# reconnect together and max_lifetime stays a true maximum.
LIFETIME_JITTER = 0.1
# At most one "pool too small" warning per pool in this many seconds.
TIMEOUT_WARNING_INTERVAL = 10.0

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
_all_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


class ConnectionPool(redis.ConnectionPool):
    """A bounded, fair, thread-safe pool of redis-py connections.

    Accepted wherever ``redis.ConnectionPool`` or ``redis.BlockingConnectionPool`` is:
    same constructor keywords and ``from_url``, plus redispool's options (see the
    README's options table). Callers that find every connection busy wait in arrival
    order for up to ``timeout`` seconds, then get :class:`PoolTimeout`; past
    ``max_waiting`` queued callers, new ones get :class:`TooManyWaiters` at once.
    ``release()`` never blocks and never raises. ``close()`` closes every connection but
    leaves the pool usable, as in redis-py; ``shutdown()`` is terminal.
    """

    def __init__(
        self,
        connection_class: Any = Connection,
        max_connections: int | None = None,
        **kwargs: Any,
    ) -> None:
        own = split_options(kwargs)
        if max_connections is not None:
            own["max_connections"] = max_connections
        queue_class = kwargs.pop("queue_class", None)
        if isinstance(queue_class, type) and "idle_order" not in own:
            # BlockingConnectionPool's knob: a FIFO queue means round-robin use.
            own["idle_order"] = "lifo" if issubclass(queue_class, queue.LifoQueue) else "fifo"
        self._options = PoolOptions.from_kwargs(own)
        check_keywords(connection_class, kwargs)
        self._ready = False
        super().__init__(connection_class, self._options.max_connections, **kwargs)
        # redis-py 5.x makes a plain Lock; external code re-enters it (cluster, GC).
        self._lock = threading.RLock()
        self._fork_lock = threading.RLock()
        self._tracked_class = _tracking.tracked_class(connection_class)
        self._clock: Callable[[], float] = time.monotonic
        self._token = object()  # identifies connections made by this pool object
        self._counters = Counters()
        self._circuit = _connect.Circuit(self._options.fail_fast_after)
        self._release_events = _events.watch(self)  # kept current by _events
        self._registered = False
        self._shut = False
        self._acquire_listeners: tuple[Callable[[float], None], ...] = ()
        self._last_timeout_warning = -TIMEOUT_WARNING_INTERVAL
        self._reclaimed: deque[Meta] = deque()
        self._init_state()
        self._ready = True
        _all_pools.add(self)
        if self._options.min_idle:
            self._register()  # pre-warm in the background from the start
        log.debug("created pool %s (max_connections=%d)", self.name, self._options.max_connections)

    def _init_state(self) -> None:
        # --- everything below is guarded by self._lock ---
        self._idle: deque[Any] = deque()  # connections ready to hand out
        self._in_use: dict[Meta, None] = {}  # borrowed; the pool holds them only weakly
        self._pinging: set[Any] = set()  # idle connections out for a keepalive PING
        self._connecting = 0  # slots reserved for connects in progress
        self._waiters: deque[Waiter] = deque()
        self._epoch = 0  # bumped by drain() and reset(): older connections retire
        # --- end of guarded state ---
        self.pid = os.getpid()  # last, as redis-py's reset() does

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_url(cls: type[_P], url: str, **kwargs: Any) -> _P:
        """Build a pool from ``redis://``, ``rediss://`` or ``unix://`` URL.

        Query parameters may carry any connection keyword and any redispool option;
        an unknown one raises ``ValueError``. URL values win over keywords, except an
        explicit ``connection_class``, as in redis-py.
        """
        return cls(**from_url_keywords(url, kwargs))

    def reset(self) -> None:
        """Forget every connection: idle ones are closed now, borrowed ones on return.

        redis-py calls this after a fork and django-redis after changing the password;
        waiting callers are served from the capacity this frees.
        """
        if not getattr(self, "_ready", False):
            return  # called by redis-py's __init__ before our state exists
        with self._lock:
            self._epoch += 1
            doomed = list(self._idle)
            self._idle.clear()
            self._in_use.clear()
            self._serve_slots()
            self.pid = os.getpid()
        self._close_all(doomed, "reset")

    def __bool__(self) -> bool:
        return True  # redis.Redis ignores a falsy pool and silently builds its own

    def __repr__(self) -> str:
        with self._lock:
            state = (
                f"{len(self._in_use)} in use, {len(self._idle)} idle, "
                f"{self._connecting} connecting, {len(self._waiters)} waiting, "
                f"max {self._options.max_connections}"
            )
        kwargs = ",".join(
            f"{k}={'<REDACTED>' if k in _SECRET_KEYS else v}"
            for k, v in self.connection_kwargs.items()
            if k not in _HIDDEN_KEYS
        )
        cls = self.connection_class
        conn = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)}"
        # redis-py's shape, ending in the connection's repr and ")>": code parses it.
        return f"<{type(self).__module__}.{type(self).__name__}[{self.name}: {state}](<{conn}({kwargs})>)>"

    def __del__(self) -> None:
        pass  # idle connections close themselves when collected

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

    @property
    def timeout(self) -> float | None:
        """The default acquire timeout in seconds (None waits forever)."""
        return self._options.timeout

    # Views redis-py and third-party metrics code read.
    @property
    def _available_connections(self) -> list[Any]:  # type: ignore[override]
        with self._lock:
            return list(self._idle)

    @property
    def _in_use_connections(self) -> set[Any]:  # type: ignore[override]
        with self._lock:
            return set(self._live_in_use())

    @property
    def _created_connections(self) -> int:  # type: ignore[override]
        with self._lock:
            return self._size()

    def _get_free_connections(self) -> list[Any]:
        return self._available_connections

    def _get_in_use_connections(self) -> set[Any]:
        return self._in_use_connections

    def get_protocol(self) -> Any:
        """The RESP version asked for in ``connection_kwargs``, or None for the default
        (redis-py < 5.1 lacks this member; callers of newer versions expect it)."""
        return self.connection_kwargs.get("protocol")

    def _get_pool_lock(self) -> threading.RLock:
        return self._lock

    # ------------------------------------------------------------------ checkout

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        """Return a connected, healthy connection; wait up to ``timeout`` for one.

        The arguments are accepted for redis-py < 5.3 callers and ignored.
        """
        return self.acquire(self._options.timeout)

    def acquire(self, timeout: float | None = ...) -> Any:  # type: ignore[assignment]
        """Borrow a connection, waiting at most ``timeout`` seconds (default: the pool's).

        One deadline covers queueing, health checks and connecting. ``timeout=None``
        waits forever; ``timeout=0`` never queues. Raises :class:`PoolTimeout`,
        :class:`TooManyWaiters`, :class:`ServerUnavailable`, :class:`PoolClosed`, or the
        connect error itself (``redis.ConnectionError``, ``redis.AuthenticationError``).
        Give the connection back with :meth:`release`.
        """
        if timeout is ...:  # type: ignore[comparison-overlap]
            timeout = self._options.timeout
        if self.pid != os.getpid():
            self._checkpid()
        if not self._registered and not self._shut:
            self._register()
        start = time.monotonic()
        # timeout=0 means "do not queue"; a connect is then bounded by socket_connect_timeout.
        deadline = start + timeout if timeout else None
        conn = self._take(timeout, deadline, start, have_slot=False)
        while True:
            if conn is None:
                conn = self._open(deadline, for_caller=True)
                break
            try:
                problem = self._check_out(conn)
            except BaseException:  # interrupted mid-check: the connection's state is unknown
                self._abandon_connection(conn)
                raise
            if problem is None:
                break
            # The connection was unusable and is closed; its slot stays with us.
            conn = self._take(timeout, deadline, start, have_slot=True, bad=(conn, problem))
        if self._acquire_listeners:
            self._notify_acquired(time.monotonic() - start)
        return conn

    def add_acquire_listener(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(seconds)`` after every successful :meth:`acquire`.

        ``seconds`` is the time it took to obtain the connection: queueing, health
        checks and connecting together, the histogram metrics integrations need. It runs
        in the acquiring thread with no pool lock held, so it must be quick; an exception
        it raises is logged and ignored. Failed acquires are not reported (see
        ``stats()["timeouts"]``). Adding the same listener twice calls it twice.
        """
        with self._lock:
            self._acquire_listeners = (*self._acquire_listeners, listener)

    def remove_acquire_listener(self, listener: Callable[[float], None]) -> None:
        """Stop calling ``listener``; removing one that was never added does nothing."""
        with self._lock:
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

    @contextlib.contextmanager
    def connection(self, timeout: float | None = ...) -> Iterator[Any]:  # type: ignore[assignment]
        """``with pool.connection() as conn:`` borrow a connection and always return it.

        If the block raises a connection or timeout error, the connection is closed
        instead of pooled. ``timeout`` overrides the pool's acquire timeout.
        """
        conn = self.acquire(timeout)
        try:
            yield conn
        except (RedisConnectionError, RedisTimeoutError, OSError):
            _quiet_disconnect(conn)
            raise
        finally:
            self.release(conn)

    def _take(
        self,
        timeout: float | None,
        deadline: float | None,
        start: float,
        have_slot: bool,
        bad: tuple[Any, str] | None = None,
    ) -> Any:
        """Hand out an idle connection, or reserve a slot (return None), or wait."""
        doomed: list[tuple[Any, str]] = []
        if bad is not None:
            doomed.append(bad)
        lost: list[Meta] = []
        try:
            with self._lock:  # critical section: idle, in-use, slots, waiters
                if bad is not None:
                    self._forget_bad(bad[0])
                if self._shut:
                    if have_slot:
                        self._connecting -= 1
                    raise PoolClosed(f"pool {self.name} was shut down")
                if self._reclaimed:
                    lost = _lifecycle.drain_reclaimed(self)
                conn = self._pop_idle(doomed) if not self._waiters or have_slot else None
                if conn is not None:
                    if have_slot:
                        self._connecting -= 1
                        self._serve_slots()
                    self._lend(conn)
                    return conn
                if have_slot:
                    return None
                if self._size() < self._options.max_connections and not self._waiters:
                    self._connecting += 1
                    return None
                if timeout == 0:
                    self._counters.timeouts += 1
                    raise self._timeout_error(0.0)
                limit = self._options.max_waiting
                if limit is not None and len(self._waiters) >= limit:
                    self._counters.refused += 1
                    raise TooManyWaiters(
                        f"{len(self._waiters)} callers already waiting for a connection "
                        f"(max_waiting={limit}, {self._state_text()}); "
                        "shed load, raise max_waiting or max_connections"
                    )
                waiter = Waiter()
                self._waiters.append(waiter)
                self._counters.waits += 1
        finally:
            self._close_all_reasons(doomed)
            _lifecycle.warn_reclaimed(self, lost)
        return self._wait(waiter, deadline, start)

    def _wait(self, waiter: Waiter, deadline: float | None, start: float) -> Any:
        remaining = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            waiter.signal.acquire(timeout=remaining)
        except BaseException:  # KeyboardInterrupt, say: pass on whatever we were handed
            self._abandon_wait(waiter)
            raise
        with self._lock:
            waited = time.monotonic() - start
            self._counters.wait_time_total += waited
            self._counters.wait_time_max = max(self._counters.wait_time_max, waited)
            if waiter.conn is None and not waiter.slot and waiter.error is None:
                # Nobody served us before the deadline: leave the queue. Anything handed
                # over after this point goes to the next waiter, so nothing is lost.
                self._waiters.remove(waiter)
                self._counters.timeouts += 1
                error = self._timeout_error(waited)
                warn = self._should_warn_timeout()
            else:
                if waiter.error is not None:
                    raise waiter.error
                if waiter.conn is not None and self._options.leak_warning_after is not None:
                    waiter.conn._rp_meta.stack = borrow_stack()
                return waiter.conn
        if warn:
            log.warning("%s", error)
        raise error

    def _abandon_wait(self, waiter: Waiter) -> None:
        """A waiter gives up without taking what it may have been handed."""
        with self._lock:
            if waiter.conn is not None:
                del self._in_use[waiter.conn._rp_meta]
                self._counters.borrows -= 1
                self._put(waiter.conn)
            elif waiter.slot:
                self._connecting -= 1
                self._serve_slots()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)

    def _abandon_connection(self, conn: Any) -> None:
        """Close a connection the caller never received and free its slot."""
        with self._lock:
            meta: Meta = conn._rp_meta
            if meta in self._in_use:
                del self._in_use[meta]
                self._counters.borrows -= 1
                self._serve_slots()
        self._close(conn, "checkout interrupted")

    def _timeout_error(self, waited: float) -> PoolTimeout:
        return PoolTimeout(
            f"No connection available: none free after {waited:.2f}s "
            f"(pool {self.name}: {self._state_text()}); "
            "raise max_connections or timeout, or look for connections that are not returned"
        )

    def _state_text(self) -> str:
        return (
            f"{len(self._in_use)} of {self._options.max_connections} in use, "
            f"{self._connecting} connecting, {len(self._waiters)} waiting"
        )

    def _should_warn_timeout(self) -> bool:
        now = time.monotonic()
        if now - self._last_timeout_warning >= TIMEOUT_WARNING_INTERVAL:
            self._last_timeout_warning = now
            return True
        return False

    def _pop_idle(self, doomed: list[tuple[Any, str]]) -> Any:
        """Pop the next usable idle connection; expired ones go to ``doomed``.  Locked."""
        idle = self._idle
        now = self._clock()
        while idle:
            conn = idle.pop() if self._options.idle_order == "lifo" else idle.popleft()
            reason = self._expired(conn._rp_meta, now, len(idle) + 1)
            if reason is None:
                return conn
            doomed.append((conn, reason))
        return None

    def _expired(self, meta: Meta, now: float, idle_count: int) -> str | None:
        """Why an idle connection must close now, counted; None to keep it.  Locked.

        ``idle_count`` is how many idle connections there are counting this one:
        max_idle never takes the pool below min_idle, but lifetime and drain do.
        """
        if now >= meta.expires:
            self._counters.retired_lifetime += 1
            return "max_lifetime reached"
        if meta.epoch != self._epoch:
            self._counters.drained += 1
            return "drained"
        max_idle = self._options.max_idle
        if max_idle is not None and now - meta.last_used >= max_idle and idle_count > self._options.min_idle:
            self._counters.evicted_idle += 1
            return "max_idle reached"
        return None

    def _lend(self, conn: Any) -> None:
        """Record ``conn`` as borrowed by the current thread.  Locked."""
        meta: Meta = conn._rp_meta
        meta.holder = threading.current_thread()
        meta.uses += 1
        self._in_use[meta] = None
        self._counters.borrows += 1
        if self._options.leak_warning_after is not None:
            meta.borrowed_at = self._clock()
            meta.warned = False
            meta.stack = borrow_stack()

    def _check_out(self, conn: Any) -> str | None:
        """Health-check an idle connection outside the lock; return why it is unusable."""
        meta: Meta = conn._rp_meta
        _remember_socket(meta, getattr(meta.real or conn, "_sock", None))
        state = _health.probe(conn, meta.poller)
        if state != "ok":
            with self._lock:
                if state in ("eof", "closed"):
                    self._counters.health_eof += 1
                elif state == "data":
                    self._counters.health_data += 1
                else:
                    self._counters.health_error += 1
            return f"probe found the socket {state}"
        if getattr(meta.real or conn, "_rp_dirt", 0) & _tracking.RESETTABLE:
            try:
                _tracking.reset_session(conn)
            except Exception as error:
                return f"session reset failed: {error}"
            with self._lock:
                self._counters.session_resets += 1
        after = self._options.ping_after_idle
        if after is not None and self._clock() - meta.last_used >= after:
            try:
                _health.ping(conn, self._options.ping_timeout)
            except Exception as error:
                with self._lock:
                    self._counters.health_ping += 1
                return f"PING failed: {error}"
        return None

    def _forget_bad(self, conn: Any) -> None:
        """An unusable borrowed connection gives its slot to the caller.  Locked."""
        meta: Meta = conn._rp_meta
        if meta in self._in_use:
            del self._in_use[meta]
            self._connecting += 1
            self._counters.borrows -= 1  # the caller's borrow counts once, when it succeeds

    # ------------------------------------------------------------------ opening

    def make_connection(self) -> Any:
        """Construct (not connect) a connection from ``connection_kwargs`` as they are now."""
        kwargs = dict(self.connection_kwargs)
        conn = self._tracked_class(**kwargs)
        cache = getattr(self, "cache", None)  # redis-py < 5.1 has no client-side caching
        if cache is not None and CacheProxyConnection is not None:
            conn = CacheProxyConnection(conn, cache, self._lock)  # type: ignore[abstract]
        now = self._clock()
        lifetime = self._options.max_lifetime
        expires = (
            float("inf") if lifetime is None else now + lifetime * (1 - random.uniform(0, LIFETIME_JITTER))
        )
        meta = Meta(self._token, self._epoch, now, expires)
        meta.ref = weakref.ref(conn, reclaimer(weakref.ref(self), meta))
        real = _tracking.inner(conn)
        meta.real = real if real is not conn else None
        meta.should_reconnect = getattr(type(conn), "should_reconnect", None)
        conn._rp_meta = meta
        return conn

    def _open(self, deadline: float | None, *, for_caller: bool) -> Any:
        """Open a connection in a slot the caller already reserved (``_connecting``)."""

        def attempt() -> Any:
            conn = self.make_connection()
            try:
                _connect.connect_within(conn, deadline)
            except BaseException as error:
                _quiet_disconnect(conn)
                self._connect_failed(error)
                raise
            return conn

        try:
            conn = _connect.open_with_backoff(attempt, deadline, self._circuit_gate)
        except BaseException:
            with self._lock:
                self._connecting -= 1
                self._serve_slots()
            raise
        _remember_socket(conn._rp_meta, _health.socket_of(conn))
        with self._lock:
            self._connecting -= 1
            self._counters.connects += 1
            reopened = self._circuit.succeeded()
            if for_caller:
                self._lend(conn)
            else:
                self._put(conn)
        if reopened:
            log.warning("Redis at %s answers again; pool %s stops failing fast", self._address(), self.name)
        log.debug("opened connection #%d to %s", conn._rp_meta.id, self._address())
        return conn

    def _circuit_gate(self) -> None:
        with self._lock:
            if self._circuit.may_attempt(time.monotonic()):
                return
            self._counters.fail_fast += 1
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
            self._counters.connect_errors += 1
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

    def _address(self) -> str:
        kw = self.connection_kwargs
        return str(kw["path"]) if kw.get("path") else f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    # ------------------------------------------------------------------ return

    def release(self, connection: Any) -> None:
        """Give a borrowed connection back. Never blocks, never raises.

        A connection with unread replies, inside MULTI, subscribed, in MONITOR, not
        connected, past its lifetime or drained is closed instead of pooled. A double
        release, a foreign connection, or one from before ``reset()`` or a fork is ignored.
        """
        try:
            self._release(connection)
        except Exception:  # release() is called from __del__ and finally blocks
            log.debug("ignored error while releasing a connection", exc_info=True)

    def _release(self, conn: Any) -> None:
        if self.pid != os.getpid():
            return  # the parent's connection: its socket is not ours to touch
        meta = getattr(conn, "_rp_meta", None)
        if meta is None or meta.owner is not self._token:
            return  # not made by this pool
        if self._release_events:  # someone listens for AfterConnectionReleasedEvent
            _events.before_return(self, conn, meta)
        reason = None
        me = threading.current_thread()
        with self._lock:  # critical section: in-use set and handoff
            if meta not in self._in_use:
                if meta.epoch != self._epoch and conn not in self._idle:
                    reason = "returned after reset()"  # forgotten by reset(): close it
                else:
                    return  # double release
            elif meta.released_by is me and meta.holder is not me and meta.holder is not None:
                # This thread already returned it once; someone else borrowed it since.
                # Returning it again would let two borrowers share it.
                self._counters.double_releases += 1
                return
            else:
                del self._in_use[meta]
                self._counters.returns += 1
                meta.released_by = me
                meta.last_used = self._clock()
                reason = self._return_verdict(conn, meta, meta.last_used)
                if reason is None:
                    self._put(conn)
                else:
                    self._serve_slots()
        if reason is not None:
            self._close(conn, reason)

    def _return_verdict(self, conn: Any, meta: Meta, now: float) -> str | None:
        """Why a returned connection must be closed, or None to keep it.  Locked."""
        counters = self._counters
        real = meta.real or conn
        if getattr(real, "_sock", True) is None:  # a class without _sock cannot tell: kept
            counters.returned_disconnected += 1
            return "disconnected"
        pending = getattr(real, "_rp_pending", 0)
        flags = getattr(real, "_rp_dirt", 0)
        if pending or flags & _tracking.CLOSE_ON_RETURN:
            counters.closed_dirty += 1
            what = f"{pending} unread replies" if pending else _tracking.describe(flags)
            return f"returned dirty ({what})"
        should = meta.should_reconnect
        if should is not None and should(conn):
            counters.returned_disconnected += 1
            return "marked for reconnect"
        if self._shut:
            return "pool shut down"
        if now >= meta.expires:
            counters.retired_lifetime += 1
            return "max_lifetime reached"
        if meta.epoch != self._epoch:
            counters.drained += 1
            return "drained"
        if self._size() + 1 > self._options.max_connections:
            return "pool shrunk"
        return None

    def _put(self, conn: Any) -> None:
        """Hand ``conn`` to the longest waiter, or park it idle.  Locked."""
        if self._waiters:
            waiter = self._waiters.popleft()
            meta: Meta = conn._rp_meta
            meta.holder = waiter.thread
            meta.uses += 1
            self._in_use[meta] = None
            self._counters.borrows += 1
            if self._options.leak_warning_after is not None:
                meta.borrowed_at = self._clock()
                meta.warned = False  # the waiter records its own stack when it wakes
            waiter.conn = conn
            waiter.signal.release()
        else:
            meta = conn._rp_meta
            meta.holder = None
            self._idle.append(conn)

    def _serve_slots(self) -> None:
        """Give free capacity to waiters, oldest first.  Locked."""
        while self._waiters and self._size() < self._options.max_connections:
            waiter = self._waiters.popleft()
            self._connecting += 1
            waiter.slot = True
            waiter.signal.release()

    def _size(self) -> int:
        return len(self._idle) + len(self._in_use) + self._connecting + len(self._pinging)

    def _live_in_use(self) -> list[Any]:
        return [c for c in (m.ref() if m.ref else None for m in self._in_use) if c is not None]

    def _close(self, conn: Any, reason: str) -> None:
        log.debug("closing connection #%s: %s", getattr(getattr(conn, "_rp_meta", None), "id", "?"), reason)
        _quiet_disconnect(conn)

    def _close_all(self, conns: list[Any], reason: str) -> None:
        for conn in conns:
            self._close(conn, reason)

    def _close_all_reasons(self, doomed: list[tuple[Any, str]]) -> None:
        for conn, reason in doomed:
            self._close(conn, reason)

    # ------------------------------------------------------------------ maintenance

    def _register(self) -> None:
        self._registered = True
        maintainer.register(self)

    def _maintain(self) -> float:
        return _lifecycle.maintain(self)

    def run_maintenance(self) -> None:
        """Run one maintenance pass now, in this thread (the background thread runs
        them about once a second). Useful in tests and after changing the clock."""
        _lifecycle.maintain(self)

    def wait_ready(self, timeout: float | None = 10.0) -> None:
        """Open connections in this thread until ``min_idle`` are idle and ready.

        Raises :class:`PoolTimeout` if that takes longer than ``timeout`` seconds, or the
        connect error when Redis cannot be reached.
        """
        _lifecycle.wait_ready(self, timeout)

    # ------------------------------------------------------------------ control

    def resize(self, max_connections: int | None = None, min_idle: int | None = None) -> None:
        """Change ``max_connections`` and/or ``min_idle`` at runtime.

        Growing serves waiting callers at once; shrinking closes idle connections now
        and borrowed ones as they come back.
        """
        changes: dict[str, Any] = {}
        if max_connections is not None:
            changes["max_connections"] = max_connections
        if min_idle is not None:
            changes["min_idle"] = min_idle
        doomed: list[Any] = []
        with self._lock:
            self._options = self._options.replace(**changes)
            while self._idle and self._size() > self._options.max_connections:
                doomed.append(self._idle.popleft())
            self._serve_slots()
        self._close_all(doomed, "pool shrunk")
        maintainer.wake()

    def drain(self) -> None:
        """Replace every connection: idle ones now, borrowed ones when returned.

        Use it after rotating credentials or a failover; ``min_idle`` is refilled by
        the background thread.
        """
        with self._lock:
            self._epoch += 1
            doomed = list(self._idle)
            self._idle.clear()
            self._counters.drained += len(doomed)
            self._serve_slots()
        self._close_all(doomed, "drained")
        maintainer.wake()

    def disconnect(self, inuse_connections: bool = True) -> None:
        """Close idle connections and, if ``inuse_connections``, borrowed ones too.

        Borrowed connections closed this way are discarded when returned. The pool
        stays usable and opens new connections on demand.
        """
        self._checkpid()
        with self._lock:
            doomed = list(self._idle)
            self._idle.clear()
            busy = self._live_in_use() if inuse_connections else []
            self._serve_slots()
        self._close_all(doomed, "disconnect()")
        self._close_all(busy, "disconnect()")

    def close(self) -> None:
        """Close every connection and stop background upkeep; the pool stays usable."""
        self.disconnect()
        self._registered = False
        maintainer.unregister(self)

    def shutdown(self) -> None:
        """Close the pool for good: waiting callers get :class:`PoolClosed`, idle
        connections close now, borrowed ones when returned; later checkouts raise
        :class:`PoolClosed`."""
        with self._lock:
            self._shut = True
            waiters = list(self._waiters)
            self._waiters.clear()
            for waiter in waiters:
                waiter.error = PoolClosed(f"pool {self.name} was shut down while waiting")
                waiter.signal.release()
        self.close()

    def _checkpid(self) -> None:
        if self.pid != os.getpid():
            with self._fork_lock:
                if self.pid != os.getpid():
                    self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections without touching them."""
        self._lock = threading.RLock()
        self._fork_lock = threading.RLock()
        self._reclaimed = deque()
        self._token = object()
        self._registered = False
        self._counters = Counters()
        self._circuit = _connect.Circuit(self._options.fail_fast_after)
        self._init_state()

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """Gauges (now) and counters (since creation) under fixed keys; see the README."""
        with self._lock:
            gauges = {
                "name": self.name,
                "max": self._options.max_connections,
                "size": self._size(),
                "idle": len(self._idle),
                "in_use": len(self._in_use),
                "connecting": self._connecting,
                "waiting": len(self._waiters),
                "min_idle": self._options.min_idle,
                "failing_fast": self._circuit.is_open,
            }
            return {**gauges, **self._counters.as_dict()}

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every connection the pool holds (idle and borrowed)."""
        now = self._clock()
        address = self._address()
        with self._lock:
            rows = [(c._rp_meta, "idle") for c in self._idle]
            rows += [(m, "in_use") for m in self._in_use]
            rows += [(c._rp_meta, "idle") for c in self._pinging]
        return [
            ConnectionInfo(
                id=meta.id,
                state=state,  # type: ignore[arg-type]
                address=address,
                age=now - meta.created,
                idle_for=0.0 if state == "in_use" else now - meta.last_used,
                uses=meta.uses,
                holder=meta.holder.name if state == "in_use" and meta.holder else None,
            )
            for meta, state in sorted(rows, key=lambda r: r[0].id)
        ]


def _remember_socket(meta: Meta, sock: Any) -> None:
    """Keep the connection's current socket on its meta: the borrow probe polls it, and
    if the connection is leaked and collected, the reclaim closes it explicitly."""
    if sock is not meta.sock:  # (re)connected since the last look: new poll object
        meta.sock = sock
        meta.poller = _health.poller_for(sock) if isinstance(sock, socket.socket) else None


def _quiet_disconnect(conn: Any) -> None:
    try:
        getattr(conn, "disconnect", _nothing)()
    except Exception:
        log.debug("error while closing a connection", exc_info=True)


def _nothing() -> None:
    pass  # the "disconnect" of a connection class that has none (a test double)


def _connection_parameters(connection_class: Any) -> set[str]:
    """Keyword names the connection class chain accepts (for URL validation)."""
    import inspect

    names: set[str] = set()
    if not isinstance(connection_class, type):
        return names
    for cls in getattr(connection_class, "__mro__", ()):
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        try:
            names.update(inspect.signature(init).parameters)
        except (TypeError, ValueError):
            continue
    names.update(("max_connections", "timeout", "queue_class", "cache_config", "maint_notifications_config"))
    return names


def _after_fork_in_child() -> None:
    for pool in list(_all_pools):
        try:
            pool._after_fork()
        except Exception:  # pragma: no cover - defensive: never break the child
            log.debug("after-fork reset failed", exc_info=True)
    maintainer.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
