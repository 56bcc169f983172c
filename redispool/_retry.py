"""The client's retry policy: which failures are worth a second try, and how to space them.

A command is run again only when both hold:

* it failed with a connection or timeout error (``redis.ConnectionError``,
  ``redis.TimeoutError``), not with an error of the pool itself (:class:`PoolTimeout`,
  :class:`ServerUnavailable`, ...), a refused login, or a server reply such as
  ``WRONGTYPE``: those would fail the same way again;
* running it twice cannot change the outcome: Redis flags it read-only (see
  :mod:`redispool._commands`), or the user listed it in ``idempotent``.

Each retry runs on a fresh connection from the pool (the failed one is closed), after an
exponential backoff with jitter, and no retry starts after the deadline.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar, cast

import tenacity
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _commands
from .errors import PoolError

try:  # redis-py >= 5.0.1: exhaustion of a plain redis-py pool
    from redis.exceptions import MaxConnectionsError
except ImportError:  # pragma: no cover - depends on the installed redis-py

    class MaxConnectionsError(Exception):  # type: ignore[no-redef]
        """Stand-in that nothing raises."""


log = logging.getLogger("redispool")

_T = TypeVar("_T")

# Errors that say "this connection, or the server right now, failed" rather than
# "this command is wrong" or "the pool has nothing for you".
_FINAL = (PoolError, MaxConnectionsError, AuthenticationError, AuthorizationError)


def retryable_error(error: BaseException) -> bool:
    """True for a connection or timeout error that another connection may not meet."""
    if isinstance(error, _FINAL):
        return False
    return isinstance(error, (RedisConnectionError, RedisTimeoutError))


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When and how :class:`Client` runs a read-only command again after a connection error.

    ``attempts`` counts the first try (``1`` never retries). The ``n``-th retry waits
    ``backoff * 2**(n-1)`` seconds, at most ``max_backoff``, plus up to ``jitter``
    seconds at random. No retry starts more than ``deadline`` seconds after the command
    started (plus its block time, for ``XREAD BLOCK``); ``None`` means no deadline.
    ``idempotent`` names extra commands safe to repeat, for example
    ``{"SET", "DEL", "EXPIRE"}`` when no other writer races you (a repeated ``SET`` can
    overwrite a newer value). ``retrying``, a ``tenacity.Retrying``, replaces
    ``attempts``, ``deadline`` and the backoff: its stop, wait and hooks apply as given,
    and its retry condition is combined (AND) with the rules above.
    """

    attempts: int = 3
    deadline: float | None = 10.0
    backoff: float = 0.05
    max_backoff: float = 1.0
    jitter: float = 0.05
    idempotent: Iterable[str] = frozenset()
    retrying: tenacity.Retrying | None = None

    def __post_init__(self) -> None:
        _check_int("attempts", self.attempts, minimum=1)
        if self.deadline is not None:
            _check_number("deadline", self.deadline, positive=True)
        _check_number("backoff", self.backoff)
        _check_number("max_backoff", self.max_backoff)
        _check_number("jitter", self.jitter)
        if isinstance(self.idempotent, (str, bytes)) or not isinstance(self.idempotent, Iterable):
            raise TypeError("idempotent must be a collection of command names, such as {'SET', 'DEL'}")
        names = list(self.idempotent)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"idempotent must hold command names as strings, not {type(name).__name__}")
        object.__setattr__(self, "idempotent", _commands.normalise(names))
        if self.retrying is not None and not isinstance(self.retrying, tenacity.Retrying):
            raise TypeError(f"retrying must be a tenacity.Retrying, not {type(self.retrying).__name__}")

    def allows(self, args: Sequence[Any], error: BaseException) -> bool:
        """True when ``args`` failing with ``error`` may be run again."""
        extra = cast(AbstractSet[str], self.idempotent)  # normalised to a frozenset above
        return retryable_error(error) and _commands.is_read_only(args, extra)

    def run(self, attempt: Callable[[], _T], first_error: BaseException, deadline: float | None) -> _T:
        """Retry ``attempt``, whose first try already failed with ``first_error``.

        Returns its first success, or raises the last error as it was raised, never a
        ``tenacity.RetryError``. ``deadline`` is a ``time.monotonic()`` instant.
        """
        replay = [first_error]

        def call() -> _T:
            # tenacity counts attempts from its first call; replaying the failure that
            # brought us here keeps its attempt numbers and backoff in step with reality.
            if replay:
                raise replay.pop()
            return attempt()

        return self._retrying(deadline)(call)

    def _retrying(self, deadline: float | None) -> tenacity.Retrying:
        if self.retrying is not None:
            return self.retrying.copy(
                retry=tenacity.retry_all(tenacity.retry_if_exception(retryable_error), self.retrying.retry),
                reraise=True,
            )
        # backoff * 2**(n-1), capped, plus jitter (wait_exponential_jitter's keywords
        # changed between tenacity 8 and 9, so it is built from stable parts).
        backoff = tenacity.wait_exponential(
            multiplier=self.backoff, max=self.max_backoff
        ) + tenacity.wait_random(0, self.jitter)

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= self.attempts:
                return True
            return deadline is not None and time.monotonic() >= deadline

        def wait(state: tenacity.RetryCallState) -> float:
            delay = float(backoff(state))
            if deadline is None:
                return delay
            return max(0.0, min(delay, deadline - time.monotonic()))

        return tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(retryable_error),
            reraise=True,
            before_sleep=_log_retry,
        )


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.debug(
        "attempt %d failed (%s: %s); retrying on a fresh connection",
        state.attempt_number,
        type(error).__name__,
        error,
    )


def coerce(value: Any) -> RetryPolicy | None:
    """Turn the ``retry=`` argument of :class:`Client` into a policy (or None: off)."""
    if value is None or value is False:
        return None
    if value is True:
        return RetryPolicy()
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, tenacity.Retrying):
        return RetryPolicy(retrying=value)
    if type(value).__module__.startswith("redis."):
        raise TypeError(
            "retry= takes a redispool.RetryPolicy, a tenacity.Retrying, True or None; "
            "redis-py's connection-level Retry repeats writes too: if you really want it, "
            "give it to redispool.ConnectionPool(retry=...) and pass the pool"
        )
    kind = type(value).__name__
    raise TypeError(f"retry must be a redispool.RetryPolicy, a tenacity.Retrying, True or None, not {kind}")


RetryPolicy.__module__ = "redispool"


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be {minimum} or more, not {value!r}")


def _check_number(name: str, value: Any, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be greater than 0, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, not {value!r}")
