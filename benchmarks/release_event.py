"""What AfterConnectionReleasedEvent costs on release (issue 10, item 5).

Pools on one server, each borrowing and returning one connection in a loop:

- ``no listener``: redis-py's default dispatcher, whose only listener for the event is its
  re-auth listener; without a streaming credential provider it has nothing to do, so the
  pool dispatches nothing (decided when the pool is built).
- ``listener``: a no-op listener registered with ``register_listeners``: the event is
  built and dispatched on every release.
- ``redis-py``: redis-py's own ``ConnectionPool``, which dispatches on every release.

Reports the CPU time of ``release()`` alone (``time.process_time_ns`` around each call,
clock overhead subtracted, median of interleaved rounds) and, with ``--callgrind``,
valgrind instructions per borrow+return cycle (difference of two run lengths, so start-up
cancels out). Starts its own redis-server on a free loopback port unless ``--url`` is given.

    python benchmarks/release_event.py [--rounds 7] [--ops 20000] [--callgrind]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import redis
from redis.event import AfterConnectionReleasedEvent, EventListenerInterface

import redispool
from redispool._server import RedisServer

MODES = ("no listener", "listener", "redis-py")


class NoOp(EventListenerInterface):  # type: ignore[misc]
    def listen(self, event: Any) -> None:
        pass


def make(mode: str, url: str) -> Any:
    if mode == "redis-py":
        return redis.ConnectionPool.from_url(url)
    pool = redispool.ConnectionPool.from_url(url, ping_after_idle=None)
    if mode == "listener":
        pool._event_dispatcher.register_listeners({AfterConnectionReleasedEvent: [NoOp()]})
    return pool


def release_ns(pool: Any, ops: int) -> float:
    """Median-free mean CPU nanoseconds of one ``release()`` over ``ops`` calls."""
    clock = time.process_time_ns
    total = 0
    for _ in range(ops):
        conn = pool.get_connection()
        started = clock()
        pool.release(conn)
        total += clock() - started
    return total / ops


def clock_overhead_ns(ops: int) -> float:
    clock = time.process_time_ns
    total = 0
    for _ in range(ops):
        started = clock()
        total += clock() - started
    return total / ops


def cycles(pool: Any, ops: int) -> None:
    for _ in range(ops):
        pool.release(pool.get_connection())


def cpu_table(url: str, rounds: int, ops: int) -> None:
    pools = {mode: make(mode, url) for mode in MODES}
    for pool in pools.values():
        cycles(pool, 1000)  # warm: connected, caches hot
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    overhead: list[float] = []
    for _ in range(rounds):  # interleaved, so drift hits every pool alike
        overhead.append(clock_overhead_ns(ops))
        for mode, pool in pools.items():
            samples[mode].append(release_ns(pool, ops))
    clock = statistics.median(overhead)
    base = statistics.median(samples["no listener"]) - clock
    print(f"CPU time of release(), {rounds} rounds x {ops} releases (clock overhead {clock:.0f} ns removed)")
    print()
    print("| pool | CPU per release | vs no listener |")
    print("|---|---:|---:|")
    for mode in MODES:
        value = statistics.median(samples[mode]) - clock
        print(f"| {mode} | {value / 1000:.2f} µs | {value / base:.2f}x |")
    print()


def instructions(mode: str, url: str, ops: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        command += [__file__, "--inner", mode, "--ops", str(ops), "--url", url]
        subprocess.run(command, check=True, capture_output=True)
        with open(out) as profile:
            for line in profile:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def callgrind_table(url: str, short: int, long: int) -> None:
    print(f"valgrind callgrind: instructions per borrow+return cycle ({long} minus {short} cycles)")
    print()
    print("| pool | instructions per cycle | vs no listener |")
    print("|---|---:|---:|")
    per: dict[str, float] = {}
    for mode in MODES:
        per[mode] = (instructions(mode, url, long) - instructions(mode, url, short)) / (long - short)
        print(f"| {mode} | {per[mode]:,.0f} | {per[mode] / per['no listener']:.2f}x |", flush=True)
    print()


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with RedisServer() as private:
        yield private.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="a Redis to use (default: a private redis-server)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--callgrind", action="store_true", help="also count instructions under valgrind")
    parser.add_argument("--inner", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:  # one measured run under valgrind
        pool = make(args.inner, args.url)
        cycles(pool, args.ops)
        return
    with server(args.url) as url:
        print(f"redis-py {redis.__version__}, Python {sys.version.split()[0]}")
        print()
        cpu_table(url, args.rounds, args.ops)
        if args.callgrind:
            callgrind_table(url, 2000, 12000)


if __name__ == "__main__":
    main()
