"""One interleaved comparison of every way to send a GET from synchronous Python.

Paths (see ``_paths.py``): the floor (a raw socket with hiredis's ``pack_command`` and
``Reader``), redis-py's single-connection client, ``redis.Redis()`` with redis-py's pool
(``BlockingConnectionPool`` of 16 when threads share it), ``redis.Redis`` over
``redispool.ConnectionPool``, and ``redispool.Client`` (pools of 16 for the bounded ones).

Wall mode (the default) runs rounds; each round runs every cell once, in an order that
rotates from round to round, so drift and noisy neighbours hit every path alike. A
ratio is computed inside each round and the table shows the median of those per-round
ratios, with client CPU per operation beside wall time. Tables: GET throughput at 1, 16
and 64 threads; a 100-command pipeline; checkout plus return; p50/p99/max GET latency
with 64 threads on 16 connections.

``--callgrind`` counts instructions per GET in the client process instead (valgrind
``--tool=callgrind``: N GETs minus a run with none, divided by N). Those counts barely
move when wall time swings on a shared machine. Run::

    python benchmarks/compare.py                      # ~2 min
    python benchmarks/compare.py --rounds 3 --seconds 0.5
    python benchmarks/compare.py --callgrind          # needs valgrind, ~2 min
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import _paths
from _paths import CLIENT, DROP_IN, FLOOR, NAMES, REDIS_PY, SINGLE

from redispool._server import embedded

POOL = 16
HERE = os.path.dirname(os.path.abspath(__file__))


def run_cell(get: Callable[[Any], Any], threads: int, seconds: float, latencies: list[float] | None) -> Any:
    """``threads`` loops of ``get`` for ``seconds``: (operations, wall s, CPU s)."""
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    counts = [0] * threads
    errors: list[BaseException] = []

    def loop(n: int) -> None:
        key = f"bench:compare:{n % 8}"
        done = 0
        mine: list[float] = []
        clock = time.perf_counter
        start.wait()
        try:
            while not stop.is_set():
                if latencies is None:
                    get(key)
                else:
                    began = clock()
                    get(key)
                    mine.append(clock() - began)
                done += 1
        except BaseException as error:  # reported after the cell, never hidden
            errors.append(error)
        counts[n] = done
        if latencies is not None:
            latencies.extend(mine)  # list.extend is atomic under the GIL

    workers = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began, cpu = time.perf_counter(), time.process_time()
    time.sleep(seconds)  # the measurement window, not synchronisation
    stop.set()
    for worker in workers:
        worker.join()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    if errors:
        raise RuntimeError(f"a cell failed: {errors[0]!r}") from errors[0]
    return sum(counts), wall, cpu


def rotate(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


def median_ratio(rows: list[dict[str, float]], name: str, base: str) -> float:
    return statistics.median(row[name] / row[base] for row in rows)


def throughput(url: str, threads: int, rounds: int, seconds: float) -> None:
    names = list(NAMES) if threads == 1 else [n for n in NAMES if n != SINGLE]
    paths = {name: _paths.FACTORIES[name](url, POOL, threads) for name in names}
    for get, _close in paths.values():  # warm up: open every connection once
        run_cell(get, threads, 0.2, None)
    rate: list[dict[str, float]] = []
    cpu: list[dict[str, float]] = []
    for number in range(rounds):
        rate.append({})
        cpu.append({})
        for name in rotate(names, number):
            ops, wall, used = run_cell(paths[name][0], threads, seconds, None)
            rate[-1][name] = ops / wall
            cpu[-1][name] = used / ops * 1e6
    for _get, close in paths.values():
        close()
    print(f"\n#### GET, {threads} thread{'s' if threads > 1 else ''}\n")
    print(
        "| path | ops/s (median) | x redis-py throughput (higher is better) | x floor time per GET "
        "(lower is better) | client CPU µs/op | x redis-py CPU/op (lower is better) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        ops = statistics.median(r[name] for r in rate)
        print(
            f"| {name} | {ops:,.0f} | {median_ratio(rate, name, REDIS_PY):.2f} "
            f"| {median_ratio(rate, FLOOR, name):.2f} | {statistics.median(c[name] for c in cpu):.1f} "
            f"| {median_ratio(cpu, name, REDIS_PY):.2f} |"
        )
    best = max((n for n in names if n != FLOOR), key=lambda n: median_ratio(rate, n, REDIS_PY))
    print(
        f"\nVerdict: {best} is fastest at {median_ratio(rate, best, REDIS_PY):.2f}x redis-py; "
        f"redispool.Client is {median_ratio(rate, FLOOR, CLIENT):.2f}x the floor's time per GET."
    )


def pipelines(url: str, rounds: int, seconds: float) -> None:
    keys = [f"bench:compare:{n % 8}" for n in range(100)]
    names = [REDIS_PY, CLIENT]
    paths = {name: _paths.pipeline(name, url, POOL) for name in names}
    rate: list[dict[str, float]] = []
    for number in range(rounds):
        rate.append({})
        for name in rotate(names, number):
            run = paths[name][0]
            ops, wall, _cpu = run_cell(lambda _key, run=run: run(keys), 1, seconds, None)
            rate[-1][name] = ops * 100 / wall
    for _run, close in paths.values():
        close()
    print("\n#### 100-command pipeline (GETs, no MULTI), 1 thread\n")
    print("| path | commands/s (median) | x redis-py (higher is better) |")
    print("|---|---:|---:|")
    for name in names:
        ops = statistics.median(r[name] for r in rate)
        print(f"| {name} | {ops:,.0f} | {median_ratio(rate, name, REDIS_PY):.2f} |")
    ratio = median_ratio(rate, CLIENT, REDIS_PY)
    print(f"\nVerdict: redispool.Client's pipeline runs at {ratio:.2f}x redis-py's.")


def checkouts(url: str, rounds: int, seconds: float) -> None:
    names = [_paths.CHECKOUT_REDIS, _paths.CHECKOUT_BLOCKING, _paths.CHECKOUT_REDISPOOL]
    paths = {name: _paths.checkout(name, url, POOL) for name in names}
    cost: list[dict[str, float]] = []
    for number in range(rounds):
        cost.append({})
        for name in rotate(names, number):
            once = paths[name][0]
            ops, wall, _cpu = run_cell(lambda _key, once=once: once(), 1, seconds, None)
            cost[-1][name] = wall / ops * 1e6
    for _once, close in paths.values():
        close()
    base = _paths.CHECKOUT_REDIS
    print("\n#### Checkout plus return, 1 thread\n")
    print("| pool | µs per checkout+return (median) | x redis.ConnectionPool (lower is better) |")
    print("|---|---:|---:|")
    for name in names:
        micros = statistics.median(c[name] for c in cost)
        print(f"| {name} | {micros:.2f} | {median_ratio(cost, name, base):.2f} |")
    print(
        f"\nVerdict: redispool's checkout+return costs "
        f"{median_ratio(cost, _paths.CHECKOUT_REDISPOOL, base):.2f}x redis-py's."
    )


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted seconds, in milliseconds."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


def latency(url: str, rounds: int, seconds: float) -> None:
    names = [REDIS_PY, DROP_IN, CLIENT]
    paths = {name: _paths.FACTORIES[name](url, POOL, 64) for name in names}
    for get, _close in paths.values():
        run_cell(get, 64, 0.2, None)
    stats: list[dict[str, tuple[float, float, float, float]]] = []
    for number in range(rounds):
        stats.append({})
        for name in rotate(names, number):
            samples: list[float] = []
            run_cell(paths[name][0], 64, seconds, samples)
            samples.sort()
            stats[-1][name] = (
                quantile(samples, 0.5),
                quantile(samples, 0.99),
                samples[-1] * 1e3,
                statistics.fmean(samples) * 1e3,
            )
    for _get, close in paths.values():
        close()

    def ratio(name: str, index: int) -> float:
        return statistics.median(s[name][index] / s[REDIS_PY][index] for s in stats)

    print("\n#### GET latency, 64 threads on 16 connections\n")
    print(
        "| path | p50 ms | mean ms | p99 ms | max ms | p99 x BlockingConnectionPool (lower is better) "
        "| max x BlockingConnectionPool (lower is better) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        p50, p99, top, mean = (statistics.median(s[name][i] for s in stats) for i in range(4))
        print(
            f"| {name} | {p50:.2f} | {mean:.2f} | {p99:.2f} | {top:.1f} "
            f"| {ratio(name, 1):.2f} | {ratio(name, 2):.2f} |"
        )
    print(
        f"\nVerdict: redispool.Client's p99 is {ratio(CLIENT, 1):.2f}x and its maximum "
        f"{ratio(CLIENT, 2):.2f}x BlockingConnectionPool's. With 64 threads always busy, the mean "
        "is 64 / throughput (Little's law): a fair queue keeps the median near it, an unfair "
        "one buys a low median with a long tail."
    )


# ---------------------------------------------------------------- callgrind

_CHILD = """
import sys
sys.path.insert(0, {here!r})
import _paths
name, count, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if name.startswith("pipeline:"):
    run, close = _paths.pipeline(name[9:], url, 16)
    keys = ["bench:compare:0"] * 100
    step = lambda: run(keys)
