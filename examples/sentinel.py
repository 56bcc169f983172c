"""redis-py's Sentinel with redispool pools: master_for / slave_for over a private deployment.

Starts a master, a replica and one sentinel (quorum 1), each a private redis-server on a
free loopback port in its own temporary directory, then asks the sentinel for the master
and the replica through redispool.SentinelConnectionPool, writes, reads back, and prints
the pools' state. Everything is stopped by pid and removed at the end, also on errors.
Runs with no arguments; never touches another server.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.sentinel import Sentinel

import redispool
from redispool._server import RedisServer

SERVICE = "mymaster"


class SentinelServer(RedisServer):
    """A sentinel: it needs a config file of its own, which it rewrites."""

    def __init__(self, master_port: int) -> None:
        super().__init__()
        self.master_port = master_port

    def command(self) -> list[str]:
        conf = Path(self.dir) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        )
        return [self.binary, str(conf), "--sentinel"]


@contextlib.contextmanager
def deployment() -> Iterator[SentinelServer]:
    with contextlib.ExitStack() as stack:
        fast_sync = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
        master = stack.enter_context(RedisServer(*fast_sync))
        stack.enter_context(RedisServer("--replicaof", "127.0.0.1", str(master.port)))
        sentinel = SentinelServer(master.port)
        stack.enter_context(sentinel)
        with redis.Redis(port=master.port) as admin:
            deadline = time.monotonic() + 30
            while admin.info("replication")["connected_slaves"] < 1:  # no event to wait on
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not connect")
                time.sleep(0.05)
        yield sentinel


def main() -> None:
    with deployment() as sentinel_server:
        # Keywords here go to the data connections; sentinel_kwargs to the sentinel ones.
        sentinel = Sentinel(
            [("127.0.0.1", sentinel_server.port)], socket_timeout=5.0, sentinel_kwargs={"socket_timeout": 0.5}
        )
        pool_class = redispool.SentinelConnectionPool
        master = sentinel.master_for(
            SERVICE, connection_pool_class=pool_class, max_connections=20, timeout=2.0
        )
        replica = sentinel.slave_for(SERVICE, connection_pool_class=pool_class, max_connections=20)
        master.set("example:sentinel", "written to the master")
        master.wait(1, 2000)  # until the replica has it
        print("replica reads:", replica.get("example:sentinel"))
        print("master pool:", master.connection_pool)
        print("replica pool:", replica.connection_pool)
        print("master switches so far:", master.connection_pool.stats()["master_switches"])
        master.close()
        replica.close()
        for pool in (master.connection_pool, replica.connection_pool):
            pool.shutdown()
        for client in sentinel.sentinels:
            client.close()


if __name__ == "__main__":
    main()
