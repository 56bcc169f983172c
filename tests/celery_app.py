"""A Celery app on redispool pools, run as a worker process by test_contrib_celery.

The server comes from ``RP_CELERY_URL`` (``redis://host:port``); each process names its
connections ``rp-broker-<pid>`` and ``rp-result-<pid>`` so the test can count them.
"""

from __future__ import annotations

import os

from celery import Celery

import redispool.contrib.celery  # noqa: F401  (registers the redispool:// transport)

URL = os.environ.get("RP_CELERY_URL", "redis://127.0.0.1:6379")
BROKER_MAX = 6
RESULT_MAX = 2


def make_app(url: str) -> Celery:
    """A Celery app whose broker (db 0) and results (db 1) are on ``url``."""
    app = Celery(
        "tests.celery_app",
        broker=url.replace("redis://", "redispool://", 1) + "/0",
        backend=f"redispool.contrib.celery:RedisBackend+{url}/1",
    )
    app.conf.update(
        broker_transport_options={
            "max_connections": BROKER_MAX,
            "client_name": "rp-broker-{pid}",
            "redispool": {"timeout": 10},
        },
        result_backend_transport_options={
            "redispool": {"max_connections": RESULT_MAX, "client_name": "rp-result-{pid}", "timeout": 10},
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(URL)


@app.task
def whoami(number: int) -> list[int]:
    """The task's number and the pid of the process that ran it."""
    return [number, os.getpid()]
