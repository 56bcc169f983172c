"""Background upkeep of one pool: reclaim, leak warnings, eviction, lifetime,
keepalive, ``min_idle`` refill and the fail-fast probe.

:func:`maintain` collects its work from the slot engine under its lock and does every
close, PING and connect after releasing it, so it never delays a borrower. It talks to
the pool only through :class:`Host`, a handful of methods, and to the engine through
its public operations. The maintenance thread (``_maintenance.py``) calls it about
once a second; ``pool.run_maintenance()`` calls it on demand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from typing import Any, Protocol

from . import _connect, _health
from ._meta import Meta, Request, format_stack, thread_name
from ._options import PoolOptions
from ._slots import Slots
from .errors import PoolClosed, PoolTimeout

log = logging.getLogger("redispool")


class Host(Protocol):
    """What upkeep asks of the redis-facing pool (``ConnectionPool`` implements it)."""

    pid: int

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> PoolOptions: ...

    @property
    def failing_fast(self) -> bool:
        """True while the fail-fast circuit is open."""

    def open_into(self, req: Request, deadline: float | None) -> None:
        """Open a connection in ``req``'s reserved slot and hand it on (waiter or idle);
        on failure the slot is freed and the error raised."""

    def close_doomed(self, doomed: list[tuple[Any, str]]) -> None:
        """Close these closing connections outside the lock, then free their slots."""


def warn_reclaimed(host: Host, lost: list[Meta]) -> None:
    """Close the sockets of reclaimed connections and say where they were borrowed.

    The meta kept the socket alive after its connection was collected, so it is closed
    here, promptly and without a ResourceWarning, rather than whenever the GC gets to it.
    """
    for meta in lost:
        sock, meta.sock, meta.poller = meta.sock, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        log.warning(
            "connection #%d of pool %s was garbage-collected without release(); "
            "its slot is reclaimed. Borrowed at:\n%s",
            meta.id,
            host.name,
            format_stack(meta),
        )


# ------------------------------------------------------------------ maintenance


def maintain(host: Host, slots: Slots) -> float:
    """One background pass: reclaim, warn about leaks, evict, keep alive, refill."""
    if host.pid != os.getpid():
        return 1.0
    now = slots.clock()
    opts = slots.options
    doomed: list[tuple[Any, str]] = []
    leaks: list[Meta] = []
    to_ping: list[Any] = []
    lost: list[Meta] = []
    refills: list[Request] = []
    try:
        with slots.lock:
            if slots.reclaimed:
                lost = slots.reap_reclaimed()
            if opts.leak_warning_after is not None:
                for meta in slots.in_use:
                    if not meta.warned and now - meta.borrowed_at >= opts.leak_warning_after:
                        meta.warned = True
                        slots.counters.leaks += 1
                        leaks.append(meta)
            keep: deque[Any] = deque()
            for conn in slots.idle:
                meta = conn._rp_meta
                reason = slots.expired(meta, now, len(slots.idle) - len(doomed))
                if reason is not None:
                    slots.closing.add(meta)
                    doomed.append((conn, reason))
                elif opts.keepalive_interval is not None and now - meta.last_used >= opts.keepalive_interval:
                    to_ping.append(conn)
                else:
                    keep.append(conn)
            slots.idle = keep
            slots.pinging.update(to_ping)
            want = refill_count(host, slots)
            room = slots.size() + want < opts.max_connections
            if host.failing_fast and not want and not slots.shut and room:
                want = 1  # the fail-fast probe: one trial connect
            for _ in range(want):
                req = Request()
                req.slot = True
                slots.connecting += 1
                refills.append(req)
        if lost:
            warn_reclaimed(host, lost)
            slots.closed(lost)
        if doomed:
            host.close_doomed(doomed)
            doomed = []
        _warn_leaks(host, leaks)
        for conn in to_ping:
            keepalive(host, slots, conn)
        while refills:
            req = refills[0]
            try:
                host.open_into(req, time.monotonic() + max(opts.ping_timeout, 1.0))
            except Exception as error:
                log.debug("background connect failed: %s", error)
            del refills[0]
    finally:  # interrupted (run_maintenance() in a user thread): give back what we took
        if doomed:
            host.close_doomed(doomed)
        for req in refills:
            slots.end(req)
    if host.failing_fast:
        return _connect.PROBE_INTERVAL
    return 1.0


def _warn_leaks(host: Host, leaks: list[Meta]) -> None:
    for meta in leaks:
        log.warning(
            "connection #%d of pool %s has been borrowed by thread %r for more than %.1fs "
            "(leak_warning_after); it was borrowed at:\n%s",
            meta.id,
            host.name,
            thread_name(meta.holder),
            host.options.leak_warning_after,
            format_stack(meta),
        )


def refill_count(host: Host, slots: Slots) -> int:
    """Connections to open so ``min_idle`` are ready, within max.  Locked."""
    opts = slots.options
    if slots.shut or host.failing_fast or not opts.min_idle:
        return 0
    want = opts.min_idle - len(slots.idle) - slots.connecting - len(slots.pinging)
    room = opts.max_connections - slots.size()
    return max(0, min(want, room))


def keepalive(host: Host, slots: Slots, conn: Any) -> None:
    """PING one idle connection the pass set aside; keep it or close it."""
    ok = False
    try:
        _health.ping(conn, slots.options.ping_timeout)
        ok = True
    except Exception as error:
        log.debug("keepalive PING failed for #%d: %s", conn._rp_meta.id, error)
    finally:
        with slots.lock:
            slots.pinging.discard(conn)
            slots.counters.keepalive_pings += 1
            if ok and not slots.shut:
                conn._rp_meta.last_used = slots.clock()
                slots.put(conn)
                doomed = False
            else:
                if not ok:
                    slots.counters.health_ping += 1
                slots.closing.add(conn._rp_meta)
                doomed = True
        if doomed:
            host.close_doomed([(conn, "keepalive failed")])


def wait_ready(host: Host, slots: Slots, timeout: float | None = 10.0) -> None:
    """Open connections in this thread until ``min_idle`` are idle, or the pool is full.

    Raises :class:`PoolTimeout` if that takes longer than ``timeout`` seconds,
    :class:`ServerUnavailable` while the pool fails fast, :class:`PoolClosed` after
    ``shutdown()``, or the connect error when Redis cannot be reached.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        req = Request()
        with slots.lock:
            opts = slots.options
            if len(slots.idle) >= opts.min_idle or slots.size() >= opts.max_connections:
                return
            if slots.shut:
                raise PoolClosed(f"pool {host.name} was shut down")
            if len(slots.idle) + slots.connecting < opts.min_idle:
                slots.connecting += 1
                req.slot = True
        if req.slot:
            try:
                # A new connection goes to a waiting caller first, or joins the idle set.
                host.open_into(req, deadline)
            except BaseException:
                slots.end(req)  # open_into frees the slot itself; this covers an interrupt
                raise
            continue
        # The background thread is opening the rest; their outcome has no event to wait on.
        if deadline is not None and time.monotonic() >= deadline:
            raise PoolTimeout(f"pool {host.name} did not reach min_idle={opts.min_idle} in {timeout}s")
        time.sleep(0.005)
