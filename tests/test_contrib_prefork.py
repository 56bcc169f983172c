"""Prefork servers: real gunicorn with --preload, and multiprocessing with fork and spawn.

Each starts its own redis-server so ``CLIENT LIST`` shows only the processes under test.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import redispool
from redispool._maintenance import maintainer
from redispool._server import RedisServer, free_port

TESTS_DIR = Path(__file__).resolve().parent
WORKERS, THREADS, MAX_CONNECTIONS = 4, 8, 4
REQUESTS, CONCURRENCY = 2000, 32

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="prefork needs os.fork (POSIX)")


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _wait_for_http(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "gunicorn exited at start"
        try:
            if _get(port, "/status")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "gunicorn did not answer in time"
        time.sleep(0.05)  # polling a starting server: there is no event to wait on


def _children(pid: int) -> set[int]:
    """Live child pids of ``pid`` (Linux /proc), as gunicorn's workers."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def _fire(port: int, count: int, concurrency: int) -> tuple[list[dict[str, Any]], list[BaseException]]:
    """``count`` GET /work requests over ``concurrency`` client threads."""
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    remaining = [count]
    start = threading.Barrier(concurrency)

    def client() -> None:
        start.wait()
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            try:
                status, body = _get(port, "/work")
                assert status == 200, (status, body)
                with lock:
                    results.append(body)
            except BaseException as error:
                with lock:
                    errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results, errors


@contextlib.contextmanager
def _gunicorn(
    app: str, url: str, tmp_path: Path, *, workers: int, threads: int, max_connections: int
) -> Iterator[tuple[int, set[int]]]:
    """Run ``gunicorn --preload`` on a free loopback port; yield the port and worker pids.

    Stops it by pid afterwards and fails if it exited badly or logged an error.
    """
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "REDISPOOL_PREFORK_URL": url, "REDISPOOL_PREFORK_MAX": str(max_connections)}
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(workers), "--threads", str(threads), "--preload",
        "--bind", f"127.0.0.1:{port}", "--chdir", str(TESTS_DIR),
        "--error-logfile", str(log), "--log-level", "info", "--timeout", "120",
        "--graceful-timeout", "20", app,
    ]  # fmt: skip
    master = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_for_http(port, master)
        deadline = time.monotonic() + 60
        while len(pids := _children(master.pid)) < workers:  # gunicorn forks them one by one
            assert time.monotonic() < deadline, f"only {len(pids)} workers started"
            time.sleep(0.05)  # polling process state: there is no event to wait on
        assert len(pids) == workers
        yield port, pids
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(master.pid, signal.SIGKILL)  # the session we started, nothing else
            master.wait()
    assert master.returncode == 0
    text = log.read_text()
    assert "Traceback" not in text and "[ERROR]" not in text and "[CRITICAL]" not in text, text


def _drive(port: int, workers: set[int], requests: int, concurrency: int) -> list[dict[str, Any]]:
    """Fire the requests, then more until every worker has answered some; all must succeed."""
    results, errors = _fire(port, requests, concurrency)
    # The kernel spreads connections over the workers; keep going until each one served some.
    deadline = time.monotonic() + 60
    while {r["pid"] for r in results} < workers and time.monotonic() < deadline:
        more, more_errors = _fire(port, concurrency, concurrency)
        results += more
        errors += more_errors
    assert errors == []
    assert len(results) >= requests
    assert {r["pid"] for r in results} == workers
    assert sorted(r["hits"] for r in results) == list(range(1, len(results) + 1))
    assert all(r["maintenance"] for r in results)  # the maintenance thread runs in every worker
    return results


