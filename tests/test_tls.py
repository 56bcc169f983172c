"""TLS through the pool against a real ``redis-server --tls-port`` with test-made certificates.

The server requires client certificates (``--tls-auth-clients yes``) and keeps a
plaintext port for the test's own administration (CLIENT KILL).
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.connection import SSLConnection

import redispool
from redispool._server import RedisServer
from tests.deployments import Certificates, admin, make_certificates, tls_server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(certs: Certificates) -> Iterator[RedisServer]:
    with tls_server(certs, client_certs="yes") as running:
        yield running


@pytest.fixture
def client_cert(certs: Certificates) -> dict[str, Any]:
    return {"ssl_certfile": str(certs.client_cert), "ssl_keyfile": str(certs.client_key)}


def tls_url(server: RedisServer, host: str = "localhost") -> str:
    return f"rediss://{host}:{server.tls_port}/0"  # type: ignore[attr-defined]


def field_counts(pool: redispool.ConnectionPool) -> dict[str, Any]:
    stats = pool.stats()
    return {k: stats[k] for k in ("connects", "connect_errors", "health_eof", "health_error", "health_data")}


def test_rediss_url_verifies_the_server_certificate(
    server: RedisServer, certs: Certificates, client_cert: dict[str, Any], make_pool: Any
) -> None:
    for host in ("localhost", "127.0.0.1"):  # both are in the certificate
        pool = make_pool(tls_url(server, host), ssl_ca_certs=str(certs.ca), timeout=2.0, **client_cert)
        client = redis.Redis(connection_pool=pool)
        assert client.set("tls:k", "v") and client.get("tls:k") == b"v"
        with pool.connection() as conn:
            assert isinstance(conn, SSLConnection)
            assert conn.cert_reqs == ssl.CERT_REQUIRED  # verification is the default
            assert isinstance(conn._sock, ssl.SSLSocket)
            assert conn._sock.getpeercert()["subject"] == ((("commonName", "localhost"),),)


def test_ssl_keywords_work_without_a_url(
    server: RedisServer, certs: Certificates, client_cert: dict[str, Any], make_pool: Any
) -> None:
    pool = make_pool(
        connection_class=SSLConnection,
        host="localhost",
        port=server.tls_port,  # type: ignore[attr-defined]
        ssl_ca_certs=str(certs.ca),
        ssl_min_version=ssl.TLSVersion.TLSv1_3,
        max_connections=2,
        **client_cert,
    )
    assert redis.Redis(connection_pool=pool).ping()
    with pool.connection() as conn:
        assert conn._sock.version() == "TLSv1.3"


@pytest.mark.parametrize("ca", [None, "other_ca"], ids=["system-store", "unrelated-ca"])
def test_an_untrusted_server_is_rejected_at_once_with_a_clear_message(
    server: RedisServer, certs: Certificates, client_cert: dict[str, Any], make_pool: Any, ca: str | None
) -> None:
    extra = {"ssl_ca_certs": str(getattr(certs, ca))} if ca else {}
    pool = make_pool(tls_url(server), timeout=5.0, fail_fast_after=0.1, **client_cert, **extra)
    with pytest.raises(redis.ConnectionError) as caught:
        pool.get_connection()
    # Not a pool timeout or fail-fast error hiding the cause: the TLS verdict itself.
    assert not isinstance(caught.value, (redispool.PoolError, redis.TimeoutError))
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    # Tried once: a certificate that failed verification will fail again.
    assert field_counts(pool)["connects"] == 0
    assert field_counts(pool)["connect_errors"] == 0
    assert pool.stats()["failing_fast"] is False


def test_a_missing_client_certificate_is_reported_at_once(certs: Certificates, make_pool: Any) -> None:
    # Under TLS 1.2 the server refuses inside the handshake, so the client always sees it.
    # (Under TLS 1.3 the refusal comes after the handshake, and redis-py may first meet a
    # plain EOF while writing HELLO: that looks like a dropped connection and is retried.)
    with tls_server(certs, client_certs="yes", protocols="TLSv1.2") as server:
        pool = make_pool(tls_url(server), ssl_ca_certs=str(certs.ca), timeout=5.0)
        with pytest.raises(redis.ConnectionError, match=r"(?i)alert") as caught:
            pool.get_connection()
        assert not isinstance(caught.value, redispool.PoolError)
        assert pool.stats()["connect_errors"] == 0  # final at the first attempt


def test_unverified_mode_accepts_any_certificate(
    server: RedisServer, client_cert: dict[str, Any], make_pool: Any
) -> None:
    pool = make_pool(tls_url(server), ssl_cert_reqs="none", **client_cert)
    assert redis.Redis(connection_pool=pool).ping()
    with pool.connection() as conn:
        assert conn.cert_reqs == ssl.CERT_NONE
        assert conn._sock.getpeercert() == {}  # nothing was verified


def test_probe_is_not_fooled_by_pending_tls_records(
    server: RedisServer, certs: Certificates, client_cert: dict[str, Any], make_pool: Any
) -> None:
    # With a connect hook that sends nothing (no HELLO, no CLIENT SETINFO), the TLS 1.3
    # session tickets the server sends after the handshake are still unread when the
    # connection goes back to the pool: the socket is readable, yet healthy.
    pool = make_pool(
        tls_url(server),
        ssl_ca_certs=str(certs.ca),
        protocol=2,
        redis_connect_func=lambda conn: conn._parser.on_connect(conn),  # no commands
        ping_after_idle=None,
        **client_cert,
    )
    conn = pool.get_connection()
    first = conn._rp_meta.id
    readable, _, _ = select.select([conn._sock], [], [], 2.0)
    assert readable, "the server sent no post-handshake records"
    assert conn._sock.pending() == 0  # nothing decrypted: only TLS records are waiting
    pool.release(conn)

    for i in range(200):
        with pool.connection() as conn:
            assert conn._rp_meta.id == first
            conn.send_command("SET", f"tls:probe:{i % 7}", i)
            assert conn.read_response() in (b"OK", "OK", True)
    assert field_counts(pool) == {
        "connects": 1,
        "connect_errors": 0,
        "health_eof": 0,
        "health_error": 0,
        "health_data": 0,
    }


def test_probe_ignores_nothing_on_a_healthy_resp3_connection(
    server: RedisServer, certs: Certificates, client_cert: dict[str, Any], make_pool: Any
) -> None:
    pool = make_pool(tls_url(server), ssl_ca_certs=str(certs.ca), ping_after_idle=None, **client_cert)
    client = redis.Redis(connection_pool=pool)
    for i in range(200):
        assert client.incr("tls:counter") >= i + 1
    assert field_counts(pool)["connects"] == 1


def test_probe_detects_a_killed_tls_session(
    server: RedisServer, certs: Certificates, client_cert: dict[str, Any], make_pool: Any
) -> None:
    pool = make_pool(tls_url(server), ssl_ca_certs=str(certs.ca), ping_after_idle=None, **client_cert)
    client = redis.Redis(connection_pool=pool)
    client_id = client.client_id()
    with pool.connection() as conn:
        sock = conn._sock
    with admin(server.port) as plain:
        assert plain.client_kill_filter(_id=client_id) == 1
    # The server has closed the session; wait until that reaches our socket.
    assert select.select([sock], [], [], 5.0)[0]

    assert client.ping()  # the probe caught it: a new connection, no failed command
    counts = field_counts(pool)
    assert counts["connects"] == 2
    assert counts["health_eof"] + counts["health_error"] == 1
    assert client.client_id() != client_id


def test_certificates_are_files(certs: Certificates) -> None:
    assert all(Path(p).stat().st_size > 0 for p in vars(certs).values())


def test_tls_connections_take_the_full_checkout_probe(
    server: RedisServer, certs: Certificates, client_cert: dict[str, Any], make_pool: Any
) -> None:
    # poll() cannot tell a TLS session ticket from a reply: every TLS borrow takes the
    # full probe (_health._probe_tls), never the fast path's poll(0) alone.
    pool = make_pool(tls_url(server), ssl_ca_certs=str(certs.ca), ping_after_idle=None, **client_cert)
    client = redis.Redis(connection_pool=pool)
    assert client.ping()
    full: list[Any] = []
    acquire = pool._acquire
    pool._acquire = lambda *args: full.append(args) or acquire(*args)
    for i in range(5):
        assert client.set("tls:fast", i) and client.get("tls:fast") == str(i).encode()
    assert len(full) == 10
    with pool.connection() as conn:
        assert conn._rp_meta.plain and conn._rp_meta.quick is None
    assert field_counts(pool)["connects"] == 1
