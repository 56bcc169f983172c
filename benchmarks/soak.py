"""Soak: 64 threads on redispool for a long time, a random real network fault every 30 s.

Needs root, iproute2, iptables and a redis-server (see ``tests/netfault.py``): the
server runs in a network namespace of its own and the faults are iptables rules inside
it, SIGSTOP, restarts and a delaying loopback proxy. Half the threads reach the server
directly over the veth pair, half through the proxy (so latency faults hit them); in each
half, threads alternate between ``redis.Redis`` over the pool and ``redispool.Client``.

It reports the slope (linear fit) of this process's RSS and open file descriptors, the
wrong replies (must be 0), the errors by type, and the pools' ``stats()`` gauges after
the run next to those after the warm-up (no growth allowed). Exit status 1 on a wrong
reply, a pool not at rest, a broken stats invariant, or more open file descriptors at the
end than at the start. To tell a leak from memory the allocator keeps, it also reports
malloc's bytes in use, RSS by region and the second half's RSS slope (docs/reliability.md).

    sudo .venv/bin/python benchmarks/soak.py                   # 10 minutes
    sudo .venv/bin/python benchmarks/soak.py --duration 180    # 3 minutes
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import os
import random
import sys
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

import redispool
from tests.faultload import _Worker, invariant_problem
from tests.netfault import SOAK_FAULTS, Lab, hold_until, prerequisites

GAUGES = ("size", "idle", "in_use", "connecting", "waiting")


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


_MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS.split()]


def heap_in_use_kib() -> int:
    """Bytes glibc's malloc has handed out and not had back (mallinfo2), in KiB: what a
    leak grows. RSS also keeps freed memory the allocator has not returned. 0 if unknown."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return 0
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) // 1024


