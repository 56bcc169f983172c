"""Background upkeep of one pool: reclaim, leak warnings, eviction, lifetime,
keepalive, ``min_idle`` refill and the fail-fast probe.

:func:`maintain` collects its work under the pool lock and does every close, PING and
connect after releasing it, so it never delays a borrower. The maintenance thread
(``_maintenance.py``) calls it about once a second; ``pool.run_maintenance()`` calls it
on demand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import _connect, _health
from ._meta import Meta, format_stack
from .errors import PoolClosed, PoolTimeout

if TYPE_CHECKING:
    from ._pool import ConnectionPool

log = logging.getLogger("redispool")


def drain_reclaimed(pool: ConnectionPool) -> list[Meta]:
    """Free the slots of borrowed connections that were garbage-collected.  Locked.

    Returns them so the caller can log after releasing the lock."""
    lost = []
    while pool._reclaimed:
        meta = pool._reclaimed.popleft()
        if meta in pool._in_use:
            del pool._in_use[meta]
            pool._counters.reclaimed += 1
            lost.append(meta)
    pool._serve_slots()
    return lost


def warn_reclaimed(pool: ConnectionPool, lost: list[Meta]) -> None:
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
            pool.name,
            format_stack(meta),
        )


# ------------------------------------------------------------------ maintenance


def maintain(pool: ConnectionPool) -> float:
    """One background pass: reclaim, warn about leaks, evict, keep alive, refill."""
    if pool.pid != os.getpid():
        return 1.0
    now = pool._clock()
    opts = pool._options
    doomed: list[tuple[Any, str]] = []
    leaks: list[Meta] = []
    to_ping: list[Any] = []
    lost: list[Meta] = []
    with pool._lock:
        if pool._reclaimed:
            lost = drain_reclaimed(pool)
        if opts.leak_warning_after is not None:
            for meta in pool._in_use:
                if not meta.warned and now - meta.borrowed_at >= opts.leak_warning_after:
                    meta.warned = True
                    pool._counters.leaks += 1
                    leaks.append(meta)
        keep: deque[Any] = deque()
        for conn in pool._idle:
            meta = conn._rp_meta
            reason = pool._expired(meta, now, len(pool._idle) - len(doomed))
            if reason is not None:
                doomed.append((conn, reason))
            elif opts.keepalive_interval is not None and now - meta.last_used >= opts.keepalive_interval:
                to_ping.append(conn)
            else:
                keep.append(conn)
        pool._idle = keep
        pool._pinging.update(to_ping)
        if doomed:
            pool._serve_slots()
        refill = refill_count(pool)
        pool._connecting += refill
        shut = pool._shut
        room = pool._size() < opts.max_connections
        probe = pool._circuit.is_open and not refill and not shut and room
        if probe:
            pool._connecting += 1
    pool._close_all_reasons(doomed)
    warn_reclaimed(pool, lost)
    for meta in leaks:
        log.warning(
            "connection #%d of pool %s has been borrowed by thread %r for more than %.1fs "
            "(leak_warning_after); it was borrowed at:\n%s",
            meta.id,
            pool.name,
            meta.holder.name if meta.holder else "?",
            opts.leak_warning_after,
            format_stack(meta),
        )
    for conn in to_ping:
        keepalive(pool, conn)
    for _ in range(refill + probe):
        try:
            pool._open(time.monotonic() + max(pool._options.ping_timeout, 1.0), for_caller=False)
        except Exception as error:
            log.debug("background connect failed: %s", error)
    if pool._circuit.is_open:
        return _connect.PROBE_INTERVAL
    return 1.0


def refill_count(pool: ConnectionPool) -> int:
    """Connections to open so ``min_idle`` are ready, within max.  Locked."""
    if pool._shut or pool._circuit.is_open or not pool._options.min_idle:
        return 0
    want = pool._options.min_idle - len(pool._idle) - pool._connecting - len(pool._pinging)
    room = pool._options.max_connections - pool._size()
    return max(0, min(want, room))


def keepalive(pool: ConnectionPool, conn: Any) -> None:
    try:
        _health.ping(conn, pool._options.ping_timeout)
        ok = True
    except Exception as error:
        ok = False
        log.debug("keepalive PING failed for #%d: %s", conn._rp_meta.id, error)
    with pool._lock:
        pool._pinging.discard(conn)
        pool._counters.keepalive_pings += 1
        if ok and not pool._shut:
            conn._rp_meta.last_used = pool._clock()
            pool._put(conn)
        else:
            if not ok:
                pool._counters.health_ping += 1
            pool._serve_slots()
    if not ok or pool._shut:
        pool._close(conn, "keepalive failed")


def wait_ready(pool: ConnectionPool, timeout: float | None = 10.0) -> None:
    """Open connections in this thread until ``min_idle`` are idle, or the pool is full.

    Raises :class:`PoolTimeout` if that takes longer than ``timeout`` seconds,
    :class:`ServerUnavailable` while the pool fails fast, :class:`PoolClosed` after
    ``shutdown()``, or the connect error when Redis cannot be reached.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with pool._lock:
            opts = pool._options
            if len(pool._idle) >= opts.min_idle or pool._size() >= opts.max_connections:
                return
            if pool._shut:
                raise PoolClosed(f"pool {pool.name} was shut down")
            mine = len(pool._idle) + pool._connecting < opts.min_idle
            if mine:
                pool._connecting += 1
        if mine:
            # A new connection goes to a waiting caller first, or joins the idle set.
            pool._open(deadline, for_caller=False)
            continue
        # The background thread is opening the rest; their outcome has no event to wait on.
        if deadline is not None and time.monotonic() >= deadline:
            raise PoolTimeout(f"pool {pool.name} did not reach min_idle={opts.min_idle} in {timeout}s")
        time.sleep(0.005)
