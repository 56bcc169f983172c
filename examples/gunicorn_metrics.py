"""Prometheus metrics of every gunicorn worker's pool in one scrape (multiprocess mode).

This file is both the gunicorn config and the app::

    export PROMETHEUS_MULTIPROC_DIR=/tmp/app-metrics   # an empty directory of its own
    gunicorn --config gunicorn_metrics.py gunicorn_metrics:app

Each worker publishes its pool's ``stats()`` with ``register_multiprocess``; ``/metrics``
in any worker shows the whole app: gauges summed over the live workers (the failing-fast
flag and the longest wait as the maximum), counters summed. ``child_exit`` drops a dead
worker's gauges.

Run it with no arguments: it starts a private redis-server (or uses ``REDIS_URL``),
gunicorn with 2 workers, sends some traffic, prints the scrape's pool lines and exits.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

import redispool
from redispool.contrib.prometheus import register_multiprocess

# ---------------------------------------------------------------- gunicorn settings

workers = 2
bind = os.environ.get("EXAMPLE_BIND", "127.0.0.1:8000")


def on_starting(server: Any) -> None:
    """In the master, before any worker: start from an empty metrics directory."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)


def child_exit(server: Any, worker: Any) -> None:
    """In the master, when a worker exits: drop its live gauges from the sum."""
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call,unused-ignore]


# ---------------------------------------------------------------- the app

_client: list[redis.Redis] = []  # made on first request, in the worker


def _redis() -> redis.Redis:
    if not _client:
        pool = redispool.ConnectionPool.from_url(
            os.environ.get("EXAMPLE_REDIS_URL", "redis://localhost:6379/0"), max_connections=4, name="web"
        )
        register_multiprocess(pool)  # publishes this worker's stats every second
        _client.append(redis.Redis(connection_pool=pool))
    return _client[0]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call,unused-ignore]
        body, kind = generate_latest(registry), "text/plain; version=0.0.4"
    else:
        body, kind = str(_redis().incr("example:hits")).encode(), "text/plain"
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


# ---------------------------------------------------------------- the demo


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        return conn.getresponse().read()
    finally:
        conn.close()


def main() -> None:
    from _common import redis_url

    with redis_url() as url, tempfile.TemporaryDirectory() as directory:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory, "EXAMPLE_REDIS_URL": url,
               "EXAMPLE_BIND": f"127.0.0.1:{port}"}  # fmt: skip
        here = Path(__file__).parent
        master = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn_metrics.py", "--log-level", "warning",
             "gunicorn_metrics:app"],
            cwd=here, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60  # for start-up and for the scrape
            while True:
                try:
                    _get(port, "/")
                    break
                except OSError:
                    if time.monotonic() > deadline or master.poll() is not None:
                        raise
                    time.sleep(0.1)  # waiting for gunicorn to listen
            for _ in range(49):
                _get(port, "/")

            def scraped() -> list[str]:
                text = _get(port, "/metrics").decode()
                return [
                    line
                    for line in text.splitlines()
                    if line.startswith(("redispool_borrows", "redispool_max"))
                ]

            # Each worker publishes once a second; wait until the scrape has all 50 borrows.
            while 'redispool_borrows_total{pool="web"} 50.0' not in scraped():
                assert time.monotonic() < deadline, scraped()
                time.sleep(0.1)
            print("\n".join(scraped()))
        finally:
            master.send_signal(signal.SIGTERM)
            master.wait(30)


if __name__ == "__main__":
    main()
