"""Drive threads through a pool while a fault is injected, and measure what they saw.

Each thread runs ``ECHO token``, ``SET key token`` and ``GET key`` on a key of its own,
with a token unique to the thread and iteration, so every reply has exactly one right
value: any other is a *wrong reply* (another request's answer). Every operation is timed
against its own bound:

- ``acquire`` (the pool's checkout, queueing, health check and connect): ``timeout``;
- ``read``/``send`` of a command on a connection: ``socket_timeout``;
- ``read`` of a pool health or keepalive ``PING``: ``ping_timeout``.

Three kinds of client are driven: ``redis`` (``redis.Redis`` over a redispool pool),
``client`` (:class:`redispool.Client`, with its default retry policy) and ``redis-py``
(``redis.Redis`` over redis-py's own ``BlockingConnectionPool``, measured for
comparison).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
import time
import uuid
from typing import Any

import redis

import redispool

from .netfault import Lab

KINDS = ("redis", "client", "redis-py")
SLACK = 0.05  # the allowed overshoot of any bound, seconds


@dataclasses.dataclass(frozen=True)
class Settings:
    threads: int = 32
    max_connections: int = 16
    timeout: float = 1.0  # acquire
    socket_timeout: float = 0.5
    socket_connect_timeout: float = 0.5
    ping_timeout: float = 0.25
    baseline: float = 1.0  # seconds of load before the fault
    after: float = 2.5  # seconds of load after it

    def bounds(self) -> dict[str, float]:
        return {"acquire": self.timeout, "read": self.socket_timeout, "send": self.socket_timeout,
                "ping": self.ping_timeout, "connect": self.socket_connect_timeout}  # fmt: skip


class Recorder:
    """Per-operation samples: (kind, start, seconds, error name or None, thread id)."""

    def __init__(self) -> None:
        self.ops: collections.deque[tuple[str, float, float, str | None, int]] = collections.deque()
        self.enabled = True

    def add(self, kind: str, start: float, error: BaseException | None) -> None:
        if self.enabled:
            seconds = time.monotonic() - start
            self.ops.append(
                (kind, start, seconds, type(error).__name__ if error else None, threading.get_ident())
            )

    def inside(self, start: float, seconds: float, thread: int) -> list[str]:
        """What ``thread`` ran within [start, start + seconds]: where an acquire spent its time."""
        return [
            f"{kind} +{s - start:.3f}s {d:.3f}s {e or 'ok'}"
            for kind, s, d, e, t in self.ops
            if t == thread and start <= s <= start + seconds and kind != "acquire"
        ]


def timed_connection_class(recorder: Recorder) -> type[redis.Connection]:
    class TimedConnection(redis.Connection):
        _last_command: Any = None

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            self._last_command = args[0] if args else None
            super().send_command(*args, **kwargs)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            start = time.monotonic()
            try:
                super().send_packed_command(command, check_health)
            except BaseException as error:
                recorder.add("send", start, error)
                raise
            recorder.add("send", start, None)

        def _connect(self) -> Any:
            start = time.monotonic()
            try:
                sock = super()._connect()  # type: ignore[misc]
            except BaseException as error:
                recorder.add("connect", start, error)
                raise
            recorder.add("connect", start, None)
            return sock

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            kind = "ping" if self._last_command == "PING" else "read"
            start = time.monotonic()
            try:
                reply = super().read_response(*args, **kwargs)
            except BaseException as error:
                recorder.add(kind, start, error)
                raise
            recorder.add(kind, start, None)
            return reply

    return TimedConnection


def _timed_pool_class(base: type[Any], method: str, recorder: Recorder) -> type[Any]:
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            conn = getattr(base, method)(self, *args, **kwargs)
        except BaseException as error:
            recorder.add("acquire", start, error)
            raise
        recorder.add("acquire", start, None)
        return conn

    return type(f"Timed{base.__name__}", (base,), {method: timed})


def make_client(
    kind: str,
    host: str,
    port: int,
    settings: Settings,
    recorder: Recorder,
    ping_after_idle: float | None = 2.0,
) -> redis.Redis:
    connection = {
        "host": host,
        "port": port,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_connect_timeout,
        "connection_class": timed_connection_class(recorder),
    }
    if kind == "redis-py":
        cls = _timed_pool_class(redis.BlockingConnectionPool, "get_connection", recorder)
        bpool = cls(max_connections=settings.max_connections, timeout=settings.timeout, **connection)
        return redis.Redis(connection_pool=bpool)
    cls = _timed_pool_class(redispool.ConnectionPool, "acquire", recorder)
    pool = cls(
        max_connections=settings.max_connections,
        timeout=settings.timeout,
        ping_timeout=settings.ping_timeout,
        ping_after_idle=ping_after_idle,
        **connection,
    )
    if kind == "client":
        return redispool.Client(connection_pool=pool)
    if kind == "redis":
        return redis.Redis(connection_pool=pool)
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")


@dataclasses.dataclass
class Outcome:
    """What one run of ``fault`` on ``kind`` showed."""

    kind: str
    fault: str
    calls: int = 0
    wrong: int = 0
    wrong_examples: list[str] = dataclasses.field(default_factory=list)
    late_writes: int = 0  # GETs that saw a timed-out SET applied after a newer one
    late_examples: list[str] = dataclasses.field(default_factory=list)
    windows: list[tuple[float, int, int, float]] = dataclasses.field(default_factory=list)
    errors_after_recovery: int = 0
    lag: float = 0.0  # worst lateness of a 10 ms timed wait on this machine during the run
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    messages: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)  # redispool's, after the run
    overshoot: dict[str, float] = dataclasses.field(default_factory=dict)  # op kind -> worst seconds
    worst_op: str = ""
    baseline_p99: float = 0.0
    recovery: float | None = None  # seconds after the fault ended; None: never in the run
    slots_ok: bool = False
    slots_detail: str = ""
    invariant: str = ""  # empty when it holds (redispool only)
    gauges: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def worst_overshoot(self) -> float:
        return max(self.overshoot.values(), default=0.0)

    @property
    def allowance(self) -> float:
        """How far past its bound an operation may end: 50 ms plus what the machine itself
        added to a plain timed wait during the run (a loaded CI box delays every wake-up)."""
        return SLACK + self.lag


def error_label(error: BaseException) -> str:
    """The error's type, and for redis-py's pool exhaustion (a bare ConnectionError) a hint."""
    name = type(error).__name__
    if name == "ConnectionError" and "No connection available" in str(error):
        return "ConnectionError (pool exhausted)"
    return name


class _Worker(threading.Thread):
    def __init__(
        self, index: int, client: redis.Redis, run: str, stop: threading.Event, lab: Lab, record: bool = True
    ) -> None:
        super().__init__(daemon=True, name=f"fault-worker-{index}")
        self.record = record  # keep every call's timing; else only the counts below
        self.count = 0
        self.error_counts: collections.Counter[str] = collections.Counter()
        self.client = client
        self.key = f"redispool-fault:{run}:{index}"
        self.prefix = f"{run}:{index}:"
        self.stop = stop
        self.lab = lab
        self.calls: list[tuple[float, float, str | None]] = []  # start, seconds, error
        self.wrong: list[str] = []
        self.late: list[str] = []  # GET saw the value of a SET that failed earlier
        self.failed_sets: set[bytes] = set()
        self.messages: collections.Counter[str] = collections.Counter()  # error label: message

    def _call(self, fn: Any, *args: Any) -> tuple[bool, Any]:
        start = time.monotonic()
        self.count += 1
        try:
            reply = fn(*args)
        except redis.RedisError as error:
            if len(self.messages) < 20:
                self.messages[f"{error_label(error)}: {str(error)[:90]}"] += 1
            if self.record:
                self.calls.append((start, time.monotonic() - start, error_label(error)))
            else:
                self.error_counts[error_label(error)] += 1
            return False, None
        if self.record:
            self.calls.append((start, time.monotonic() - start, None))
        return True, reply

    def run(self) -> None:
        allowed: set[bytes | None] = {None}
        n = 0
        while not self.stop.is_set():
            n += 1
            token = f"{self.prefix}{n}".encode()
            ok, reply = self._call(self.client.echo, token)
            if ok and reply != token:
                self.wrong.append(f"{time.monotonic():.3f} ECHO {token!r} -> {reply!r}")
            ok, reply = self._call(self.client.set, self.key, token)
            if ok and reply is not True:
                self.wrong.append(f"{time.monotonic():.3f} SET {token!r} -> {reply!r}")
            allowed = {token} if ok else allowed | {token}
            if not ok:
                self.failed_sets.add(token)
            ok, reply = self._call(self.client.get, self.key)
            if ok and reply not in allowed and not (reply is None and self.lab.restarts):
                expected = sorted(map(repr, allowed))
                text = f"{time.monotonic():.3f} GET {self.key} -> {reply!r}, expected one of {expected}"
                # A SET that timed out may still reach the server later (TCP retransmits
                # what the closed socket had queued): indeterminate, not another's reply.
                (self.late if reply in self.failed_sets else self.wrong).append(text)
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)


def _lag_probe(stop: threading.Event, lags: list[float]) -> None:
    while not stop.is_set():
        start = time.monotonic()
        stop.wait(0.01)
        lags.append(time.monotonic() - start - 0.01)


def _p99(samples: list[float]) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def baseline_p99(calls: list[tuple[float, float, str | None]], fault_start: float) -> float:
    """The worst p99 of the 250 ms windows before the fault (the first 250 ms excluded:
    connects). A busy machine makes single windows slow; this is what normal looks like."""
    window = 0.25
    first = min((start for start, _, _ in calls), default=fault_start)
    worst = 0.0
    t = first + window
    while t + window <= fault_start:
        inside = [d for s, d, e in calls if t <= s < t + window and s + d < fault_start]
        worst = max(worst, _p99(inside))
        t += window
    return worst


def windows_after(
    calls: list[tuple[float, float, str | None]], end: float, window: float = 0.25
) -> list[tuple[float, int, int, float]]:
    """(seconds after ``end``, calls, errors, p99) of each 250 ms window after ``end``."""
    last_call = max((start for start, _, _ in calls), default=end)
    rows = []
    t = end
    while t + window <= last_call:
        inside = [(d, e) for s, d, e in calls if t <= s < t + window]
        rows.append((t - end, len(inside), sum(1 for _, e in inside if e), _p99([d for d, _ in inside])))
        t += window
    return rows


def recovery_time(
    rows: list[tuple[float, int, int, float]], threshold: float, window: float = 0.25
) -> float | None:
    """Seconds after the fault until two windows in a row (0.5 s) run with no error and
    a p99 at most ``threshold``; None if that never happens in the run. One slow window
    later on is the machine's noise; errors later on are counted by :func:`errors_after`."""
    good = [bool(count) and not errors and p99 <= threshold for _, count, errors, p99 in rows]
    for i in range(len(rows) - 1):
        if good[i] and good[i + 1]:
            return rows[i][0]
    return None


