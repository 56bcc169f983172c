"""Explicit checkout in a script: ``with pool.connection() as conn:``.

The connection is connected and healthy when handed out, and always goes back to the
pool, or is closed instead if the block raised a connection error. A per-call timeout
overrides the pool's.
"""

from __future__ import annotations

from _common import redis_url

import redispool


def main() -> None:
    with redis_url() as url:
        pool = redispool.ConnectionPool.from_url(url, max_connections=2, timeout=1.0)
        with pool.connection() as conn:
            conn.send_command("PING")
            print("PING ->", conn.read_response())
        with pool.connection(timeout=0.5) as first, pool.connection(timeout=0.5) as second:
            print("two connections held:", first is not second)
            try:
                with pool.connection(timeout=0):  # never waits
                    pass
            except redispool.PoolTimeout as error:
                print("third borrow refused at once:", error)
        print("in use after the blocks:", pool.stats()["in_use"])
        pool.shutdown()


if __name__ == "__main__":
    main()
