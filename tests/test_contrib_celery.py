"""Celery's broker and result backend on redispool pools, with a real worker process.

The worker runs ``tests/celery_app.py`` against a private redis-server. Every process
names its connections ``rp-broker-<pid>`` / ``rp-result-<pid>``, so ``CLIENT LIST``
shows how many each process holds.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu.exceptions import VersionMismatch
from kombu.transport import redis as kombu_redis

import redispool
from redispool._server import RedisServer
from redispool.contrib import celery as rp_celery
from tests import celery_app
from tests.support import private_server, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _kombu_refusal() -> str:
    """Why kombu's Redis transport refuses this redis-py (kombu >= 5.5 wants 6.1+), or ''."""
    try:
        kombu_redis.Channel._get_client(types.SimpleNamespace(global_keyprefix=""))
    except VersionMismatch as error:
        return str(error)
    return ""


def _needs_kombu_redis() -> None:
    """A version gate, not a missing prerequisite: the celery extra needs kombu >= 5.6,
    whose Redis transport refuses redis-py < 6.1 (CI's redis-py 5.x run); the broker
    cannot run there at all. The result backend and RQ tests still run on 5.x."""
    refusal = _kombu_refusal()
    if refusal:
        pytest.skip(f"kombu's Redis transport refuses this redis-py: {refusal}")


TASK = "tests.celery_app.whoami"
N = 24


class Census:
    """Samples ``CLIENT LIST`` in a thread; keeps the most connections seen per name."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(port=port, socket_timeout=2)
        self.peak: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def names(self) -> collections.Counter[str]:
        try:
            clients = self.client.client_list()
        except redis.ConnectionError:  # the server is restarting
            return collections.Counter()
        return collections.Counter(c["name"] for c in clients if c["name"].startswith("rp-"))

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for name, count in self.names().items():
                self.peak[name] = max(self.peak[name], count)

    def __enter__(self) -> Census:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


@pytest.fixture
def aof_server() -> Iterator[RedisServer]:
    """A private server that keeps its data across a restart (append-only file)."""
    with private_server("--appendonly", "yes", "--appendfsync", "always") as server:
        yield server


@pytest.fixture
def client_app(aof_server: RedisServer) -> Iterator[Celery]:
    app = celery_app.make_app(f"redis://127.0.0.1:{aof_server.port}")
    yield app
    app.close()
    rp_celery.close_pools()


def _start_worker(server: RedisServer, pool: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RP_CELERY_URL": f"redis://127.0.0.1:{server.port}"}
    argv = [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
            "--pool", pool, "--concurrency", "3", "--loglevel", "warning", "--without-heartbeat"]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _run(app: Celery, first: int, count: int) -> dict[int, int]:
    """Send ``count`` tasks; return task number -> pid of the process that ran it."""
    results = [app.send_task(TASK, args=(n,)) for n in range(first, first + count)]
    return {number: pid for number, pid in (r.get(timeout=60) for r in results)}


def _worker_names(peak: collections.Counter[str]) -> dict[str, int]:
    mine = str(os.getpid())
    return {name: n for name, n in peak.items() if not name.endswith(f"-{mine}")}


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_worker_on_bounded_pools(
    pool: str, aof_server: RedisServer, client_app: Celery, tmp_path: Path
) -> None:
    _needs_kombu_redis()
    worker = _start_worker(aof_server, pool, tmp_path / "worker.log")
    try:
        with Census(aof_server.port) as census:
            ran = _run(client_app, 0, N)
            assert sorted(ran) == list(range(N))  # every result arrived

            # A restart mid-run: the results already stored survive it, and the worker
            # carries on once the server is back.
            stored = [client_app.send_task(TASK, args=(n,)) for n in range(N, N + 8)]
            done = {r.id: r.get(timeout=60) for r in stored}
            inflight = [client_app.send_task(TASK, args=(n,)) for n in range(N + 8, N + 16)]
            aof_server.restart()
            for task_id, value in done.items():
                assert client_app.AsyncResult(task_id).get(timeout=30) == value
            after = _run(client_app, 100, N)
            assert sorted(after) == list(range(100, 100 + N))
            del inflight  # sent before the restart: may wait for kombu's visibility timeout

        names = _worker_names(census.peak)
        pids = set(ran.values()) | set(after.values())
        assert os.getpid() not in pids
        for name, count in names.items():
            bound = celery_app.BROKER_MAX if name.startswith("rp-broker-") else celery_app.RESULT_MAX
            assert count <= bound, f"{name} held {count} connections; bound {bound}: {dict(names)}"
        # Every process that stored a result did it through its own named pool.
        assert {f"rp-result-{pid}" for pid in pids} <= set(names), names
        assert f"rp-broker-{worker.pid}" in names  # the consumer is the main process
        if pool == "prefork":
            assert worker.pid not in pids  # tasks ran in forked children
        else:
            assert pids == {worker.pid}

        worker.send_signal(signal.SIGTERM)  # warm shutdown
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()
        # Shutdown closed every worker connection.
        census_after = Census(aof_server.port)
        wait_until(lambda: not _worker_names(census_after.names()), timeout=10)
        census_after.client.close()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_bad_pool_options_name_the_setting() -> None:
    with pytest.raises(ValueError, match=r"broker_transport_options\['redispool'\].*max_conections"):
        rp_celery._pool_options({"max_conections": 3}, "broker_transport_options")
    with pytest.raises(TypeError, match="must be a dict of pool options"):
        rp_celery._pool_options(5, "result_backend_transport_options")


def test_backends_of_many_threads_share_one_pool(aof_server: RedisServer, client_app: Celery) -> None:
    # Celery makes a backend per thread; all of them must draw from one bounded pool.
    pools: list[object] = []
    backends: list[object] = []

    def grab() -> None:
        backend = client_app.backend
        backend.get(f"k-{threading.get_ident()}")  # a real round trip on this thread's backend
        backends.append(backend)
        pools.append(backend.client.connection_pool)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(pools) == 4
    assert len({id(b) for b in backends}) == 4  # Celery's backends are per thread
    assert len({id(p) for p in pools}) == 1  # one pool, not one per thread
    pool = pools[0]
    assert isinstance(pool, redispool.ConnectionPool)
    assert pool.max_connections == celery_app.RESULT_MAX


def test_channels_share_one_pool_and_give_pinned_connections_back(own_server: RedisServer) -> None:
    # kombu directly, in this process: two connections' channels, one pool; a consumer
    # pins a connection for BRPOP, and closing its channel hands it back.
    _needs_kombu_redis()
    from kombu import Connection

    url = f"redispool://127.0.0.1:{own_server.port}/3"
    options = {"max_connections": 3, "redispool": {"timeout": 5, "name": "kombu-test"}}
    with Connection(url, transport_options=options) as one, Connection(url, transport_options=options) as two:
        queue_one, queue_two = one.SimpleQueue("rp-kombu"), two.SimpleQueue("rp-kombu")
        queue_one.put({"n": 1})
        message = queue_two.get(timeout=10)  # BRPOP on a pinned connection
        assert message.payload == {"n": 1}
        message.ack()
        pool = queue_two.channel.pool
        assert queue_one.channel.pool is pool
        assert isinstance(pool, redispool.ConnectionPool) and pool.max_connections == 3
        assert pool.stats()["in_use"] >= 1  # the pinned BRPOP connection
        queue_one.close()
        queue_two.close()
    stats = pool.stats()
    assert stats["in_use"] == 0, stats  # every pinned connection came back
    assert stats["size"] <= 3
    pool.close()
