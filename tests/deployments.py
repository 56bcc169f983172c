"""Real local deployments for the scale-out and security tests.

Sentinel (a master, a replica, three sentinels), a three-master Redis Cluster, and TLS
certificates. Every process is a private ``redis-server`` on a free loopback port, started
here and stopped by pid (``RedisServer`` from ``redispool._server``); nothing touches the
shared server on 6379. Waiting for a starting deployment polls a real condition with a
deadline, because Redis offers no event to wait on for "replication is up" or "the
cluster agrees".
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from redispool._server import RedisServer, free_port

SERVICE = "mymaster"
# Failover settings: Sentinel declares the master down after DOWN_AFTER_MS without a
# reply; a failed election is retried after 2 * FAILOVER_TIMEOUT_MS.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
CLUSTER_NODE_TIMEOUT_MS = 1000
SLOTS = 16384


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except redis.RedisError:
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)  # a starting deployment sends no event to wait on


def cluster_info(client: redis.Redis) -> dict[str, str]:
    reply = client.execute_command("CLUSTER INFO")
    if isinstance(reply, dict):  # parsed by redis-py >= 6
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else reply
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def admin(port: int, **kwargs: Any) -> redis.Redis:
    """A plain redis-py client (no redispool) for setting up and inspecting a server."""
    kwargs.setdefault("socket_timeout", 5)
    return redis.Redis(host="127.0.0.1", port=port, **kwargs)


class ConfigFileServer(RedisServer):
    """A ``redis-server`` started from a generated config file (Sentinel needs one: it
    rewrites it). ``mode_args`` follow the file, e.g. ``("--sentinel",)``."""

    def __init__(self, lines: list[str], *mode_args: str, port: int | None = None) -> None:
        super().__init__(port=port)
        self.lines = lines
        self.mode_args = mode_args

    def command(self) -> list[str]:
        conf = Path(self.dir) / "redis.conf"
        head = [f"port {self.port}", "bind 127.0.0.1", f'dir "{self.dir}"', "loglevel warning"]
        conf.write_text("\n".join([*head, *self.lines]) + "\n")
        return [self.binary, str(conf), *self.mode_args]


# ---------------------------------------------------------------------- Sentinel


@dataclass
class SentinelDeployment:
    master: RedisServer
    replica: RedisServer
    sentinels: list[ConfigFileServer]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def masters(self) -> set[tuple[str, int]]:
        """The master addresses the sentinels name (one element once they agree)."""
        named = set()
        for sentinel in self.sentinels:
            with admin(sentinel.port) as client:
                host, port = client.sentinel_get_master_addr_by_name(SERVICE)
            named.add((host.decode() if isinstance(host, bytes) else host, int(port)))
        return named

    def watch_switch(self) -> tuple[threading.Event, list[float]]:
        """Subscribe to ``+switch-master`` on every sentinel; the event is set (and the
        monotonic time recorded) when the first one announces a new master."""
        switched = threading.Event()
        when: list[float] = []
        ready = threading.Barrier(len(self.sentinels) + 1)

        def listen(port: int) -> None:
            client = admin(port, socket_timeout=None)
            pubsub = client.pubsub()
            try:
                pubsub.subscribe("+switch-master")
                pubsub.get_message(timeout=5)  # the subscribe confirmation
                ready.wait()
                while not switched.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message and message["type"] == "message":
                        when.append(time.monotonic())
                        switched.set()
            except redis.ConnectionError:
                pass  # the deployment is being torn down
            finally:
                pubsub.close()
                client.close()

        for sentinel in self.sentinels:
            threading.Thread(target=listen, args=(sentinel.port,), daemon=True).start()
        ready.wait(timeout=10)
        return switched, when


@contextlib.contextmanager
def sentinel_deployment() -> Iterator[SentinelDeployment]:
    """One master, one replica in sync, three sentinels (quorum 2) that know each other."""
    # Diskless sync without its 5 s default delay: the replica is in sync at once.
    fast_sync = ("--repl-diskless-sync-delay", "0")
    servers: list[RedisServer] = []
    try:
        master = RedisServer(*fast_sync)
        servers.append(master.start())
        replica = RedisServer(*fast_sync, "--replicaof", "127.0.0.1", str(master.port))
        servers.append(replica.start())

        def in_sync() -> bool:
            with admin(replica.port) as client:
                return bool(client.info("replication")["master_link_status"] == "up")

        wait_for(in_sync, 10, "the replica to sync")
        ports = [free_port() for _ in range(3)]
        ids = [secrets.token_hex(20) for _ in range(3)]
        sentinels = []
        for i, port in enumerate(ports):
            # Seeding peers and the replica saves the discovery rounds (2 s and more).
            lines = [
                f"sentinel myid {ids[i]}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SERVICE} 1",
                f"sentinel known-replica {SERVICE} 127.0.0.1 {replica.port}",
                *(
                    f"sentinel known-sentinel {SERVICE} 127.0.0.1 {ports[j]} {ids[j]}"
                    for j in range(3)
                    if j != i
                ),
            ]
            sentinel = ConfigFileServer(lines, "--sentinel", port=port)
            servers.append(sentinel.start())
            sentinels.append(sentinel)

        def ready() -> bool:
            for sentinel in sentinels:
                with admin(sentinel.port) as client:
                    state = client.sentinel_master(SERVICE)
                    replicas = client.sentinel_slaves(SERVICE)
                if state["num-other-sentinels"] != 2 or len(replicas) != 1:
                    return False
                if replicas[0].get("master-link-status") != "ok":
                    return False
            return True

        wait_for(ready, 15, "the sentinels to agree on the deployment")
        yield SentinelDeployment(master, replica, sentinels)
    finally:
        for server in servers:
            server.cleanup()


# ---------------------------------------------------------------------- Cluster


@dataclass
class ClusterDeployment:
    nodes: list[RedisServer]
    ids: list[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def node_of_slot(self, slot: int, ask: int = 0) -> int:
        """Index of the node that owns ``slot``, as node ``ask`` sees it."""
        owner = self._owner(ask, slot)
        if owner is None:
            raise AssertionError(f"slot {slot} is not served")
        return owner

    def start_migration(self, slot: int, target: int) -> int:
        """Mark ``slot`` IMPORTING on node ``target`` and MIGRATING on its owner, as
        redis-cli does; returns the owner's index."""
        source = self.node_of_slot(slot)
        with admin(self.nodes[target].port) as dst:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self.ids[source])
        with admin(self.nodes[source].port) as src:
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self.ids[target])
        return source

    def move_keys(self, source: int, target: int, keys: list[str]) -> None:
        with admin(self.nodes[source].port) as src:
            src.execute_command("MIGRATE", "127.0.0.1", self.nodes[target].port, "", 0, 5000, "KEYS", *keys)

    def finish_migration(self, slot: int, source: int, target: int) -> None:
        """Move the keys left in ``slot``, then give it to ``target`` on every node."""
        with admin(self.nodes[source].port) as src:
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                self.move_keys(source, target, [k.decode() if isinstance(k, bytes) else k for k in keys])
        others = [i for i in range(len(self.nodes)) if i not in (source, target)]
        for i in [target, source, *others]:
            with admin(self.nodes[i].port) as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", self.ids[target])
        everywhere = range(len(self.nodes))
        wait_for(lambda: all(self._owner(i, slot) == target for i in everywhere), 10, "the slot to move")

    def _owner(self, node: int, slot: int) -> int | None:
        with admin(self.nodes[node].port) as client:
            ranges = client.execute_command("CLUSTER SLOTS")
        for start, end, primary, *_ in ranges:
            if start <= slot <= end:
                return [n.port for n in self.nodes].index(int(primary[1]))
        return None


