"""redis-py's RedisCluster with redispool node pools, on a private one-node cluster.

Starts one private redis-server in cluster mode on a free loopback port (its cluster
bus on another free port, its files in a temporary directory), gives it every slot, and
then talks to it twice: through plain RedisCluster with redispool.cluster_pool_class(),
and through redispool.ClusterClient, whose per-node pools and stats are at hand. A real
deployment has several masters; the code is the same. Stopped by pid at the end.
Runs with no arguments; never touches another server.
"""

from __future__ import annotations

import time

import redis
from redis.cluster import RedisCluster

import redispool
from redispool._server import RedisServer, free_port

SLOTS = 16384


def main() -> None:
    bus = str(free_port())  # the default, port + 10000, may be taken or beyond 65535
    with RedisServer(
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", bus
    ) as node:
        with redis.Redis(port=node.port) as admin:
            admin.execute_command("CLUSTER ADDSLOTS", *range(SLOTS))
            deadline = time.monotonic() + 30
            while admin.cluster("INFO")["cluster_state"] != "ok":  # no event to wait on
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not become ready")
                time.sleep(0.05)
        url = f"redis://127.0.0.1:{node.port}"

        rc = RedisCluster.from_url(
            url, connection_pool_class=redispool.cluster_pool_class(max_connections=20, timeout=1.0)
        )
        rc.set("example:cluster", "v")
        print("RedisCluster reads:", rc.get("example:cluster"))
        for cluster_node in rc.get_nodes():
            assert cluster_node.redis_connection is not None
            print("  node pool:", cluster_node.redis_connection.connection_pool)
            cluster_node.redis_connection.connection_pool.close()  # RedisCluster leaves given pools open
        rc.close()

        with redispool.ClusterClient.from_url(url, max_connections=20, timeout=1.0) as client:
            client.incr("example:cluster:n")
            for name, stats in client.stats().items():
                print(f"  {name}: {stats['borrows']} borrows, {stats['connects']} connects")


if __name__ == "__main__":
    main()
