"""Transactions through redispool.Client: WATCH/MULTI/EXEC retried on conflict, and MULTI by hand.

Eight threads move money between three accounts with client.transaction(): each transfer
WATCHes both balances, reads them, and writes both in MULTI/EXEC on one connection; when
another thread got there first, EXEC fails and redis-py runs the function again. The total
never changes. Then client.pinned() runs a hand-written MULTI/EXEC on one connection.
Runs with no arguments (starts a private Redis unless REDIS_URL is set).
"""

from __future__ import annotations

import random
import threading
from typing import Any

from _common import redis_url

import redispool

ACCOUNTS = [f"example:account:{name}" for name in ("alice", "bob", "carol")]


def main() -> None:
    with redis_url() as url, redispool.Client.from_url(url, max_connections=4) as client:
        client.mset({account: 100 for account in ACCOUNTS})
        attempts = [0]
        attempts_lock = threading.Lock()

        def transfer(source: str, target: str, amount: int) -> None:
            def move(pipe: Any) -> None:
                with attempts_lock:
                    attempts[0] += 1
                balance = int(pipe.get(source))  # runs at once: we are WATCHing
                pipe.multi()  # from here on, commands are queued until EXEC
                if balance >= amount:
                    pipe.decrby(source, amount)
                    pipe.incrby(target, amount)

            client.transaction(move, source, target)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(40):
                source, target = rng.sample(ACCOUNTS, 2)
                transfer(source, target, rng.randint(1, 30))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        balances = [int(value) for value in client.mget(ACCOUNTS)]
        print("balances:", dict(zip(ACCOUNTS, balances, strict=True)))
        print(f"total: {sum(balances)}; 320 transfers took {attempts[0]} attempts (conflicts retried)")
        assert sum(balances) == 300

        # MULTI by hand needs one connection for the whole block: pin it.
        with client.pinned() as conn:
            conn.execute_command("MULTI")
            conn.execute_command("INCRBY", ACCOUNTS[0], 1)
            conn.execute_command("DECRBY", ACCOUNTS[1], 1)
            print("hand-written MULTI/EXEC:", conn.execute_command("EXEC"))
        client.delete(*ACCOUNTS)


if __name__ == "__main__":
    main()
