"""Argument types for the command line: each parses one flag's text or raises
``argparse.ArgumentTypeError``, which argparse turns into a usage error (exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._options import OPTION_NAMES
from . import candidates as _candidates


def positive_int(text: str) -> int:
    return int(number(text, int, minimum=1))


def non_negative_int(text: str) -> int:
    return int(number(text, int, minimum=0))


def positive_float(text: str) -> float:
    value = float(number(text, float, minimum=0))
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text!r}")
    return value


def fraction(text: str) -> float:
    value = float(number(text, float, minimum=0))
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text!r}")
    return value


def number(text: str, kind: Callable[[str], Any], minimum: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        word = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {word}, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum:g} or more, not {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("needs at least one number, e.g. 1,4,16")
    return tuple(positive_int(p) for p in parts)


def candidate_list(text: str) -> tuple[str, ...]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    known = _candidates.available_candidates()
    for name in names:
        if name not in known:
            raise argparse.ArgumentTypeError(f"unknown pool {name!r}; choose from {', '.join(known)}")
    if not names:
        raise argparse.ArgumentTypeError(f"needs at least one of {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in OPTION_NAMES:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with a pool option ({', '.join(sorted(OPTION_NAMES))}), not {text!r}"
        )
    return name, value
