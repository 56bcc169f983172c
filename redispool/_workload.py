"""The measurement engine behind ``redispool bench`` and ``redispool size``.

One *segment* runs one workload through one candidate pool with a fixed number of
threads and returns raw samples. Every candidate is instrumented the same way: its
pool's ``get_connection`` and ``make_connection`` are shadowed on the instance by
timing/counting wrappers, so "acquire wait" means the time spent inside
``get_connection`` (queueing, health checks and connecting) for every pool alike.

Edge behaviour: errors raised by commands (``PoolTimeout``, redis-py's "Too many
connections", connection errors) are counted by class name and the thread carries on;
a segment never raises for them. Setting :attr:`Control.stop` makes every worker
finish its current command and return, which is how Ctrl-C stops a run quickly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

import redispool

from ._options import OPTION_NAMES

# Short names used on the command line, in the table and in the JSON output.
REDIS_PY = "redis-py"
REDIS_PY_BLOCKING = "redis-py-blocking"
REDISPOOL = "redispool"
CLIENT = "redispool-client"

LABELS = {
    REDIS_PY: "redis-py ConnectionPool",
    REDIS_PY_BLOCKING: "redis-py BlockingConnectionPool",
    REDISPOOL: "redispool.ConnectionPool",
    CLIENT: "redispool.Client",
}


def available_candidates() -> list[str]:
    """Every candidate this install can run; ``redispool.Client`` only once it exists."""
    names = [REDIS_PY, REDIS_PY_BLOCKING, REDISPOOL]
    if hasattr(redispool, "Client"):
        names.append(CLIENT)
    return names


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
    seconds: float  # wall time from the start barrier to the last worker's end
    latencies: list[float]  # seconds per round trip (one command, or one pipeline)
    waits: list[float]  # seconds spent inside get_connection, per call
    opened: int  # connection objects the pool created
    errors: dict[str, int]  # exception class name -> count


# Seconds an interrupted run waits for each worker to finish its command in hand.
STOP_GRACE = 5.0

# The calling thread's acquire-wait list, filled by the get_connection wrapper.
_samples = threading.local()


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Remove redispool's own options from a URL's query string; return both parts.

    redis-py's pools reject query parameters they do not know, so the URL given to
    them must not carry ``max_idle`` and friends; redispool's pools get them back.
    """
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in OPTION_NAMES}
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in OPTION_NAMES])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), own


def build_client(candidate: str, url: str, max_connections: int, timeout: float) -> redis.Redis:
    """A ``redis.Redis`` (or ``redispool.Client``) over a fresh, instrumented pool."""
    base, own = split_url(url)
    options: dict[str, Any] = {**own, "max_connections": max_connections}
    client: redis.Redis
    if candidate == REDIS_PY:
        client = redis.Redis(
            connection_pool=redis.ConnectionPool.from_url(base, max_connections=max_connections)
        )
    elif candidate == REDIS_PY_BLOCKING:
        pool = redis.BlockingConnectionPool.from_url(base, max_connections=max_connections, timeout=timeout)
        client = redis.Redis(connection_pool=pool)
    elif candidate == REDISPOOL:
        options.setdefault("timeout", timeout)
        client = redis.Redis(connection_pool=redispool.ConnectionPool.from_url(base, **options))
    elif candidate == CLIENT:
        options.setdefault("timeout", timeout)
        client = redispool.Client.from_url(base, **options)
    else:
        raise ValueError(f"unknown candidate {candidate!r}; choose from {', '.join(LABELS)}")
    return client


def close_client(client: redis.Redis) -> None:
    """Close the client and its pool; redispool's pools are shut down for good."""
    pool = client.connection_pool
    try:
        client.close()
    finally:
        shutdown = getattr(pool, "shutdown", None)
        if shutdown is not None:
            shutdown()
        else:
            pool.disconnect()


