"""Control of a pool: reset, resize, drain, disconnect, close, shutdown, fork, upkeep.

:class:`PoolControl` is the part of :class:`redispool.ConnectionPool` that changes the
pool as a whole. Each operation takes what it changes from the slot engine under its
lock, which marks the connections to close as *closing* (still counted against
``max_connections``); they are closed here, outside the lock, and only then is their
capacity handed to waiting callers.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, cast

from . import _lifecycle
from ._compat import quiet_disconnect, unlink
from ._maintenance import maintainer
from ._meta import Lost
from ._options import PoolOptions
from ._slots import Slots

log = logging.getLogger("redispool")

# Every live pool of this process, for the after-fork reset in the child.
all_pools: weakref.WeakSet[PoolControl] = weakref.WeakSet()


class PoolControl:
    """Whole-pool operations on top of a :class:`Slots` engine."""

    _slots: Slots
    _options: PoolOptions
    _registered: bool
    _fork_lock: threading.RLock
    pid: int

    _lock: threading.RLock

    def _init_state(self) -> None:
        raise NotImplementedError  # pragma: no cover - ConnectionPool implements it

    def _host(self) -> _lifecycle.Host:
        """This pool as upkeep sees it (ConnectionPool provides the rest of Host)."""
        return cast("_lifecycle.Host", self)

    def reset(self) -> None:
        """Forget every connection: idle ones are closed now, borrowed ones on return.

        redis-py calls this after a fork and django-redis after changing the password;
        waiting callers are served from the capacity this frees.
        """
        if not getattr(self, "_ready", False):
            return  # called by redis-py's __init__ before our state exists
        slots = self._slots
        with slots.lock:
            slots.epoch += 1
            doomed = slots.evict_idle("reset")
            slots.forget_in_use()
            slots.serve_slots()
            self.pid = os.getpid()
        self.close_doomed(doomed)

    def _close(self, conn: Any, reason: str) -> None:
        if type(conn) is Lost:
            _lifecycle.warn_reclaimed(self._host(), [conn._rp_meta])
            return
        log.debug("closing connection #%s: %s", getattr(getattr(conn, "_rp_meta", None), "id", "?"), reason)
        quiet_disconnect(conn)
        unlink(conn)  # never lent again

    def _close_all(self, doomed: list[tuple[Any, str]]) -> None:
        for conn, reason in doomed:
            self._close(conn, reason)

    def close_doomed(self, doomed: list[tuple[Any, str]]) -> None:
        """Close connections the engine counts as closing, then free their slots."""
        try:
            self._close_all(doomed)
        finally:
            self._slots.closed(conn._rp_meta for conn, _reason in doomed)

    # ------------------------------------------------------------------ maintenance

    def _register(self) -> None:
        self._registered = True
        maintainer.register(self)

    def _maintain(self) -> float:
        return _lifecycle.maintain(self._host(), self._slots)

    def run_maintenance(self) -> None:
        """Run one maintenance pass now, in this thread (the background thread runs
        them about once a second). Useful in tests and after changing the clock."""
        _lifecycle.maintain(self._host(), self._slots)

    def wait_ready(self, timeout: float | None = 10.0) -> None:
        """Open connections in this thread until ``min_idle`` are idle and ready.

        Raises :class:`PoolTimeout` if that takes longer than ``timeout`` seconds, or the
        connect error when Redis cannot be reached.
        """
        _lifecycle.wait_ready(self._host(), self._slots, timeout)

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
        slots = self._slots
        with slots.lock:
            self._options = slots.options = self._options.replace(**changes)
            doomed = slots.shrink_to_fit()
            slots.serve_slots()
        self.close_doomed(doomed)
        maintainer.wake()

    def drain(self) -> None:
        """Replace every connection: idle ones now, borrowed ones when returned.

        Use it after rotating credentials or a failover; ``min_idle`` is refilled by
        the background thread.
        """
        slots = self._slots
        with slots.lock:
            slots.epoch += 1
            doomed = slots.evict_idle("drained")
            slots.counters.drained += len(doomed)
        self.close_doomed(doomed)
        maintainer.wake()

    def disconnect(self, inuse_connections: bool = True) -> None:
        """Close idle connections and, if ``inuse_connections``, borrowed ones too.

        Borrowed connections closed this way are discarded when returned. The pool
        stays usable and opens new connections on demand.
        """
        self._checkpid()
        slots = self._slots
        with slots.lock:
            doomed = slots.evict_idle("disconnect()")
            busy = slots.live_in_use() if inuse_connections else []
        self.close_doomed(doomed)
        for conn in busy:  # still counted in use: closed sockets, so no overshoot
            self._close(conn, "disconnect()")

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
            self._slots.shut_down()
        self.close()

    def _checkpid(self) -> None:
        if self.pid != os.getpid():
            with self._fork_lock:
                if self.pid != os.getpid():
                    self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections without touching them."""
        self._fork_lock = threading.RLock()
        self._registered = False
        self._init_state()


def _after_fork_in_child() -> None:
    for pool in list(all_pools):
        try:
            pool._after_fork()
        except Exception:  # pragma: no cover - defensive: never break the child
            log.debug("after-fork reset failed", exc_info=True)
    maintainer.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
