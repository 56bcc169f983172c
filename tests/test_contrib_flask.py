"""redispool.contrib.flask with real Flask: test client, threaded werkzeug server, exit."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

import redispool
from redispool._server import RedisServer
from redispool.contrib.flask import FlaskRedisPool

EXPECTED_CLIENT = redispool.Client


def create_app(ext: FlaskRedisPool, key: str, **config: Any) -> Flask:
    """An app factory as users write it: config first, then init_app, then routes."""
    app = Flask(f"test-{key}")
    app.config.update(config)
    ext.init_app(app)

    @app.get("/incr")
    def incr() -> dict[str, Any]:
        hits = ext.client.incr(key + "hits")
        stats = ext.pool.stats()
        return {"hits": int(hits), "size": stats["size"], "max": stats["max"]}

    app.add_url_rule("/healthz", view_func=ext.healthz)
    return app


@pytest.fixture
def ext() -> Iterator[FlaskRedisPool]:
    extension = FlaskRedisPool()
    yield extension


def _shutdown(app: Flask, ext: FlaskRedisPool) -> None:
    ext.state(app).pool.shutdown()


def test_init_app_reads_config_registers_and_keeps_the_pool_across_requests(
    ext: FlaskRedisPool, redis_url: str, key: str
) -> None:
    app = create_app(
        ext,
        key,
        REDIS_URL=redis_url,
        REDISPOOL_MAX_CONNECTIONS=3,
        REDISPOOL_TIMEOUT="2.5",  # strings, as they come from environment variables
        REDISPOOL_MIN_IDLE=0,
        REDISPOOL_NAME="flask-test",
        REDISPOOL_CONNECTION_KWARGS={"decode_responses": True},
    )
    try:
        state = app.extensions["redispool"]
        with app.app_context():
            assert ext.pool is state.pool
            assert ext.client is state.client
            assert isinstance(ext.client, EXPECTED_CLIENT)
            assert ext.client.connection_pool is state.pool
            assert ext.client.set(key + "s", "text") and ext.client.get(key + "s") == "text"
        assert isinstance(state.pool, redispool.ConnectionPool)
        assert state.pool.options.max_connections == 3
        assert state.pool.options.timeout == 2.5
        assert state.pool.name == "flask-test"

        client = app.test_client()
        for n in range(1, 21):
            response = client.get("/incr")
            assert response.status_code == 200
            assert response.get_json() == {"hits": n, "size": 1, "max": 3}
        stats = state.pool.stats()
        # One connection served every request: nothing is closed per request or app context.
        assert stats["connects"] == 1
        assert stats["idle"] == 1 and stats["in_use"] == 0
        assert stats["borrows"] == stats["returns"] >= 20

        health = client.get("/healthz")
        assert health.status_code == 200
        report = health.get_json()
        assert report["status"] == "ok"
        assert report["pool"]["name"] == "flask-test"
        assert report["latency_ms"] >= 0
    finally:
        _shutdown(app, ext)


def test_one_extension_many_apps_and_misuse(ext: FlaskRedisPool, redis_url: str, key: str) -> None:
    first = create_app(ext, key + "a:", REDIS_URL=redis_url)
    second = create_app(ext, key + "b:", REDIS_URL=redis_url + "?max_connections=7")
    try:
        pool_a, pool_b = ext.state(first).pool, ext.state(second).pool
        assert pool_a is not pool_b
        assert pool_b.options.max_connections == 7  # options in the URL's query string work too
        with second.app_context():
            assert ext.pool is pool_b
        with pytest.raises(RuntimeError, match="already initialised"):
            ext.init_app(first)
        with pytest.raises(RuntimeError, match="application context"):
            _ = ext.pool
        stranger = Flask("stranger")
        with stranger.app_context(), pytest.raises(RuntimeError, match="not initialised"):
            _ = ext.client
    finally:
        _shutdown(first, ext)
        _shutdown(second, ext)

    typo = Flask("typo")
    typo.config.update(REDIS_URL=redis_url, REDISPOOL_MAX_CONECTIONS=5)
    with pytest.raises(ValueError, match="did you mean 'REDISPOOL_MAX_CONNECTIONS'"):
        FlaskRedisPool(typo)
    bad = Flask("bad")
    bad.config.update(REDIS_URL=redis_url, REDISPOOL_MAX_CONNECTIONS=0)
    with pytest.raises(ValueError, match="max_connections"):
        FlaskRedisPool(bad)


def test_extension_bound_to_an_app_works_outside_a_context_and_with_other_keys(
    redis_url: str, key: str
) -> None:
    app = Flask("bound")
    app.config.update(CACHE_URL=redis_url, CACHE_POOL_MAX_CONNECTIONS=2)
    cache_pool = FlaskRedisPool(app, url_key="CACHE_URL", config_prefix="CACHE_POOL_", extension_key="cache")
    try:
        assert app.extensions["cache"].pool is cache_pool.pool
        assert cache_pool.pool.options.max_connections == 2
        assert cache_pool.client.ping()
        assert cache_pool.health()["status"] == "ok"
    finally:
        cache_pool.pool.shutdown()


def test_healthz_reports_503_when_redis_is_down(
    ext: FlaskRedisPool, own_server: RedisServer, key: str
) -> None:
    app = create_app(ext, key, REDIS_URL=own_server.url)
    ext.health_timeout = 0.3
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        own_server.stop()
        response = client.get("/healthz")
        assert response.status_code == 503
        report = response.get_json()
        assert report["status"] == "error"
        # The connect is refused and retried until the check's deadline.
        assert report["error"].split(":")[0] in {"PoolTimeout", "ConnectionError", "ServerUnavailable"}
        assert report["pool"]["in_use"] == 0  # the failed check returned what it borrowed
    finally:
        _shutdown(app, ext)


def test_threaded_werkzeug_server(ext: FlaskRedisPool, redis_url: str, key: str) -> None:
    app = create_app(ext, key, REDIS_URL=redis_url, REDISPOOL_MAX_CONNECTIONS=3, REDISPOOL_TIMEOUT=10)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    threads, per_thread = 16, 15
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def hammer() -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
                conn.request("GET", "/incr")
                response = conn.getresponse()
                body = json.loads(response.read())
                conn.close()
                assert response.status == 200, body
                with lock:
                    results.append(body)
            except BaseException as error:
                with lock:
                    errors.append(error)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    finally:
        server.shutdown()
        serving.join(10)
    try:
        assert errors == []
        assert len(results) == threads * per_thread
        assert sorted(r["hits"] for r in results) == list(range(1, threads * per_thread + 1))
        assert max(r["size"] for r in results) <= 3
        stats = ext.state(app).pool.stats()
        assert stats["in_use"] == 0 and stats["size"] <= 3
        assert stats["borrows"] == stats["returns"]
        assert stats["timeouts"] == 0
    finally:
        _shutdown(app, ext)


def test_pool_is_closed_at_interpreter_exit(redis_url: str, key: str, tmp_path: Any) -> None:
    script = textwrap.dedent(
        f"""
        import atexit, json
        from flask import Flask
        from redispool.contrib.flask import FlaskRedisPool

        ext = FlaskRedisPool()
        app = Flask("exit-test")
        app.config["REDIS_URL"] = {redis_url!r}

        @app.get("/")
        def index():
            return str(ext.client.incr({key + "exit"!r}))

        # Registered before init_app, so it runs after the extension's exit hook (LIFO).
        atexit.register(lambda: print("at-exit", json.dumps(ext.state(app).pool.stats())))
        ext.init_app(app)
        client = app.test_client()
        print("responses", [client.get("/").get_data(as_text=True) for _ in range(3)])
        print("running", json.dumps(ext.state(app).pool.stats()))
        """
    )
    path = tmp_path / "exit_app.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["responses"] == "['1', '2', '3']"
    running, at_exit = json.loads(lines["running"]), json.loads(lines["at-exit"])
    assert running["connects"] == 1 and running["idle"] == 1  # kept open between requests
    assert at_exit["idle"] == 0 and at_exit["size"] == 0  # closed when the interpreter exits
