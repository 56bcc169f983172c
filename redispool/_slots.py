"""The slot engine: bounded capacity, FIFO waiters and direct handoff. No Redis in here.

A slot is the right to hold one connection. The engine counts five kinds of them: idle
(ready to lend), in use (lent; held only weakly, through their :class:`Meta`),
connecting (reserved by someone opening a connection), pinging (idle ones out for a
background PING) and closing (leaving the pool, socket not yet closed). ``size`` is
their sum and never exceeds ``max_connections``: a connection being closed keeps its
slot until its socket is shut, so no one can open a replacement first.

Whoever frees something hands it straight to the longest waiter (a returned connection,
or a slot), so waiters are served in arrival order and a newcomer never overtakes them.

What a caller holds lives on its :class:`Request`, written under the lock in the same
step that changes the counts. Whatever interrupts the caller, :meth:`Slots.give_up`
and :meth:`Slots.end` give back exactly what the request holds. Locked operations
*return* what must be closed; the caller closes it outside the lock, then reports it
with :meth:`Slots.buried` or :meth:`Slots.closed`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ._expiry import Expiry
from ._meta import Meta, Request, borrow_stack, new_signal
from ._options import PoolOptions
from ._stats import Counters
from .errors import PoolClosed, PoolTimeout, TooManyWaiters

log = logging.getLogger("redispool")

# Epochs of connections no longer counted: forgotten by reset() while borrowed, retired.
FORGOTTEN, RETIRED = -1, -2
# At most one "pool too small" warning per pool in this many seconds.
TIMEOUT_WARNING_INTERVAL = 10.0

_get_ident = threading.get_ident

# The caller's verdict on a returned connection itself (None: keep it). Locked.
Verdict = Callable[[Any, Meta, float], "str | None"]


class Slots(Expiry):
    """The bounded FIFO slot and waiter engine of one pool (see the module docstring)."""

    def __init__(self, options: PoolOptions, name: str = "pool") -> None:
        # --- self.lock guards everything below: idle, in_use, pinging, connecting,
        # closing, waiters, epoch, shut, counters. Never held during I/O. Re-entrant:
        # redis-py code and garbage collection re-enter it from the same thread. ---
        self.lock = threading.RLock()
        self.idle: deque[Any] = deque()  # connections ready to lend
        self.in_use: dict[Meta, None] = {}  # lent; only weakly held, through the metas
        self.pinging: set[Any] = set()  # idle connections out for a keepalive PING
        self.connecting = 0  # slots reserved for connects in progress
        self.closing: set[Meta] = set()  # leaving: socket still open, slot still counted
        self.waiters: deque[Request] = deque()
        self.epoch = 0  # bumped by drain() and reset(): older connections retire
        self.shut = False
        self.over = False  # size may exceed max_connections (after resize() shrank it)
        self.counters = Counters()
        # --- end of guarded state ---
        self.options = options  # replaced whole (never mutated) by resize()
        self.name = name
        self.clock: Callable[[], float] = time.monotonic
        self.reclaimed: deque[Meta] = deque()  # appended by GC callbacks without the lock
        self._last_timeout_warning = -TIMEOUT_WARNING_INTERVAL

    # ------------------------------------------------------------------ views

    def size(self) -> int:
        """Every slot taken, of any kind.  Locked."""
        return len(self.idle) + len(self.in_use) + self.connecting + len(self.pinging) + len(self.closing)

    def live_in_use(self) -> list[Any]:
        """The borrowed connections still alive.  Locked."""
        return [c for c in (m.ref() if m.ref else None for m in self.in_use) if c is not None]

    def state_text(self) -> str:
        return (
            f"{len(self.in_use)} of {self.options.max_connections} in use, "
            f"{self.connecting} connecting, {len(self.waiters)} waiting"
        )

    # ------------------------------------------------------------------ borrowing

    def take(self, req: Request, timeout: float | None) -> None:
        """Lend ``req`` an idle connection, or reserve it a slot, or queue it. A request
        holding a slot stays ahead of the queue; expired idle ones go to ``req.doomed``.
        Raises PoolClosed, PoolTimeout (``timeout=0``, nothing free) or TooManyWaiters."""
        with self.lock:  # critical section: idle, in-use, slots, waiters
            if self.shut:
                raise PoolClosed(f"pool {self.name} was shut down")
            if self.reclaimed:
                self.reap_reclaimed(req)
            if self.idle and (req.slot or not self.waiters):
                conn = self._pop_idle(req)
                if conn is not None:
                    if req.slot:
                        self.connecting -= 1
                        req.slot = False
                        self.serve_slots()
                    self.lend(conn, req)
                    return
            if req.slot:
                return
            if req.doomed and not self.waiters:
                # The caller closes its doomed connections before it connects: the
                # capacity of one of them becomes its slot.
                self.closing.discard(req.doomed[0][0]._rp_meta)
                self.connecting += 1
                req.slot = True
                return
            if self.size() < self.options.max_connections and not self.waiters:
                self.connecting += 1
                req.slot = True
                return
            if timeout == 0:
                self.counters.timeouts += 1
                raise self.timeout_error(0.0)
            limit = self.options.max_waiting
            if limit is not None and len(self.waiters) >= limit:
                self.counters.refused += 1
                raise TooManyWaiters(
                    f"{len(self.waiters)} callers already waiting for a connection "
                    f"(max_waiting={limit}, {self.state_text()}); "
                    "shed load, raise max_waiting or max_connections"
                )
            signal = new_signal()
            req.thread = _get_ident()
            req.queued = time.monotonic()
            req.signal = signal
            self.waiters.append(req)
            self.counters.waits += 1

    def wait(self, req: Request, deadline: float | None, start: float) -> None:
        """Block until ``req`` is served (``conn`` or ``slot``); raise :class:`PoolTimeout`
        at ``deadline``, or the error shutdown() handed it."""
        assert req.signal is not None
        remaining = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not req.signal.acquire(timeout=remaining):
            error = None
            with self.lock:
                if req.conn is None and not req.slot and req.error is None:
                    # Nobody served us before the deadline: leave the queue. Anything
                    # handed over after this point goes to the next waiter: nothing is lost.
                    self.waiters.remove(req)
                    self._count_wait(req)
                    self.counters.timeouts += 1
                    error = self.timeout_error(time.monotonic() - start)
                    warn = self._should_warn_timeout()
            if error is not None:
                if warn:
                    log.warning("%s", error)  # outside the lock: logging may do I/O
                raise error
        # Served (perhaps just as the deadline passed): whoever released the signal handed
        # us a connection, a slot or an error, and counted our wait, under the lock.
        if req.error is not None:
            raise req.error
        if req.conn is not None and self.options.leak_warning_after is not None:
            req.conn._rp_meta.stack = borrow_stack()  # the connection is ours alone now

    def lend_idle(self, fresh: float | None) -> Any:
        """The fast borrow: lend this thread the next idle connection and return it, if
        that is all there is to do; else None, with nothing changed (then :meth:`take`).

        Nothing is done here when callers are waiting, a collected connection must be
        reaped, or the next idle connection is expired, drained, idle past max_idle or
        idle for ``fresh`` seconds or more (it needs a PING first)."""
        with self.lock:  # critical section: idle, in-use
            idle = self.idle
            if not idle or self.waiters or self.reclaimed or self.shut:
                return None
            opts = self.options
            lifo = opts.idle_order == "lifo"
            conn = idle[-1] if lifo else idle[0]
            meta: Meta = conn._rp_meta
            now = self.clock()
            quiet = now - meta.last_used
            if (
                now >= meta.expires
                or meta.epoch != self.epoch
                or (opts.max_idle is not None and quiet >= opts.max_idle)
                or (fresh is not None and quiet >= fresh)
            ):
                return None
            if lifo:
                idle.pop()
            else:
                idle.popleft()
            meta.holder = _get_ident()
            meta.uses += 1
            self.in_use[meta] = None
            self.counters.borrows += 1
            if opts.leak_warning_after is not None:
                self._note_borrow(meta)
            return conn

    def lend(self, conn: Any, req: Request) -> None:
        """Record ``conn`` as lent to ``req``, borrowed by this thread.  Locked."""
        meta: Meta = conn._rp_meta
        meta.holder = _get_ident()
        meta.uses += 1
        self.in_use[meta] = None
        req.conn = conn
        self.counters.borrows += 1
        if self.options.leak_warning_after is not None:
            self._note_borrow(meta)

    def _note_borrow(self, meta: Meta) -> None:  # for leak warnings.  Locked.
        meta.borrowed_at = self.clock()
        meta.warned = False
        meta.stack = borrow_stack()

    def retire(self, req: Request, reason: str) -> None:
        """``req.conn`` failed its checkout: it becomes doomed, the caller closes it and
        then calls ``buried(req, into_slot=True)`` to keep its capacity.  Locked."""
        with self.lock:
            conn = req.conn
            meta: Meta = conn._rp_meta
            if meta in self.in_use:
                del self.in_use[meta]
                self.counters.borrows -= 1  # the caller's borrow counts once, when it succeeds
            self.closing.add(meta)
            req.doomed = [*(req.doomed or ()), (conn, reason)]
            req.conn = None
            req.touched = False

    def buried(self, req: Request, into_slot: bool = False) -> None:
        """The caller closed ``req.doomed``: free their slots, or with ``into_slot``
        turn one of them into a connecting slot for the caller."""
        with self.lock:
            for conn, _reason in req.doomed or ():
                self.closing.discard(conn._rp_meta)
            req.doomed = None
            if into_slot and not req.slot:
                self.connecting += 1
                req.slot = True
            self.serve_slots()

    def opened(self, req: Request, conn: Any, for_caller: bool) -> None:
        """``conn`` was opened in ``req``'s slot: lend it, or hand it on.  Locked."""
        self.connecting -= 1
        req.slot = False
        req.opening = None
        self.counters.connects += 1
        if for_caller:
            self.lend(conn, req)
        else:
            self.put(conn)

    def give_up(self, req: Request) -> list[tuple[Any, str]]:
        """An interrupted or failed borrow: leave the queue and give back ``req.conn``.

        A connection the caller had not started to check goes to the next waiter;
        one it had is doomed. Returns everything the caller must close before
        :meth:`end` frees the rest (the request's slot covers ``req.opening``).
        """
        with self.lock:
            if req.signal is not None and req in self.waiters:
                self.waiters.remove(req)
            conn = req.conn
            if conn is not None:
                meta: Meta = conn._rp_meta
                if meta in self.in_use:
                    del self.in_use[meta]
                    self.counters.borrows -= 1
                    if req.touched:
                        self.closing.add(meta)
                        req.doomed = [*(req.doomed or ()), (conn, "checkout interrupted")]
                    else:
                        self.put(conn)
                req.conn = None
            return list(req.doomed or ())

    def end(self, req: Request) -> None:
        """After :meth:`give_up` and the closes: free the request's slots."""
        with self.lock:
            for conn, _reason in req.doomed or ():
                self.closing.discard(conn._rp_meta)
            req.doomed = None
            req.opening = None
            if req.slot:
                self.connecting -= 1
                req.slot = False
            self.serve_slots()

    # ------------------------------------------------------------------ returning

    def give_back(self, conn: Any, meta: Meta, verdict: Verdict | None) -> str | None:
        """Take back a borrowed connection; return why it must be closed (it stays
        counted as closing until :meth:`closed`), or None: pooled, or a double release.

        ``verdict`` judges the connection itself; None when the caller already knows
        there is nothing wrong with it. The engine adds its own reasons (shutdown,
        lifetime, drain, a shrunk pool)."""
        me = _get_ident()
        with self.lock:  # critical section: in-use set and handoff
            if meta not in self.in_use:
                if meta.epoch == FORGOTTEN:  # borrowed when reset() forgot it: close it once
                    meta.epoch = RETIRED
                    self.closing.add(meta)
                    return "returned after reset()"
                return None  # double release
            if meta.released_by == me and meta.holder != me and meta.holder is not None:
                # This thread already returned it once; someone else borrowed it since.
                # Returning it again would let two borrowers share it.
                self.counters.double_releases += 1
                return None
            del self.in_use[meta]
            counters = self.counters
            counters.returns += 1
            meta.released_by = me
            meta.last_used = now = self.clock()
            if verdict is not None:
                try:
                    reason = verdict(conn, meta, now)
                except Exception as error:  # a broken connection object: never pool it
                    reason = f"return check failed: {error!r}"
            elif now >= meta.expires or meta.epoch != self.epoch or self.shut or self.over:
                reason = self.retire_reason(meta, now)
            else:
                reason = None
            if reason is None:
                self.put(conn)
            else:
                self.closing.add(meta)
            return reason

    def salvage(self, conn: Any, meta: Meta) -> str | None:
        """Finish a release that was interrupted: return a reason to close ``conn`` if
        this thread still owns it (borrowed, or counted as closing), else None."""
        with self.lock:
            if meta in self.closing:
                return "release interrupted"
            if meta in self.in_use and meta.holder == _get_ident():
                del self.in_use[meta]
                self.counters.returns += 1
                meta.released_by = meta.holder
                self.closing.add(meta)
                return "release interrupted"
            return None

    def closed(self, metas: Iterable[Meta]) -> None:
        """These closing connections' sockets are shut: free their slots."""
        with self.lock:
            for meta in metas:
                self.closing.discard(meta)
            self.serve_slots()

    # ------------------------------------------------------------------ handoff

    def put(self, conn: Any) -> None:
        """Hand ``conn`` to the longest waiter, or park it idle.  Locked."""
        meta: Meta = conn._rp_meta
        if self.waiters:
            waiter = self.waiters.popleft()
            meta.holder = waiter.thread
            meta.uses += 1
            self.in_use[meta] = None
            self.counters.borrows += 1
            if self.options.leak_warning_after is not None:
                meta.borrowed_at = self.clock()
                meta.warned = False  # the waiter records its own stack when it wakes
            waiter.conn = conn
            self._wake(waiter)
        else:
            meta.holder = None
            self.idle.append(conn)

    def _wake(self, waiter: Request) -> None:
        """``waiter`` was served: count its wait and wake it.  Locked."""
        self._count_wait(waiter)
        assert waiter.signal is not None
        waiter.signal.release()

    def _count_wait(self, waiter: Request) -> None:  # Locked.
        waited = time.monotonic() - waiter.queued
        self.counters.wait_time_total += waited
        if waited > self.counters.wait_time_max:
            self.counters.wait_time_max = waited

    def serve_slots(self) -> None:
        """Give free capacity to waiters, oldest first.  Locked."""
        while self.waiters and self.size() < self.options.max_connections:
            waiter = self.waiters.popleft()
            self.connecting += 1
            waiter.slot = True
            self._wake(waiter)

    # ------------------------------------------------------------------ control

    def forget_in_use(self) -> None:
        """Stop counting borrowed connections (reset()); each is closed when returned.  Locked."""
        for meta in self.in_use:
            meta.epoch = FORGOTTEN
        self.in_use.clear()

    def shut_down(self) -> None:
        """Refuse new borrows; waiting callers get :class:`PoolClosed`.  Locked."""
        self.shut = True
        waiters = list(self.waiters)
        self.waiters.clear()
        for waiter in waiters:
            waiter.error = PoolClosed(f"pool {self.name} was shut down while waiting")
            self._wake(waiter)

    def timeout_error(self, waited: float) -> PoolTimeout:  # the message names the fix
        return PoolTimeout(
            f"No connection available: none free after {waited:.2f}s "
            f"(pool {self.name}: {self.state_text()}); "
            "raise max_connections or timeout, or look for connections that are not returned"
        )

    def _should_warn_timeout(self) -> bool:
        now = time.monotonic()
        if now - self._last_timeout_warning >= TIMEOUT_WARNING_INTERVAL:
            self._last_timeout_warning = now
            return True
        return False