def errors_after(rows: list[tuple[float, int, int, float]], since: float) -> int:
    return sum(errors for at, _, errors, _ in rows if at >= since)


def _borrow(pool: Any) -> Any:
    """``pool.get_connection()``; redis-py 5.x still requires a command name."""
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("PING")


def check_slots(client: redis.Redis, settings: Settings) -> tuple[bool, str]:
    """``max_connections`` borrows at once must all succeed, quickly; all are returned."""
    pool = client.connection_pool
    held: list[Any] = []
    start = time.monotonic()
    try:
        for _ in range(settings.max_connections):
            if isinstance(pool, redispool.ConnectionPool):
                held.append(pool.acquire(timeout=settings.timeout))
            else:
                held.append(_borrow(pool))
    except redis.RedisError as error:
        return False, f"borrow {len(held) + 1} of {settings.max_connections} failed: {error!r}"
    finally:
        for conn in held:
            pool.release(conn)
    took = time.monotonic() - start
    return True, f"{settings.max_connections} borrows in {took:.3f}s"


def invariant_problem(pool: redispool.ConnectionPool) -> str:
    stats = pool.stats()
    if stats["borrows"] != stats["returns"] + stats["in_use"] + stats["reclaimed"]:
        return f"borrows != returns + in_use + reclaimed: {stats}"
    if stats["in_use"] or stats["waiting"] or stats["connecting"]:
        at_rest = {key: stats[key] for key in ("in_use", "waiting", "connecting")}
        return f"gauges not at rest: {at_rest}"
    if stats["size"] > stats["max"]:
        return f"size {stats['size']} > max {stats['max']}"
    return ""


