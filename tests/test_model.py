"""The pool's invariants, stated once and checked after every step of random runs.

Hypothesis drives the slot engine directly (fake connections, waiters queued without
threads), and the whole pool over fakeredis; a last test runs real threads. After
every step:

- the size never exceeds max (after a shrink: never grows until back under it);
- no connection is lent twice, and none is both lent and idle;
- waiters are served in arrival order;
- ``borrows == returns + in_use + reclaimed``;
- nothing is lost: every open connection is idle, lent or closing, and every
  reserved slot is held by someone.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import redispool
from redispool._meta import Meta, Request
from redispool._options import PoolOptions
from redispool._slots import Slots

FakeConnection = getattr(fakeredis, "FakeRedisConnection", None) or fakeredis.FakeConnection
RUNS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class FakeConn:
    """A connection as the engine sees it: a meta, and whether it is open."""

    def __init__(self, slots: Slots) -> None:
        self._rp_meta = Meta(slots, slots.epoch, slots.clock(), float("inf"))
        self.open = True


@dataclasses.dataclass
class Waiting:
    req: Request
    order: int


class EngineMachine(RuleBasedStateMachine):
    """The slot engine alone. Every closing connection is closed by the next step."""

    def __init__(self) -> None:
        super().__init__()
        self.slots = Slots(PoolOptions(max_connections=2, max_idle=None, max_lifetime=None), "model")
        self.held: list[FakeConn] = []  # lent to the model's callers
        self.released: list[FakeConn] = []  # given back once, maybe lent again since
        self.waiting: list[Waiting] = []
        self.orders = 0
        self.allowed = 2  # the size bound in force (above max right after a shrink)
        self.conns: list[FakeConn] = []

    # ------------------------------------------------------------------ helpers

    def _open(self, req: Request) -> None:
        conn = FakeConn(self.slots)
        self.conns.append(conn)
        with self.slots.lock:
            self.slots.opened(req, conn, for_caller=True)
        self.held.append(conn)

    def _close(self, doomed: list[tuple[Any, str]]) -> None:
        for conn, _reason in doomed:
            conn.open = False
        self.slots.closed(conn._rp_meta for conn, _ in doomed)

    def _settle(self, req: Request) -> None:
        """Deliver what take() gave: a connection, or a slot to open one in."""
        if req.doomed:
            for conn, _ in req.doomed:
                conn.open = False
            self.slots.buried(req)
        if req.conn is not None:
            self.held.append(req.conn)
        elif req.slot:
            self._open(req)

    # ------------------------------------------------------------------ rules

    @rule()
    def borrow(self) -> None:
        req = Request()
        try:
            self.slots.take(req, 0)
        except (redispool.PoolTimeout, redispool.PoolClosed) as error:
            if isinstance(error, redispool.PoolClosed):
                assert self.slots.shut
            else:
                assert self.slots.waiters or self.slots.size() >= self.slots.options.max_connections
            self._close(self.slots.give_up(req))  # as acquire() does on any error
            self.slots.end(req)
            return
        self._settle(req)

    @rule()
    def borrow_fast(self) -> None:
        # The pool's fast path: lend_idle() lends only when take() would lend the same
        # idle connection at once (nobody waiting, nothing to reap or retire).
        idle_before = list(self.slots.idle)
        waiting = bool(self.slots.waiters)
        conn = self.slots.lend_idle(None)
        if conn is None:
            assert list(self.slots.idle) == idle_before  # nothing changed
            return
        assert not waiting and not self.slots.shut
        assert conn.open and conn is idle_before[-1]  # LIFO, as take() pops
        self.held.append(conn)

    @rule()
    def queue(self) -> None:
        req = Request()
        try:
            self.slots.take(req, None)
        except redispool.PoolClosed:
            return
        if req.signal is not None:
            self.orders += 1
            self.waiting.append(Waiting(req, self.orders))
        else:
            self._settle(req)

    @rule(dirty=st.booleans(), which=st.integers(0, 10))
    @precondition(lambda self: self.held)
    def release(self, dirty: bool, which: int) -> None:
        conn = self.held.pop(which % len(self.held))
        meta = conn._rp_meta
        reason = self.slots.give_back(conn, meta, lambda c, m, now: "dirty" if dirty else None)
        if reason is not None:
            self._close([(conn, reason)])
        self.released.append(conn)

    @rule(which=st.integers(0, 10))
    @precondition(lambda self: self.released)
    def double_release(self, which: int) -> None:
        conn = self.released[which % len(self.released)]
        if conn in self.held or any(w.req.conn is conn for w in self.waiting):
            # Lent again since, to this very thread (the model has one): the engine tells
            # a double release by thread, so only a stale one is one here.
            return
        before = dataclasses.asdict(self.slots.counters)
        assert self.slots.give_back(conn, conn._rp_meta, lambda c, m, now: None) is None
        assert dataclasses.asdict(self.slots.counters)["returns"] == before["returns"]

    @rule()
    def foreign_release(self) -> None:
        other = Slots(PoolOptions(max_connections=1), "other")
        conn = FakeConn(other)
        conn._rp_meta.epoch = self.slots.epoch
        assert self.slots.give_back(conn, conn._rp_meta, lambda c, m, now: None) is None

    @rule()
    def failed_connect(self) -> None:
        req = Request()
        try:
            self.slots.take(req, 0)
        except (redispool.PoolTimeout, redispool.PoolClosed):
            return
        if req.conn is not None or not req.slot:
            self._settle(req)
            return
        self._close(self.slots.give_up(req))  # the connect raised: give the slot back
        self.slots.end(req)

    @rule(which=st.integers(0, 10))
    @precondition(lambda self: self.waiting)
    def timeout_or_wake(self, which: int) -> None:
        waiting = self.waiting.pop(which % len(self.waiting))
        try:
            self.slots.wait(waiting.req, deadline=0.0, start=0.0)
        except (redispool.PoolTimeout, redispool.PoolClosed):
            assert waiting.req.conn is None and not waiting.req.slot
            return
        self._settle(waiting.req)

    @rule(which=st.integers(0, 10), touched=st.booleans())
    @precondition(lambda self: self.waiting)
    def interrupt_waiter(self, which: int, touched: bool) -> None:
        waiting = self.waiting.pop(which % len(self.waiting))
        waiting.req.touched = touched and waiting.req.conn is not None
        self._close(self.slots.give_up(waiting.req))
        self.slots.end(waiting.req)

    @rule(size=st.integers(1, 5))
    def resize(self, size: int) -> None:
        slots = self.slots
        with slots.lock:
            slots.options = dataclasses.replace(slots.options, max_connections=size)
            doomed = slots.shrink_to_fit()
            slots.serve_slots()
        self._close(doomed)
        self.allowed = max(size, min(self.allowed, slots.size()))

    @rule()
    def drain(self) -> None:
        with self.slots.lock:
            self.slots.epoch += 1
            doomed = self.slots.evict_idle("drained")
        self._close(doomed)

    @rule()
    def close(self) -> None:
        with self.slots.lock:
            doomed = self.slots.evict_idle("close()")
        self._close(doomed)

    @rule()
    def shutdown(self) -> None:
        with self.slots.lock:
            self.slots.shut_down()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def size_within_max(self) -> None:
        slots = self.slots
        size = slots.size()
        assert size <= self.allowed, (size, self.allowed)
        self.allowed = max(slots.options.max_connections, min(self.allowed, size))

    @invariant()
    def never_lent_twice(self) -> None:
        held = [id(c) for c in self.held]
        served = [id(w.req.conn) for w in self.waiting if w.req.conn is not None]
        assert len(set(held + served)) == len(held) + len(served)
        idle = {id(c) for c in self.slots.idle}
        assert not idle & set(held + served)
        assert len(self.slots.in_use) == len(held) + len(served)

    @invariant()
    def waiters_served_in_arrival_order(self) -> None:
        served = [w.req.conn is not None or w.req.slot or w.req.error is not None for w in self.waiting]
        assert served == sorted(served, reverse=True), "a later waiter was served before an earlier one"
        queued = [w.req for w in self.waiting if not (w.req.conn is not None or w.req.slot or w.req.error)]
        assert list(self.slots.waiters) == queued

    @invariant()
    def borrows_balance(self) -> None:
        c = self.slots.counters
        assert c.borrows == c.returns + len(self.slots.in_use) + c.reclaimed

    @invariant()
    def nothing_lost(self) -> None:
        slots = self.slots
        open_conns = {id(c) for c in self.conns if c.open}
        accounted = {id(c) for c in slots.idle} | {id(c) for c in self.held}
        accounted |= {id(w.req.conn) for w in self.waiting if w.req.conn is not None}
        assert open_conns == accounted
        assert not slots.closing  # every step closes what it doomed
        assert slots.connecting == sum(1 for w in self.waiting if w.req.slot)


TestEngineModel = EngineMachine.TestCase
TestEngineModel.settings = settings(RUNS, max_examples=300, stateful_step_count=50)


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt."""


