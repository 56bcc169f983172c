"""Opening connections: one deadline, tenacity backoff with jitter, and a fail-fast circuit."""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import tenacity
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ._tracking import inner
from .errors import PoolError, PoolTimeout

log = logging.getLogger("redispool")

# Backoff between connect attempts of one caller: 50 ms doubling to 1 s, plus up to
# 50 ms of jitter so a herd of callers does not reconnect in lockstep.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
BACKOFF_JITTER = 0.05
# A connect attempt is not started with less time than this before the deadline.
MIN_CONNECT_BUDGET = 0.005


def backoff(attempt: int) -> float:
    """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
    growth: float = BACKOFF_FIRST * 2.0 ** (attempt - 1)
    return min(BACKOFF_MAX, growth) + random.uniform(0, BACKOFF_JITTER)


# While the circuit is open, at most one trial connect per this many seconds.
PROBE_INTERVAL = 0.5


def retryable(error: BaseException) -> bool:
    """Errors that a later attempt may not meet: refused, reset, timed out.

    Bad credentials, refused commands and TLS rejections (untrusted certificate,
    missing client certificate) are final: retrying only delays the report.
    """
    if isinstance(error, (AuthenticationError, AuthorizationError, PoolError)):
        return False
    if _tls_rejected(error):
        return False
    return isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError))


# TLS errors that mean "the connection dropped", not "the peers disagree": retryable.
_TLS_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError)


def _tls_rejected(error: BaseException) -> bool:
    """True when ``error`` (or what it wraps: redis-py re-raises SSL errors as
    ``ConnectionError``) is a failed certificate check or a handshake alert."""
    seen: BaseException | None = error
    for _ in range(5):  # a short chain; guards against cycles
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, _TLS_TRANSIENT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Circuit:
    """Consecutive connect failures across all callers of one pool.

    After failures have lasted ``fail_fast_after`` seconds the circuit opens: callers
    that need a new connection get :class:`ServerUnavailable` at once instead of each
    waiting out a connect timeout. A trial connect (background probe or a caller, at
    most every ``PROBE_INTERVAL``) closes it again. Mutated under the pool lock.
    """

    __slots__ = ("failing_since", "failures", "is_open", "last_attempt", "last_error", "limit")

    def __init__(self, fail_fast_after: float | None) -> None:
        self.limit = fail_fast_after
        self.failing_since: float | None = None
        self.failures = 0
        self.is_open = False
        self.last_attempt = 0.0
        self.last_error: BaseException | None = None

    def may_attempt(self, now: float) -> bool:
        """True when a connect may be tried; claims the trial slot when the circuit is open."""
        if not self.is_open:
            return True
        if now - self.last_attempt >= PROBE_INTERVAL:
            self.last_attempt = now
            return True
        return False

    def failed(self, now: float, error: BaseException) -> bool:
        """Record a failure; True when this one opened the circuit."""
        self.last_error = error
        self.last_attempt = now
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        if (
            not self.is_open
            and self.limit is not None
            and self.failures >= 2
            and now - self.failing_since >= self.limit
        ):
            self.is_open = True
            return True
        return False

    def succeeded(self) -> bool:
        """Record a success; True when it closed an open circuit."""
        was_open = self.is_open
        self.failing_since = None
        self.failures = 0
        self.is_open = False
        self.last_error = None
        return was_open


# Swapped in for the connection's own Retry while it connects: redis-py's connect()
# retries with backoff (8.x: 3 times, up to 10 s apart), which would blow the acquire
# deadline and hide every failure from the pool's own backoff and circuit.
_ONE_TRY = Retry(NoBackoff(), 0)
_ABSENT = object()


class DeadlinePassed(PoolTimeout):
    """The acquire deadline passed while connecting or checking (the pool words it)."""


def connect_within(conn: Any, deadline: float | None) -> None:
    """Connect ``conn`` once through its own ``connect()``, bounded by ``deadline``.

    ``connect()`` is what runs, so a subclass's override (an instrumented class, a test
    double) is always called. The TCP connect and the handshake are bounded by the time
    left; redis-py's own connect retries are switched off for the call, so the pool's
    backoff owns retries and sees every failure. Each handshake reply (HELLO, AUTH,
    CLIENT SETINFO, SELECT) is read with the time left then, so their round trips cannot
    add up past the deadline.
    """
    real = inner(conn)
    saved_connect = getattr(real, "socket_connect_timeout", _ABSENT)
    saved_read = getattr(real, "socket_timeout", _ABSENT)
    saved_retry = getattr(real, "retry", _ABSENT)
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= MIN_CONNECT_BUDGET:  # a connect started now could only time out late
            raise DeadlinePassed("the acquire deadline passed before a connection could be opened")
        if saved_connect is not _ABSENT:
            real.socket_connect_timeout = _smaller(saved_connect, remaining)
        if saved_read is not _ABSENT:
            real.socket_timeout = _smaller(saved_read, remaining)
            _bound_handshake_reads(real, deadline, saved_read)
    if saved_retry is not _ABSENT:
        real.retry = _ONE_TRY
    try:
        conn.connect()
    except TimeoutError:
        disconnect = getattr(real, "disconnect", None)
        if disconnect is not None:
            disconnect()
        raise RedisTimeoutError("Timeout connecting to server") from None
    finally:
        if saved_retry is not _ABSENT:
            real.retry = saved_retry
        if deadline is not None:
            vars(real).pop("read_response", None)  # the bound set by _bound_handshake_reads
            if saved_connect is not _ABSENT:
                real.socket_connect_timeout = saved_connect
            if saved_read is not _ABSENT:
                real.socket_timeout = saved_read
                sock = getattr(real, "_sock", None)
                if isinstance(sock, socket.socket):
                    sock.settimeout(saved_read)  # type: ignore[arg-type]


def _bound_handshake_reads(real: Any, deadline: float, configured: Any) -> None:
    """Until ``connect_within`` removes it, every ``read_response`` of ``real`` first
    sets its socket's timeout to the time left before ``deadline``."""
    if "read_response" in vars(real):
        return  # an instance-level override of the user's own: leave it alone
    read = real.read_response

    def bounded(*args: Any, **kwargs: Any) -> Any:
        sock = getattr(real, "_sock", None)
        if isinstance(sock, socket.socket):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlinePassed("the acquire deadline passed during the connection handshake")
            sock.settimeout(_smaller(configured, left))
        return read(*args, **kwargs)

    real.read_response = bounded


