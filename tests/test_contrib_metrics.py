"""Prometheus and OpenTelemetry metrics, and pool names that never carry credentials."""

from __future__ import annotations

import gc
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import redispool
from redispool._server import RedisServer, free_port
from redispool._stats import COUNTERS, GAUGES
from redispool.contrib import otel, prometheus
from tests.support import private_server, wait_until

PASSWORD = "hunter2-Sup3rSecret"
MakePool = Callable[..., redispool.ConnectionPool]


@pytest.fixture(scope="module")
def secret_server() -> Iterator[RedisServer]:
    """A private server that requires a password, so credentials are really in use."""
    with private_server("--requirepass", PASSWORD) as server:
        yield server


def _url(server: RedisServer, db: int = 2) -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{server.port}/{db}"


def _traffic(pool: redispool.ConnectionPool) -> None:
    """Borrows, one queued wait, and one timeout; leaves nothing borrowed."""
    client = redis.Redis(connection_pool=pool)
    for _ in range(10):
        client.ping()
    held = [pool.acquire(), pool.acquire()]  # max_connections=2: the pool is now full
    with pytest.raises(redispool.PoolTimeout):
        pool.acquire(timeout=0)
    served = threading.Event()

    def waiter() -> None:
        conn = pool.acquire()
        served.set()
        pool.release(conn)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: pool.stats()["waiting"] == 1)
    pool.release(held.pop())
    assert served.wait(5)
    thread.join(5)
    pool.release(held.pop())


def _scrape(registry: CollectorRegistry) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    text = generate_latest(registry).decode()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def test_prometheus_scrape_matches_stats(secret_server: RedisServer, make_pool: MakePool) -> None:
    pool = make_pool(_url(secret_server), max_connections=2, timeout=5)
    registry = CollectorRegistry()
    collector = prometheus.register(pool, registry)
    assert prometheus.register(pool, registry) is collector  # one collector per registry; idempotent
    _traffic(pool)

    text, samples = _scrape(registry)
    stats = pool.stats()
    name = f"127.0.0.1:{secret_server.port}/2"
    assert stats["name"] == pool.name == name
    label = ("pool", name)

    def value(metric: str, **labels: str) -> float:
        return samples[(metric, frozenset({label, *labels.items()}))]

    # The names the README documents.
    assert value("redispool_max_connections") == 2
    assert value("redispool_connections", state="idle") == stats["idle"] == 2
    assert value("redispool_connections", state="in_use") == 0
    assert value("redispool_waiting_callers") == 0
    assert value("redispool_borrows_total") == stats["borrows"] == 13
    assert value("redispool_timeouts_total") == stats["timeouts"] == 1
    assert value("redispool_waits_total") == stats["waits"] == 1  # timeout=0 never queues
    assert value("redispool_connects_total") == stats["connects"] == 2
    assert value("redispool_health_check_failures_total", check="ping") == 0
    assert value("redispool_connections_closed_total", reason="dirty") == 0

    # Every stats key reaches the scrape, with the value stats() reports.
    for spec in prometheus._SPECS:
        sample = spec.metric + ("_total" if spec.kind == "counter" else "")
        extra = dict([spec.label]) if spec.label else {}
        assert value(sample, **extra) == float(stats[spec.key]), spec.key
    covered = {spec.key for spec in prometheus._SPECS} | {"name"}
    for key in (set(GAUGES) | set(COUNTERS)) - covered:  # keys newer than the table: generic names
        assert f"redispool_{key}" in text

    # Acquire wait: one observation per successful acquire, cumulative buckets.
    count = value("redispool_acquire_wait_seconds_count")
    assert count == stats["borrows"]
    assert value("redispool_acquire_wait_seconds_bucket", le="+Inf") == count
    buckets = [value("redispool_acquire_wait_seconds_bucket", le=repr(b)) for b in prometheus.DEFAULT_BUCKETS]
    assert buckets == sorted(buckets) and buckets[-1] <= count
    assert value("redispool_acquire_wait_seconds_sum") >= 0

    # Credentials appear nowhere: not in the name, repr, stats or any label.
    assert PASSWORD in pool.connection_kwargs["password"]
    for shown in (text, repr(pool), repr(stats), pool.name):
        assert PASSWORD not in shown


