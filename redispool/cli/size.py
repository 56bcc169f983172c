"""``redispool size``: sweep ``max_connections`` for one thread count and recommend one.

Each size runs the same workload with the same threads through one pool (redispool's
by default); sizes are rotated across rounds like bench's candidates. The
recommendation is the smallest size whose throughput is within ``tolerance`` (5%) of
the best size's and whose p99 acquire wait is at most ``max_wait``, with no errors.
More connections than that buy no throughput, only server memory and file descriptors.
When no size keeps the wait under the threshold, the report says so and recommends the
size with the lowest p99 wait among those near the peak.

Report schema ``redispool-size/1`` (``--json``)::

    schema          "redispool-size/1"
    environment     as in redispool-bench/1
    workload        {get_ratio, value_size, pipeline, duration, ops, keys, timeout,
                     threads, sizes: [int], rounds, candidate, max_wait_us, tolerance}
    results         [{max_connections, ops, seconds, ops_per_sec, relative,
                      latency_us: {p50, p99, max}, acquire_wait_us: {p50, p99, max},
                      connections_opened, errors}]   relative = ops_per_sec / peak
    recommendation  {max_connections: int|null, reason: str}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import table as _table
from . import workload as _workload
from .bench import environment, rotated, summary_us
from .candidates import LABELS, REDISPOOL
from .progress import Progress
from .workload import Control, Segment, Workload

SCHEMA = "redispool-size/1"


@dataclasses.dataclass(frozen=True)
class SizePlan:
    workload: Workload
    threads: int = 16
    sizes: tuple[int, ...] = ()
    rounds: int = 2
    candidate: str = REDISPOOL
    max_wait: float = 0.005  # seconds of p99 acquire wait we accept
    tolerance: float = 0.05  # "near the peak" means within this fraction of it


def default_sizes(threads: int) -> tuple[int, ...]:
    """Powers of two up to ``threads``, and ``threads`` itself: a pool larger than the
    number of threads using it can never have all its connections busy."""
    sizes = []
    size = 1
    while size < threads:
        sizes.append(size)
        size *= 2
    sizes.append(threads)
    return tuple(sizes)


def run(url: str, plan: SizePlan, control: Control, progress: Progress, server: str) -> dict[str, Any]:
    """Measure every size and return the report (see the module doc)."""
    sizes = list(plan.sizes or default_sizes(plan.threads))
    segments: list[Segment] = []
    with _workload.prepared_keys(url, plan.workload) as (keys, server_version):
        for round_no in range(plan.rounds):
            for size in rotated(sizes, round_no):
                if control.stop:
                    raise KeyboardInterrupt
                progress.step(
                    f"round {round_no + 1}/{plan.rounds}: {_table.plural(plan.threads, 'thread')} on "
                    f"{_table.plural(size, 'connection')}"
                )
                segments.append(
                    _workload.run_segment(
                        plan.candidate, url, plan.workload, plan.threads, size, keys, control
                    )
                )
    results = _aggregate(segments, sizes)
    best, reason = recommend(results, plan.tolerance, plan.max_wait)
    return {
        "schema": SCHEMA,
        "environment": environment(server_version, server),
        "workload": {
            **dataclasses.asdict(plan.workload),
            "threads": plan.threads,
            "sizes": sizes,
            "rounds": plan.rounds,
            "candidate": plan.candidate,
            "max_wait_us": round(plan.max_wait * 1e6, 1),
            "tolerance": plan.tolerance,
        },
        "results": results,
        "recommendation": {"max_connections": best, "reason": reason},
    }


def _aggregate(segments: list[Segment], sizes: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in sizes:
        mine = [s for s in segments if s.max_connections == size]
        ops = sum(s.ops for s in mine)
        seconds = sum(s.seconds for s in mine)
        rows.append(
            {
                "max_connections": size,
                "ops": ops,
                "seconds": round(seconds, 4),
                "ops_per_sec": round(ops / seconds, 1) if seconds > 0 else 0.0,
                "relative": None,
                "latency_us": summary_us([x for s in mine for x in s.latencies]),
                "acquire_wait_us": summary_us([x for s in mine for x in s.waits]),
                "connections_opened": sum(s.opened for s in mine),
                "errors": sum(n for s in mine for n in s.errors.values()),
            }
        )
    peak = max((r["ops_per_sec"] for r in rows), default=0.0)
    for row in rows:
        row["relative"] = round(row["ops_per_sec"] / peak, 3) if peak else None
    return rows


def recommend(rows: list[dict[str, Any]], tolerance: float, max_wait: float) -> tuple[int | None, str]:
    """The smallest size near the peak with a p99 wait under ``max_wait``, and why."""
    usable = [r for r in rows if r["errors"] == 0 and r["ops"] > 0]
    if not usable:
        return None, "every size failed (see the errors column); fix the errors before sizing the pool"
    peak_row = max(usable, key=lambda r: r["ops_per_sec"])
    peak = peak_row["ops_per_sec"]
    near = [r for r in usable if r["ops_per_sec"] >= (1 - tolerance) * peak]
    limit = _table.duration(max_wait)
    peak_text = f"{_table.count(peak)} ops/s at {_table.plural(peak_row['max_connections'], 'connection')}"
    fits = [r for r in near if _p99(r) <= max_wait * 1e6]
    if fits:
        best = min(fits, key=lambda r: r["max_connections"])
        return best["max_connections"], (
            f"{best['max_connections']} is the smallest size within {tolerance:.0%} of the peak "
            f"({peak_text}) whose p99 acquire wait ({_wait(best)}) is under {limit}; "
            "more connections add no throughput, only load on the server"
        )
    best = min(near, key=lambda r: (_p99(r), r["max_connections"]))
    return best["max_connections"], (
        f"no size keeps the p99 acquire wait under {limit}; {best['max_connections']} has the lowest "
        f"({_wait(best)}) within {tolerance:.0%} of the peak ({peak_text}): the bottleneck is not "
        "the pool (the server, the network or the GIL), so use fewer threads or more processes"
    )


def _p99(row: dict[str, Any]) -> float:
    value = row["acquire_wait_us"]["p99"]
    return float("inf") if value is None else float(value)


def _wait(row: dict[str, Any]) -> str:
    value = row["acquire_wait_us"]["p99"]
    return _table.duration(None if value is None else value / 1e6)


def render(report: dict[str, Any]) -> str:
    """The human report: one row per size, then the recommendation."""
    env, work = report["environment"], report["workload"]
    length = f"{work['duration']}s" if work["duration"] is not None else f"{work['ops']} commands"
    lines = [
        f"redispool {env['redispool']} size: {LABELS[work['candidate']]}, {work['threads']} threads, "
        f"GET {work['get_ratio'] * 100:.0f}%, {work['value_size']}-byte values, pipeline depth "
        f"{work['pipeline']}, {length} per run, {_table.plural(work['rounds'], 'round')}; "
        f"Redis {env['server_version']} ({env['server']}), {env['cpus']} CPUs",
        "",
    ]
    headers = ["max_connections", "ops/s", "of peak", "wait p50", "wait p99", "wait max", "cmd p99", "errors"]
    rows = []
    for r in report["results"]:
        wait, lat = r["acquire_wait_us"], r["latency_us"]
        rows.append(
            [
                str(r["max_connections"]), _table.count(r["ops_per_sec"]),
                "n/a" if r["relative"] is None else f"{r['relative']:.0%}",
                *(_table.duration(None if wait[k] is None else wait[k] / 1e6) for k in ("p50", "p99", "max")),
                _table.duration(None if lat["p99"] is None else lat["p99"] / 1e6), str(r["errors"]),
            ]
        )  # fmt: skip
    lines.append(_table.render(headers, rows))
    rec = report["recommendation"]
    lines.append("")
    if rec["max_connections"] is None:
        lines.append(f"no recommendation: {rec['reason']}")
    else:
        lines.append(f"recommended max_connections={rec['max_connections']}: {rec['reason']}")
    return "\n".join(lines)
