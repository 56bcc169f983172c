"""An asynchronous exception at every step of acquire and release loses nothing.

A KeyboardInterrupt (or any exception ``PyThreadState_SetAsyncExc`` delivers) can land
between any two lines. For each scenario below, the test runs it once per line the
pool's own code executes, and at the n-th line event delivers an exception to the
running thread (``sys.settrace`` to find the line, ``PyThreadState_SetAsyncExc`` to
raise it there). After each run it checks that no slot is lost: nothing stays
connecting, closing, in use or queued, every slot still counted is an idle
connection, and ``max_connections`` borrows succeed at once.

Lines run while this thread holds the lock in question are skipped. They hold no
blocking call, Python gives no way to defer an asynchronous exception across them, and
among them is the line event a ``with`` block reports just before it calls
``__exit__``: an exception raised from a tracer there skips the release, which a real
asynchronous exception cannot do on Python 3.11+ (it is only checked after calls).
"""

from __future__ import annotations

import ctypes
import gc
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import redispool
from redispool import _maintenance

from .support import wait_until

MAX = 2
PACKAGE = str(Path(redispool.__file__).parent)


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt without stopping pytest."""


def _deliver(thread_id: int) -> None:
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(Interrupt))
    assert done == 1


def _in_finalizer(frame: FrameType | None) -> bool:
    """True inside a ``__del__`` or a weakref callback (garbage collection runs them)."""
    while frame is not None:
        if frame.f_code.co_name in ("__del__", "lost"):
            return True
        frame = frame.f_back
    return False


def interrupted_at(step: int, run: Callable[[], None], lock: Any) -> bool:
    """Run ``run`` with an exception delivered at its ``step``-th line in redispool
    (lines where this thread holds ``lock`` do not count). True if it was delivered."""
    seen = [0]
    fired = [False]
    me = threading.get_ident()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and not fired[0] and not lock._is_owned():
            if seen[0] + 1 == step and _in_finalizer(frame):
                return local  # an exception there is only printed: not an interrupt of the caller
            seen[0] += 1
            if seen[0] == step:
                fired[0] = True
                _deliver(me)  # raised at this thread's next check, right here
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(PACKAGE) else None

    sys.settrace(tracer)
    try:
        run()
    except Interrupt:
        pass
    finally:
        sys.settrace(None)
    return fired[0]


def assert_nothing_lost(pool: redispool.ConnectionPool, step: int) -> None:
    # An interrupt that lands before release() starts leaves the connection with its
    # caller, as one in the caller's own finally block would: it is reclaimed once
    # the caller drops it.
    pool.run_maintenance()
    if pool.stats()["in_use"]:
        gc.collect()
        pool.run_maintenance()
    stats = pool.stats()
    where = f"after an interrupt at line {step}: {stats}"
    assert stats["connecting"] == 0, where
    assert stats["closing"] == 0, where
    assert stats["in_use"] == 0, where
    assert stats["waiting"] == 0, where
    assert stats["size"] == stats["idle"] <= MAX, where
    held = [pool.acquire(timeout=2) for _ in range(MAX)]
    assert len({id(c) for c in held}) == MAX
    for conn in held:
        pool.release(conn)
    assert pool.stats()["size"] == MAX


@pytest.fixture
def pool(redis_url: str, make_pool: Callable[..., redispool.ConnectionPool]) -> redispool.ConnectionPool:
    return make_pool(redis_url, max_connections=MAX, timeout=5, ping_after_idle=None, min_idle=0)


def _use(pool: redispool.ConnectionPool, send: Callable[[Any], None] | None = None) -> None:
    conn = pool.acquire()
    try:
        if send is not None:
            send(conn)
    finally:
        pool.release(conn)


def _warm(pool: redispool.ConnectionPool) -> None:
    held = [pool.acquire() for _ in range(MAX)]
    for conn in held:
        pool.release(conn)


def _select(conn: Any) -> None:
    conn.send_command("SELECT", 1)
    conn.read_response()


def _break_idle(pool: redispool.ConnectionPool) -> None:
    for conn in pool._available_connections:
        conn._sock.shutdown(socket.SHUT_RDWR)  # the checkout probe finds EOF


SCENARIOS: dict[
    str, tuple[Callable[[redispool.ConnectionPool], None], Callable[[redispool.ConnectionPool], None]]
] = {
    # name: (set-up before the run, the interrupted run)
    "idle checkout, clean return": (_warm, lambda p: _use(p)),
    "connect, clean return": (lambda p: p.disconnect(), lambda p: _use(p)),
    "dirty return": (_warm, lambda p: _use(p, lambda c: c.send_command("PING"))),
    "session reset at checkout": (lambda p: (_warm(p), _use(p, _select)), lambda p: _use(p)),
    "failed probe, reconnect": (lambda p: (_warm(p), _break_idle(p)), lambda p: _use(p)),
    "PING after idle": (_warm, lambda p: _use(p)),
}


def _scenario_ids() -> Iterator[str]:
    yield from SCENARIOS


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_scenario_ids()))
def test_interrupt_at_every_line_loses_no_slot(pool: redispool.ConnectionPool, name: str) -> None:
    setup, run = SCENARIOS[name]
    if name == "PING after idle":
        pool = redispool.ConnectionPool(**{**pool.connection_kwargs}, max_connections=MAX, ping_after_idle=0)
    try:
        step = 0
        while True:
            step += 1
            setup(pool)
            if not interrupted_at(step, lambda: run(pool), pool._lock):
                break  # the run finished before the step-th line: every line was covered
            assert_nothing_lost(pool, step)
        assert step > 20, f"only {step} lines seen: the tracer did not follow the pool"
    finally:
        if name == "PING after idle":
            pool.shutdown()


def test_interrupt_while_waiting_passes_the_handoff_on(pool: redispool.ConnectionPool) -> None:
    step = 0
    while True:
        step += 1
        pool.disconnect()
        box = [pool.acquire()]  # the helper returns it while we wait; we keep no reference
        others = [pool.acquire() for _ in range(MAX - 1)]
        finished = threading.Event()

        def hand_back(box: list[Any] = box, finished: threading.Event = finished) -> None:
            wait_until(lambda: pool.stats()["waiting"] == 1 or finished.is_set(), timeout=5)
            pool.release(box.pop())

        helper = threading.Thread(target=hand_back)
        helper.start()
        fired = interrupted_at(step, lambda: _use(pool), pool._lock)
        finished.set()
        helper.join(10)
        for conn in others:
            pool.release(conn)
        del others
        if not fired:
            break
        assert_nothing_lost(pool, step)
    assert step > 20


def test_interrupt_in_register_and_wake_leaves_no_lock_held(
    pool: redispool.ConnectionPool,
) -> None:
    maintainer = _maintenance.maintainer
    step = 0
    while True:
        step += 1

        def run() -> None:
            maintainer.register(pool)
            maintainer.wake()

        fired = interrupted_at(step, run, maintainer._lock)
        # Another thread can take the registry lock and wake the thread at once.
        done = threading.Event()

        def again(done: threading.Event = done) -> None:
            maintainer.register(pool)
            maintainer.wake()
            done.set()

        threading.Thread(target=again).start()
        assert done.wait(5), "register()/wake() blocked after an interrupt"
        if not fired:
            break
    assert step > 3
    wait_until(maintainer.is_running)
