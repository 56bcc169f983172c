"""Prometheus metrics for redispool pools (``pip install 'redispool[prometheus]'``).

::

    from redispool.contrib.prometheus import register

    register(pool)  # adds the pool to a collector on the default registry

Nothing is registered until you call :func:`register`. On each scrape the collector reads
``pool.stats()`` once per pool and exposes every gauge and counter under a ``pool`` label
holding ``pool.name`` (host:port/db unless named; never credentials), plus
``redispool_acquire_wait_seconds``, a histogram of how long each successful acquire took
(queueing, health checks and connecting), fed by :meth:`ConnectionPool.add_acquire_listener`.

Pools are held weakly: a pool that is garbage-collected drops out of the scrape. Two live
pools with the same name in one collector are refused, since their series would collide;
give them distinct ``name=`` options. A custom collector such as this one is not supported
by prometheus_client's multiprocess mode: under gunicorn each worker exposes its own pool.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from .._pool import ConnectionPool
from .._stats import COUNTERS
from ._pools import WeakPools

__all__ = ["DEFAULT_BUCKETS", "PoolCollector", "register", "unregister"]

# Acquire times from well under a millisecond (an idle connection) to the default 5 s timeout.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

LABEL = "pool"
HISTOGRAM = "redispool_acquire_wait_seconds"


@dataclasses.dataclass(frozen=True)
class _Spec:
    key: str  # the pool.stats() key
    metric: str  # family name; counters get "_total" appended in the exposition
    kind: Literal["gauge", "counter"]
    doc: str
    label: tuple[str, str] | None = None  # an extra label separating keys in one family


def _labelled(
    metric: str, kind: Literal["gauge", "counter"], doc: str, label: str, **keys: str
) -> list[_Spec]:
    """One family whose series are stats keys told apart by ``label``."""
    return [_Spec(key, metric, kind, doc, (label, value)) for key, value in keys.items()]


_SPECS: tuple[_Spec, ...] = (
    _Spec("max", "redispool_max_connections", "gauge", "Most connections the pool may hold"),
    _Spec("min_idle", "redispool_min_idle", "gauge", "Idle connections the pool keeps ready"),
    _Spec("size", "redispool_pool_size", "gauge", "Slots taken: idle, in-use and connecting connections"),
    *_labelled(
        "redispool_connections", "gauge", "Connections by state", "state",
        idle="idle", in_use="in_use", connecting="connecting",
    ),
    _Spec("waiting", "redispool_waiting_callers", "gauge", "Callers queued for a connection now"),
    _Spec("failing_fast", "redispool_failing_fast", "gauge", "1 while Redis refuses connects"),
    _Spec("wait_time_max", "redispool_wait_max_seconds", "gauge", "Longest single queued wait so far"),
    _Spec("borrows", "redispool_borrows", "counter", "Connections handed out"),
    _Spec("returns", "redispool_returns", "counter", "Connections given back"),
    _Spec("waits", "redispool_waits", "counter", "Acquires that had to queue"),
    _Spec("wait_time_total", "redispool_wait_seconds", "counter", "Seconds spent queued, summed"),
    _Spec("timeouts", "redispool_timeouts", "counter", "Acquires that raised PoolTimeout"),
    _Spec("refused", "redispool_refused", "counter", "Acquires refused with TooManyWaiters"),
    _Spec("connects", "redispool_connects", "counter", "Connections opened"),
    _Spec("connect_errors", "redispool_connect_errors", "counter", "Connect attempts that failed"),
    _Spec("fail_fast", "redispool_fail_fast", "counter", "Acquires refused with ServerUnavailable"),
    *_labelled(
        "redispool_health_check_failures", "counter", "Borrow-time health checks that failed", "check",
        health_eof="eof", health_error="error", health_data="data", health_ping="ping",
    ),
    _Spec("session_resets", "redispool_session_resets", "counter", "WATCH/SELECT/SETNAME undone on reuse"),
    *_labelled(
        "redispool_connections_closed", "counter", "Connections closed by the pool", "reason",
        evicted_idle="max_idle", retired_lifetime="max_lifetime", closed_dirty="dirty",
        returned_disconnected="disconnected", drained="drained",
    ),
    _Spec("double_releases", "redispool_double_releases", "counter", "Releases ignored as double"),
    _Spec("keepalive_pings", "redispool_keepalive_pings", "counter", "Background PINGs of idle connections"),
    _Spec("leaks", "redispool_leaks", "counter", "Connections held longer than leak_warning_after"),
    _Spec("reclaimed", "redispool_reclaimed", "counter", "Connections garbage-collected unreleased"),
)  # fmt: skip
_MAPPED = frozenset(spec.key for spec in _SPECS) | {"name"}


def _generic(key: str) -> _Spec:
    """A spec for a stats key this module predates, so new keys still reach the scrape."""
    if key in COUNTERS:
        return _Spec(key, f"redispool_{key}", "counter", f"pool.stats()[{key!r}]")
    return _Spec(key, f"redispool_{key}", "gauge", f"pool.stats()[{key!r}]")


class _Histogram:
    """Acquire durations of one pool, bucketed; fed from the acquiring threads."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()  # guards the counts and the sum
        self._reset()
        _histograms.add(self)

    def _reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(self.bounds, seconds)  # le is inclusive
        with self._lock:
            self.counts[index] += 1
            self.total += seconds

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        with self._lock:
            counts, total = list(self.counts), self.total
        buckets, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return buckets, total


