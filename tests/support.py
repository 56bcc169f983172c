"""Helpers shared by the test modules."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NoReturn

import pytest

from redispool._server import RedisServer, ServerNotFound

# CI sets this: a missing server or tool then fails the run instead of skipping.
REQUIRE_REDIS = os.environ.get("REDISPOOL_REQUIRE_REDIS") == "1"


def missing(reason: str) -> NoReturn:
    """A prerequisite (a redis-server, openssl) is absent: skip, or fail under CI."""
    if REQUIRE_REDIS:
        pytest.fail(f"REDISPOOL_REQUIRE_REDIS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def private_server(*args: str) -> RedisServer:
    """A not yet started private redis-server with extra arguments (see ``missing``)."""
    try:
        return RedisServer(*args)
    except ServerNotFound as error:
        missing(str(error))


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for another thread or process to reach a state that signals no event of its
    own (a pool's queue length, a server's client list). The outcome never depends on
    the polling interval: the condition itself is what is asserted."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)
