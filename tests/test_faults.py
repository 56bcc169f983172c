"""Real network faults (namespaces, veth, iptables, SIGSTOP, restarts, latency) under load.

For each fault in :mod:`tests.netfault`, 32 threads run through ``redis.Redis`` over a
redispool pool and through :class:`redispool.Client`, and the test asserts what users
count on: no wrong reply, every operation ends by its own bound plus 50 ms, no slot is
lost, the stats invariant holds, and latency is back to its baseline within
``ping_timeout`` + 1 s of the fault's end. redis-py's own pool is measured by
``benchmarks/faults_table.py``, not asserted here.

They need root, iproute2 and iptables: without them they skip locally and fail in CI.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

import redispool
from redispool._server import RedisServer

from .faultload import Settings, run_fault
from .netfault import FAULTS, Lab, prerequisites, sweep_stale
from .proxy import DelayProxy
from .support import missing

pytestmark = pytest.mark.timeout(120)


def open_lab() -> Lab:
    """A started lab, or skip (fail under CI) naming what is missing."""
    reason = prerequisites()
    if reason:
        missing(reason)
    made = Lab()
    try:
        return made.open()  # removes what it made if it fails
    except subprocess.CalledProcessError as error:  # e.g. root without CAP_SYS_ADMIN
        missing(f"cannot build the fault lab: {' '.join(error.cmd)}: {error.stderr.strip()}")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    made = open_lab()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def healthy_lab(lab: Lab) -> Iterator[Lab]:
    """The module's lab with no fault left over and a server that answers."""
    lab.heal()
    if lab.process is None or lab.process.poll() is not None:
        lab.start_server()
    yield lab
    lab.heal()


@pytest.mark.parametrize("kind", ["redis", "client"])
@pytest.mark.parametrize("fault", FAULTS)
def test_fault(healthy_lab: Lab, fault: str, kind: str) -> None:
    settings = Settings()
    outcome = run_fault(healthy_lab, kind, fault, settings)
    assert outcome.calls > 1000, outcome  # the load really ran
    assert outcome.wrong == 0, outcome.wrong_examples
    if fault == "none":  # the control: this load alone makes no error
        assert not outcome.errors, dict(outcome.messages)
    assert outcome.worst_overshoot <= outcome.allowance, (outcome.worst_op, f"machine lag {outcome.lag:.3f}s")
    assert outcome.slots_ok, outcome.slots_detail
    assert outcome.invariant == "", outcome.invariant
    windows = [f"+{at:.2f}s n={n} errors={e} p99={p99 * 1000:.0f}ms" for at, n, e, p99 in outcome.windows]
    baseline = f"baseline p99 {outcome.baseline_p99 * 1000:.0f}ms"
    assert outcome.recovery is not None, (baseline, windows)
    assert outcome.recovery <= settings.ping_timeout + 1.0, (baseline, windows)
    assert outcome.errors_after_recovery == 0, (baseline, windows)


def test_lab_cleans_up_after_itself() -> None:
    made = open_lab()
    try:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert made.netns in names
        made.inject("blackhole", hold=lambda seconds: None)
        pid = made.process.pid if made.process else None
        assert pid is not None
    finally:
        made.close()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert made.netns not in names
    assert made.host_if not in links
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert sweep_stale() == []


class UncountedTimeouts(Exception):
    """Callers saw more PoolTimeout than ``stats()["timeouts"]`` reports."""


def test_every_pool_timeout_is_counted(healthy_lab: Lab) -> None:
    outcome = run_fault(healthy_lab, "redis", "slow_handshake")
    seen = outcome.errors["PoolTimeout"]
    assert seen > 0, "the fault raised no PoolTimeout: nothing to count"
    if outcome.stats["timeouts"] != seen:
        raise UncountedTimeouts(
            f"callers saw {seen} PoolTimeout, stats()['timeouts'] says {outcome.stats['timeouts']}: "
            f"{dict(outcome.messages)}"
        )


class HandshakePastDeadline(Exception):
    """An acquire that had to connect ended well after its deadline."""


def test_a_slow_handshake_ends_by_the_acquire_deadline(own_server: RedisServer) -> None:
    # Loopback only, no root: every reply is delayed 150 ms, so the connect's handshake
    # (2 round trips on redis-py 5.x, 4 on 8.x: CLIENT SETINFO, ...) outlasts the 0.2 s
    # acquire timeout although each read alone fits in it.
    # The SYN-drop fault meets the same thing when a caller gets a slot just before its
    # deadline (an acquire of 1.100 s against timeout=1.0 there).
    with DelayProxy("127.0.0.1", own_server.port) as proxy:
        proxy.delay = (0.15, 0.15)
        pool = redispool.ConnectionPool(host="127.0.0.1", port=proxy.port, timeout=0.2, socket_timeout=2.0)
        try:
            start = time.monotonic()
            try:
                conn = pool.acquire()
            except redis.RedisError as error:
                conn = None  # failing in time is fine, as a counted PoolTimeout in the pool's words
                if isinstance(error, redispool.PoolTimeout):
                    assert pool.stats()["timeouts"] == 1 and "(pool 127.0.0.1:" in str(error), error
            took = time.monotonic() - start
            if conn is not None:
                pool.release(conn)
        finally:
            pool.shutdown()
    if took > 0.2 + 0.05:
        raise HandshakePastDeadline(
            f"acquire(timeout=0.2) took {took:.3f}s and {'succeeded' if conn else 'failed'}"
        )
