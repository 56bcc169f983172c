"""Redis Cluster: redispool node pools under ``RedisCluster.from_url`` on a real 3-master cluster.

Covers keys in every slot, ``MOVED`` and ``ASK`` during a slot migration, an exhausted
node pool (a ``MaxConnectionsError`` that leaves the topology alone while the other nodes
keep serving), and a dead node that does not drag the other nodes' pools down.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import NodesManager, RedisCluster
from redis.crc import key_slot
from redis.exceptions import MaxConnectionsError

import redispool
from tests.deployments import SLOTS, ClusterDeployment, admin, cluster_deployment, cluster_info, key_per_slot
from tests.support import wait_until

# redis-py's RedisCluster sometimes drops a node client without closing it (on a topology
# refresh, or a node it gave up on), and the socket is then reported unclosed whenever the
# garbage collector reaches it. Those sockets are redis-py's, not the pool's: ignore the
# warning here, and collect them at the end of each test so they surface nowhere else.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_cluster_leftovers() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


# RedisCluster passes MaxConnectionsError through without a topology refresh, and keeps a
# failed node's pool, from redis-py 6.3 on.
REFRESH_FREE_EXHAUSTION = tuple(int(p) for p in redis.__version__.split(".")[:2]) >= (6, 3)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterDeployment]:
    with cluster_deployment() as deployment:
        yield deployment


def make_client(url: str, **options: Any) -> RedisCluster:
    return RedisCluster.from_url(url, connection_pool_class=redispool.cluster_pool_class(**options))


def close(client: RedisCluster) -> None:
    """Close the client and its node pools: RedisCluster.close() leaves pools it was
    given open (ClusterClient.close() does this itself)."""
    manager = client.nodes_manager
    nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values()]
    pools = [getattr(node.redis_connection, "connection_pool", None) for node in nodes]
    client.close()
    for pool in pools:
        if pool is not None:
            pool.close()


def node_pool(client: RedisCluster, key: str) -> redispool.ConnectionPool:
    pool = client.get_node_from_key(key).redis_connection.connection_pool
    assert isinstance(pool, redispool.ConnectionPool)
    return pool


def keys_on_distinct_nodes(client: RedisCluster, prefix: str) -> list[str]:
    """One key per node, in node order."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < len(client.get_primaries()):
        name = f"{prefix}{i}"
        found.setdefault(client.get_node_from_key(name).name, name)
        i += 1
    return [found[n] for n in sorted(found)]


def test_keys_in_every_slot_go_through_redispool_node_pools(cluster: ClusterDeployment, key: str) -> None:
    client = make_client(cluster.url, max_connections=3, timeout=2.0, ping_after_idle=None, idle_order="fifo")
    try:
        pools = {node.name: node.redis_connection.connection_pool for node in client.get_primaries()}
        assert len(pools) == 3
        for pool in pools.values():
            assert isinstance(pool, redispool.ConnectionPool)
            assert pool.options.max_connections == 3
            assert pool.options.timeout == 2.0
            assert pool.options.ping_after_idle is None
            assert pool.options.idle_order == "fifo"

        keys = key_per_slot(key)
        assert len(keys) == SLOTS
        pipe = client.pipeline()
        for slot, name in keys.items():
            pipe.set(name, slot)
        assert all(pipe.execute())
        pipe = client.pipeline()
        for name in keys.values():
            pipe.get(name)
        assert [int(v) for v in pipe.execute()] == list(keys)
        # Single commands too, a few per node.
        for slot in range(0, SLOTS, 997):
            assert client.get(keys[slot]) == str(slot).encode()

        # Every node holds its third of the slots, and each pool was used and is idle again.
        per_node = Counter(client.get_node_from_key(name).name for name in keys.values())
        assert sorted(per_node.values()) == [5461, 5461, 5462]
        for name, pool in pools.items():
            stats = pool.stats()
            assert stats["borrows"] > 0, name
            assert stats["in_use"] == 0 and stats["size"] <= 3
            assert stats["connect_errors"] == 0
    finally:
        close(client)


def test_moved_and_ask_during_a_slot_migration(cluster: ClusterDeployment, key: str) -> None:
    client = make_client(cluster.url, max_connections=4, timeout=2.0)
    try:
        tag = f"{{{key}m}}"
        slot = key_slot(tag.encode())
        names = [f"{tag}{i}" for i in range(20)]
        for name in names:
            client.set(name, name)
        source = cluster.node_of_slot(slot)
        target = (source + 1) % 3
        target_name = f"127.0.0.1:{cluster.nodes[target].port}"

        target_pool = client.get_node(node_name=target_name).redis_connection.connection_pool
        assert isinstance(target_pool, redispool.ConnectionPool)

        # Half-way: keys already moved answer ASK on the old owner, then the target serves them.
        assert cluster.start_migration(slot, target) == source
        cluster.move_keys(source, target, names[:10])
        before = target_pool.stats()["borrows"]
        assert [client.get(n) for n in names] == [n.encode() for n in names]
        assert target_pool.stats()["borrows"] >= before + 10

        cluster.finish_migration(slot, source, target)
        before = target_pool.stats()["borrows"]
        # The client still maps the slot to the old owner: MOVED, then the new owner answers.
        assert [client.get(n) for n in names] == [n.encode() for n in names]
        assert client.get_node_from_key(names[0]).name == target_name
        assert client.set(f"{tag}new", "x") and client.get(f"{tag}new") == b"x"
        assert target_pool.stats()["borrows"] >= before + len(names)
        for pool in (node.redis_connection.connection_pool for node in client.get_primaries()):
            assert pool.stats()["in_use"] == 0
    finally:
        close(client)