@contextlib.contextmanager
def cluster_deployment(masters: int = 3) -> Iterator[ClusterDeployment]:
    """``masters`` cluster nodes with the slots split evenly, joined with CLUSTER MEET.

    ``cluster-require-full-coverage no`` lets the live nodes keep serving their slots
    when a test kills one node.
    """
    args = [
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
        "--cluster-require-full-coverage", "no",
    ]  # fmt: skip
    # The bus port defaults to port + 10000, which may be taken or beyond 65535: pick one.
    bus_ports = [free_port() for _ in range(masters)]
    nodes = [RedisServer(*args, "--cluster-port", str(bus)) for bus in bus_ports]
    clients: list[redis.Redis] = []
    try:
        for node in nodes:
            node.start()
        clients = [admin(node.port) for node in nodes]
        ids = [client.execute_command("CLUSTER MYID") for client in clients]
        ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
        bounds = [SLOTS * i // masters for i in range(masters + 1)]
        for i, client in enumerate(clients):
            # Distinct epochs only spare the nodes a round of epoch-collision handling;
            # a node that already has one (seen on a loaded machine) converges anyway.
            with contextlib.suppress(redis.ResponseError):
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
            client.execute_command("CLUSTER ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for node, bus in zip(nodes[1:], bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus)

        def agreed() -> bool:
            for client in clients:
                info = cluster_info(client)
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != masters:
                    return False
                if int(info["cluster_slots_ok"]) != SLOTS:
                    return False
                if len(client.execute_command("CLUSTER SLOTS")) != masters:
                    return False
            return True

        wait_for(agreed, 20, "the cluster to form")
        for client in clients:
            client.close()
        yield ClusterDeployment(nodes, ids)
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.cleanup()


def key_per_slot(prefix: str) -> dict[int, str]:
    """One key for every hash slot, ``prefix`` + a number chosen to land in that slot."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < SLOTS:
        key = f"{prefix}{i}"
        keys.setdefault(key_slot(key.encode()), key)
        i += 1
    return keys


# ---------------------------------------------------------------------- TLS


@dataclass
class Certificates:
    ca: Path  # the CA that signed the server and client certificates
    other_ca: Path  # an unrelated CA: verifying against it must fail
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: str | os.PathLike[str]) -> Certificates:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and an
    unrelated CA, written as PEM files (EC keys: generating them takes milliseconds)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def authority(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(
        common: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, server: bool
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = authority("redispool test CA")
    _, other_cert = authority("redispool unrelated CA")
    server_key, server_cert = leaf("localhost", ca_key, ca_cert, server=True)
    client_key, client_cert = leaf("redispool client", ca_key, ca_cert, server=False)
    return Certificates(
        ca=write_cert(ca_cert, out / "ca.pem"),
        other_ca=write_cert(other_cert, out / "other-ca.pem"),
        server_cert=write_cert(server_cert, out / "server.pem"),
        server_key=write_key(server_key, out / "server.key"),
        client_cert=write_cert(client_cert, out / "client.pem"),
        client_key=write_key(client_key, out / "client.key"),
    )


def tls_server(
    certs: Certificates, *, client_certs: str = "optional", protocols: str = "TLSv1.2 TLSv1.3"
) -> RedisServer:
    """A server with a plaintext admin port (``.port``) and a TLS port (``.tls_port``)."""
    tls_port = free_port()
    server = RedisServer(
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", client_certs,
        "--tls-protocols", protocols,
    )  # fmt: skip
    server.tls_port = tls_port  # type: ignore[attr-defined]
    return server
