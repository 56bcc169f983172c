"""Celery with its broker and its result backend on bounded redispool pools.

The part to copy is ``make_app``: the ``redispool://`` broker URL (a kombu transport
that ``import redispool.contrib.celery`` registers), the backend class before the ``+``
of the result backend URL, and the bounds in the transport options. Every Celery
process then holds at most ``max_connections`` broker connections and
``max_connections`` result connections, however many threads, channels and backends
Celery makes.

Run it with no arguments: it starts a private redis-server (or uses ``REDIS_URL``), a
worker process (``celery -A celery_app worker --pool threads``), sends it 20 tasks,
prints the results and the connections each process holds, stops the worker and exits.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis
from celery import Celery

import redispool.contrib.celery  # registers the redispool:// transport

BROKER_MAX, RESULT_MAX = 8, 4


def make_app(server: str) -> Celery:
    """The app on ``server`` (``redis://host:port``): broker on db 0, results on db 1."""
    app = Celery(
        "celery_app",
        broker=server.replace("redis://", "redispool://", 1) + "/0",
        backend=f"redispool.contrib.celery:RedisBackend+{server}/1",
    )
    app.conf.broker_transport_options = {
        "max_connections": BROKER_MAX,  # kombu's own option; redispool enforces it per process
        "client_name": "celery-broker-{pid}",  # {pid}: each process names its connections
        "redispool": {"timeout": 10},  # any other redispool option
    }
    app.conf.result_backend_transport_options = {
        "redispool": {"max_connections": RESULT_MAX, "client_name": "celery-result-{pid}", "timeout": 10},
    }
    app.conf.broker_connection_retry_on_startup = True
    return app


# What `celery -A celery_app worker` loads; main() tells the worker the server's address.
app = make_app(os.environ.get("CELERY_EXAMPLE_SERVER", "redis://localhost:6379"))


def add(x: int, y: int) -> int:
    return x + y


app.task(add)  # as @app.task would; called plainly so mypy --strict keeps add's types


def _connections(server: str) -> dict[str, int]:
    client = redis.Redis.from_url(server)
    try:
        names = collections.Counter(c["name"] for c in client.client_list())
    finally:
        client.close()
    return {name: n for name, n in sorted(names.items()) if name.startswith("celery-")}


def main() -> None:
    from _common import redis_url

    with redis_url() as url:
        server = url.rsplit("/", 1)[0] if url.count("/") > 2 else url  # drop the db number
        env = {**os.environ, "CELERY_EXAMPLE_SERVER": server}
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "--quiet", "worker", "--pool", "threads",
             "--concurrency", "4", "--loglevel", "warning", "--without-heartbeat"],
            cwd=Path(__file__).parent, env=env,
        )  # fmt: skip
        client = make_app(server)
        try:
            results = [client.send_task("celery_app.add", args=(n, n)) for n in range(20)]
            print("results:", [r.get(timeout=60) for r in results])
            held = _connections(server)
            print("connections per process:", held)
            assert all(n <= max(BROKER_MAX, RESULT_MAX) for n in held.values())
        finally:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: the pools close with it
            worker.wait(60)
            client.close()
            redispool.contrib.celery.close_pools()
        print("worker exited with", worker.returncode)


if __name__ == "__main__":
    main()
