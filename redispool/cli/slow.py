"""``redispool doctor``'s view of slow commands: ``SLOWLOG GET`` and ``INFO commandstats``.

"Timeout waiting for connection" usually means connections are held by slow commands,
not that the pool is too small. A connection busy for ``d`` seconds per command serves at
most ``1/d`` commands a second, so by Little's law a process doing ``R`` commands a second
with a mean hold of ``H`` seconds (server time plus round trip) keeps about ``R * H``
connections busy. This module reads both sources (read-only), and turns them into
findings about ``max_connections``.

A refused command (an ACL user without ``+slowlog`` or ``+info``, a renamed command on a
managed Redis) is reported in the output and the rest carries on; it is never fatal.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import redis

from . import table as _table

SLOWLOG_ENTRIES = 128  # read at most this many recent entries
SHOWN = 5  # rows shown in each table


@dataclasses.dataclass
class SlowEntry:
    seconds: float  # execution time on the server
    command: str  # the command and its first arguments, shortened
    when: int  # unix time it started


@dataclasses.dataclass
class CommandStat:
    name: str  # lower case, subcommands as "client|list"
    calls: int
    mean: float  # seconds per call on the server


@dataclasses.dataclass
class Load:
    slowlog: list[SlowEntry] = dataclasses.field(default_factory=list)
    slowlog_error: str | None = None
    threshold: float | None = None  # slowlog-log-slower-than in seconds; None: unknown or off
    stats: list[CommandStat] = dataclasses.field(default_factory=list)
    stats_error: str | None = None
    ops_per_sec: float | None = None  # the whole server's instantaneous_ops_per_sec


def read(client: redis.Redis) -> Load:
    """Read SLOWLOG GET, INFO commandstats and the server's current rate; never raises for ACL."""
    load = Load()
    try:
        entries: Any = client.slowlog_get(SLOWLOG_ENTRIES)
        load.slowlog = sorted((_entry(e) for e in entries), key=lambda e: e.seconds, reverse=True)
    except redis.ResponseError as error:
        load.slowlog_error = _refusal(error)
    try:
        config: Any = client.config_get("slowlog-log-slower-than")
        value = config.get("slowlog-log-slower-than")
        micros = int(value) if value is not None else -1
        load.threshold = micros / 1e6 if micros >= 0 else None
    except (redis.ResponseError, ValueError):
        pass  # CONFIG is often refused; doctor already reports that
    try:
        stats: Any = client.info("commandstats")
        load.stats = sorted(
            (_stat(name, fields) for name, fields in stats.items() if name.startswith("cmdstat_")),
            key=lambda s: s.mean,
            reverse=True,
        )
        info: Any = client.info("stats")
        rate = info.get("instantaneous_ops_per_sec")
        load.ops_per_sec = float(rate) if rate is not None else None
    except redis.ResponseError as error:
        load.stats_error = _refusal(error)
    return load


def _refusal(error: redis.ResponseError) -> str:
    text = str(error).strip()
    return f"not allowed ({text})" if text else "not allowed"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _entry(raw: Any) -> SlowEntry:
    command = raw.get("command", b"")
    if isinstance(command, (list, tuple)):
        command = b" ".join(c if isinstance(c, bytes) else str(c).encode() for c in command)
    text = _text(command)
    return SlowEntry(
        seconds=int(raw.get("duration", 0)) / 1e6,
        command=text if len(text) <= 60 else text[:57] + "...",
        when=int(raw.get("start_time", 0)),
    )


def _stat(name: str, fields: Any) -> CommandStat:
    calls = int(fields.get("calls", 0))
    mean = float(fields.get("usec_per_call", 0.0)) / 1e6
    return CommandStat(name=name.removeprefix("cmdstat_"), calls=calls, mean=mean)


def report(load: Load) -> list[str]:
    """The two tables as text lines (or why each is missing)."""
    lines: list[str] = []
    if load.slowlog_error:
        lines.append(f"slowest recent commands: SLOWLOG GET {load.slowlog_error}; slow commands unknown")
    elif not load.slowlog:
        limit = (
            "" if load.threshold is None else f" (it records commands over {_table.duration(load.threshold)})"
        )
        lines.append(f"slowest recent commands: the slow log is empty{limit}")
    else:
        lines.append(f"slowest recent commands (SLOWLOG GET, {len(load.slowlog)} entries):")
        rows = [[_table.duration(e.seconds), e.command] for e in load.slowlog[:SHOWN]]
        lines.append(_table.render(["server time", "command"], rows))
    if load.stats_error:
        lines.append(f"commands by mean latency: INFO commandstats {load.stats_error}")
    elif load.stats:
        lines.append("commands with the highest mean latency (INFO commandstats, since the last reset):")
        rows = [
            [s.name, _table.duration(s.mean), _table.count(s.calls), _serves(s.mean)]
            for s in load.stats[:SHOWN]
        ]
        headers = ["command", "mean server time", "calls", "one connection serves at most"]
        lines.append(_table.render(headers, rows))
    return lines


def _serves(mean: float) -> str:
    return "n/a" if mean <= 0 else f"{_table.count(1 / mean)} commands/s"


def mean_hold(load: Load, rtt: float) -> float | None:
    """Mean seconds a connection is held per command: server time weighted by calls, plus a round trip."""
    calls = sum(s.calls for s in load.stats)
    if not calls:
        return None
    return sum(s.mean * s.calls for s in load.stats) / calls + rtt


def sizing(
    load: Load, max_connections: int, processes: int, rtt: float, rate: float | None
) -> list[tuple[str, str]]:
    """(level, text) findings about max_connections from what the server saw."""
    found: list[tuple[str, str]] = []
    if load.slowlog:
        worst = load.slowlog[0]
        found.append(
            (
                "note",
                f"the slowest recent command took {_table.duration(worst.seconds)} ({worst.command}): "
                f"a connection held by it serves at most {_serves(worst.seconds + rtt)}; while "
                f"it runs, the pool has {_table.plural(max_connections - 1, 'connection')} left for "
                "everything else",
            )
        )
    hold = mean_hold(load, rtt)
    share = rate if rate is not None else (None if load.ops_per_sec is None else load.ops_per_sec / processes)
    if hold is None or not share:
        if load.stats and not share:
            found.append(("note", "the server is idle now, so no rate to size for; pass --ops-per-sec N"))
        return found
    need = max(1, math.ceil(share * hold))
    source = "you gave" if rate is not None else "this process's share of the server's current rate"
    text = (
        f"at {_table.count(share)} commands/s ({source}) with a mean hold of {_table.duration(hold)} "
        f"(server time plus round trip), about {need} connection{'s are' if need != 1 else ' is'} busy "
        f"at any moment (Little's law); max_connections is {max_connections}"
    )
    if need > max_connections:
        found.append(("warn", text + ": raise it, or move the slow commands off this pool"))
    else:
        found.append(("ok", text))
    return found
