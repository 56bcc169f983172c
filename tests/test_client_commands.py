"""Command classification: which commands may run twice, and how long blocking ones block."""

from __future__ import annotations

import math
from typing import Any

import pytest
import redis

from redispool import _commands, _retry
from redispool._command_table import READONLY


@pytest.mark.parametrize(
    "args, name",
    [
        (("GET", "k"), "GET"),
        (("get", "k"), "GET"),
        ((b"GET", b"k"), "GET"),
        (("CLIENT LIST",), "CLIENT|LIST"),
        (("CLIENT", "LIST"), "CLIENT|LIST"),
        (("OBJECT", "ENCODING", "k"), "OBJECT|ENCODING"),
        (("XINFO STREAM", "s"), "XINFO|STREAM"),
        (("CONFIG", b"get", "maxmemory"), "CONFIG|GET"),
        (("CLIENT",), "CLIENT"),
        ((), ""),
        (("",), ""),
    ],
)
def test_command_name(args: tuple[Any, ...], name: str) -> None:
    assert _commands.command_name(args) == name


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "k"),
        ("MGET", "a", "b"),
        ("HGETALL", "h"),
        ("ZRANGE", "z", 0, -1),
        ("XREAD", "BLOCK", 10, "STREAMS", "s", "$"),
        ("EVAL_RO", "return 1", 0),
        ("EVALSHA_RO", "abc", 0),
        ("FCALL_RO", "f", 0),
        ("SCAN", 0),
        ("PING",),
        ("INFO",),
        ("CONFIG GET", "maxmemory"),
        ("OBJECT", "ENCODING", "k"),
        ("MEMORY USAGE", "k"),
        ("HTTL", "h", "FIELDS", 1, "f"),
    ],
)
def test_read_only(args: tuple[Any, ...]) -> None:
    assert _commands.is_read_only(args)


@pytest.mark.parametrize(
    "args",
    [
        ("INCRBY", "k", 1),
        ("SET", "k", "v"),
        ("LPUSH", "l", "x"),
        ("BLPOP", "l", 0),
        ("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"),
        ("EVAL", "return 1", 0),
        ("EVALSHA", "abc", 0),
        ("FCALL", "f", 0),
        ("PUBLISH", "c", "m"),
        ("MULTI",),
        ("SELECT", 1),
        ("CLIENT KILL", "ID", 1),
        ("CONFIG SET", "x", "y"),
        ("SCRIPT LOAD", "return 1"),
        ("NOSUCHCOMMAND",),
        (),
    ],
)
def test_not_read_only(args: tuple[Any, ...]) -> None:
    assert not _commands.is_read_only(args)


def test_declared_idempotent() -> None:
    extra = _commands.normalise(["set", "client setname", "OBJECT|FREQ"])
    assert extra == {"SET", "CLIENT|SETNAME", "OBJECT|FREQ"}
    assert _commands.is_read_only(("SET", "k", "v"), extra)
    assert _commands.is_read_only(("CLIENT SETNAME", "n"), extra)
    assert not _commands.is_read_only(("INCR", "k"), extra)


@pytest.mark.parametrize(
    "args, seconds",
    [
        (("BLPOP", "a", "b", 2), 2.0),
        (("BRPOP", "a", 0.5), 0.5),
        (("BLPOP", "a", 0), math.inf),
        ((b"BZPOPMIN", b"z", b"1.5"), 1.5),
        (("BZPOPMAX", "z", "3"), 3.0),
        (("BRPOPLPUSH", "a", "b", 4), 4.0),
        (("BLMOVE", "a", "b", "LEFT", "RIGHT", 5), 5.0),
        (("BLMPOP", 6, 1, "a", "LEFT"), 6.0),
        (("BZMPOP", 0, 1, "z", "MIN"), math.inf),
        (("XREAD", b"BLOCK", "1500", b"STREAMS", "s", "$"), 1.5),
        (("XREAD", "COUNT", 1, "BLOCK", 0, "STREAMS", "s", "$"), math.inf),
        (("XREADGROUP", "GROUP", "g", "c", "BLOCK", 250, "STREAMS", "s", ">"), 0.25),
        (("XREAD", "STREAMS", "s", "$"), None),
        (("XREAD", "STREAMS", "BLOCK", "$"), None),  # a stream named BLOCK is no option
        (("WAIT", 1, 500), 0.5),
        (("WAIT", 1, 0), math.inf),
        (("WAITAOF", 1, 0, 2000), 2.0),
        (("blpop", "a", 1), 1.0),
        (("GET", "k"), None),
        (("BLPOP",), None),
        (("BLPOP", "a", "soon"), None),
        (("BLPOP", "a", -1), None),
        (([1], "a"), None),
        ((), None),
    ],
)
def test_block_seconds(args: tuple[Any, ...], seconds: float | None) -> None:
    assert _commands.block_seconds(args) == seconds


def test_generated_table_agrees_with_the_server(redis_url: str) -> None:
    # Nothing in the table may be a write on the server the tests run against. (A newer
    # server may know read-only commands the table lacks: those are merely not retried.)
    # A bare connection: redis-py's pool API differs across 5.x (get_connection's argument).
    conn = redis.Connection(**redis.Redis.from_url(redis_url, protocol=2).connection_pool.connection_kwargs)
    try:
        conn.send_command("COMMAND")
        rows = conn.read_response()
    finally:
        conn.disconnect()
    flags: dict[str, set[bytes]] = {}

    def walk(rows: list[Any]) -> None:
        for row in rows:
            flags[row[0].decode().upper()] = set(row[2])
            if len(row) > 9 and row[9]:
                walk(row[9])

    walk(rows)
    known = READONLY & set(flags)
    assert known, "the server reported no command the table knows"
    assert {name for name in known if b"readonly" not in flags[name]} == set()
    for name in _commands.KEYLESS_SAFE & set(flags):
        assert b"write" not in flags[name], name


def test_error_classification() -> None:
    import redispool

    assert _retry.retryable_error(redis.ConnectionError("reset"))
    assert _retry.retryable_error(redis.TimeoutError("slow"))
    assert _retry.retryable_error(redis.BusyLoadingError("loading"))
    assert not _retry.retryable_error(redis.ResponseError("WRONGTYPE"))
    assert not _retry.retryable_error(redis.AuthenticationError("bad password"))
    assert not _retry.retryable_error(redispool.PoolTimeout("none free"))
    assert not _retry.retryable_error(redispool.ServerUnavailable("down"))
    assert not _retry.retryable_error(redispool.PoolClosed("shut"))
    assert not _retry.retryable_error(ValueError("bug"))
