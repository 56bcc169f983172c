"""Per-connection bookkeeping, the claim of each caller, and the leak trail.

A :class:`Meta` rides on every pooled connection as ``conn._rp_meta``. It never holds a
strong reference to its connection: the pool holds borrowed connections only weakly,
so a connection that a caller drops without ``release()`` is garbage-collected and its
slot reclaimed (see :func:`reclaimer`).
"""

from __future__ import annotations

import itertools
import os
import threading
import traceback
import weakref
from collections.abc import Callable
from typing import Any

# Frames kept from the borrower's stack for leak warnings.
LEAK_STACK_LIMIT = 32

_ids = itertools.count(1)


class Meta:
    """The pool's bookkeeping for one connection, stored on it as ``_rp_meta``."""

    __slots__ = (
        "borrowed_at",
        "created",
        "epoch",
        "expires",
        "holder",
        "id",
        "last_used",
        "owner",
        "plain",
        "poller",
        "quick",
        "real",
        "ref",
        "released_by",
        "should_reconnect",
        "sock",
        "stack",
        "uses",
        "warned",
    )

    def __init__(self, owner: object, epoch: int, created: float, expires: float) -> None:
        self.id = next(_ids)
        self.owner = owner
        self.epoch = epoch
        self.created = created
        self.expires = expires
        self.last_used = created
        self.uses = 0
        # Threads by ident (threading.get_ident()): who holds it, who returned it last.
        self.holder: int | None = None
        self.released_by: int | None = None
        self.borrowed_at = 0.0
        self.stack: traceback.StackSummary | None = None
        self.warned = False
        self.ref: weakref.ref[Any] | None = None
        # Never a strong reference to the connection itself: the pool holds borrowed
        # connections weakly, so that a forgotten one can be reclaimed.
        self.real: Any = None  # the connection behind a client-side-cache proxy, if any
        self.should_reconnect: Callable[[Any], bool] | None = None  # unbound; redis-py >= 7
        self.sock: Any = None  # the socket ``poller`` watches
        self.poller: Any = None
        # The fast paths (see ConnectionPool._borrow and release): ``plain`` when the
        # connection is a tracked redis-py connection, with no cache proxy and redis-py's
        # own should_reconnect; ``quick`` is ``poller`` when the socket is plain TCP or
        # Unix (not TLS), so one poll(0) is the whole probe.
        self.plain = False
        self.quick: Any = None


def new_signal() -> threading.Lock:
    """A waiter's handoff signal: acquired at birth, released by whoever serves it."""
    signal = threading.Lock()
    signal.acquire()
    return signal


class Request:
    """One caller's claim on the pool, from the start of a borrow until it is delivered.

    ``conn``: lent to this request (counted in use). ``slot``: a connecting slot is
    reserved. ``doomed``: ``(conn, reason)`` pairs this caller must close (counted as
    closing). ``opening``: the connection being connected in the reserved slot.
    ``signal`` exists while queued: acquired at birth, released on handoff.
    """

    __slots__ = ("conn", "doomed", "error", "opening", "queued", "signal", "slot", "thread", "touched")

    def __init__(self, conn: Any = None) -> None:
        self.conn: Any = conn  # lent already (the fast path hands it on)
        self.slot = False
        self.doomed: list[tuple[Any, str]] | None = None
        self.opening: Any = None
        self.signal: threading.Lock | None = None
        self.error: BaseException | None = None
        self.thread: int | None = None  # the waiting thread's ident
        self.queued = 0.0  # when it joined the queue (time.monotonic())
        self.touched = False  # the caller began checking ``conn``: its state is unknown


def thread_name(ident: int | None) -> str:
    """The name of the thread with ``ident``, for reports (``?`` if it has ended)."""
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return "?"


def reclaimer(engine_ref: weakref.ref[Any], meta: Meta) -> Callable[[Any], None]:
    """Weakref callback: queue the slot of a collected connection for reclaiming.

    It runs inside garbage collection, maybe while this very thread holds the pool
    lock, so it only appends to the engine's ``reclaimed`` deque; the engine drains it
    at its next checkout or maintenance pass.
    """

    def lost(_ref: Any) -> None:
        engine = engine_ref()
        if engine is not None:
            engine.reclaimed.append(meta)  # deque.append is atomic; take no lock here

    return lost


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def borrow_stack() -> traceback.StackSummary:
    """The caller's stack, without redispool's own frames, for leak warnings.

    Recorded under the pool lock, so no source line is read here: each frame's line is
    looked up (from the files, through linecache) only when a warning formats it."""
    frames = traceback.StackSummary.extract(
        traceback.walk_stack(None), limit=LEAK_STACK_LIMIT, lookup_lines=False
    )
    frames.reverse()  # oldest first, as extract_stack() gives them
    return traceback.StackSummary.from_list(
        [f for f in frames if not os.path.abspath(f.filename).startswith(_PACKAGE_DIR)]
    )


def format_stack(meta: Meta) -> str:
    if meta.stack is None:
        return "  (stack not recorded: set leak_warning_after to record it)\n"
    return "".join(traceback.format_list(meta.stack))


class Lost:
    """Stands in for a garbage-collected connection in ``Request.doomed``: closing it
    closes the socket its meta kept."""

    __slots__ = ("_rp_meta",)

    def __init__(self, meta: Meta) -> None:
        self._rp_meta = meta

    def disconnect(self) -> None:
        meta = self._rp_meta
        sock, meta.sock, meta.poller = meta.sock, None, None
        if sock is not None:
            sock.close()
