"""Pool options: defaults, coercion from URL strings, and validation in one place."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.connection import Connection, parse_url

IdleOrder = Literal["lifo", "fifo"]

# Strings that mean "no value" for an option that accepts None (from a URL or settings file).
_NONE_WORDS = frozenset({"", "none", "null", "off", "never"})


@dataclasses.dataclass(frozen=True)
class _Spec:
    kind: type  # int, float or str
    allow_none: bool
    minimum: float | None = None
    positive: bool = False  # strictly greater than zero
    choices: tuple[str, ...] = ()


_SPECS: dict[str, _Spec] = {
    "max_connections": _Spec(int, False, positive=True),
    "timeout": _Spec(float, True, minimum=0),
    "max_waiting": _Spec(int, True, minimum=0),
    "min_idle": _Spec(int, False, minimum=0),
    "max_idle": _Spec(float, True, positive=True),
    "max_lifetime": _Spec(float, True, positive=True),
    "ping_after_idle": _Spec(float, True, minimum=0),
    "ping_timeout": _Spec(float, False, positive=True),
    "keepalive_interval": _Spec(float, True, positive=True),
    "fail_fast_after": _Spec(float, True, minimum=0),
    "leak_warning_after": _Spec(float, True, positive=True),
    "idle_order": _Spec(str, False, choices=("lifo", "fifo")),
    "name": _Spec(str, True),
}

OPTION_NAMES = frozenset(_SPECS)


@dataclasses.dataclass(frozen=True)
class PoolOptions:
    """Validated pool settings. Every field is documented in the README's options table."""

    max_connections: int = 50
    timeout: float | None = 5.0
    max_waiting: int | None = None
    min_idle: int = 0
    max_idle: float | None = 300.0
    max_lifetime: float | None = 3600.0
    ping_after_idle: float | None = 2.0
    ping_timeout: float = 1.0
    keepalive_interval: float | None = None
    fail_fast_after: float | None = 5.0
    leak_warning_after: float | None = None
    idle_order: IdleOrder = "lifo"
    name: str | None = None

    @classmethod
    def from_kwargs(cls, values: Mapping[str, Any]) -> PoolOptions:
        """Coerce and validate; raise ``TypeError``/``ValueError`` naming the parameter."""
        coerced = {key: _coerce(key, value) for key, value in values.items()}
        options = cls(**coerced)
        options.check()
        return options

    def replace(self, **changes: Any) -> PoolOptions:
        return PoolOptions.from_kwargs({**dataclasses.asdict(self), **changes})

    def check(self) -> None:
        """Cross-field rules; single-field rules run in :func:`_coerce`."""
        if self.min_idle > self.max_connections:
            raise ValueError(
                f"min_idle ({self.min_idle}) must not exceed max_connections ({self.max_connections})"
            )


