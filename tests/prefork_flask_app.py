"""The Flask flavour of prefork_app: ``FlaskRedisPool`` initialised at import, before the fork.

Served by gunicorn ``--preload`` in test_contrib_prefork; connections are named ``w<pid>``
in each worker, as in prefork_app.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from redispool._maintenance import maintainer
from redispool.contrib.flask import FlaskRedisPool

redis_pool = FlaskRedisPool()
app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDISPOOL_PREFORK_URL"]
app.config["REDISPOOL_MAX_CONNECTIONS"] = int(os.environ.get("REDISPOOL_PREFORK_MAX", "2"))
app.config["REDISPOOL_TIMEOUT"] = 30
app.config["REDISPOOL_CONNECTION_KWARGS"] = {"client_name": "master"}
redis_pool.init_app(app)
app.add_url_rule("/healthz", view_func=redis_pool.healthz)
MASTER_CLIENT_ID = redis_pool.state(app).client.client_id()  # opened before the fork


def _name_connections_in_child() -> None:
    redis_pool.state(app).pool.connection_kwargs["client_name"] = f"w{os.getpid()}"


os.register_at_fork(after_in_child=_name_connections_in_child)


@app.get("/work")
def work() -> dict[str, Any]:
    with redis_pool.pool.connection() as conn:  # one connection for both commands
        conn.send_command("CLIENT", "ID")
        client_id = conn.read_response()
        conn.send_command("INCR", "prefork:flask:hits")
        hits = conn.read_response()
    return {"pid": os.getpid(), "client_id": client_id, "hits": hits, "maintenance": maintainer.is_running()}


@app.get("/status")
def status() -> dict[str, Any]:
    return {"pid": os.getpid(), "master_client_id": MASTER_CLIENT_ID, "maintenance": maintainer.is_running()}