class PoolMachine(RuleBasedStateMachine):
    """The whole pool over fakeredis: borrow, return and misuse it at random."""

    def __init__(self) -> None:
        super().__init__()
        self.server = fakeredis.FakeServer()
        self.pool = redispool.ConnectionPool(
            connection_class=FakeConnection,
            server=self.server,
            max_connections=3,
            timeout=0,  # never queue: every outcome is decided at once, not by the clock
            fail_fast_after=None,  # no clock-driven circuit: runs must replay exactly
            ping_after_idle=None,
        )
        self.other = redispool.ConnectionPool(connection_class=FakeConnection, server=self.server)
        self.held: list[Any] = []
        self.released: list[Any] = []
        self.allowed = 3
        self.interrupt_next = False
        original = self.pool._check_out

        def check_out(conn: Any, deadline: float | None = None) -> str | None:
            if self.interrupt_next:
                self.interrupt_next = False
                raise Interrupt
            return original(conn, deadline)

        self.pool._check_out = check_out  # type: ignore[method-assign]

    def teardown(self) -> None:
        self.pool.shutdown()
        self.other.shutdown()

    @rule(interrupt=st.booleans())
    def borrow(self, interrupt: bool, timeout: float = 0) -> None:
        self.interrupt_next = interrupt
        try:
            conn = self.pool.acquire(timeout)
        except (redispool.errors.PoolError, redis.ConnectionError, Interrupt):
            return
        finally:
            self.interrupt_next = False
        assert all(conn is not c for c in self.held), "lent twice"
        self.held.append(conn)

    @rule(dirty=st.booleans(), which=st.integers(0, 10))
    @precondition(lambda self: self.held)
    def release(self, dirty: bool, which: int) -> None:
        conn = self.held.pop(which % len(self.held))
        if dirty:
            conn.send_command("PING")  # unread reply: closed on return
        self.pool.release(conn)
        self.released.append(conn)

    @rule(which=st.integers(0, 10))
    @precondition(lambda self: self.released)
    def double_release(self, which: int) -> None:
        conn = self.released[which % len(self.released)]
        if all(conn is not c for c in self.held):
            self.pool.release(conn)

    @rule()
    def foreign_release(self) -> None:
        conn = self.other.acquire()
        self.pool.release(conn)
        self.other.release(conn)

    @rule()
    def failed_connect(self) -> None:
        self.pool.disconnect(inuse_connections=False)
        self.server.connected = False
        try:
            self.borrow(interrupt=False, timeout=0.05)  # a deadline bounds the retries
        finally:
            self.server.connected = True

    @rule(size=st.integers(1, 5))
    def resize(self, size: int) -> None:
        self.pool.resize(max_connections=size)
        self.allowed = max(size, min(self.allowed, self.pool.stats()["size"]))

    @rule()
    def drain(self) -> None:
        self.pool.drain()

    @rule()
    def close(self) -> None:
        self.pool.close()

    @rule()
    def shutdown(self) -> None:
        self.pool.shutdown()

    @rule()
    def fork(self) -> None:
        self.pool.pid = -1  # as in a forked child: the next call starts afresh
        self.pool._checkpid()
        self.held.clear()  # the parent's connections: their returns are ignored
        self.released.clear()
        self.allowed = self.pool.max_connections

    @invariant()
    def invariants(self) -> None:
        stats = self.pool.stats()
        assert stats["size"] <= self.allowed
        self.allowed = max(stats["max"], min(self.allowed, stats["size"]))
        assert stats["borrows"] == stats["returns"] + stats["in_use"] + stats["reclaimed"]
        assert stats["in_use"] == len(self.held)
        assert {id(c) for c in self.pool._in_use_connections} == {id(c) for c in self.held}
        assert not {id(c) for c in self.pool._available_connections} & {id(c) for c in self.held}
        assert stats["connecting"] == stats["closing"] == stats["waiting"] == 0