def rss_by_region() -> dict[str, int]:
    """This process's RSS in KiB by kind of mapping (from /proc/self/smaps), to tell a
    leak from memory that is kept once touched: thread stacks (8 MiB mappings), Python's
    object arenas (1 MiB mappings), malloc's heaps, and files (code, libraries)."""
    regions: collections.Counter[str] = collections.Counter()
    kind = "other"
    size = 0
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                fields = line.split()
                start, end = (int(x, 16) for x in fields[0].split("-"))
                size = (end - start) // 1024
                path = fields[5] if len(fields) > 5 else ""
                if path == "[heap]":
                    kind = "malloc heap"
                elif path.startswith("["):
                    kind = "other"
                elif path:
                    kind = "files"
                elif size == 8192:
                    kind = "thread stacks"
                elif size == 1024:
                    kind = "python arenas"
                else:
                    kind = "malloc heap"  # thread arenas' heaps and large blocks
            elif first == "Rss:":
                regions[kind] += int(line.split()[1])
    return dict(regions)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``points`` (x, y), per unit of x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def make_pool(host: str, port: int, name: str, max_connections: int) -> redispool.ConnectionPool:
    return redispool.ConnectionPool(
        host=host,
        port=port,
        name=name,
        max_connections=max_connections,
        timeout=1.0,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        ping_timeout=0.25,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between faults (default 30)")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring starts")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS/fd samples")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--faults", default=",".join(SOAK_FAULTS), help="comma-separated choice (default: all)"
    )
    parser.add_argument("--direct-only", action="store_true", help="no delaying proxy (and no latency fault)")
    parser.add_argument("--collect", action="store_true", help="gc.collect() before every sample")
    parser.add_argument("--tracemalloc", action="store_true", help="print where memory grew (slow)")
    args = parser.parse_args(argv)
    reason = prerequisites()
    if reason:
        parser.error(reason)
    rng = random.Random(args.seed)
    stop = threading.Event()
    run = f"soak-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with Lab() as lab:
        proxy_host, proxy_port = ("", 0) if args.direct_only else lab.endpoint("latency")
        pools = [make_pool(lab.addr, 6379, "direct", args.threads // 4)]
        if args.direct_only:
            pools.append(make_pool(lab.addr, 6379, "direct-2", args.threads // 4))
        else:
            pools.append(make_pool(proxy_host, proxy_port, "proxied", args.threads // 4))
        choices = tuple(f for f in args.faults.split(",") if not (args.direct_only and f == "latency"))
        clients: list[redis.Redis] = []
        for pool in pools:
            clients += [redis.Redis(connection_pool=pool), redispool.Client(connection_pool=pool)]
        workers = [
            _Worker(i, clients[(i // 2) % 2 + 2 * (i % 2)], run, stop, lab, record=False)
            for i in range(args.threads)
        ]
        faults: list[tuple[float, str]] = []

        def inject_faults() -> None:
            while not stop.wait(args.interval):
                fault = rng.choice(choices)
                start, end = lab.inject(fault, hold=hold_until(stop))
                faults.append((start - began, fault))
                print(f"  t={start - began:6.1f}s {fault} ({end - start:.1f}s)", flush=True)

        began = time.monotonic()
        for worker in workers:
            worker.start()
        print(
            f"soak: {args.threads} threads, {args.duration:.0f}s, a fault every {args.interval:.0f}s",
            flush=True,
        )
        stop.wait(args.warmup)
        if args.tracemalloc:
            tracemalloc.start(8)
            first = tracemalloc.take_snapshot()
        after_warmup = [{k: pool.stats()[k] for k in GAUGES} for pool in pools]
        injector = threading.Thread(target=inject_faults, daemon=True)
        injector.start()
        samples: list[tuple[float, int, int]] = []
        heap: list[int] = []  # malloc's bytes in use: a leak grows it, allocator caching does not
        regions = [rss_by_region()]
        blocks: list[int] = []  # Python's allocated blocks: RSS growth without it is the allocator
        end = began + args.warmup + args.duration
        while not stop.is_set() and time.monotonic() < end:
            if args.collect:
                gc.collect()
            samples.append((time.monotonic() - began, rss_kib(), open_fds()))
            blocks.append(sys.getallocatedblocks())
            heap.append(heap_in_use_kib())
            stop.wait(min(args.sample, max(0.0, end - time.monotonic())))
        if args.tracemalloc:
            grown = tracemalloc.take_snapshot().compare_to(first, "traceback")
            live = [o for o in gc.get_objects() if isinstance(o, redis.connection.AbstractConnection)]
            print(
                f"live connection objects: {len(live)} (pools hold {sum(p.stats()['size'] for p in pools)})"
            )
            referrers = collections.Counter(
                type(r).__name__ for c in live for r in gc.get_referrers(c) if r is not live
            )
            print(f"  referred to by: {dict(referrers.most_common(8))}")
        stop.set()
        injector.join(timeout=30)
        for worker in workers:
            worker.join(timeout=30)
        samples.append((time.monotonic() - began, rss_kib(), open_fds()))
        regions.append(rss_by_region())
        lab.heal()
        # Connections a fault broke are closed when next checked out or returned; the
        # pools are at rest once every worker has stopped.
        final = [pool.stats() for pool in pools]
        problems = [p for p in (invariant_problem(pool) for pool in pools) if p]
        for pool in pools:
            pool.shutdown()
    calls = sum(w.count for w in workers)
    wrong = [text for w in workers for text in w.wrong]
    late = sum(len(w.late) for w in workers)
    errors: collections.Counter[str] = collections.Counter()
    for w in workers:
        errors.update(w.error_counts)
    minutes = [(t / 60, rss) for t, rss, _ in samples]
    fds = [(t / 60, fd) for t, _, fd in samples]
    print()
    print(f"calls {calls}, wrong replies {len(wrong)}, late writes {late}, faults {len(faults)}")
    print(f"faults: {dict(collections.Counter(f for _, f in faults))}")
    print(f"errors: {dict(errors.most_common())}")
    print(
        f"RSS: {samples[0][1] / 1024:.1f} MiB -> {samples[-1][1] / 1024:.1f} MiB, "
        f"slope {slope(minutes) / 1024:+.3f} MiB/min over {len(samples)} samples"
    )
    half = [(t, rss) for t, rss in minutes if t >= minutes[-1][0] / 2]
    print(
        f"RSS slope over the second half: {slope(half) / 1024:+.3f} MiB/min "
        "(memory touched once, by the first faults, stays resident: see the regions below)"
    )
    print("RSS by region, MiB, after the warm-up -> at the end:")
    for region in sorted(set(regions[0]) | set(regions[1])):
        before, after = regions[0].get(region, 0) / 1024, regions[1].get(region, 0) / 1024
        print(f"  {region:14} {before:6.1f} -> {after:6.1f} ({after - before:+.1f})")
    print(f"open fds: {samples[0][2]} -> {samples[-1][2]}, slope {slope(fds):+.3f} fds/min")
    for pool, start, stats in zip(pools, after_warmup, final, strict=True):
        end_gauges = {k: stats[k] for k in GAUGES}
        print(f"pool {pool.name}: gauges under load after warm-up {start}; after the run {end_gauges}")
        counters: dict[str, Any] = {
            k: stats[k] for k in ("borrows", "returns", "reclaimed", "connects", "timeouts", "health_ping")
        }
        print(f"  counters {counters}")
        if end_gauges["size"] > stats["max"]:
            problems.append(f"pool {pool.name}: size {end_gauges['size']} above max {stats['max']}")
    print("RSS MiB every sample: " + " ".join(f"{rss / 1024:.1f}" for _, rss, _ in samples))
    print(f"threads alive at the end: {threading.active_count()}")
    block_slope = slope([(t / 60, b) for (t, _, _), b in zip(samples, blocks, strict=False)])
    print(f"Python allocated blocks: {blocks[0]} -> {blocks[-1]}, slope {block_slope:+.0f}/min")
    heap_slope = slope([(t / 60, h) for (t, _, _), h in zip(samples, heap, strict=False)])
    print(
        f"malloc in use: {heap[0] / 1024:.1f} MiB -> {heap[-1] / 1024:.1f} MiB, "
        f"slope {heap_slope / 1024:+.3f} MiB/min"
    )
    print("malloc in use MiB every sample: " + " ".join(f"{h / 1024:.1f}" for h in heap))
    if args.tracemalloc:
        for stat in grown[:8]:
            print(f"grew {stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks):")
            for line in stat.traceback.format()[-8:]:
                print(f"    {line}")
    if samples[-1][2] > samples[0][2]:
        problems.append(f"open file descriptors grew: {samples[0][2]} -> {samples[-1][2]}")
    for text in wrong[:5]:
        print(f"WRONG: {text}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if wrong or problems else 0


if __name__ == "__main__":
    sys.exit(main())
