"""``redispool doctor``: effective connection settings and slow commands, against real servers.

Slow commands are made with ``DEBUG SLEEP`` on a private server only; the ACL test makes
a user without ``+slowlog`` on a private server too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import redispool
from redispool._server import RedisServer
from redispool.cli import main
from tests.support import private_server


def _effective(out: str) -> dict[str, str]:
    line = next(line for line in out.splitlines() if line.startswith("effective connection settings"))
    pairs = line.split("): ", 1)[1].split(", ")
    return dict(pair.split("=", 1) for pair in pairs)


def _socket_timeout_of_a_real_connection(url: str) -> float | None:
    """What a connection this pool lends really has on its socket, after connecting."""
    pool = redispool.ConnectionPool.from_url(url)
    try:
        connection = pool.get_connection()
        try:
            sock = connection._sock
            assert sock is not None
            timeout: float | None = sock.gettimeout()
            return timeout
        finally:
            pool.release(connection)
    finally:
        pool.shutdown()


def test_doctor_shows_the_socket_timeout_connections_really_get(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """redis-py 8 defaults socket_timeout to 5 s, 5.x to none: doctor says what the socket gets."""
    real = _socket_timeout_of_a_real_connection(redis_url)
    assert main(["doctor", redis_url, "--pings", "1"]) == 0
    out = capsys.readouterr().out
    shown = _effective(out)["socket_timeout"]
    if real is None:
        assert shown == "none*"
        assert "socket_timeout is not set" in out
    else:
        assert shown == f"{real:g}s*"  # * = redis-py's default, not in the URL
        assert f"socket_timeout is {real:g}s, redis-py {redis.__version__}'s default" in out
        assert "socket_timeout is not set" not in out
    protocol = redis.Connection().protocol
    assert _effective(out)["protocol"] == f"RESP{protocol or 2}*"

    given = redis_url + "?socket_timeout=2.5"
    assert _socket_timeout_of_a_real_connection(given) == 2.5
    assert main(["doctor", given, "--pings", "1"]) == 0
    assert _effective(capsys.readouterr().out)["socket_timeout"] == "2.5s"  # no star: set in the URL


@pytest.fixture
def debug_server() -> Iterator[RedisServer]:
    """A private server that allows DEBUG (Redis 7 refuses it unless enabled; 6 always allows it)."""
    server = private_server("--enable-debug-command", "yes")
    try:
        server.start()
    except RuntimeError:  # Redis < 7 does not know the option and has DEBUG on anyway
        server.cleanup()
        server = private_server()
        server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_doctor_reads_the_slow_log_and_commandstats(
    debug_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = redis.Redis.from_url(debug_server.url)
    admin.config_set("slowlog-log-slower-than", 10000)
    for _ in range(2):
        admin.execute_command("DEBUG", "SLEEP", "0.05")
    admin.close()
    url = debug_server.url + "?max_connections=2"
    argv = ["doctor", url, "--pings", "1", "--ops-per-sec", "1000"]
    assert main(argv) == 0  # warnings alone: exit 0
    out = capsys.readouterr().out
    assert "slowest recent commands (SLOWLOG GET, " in out
    slow_rows = [line for line in out.splitlines() if line.startswith("|") and "DEBUG SLEEP 0.05" in line]
    assert len(slow_rows) == 2
    for row in slow_rows:
        shown = row.split("|")[1].strip()
        assert shown.endswith("ms") and float(shown[:-2]) >= 50  # the server slept 50 ms
    assert "commands with the highest mean latency (INFO commandstats" in out
    stats_header = out.splitlines().index(
        next(line for line in out.splitlines() if line.startswith("| command "))
    )
    first = out.splitlines()[stats_header + 2]
    assert first.split("|")[1].strip() == "debug"  # the highest mean: two 50 ms sleeps
    serves = out.split("a connection held by it serves at most ", 1)[1].split(" commands/s")[0]
    assert 10 <= int(serves) <= 20  # 1 / (50 ms + a round trip)
    # 1000 commands/s with a mean hold in the tens of milliseconds keeps far more than 2 busy.
    warning = next(line for line in out.splitlines() if "Little's law" in line)
    assert warning.lstrip().startswith("warn") and "max_connections is 2" in warning
    assert main([*argv, "--strict"]) == 1
    capsys.readouterr()


def test_doctor_without_slowlog_rights_reports_and_carries_on(
    own_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = redis.Redis.from_url(own_server.url)
    admin.acl_setuser("noslow", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-slowlog"])
    admin.close()
    url = f"redis://noslow:pw@127.0.0.1:{own_server.port}/0"
    with pytest.raises(redis.ResponseError):  # the user really lacks the right
        redis.Redis.from_url(url).slowlog_get()
    assert main(["doctor", url, "--pings", "1"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("slowest recent commands"))
    assert "SLOWLOG GET not allowed" in line and "slow commands unknown" in line
    assert "commands with the highest mean latency" in out  # INFO still allowed: shown
    assert out.rstrip().splitlines()[-1].startswith("verdict:")