def _coerce(key: str, value: Any) -> Any:
    spec = _SPECS[key]
    if isinstance(value, str) and spec.kind is not str:
        value = _from_string(key, value, spec)
    elif isinstance(value, str) and spec.allow_none and value.strip().lower() in _NONE_WORDS:
        value = None
    if value is None:
        if spec.allow_none:
            return None
        raise TypeError(_lead(key) + f"{key} must not be None")
    if spec.kind is str:
        if not isinstance(value, str):
            raise TypeError(f"{key} must be a string, not {type(value).__name__}")
        if spec.choices:
            value = value.lower()
            if value not in spec.choices:
                allowed = " or ".join(repr(c) for c in spec.choices)
                raise ValueError(f"{key} must be {allowed}, not {value!r}")
        return value
    # bool is an int subclass; True as a size or a duration is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(_lead(key) + f"{key} must be a number, not {type(value).__name__}")
    if spec.kind is int and not float(value).is_integer():
        raise TypeError(_lead(key) + f"{key} must be a whole number, not {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{key} must be a finite number, not {value!r}")
    if spec.positive and value <= 0:
        raise ValueError(_lead(key) + f"{key} must be greater than 0, not {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"{key} must be {spec.minimum:g} or more, not {value!r}")
    return int(value) if spec.kind is int else float(value)


def _from_string(key: str, text: str, spec: _Spec) -> Any:
    stripped = text.strip()
    if spec.allow_none and stripped.lower() in _NONE_WORDS:
        return None
    try:
        return spec.kind(stripped)
    except ValueError:
        word = "a whole number" if spec.kind is int else "a number"
        raise ValueError(_lead(key) + f"{key} must be {word}, not {text!r}") from None


def _lead(key: str) -> str:
    """redis-py's own wording comes first for max_connections: code matches on it."""
    return '"max_connections" must be a positive integer: ' if key == "max_connections" else ""


def split_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove redispool's own options from ``kwargs`` and return them."""
    return {key: kwargs.pop(key) for key in list(kwargs) if key in OPTION_NAMES}


def unknown_query_message(key: str, known: set[str]) -> str:
    """The message for a URL query parameter that nothing understands."""
    hint = difflib.get_close_matches(key, sorted(known | OPTION_NAMES), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"unknown query parameter {key!r} in the Redis URL{suggestion}"


# Keywords a pool receives from redis-py itself (Redis, Sentinel, RedisCluster) or takes for
# itself, whatever the connection class: they are never a typo.
_PLUMBING = frozenset(
    {
        "connection_class",
        "connection_pool",  # Sentinel hands its proxy to SentinelManagedConnection this way
        "cache",
        "cache_config",
        "cache_factory",
        "event_dispatcher",
        "himport_registry",
        "queue_class",
    }
)


@functools.cache
def _pool_parameters() -> frozenset[str]:
    names: set[str] = set(_PLUMBING)
    for pool_class in (redis.ConnectionPool, redis.BlockingConnectionPool):
        for cls in pool_class.__mro__:
            init = cls.__dict__.get("__init__")
            if init is not None and cls is not object:
                names.update(_named(init) or ())
    return frozenset(names)


def _named(function: Any) -> set[str] | None:
    """Named keyword parameters of ``function``; None when its signature is unknown."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    keep = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in keep and p.name != "self"}


def _takes_any(function: Any) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True  # cannot tell: do not refuse what may be right
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def connection_parameters(connection_class: Any) -> frozenset[str] | None:
    """The keywords ``connection_class`` accepts, or None when it accepts any.

    Walks the ``__init__`` of each class in the MRO: a ``**kwargs`` is taken to be passed
    on to the base class, so the walk goes on; the first ``__init__`` without one ends it.
    A chain of ``**kwargs`` that reaches ``object`` (redis-py's test doubles), a factory
    function with ``**kwargs``, or a signature Python cannot read accepts anything.
    """
    if not isinstance(connection_class, type):
        if _takes_any(connection_class):
            return None
        named = _named(connection_class)
        return None if named is None else frozenset(named)
    names: set[str] = set()
    for cls in connection_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        if cls is object:
            return None
        named = _named(init)
        if named is None:
            return None
        names |= named
        if not _takes_any(init):
            return frozenset(names)
    return None


def allowed_keywords(connection_class: Any) -> frozenset[str] | None:
    """What a pool of ``connection_class`` takes besides redispool's options; None: any."""
    known = connection_parameters(connection_class)
    return None if known is None else known | _pool_parameters()


def check_keywords(connection_class: Any, keywords: Mapping[str, Any]) -> None:
    """Refuse a keyword neither the pool nor ``connection_class`` takes, with a did-you-mean.

    ``keywords`` holds what is left once redispool's options are removed.
    """
    allowed = allowed_keywords(connection_class)
    if allowed is None:
        return
    for key in keywords:
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed | OPTION_NAMES), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            owner = getattr(connection_class, "__name__", repr(connection_class))
            raise TypeError(
                f"ConnectionPool got an unexpected keyword {key!r}: neither redispool nor "
                f"{owner} takes it{suggestion}"
            )


def split_url_options(url: str) -> tuple[str, dict[str, str]]:
    """Take redispool's options out of ``url``'s query string: ``(url without them, options)``.

    redis-py's ``parse_url`` would otherwise convert ``timeout`` and ``max_connections``
    itself and report a bad value without saying what is wanted. As in redis-py, the first
    occurrence of a repeated parameter wins; empty values are ignored.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query):
        if key in OPTION_NAMES:
            own.setdefault(key, value)
        else:
            rest.append((key, value))
    if not own:
        return url, {}
    return urlunsplit(parts._replace(query=urlencode(rest))), own


def url_options(values: Mapping[str, str]) -> dict[str, Any]:
    """Coerce redispool options taken from a URL; errors say they came from the URL."""
    coerced: dict[str, Any] = {}
    for key, value in values.items():
        try:
            coerced[key] = _coerce(key, value)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{error} (in the Redis URL)") from None
    return coerced


def from_url_keywords(url: str, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor keywords of ``ConnectionPool.from_url(url, **keywords)``.

    URL values win over keywords, except an explicit ``connection_class``, as in redis-py.
    A query parameter that neither redispool nor the connection class takes is refused
    with ``ValueError``; a class that accepts any keyword gets it.
    """
    stripped, own = split_url_options(url)
    parsed: dict[str, Any] = parse_url(stripped)  # type: ignore[no-untyped-call]
    connection_class = keywords.get("connection_class", parsed.get("connection_class", Connection))
    allowed = allowed_keywords(connection_class)
    if allowed is not None:
        for key in parsed:
            if key not in allowed:
                raise ValueError(unknown_query_message(key, set(allowed)))
    merged = dict(keywords)
    merged.update(parsed)
    if "connection_class" in keywords:
        merged["connection_class"] = keywords["connection_class"]
    merged.update(url_options(own))
    return merged
