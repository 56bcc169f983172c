"""A table of pools held weakly, for metrics integrations that report many pools."""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from .._pool import ConnectionPool

E = TypeVar("E")


class WeakPools(Generic[E]):
    """Maps live pools to an entry each, without keeping any pool alive.

    A collected pool's entry disappears at the next call. The weakref callback only
    queues the pool's id: it runs inside garbage collection, maybe while this thread
    holds ``lock``, so taking the lock there could deadlock. Every method takes the lock
    itself; :meth:`add` runs ``make`` under it, so ``make`` may raise to refuse a pool.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards _entries
        self._entries: dict[int, tuple[weakref.ref[ConnectionPool], E]] = {}
        self._dead: deque[int] = deque()  # ids of collected pools, pruned under the lock

    def add(self, pool: ConnectionPool, make: Callable[[list[E]], E]) -> E | None:
        """Store ``make(entries of the other live pools)`` for ``pool``; return it, or
        None if ``pool`` is here already."""
        key = id(pool)
        with self.lock:
            self._prune()
            known = self._entries.get(key)
            if known is not None and known[0]() is pool:
                return None
            entry = make([e for ref, e in self._entries.values() if ref() is not None])
            self._entries[key] = (weakref.ref(pool, lambda _ref: self._dead.append(key)), entry)
            return entry

    def remove(self, pool: ConnectionPool) -> E | None:
        """Forget ``pool``; return its entry, or None if it was not here."""
        with self.lock:
            self._prune()
            known = self._entries.get(id(pool))
            if known is None or known[0]() is not pool:
                return None
            del self._entries[id(pool)]
            return known[1]

    def live(self) -> list[tuple[ConnectionPool, E]]:
        """Every live pool with its entry, as a snapshot taken under the lock."""
        with self.lock:
            self._prune()
            rows = [(ref(), entry) for ref, entry in self._entries.values()]
        return [(pool, entry) for pool, entry in rows if pool is not None]

    def _prune(self) -> None:
        """Drop entries of collected pools.  Locked."""
        while self._dead:
            key = self._dead.popleft()
            known = self._entries.get(key)
            if known is not None and known[0]() is None:  # not a new pool that reused the id
                del self._entries[key]
