"""Pool options: defaults, coercion from URL strings, and validation in one place."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from typing import Any, Literal

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
        raise TypeError(f"{key} must not be None")
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
        raise TypeError(f"{key} must be a number, not {type(value).__name__}")
    if spec.kind is int and not float(value).is_integer():
        raise TypeError(f"{key} must be a whole number, not {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{key} must be a finite number, not {value!r}")
    if spec.positive and value <= 0:
        raise ValueError(f"{key} must be greater than 0, not {value!r}")
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
        raise ValueError(f"{key} must be {word}, not {text!r}") from None


def split_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove redispool's own options from ``kwargs`` and return them."""
    return {key: kwargs.pop(key) for key in list(kwargs) if key in OPTION_NAMES}


def unknown_query_message(key: str, known: set[str]) -> str:
    """The message for a URL query parameter that nothing understands."""
    hint = difflib.get_close_matches(key, sorted(known | OPTION_NAMES), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"unknown query parameter {key!r} in the Redis URL{suggestion}"
