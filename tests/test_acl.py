"""ACL users, credential providers, password rotation with ``drain()``, and secrecy.

Each test owns a ``redis-server`` (the ``own_server`` fixture) and creates an ACL user
with limited rights through a plaintext admin connection as the default user.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from redis.credentials import CredentialProvider

import redispool
from redispool._server import RedisServer
from redispool.contrib import otel, prometheus
from tests.deployments import admin

USER = "app"
# Enough to connect (HELLO, AUTH, CLIENT SETINFO) and use keys under app:, nothing else.
RIGHTS = ["resetkeys", "~app:*", "resetchannels", "-@all", "+@connection"]
RIGHTS += ["+get", "+set", "+incrby", "+acl|whoami"]


def secret() -> str:
    return f"pw-{secrets.token_hex(12)}"


def set_user(server: RedisServer, *rules: str) -> None:
    with admin(server.port) as client:
        client.execute_command("ACL SETUSER", USER, *rules)


@dataclass
class Rotating(CredentialProvider):
    """A credential provider whose password the test switches, as a secrets store would."""

    username: str
    password: str

    def get_credentials(self) -> tuple[str, str]:
        return (self.username, self.password)


@pytest.fixture
def user(own_server: RedisServer) -> Iterator[tuple[RedisServer, str]]:
    password = secret()
    set_user(own_server, "reset", "on", f">{password}", *RIGHTS)
    yield own_server, password


def test_a_limited_user_from_the_url(user: tuple[RedisServer, str], make_pool: Any) -> None:
    server, password = user
    pool = make_pool(f"redis://{USER}:{password}@127.0.0.1:{server.port}/0", max_connections=2)
    client = redis.Redis(connection_pool=pool)
    assert client.execute_command("ACL WHOAMI") in (b"app", "app")
    assert client.set("app:k", "v") and client.get("app:k") == b"v"
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("other:k")  # key outside ~app:*
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command("CONFIG", "GET", "maxmemory")  # command not granted
    assert client.incrby("app:n", 2) == 2
    # A refused command is an ordinary reply: the connection stays pooled.
    stats = pool.stats()
    assert stats["connects"] == 1 and stats["closed_dirty"] == 0 and stats["connect_errors"] == 0


def test_wrong_credentials_are_final_and_fail_fast(user: tuple[RedisServer, str], make_pool: Any) -> None:
    server, _ = user
    pool = make_pool(f"redis://{USER}:{secret()}@127.0.0.1:{server.port}/0", timeout=5.0, fail_fast_after=0.1)
    with pytest.raises(redis.AuthenticationError):
        pool.get_connection()
    # Tried once, not retried until the deadline, and not mistaken for an outage.
    assert pool.stats()["connect_errors"] == 0 and pool.stats()["failing_fast"] is False


@pytest.mark.parametrize("mode", ["credential_provider", "connection_kwargs"])
def test_password_rotation_with_drain_fails_no_read(
    user: tuple[RedisServer, str], make_pool: Any, mode: str
) -> None:
    server, old = user
    new = secret()
    provider = Rotating(USER, old)
    if mode == "credential_provider":
        pool = make_pool(host="127.0.0.1", port=server.port, credential_provider=provider, max_connections=4)
    else:
        pool = make_pool(f"redis://{USER}:{old}@127.0.0.1:{server.port}/0", max_connections=4)
    client = redis.Redis(connection_pool=pool)
    client.set("app:key", "value")

    failures: list[BaseException] = []
    reads = [0]
    lock = threading.Lock()
    stop = threading.Event()
    started = threading.Barrier(5)

    def reader() -> None:
        first = True
        while not stop.is_set():
            try:
                ok = client.get("app:key") == b"value"
            except redis.RedisError as error:
                with lock:
                    failures.append(error)
                continue
            with lock:
                reads[0] += 1
                if not ok:
                    failures.append(AssertionError("wrong value"))
            if first:
                first = False
                started.wait(timeout=10)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        started.wait(timeout=10)
        before = {info.id for info in pool.connections()}
        assert before

        # 1. The server accepts both passwords. 2. The client switches. 3. drain().
        set_user(server, f">{new}")
        if mode == "credential_provider":
            provider.password = new
        else:
            pool.connection_kwargs["password"] = new
        pool.drain()

        def all_replaced() -> bool:
            return not ({info.id for info in pool.connections()} & before)

        deadline = time.monotonic() + 10
        while not all_replaced():  # borrowed ones retire as the readers return them
            assert time.monotonic() < deadline, "old connections still pooled after drain()"
            time.sleep(0.01)
        # 4. The old password goes; every pooled connection already uses the new one.
        set_user(server, f"<{old}")
        probe = redis.Connection(host="127.0.0.1", port=server.port, username=USER, password=old)
        with pytest.raises(redis.AuthenticationError):
            probe.connect()
        probe.disconnect()

        # Prove it: replace everything again, now only the new password can log in.
        pool.drain()
        target = reads[0] + 400
        deadline = time.monotonic() + 10
        while reads[0] < target:
            assert time.monotonic() < deadline, "readers stalled"
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

    assert failures == []
    stats = pool.stats()
    assert stats["connect_errors"] == 0 and stats["drained"] >= len(before)
    assert client.execute_command("ACL WHOAMI") in (b"app", "app")


def test_passwords_never_appear_in_repr_logs_stats_or_errors(
    user: tuple[RedisServer, str], make_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, password = user
    wrong = secret()
    caplog.set_level(logging.DEBUG)  # every logger, redis-py's included
    seen: list[str] = []

    def note_error(error: BaseException) -> None:
        seen.extend(traceback.format_exception(error))
        seen.append(repr(error))

    # A working pool, used, inspected and drained.
    url = f"redis://{USER}:{password}@127.0.0.1:{server.port}/0"
    pool = make_pool(url, max_connections=1, timeout=0.2, leak_warning_after=60)
    client = redis.Redis(connection_pool=pool)
    client.set("app:x", "1")
    with pool.connection() as conn:
        seen.append(repr(conn))
        with pytest.raises(redispool.PoolTimeout) as timeout:
            pool.get_connection()  # the only connection is out
        note_error(timeout.value)
    pool.drain()
    client.get("app:x")
    seen += [repr(pool), str(pool), str(pool.stats()), pool.name, repr(pool.connections()), repr(client)]

    # A credential provider whose own repr would give the password away.
    provider = Rotating(USER, password)
    provider_pool = make_pool(host="127.0.0.1", port=server.port, credential_provider=provider)
    redis.Redis(connection_pool=provider_pool).ping()
    seen += [repr(provider_pool), str(provider_pool.stats())]
    assert password in repr(Rotating(USER, password))  # so the check below means something

    # Wrong password, a dead server failing fast, and a bad URL option.
    bad = make_pool(f"redis://{USER}:{wrong}@127.0.0.1:{server.port}/0", timeout=1.0)
    with pytest.raises(redis.AuthenticationError) as auth:
        bad.get_connection()
    note_error(auth.value)
    dead = make_pool(f"redis://{USER}:{password}@127.0.0.1:1/0", timeout=0.5, fail_fast_after=0.0)
    for _ in range(3):
        with pytest.raises(redis.ConnectionError) as down:
            dead.get_connection()
        note_error(down.value)
    seen += [repr(dead), str(dead.stats())]
    with pytest.raises(ValueError) as typo:
        redispool.ConnectionPool.from_url(url + "?max_conections=3")
    note_error(typo.value)

    # Sentinel and cluster node pools carry the password in their kwargs too.
    sentinel_pool = redispool.SentinelConnectionPool("svc", object(), username=USER, password=password)
    seen += [repr(sentinel_pool), str(sentinel_pool.stats()), sentinel_pool.name]
    node_pool = redispool.cluster_pool_class(max_connections=2)(host="127.0.0.1", port=2, password=password)
    seen += [repr(node_pool), str(node_pool.stats()), node_pool.name]

    # Metric labels: Prometheus exposition and OpenTelemetry attributes of all of them.
    pools = [pool, dead, sentinel_pool, node_pool]  # metric names must be unique per registry
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    provider_metrics = MeterProvider(metric_readers=[reader])
    for each in pools:
        prometheus.register(each, registry)
        otel.instrument(each, meter_provider=provider_metrics)
    exposition = generate_latest(registry).decode()
    assert 'pool="svc(master)"' in exposition  # labels are pool names
    seen.append(exposition)
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                seen += [str(dict(point.attributes)) for point in metric.data.data_points]
    for each in pools:
        otel.uninstrument(each, meter_provider=provider_metrics)
        prometheus.unregister(each, registry)
    provider_metrics.shutdown()
    sentinel_pool.shutdown()
    node_pool.shutdown()

    formatter = logging.Formatter("%(name)s %(message)s")
    logged = [formatter.format(record) for record in caplog.records]
    assert any("redispool" in line for line in logged)  # the pools did log at DEBUG
    for text in seen + logged:
        assert password not in text, text
        assert wrong not in text, text
