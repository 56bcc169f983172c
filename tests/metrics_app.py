"""A WSGI app for test_contrib_metrics under ``gunicorn --workers 4`` in multiprocess mode.

``PROMETHEUS_MULTIPROC_DIR`` is set by the test before gunicorn starts. ``/work`` talks
to Redis, ``/stats`` returns this worker's ``pool.stats()``, ``/metrics`` is one scrape
of every worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

import redispool
from redispool.contrib import prometheus

POOL = redispool.ConnectionPool.from_url(os.environ["RP_METRICS_URL"], max_connections=3, name="web")
CLIENT = redis.Redis(connection_pool=POOL)
PUBLISHER = prometheus.register_multiprocess(POOL)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    kind = "application/json"
    if path == "/work":
        CLIENT.incr("metrics:hits")
        CLIENT.get("metrics:hits")
        PUBLISHER.publish()  # so the files are current when the response is sent
        data = json.dumps({"pid": os.getpid()}).encode()
    elif path == "/stats":
        data = json.dumps({"pid": os.getpid(), "stats": POOL.stats()}).encode()
    elif path == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data, kind = generate_latest(registry), "text/plain; version=0.0.4"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(data)))])
    return [data]
