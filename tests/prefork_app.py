"""A tiny WSGI app with a module-level pool, served by gunicorn in test_contrib_prefork.

The worst case on purpose: the pool is created at import and a connection is opened
before gunicorn (``--preload``) forks its workers. Each worker renames the connections
it opens ``w<pid>`` so the test can match server-side connections to processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import redis

import redispool
from redispool._maintenance import maintainer

URL = os.environ["REDISPOOL_PREFORK_URL"]
MAX_CONNECTIONS = int(os.environ.get("REDISPOOL_PREFORK_MAX", "4"))
COUNTER = "prefork:hits"

POOL = redispool.ConnectionPool.from_url(
    URL, max_connections=MAX_CONNECTIONS, timeout=30, client_name="master", name="prefork"
)
CLIENT = redis.Redis(connection_pool=POOL)
MASTER_CLIENT_ID = CLIENT.client_id()  # a socket the master holds across the fork


def _name_connections_in_child() -> None:
    # connection_kwargs are read whenever a connection is made, so this names every
    # connection the worker opens from now on.
    POOL.connection_kwargs["client_name"] = f"w{os.getpid()}"


os.register_at_fork(after_in_child=_name_connections_in_child)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/work":
        with POOL.connection() as conn:
            conn.send_command("CLIENT", "ID")
            client_id = conn.read_response()
            conn.send_command("INCR", COUNTER)
            hits = conn.read_response()
        body: dict[str, Any] = {"pid": os.getpid(), "client_id": int(client_id), "hits": int(hits)}
    elif path == "/status":
        body = {"pid": os.getpid(), "master_client_id": MASTER_CLIENT_ID, "stats": POOL.stats()}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    body["maintenance"] = maintainer.is_running()
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
