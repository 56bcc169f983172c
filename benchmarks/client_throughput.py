"""GET/SET throughput of redispool.Client against redis.Redis over redis.ConnectionPool.

Both clients talk to the same server (a private redis-server unless ``--url`` is given),
with the same pool size and protocol. For each thread count every thread runs
``SET key value`` then ``GET key`` on its own key in a loop for ``--seconds``; each
reply counts as one operation. Cells are interleaved (rounds x thread counts x both
clients, alternating which goes first, in short cells) so a noisy neighbour hurts both
alike, and the table reports total operations over total time per cell. Run::

    python benchmarks/client_throughput.py                # ~35 s
    python benchmarks/client_throughput.py --seconds 1 --rounds 2 --threads 1 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis

import redispool
from redispool._server import embedded


def run_cell(client: Any, threads: int, seconds: float, tag: str) -> tuple[int, float, float]:
    """Run ``threads`` SET/GET loops on ``client`` for ``seconds``.

    Returns (operations, wall seconds, CPU seconds this process spent in all threads)."""
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    counts = [0] * threads
    errors: list[BaseException] = []

    def loop(n: int) -> None:
        key = f"bench:{tag}:{n}"
        value = b"x" * 16
        done = 0
        start.wait()
        try:
            while not stop.is_set():
                client.set(key, value)
                client.get(key)
                done += 2
        except BaseException as error:  # report it after the cell, never hide it
            errors.append(error)
        counts[n] = done

    workers = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    cpu = time.process_time()
    time.sleep(seconds)  # the measurement window itself, not synchronisation
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    if errors:
        raise RuntimeError(f"{tag} with {threads} threads failed: {errors[0]!r}") from errors[0]
    return sum(counts), elapsed, cpu


def machine_note(url: str) -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = redis.Redis.from_url(url)
    try:
        version = server.info("server")["redis_version"]
    finally:
        server.close()
    try:
        import hiredis  # type: ignore[import-not-found,import-untyped,unused-ignore]

        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "pure-Python parser"
    load = ""
    with contextlib.suppress(OSError):
        load = f", load average {os.getloadavg()[0]:.2f} at start"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}){load}; "
        f"Python {platform.python_version()}, redis-py {redis.__version__} ({parser}), "
        f"tenacity, redis-server {version} on loopback"
    )


@contextlib.contextmanager
def server_url(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with embedded() as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="Redis to use (default: a private redis-server)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one cell")
    parser.add_argument("--rounds", type=int, default=8, help="times each cell is run")
    parser.add_argument("--protocol", type=int, choices=(2, 3), default=None)
    parser.add_argument("--verbose", action="store_true", help="print every cell")
    args = parser.parse_args()

    with server_url(args.url) as url:
        size = max(args.threads)
        extra: dict[str, Any] = {} if args.protocol is None else {"protocol": args.protocol}
        plain = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, max_connections=size, **extra))
        ours = redispool.Client.from_url(url, max_connections=size, **extra)
        clients: dict[str, Any] = {"redis.Redis": plain, "redispool.Client": ours}
        totals: dict[tuple[str, int], list[float]] = {}  # ops, wall seconds, CPU seconds
        for client in clients.values():  # warm up: open every connection once
            run_cell(client, size, 0.3, "warmup")
            client.delete(*(f"bench:warmup:{n}" for n in range(size)))
        order = list(clients)
        for round_number in range(args.rounds):
            for threads in args.threads:
                for name in order:
                    ops, elapsed, cpu = run_cell(clients[name], threads, args.seconds, name)
                    cell = totals.setdefault((name, threads), [0.0, 0.0, 0.0])
                    cell[0] += ops
                    cell[1] += elapsed
                    cell[2] += cpu
                    if args.verbose:
                        print(
                            f"round {round_number + 1} {name:16} {threads:3} threads: "
                            f"{ops / elapsed:9.0f} ops/s"
                        )
                order.reverse()  # alternate who goes first
        note = machine_note(url)
        ours.delete(*(f"bench:{name}:{n}" for name in clients for n in range(size)))
        plain.close()
        ours.close()

    def rate(name: str, threads: int) -> float:
        ops, wall, _cpu = totals[(name, threads)]
        return ops / wall

    def cpu_us(name: str, threads: int) -> float:
        ops, _wall, cpu = totals[(name, threads)]
        return cpu / ops * 1e6

    print()
    print(
        "| threads | redis.Redis + redis.ConnectionPool (ops/s) | redispool.Client (ops/s) | ratio "
        "| client CPU µs/op: redis.Redis | redispool.Client |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        base = rate("redis.Redis", threads)
        mine = rate("redispool.Client", threads)
        print(
            f"| {threads} | {base:,.0f} | {mine:,.0f} | {mine / base:.2f} "
            f"| {cpu_us('redis.Redis', threads):.1f} | {cpu_us('redispool.Client', threads):.1f} |"
        )
    print()
    print(f"Machine: {note}. {args.rounds} rounds x {args.seconds:g} s per cell, pool size {size}.")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        print(f"redispool commit {commit}.")


if __name__ == "__main__":
    main()
