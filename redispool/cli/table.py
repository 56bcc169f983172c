"""Plain-text tables and number formats for the command line's reports.

Tables are also valid Markdown (pipes and a separator row), so a bench result can be
pasted into BENCHMARKS.md as it is. Text columns are left-aligned, numbers right-aligned.
"""

from __future__ import annotations

from collections.abc import Sequence


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; a column is right-aligned when every cell starts like a number."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    right = [all(_numeric(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _numeric(cell: str) -> bool:
    return (bool(cell) and (cell[0].isdigit() or cell[0] in "-+.")) or cell in ("n/a", "")


def duration(seconds: float | None) -> str:
    """``850ns``, ``12.3µs``, ``4.56ms`` or ``1.23s``: three significant figures or so."""
    if seconds is None:
        return "n/a"
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f}ns"
    if seconds < 1e-3:
        return _three(seconds * 1e6) + "µs"
    if seconds < 1:
        return _three(seconds * 1e3) + "ms"
    return _three(seconds) + "s"


def _three(value: float) -> str:
    # Never scientific notation: 999.7 stays "1000", not "1e+03".
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def count(value: float) -> str:
    """Thousands separated, no decimals: ``12,345``."""
    return f"{value:,.0f}"


def plural(n: int, word: str) -> str:
    """``1 thread``, ``4 threads``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"
