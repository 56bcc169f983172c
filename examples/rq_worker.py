"""RQ queues and an RQ worker on bounded redispool pools.

The parts to copy: ``Redis.from_url`` from ``redispool.contrib.rq`` for the queues, and
for the worker RQ's own ``--connection-class`` option::

    rq worker --connection-class redispool.contrib.rq.Redis \\
        --url 'redis://localhost:6379/0?max_connections=4&client_name=rq-{pid}'

Each job runs in a work horse that RQ forks; redispool gives the horse a fresh pool, so
it never uses the worker's sockets: the ``client_name`` shows the horse's own pid.

Run it with no arguments: it starts a private redis-server (or uses ``REDIS_URL``),
enqueues 10 jobs, runs ``rq worker --burst`` until the queue is empty, prints every
result and exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rq import Queue, get_current_job

from redispool.contrib.rq import Redis


def count_words(text: str) -> dict[str, object]:
    """The job: count words, and say which process and connection did it."""
    job = get_current_job()
    assert job is not None
    name = job.connection.client_info()["name"]
    return {"words": len(text.split()), "pid": os.getpid(), "connection": name}


def main() -> None:
    from _common import redis_url

    with redis_url() as url:
        url += ("&" if "?" in url else "?") + "max_connections=4&client_name=rq-{pid}"
        queue = Queue("example", connection=Redis.from_url(url))
        jobs = [queue.enqueue("rq_worker.count_words", "one two " * n) for n in range(1, 11)]
        subprocess.run(
            [sys.executable, "-m", "rq.cli", "worker", "example", "--burst", "--quiet",
             "--url", url, "--connection-class", "redispool.contrib.rq.Redis"],
            cwd=Path(__file__).parent, check=True, timeout=120,
        )  # fmt: skip
        for job in jobs:
            result = job.return_value(refresh=True)
            print(result)
            assert isinstance(result, dict) and result["connection"] == f"rq-{result['pid']}"
        queue.connection.connection_pool.close()


if __name__ == "__main__":
    main()