def test_prometheus_collector_lifecycle(redis_url: str, make_pool: MakePool) -> None:
    registry = CollectorRegistry()
    first = make_pool(redis_url, name="first")
    collector = prometheus.register(first, registry)
    with pytest.raises(ValueError, match="already collected"):
        collector.add(make_pool(redis_url, name="first"))
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(prometheus.PoolCollector())  # the fixed names are described up front

    second = redispool.ConnectionPool.from_url(redis_url, name="second")
    prometheus.register(second, registry)
    redis.Redis(connection_pool=second).ping()
    _, samples = _scrape(registry)
    assert ("redispool_borrows_total", frozenset({("pool", "second")})) in samples
    second.shutdown()
    del second
    gc.collect()  # a pool nobody references drops out of the scrape
    _, samples = _scrape(registry)
    pools = {dict(labels)["pool"] for _, labels in samples}
    assert pools == {"first"}

    prometheus.unregister(first, registry)
    redis.Redis(connection_pool=first).ping()  # its listener is gone, so nothing is observed
    _, samples = _scrape(registry)
    assert samples == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_prometheus_histogram_starts_empty_in_a_forked_child(redis_url: str, make_pool: MakePool) -> None:
    pool = make_pool(redis_url)
    registry = CollectorRegistry()
    prometheus.register(pool, registry)
    redis.Redis(connection_pool=pool).ping()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's acquires must not be counted here
        try:
            redis.Redis(connection_pool=pool).ping()
            _, samples = _scrape(registry)
            label = frozenset({("pool", pool.name)})
            message = (
                f"{samples[('redispool_acquire_wait_seconds_count', label)]:g} {pool.stats()['borrows']}"
            )
        except BaseException as error:  # report, never raise in the child
            message = f"error {error!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    reply = os.read(read_end, 1024).decode()
    os.close(read_end)
    assert status == 0
    assert reply == "1 1"


def _otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "redispool"
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_opentelemetry_in_memory_reader(secret_server: RedisServer, make_pool: MakePool) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        pool = make_pool(_url(secret_server, 3), max_connections=2, timeout=5, name="otel-pool")
        metrics = otel.instrument(pool, meter_provider=provider)
        assert otel.instrument(pool, meter_provider=provider) is metrics
        _traffic(pool)
        stats = pool.stats()
        points = _otel_points(reader)

        def value(name: str, **attributes: str) -> float:
            wanted = {otel.POOL_NAME: "otel-pool", **attributes}
            found = [p.value for p in points[name] if dict(p.attributes) == wanted]
            assert len(found) == 1, (name, attributes, points[name])
            return float(found[0])

        assert value("db.client.connection.count", **{otel.STATE: "idle"}) == stats["idle"] == 2
        assert value("db.client.connection.count", **{otel.STATE: "used"}) == 0
        assert value("db.client.connection.max") == 2
        assert value("db.client.connection.idle.min") == 0
        assert value("db.client.connection.pending_requests") == 0
        assert value("db.client.connection.timeouts") == stats["timeouts"] == 1
        assert value("redispool.pool.borrows") == stats["borrows"] == 13
        assert value("redispool.pool.connects") == 2
        assert value("redispool.pool.health_check.failures", **{"redispool.health_check": "ping"}) == 0
        for spec in otel._SPECS:
            for key, extra in spec.keys.items():
                assert value(spec.name, **extra) == float(stats[key]), key

        (wait,) = points["db.client.connection.wait_time"]
        assert isinstance(wait, HistogramDataPoint)
        assert dict(wait.attributes) == {otel.POOL_NAME: "otel-pool"}
        assert wait.count == stats["borrows"]
        assert list(wait.explicit_bounds) == list(otel.WAIT_BUCKETS)
        assert sum(wait.bucket_counts) == wait.count

        dumped = reader.get_metrics_data()
        assert dumped is not None
        assert PASSWORD not in dumped.to_json()
        otel.uninstrument(pool, meter_provider=provider)
        assert "db.client.connection.count" not in {
            name
            for name, pts in _otel_points(reader).items()
            if pts and name != "db.client.connection.wait_time"
        }
    finally:
        provider.shutdown()


