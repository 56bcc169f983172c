"""The redis-facing pool: redis-py compatibility, checkout health, the fast paths, return verdicts.

The slots, the waiters and their one lock live in the engine (:mod:`redispool._slots`);
this layer decides what a Redis connection needs at each step. Checkout: take from the
engine, probe the socket, undo session state, PING after idle, or open a new connection
(``_opening.py``). Return: ask redis-py's connection whether it is clean, then give it back
to the engine, which hands it to the longest waiter. Whatever the engine says must be
closed is closed here, outside the lock.

Both have a fast path for the common case, decided once per pool and connection class
(``Meta.plain``): a borrow that finds an idle connection and nothing else to do is one
engine call and one ``poll(0)``; a return of a clean connection reads its state without
a call. Everything else takes the full path, with the same guarantees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _connect, _events, _health, _tracking
from ._compat import PoolViews, quiet_disconnect
from ._control import PoolControl, all_pools
from ._meta import Meta, Request
from ._opening import LIFETIME_JITTER as LIFETIME_JITTER  # where it was before the split
from ._opening import PoolOpening, remember_socket
from ._options import PoolOptions, check_keywords, from_url_keywords, split_options
from ._slots import Slots
from .errors import PoolTimeout

log = logging.getLogger("redispool")

_P = TypeVar("_P", bound="ConnectionPool")

MIN_ROUND_TRIP = 0.001  # a round trip inside acquire needs at least this much time left
_getpid = os.getpid

_all_pools = all_pools  # the name tests/test_contrib_django.py imports


class ConnectionPool(PoolControl, PoolViews, PoolOpening, redis.ConnectionPool):  # type: ignore[override]  # redis-py fields as views
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
        self._fork_lock = threading.RLock()
        self._release_events = _events.watch(self)  # kept current by _events
        self._tracked_class = _tracking.tracked_class(connection_class)
        # Decided once per pool: may borrow and return skip the full checks for connections
        # whose class allows it (Meta.plain)? Not if a subclass overrides those checks.
        self._plain = (
            type(self)._check_out is ConnectionPool._check_out
            and type(self)._return_verdict is ConnectionPool._return_verdict
        )
        self._registered = False
        self._acquire_listeners: tuple[Callable[[float], None], ...] = ()
        self._init_state()
        self._ready = True
        all_pools.add(self)
        if self._options.min_idle:
            self._register()  # pre-warm in the background from the start
        log.debug("created pool %s (max_connections=%d)", self.name, self._options.max_connections)

    def _init_state(self) -> None:
        clock = getattr(getattr(self, "_slots", None), "clock", time.monotonic)
        self._slots = Slots(self._options, self.name)
        self._slots.clock = clock
        # The engine's lock is the pool's lock; redis-py code and Cluster take it too.
        self._lock = self._slots.lock
        self._circuit = _connect.Circuit(self._options.fail_fast_after)  # guarded by _lock
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

    def __repr__(self) -> str:
        with self._lock:
            state = (
                f"{len(self._slots.in_use)} in use, {len(self._slots.idle)} idle, "
                f"{self._slots.connecting} connecting, {len(self._slots.waiters)} waiting, "
                f"max {self._options.max_connections}"
            )
        return self._repr_with(state)

    # ------------------------------------------------------------------ checkout

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Connection:
        """Return a connected, healthy connection; wait up to ``timeout`` for one.

        The arguments are accepted for redis-py < 5.3 callers and ignored.
        """
        return self._borrow(self._options.timeout)

    def acquire(self, timeout: float | None = ...) -> Connection:  # type: ignore[assignment]
        """Borrow a connection, waiting at most ``timeout`` seconds (default: the pool's).

        Typed as redis-py's ``Connection``, as ``redis.ConnectionPool.get_connection``
        is; at run time it is an instance of ``connection_class``. One deadline covers
        queueing, health checks and connecting. ``timeout=None``
        waits forever; ``timeout=0`` never queues. Raises :class:`PoolTimeout`,
        :class:`TooManyWaiters`, :class:`ServerUnavailable`, :class:`PoolClosed`, or the
        connect error itself (``redis.ConnectionError``, ``redis.AuthenticationError``).
        An interrupt (KeyboardInterrupt, say) anywhere in here gives everything back.
        Give the connection back with :meth:`release`.
        """
        if timeout is ...:  # type: ignore[comparison-overlap]
            timeout = self._options.timeout
        return self._borrow(timeout)

    def _borrow(self, timeout: float | None) -> Connection:
        """The fast path: an idle connection that one ``poll(0)`` shows healthy, in two
        steps (the engine's :meth:`~Slots.lend_idle`, then the probe). Anything else
        (waiting, connecting, a PING after idle, a session to reset, a reclaim, an
        unusual connection class) takes :meth:`_acquire`, with what was lent so far."""
        if self.pid != _getpid():
            self._checkpid()
        conn = None
        if self._registered:
            listeners = self._acquire_listeners
            start = time.monotonic() if listeners else 0.0
            try:
                conn = self._slots.lend_idle(self._options.ping_after_idle)
                if conn is not None:
                    meta: Meta = conn._rp_meta
                    quick = meta.quick
                    if (
                        quick is not None
                        and conn._sock is meta.sock
                        and not quick.poll(0)
                        and not conn._rp_dirt & _tracking.RESETTABLE
                    ):
                        if listeners:
                            self._notify_acquired(time.monotonic() - start)
                        return conn  # type: ignore[no-any-return]
                    lent, conn = conn, None  # from here on, _acquire gives it back
                    return self._acquire(timeout, lent)
            except BaseException:
                if conn is not None:  # untouched: back to the pool (or the next waiter)
                    self._give_up(Request(conn))
                raise
        return self._acquire(timeout, None)

    def _acquire(self, timeout: float | None, lent: Any) -> Connection:
        """Every borrow the fast path does not finish; ``lent`` is a connection it was
        lent and did not finish checking (it is checked again here)."""
        req = Request(lent)
        start = time.monotonic()
        try:
            if not self._registered and not self._slots.shut:
                self._register()
            # timeout=0 means "do not queue"; a connect is then bounded by socket_connect_timeout.
            deadline = start + timeout if timeout else None
            slots = self._slots
            if lent is None:
                slots.take(req, timeout)
                if req.doomed:
                    self._bury(req)
                if req.signal is not None:
                    slots.wait(req, deadline, start)
            # An instance of connection_class, typed as redis-py types its pools' result.
            conn: Connection
            while (conn := req.conn) is not None:
                req.touched = True
                problem = self._check_out(conn, deadline)
                if problem is None:
                    break
                # Unusable: it is closed, and its slot stays with us, ahead of the queue.
                slots.retire(req, problem)
                self._bury(req, into_slot=True)
                slots.take(req, timeout)
                if req.doomed:
                    self._bury(req)
            else:
                conn = self._open(req, deadline, for_caller=True)
            if self._acquire_listeners:
                self._notify_acquired(time.monotonic() - start)
            return conn
        except _connect.DeadlinePassed as error:
            self._give_up(req)
            raise self._deadline_error(error, time.monotonic() - start) from None
        except BaseException:
            self._give_up(req)
            raise

    def _deadline_error(self, error: _connect.DeadlinePassed, waited: float) -> PoolTimeout:
        """The acquire deadline passed while connecting or health-checking: counted as a
        timeout and worded with the pool's state, like a timeout in the queue."""
        with self._lock:
            self._slots.counters.timeouts += 1
            state = self._slots.state_text()
        return PoolTimeout(
            f"No connection available: {error} after {waited:.2f}s (pool {self.name}: {state}); "
            "raise timeout, or look at the server's latency (redispool doctor)"
        )

    def _give_up(self, req: Request) -> None:
        """Give back everything ``req`` holds; close what it held half-checked."""
        slots = self._slots
        try:
            doomed = slots.give_up(req)
            if req.opening is not None:
                quiet_disconnect(req.opening)  # covered by the request's slot
            self._close_all(doomed)
        finally:
            slots.end(req)

    def _bury(self, req: Request, into_slot: bool = False) -> None:
        """Close ``req.doomed`` outside the lock, then free (or keep) their slots."""
        self._close_all(req.doomed or [])
        self._slots.buried(req, into_slot)

    @contextlib.contextmanager
    def connection(self, timeout: float | None = ...) -> Iterator[Connection]:  # type: ignore[assignment]
        """``with pool.connection() as conn:`` borrow a connection and always return it.

        If the block raises a connection or timeout error, the connection is closed
        instead of pooled. ``timeout`` overrides the pool's acquire timeout.
        """
        conn = self.acquire(timeout)
        try:
            yield conn
        except (RedisConnectionError, RedisTimeoutError, OSError):
            quiet_disconnect(conn)
            raise
        finally:
            self.release(conn)

    def _check_out(self, conn: Any, deadline: float | None = None) -> str | None:
        """Health-check a lent connection outside the lock; return why it is unusable.

        Every round trip is bounded by the time left before ``deadline``.
        """
        meta: Meta = conn._rp_meta
        sock = getattr(meta.real or conn, "_sock", None)
        if sock is not meta.sock:
            remember_socket(meta, sock)
        state = _health.probe(conn, meta.poller)
        counters = self._slots.counters
        if state != "ok":
            with self._lock:
                if state in ("eof", "closed"):
                    counters.health_eof += 1
                elif state == "data":
                    counters.health_data += 1
                else:
                    counters.health_error += 1
            return f"probe found the socket {state}"
        if getattr(meta.real or conn, "_rp_dirt", 0) & _tracking.RESETTABLE:
            try:
                _tracking.reset_session(conn, _time_left(deadline))
            except Exception as error:
                return f"session reset failed: {error}"
            with self._lock:
                counters.session_resets += 1
        after = self._options.ping_after_idle
        if after is not None and self._slots.clock() - meta.last_used >= after:
            limit = self._options.ping_timeout
            left = _time_left(deadline)
            try:
                _health.ping(conn, limit if left is None else min(limit, left))
            except Exception as error:
                with self._lock:
                    counters.health_ping += 1
                return f"PING failed: {error}"
        return None

    # ------------------------------------------------------------------ return

    def release(self, connection: Any) -> None:
        """Give a borrowed connection back. Never blocks, never raises.

        A connection with unread replies, inside MULTI, subscribed, in MONITOR, not
        connected, past its lifetime or drained is closed instead of pooled. A double
        release, a foreign connection, or one from before ``reset()`` or a fork is ignored.
        An interrupt (KeyboardInterrupt, say) in here still returns or closes it.
        """
        try:
            slots = self._slots
            if self.pid != _getpid():
                return  # the parent's connection: its socket is not ours to touch
            meta = getattr(connection, "_rp_meta", None)
            if meta is None or meta.owner is not slots:
                return  # not made by this pool
            if self._release_events:  # someone listens for AfterConnectionReleasedEvent
                _events.before_return(self, connection, meta)
            if (
                meta.plain
                and connection._sock is not None
                and not connection._rp_pending
                and not connection._rp_dirt & _tracking.CLOSE_ON_RETURN
                and not connection._should_reconnect
            ):
                # What _return_verdict would find, read without a call: nothing wrong.
                reason = slots.give_back(connection, meta, None)
            else:
                reason = slots.give_back(connection, meta, self._return_verdict)
            if reason is None:
                return
            # Still counted as closing: nobody can open a replacement before this close.
            self._close(connection, reason)
            slots.closed((meta,))
        except Exception:  # release() is called from __del__ and finally blocks
            log.debug("ignored error while releasing a connection", exc_info=True)
            self._salvage(connection)
        except BaseException:  # interrupted: finish what this thread still owns
            self._salvage(connection)
            raise

    def _salvage(self, conn: Any) -> None:
        slots = self._slots
        meta = getattr(conn, "_rp_meta", None)
        if meta is not None and meta.owner is slots and self.pid == os.getpid():
            reason = slots.salvage(conn, meta)
            if reason is not None:
                self._close(conn, reason)
                slots.closed((meta,))

    def _return_verdict(self, conn: Any, meta: Meta, now: float) -> str | None:
        """Why a returned connection must be closed, or None to keep it.  Locked."""
        counters = self._slots.counters
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
        return self._slots.retire_reason(meta, now)


def _time_left(deadline: float | None) -> float | None:
    """Seconds before ``deadline`` (None: no deadline); PoolTimeout once it passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left < MIN_ROUND_TRIP:
        raise _connect.DeadlinePassed("the acquire deadline passed while checking a connection")
    return left
