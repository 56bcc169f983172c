"""OpenTelemetry metrics for redispool pools (``pip install 'redispool[otel]'``).

::

    from redispool.contrib.otel import instrument

    instrument(pool)  # uses the global MeterProvider; or instrument(pool, meter_provider=mp)

Names follow the OpenTelemetry semantic conventions for database client connection
pools where one exists, with ``db.client.connection.pool.name`` = ``pool.name`` (never
credentials) on every point:

- ``db.client.connection.count`` {connection}, by ``db.client.connection.state`` (idle|used)
- ``db.client.connection.max``, ``db.client.connection.idle.min`` {connection}
- ``db.client.connection.pending_requests`` {request}: callers queued now
- ``db.client.connection.timeouts`` {timeout}: acquires that raised PoolTimeout
- ``db.client.connection.wait_time`` (s, histogram): time to obtain a connection, fed by
  :meth:`ConnectionPool.add_acquire_listener`

Everything else ``pool.stats()`` reports appears under ``redispool.pool.*`` (see the
README's Metrics section). Gauges and counters are observed from one ``stats()`` call per
pool per collection; pools are held weakly and drop out when garbage-collected.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

import redispool

from .._pool import ConnectionPool
from .._stats import COUNTERS, GAUGES
from ._pools import WeakPools

__all__ = ["PoolMetrics", "instrument", "uninstrument"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
# The semantic conventions' advice for db.client.connection.wait_time.
WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    kind: str  # "updown" (a level), "counter" (a running total) or "gauge" (a sampled value)
    unit: str
    doc: str
    keys: dict[str, dict[str, str]]  # stats key -> extra attributes of its point


def _one(key: str) -> dict[str, dict[str, str]]:
    return {key: {}}


_SPECS: tuple[_Spec, ...] = (
    _Spec(
        "db.client.connection.count", "updown", "{connection}", "Open connections by state",
        {"idle": {STATE: "idle"}, "in_use": {STATE: "used"}},
    ),
    _Spec("db.client.connection.max", "updown", "{connection}", "Most connections allowed", _one("max")),
    _Spec("db.client.connection.idle.min", "updown", "{connection}", "Idle kept ready", _one("min_idle")),
    _Spec(
        "db.client.connection.pending_requests", "updown", "{request}", "Callers queued for a connection",
        _one("waiting"),
    ),
    _Spec("db.client.connection.timeouts", "counter", "{timeout}", "Acquires timed out", _one("timeouts")),
    _Spec("redispool.pool.size", "updown", "{connection}", "Slots taken, connects included", _one("size")),
    _Spec("redispool.pool.connecting", "updown", "{connection}", "Connects in progress", _one("connecting")),
    _Spec("redispool.pool.failing_fast", "gauge", "1", "1 while failing fast", _one("failing_fast")),
    _Spec("redispool.pool.wait_time.max", "gauge", "s", "Longest single queued wait", _one("wait_time_max")),
    _Spec("redispool.pool.wait_time.total", "counter", "s", "Seconds spent queued", _one("wait_time_total")),
    _Spec("redispool.pool.borrows", "counter", "{borrow}", "Connections handed out", _one("borrows")),
    _Spec("redispool.pool.returns", "counter", "{return}", "Connections given back", _one("returns")),
    _Spec("redispool.pool.waits", "counter", "{wait}", "Acquires that had to queue", _one("waits")),
    _Spec("redispool.pool.refused", "counter", "{acquire}", "Refused with TooManyWaiters", _one("refused")),
    _Spec("redispool.pool.connects", "counter", "{connection}", "Connections opened", _one("connects")),
    _Spec("redispool.pool.connect_errors", "counter", "{error}", "Failed connects", _one("connect_errors")),
    _Spec("redispool.pool.fail_fast", "counter", "{acquire}", "ServerUnavailable raised", _one("fail_fast")),
    _Spec(
        "redispool.pool.health_check.failures", "counter", "{check}", "Borrow-time checks that failed",
        {
            "health_eof": {"redispool.health_check": "eof"},
            "health_error": {"redispool.health_check": "error"},
            "health_data": {"redispool.health_check": "data"},
            "health_ping": {"redispool.health_check": "ping"},
        },
    ),
    _Spec("redispool.pool.session_resets", "counter", "{reset}", "Sessions reset", _one("session_resets")),
    _Spec(
        "redispool.pool.connections.closed", "counter", "{connection}", "Connections closed by the pool",
        {
            "evicted_idle": {"redispool.close_reason": "max_idle"},
            "retired_lifetime": {"redispool.close_reason": "max_lifetime"},
            "closed_dirty": {"redispool.close_reason": "dirty"},
            "returned_disconnected": {"redispool.close_reason": "disconnected"},
            "drained": {"redispool.close_reason": "drained"},
        },
    ),
    _Spec("redispool.pool.double_releases", "counter", "{release}", "Ignored", _one("double_releases")),
    _Spec("redispool.pool.keepalive_pings", "counter", "{ping}", "Keepalive PINGs", _one("keepalive_pings")),
    _Spec("redispool.pool.leaks", "counter", "{connection}", "Leak warnings", _one("leaks")),
    _Spec("redispool.pool.reclaimed", "counter", "{connection}", "Collected unreleased", _one("reclaimed")),
)  # fmt: skip
MAPPED = frozenset(key for spec in _SPECS for key in spec.keys) | {"name"}


@dataclasses.dataclass
class _Entry:
    attributes: dict[str, str]
    listener: Callable[[float], None]


class PoolMetrics:
    """OpenTelemetry instruments for any number of pools, created once per meter.

    Use :func:`instrument` unless you manage meters yourself. Stats keys this module has
    no name for (newer ones, or a pool subclass's own) are reported as
    ``redispool.pool.<key>``: a counter if ``redispool`` lists it as one, else a gauge.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self.meter: Meter = provider.get_meter("redispool", redispool.__version__)
        self._lock = threading.Lock()  # guards _generic
        self._pools: WeakPools[_Entry] = WeakPools()
        for spec in _SPECS:
            self._observe(spec)
        # Stats keys this module predates still get reported: redispool's own now, and
        # any a pool class adds (e.g. a Sentinel pool's) when such a pool is added.
        self._generic: set[str] = set()
        self._observe_generic(self._claim(set(COUNTERS) | set(GAUGES)))
        self.wait_time: Histogram = self.meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="Time to obtain a connection: queueing, health checks and connecting",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )

    def _claim(self, keys: set[str]) -> list[str]:
        """Stats keys with no instrument yet, now marked as having one.  Locked (or in
        ``__init__``)."""
        new = sorted(keys - MAPPED - self._generic)
        self._generic.update(new)
        return new

    def _observe_generic(self, keys: list[str]) -> None:
        """Instruments ``redispool.pool.<key>`` for stats keys not in the table. Called
        without our lock: the SDK may hold its own while it runs our callbacks."""
        for key in keys:
            kind = "counter" if key in COUNTERS else "gauge"
            self._observe(_Spec(f"redispool.pool.{key}", kind, "1", f"pool.stats()[{key!r}]", _one(key)))

    def _observe(self, spec: _Spec) -> None:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return list(self._points(spec))

        create: Any = {
            "updown": self.meter.create_observable_up_down_counter,
            "counter": self.meter.create_observable_counter,
            "gauge": self.meter.create_observable_gauge,
        }[spec.kind]
        create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.doc)

    def _points(self, spec: _Spec) -> Iterator[Observation]:
        for pool, entry in self._pools.live():
            stats = pool.stats()
            for key, extra in spec.keys.items():
                if key in stats:
                    yield Observation(float(stats[key]), {**entry.attributes, **extra})  # type: ignore[literal-required]

    def add(self, pool: ConnectionPool) -> None:
        """Start reporting ``pool``; adding it again does nothing."""
        attributes = {POOL_NAME: pool.name}
        histogram = self.wait_time

        def listener(seconds: float) -> None:
            histogram.record(seconds, attributes)

        if self._pools.add(pool, lambda _others: _Entry(attributes, listener)) is None:
            return
        numeric = {k for k, v in pool.stats().items() if isinstance(v, (int, float))}
        with self._lock:
            new_keys = self._claim(numeric)
        self._observe_generic(new_keys)
        pool.add_acquire_listener(listener)

    def remove(self, pool: ConnectionPool) -> None:
        """Stop reporting ``pool``; removing one never added does nothing."""
        entry = self._pools.remove(pool)
        if entry is not None:
            pool.remove_acquire_listener(entry.listener)


_instances: weakref.WeakKeyDictionary[MeterProvider, PoolMetrics] = weakref.WeakKeyDictionary()
_instances_lock = threading.Lock()


def instrument(pool: ConnectionPool, meter_provider: MeterProvider | None = None) -> PoolMetrics:
    """Report ``pool`` through ``meter_provider`` (default: the global one).

    Instruments are created on the first call per provider and shared by later pools.
    Returns the :class:`PoolMetrics` holding them.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _instances_lock:
        instance = _instances.get(provider)
        if instance is None:
            instance = _instances[provider] = PoolMetrics(provider)
    instance.add(pool)
    return instance


def uninstrument(pool: ConnectionPool, meter_provider: MeterProvider | None = None) -> None:
    """Stop reporting ``pool`` through ``meter_provider``."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _instances_lock:
        instance = _instances.get(provider)
    if instance is not None:
        instance.remove(pool)
