"""One daemon thread per process that keeps every live pool tidy.

Pools are held by weak reference, so an unreferenced pool is collected and simply
drops out. The thread starts when the first pool registers, stops when the last one
unregisters (or is collected), and is started again lazily in a forked child. It never
holds a pool lock while doing network I/O: each pool's :meth:`_maintain` collects its
work under the lock and performs it outside.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Protocol

log = logging.getLogger("redispool")

# Upper bound on how long the thread sleeps between passes.
MAX_TICK = 1.0


class Maintainable(Protocol):
    def _maintain(self) -> float:
        """Run one pass; return how many seconds until the pool wants another."""


class Maintainer:
    def __init__(self) -> None:
        self._init_state()

    def _init_state(self) -> None:
        # _lock guards _pools and _thread; never held while a pool is maintained.
        # Re-entrant: a garbage collection inside the locked section may run a client's
        # __del__ that closes its pool, which unregisters it from this very thread.
        self._lock = threading.RLock()
        # The wake-up is a bare lock used as a one-shot signal: the thread sleeps in
        # acquire(timeout) and wake() releases it. Both are single C calls, so neither
        # an interrupt nor a garbage collection in the middle can leave a lock held
        # (an Event's set() runs Python code under its condition's plain lock).
        self._wake_signal = threading.Lock()
        self._wake_signal.acquire()
        self._pools: weakref.WeakSet[Maintainable] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def register(self, pool: Maintainable) -> None:
        with self._lock:
            self._pools.add(pool)
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, name="redispool-maintenance", daemon=True)
                self._thread = thread
                thread.start()
        self.wake()

    def unregister(self, pool: Maintainable) -> None:
        # No wake-up here: this runs from pool.close(), which a client's __del__ may call
        # inside a garbage collection, possibly while this thread is inside Event.set()
        # holding its non-reentrant lock. The thread notices within MAX_TICK instead.
        with self._lock:
            self._pools.discard(pool)

    def wake(self) -> None:
        """Ask for a pass now. Never blocks; waking an awake thread does nothing."""
        # Not contextlib.suppress: a bare try keeps this one C call, with no Python
        # frame in which an interrupt could land.
        try:  # noqa: SIM105
            self._wake_signal.release()
        except RuntimeError:
            pass  # already signalled

    def is_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def after_fork_in_child(self) -> None:
        """The parent's thread does not exist here; restart it if pools need it."""
        pools = list(self._pools)
        self._init_state()
        for pool in pools:
            self._pools.add(pool)
        if pools:
            self.register(pools[0])

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                pools = list(self._pools)
                if not pools or self._thread is not me:
                    if self._thread is me:
                        self._thread = None
                    return
            delay = MAX_TICK
            for pool in pools:
                try:
                    delay = min(delay, pool._maintain())
                except Exception:  # a bug in one pool must not stop the others' upkeep
                    log.exception("redispool maintenance failed for %r", pool)
            del pools, pool  # hold no strong reference while asleep
            self._wake_signal.acquire(timeout=max(delay, 0.005))


maintainer = Maintainer()
