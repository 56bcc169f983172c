"""The seed scenario with redispool.Client: a pool of five connections used as one client.

Eight threads share one client backed by at most five connections (each command borrows a
connection for exactly one round trip), a pipeline runs INCR twice on one connection and
reads back 2, and a loop prints each pooled connection's id and state. Runs with no
arguments (starts a private Redis unless REDIS_URL is set).
"""

from __future__ import annotations

import threading

from _common import redis_url

import redispool


def main() -> None:
    with redis_url() as url, redispool.Client.from_url(url, max_connections=5, timeout=2.0) as client:
        client.set("example:client:foo", "bar")
        print("get:", client.get("example:client:foo"))

        start = threading.Barrier(8)

        def worker(n: int) -> None:
            start.wait()  # all at once, so the pool really hands out several connections
            for i in range(50):
                client.set(f"example:client:{n}", i)
                assert client.get(f"example:client:{n}") == str(i).encode()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # A pipeline holds one connection from the first command to the last reply.
        client.delete("example:client:counter")
        with client.pipeline() as pipe:
            print("pipeline:", pipe.incr("example:client:counter").incr("example:client:counter").execute())
        assert client.get("example:client:counter") == b"2"
        print("read back:", client.get("example:client:counter"))

        for info in client.pool.connections():
            print(f"connection #{info.id}: {info.state} (used {info.uses}x)")
        stats = client.pool.stats()
        print(f"{stats['borrows']} borrows over {stats['size']} connections (max {stats['max']})")
        workers = [f"example:client:{n}" for n in range(8)]
        client.delete("example:client:foo", "example:client:counter", *workers)


if __name__ == "__main__":
    main()