def test_an_exhausted_node_pool_raises_max_connections_error_and_others_keep_serving(
    cluster: ClusterDeployment, key: str
) -> None:
    client = make_client(cluster.url, max_connections=2, timeout=0.2)
    try:
        busy_key, *other_keys = keys_on_distinct_nodes(client, key)
        for name in (busy_key, *other_keys):
            client.set(name, "v")
        busy = node_pool(client, busy_key)
        held = [busy.get_connection(), busy.get_connection()]  # the node's pool is now full

        refreshes = Counter[str]()
        initialize = client.nodes_manager.initialize

        def counting_initialize(*args: Any, **kwargs: Any) -> Any:
            refreshes["initialize"] += 1
            return initialize(*args, **kwargs)

        client.nodes_manager.initialize = counting_initialize  # type: ignore[method-assign]

        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        start = threading.Barrier(6)

        def load(name: str) -> None:
            start.wait(timeout=10)
            for _ in range(5):
                try:
                    result = "ok" if client.get(name) == b"v" else "wrong"
                except MaxConnectionsError as error:
                    result = type(error).__name__
                with lock:
                    outcomes[f"{name == busy_key}:{result}"] += 1

        threads = [threading.Thread(target=load, args=(name,)) for name in [busy_key] * 2 + other_keys * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        # No request to the other nodes failed.
        assert outcomes["False:ok"] == 20
        if REFRESH_FREE_EXHAUSTION:
            # Every request to the full node timed out in its pool, and the cluster did not
            # mistake that for a failed node: same pool, no topology refresh.
            assert outcomes == {"True:PoolTimeout": 10, "False:ok": 20}
            assert busy.stats()["timeouts"] == 10
            assert client.get_node_from_key(busy_key).redis_connection.connection_pool is busy
            assert refreshes["initialize"] == 0
        else:
            # redis-py < 6.3 treats any ConnectionError as a node failure: the caller still
            # gets PoolTimeout, but the cluster then swaps in a new pool for the node.
            assert outcomes["True:PoolTimeout"] >= 1
            assert busy.stats()["timeouts"] >= 1
        for conn in held:
            busy.release(conn)
        assert client.get(busy_key) == b"v"
        assert busy.stats()["in_use"] == 0 and busy.stats()["connect_errors"] == 0
    finally:
        close(client)


# Cluster transactions (MULTI/EXEC on one slot) exist from redis-py 6 on. "no-waiting"
# refuses at once with TooManyWaiters (max_waiting=0) instead of waiting out the timeout.
PIPELINE_KINDS = [
    "busy-node-last",
    "busy-node-first",
    "no-waiting",
    *(["transaction"] if REFRESH_FREE_EXHAUSTION else []),
]


@pytest.mark.parametrize("kind", PIPELINE_KINDS)
def test_a_pipeline_to_an_exhausted_node_raises_pool_timeout_at_once_without_a_topology_refresh(
    cluster: ClusterDeployment, key: str, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    timeout = 0.3
    waiting = {"max_waiting": 0} if kind == "no-waiting" else {}
    client = redispool.ClusterClient.from_url(cluster.url, max_connections=1, timeout=timeout, **waiting)
    blocker: threading.Thread | None = None
    queue = ""
    try:
        busy_key, *other_keys = keys_on_distinct_nodes(client, key)
        # A transaction stays on one slot; a plain pipeline spans all three nodes, and the
        # busy node comes last (the others' connections are already taken) or first.
        if kind == "transaction":
            names = [f"{{{busy_key}}}{i}" for i in range(3)]
        else:
            names = [busy_key, *other_keys] if kind == "busy-node-first" else [*other_keys, busy_key]
        for name in (busy_key, *other_keys, *names):
            client.set(name, "v")
        busy = node_pool(client, busy_key)
        others = [node_pool(client, name) for name in other_keys]

        refreshes: list[float] = []
        initialize = NodesManager.initialize

        def counting_initialize(self: NodesManager, *args: Any, **kwargs: Any) -> Any:
            refreshes.append(time.monotonic())
            return initialize(self, *args, **kwargs)

        monkeypatch.setattr(NodesManager, "initialize", counting_initialize)

        # A BLPOP holds the busy node's only connection until the test pushes to its list.
        queue = f"{{{busy_key}}}queue"  # a hash tag: the busy key's slot
        popped: list[Any] = []
        blocker = threading.Thread(target=lambda: popped.append(client.blpop([queue], timeout=30)))
        blocker.start()
        wait_until(lambda: busy.stats()["in_use"] == 1)

        pipe = client.pipeline(transaction=kind == "transaction")
        for name in names:
            pipe.get(name)
        started = time.monotonic()
        expected = redispool.TooManyWaiters if waiting else redispool.PoolTimeout
        with pytest.raises(expected):
            pipe.execute()
        elapsed = time.monotonic() - started

        # One wait in the busy node's pool (none without waiting), then the error: no retry,
        # no refresh (redis-py's own pipeline handling took 3.3 s and 7 refreshes here), and
        # the connections the pipeline already held on the other nodes went back.
        assert (0 if waiting else timeout) <= elapsed < timeout + 1.0, elapsed
        assert refreshes == []
        assert busy.stats()["timeouts"] == (0 if waiting else 1)
        assert all(pool.stats()["in_use"] == 0 for pool in others)
        assert client.get_node_from_key(busy_key).redis_connection.connection_pool is busy

        # Once the BLPOP returns, the same pipeline object works again, on the same pools.
        with admin(client.get_node_from_key(busy_key).port) as node:
            node.rpush(queue, "x")
        blocker.join(timeout=10)
        assert [list(reply) for reply in popped] == [[queue.encode(), b"x"]]
        for name in names:
            pipe.get(name)
        assert pipe.execute() == [b"v"] * len(names)
        assert refreshes == []
        assert client.get_node_from_key(busy_key).redis_connection.connection_pool is busy
    finally:
        if blocker is not None and blocker.is_alive():
            with admin(client.get_node_from_key(queue).port) as node:
                node.rpush(queue, "x")
            blocker.join(timeout=10)
        client.close()


@pytest.mark.slow
def test_a_dead_node_does_not_poison_the_other_node_pools(key: str) -> None:
    with cluster_deployment() as deployment:
        client = redispool.ClusterClient.from_url(
            deployment.url, max_connections=3, timeout=0.5, fail_fast_after=0.5, socket_timeout=0.5
        )
        try:
            names = keys_on_distinct_nodes(client, key)
            for name in names:
                client.set(name, "v")
            pools = client.pools()
            assert len(pools) == 3 and all(isinstance(p, redispool.ConnectionPool) for p in pools.values())
            dead_name = client.get_node_from_key(names[0]).name
            dead = next(n for n in deployment.nodes if f"127.0.0.1:{n.port}" == dead_name)
            live = names[1:]
            dead.kill()

            for _ in range(2):
                with pytest.raises(redis.ConnectionError):
                    client.get(names[0])
            # The live nodes serve on, from pools that never saw an error.
            for _ in range(10):
                assert [client.get(n) for n in live] == [b"v", b"v"]
            stats = client.stats()
            if REFRESH_FREE_EXHAUSTION:  # older redis-py replaces a failed node's pool
                assert stats[dead_name]["connect_errors"] > 0
            for name in live:
                node = client.get_node_from_key(name).name
                assert stats[node]["connect_errors"] == 0, node
                assert stats[node]["failing_fast"] is False
                assert stats[node]["fail_fast"] == 0 and stats[node]["timeouts"] == 0
        finally:
            client.close()
        # ClusterClient owns its node pools: closing it closes their connections.
        assert all(p.stats()["idle"] == 0 for p in client.pools().values())


def test_cluster_pool_class_validates_and_merges_options() -> None:
    with pytest.raises(ValueError, match="min_idle"):
        redispool.cluster_pool_class(max_connections=2, min_idle=3)
    with pytest.raises(TypeError, match="timeout"):
        redispool.cluster_pool_class(timeout=[1.0])
    with pytest.raises(TypeError, match="did you mean 'max_connections'"):
        redispool.cluster_pool_class(max_conections=3)
    pool_class = redispool.cluster_pool_class(max_connections=7, timeout=1.5, socket_keepalive=True)
    pool = pool_class(host="127.0.0.1", port=1, max_connections=None, username="u", password="p")
    try:
        assert isinstance(pool, redispool.ConnectionPool)
        assert pool.options.max_connections == 7 and pool.options.timeout == 1.5
        assert pool.connection_kwargs["socket_keepalive"] is True
        # What RedisCluster passes itself wins, as with functools.partial.
        assert pool_class(host="127.0.0.1", port=1, max_connections=3).options.max_connections == 3
    finally:
        pool.shutdown()


def test_admin_helper_is_plain_redis(cluster: ClusterDeployment) -> None:
    with admin(cluster.nodes[0].port) as client:
        assert cluster_info(client)["cluster_state"] == "ok"
