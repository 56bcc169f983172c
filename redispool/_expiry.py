"""Why connections leave the pool: lifetime, drain, idle limits, reclaim and shrinking.

:class:`Expiry` is the part of the slot engine (:class:`redispool._slots.Slots`) that
decides which connections must go and marks them *closing*, counted: each method runs
under the engine's lock and returns (or records on the request) what the caller must
close outside it. No Redis in here either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ._meta import Lost, Meta, Request
from ._options import PoolOptions
from ._stats import Counters


class Expiry:
    """The engine's expiry rules; state and lock are :class:`Slots`'s."""

    idle: deque[Any]
    in_use: dict[Meta, None]
    closing: set[Meta]
    reclaimed: deque[Meta]
    options: PoolOptions
    counters: Counters
    epoch: int
    shut: bool
    over: bool
    clock: Callable[[], float]

    def size(self) -> int:
        raise NotImplementedError  # pragma: no cover - Slots implements it

    def retire_reason(self, meta: Meta, now: float) -> str | None:
        """The engine's reasons not to keep a returned connection, counted.  Locked."""
        if self.shut:
            return "pool shut down"
        if (aged := self._aged(meta, now)) is not None:
            return aged
        if self.over:
            if self.size() + 1 > self.options.max_connections:
                return "pool shrunk"
            self.over = False
        return None

    def _pop_idle(self, req: Request) -> Any:
        """Pop the next usable idle connection; expired ones become doomed.  Locked."""
        idle = self.idle
        now = self.clock()
        opts = self.options
        while idle:
            conn = idle.pop() if opts.idle_order == "lifo" else idle.popleft()
            meta = conn._rp_meta
            # The common case inline, without a call: not expired, drained or idle too long.
            if (
                now < meta.expires
                and meta.epoch == self.epoch
                and (opts.max_idle is None or now - meta.last_used < opts.max_idle)
            ):
                return conn
            reason = self.expired(meta, now, len(idle) + 1)
            if reason is None:
                return conn
            self.closing.add(conn._rp_meta)
            req.doomed = [*(req.doomed or ()), (conn, reason)]
        return None

    def _aged(self, meta: Meta, now: float) -> str | None:  # lifetime or drain, counted.  Locked.
        if now >= meta.expires:
            self.counters.retired_lifetime += 1
            return "max_lifetime reached"
        if meta.epoch != self.epoch:
            self.counters.drained += 1
            return "drained"
        return None

    def expired(self, meta: Meta, now: float, idle_count: int) -> str | None:
        """Why an idle connection must close now, counted; None to keep it.  Locked.
        ``idle_count`` counts this one: max_idle never goes below min_idle; lifetime,
        drain do."""
        if (aged := self._aged(meta, now)) is not None:
            return aged
        max_idle = self.options.max_idle
        if max_idle is not None and now - meta.last_used >= max_idle and idle_count > self.options.min_idle:
            self.counters.evicted_idle += 1
            return "max_idle reached"
        return None

    def reap_reclaimed(self, req: Request | None = None) -> list[Meta]:
        """Slots of borrowed connections that were garbage-collected become closing
        (their sockets outlive them on the meta); returns their metas.  Locked."""
        lost = []
        while self.reclaimed:
            meta = self.reclaimed.popleft()
            if meta in self.in_use:
                del self.in_use[meta]
                self.counters.reclaimed += 1
                self.closing.add(meta)
                lost.append(meta)
        if req is not None and lost:
            req.doomed = [*(req.doomed or ()), *((Lost(m), "reclaimed") for m in lost)]
        return lost

    def evict_idle(self, reason: str, doomed: Callable[[Any], bool] | None = None) -> list[tuple[Any, str]]:
        """Idle connections (all, or those ``doomed`` picks) become closing.  Locked."""
        keep: deque[Any] = deque()
        out = []
        for conn in self.idle:
            if doomed is None or doomed(conn):
                self.closing.add(conn._rp_meta)
                out.append((conn, reason))
            else:
                keep.append(conn)
        self.idle = keep
        return out

    def shrink_to_fit(self) -> list[tuple[Any, str]]:
        """Idle connections beyond ``max_connections`` become closing; borrowed ones
        close as they come back while the pool is still too big.  Locked."""
        out = []
        excess = self.size() - self.options.max_connections
        for _ in range(min(len(self.idle), excess)):
            conn = self.idle.popleft()
            self.closing.add(conn._rp_meta)
            out.append((conn, "pool shrunk"))
        self.over = self.over or excess > 0  # cleared by retire_reason once it fits
        return out