_histograms: weakref.WeakSet[_Histogram] = weakref.WeakSet()


def _reset_histograms_in_child() -> None:
    # A forked child's pool starts its counters from zero; its histograms must too, or
    # their counts would include the parent's acquires.
    for histogram in list(_histograms):
        histogram._lock = threading.Lock()
        histogram._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_histograms_in_child)


@dataclasses.dataclass
class _Entry:
    name: str
    histogram: _Histogram


class PoolCollector(Collector):
    """A Prometheus collector for any number of pools, each labelled ``pool=<name>``.

    Register it once (``registry.register(collector)``, or use :func:`register`), then
    :meth:`add` pools. ``buckets`` are the acquire-wait histogram's upper bounds in seconds.
    """

    def __init__(self, pools: Iterable[ConnectionPool] = (), *, buckets: Sequence[float] = DEFAULT_BUCKETS):
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be a non-empty, strictly increasing sequence")
        self.buckets = tuple(float(b) for b in buckets if b != float("inf"))
        self._pools: WeakPools[_Entry] = WeakPools()
        for pool in pools:
            self.add(pool)

    def add(self, pool: ConnectionPool) -> None:
        """Start exposing ``pool``; adding it again does nothing.

        Raises ``ValueError`` if another live pool here has the same name.
        """
        name = pool.name

        def make(others: list[_Entry]) -> _Entry:
            if any(other.name == name for other in others):
                raise ValueError(f"a pool named {name!r} is already collected; give each pool its own name=")
            return _Entry(name, _Histogram(self.buckets))

        entry = self._pools.add(pool, make)
        if entry is not None:
            pool.add_acquire_listener(entry.histogram.observe)

    def remove(self, pool: ConnectionPool) -> None:
        """Stop exposing ``pool``; removing one never added does nothing."""
        entry = self._pools.remove(pool)
        if entry is not None:
            pool.remove_acquire_listener(entry.histogram.observe)

    def describe(self) -> Iterator[Metric]:
        """The fixed families, without samples, so a registry can refuse duplicates."""
        for spec in {spec.metric: spec for spec in _SPECS}.values():
            yield self._family(spec)
        yield HistogramMetricFamily(HISTOGRAM, _HISTOGRAM_DOC, labels=[LABEL])

    def collect(self) -> Iterator[Metric]:
        """One ``stats()`` snapshot per pool, as gauges, counters and the histogram."""
        rows = [(entry.name, pool.stats(), entry.histogram) for pool, entry in self._pools.live()]
        specs = list(_SPECS)
        extra = sorted({k for _, stats, _ in rows for k in stats} - _MAPPED)
        specs += [_generic(k) for k in extra]
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for spec in specs:
            family = families.get(spec.metric)
            if family is None:
                family = families[spec.metric] = self._family(spec)
            for name, stats, _ in rows:
                value = stats.get(spec.key)
                if isinstance(value, (int, float)):  # bool is an int: failing_fast is 0 or 1
                    labels = [name, spec.label[1]] if spec.label else [name]
                    family.add_metric(labels, float(value))
        yield from families.values()
        histogram = HistogramMetricFamily(HISTOGRAM, _HISTOGRAM_DOC, labels=[LABEL])
        for name, _, hist in rows:
            buckets, total = hist.snapshot()
            histogram.add_metric([name], buckets, total)
        yield histogram

    @staticmethod
    def _family(spec: _Spec) -> GaugeMetricFamily | CounterMetricFamily:
        labels = [LABEL, spec.label[0]] if spec.label else [LABEL]
        if spec.kind == "counter":
            return CounterMetricFamily(spec.metric, spec.doc, labels=labels)
        return GaugeMetricFamily(spec.metric, spec.doc, labels=labels)


_HISTOGRAM_DOC = "Time to obtain a connection: queueing, health checks and connecting"

_registered: weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def register(
    pool: ConnectionPool,
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> PoolCollector:
    """Expose ``pool`` on ``registry`` (default: prometheus_client's global ``REGISTRY``).

    The first call per registry creates and registers one :class:`PoolCollector`
    (``buckets`` applies then); later calls add pools to it. Returns the collector.
    """
    registry = REGISTRY if registry is None else registry
    with _registered_lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = PoolCollector(buckets=buckets)
            registry.register(collector)
            _registered[registry] = collector
    collector.add(pool)
    return collector


def unregister(pool: ConnectionPool, registry: CollectorRegistry | None = None) -> None:
    """Stop exposing ``pool`` on ``registry``; the collector stays registered."""
    with _registered_lock:
        collector = _registered.get(REGISTRY if registry is None else registry)
    if collector is not None:
        collector.remove(pool)
