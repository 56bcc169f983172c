"""What ``pool.stats()`` and ``pool.connections()`` report."""

from __future__ import annotations

import dataclasses
from typing import Literal, TypedDict

# Gauges describe the pool now; counters are totals since the pool was created.
GAUGES = (
    "name",
    "max",
    "size",
    "idle",
    "in_use",
    "connecting",
    "closing",
    "waiting",
    "min_idle",
    "failing_fast",
)


@dataclasses.dataclass(slots=True)
class Counters:
    """Totals since the pool was created. Mutated only under the pool lock, so exact."""

    borrows: int = 0  # connections handed out
    returns: int = 0  # connections given back through release()
    waits: int = 0  # borrows that had to queue
    wait_time_total: float = 0.0  # seconds spent queued, summed
    wait_time_max: float = 0.0  # longest single wait, seconds
    timeouts: int = 0  # PoolTimeout raised
    refused: int = 0  # TooManyWaiters raised
    connects: int = 0  # connections opened
    connect_errors: int = 0  # connect attempts that failed
    fail_fast: int = 0  # ServerUnavailable raised while the circuit was open
    health_eof: int = 0  # borrow probe found the socket closed by the server
    health_error: int = 0  # borrow probe found a socket error
    health_data: int = 0  # borrow probe found unread bytes
    health_ping: int = 0  # PING after idle (or keepalive PING) failed or timed out
    session_resets: int = 0  # WATCH/SELECT/CLIENT SETNAME undone before reuse
    evicted_idle: int = 0  # closed after max_idle unused
    retired_lifetime: int = 0  # closed after max_lifetime
    closed_dirty: int = 0  # closed on return: unread replies, MULTI, pub/sub, MONITOR, ...
    returned_disconnected: int = 0  # returned already closed (after an error, pub/sub, MONITOR)
    drained: int = 0  # closed by drain() or reset(): idle ones at once, borrowed ones on return
    double_releases: int = 0  # release of a connection someone else borrowed since: ignored
    keepalive_pings: int = 0  # background PINGs of idle connections
    leaks: int = 0  # held longer than leak_warning_after
    reclaimed: int = 0  # borrowed, then garbage-collected without release()

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


COUNTERS = tuple(field.name for field in dataclasses.fields(Counters))


class PoolStats(TypedDict):
    """``pool.stats()``: gauges (now), then counters (totals since the pool was created)."""

    name: str
    max: int  # max_connections
    size: int  # idle + in_use + connecting + closing (+ idle ones out for a keepalive PING)
    idle: int
    in_use: int
    connecting: int
    closing: int  # leaving the pool: socket still open, so still counted in size
    waiting: int
    min_idle: int
    failing_fast: bool
    borrows: int
    returns: int
    waits: int
    wait_time_total: float
    wait_time_max: float
    timeouts: int
    refused: int
    connects: int
    connect_errors: int
    fail_fast: int
    health_eof: int
    health_error: int
    health_data: int
    health_ping: int
    session_resets: int
    evicted_idle: int
    retired_lifetime: int
    closed_dirty: int
    returned_disconnected: int
    drained: int
    double_releases: int
    keepalive_pings: int
    leaks: int
    reclaimed: int


class SentinelPoolStats(PoolStats):
    """``stats()`` of a Sentinel-managed pool: two more counters."""

    master_switches: int  # master changes this pool saw
    retired_previous_master: int  # connections to an old master closed because of them


State = Literal["idle", "in_use", "connecting"]


@dataclasses.dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one pooled connection, as returned by ``pool.connections()``."""

    id: int  # stable for the connection's life, unique within the pool
    state: State
    address: str  # host:port or the unix socket path; never credentials
    age: float  # seconds since it was opened
    idle_for: float  # seconds since it was last returned (0 while in use)
    uses: int  # times it was handed out
    holder: str | None  # name of the thread holding it, for in-use connections
