"""Pre-warm, stats and a leak warning.

The pool opens ``min_idle`` connections up front (``wait_ready`` blocks until they are
there), so the first requests pay no connect latency. A connection held past
``leak_warning_after`` is reported once, with the stack of the line that borrowed it.
"""

from __future__ import annotations

import logging
import threading

import redis
from _common import redis_url

import redispool


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with redis_url() as url:
        pool = redispool.ConnectionPool.from_url(
            url + "?min_idle=3&max_connections=8&leak_warning_after=0.2", name="example"
        )
        pool.wait_ready(timeout=10)
        print("after pre-warm:", {k: pool.stats()[k] for k in ("idle", "connects")})

        client = redis.Redis(connection_pool=pool)
        client.set("example:lifecycle", "warm")
        print("first command reused a warm connection:", pool.stats()["connects"] == 3)

        leaked = pool.get_connection()  # forgotten on purpose: look for this line in the warning
        warned = threading.Event()

        class Notice(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "leak_warning_after" in record.getMessage():
                    warned.set()

        logging.getLogger("redispool").addHandler(Notice())
        warned.wait(timeout=10)  # the background thread reports it within about a second
        pool.release(leaked)
        stats = pool.stats()
        print(
            "leaks reported:", stats["leaks"], "| borrows:", stats["borrows"], "| returns:", stats["returns"]
        )
        client.delete("example:lifecycle")
        pool.shutdown()


if __name__ == "__main__":
    main()
