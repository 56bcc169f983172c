"""Sentinel: redispool pools built by ``Sentinel.master_for``/``slave_for``, a real failover.

The failover test runs a master, a replica and three sentinels (quorum 2), writes from
several threads, SIGKILLs the master and checks that writes resume on the promoted
replica, that acknowledged writes survive, and that the pool never hands out a
connection to the old master once it knows of the switch. The switch and rotation tests
drive the pool with a scripted Sentinel manager over real servers, to check retirement
and round-robin exactly.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedSSLConnection

import redispool
from redispool._server import RedisServer
from tests.deployments import SERVICE, admin, sentinel_deployment, wait_for

ACQUIRE_TIMEOUT = 2.0
NO_RETRY = Retry(NoBackoff(), 0)  # the pool reconnects; keep redis-py's own retries out of the timing


class ScriptedSentinel:
    """Stands in for ``redis.sentinel.Sentinel``: the test decides where the master is."""

    def __init__(self, master: tuple[str, int], replicas: list[tuple[str, int]]) -> None:
        self.master = master
        self.replicas = replicas
        self.connection_kwargs: dict[str, Any] = {}

    def discover_master(self, service_name: str) -> tuple[str, int]:
        return self.master

    def discover_slaves(self, service_name: str) -> list[tuple[str, int]]:
        return list(self.replicas)


@pytest.fixture
def two_servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    with RedisServer() as a, RedisServer() as b:
        yield a, b


def address(server: RedisServer) -> tuple[str, int]:
    return ("127.0.0.1", server.port)


def close_sentinel(sentinel: Sentinel) -> None:
    for client in sentinel.sentinels:
        client.close()


def test_master_for_and_slave_for_build_redispool_pools(key: str) -> None:
    with sentinel_deployment() as deployment:
        sentinel = Sentinel(deployment.sentinel_addresses, socket_timeout=2.0)
        master = sentinel.master_for(
            SERVICE,
            connection_pool_class=redispool.SentinelConnectionPool,
            max_connections=3,
            timeout=ACQUIRE_TIMEOUT,
            min_idle=1,
            idle_order="fifo",
        )
        replica = sentinel.slave_for(
            SERVICE, connection_pool_class=redispool.SentinelConnectionPool, max_connections=2
        )
        try:
            pool = master.connection_pool
            # django-redis checks for redis-py's Sentinel pool; everything else wants ours.
            assert isinstance(pool, SentinelConnectionPool)
            assert isinstance(pool, redispool.ConnectionPool)
            assert pool.options.max_connections == 3
            assert pool.options.idle_order == "fifo"
            pool.wait_ready(5)  # min_idle is opened in the background from the start

            assert master.set(f"{key}k", "v")
            assert master.wait(1, 2000) == 1
            assert replica.get(f"{key}k") == b"v"
            assert master.execute_command("ROLE")[0] == b"master"
            assert replica.execute_command("ROLE")[0] == b"slave"

            with pool.connection() as conn:
                assert (conn.host, conn.port) == ("127.0.0.1", deployment.master.port)
            with replica.connection_pool.connection() as conn:
                assert (conn.host, conn.port) == ("127.0.0.1", deployment.replica.port)
            assert pool.name == f"{SERVICE}(master)"
            assert replica.connection_pool.name == f"{SERVICE}(replica)"
            assert f"{SERVICE}(master)" in repr(pool) and "in use" in repr(pool)
            stats = pool.stats()
            assert stats["connect_errors"] == 0 and stats["size"] <= 3
            assert stats["master_switches"] == 0 and stats["retired_previous_master"] == 0
        finally:
            master.close()
            replica.close()
            close_sentinel(sentinel)


@pytest.mark.slow
def test_failover_resumes_writes_on_the_promoted_replica(key: str) -> None:
    with sentinel_deployment() as deployment:
        old_master = ("127.0.0.1", deployment.master.port)
        promoted = ("127.0.0.1", deployment.replica.port)
        sentinel = Sentinel(deployment.sentinel_addresses, socket_timeout=1.0)
        client = sentinel.master_for(
            SERVICE,
            connection_pool_class=redispool.SentinelConnectionPool,
            max_connections=6,
            timeout=ACQUIRE_TIMEOUT,
            socket_timeout=1.0,
            socket_connect_timeout=0.5,
            retry=NO_RETRY,
        )
        pool: redispool.SentinelConnectionPool = client.connection_pool

        # Record every handout with the number of switches the pool knew of before it.
        handouts: list[tuple[int, tuple[str, int]]] = []
        borrowed_after_switch = threading.Event()
        borrow = pool.get_connection

        def recording_borrow(*args: Any, **kwargs: Any) -> Any:
            known = pool.stats()["master_switches"]
            conn = borrow(*args, **kwargs)
            handouts.append((known, (conn.host, conn.port)))
            if known and len([k for k, _ in handouts if k]) >= 20:
                borrowed_after_switch.set()
            return conn

        pool.get_connection = recording_borrow  # type: ignore[method-assign]

        acked: set[str] = set()
        errors: Counter[str] = Counter()
        killed = threading.Event()
        resumed = threading.Event()
        resumed_at: list[float] = []
        stop = threading.Event()
        lock = threading.Lock()
        first_ack = threading.Barrier(5)
        some_acked = threading.Event()  # at least one write is on the replica

        def writer(n: int) -> None:
            i = 0
            waited = False
            while not stop.is_set():
                name = f"{key}{n}:{i}"
                i += 1
                after_kill = killed.is_set()  # only a write begun after the kill can show a resume
                try:
                    pipe = client.pipeline(transaction=False)
                    pipe.set(name, "v")
                    pipe.wait(1, 200)  # acknowledged once the replica has it
                    _, replicas = pipe.execute()
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    with lock:
                        errors[type(error).__name__] += 1
                    continue
                with lock:
                    if replicas >= 1:
                        acked.add(name)
                        some_acked.set()
                    if after_kill and not resumed.is_set():
                        resumed_at.append(time.monotonic())
                        resumed.set()
                if not waited:
                    waited = True
                    first_ack.wait(timeout=10)

        threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            first_ack.wait(timeout=10)  # every writer has written once
            # On a loaded machine the first WAITs may time out: kill only once the
            # replica has acknowledged something, or the check below proves nothing.
            assert some_acked.wait(timeout=30), "the replica acknowledged no write"
            # Two connections stay borrowed across the failover, as slow requests would.
            held = [pool.get_connection(), pool.get_connection()]
            assert all((c.host, c.port) == old_master for c in held)
            switched, switched_at = deployment.watch_switch()

            killed_at = time.monotonic()
            deployment.master.kill()
            killed.set()

            assert switched.wait(timeout=20), "Sentinel did not fail over"
            failover = switched_at[0] - killed_at
            wait_for(lambda: deployment.masters() == {promoted}, 10, "every sentinel to name the replica")
            assert resumed.wait(timeout=failover + ACQUIRE_TIMEOUT + 10), "writes never resumed"
            # Writes resume within the failover time plus one acquire timeout.
            took = resumed_at[0] - killed_at
            assert took <= failover + ACQUIRE_TIMEOUT, f"resumed after {took:.2f}s, failover {failover:.2f}s"

            for conn in held:
                pool.release(conn)  # connections to the old master: retired, not pooled
            assert borrowed_after_switch.wait(timeout=10)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)

        try:
            # Every write the replica acknowledged before the kill is on the new master.
            assert acked, "no write was acknowledged before the kill"
            names = sorted(acked)
            with admin(promoted[1]) as new_master:
                values = new_master.mget(names)
            assert [n for n, v in zip(names, values, strict=True) if v != b"v"] == []

            # Once the pool knew of the switch it never handed out the old master.
            after = [addr for known, addr in handouts if known >= 1]
            assert after, "no borrow happened after the switch"
            assert set(after) == {promoted}

            stats = pool.stats()
            assert stats["master_switches"] == 1
            assert stats["retired_previous_master"] >= len(held)
            assert stats["size"] <= 6
            # No slot was lost: all six can be borrowed at once, all from the new master.
            conns = [pool.get_connection() for _ in range(6)]
            assert {(c.host, c.port) for c in conns} == {promoted}
            for conn in conns:
                pool.release(conn)
            assert pool.stats()["in_use"] == 0
        finally:
            client.close()
            close_sentinel(sentinel)


def test_master_switch_retires_idle_now_and_borrowed_on_return(
    two_servers: tuple[RedisServer, RedisServer],
) -> None:
    a, b = two_servers
    manager = ScriptedSentinel(address(a), [])
    pool = redispool.SentinelConnectionPool(SERVICE, manager, max_connections=4, timeout=1.0)
    try:
        conns = [pool.get_connection() for _ in range(4)]
        assert {(c.host, c.port) for c in conns} == {address(a)}
        kept = conns.pop()
        for conn in conns:
            pool.release(conn)
        assert pool.stats()["idle"] == 3
        assert pool.owns_connection(kept)  # redis-py's check, used by cluster code

        manager.master = address(b)
        assert pool.get_master_address() == address(b)  # what any new connect would ask
        assert not pool.owns_connection(kept)

        stats = pool.stats()
        assert stats["master_switches"] == 1
        assert stats["retired_previous_master"] == 3  # the idle ones, at once
        assert stats["idle"] == 0 and stats["in_use"] == 1
        assert all(c._sock is None for c in conns)

        pool.release(kept)  # still open and healthy, but to the old master
        assert kept._sock is None
        assert pool.stats()["retired_previous_master"] == 4

        # No slot lost (redis-py #4187): the full capacity is there, all on the new master.
        fresh = [pool.get_connection() for _ in range(4)]
        assert {(c.host, c.port) for c in fresh} == {address(b)}
        assert pool.stats()["size"] == 4
        for conn in fresh[1:]:
            pool.release(conn)

        # reset() (django-redis after a password change) forgets the master too.
        pool.reset()
        assert pool.master_address is None and pool.stats()["idle"] == 0
        pool.release(fresh[0])  # from before reset(): closed, not pooled
        assert fresh[0]._sock is None
        with pool.connection() as conn:
            assert conn.port == b.port and pool.master_address == address(b)
        assert pool.stats()["master_switches"] == 1  # rediscovery is not a switch
    finally:
        pool.shutdown()


def test_a_stale_idle_connection_is_never_handed_out(two_servers: tuple[RedisServer, RedisServer]) -> None:
    a, b = two_servers
    manager = ScriptedSentinel(address(a), [])
    pool = redispool.SentinelConnectionPool(SERVICE, manager, max_connections=2, timeout=1.0)
    try:
        first, second = pool.get_connection(), pool.get_connection()
        manager.master = address(b)
        pool.release(second)  # returned before the pool has heard of the switch: pooled
        assert pool.stats()["idle"] == 1
        # Another client connects and learns of the switch; our borrower must not get A.
        pool.proxy.master_address = address(b)
        conn = pool.get_connection()
        assert (conn.host, conn.port) == address(b)
        assert pool.stats()["retired_previous_master"] == 1
        pool.release(conn)
        pool.release(first)
        assert pool.stats()["retired_previous_master"] == 2
    finally:
        pool.shutdown()


def test_replica_connections_rotate(two_servers: tuple[RedisServer, RedisServer]) -> None:
    a, b = two_servers
    manager = ScriptedSentinel(("127.0.0.1", 1), [address(a), address(b)])
    pool = redispool.SentinelConnectionPool(SERVICE, manager, is_master=False, max_connections=4)
    try:
        conns = [pool.get_connection() for _ in range(4)]
        ports = [c.port for c in conns]
        # Round-robin from a random start: neighbours always differ, each replica gets two.
        assert Counter(ports) == {a.port: 2, b.port: 2}
        assert all(x != y for x, y in itertools.pairwise(ports))
        for conn in conns:
            pool.release(conn)
        # A replica that goes away is skipped by the next connects.
        manager.replicas = [address(b)]
        pool.disconnect()
        conns = [pool.get_connection() for _ in range(2)]
        assert {c.port for c in conns} == {b.port}
        for conn in conns:
            pool.release(conn)
    finally:
        pool.shutdown()


def test_min_idle_pool_connects_through_sentinel_from_the_start(
    two_servers: tuple[RedisServer, RedisServer],
) -> None:
    a, _ = two_servers
    pool = redispool.SentinelConnectionPool(SERVICE, ScriptedSentinel(address(a), []), min_idle=2)
    try:
        pool.wait_ready(5)
        assert pool.stats()["idle"] == 2 and pool.stats()["connect_errors"] == 0
        with pool.connection() as conn:
            assert conn.port == a.port
        assert pool.stats()["connects"] == 2
    finally:
        pool.shutdown()


def test_from_url_as_django_redis_calls_it(two_servers: tuple[RedisServer, RedisServer]) -> None:
    a, _ = two_servers
    manager = ScriptedSentinel(address(a), [])
    given = {"service_name": SERVICE, "sentinel_manager": manager, "is_master": True}
    pool = redispool.SentinelConnectionPool.from_url(f"redis://{SERVICE}/0?max_connections=3", **given)
    tls = redispool.SentinelConnectionPool.from_url(f"rediss://{SERVICE}/0", **given)
    try:
        assert pool.options.max_connections == 3
        assert redis.Redis(connection_pool=pool).ping()
        with pool.connection() as conn:
            assert conn.port == a.port  # Sentinel's answer, not the URL's placeholder host
        assert issubclass(tls.connection_class, SentinelManagedSSLConnection)
    finally:
        pool.shutdown()
        tls.shutdown()
