"""The private redis-server helper used by tests, the CLI and the examples."""

from __future__ import annotations

import pytest

from redispool._server import RedisServer


def test_start_failure_reports_what_the_server_said() -> None:
    server = RedisServer("--no-such-directive", "1")
    try:
        with pytest.raises(RuntimeError, match=r"(?s)exited at start:.*no-such-directive"):
            server.start()
        assert server.process is None
    finally:
        server.cleanup()


def test_stop_is_by_pid_and_idempotent() -> None:
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert server.pid is None
        server.stop()  # nothing left to stop
        server.start()
        assert server.pid not in (None, pid)