def _check_connections(
    url: str, results: list[dict[str, Any]], workers: set[int], master_client_id: int, max_connections: int
) -> None:
    """No connection is shared between processes, none is the master's pre-fork socket,
    and the server sees at most max_connections per worker."""
    owners: dict[int, set[int]] = collections.defaultdict(set)
    for r in results:
        owners[r["client_id"]].add(r["pid"])
    assert all(len(pids) == 1 for pids in owners.values())
    assert master_client_id not in owners

    admin = redis.Redis.from_url(url)
    own_id = admin.client_id()
    clients = [c for c in admin.client_list() if int(c["id"]) != own_id]
    by_name = collections.Counter(c["name"] for c in clients)
    per_worker = {pid: by_name.pop(f"w{pid}", 0) for pid in workers}
    assert all(1 <= n <= max_connections for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) <= len(workers) * max_connections
    assert dict(by_name) == {"master": 1}  # the master's own connection, never used by a worker
    names = {int(c["id"]): c["name"] for c in clients}
    for client_id, pids in owners.items():
        if client_id in names:  # still open: the server agrees which worker holds it
            assert names[client_id] == f"w{next(iter(pids))}"


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/task").exists(), reason="needs Linux /proc to list workers"
)


@pytest.mark.slow
@needs_proc
def test_gunicorn_preload_workers_threads(own_server: RedisServer, tmp_path: Path) -> None:
    with _gunicorn(
        "prefork_app:app", own_server.url, tmp_path,
        workers=WORKERS, threads=THREADS, max_connections=MAX_CONNECTIONS,
    ) as (port, workers):  # fmt: skip
        master_client_id = _get(port, "/status")[1]["master_client_id"]
        results = _drive(port, workers, REQUESTS, CONCURRENCY)
        _check_connections(own_server.url, results, workers, master_client_id, MAX_CONNECTIONS)


@needs_proc
def test_gunicorn_preload_flask_extension(own_server: RedisServer, tmp_path: Path) -> None:
    with _gunicorn(
        "prefork_flask_app:app", own_server.url, tmp_path, workers=2, threads=4, max_connections=2
    ) as (port, workers):
        master_client_id = _get(port, "/status")[1]["master_client_id"]
        results = _drive(port, workers, 300, 8)
        _check_connections(own_server.url, results, workers, master_client_id, 2)
        for _ in range(4):
            status, health = _get(port, "/healthz")
            assert status == 200 and health["status"] == "ok" and health["pool"]["max"] == 2


# ---------------------------------------------------------------------------- multiprocessing

_POOL: redispool.ConnectionPool | None = None


def _pool_for(url: str) -> redispool.ConnectionPool:
    """This process's module-level pool: inherited across fork, created anew after spawn."""
    global _POOL
    if _POOL is None:
        _POOL = redispool.ConnectionPool.from_url(url, max_connections=2, name="mp")
    return _POOL


def _mp_work(url: str, counter: str, rounds: int) -> tuple[int, list[int], bool, int]:
    pool = _pool_for(url)
    ids = set()
    for _ in range(rounds):
        with pool.connection() as conn:
            conn.send_command("CLIENT", "ID")
            ids.add(int(conn.read_response()))
            conn.send_command("INCR", counter)
            conn.read_response()
    return os.getpid(), sorted(ids), maintainer.is_running(), pool.stats()["size"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_multiprocessing(method: str, own_server: RedisServer, key: str) -> None:
    global _POOL
    url = own_server.url
    parent_pool = _pool_for(url)
    try:
        parent = redis.Redis(connection_pool=parent_pool)
        parent_id = parent.client_id()  # open before the children start
        context = multiprocessing.get_context(method)
        with context.Pool(3) as workers:
            results = workers.starmap(_mp_work, [(url, key + "n", 25)] * 6)
        assert int(parent.get(key + "n") or 0) == 6 * 25
        child_pids = {pid for pid, *_ in results}
        assert os.getpid() not in child_pids and len(child_pids) >= 1
        owner: dict[int, int] = {}
        for pid, ids, maintenance, size in results:
            assert maintenance and size <= 2
            for client_id in ids:
                assert owner.setdefault(client_id, pid) == pid  # never shared between processes
        assert parent_id not in owner
        assert parent.client_id() == parent_id  # the parent's connection survived its children
    finally:
        parent_pool.shutdown()
        _POOL = None