def test_pool_name_appears_in_logs_without_credentials(
    secret_server: RedisServer, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="redispool")
    pool = make_pool(_url(secret_server, 4), max_connections=1)
    held = pool.acquire()
    with pytest.raises(redispool.PoolTimeout):
        pool.acquire(timeout=0.01)  # queues, times out, and warns that the pool is too small
    pool.release(held)
    wrong = make_pool(f"redis://:not-{PASSWORD}@127.0.0.1:{secret_server.port}/4", timeout=1)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(connection_pool=wrong).ping()

    messages = [record.getMessage() for record in caplog.records]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    name = f"127.0.0.1:{secret_server.port}/4"
    assert any(name in m for m in warnings)
    assert any(name in m for m in messages if m.startswith("created pool"))
    assert all(PASSWORD not in m for m in messages)
    assert PASSWORD not in repr(wrong) and PASSWORD not in repr(wrong.stats())


class _ExtraStatsPool(redispool.ConnectionPool):
    """A pool subclass with a stats key of its own, as a Sentinel pool has."""

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "subclass_events": 3}


def test_stats_keys_of_a_pool_subclass_are_exported(redis_url: str) -> None:
    pool = _ExtraStatsPool.from_url(redis_url, name="extra")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        registry = CollectorRegistry()
        prometheus.register(pool, registry)
        otel.instrument(pool, meter_provider=provider)
        _, samples = _scrape(registry)
        assert samples[("redispool_subclass_events", frozenset({("pool", "extra")}))] == 3
        (point,) = _otel_points(reader)["redispool.pool.subclass_events"]
        assert point.value == 3 and dict(point.attributes) == {otel.POOL_NAME: "extra"}
    finally:
        provider.shutdown()
        pool.shutdown()


# ---------------------------------------------------------------- multiprocess mode under gunicorn

TESTS_DIR = Path(__file__).resolve().parent
GUNICORN_WORKERS = 4