TestPoolModel = PoolMachine.TestCase
TestPoolModel.settings = settings(RUNS, max_examples=40, stateful_step_count=30)


@pytest.mark.slow
def test_threads_keep_the_invariants() -> None:
    server = fakeredis.FakeServer()
    pool = redispool.ConnectionPool(
        connection_class=FakeConnection, server=server, max_connections=4, timeout=5
    )
    holders: dict[int, int] = {}
    guard = threading.Lock()
    violations: list[str] = []
    peak = [0]

    def work(seed: int) -> None:
        rng = random.Random(seed)
        me = threading.get_ident()
        for _ in range(300):
            try:
                conn = pool.acquire()
            except redispool.PoolTimeout:
                continue
            with guard:
                if id(conn) in holders:
                    violations.append("lent twice")
                holders[id(conn)] = me
                peak[0] = max(peak[0], pool.stats()["size"])
            action = rng.random()
            if action < 0.2:
                conn.send_command("PING")  # dirty
            with guard:
                del holders[id(conn)]
            pool.release(conn)
            if action > 0.97:
                pool.drain()
            elif action > 0.95:
                pool.release(conn)  # a double release

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stats = pool.stats()
    pool.shutdown()
    assert not violations
    assert peak[0] <= 4
    assert stats["in_use"] == stats["connecting"] == stats["closing"] == stats["waiting"] == 0
    assert stats["size"] == stats["idle"] <= 4
    assert stats["borrows"] == stats["returns"] + stats["reclaimed"]