elif name.startswith("checkout:"):
    step, close = _paths.checkout(name[9:], url, 16)
else:
    get, close = _paths.FACTORIES[name](url, 16, 1)
    step = lambda: get("bench:compare:0")
for _ in range(50):
    step()
for _ in range(count):
    step()
close()
"""


def instructions(name: str, url: str, count: int) -> float:
    """Instructions per step of ``name``: a run of ``count`` steps minus a run of none."""
    totals = []
    for n in (0, count):
        out = f"/tmp/redispool-callgrind-{os.getpid()}-{n}.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c",
             _CHILD.format(here=HERE), name, str(n), url],
            check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        with open(out) as data:
            heads = ("summary:", "totals:")
            totals.append(next(int(line.split()[1]) for line in data if line.startswith(heads)))
        os.unlink(out)
    return (totals[1] - totals[0]) / count


def callgrind(url: str, count: int) -> None:
    counts = {name: instructions(name, url, count) for name in NAMES}
    print(f"\n#### Instructions per GET (callgrind, client process, {count} GETs minus none)\n")
    print("| path | instructions per GET | x redis-py (lower is better) | x floor |")
    print("|---|---:|---:|---:|")
    for name in NAMES:
        print(
            f"| {name} | {counts[name] / 1000:.1f}k | {counts[name] / counts[REDIS_PY]:.2f} "
            f"| {counts[name] / counts[FLOOR]:.1f} |"
        )
    print(
        f"\nVerdict: redispool.Client spends {counts[CLIENT] / counts[REDIS_PY]:.2f}x redis-py's "
        f"instructions per GET and the drop-in path {counts[DROP_IN] / counts[REDIS_PY]:.2f}x."
    )
    batches = max(20, count // 50)
    pipes = {name: instructions(f"pipeline:{name}", url, batches) / 100 for name in (REDIS_PY, CLIENT)}
    names = [_paths.CHECKOUT_REDIS, _paths.CHECKOUT_BLOCKING, _paths.CHECKOUT_REDISPOOL]
    outs = {name: instructions(f"checkout:{name}", url, count) for name in names}
    print("\n| step | instructions | x redis-py (lower is better) |")
    print("|---|---:|---:|")
    for name, value in pipes.items():
        ratio = value / pipes[REDIS_PY]
        print(f"| one GET in a 100-command pipeline: {name} | {value / 1000:.1f}k | {ratio:.2f} |")
    for name, value in outs.items():
        base = outs[_paths.CHECKOUT_REDIS]
        print(f"| checkout+return: {name} | {value / 1000:.1f}k | {value / base:.2f} |")
    print(
        f"\nVerdict: a pipelined GET costs {pipes[CLIENT] / pipes[REDIS_PY]:.2f}x redis-py's; "
        f"redispool's checkout+return "
        f"{outs[_paths.CHECKOUT_REDISPOOL] / outs[_paths.CHECKOUT_REDIS]:.2f}x redis.ConnectionPool's."
    )


@contextlib.contextmanager
def server_url(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with embedded() as server:
        yield server.url


def machine() -> str:
    import redis

    try:
        import hiredis  # type: ignore[import-not-found,import-untyped,unused-ignore]

        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "no hiredis"
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"Python {sys.version.split()[0]}, redis-py {redis.__version__} ({parser})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="Redis to use (default: a private redis-server)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one cell")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--callgrind", action="store_true", help="count instructions per GET instead")
    parser.add_argument("--count", type=int, default=2000, help="GETs per callgrind run")
    args = parser.parse_args()
    with server_url(args.url) as url:
        import redis

        redis.Redis.from_url(url).set("bench:compare:0", b"x" * 16)
        for n in range(8):
            redis.Redis.from_url(url).set(f"bench:compare:{n}", b"x" * 16)
        print(f"Machine: {machine()}.")
        if args.callgrind:
            callgrind(url, args.count)
            return
        print(f"{args.rounds} rounds x {args.seconds:g} s per cell, order rotating each round.")
        for threads in args.threads:
            throughput(url, threads, args.rounds, args.seconds)
        pipelines(url, args.rounds, args.seconds)
        checkouts(url, args.rounds, args.seconds)
        latency(url, args.rounds, args.seconds)
        print(f"\nLoad average at the end: {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
    main()