def run_fault(lab: Lab, kind: str, fault: str, settings: Settings | None = None) -> Outcome:
    """Run ``settings.threads`` workers on ``kind`` through ``fault``; measure everything."""
    settings = settings or Settings()
    recorder = Recorder()
    host, port = lab.endpoint(fault)
    client = make_client(kind, host, port, settings, recorder)
    outcome = Outcome(kind, fault)
    stop = threading.Event()
    run = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    workers = [_Worker(i, client, run, stop, lab) for i in range(settings.threads)]
    lags: list[float] = []
    probe = threading.Thread(target=_lag_probe, args=(stop, lags), daemon=True)
    try:
        client.ping()
        probe.start()
        for worker in workers:
            worker.start()
        time.sleep(settings.baseline)  # the load runs for this long: it is the measurement
        fault_start, fault_end = lab.inject(fault)
        time.sleep(settings.after)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        recorder.enabled = False
        calls = [call for worker in workers for call in worker.calls]
        outcome.calls = len(calls)
        outcome.wrong_examples = [w for worker in workers for w in worker.wrong][:5]
        outcome.wrong = sum(len(worker.wrong) for worker in workers)
        outcome.late_examples = [w for worker in workers for w in worker.late][:5]
        outcome.late_writes = sum(len(worker.late) for worker in workers)
        probe.join()
        outcome.lag = max(lags, default=0.0)
        outcome.errors.update(error for _, _, error in calls if error)
        for worker in workers:
            outcome.messages.update(worker.messages)
        bounds = settings.bounds()
        for op, began, seconds, error, thread in recorder.ops:
            over = seconds - bounds[op]
            if over > outcome.overshoot.get(op, -1.0):
                outcome.overshoot[op] = over
                if over >= outcome.worst_overshoot:
                    steps = "; ".join(recorder.inside(began, seconds, thread)) if op == "acquire" else ""
                    outcome.worst_op = (
                        f"{op} took {seconds:.3f}s (bound {bounds[op]}s, {error or 'ok'}) [{steps}]"
                    )
        outcome.baseline_p99 = baseline_p99(calls, fault_start)
        threshold = 1.5 * outcome.baseline_p99 + 0.005
        outcome.windows = windows_after(calls, fault_end)
        outcome.recovery = recovery_time(outcome.windows, threshold)
        if outcome.recovery is not None:
            outcome.errors_after_recovery = errors_after(outcome.windows, outcome.recovery)
        outcome.slots_ok, outcome.slots_detail = check_slots(client, settings)
        pool = client.connection_pool
        if isinstance(pool, redispool.ConnectionPool):
            outcome.invariant = invariant_problem(pool)
            outcome.stats = pool.stats()
            outcome.gauges = {k: v for k, v in outcome.stats.items() if k in ("size", "idle", "in_use")}
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        pool = client.connection_pool
        if isinstance(pool, redispool.ConnectionPool):
            pool.shutdown()
        else:
            pool.disconnect()
        client.close()
    return outcome