class Counter:
    """Connections created by one pool; ``+=`` on an int is atomic enough under the GIL
    for a tally that only one side reads after the workers have joined."""

    def __init__(self) -> None:
        self.value = 0


def instrument(pool: Any) -> Counter:
    """Shadow ``get_connection``/``make_connection`` on this pool instance.

    Both wrappers are plain closures so their overhead is the same for every pool.
    """
    opened = Counter()
    inner_get: Callable[..., Any] = pool.get_connection
    inner_make: Callable[[], Any] = pool.make_connection
    clock = time.perf_counter

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        conn = inner_get(*args, **kwargs)
        waits = getattr(_samples, "waits", None)
        if waits is not None:
            waits.append(clock() - start)
        return conn

    def make_connection() -> Any:
        conn = inner_make()  # redis-py's raises "Too many connections" here: not an opening
        opened.value += 1
        return conn

    pool.get_connection = get_connection
    pool.make_connection = make_connection
    return opened


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
    client: redis.Redis,
    workload: Workload,
    threads: int,
    max_connections: int,
    keys: Sequence[str],
    control: Control,
    opened: Counter,
) -> Segment:
    per_thread = _split_ops(workload.ops, threads)
    barrier = threading.Barrier(threads + 1)
    results: list[tuple[int, list[float], list[float], dict[str, int]]] = []
    lock = threading.Lock()
    deadline_box: list[float] = []

    def worker(index: int) -> None:
        waits: list[float] = []
        _samples.waits = waits
        try:
            barrier.wait()
            outcome = _work(client, workload, keys, per_thread[index], deadline_box[0], control, index)
        except Exception:
            if control.stop:
                return  # the run was aborted under us (barrier broken, pool closed): not news
            raise
        finally:
            _samples.waits = None
        with lock:
            results.append((outcome[0], outcome[1], waits, outcome[2]))

    # Daemon threads: even if one never returns, the process can still exit.
    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    start = time.perf_counter()
    deadline_box.append(start + workload.duration if workload.duration is not None else float("inf"))
    try:
        barrier.wait()
        for thread in workers:
            thread.join()
    except BaseException:
        # Ctrl-C: stop the workers and let them finish the command in hand before the
        # caller closes the pool, so none of them trips over a closed socket.
        control.stop = True
        barrier.abort()
        for thread in workers:
            thread.join(timeout=STOP_GRACE)
        raise
    seconds = time.perf_counter() - start
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
        latencies=[x for r in results for x in r[1]],
        waits=[x for r in results for x in r[2]],
        opened=opened.value,
        errors=errors,
    )


def _split_ops(total: int | None, threads: int) -> list[int | None]:
    if total is None:
        return [None] * threads
    base, extra = divmod(total, threads)
    return [base + (1 if i < extra else 0) for i in range(threads)]


def _work(
    client: redis.Redis,
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


def checkout_cost(candidate: str, url: str, iterations: int) -> float:
    """Seconds per ``get_connection()`` + ``release()`` with no command, one thread.

    The first checkout opens the connection and a short warm-up follows; neither is
    timed. The pool is built exactly as for the workload, without instrumentation.
    """
    client = build_client(candidate, url, 1, 10.0)
    pool: Any = client.connection_pool
    try:
        get = _plain_get_connection(pool)
        release = pool.release
        for _ in range(min(iterations, 200)):
            release(get())
        clock = time.perf_counter
        start = clock()
        for _ in range(iterations):
            release(get())
        return (clock() - start) / iterations
    finally:
        close_client(client)


def _plain_get_connection(pool: Any) -> Callable[[], Any]:
    """``pool.get_connection`` callable with no arguments on every redis-py >= 5.

    redis-py < 5.3 requires a command name; >= 5.3 warns if one is passed.
    """
    parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    if parameter is not None and parameter.default is inspect.Parameter.empty:
        return lambda: pool.get_connection("PING")
    return pool.get_connection  # type: ignore[no-any-return]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print or log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.netloc.rsplit('@', 1)[1]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
