"""The measurement engine behind ``redispool bench`` and ``redispool size``.

One *segment* runs one workload through one candidate pool with a fixed number of
threads and returns raw samples: commands done, round-trip latencies, acquire waits
(recorded by the wrappers :mod:`redispool.cli.candidates` puts on every pool alike),
connections opened and errors.

Edge behaviour: errors raised by commands (``PoolTimeout``, redis-py's "Too many
connections", connection errors) are counted by class name and the thread carries on;
a segment never raises for them. Setting :attr:`Control.stop` makes every worker
finish its current command and return, which is how Ctrl-C stops a run quickly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from .candidates import Counter, build_client, close_client, instrument, samples, split_url


@dataclasses.dataclass(frozen=True)
class Workload:
    """What each worker thread does, identical for every candidate."""

    get_ratio: float = 0.9  # fraction of GETs; the rest are SETs
    value_size: int = 100  # bytes per SET value (and so per GET reply)
    pipeline: int = 1  # commands per round trip; 1 means no pipeline
    duration: float | None = 0.5  # seconds per segment, or None to run `ops` instead
    ops: int | None = None  # commands per segment, shared by the threads
    keys: int = 1000  # distinct keys touched, all under one unique prefix
    timeout: float = 10.0  # acquire timeout for the pools that have one


@dataclasses.dataclass
class Control:
    """Shared between the driver and the workers of a run."""

    stop: bool = False  # set on Ctrl-C: workers finish the command in hand and return


@dataclasses.dataclass
class Segment:
    """Raw result of one candidate at one thread count for one round."""

    candidate: str
    threads: int
    max_connections: int
    ops: int  # commands that succeeded
    seconds: float  # wall time from the start barrier (after warm-up) to the last worker's end
    cpu: float  # CPU seconds this process used meanwhile, all threads (not the server's)
    latencies: list[float]  # seconds per round trip (one command, or one pipeline)
    waits: list[float]  # seconds spent inside get_connection, per call
    opened: int  # connection objects the pool created
    errors: dict[str, int]  # exception class name -> count


# Seconds an interrupted run waits for each worker to finish its command in hand.
STOP_GRACE = 5.0


def key_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def seed_keys(client: redis.Redis, keys: Sequence[str], value_size: int) -> None:
    """Give every key a value so GETs return real payloads."""
    value = b"x" * value_size
    pipe = client.pipeline(transaction=False)
    for name in keys:
        pipe.set(name, value)
    pipe.execute()


def delete_keys(client: redis.Redis, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@contextlib.contextmanager
def prepared_keys(url: str, workload: Workload) -> Iterator[tuple[list[str], str]]:
    """Seed the workload's keys under a unique prefix; yield them and the server version.

    The keys are deleted afterwards, also after an error or Ctrl-C, so a server the user
    named is left as it was found (nothing else on it is read or written).
    """
    keys = key_names(f"redispool-bench:{uuid.uuid4().hex}:", workload.keys)
    base, _ = split_url(url)
    admin = redis.Redis.from_url(base)
    try:
        version = str(admin.info("server").get("redis_version", "unknown"))
        seed_keys(admin, keys, workload.value_size)
        try:
            yield keys, version
        finally:
            delete_keys(admin, keys)
    finally:
        admin.close()


def run_segment(
    candidate: str,
    url: str,
    workload: Workload,
    threads: int,
    max_connections: int,
    keys: Sequence[str],
    control: Control,
) -> Segment:
    """Run ``workload`` on a fresh pool with ``threads`` workers; close the pool after."""
    client = build_client(candidate, url, max_connections, workload.timeout)
    try:
        opened = instrument(client.connection_pool)
        return _drive(candidate, client, workload, threads, max_connections, keys, control, opened)
    finally:
        close_client(client)


def _drive(
    candidate: str,
    client: Any,
    workload: Workload,
    threads: int,
    max_connections: int,
    keys: Sequence[str],
    control: Control,
    opened: Counter,
) -> Segment:
    per_thread = _split_ops(workload.ops, threads)
    clock: dict[str, float] = {}

    def start_clocks() -> None:
        # Runs once, when every worker has warmed up: the timed part starts here.
        clock["start"] = time.perf_counter()
        clock["cpu"] = time.process_time()
        clock["deadline"] = (
            clock["start"] + workload.duration if workload.duration is not None else float("inf")
        )

    barrier = threading.Barrier(threads + 1, action=start_clocks)
    results: list[tuple[int, list[float], list[float], dict[str, int]]] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        waits: list[float] = []
        try:
            _warm_up(client)
            samples.waits = waits
            barrier.wait()
            outcome = _work(client, workload, keys, per_thread[index], clock["deadline"], control, index)
        except Exception:
            if control.stop:
                return  # the run was aborted under us (barrier broken, pool closed): not news
            raise
        finally:
            samples.waits = None
        with lock:
            results.append((outcome[0], outcome[1], waits, outcome[2]))

    # Daemon threads: even if one never returns, the process can still exit.
    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    try:
        for thread in workers:
            thread.start()
        barrier.wait()
        for thread in workers:
            thread.join()
    except BaseException:
        # Ctrl-C: stop the workers and let them finish the command in hand before the
        # caller closes the pool, so none of them trips over a closed socket.
        control.stop = True
        barrier.abort()
        for thread in workers:
            if thread.ident is not None:  # started
                thread.join(timeout=STOP_GRACE)
        raise
    seconds = time.perf_counter() - clock["start"]
    cpu = time.process_time() - clock["cpu"]
    ops = sum(r[0] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r[3].items():
            errors[name] = errors.get(name, 0) + count
    return Segment(
        candidate=candidate,
        threads=threads,
        max_connections=max_connections,
        ops=ops,
        seconds=seconds,
        cpu=cpu,
        latencies=[x for r in results for x in r[1]],
        waits=[x for r in results for x in r[2]],
        opened=opened.value,
        errors=errors,
    )


def _warm_up(client: Any) -> None:
    """One untimed PING per thread, so the pool's connections exist before timing starts.

    A run then measures the steady state rather than connection set-up, which at 64
    threads would otherwise be a large part of a short run for every pool. Errors
    (redis-py's pool refusing past ``max_connections``) are ignored here.
    """
    with contextlib.suppress(redis.RedisError, OSError):
        client.ping()


def _split_ops(total: int | None, threads: int) -> list[int | None]:
    if total is None:
        return [None] * threads
    base, extra = divmod(total, threads)
    return [base + (1 if i < extra else 0) for i in range(threads)]


def _work(
    client: Any,
    workload: Workload,
    keys: Sequence[str],
    budget: int | None,
    deadline: float,
    control: Control,
    seed: int,
) -> tuple[int, list[float], dict[str, int]]:
    """One worker's loop: round trips until the deadline, the budget or a stop."""
    rng = random.Random(seed)
    value = b"x" * workload.value_size
    depth = workload.pipeline
    ratio = workload.get_ratio
    clock = time.perf_counter
    latencies: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    remaining = float("inf") if budget is None else budget
    while remaining > 0 and not control.stop:
        batch = int(min(depth, remaining))
        names = [rng.choice(keys) for _ in range(batch)]
        gets = [rng.random() < ratio for _ in range(batch)]
        started = clock()
        try:
            if depth == 1:
                if gets[0]:
                    client.get(names[0])
                else:
                    client.set(names[0], value)
            else:
                pipe = client.pipeline(transaction=False)
                for name, is_get in zip(names, gets, strict=True):
                    if is_get:
                        pipe.get(name)
                    else:
                        pipe.set(name, value)
                pipe.execute()
        except (redis.RedisError, OSError) as error:
            kind = type(error).__name__
            errors[kind] = errors.get(kind, 0) + 1
            remaining -= batch
        else:
            ended = clock()
            latencies.append(ended - started)
            done += batch
            remaining -= batch
            if ended >= deadline:
                break
            continue
        if clock() >= deadline:
            break
    return done, latencies, errors