def _smaller(configured: Any, remaining: float) -> float:
    return remaining if configured is None else min(float(configured), remaining)


def open_with_backoff(
    attempt: Callable[[], Any],
    deadline: float | None,
    circuit_check: Callable[[], None],
) -> Any:
    """Call ``attempt`` until it succeeds, a final error occurs, or ``deadline`` passes.

    ``circuit_check`` runs before every attempt and raises :class:`ServerUnavailable`
    when the pool is failing fast.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        delay = backoff(state.attempt_number)
        if deadline is None:
            return delay
        return max(0.0, min(delay, deadline - time.monotonic()))

    def stop(state: tenacity.RetryCallState) -> bool:
        # Stop when the next backoff would sleep into the deadline: an attempt started
        # with no time left could only fail, and would hide the last real connect error.
        if deadline is None:
            return False
        next_sleep = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (state.attempt_number - 1))
        return deadline - time.monotonic() <= next_sleep + MIN_CONNECT_BUDGET

    def guarded() -> Any:
        circuit_check()
        return attempt()

    retrying = tenacity.Retrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(retryable),
        reraise=True,
        before_sleep=lambda s: log.debug(
            "connect attempt %d failed (%s); retrying", s.attempt_number, _outcome(s)
        ),
    )
    return retrying(guarded)


def _outcome(state: tenacity.RetryCallState) -> object:
    return state.outcome.exception() if state.outcome is not None else None
