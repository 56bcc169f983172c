"""A minimal Flask app on redispool: ``FlaskRedisPool``, a hit counter and ``/healthz``.

Run it with no arguments: it starts the app on a threaded loopback server, sends itself
a few requests, prints the answers and exits. It uses ``REDIS_URL`` if set, else a
private redis-server. In production you would run ``create_app`` under gunicorn instead
(see the README's gunicorn section).
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

from _common import redis_url
from flask import Flask
from werkzeug.serving import make_server

from redispool.contrib.flask import FlaskRedisPool

redis_pool = FlaskRedisPool()  # one extension object; one pool per app that init_app sees


def create_app(redis_url: str) -> Flask:
    app = Flask(__name__)
    app.config["REDIS_URL"] = redis_url
    app.config["REDISPOOL_MAX_CONNECTIONS"] = 10
    app.config["REDISPOOL_TIMEOUT"] = 2
    app.config["REDISPOOL_NAME"] = "example-web"
    redis_pool.init_app(app)

    @app.get("/")
    def index() -> dict[str, Any]:
        return {"hits": redis_pool.client.incr("redispool-example:flask:hits")}

    app.add_url_rule("/healthz", view_func=redis_pool.healthz)
    return app


def ask(port: int, path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def main() -> int:
    with redis_url() as url:
        app = create_app(url)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            for path in ("/", "/"):
                print("GET", path, *ask(server.server_port, path))
            status, health = ask(server.server_port, "/healthz")
            pool = health["pool"]
            print(
                f"GET /healthz {status} status={health['status']} pool={pool['name']} "
                f"connects={pool['connects']} borrows={pool['borrows']} idle={pool['idle']}"
            )
        finally:
            server.shutdown()
            thread.join(10)
            app.extensions["redispool"].pool.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
