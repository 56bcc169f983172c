"""RQ on redispool pools: a real ``rq worker`` process, a private server, CLIENT LIST."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue

import redispool
from redispool._server import RedisServer
from redispool.contrib import rq as rp_rq
from tests.support import private_server, wait_until

ROOT = Path(__file__).resolve().parent.parent
BOUND = 4
N = 12


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with private_server() as server:
        yield server


def _names(client: redis.Redis) -> collections.Counter[str]:
    return collections.Counter(c["name"] for c in client.client_list() if c["name"].startswith("rp-rq-"))


@pytest.mark.slow
def test_worker_runs_jobs_on_a_bounded_pool(server: RedisServer, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{server.port}/0?max_connections={BOUND}&client_name=rp-rq-{{pid}}"
    connection = rp_rq.Redis.from_url(url)
    assert rp_rq.Redis.from_url(url).connection_pool is connection.connection_pool  # one pool per URL
    queue = Queue("rp", connection=connection)
    jobs = [queue.enqueue("tests.rq_jobs.whoami", n) for n in range(N)]
    filler = queue.enqueue("tests.rq_jobs.fill_pool")

    watcher = redis.Redis(port=server.port)
    peak: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def census() -> None:
        while not stop.wait(0.005):
            for name, count in _names(watcher).items():
                peak[name] = max(peak[name], count)

    sampler = threading.Thread(target=census, daemon=True)
    sampler.start()
    argv = [sys.executable, "-m", "rq.cli", "worker", "rp", "--burst", "--url", url,
            "--connection-class", "redispool.contrib.rq.Redis"]  # fmt: skip
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert worker.wait(120) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    stop.set()
    sampler.join(5)

    results = [job.return_value(refresh=True) for job in jobs]
    assert [r[0] for r in results if r] == list(range(N)), log.read_text()  # every job ran
    horses = {r[1] for r in results if r}
    assert worker.pid not in horses and os.getpid() not in horses  # each ran in a forked horse
    for _, pid, name in (r for r in results if r):
        # The horse talked over a connection it opened itself: named after its own pid.
        assert name == f"rp-rq-{pid}"
    # In a horse, the pool gives out exactly max_connections and refuses one more.
    filler_pid, held, refused = filler.return_value(refresh=True)
    assert held == BOUND and "none free" in refused, (held, refused)
    assert filler_pid not in (worker.pid, os.getpid())
    assert f"rp-rq-{worker.pid}" in peak
    for name, count in peak.items():
        assert count <= BOUND, f"{name} held {count} connections; bound {BOUND}: {dict(peak)}"
    wait_until(lambda: not {n for n in _names(watcher) if n != f"rp-rq-{os.getpid()}"})
    watcher.close()
    connection.connection_pool.close()


def test_pool_for_refuses_a_bad_url_and_options() -> None:
    with pytest.raises(ValueError, match="url must be"):
        rp_rq.pool_for("localhost:6379")
    with pytest.raises(ValueError, match="max_conections"):
        rp_rq.pool_for("redis://localhost:6379/0?max_conections=3")


def test_forked_child_gets_a_fresh_pool(server: RedisServer) -> None:
    # The work-horse path without RQ: a child after fork() opens its own connections.
    client = rp_rq.Redis.from_url(f"redis://127.0.0.1:{server.port}/0?client_name=rp-rq-{{pid}}")
    client.ping()
    parent_id = client.client_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            child = client.client_info()
            ok = child["name"] == f"rp-rq-{os.getpid()}" and int(child["id"]) != parent_id
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert client.client_id() == parent_id  # the parent's connection was left alone
    assert isinstance(client.connection_pool, redispool.ConnectionPool)
    client.connection_pool.close()
