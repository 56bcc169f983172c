"""Pool tables for contrib: pools held weakly (metrics), and one shared pool per process
and setting (Celery, RQ)."""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

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


# ---------------------------------------------------------------- one pool per process

_Key = tuple[tuple[str, str], ...]
_shared: dict[_Key, ConnectionPool] = {}
_shared_lock = threading.Lock()  # guards _shared


def pool_key(params: Mapping[str, Any], ignore: Iterable[str] = ()) -> _Key:
    """A hashable identity for connection parameters: equal settings, one pool.

    Values are compared by ``repr``, so two credential providers of a class without its
    own ``__repr__`` count as different and get two pools.
    """
    skip = set(ignore)
    return tuple(sorted((key, repr(value)) for key, value in params.items() if key not in skip))


def shared_pool(key: _Key, make: Callable[[], ConnectionPool]) -> ConnectionPool:
    """The pool of this process for ``key``, made by ``make()`` on first use.

    Frameworks that build a client per thread, channel or backend object (Celery, RQ)
    share one bounded pool this way. A pool survives ``fork()``: redispool resets it in
    the child, so the child gets a fresh pool with the same settings and never touches
    the parent's sockets.
    """
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None:
            pool = _shared[key] = make()
        return pool


def close_shared() -> None:
    """Close every shared pool of this process; they reconnect if used again."""
    with _shared_lock:
        pools = list(_shared.values())
    for pool in pools:
        pool.close()


def shared_pools() -> list[ConnectionPool]:
    """The shared pools of this process (for tests and metrics)."""
    with _shared_lock:
        return list(_shared.values())


def _reset_lock_in_child() -> None:
    # A thread of the parent may have held the lock at fork(); it does not exist here.
    global _shared_lock
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


_per_pid_classes: dict[type, type] = {}


def per_pid_names(connection_class: type) -> type:
    """``connection_class``, but a ``client_name`` holding ``{pid}`` names the process
    that opens the connection, so ``CLIENT LIST`` tells forked workers apart."""
    made = _per_pid_classes.get(connection_class)
    if made is None:

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            name = kwargs.get("client_name")
            if isinstance(name, str) and "{pid}" in name:
                kwargs["client_name"] = name.replace("{pid}", str(os.getpid()))
            connection_class.__init__(self, *args, **kwargs)  # type: ignore[misc]

        made = type(connection_class.__name__, (connection_class,), {"__init__": __init__})
        made.__module__ = connection_class.__module__
        made = _per_pid_classes.setdefault(connection_class, made)  # a racing thread's class wins
    return made
