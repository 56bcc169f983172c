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
give them distinct ``name=`` options.

Under gunicorn (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), a
custom collector cannot be merged across workers: call :func:`register_multiprocess`
instead, and one scrape shows the whole app. See docs/metrics.md.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from .._pool import ConnectionPool
from .._stats import COUNTERS
from ._pools import WeakPools

__all__ = [
    "DEFAULT_BUCKETS",
    "MultiprocessPublisher",
    "PoolCollector",
    "register",
    "register_multiprocess",
    "unregister",
]

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


def _checked_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    """Histogram upper bounds without +Inf; ``ValueError`` unless strictly increasing."""
    if list(buckets) != sorted(set(buckets)) or not buckets:
        raise ValueError("buckets must be a non-empty, strictly increasing sequence")
    return tuple(float(b) for b in buckets if b != float("inf"))


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
        self.buckets = _checked_buckets(buckets)
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


# ------------------------------------------------------------------ multiprocess mode

# How prometheus_client's multiprocess collector merges a gauge over the processes:
# sizes add up over the live workers; a flag or a longest-wait takes the worst one.
# Dead workers' gauges are dropped by mark_process_dead(); their counters stay summed,
# since a counter must never go down.
_GAUGE_MODES: dict[str, Literal["livesum", "livemax"]] = {
    "redispool_failing_fast": "livemax",
    "redispool_wait_max_seconds": "livemax",
}


@dataclasses.dataclass
class _Published:
    name: str
    sent: dict[str, float]  # counter values already added to this process's files


class MultiprocessPublisher:
    """Writes pools' stats into prometheus_client's multiprocess files (one per process).

    Use it when ``PROMETHEUS_MULTIPROC_DIR`` is set, as under gunicorn: a custom collector
    cannot be merged across processes, so each process publishes its pools' ``stats()``
    as ordinary ``Gauge``/``Counter``/``Histogram`` values, and any worker's
    ``MultiProcessCollector`` scrape shows the sum over all workers. Values are published
    on :meth:`add`, by :meth:`publish`, and every ``interval`` seconds by a daemon thread
    (restarted in a forked child; ``None`` for no thread).
    """

    def __init__(self, *, interval: float | None = 1.0, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if interval is not None and not interval > 0:
            raise ValueError(f"interval must be greater than 0 or None, not {interval!r}")
        from prometheus_client import Counter, Gauge, Histogram

        self.interval = interval
        self._Counter, self._Gauge = Counter, Gauge
        self._pools: WeakPools[_Published] = WeakPools()
        self._lock = threading.Lock()  # guards _metrics and each entry's sent
        self._metrics: dict[str, Counter | Gauge] = {}
        for spec in _SPECS:
            self._metric(spec)
        self._histogram = Histogram(
            HISTOGRAM, _HISTOGRAM_DOC, [LABEL], registry=None, buckets=_checked_buckets(buckets)
        )
        self._thread: threading.Thread | None = None
        _publishers.add(self)

    def _metric(self, spec: _Spec) -> Any:
        """The metric object of ``spec``'s family, made on first use.  Locked."""
        metric = self._metrics.get(spec.metric)
        if metric is None:
            labels = [LABEL, spec.label[0]] if spec.label else [LABEL]
            if spec.kind == "counter":
                metric = self._Counter(spec.metric, spec.doc, labels, registry=None)
            else:
                mode = _GAUGE_MODES.get(spec.metric, "livesum")
                metric = self._Gauge(spec.metric, spec.doc, labels, registry=None, multiprocess_mode=mode)
            self._metrics[spec.metric] = metric
        return metric

    def add(self, pool: ConnectionPool) -> None:
        """Publish ``pool`` from now on (and once right away); adding it again does nothing."""
        entry = self._pools.add(pool, lambda others: _Published(pool.name, {}))
        if entry is None:
            return
        pool.add_acquire_listener(self._histogram.labels(entry.name).observe)
        self.publish()
        self._start()

    def publish(self) -> None:
        """Write every pool's current ``stats()`` into this process's files now."""
        rows = [(entry, pool.stats()) for pool, entry in self._pools.live()]
        with self._lock:
            for entry, stats in rows:
                specs = list(_SPECS) + [_generic(k) for k in sorted(set(stats) - _MAPPED)]
                for spec in specs:
                    value = stats.get(spec.key)
                    if not isinstance(value, (int, float)):
                        continue
                    labels = [entry.name, spec.label[1]] if spec.label else [entry.name]
                    child = self._metric(spec).labels(*labels)
                    if spec.kind == "gauge":
                        child.set(float(value))
                        continue
                    delta = float(value) - entry.sent.get(spec.key, 0.0)
                    if delta > 0:
                        child.inc(delta)
                        entry.sent[spec.key] = float(value)

    def _start(self) -> None:
        if self.interval is None or (self._thread is not None and self._thread.is_alive()):
            return
        interval = self.interval
        ref = weakref.ref(self)

        def run() -> None:
            while True:
                time.sleep(interval)  # a publishing period, not a synchronisation
                publisher = ref()
                if publisher is None:
                    return
                try:
                    publisher.publish()
                except Exception:  # never let a metrics thread die on one bad pool
                    logging.getLogger("redispool").debug("publishing metrics failed", exc_info=True)
                del publisher

        self._thread = threading.Thread(target=run, name="redispool-prometheus", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The child's pools start from zero and its values go to files of its own pid.
        # Locks another thread held at fork() stay held here: replace them first.
        self._lock = threading.Lock()
        self._pools.lock = threading.Lock()
        for _, entry in self._pools.live():
            entry.sent.clear()
        self._thread = None
        if self._pools.live():
            self._start()


_publishers: weakref.WeakSet[MultiprocessPublisher] = weakref.WeakSet()
_default_publisher: MultiprocessPublisher | None = None


def _publishers_after_fork() -> None:
    for publisher in list(_publishers):
        publisher._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_publishers_after_fork)


def register_multiprocess(pool: ConnectionPool, *, interval: float | None = 1.0) -> MultiprocessPublisher:
    """Publish ``pool`` for prometheus_client's multiprocess mode; returns the publisher.

    The first call makes one process-wide :class:`MultiprocessPublisher` (``interval``
    applies then). ``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus_client is
    first imported, as its documentation says; expose the metrics with
    ``prometheus_client.multiprocess.MultiProcessCollector``.
    """
    global _default_publisher
    with _registered_lock:
        if _default_publisher is None:
            _default_publisher = MultiprocessPublisher(interval=interval)
        publisher = _default_publisher
    publisher.add(pool)
    return publisher