def idle_half_open(
    lab: Lab, kind: str, settings: Settings, ping_after_idle: float | None, n: int = 8
) -> Outcome:
    """``n`` idle connections are silently forgotten by the network (:meth:`Lab.forget_flows`);
    then ``n`` threads each run one GET. Measures errors and the slowest call."""
    recorder = Recorder()
    client = make_client(kind, lab.addr, 6379, settings, recorder, ping_after_idle=ping_after_idle)
    outcome = Outcome(kind, "idle_half_open")
    pool = client.connection_pool
    try:
        held = [_borrow(pool) for _ in range(n)]  # n connections, then all idle
        for conn in held:
            pool.release(conn)
        time.sleep(max(ping_after_idle or 0.0, 0.0) + 0.1)  # idle long enough for the PING rule
        lab.forget_flows()
        barrier = threading.Barrier(n)
        durations: list[float] = []

        def one() -> None:
            barrier.wait()
            start = time.monotonic()
            try:
                client.get("redispool-fault:idle")
            except redis.RedisError as error:
                outcome.errors[error_label(error)] += 1
            durations.append(time.monotonic() - start)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        outcome.calls = n
        outcome.overshoot = {"call": max(durations, default=0.0)}
    finally:
        lab.heal()
        if isinstance(pool, redispool.ConnectionPool):
            pool.shutdown()
        else:
            pool.disconnect()
        client.close()
    return outcome