def _http(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _answers(port: int) -> bool:
    try:
        return _http(port, "/stats")[0] == 200
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    """Live child pids of ``pid`` (Linux /proc): gunicorn's workers."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:  # that thread of gunicorn's ended since the listing
            continue
    return found


def _each_worker(port: int, path: str, workers: set[int]) -> dict[int, Any]:
    """GET ``path`` until every worker in ``workers`` has answered; pid -> JSON body.

    The kernel hands each new connection to some worker, so this repeats until all did.
    """
    seen: dict[int, Any] = {}

    def more() -> bool:
        status, body = _http(port, path)
        assert status == 200, body
        data = json.loads(body)
        seen[data["pid"]] = data
        return workers <= set(seen)

    wait_until(more, timeout=60)
    return {pid: seen[pid] for pid in workers}


Sample = tuple[str, frozenset[tuple[str, str]]]


def _expected(live: list[dict[str, Any]], dead: list[dict[str, Any]]) -> dict[Sample, float]:
    """What one scrape must show: live gauges summed (or the max), all counters summed."""
    want: dict[Sample, float] = {}
    for spec in prometheus._SPECS:
        labels = {"pool": "web", **({spec.label[0]: spec.label[1]} if spec.label else {})}
        if spec.kind == "counter":
            value = sum(float(s[spec.key]) for s in live + dead)
            want[(spec.metric + "_total", frozenset(labels.items()))] = value
        elif prometheus._GAUGE_MODES.get(spec.metric, "livesum") == "livemax":
            want[(spec.metric, frozenset(labels.items()))] = max(float(s[spec.key]) for s in live)
        else:
            want[(spec.metric, frozenset(labels.items()))] = sum(float(s[spec.key]) for s in live)
    borrows = sum(s["borrows"] for s in live + dead)
    want[(prometheus.HISTOGRAM + "_count", frozenset({("pool", "web")}))] = float(borrows)
    return want


def _check_scrape(port: int, live: list[dict[str, Any]], dead: list[dict[str, Any]]) -> None:
    status, body = _http(port, "/metrics")
    assert status == 200
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    want = _expected(live, dead)
    got = {key: samples.get(key) for key in want}
    wrong = {k[0]: (got[k], v) for k, v in want.items() if got[k] != pytest.approx(v)}
    assert not wrong, f"scraped vs expected: {wrong}"


@pytest.mark.slow
def test_gunicorn_multiprocess_scrape_sums_every_worker(own_server: RedisServer, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "RP_METRICS_URL": own_server.url}
    command = [
        sys.executable, "-m", "gunicorn", "--workers", str(GUNICORN_WORKERS),
        "--bind", f"127.0.0.1:{port}", "--chdir", str(TESTS_DIR),
        "--config", str(TESTS_DIR / "metrics_gunicorn.py"),
        "--error-logfile", str(log), "--log-level", "info", "metrics_app:app",
    ]  # fmt: skip
    master = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: master.poll() is None and _answers(port), timeout=60)
        wait_until(lambda: len(_children(master.pid)) == GUNICORN_WORKERS, timeout=60)
        workers = _children(master.pid)
        # Traffic until every worker has served some.
        _each_worker(port, "/work", workers)
        for _ in range(40):
            assert _http(port, "/work")[0] == 200

        before = _each_worker(port, "/stats", workers)
        assert all(b["stats"]["borrows"] > 0 for b in before.values())
        _check_scrape(port, [b["stats"] for b in before.values()], [])

        # A worker dies; gunicorn's child_exit hook runs mark_process_dead() for it.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not list(metrics_dir.glob(f"gauge_live*_{victim}.db")), timeout=30)
        wait_until(lambda: len(_children(master.pid) - {victim}) == GUNICORN_WORKERS, timeout=60)
        now = _children(master.pid)
        after = _each_worker(port, "/stats", now)
        # Its gauges are gone from the sum; its counters still count (they never go down).
        _check_scrape(port, [a["stats"] for a in after.values()], [before[victim]["stats"]])
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(master.pid, signal.SIGKILL)  # the session this test started
            master.wait()
    text = log.read_text()
    assert "Traceback" not in text, text


def test_multiprocess_publisher_mirrors_stats(redis_url: str, make_pool: MakePool) -> None:
    # Without PROMETHEUS_MULTIPROC_DIR the metric objects keep values in memory; the
    # publishing logic is the same. Counters only ever grow by the stats' increase.
    pool = make_pool(redis_url, max_connections=2, name=f"mp-{os.getpid()}")
    publisher = prometheus.MultiprocessPublisher(interval=None)
    publisher.add(pool)
    publisher.add(pool)  # idempotent
    client = redis.Redis(connection_pool=pool)
    for _ in range(5):
        client.ping()
    publisher.publish()
    publisher.publish()  # publishing twice adds nothing
    stats = pool.stats()
    borrows = publisher._metrics["redispool_borrows"].labels(pool.name)._value.get()
    size = publisher._metrics["redispool_pool_size"].labels(pool.name)._value.get()
    assert (borrows, size) == (stats["borrows"], stats["size"])
    with pytest.raises(ValueError, match="interval"):
        prometheus.MultiprocessPublisher(interval=0)
