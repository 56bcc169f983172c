"""``redispool bench``: one workload through every pool, interleaved, as one report.

Candidates are rotated each round (round 0 starts with the first, round 1 with the
second, ...) so slow drift of a shared machine spreads over all of them instead of
favouring whichever ran first. Each (candidate, thread count, round) is a fresh pool;
samples from all rounds are pooled before percentiles are taken.

The report is a plain dict, the JSON document ``--json`` writes. Schema
``redispool-bench/1`` (times in microseconds, throughput in commands per second)::

    schema        "redispool-bench/1"
    environment   {redispool, redis_py, python, platform, cpus, server_version, server}
    workload      {get_ratio, value_size, pipeline, duration, ops, keys, timeout,
                   threads: [int], max_connections: int|null, rounds, candidates: [str],
                   pool_iterations}
    pool_only     [{candidate, label, ns_per_op, ratio}]   median over rounds;
                  ratio = ns_per_op / redis-py's (lower is cheaper)
    results       [{candidate, label, threads, max_connections, ops, seconds,
                    ops_per_sec, ops_per_sec_rounds: [float], ratio, cpu_us_per_op,
                    latency_us: {p50, p99, max},
                    acquire_wait_us: {p50, p99, max}, acquires,
                    connections_opened, errors, error_kinds: {name: count}}]
                  ops_per_sec = all commands / all seconds over the rounds;
                  ratio = median over rounds of ops/s / redis-py's ops/s in the
                  same round and thread count (null when redis-py was not run);
                  cpu_us_per_op = this process's CPU time (all threads) per command:
                  the client-side cost, far less sensitive to a busy machine than ops/s

``max_connections: null`` in the workload means "equal to the thread count" for each
row. Percentiles are nearest-rank; an empty sample list gives null.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import redis

import redispool

from . import table as _table
from . import workload as _workload
from .candidates import LABELS, REDIS_PY, checkout_cost
from .progress import Progress
from .workload import Control, Segment, Workload

SCHEMA = "redispool-bench/1"

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class BenchPlan:
    workload: Workload
    threads: tuple[int, ...] = (1, 4, 16, 64)
    max_connections: int | None = None  # None: as many as threads
    rounds: int = 3
    candidates: tuple[str, ...] = ()
    pool_iterations: int = 50000

    def size_for(self, threads: int) -> int:
        return self.max_connections if self.max_connections is not None else threads


def percentile(samples: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of unsorted samples; None when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_us(samples: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max in microseconds, rounded to 0.1µs."""
    ordered = sorted(samples)

    def at(fraction: float) -> float | None:
        value = percentile(ordered, fraction)
        return None if value is None else round(value * 1e6, 1)

    return {"p50": at(0.50), "p99": at(0.99), "max": None if not ordered else round(ordered[-1] * 1e6, 1)}


def run(url: str, plan: BenchPlan, control: Control, progress: Progress, server: str) -> dict[str, Any]:
    """Run the whole plan against ``url`` and return the report (see the module doc)."""
    candidates = list(plan.candidates)
    with _workload.prepared_keys(url, plan.workload) as (keys, server_version):
        pool_only = _pool_only(url, plan, candidates, control, progress)
        segments = _segments(url, plan, candidates, keys, control, progress)
    return {
        "schema": SCHEMA,
        "environment": environment(server_version, server),
        "workload": {
            **dataclasses.asdict(plan.workload),
            "threads": list(plan.threads),
            "max_connections": plan.max_connections,
            "rounds": plan.rounds,
            "candidates": candidates,
            "pool_iterations": plan.pool_iterations,
        },
        "pool_only": pool_only,
        "results": _aggregate(segments, candidates, plan),
    }


def environment(server_version: str, server: str) -> dict[str, Any]:
    """Where the numbers came from; part of every report."""
    return {
        "redispool": redispool.__version__,
        "redis_py": redis.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "server_version": server_version,
        "server": server,
    }


def rotated(items: Sequence[_T], shift: int) -> list[_T]:
    """``items`` starting at ``shift``: round n runs candidate n first."""
    shift %= max(len(items), 1)
    return [*items[shift:], *items[:shift]]


def _pool_only(
    url: str, plan: BenchPlan, candidates: list[str], control: Control, progress: Progress
) -> list[dict[str, Any]]:
    costs: dict[str, list[float]] = {name: [] for name in candidates}
    if plan.pool_iterations <= 0:
        return []
    for round_no in range(plan.rounds):
        for name in rotated(candidates, round_no):
            if control.stop:
                raise KeyboardInterrupt
            progress.step(f"round {round_no + 1}/{plan.rounds}: pool-only checkout+return, {LABELS[name]}")
            costs[name].append(checkout_cost(name, url, plan.pool_iterations))
    medians = {name: statistics.median(values) for name, values in costs.items()}
    reference = medians.get(REDIS_PY)
    return [
        {
            "candidate": name,
            "label": LABELS[name],
            "ns_per_op": round(medians[name] * 1e9, 1),
            "ratio": round(medians[name] / reference, 3) if reference else None,
        }
        for name in candidates
    ]


def _segments(
    url: str, plan: BenchPlan, candidates: list[str], keys: list[str], control: Control, progress: Progress
) -> list[Segment]:
    segments: list[Segment] = []
    for round_no in range(plan.rounds):
        for threads in plan.threads:
            for name in rotated(candidates, round_no):
                if control.stop:
                    raise KeyboardInterrupt
                size = plan.size_for(threads)
                where = f"{_table.plural(threads, 'thread')} on {_table.plural(size, 'connection')}"
                progress.step(f"round {round_no + 1}/{plan.rounds}: {where}, {LABELS[name]}")
                segments.append(_workload.run_segment(name, url, plan.workload, threads, size, keys, control))
    return segments


def _aggregate(segments: list[Segment], candidates: list[str], plan: BenchPlan) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for threads in plan.threads:
        by_name: dict[str, dict[str, Any]] = {}
        for name in candidates:
            mine = [s for s in segments if s.candidate == name and s.threads == threads]
            ops = sum(s.ops for s in mine)
            seconds = sum(s.seconds for s in mine)
            errors: dict[str, int] = {}
            for s in mine:
                for kind, n in s.errors.items():
                    errors[kind] = errors.get(kind, 0) + n
            latencies = [x for s in mine for x in s.latencies]
            waits = [x for s in mine for x in s.waits]
            by_name[name] = {
                "candidate": name,
                "label": LABELS[name],
                "threads": threads,
                "max_connections": plan.size_for(threads),
                "ops": ops,
                "seconds": round(seconds, 4),
                "ops_per_sec": round(ops / seconds, 1) if seconds > 0 else 0.0,
                "cpu_us_per_op": round(sum(s.cpu for s in mine) / ops * 1e6, 2) if ops else None,
                "ops_per_sec_rounds": [round(s.ops / s.seconds, 1) if s.seconds > 0 else 0.0 for s in mine],
                "ratio": None,
                "latency_us": summary_us(latencies),
                "acquire_wait_us": summary_us(waits),
                "acquires": len(waits),
                "connections_opened": sum(s.opened for s in mine),
                "errors": sum(errors.values()),
                "error_kinds": errors,
            }
        reference = by_name.get(REDIS_PY, {}).get("ops_per_sec_rounds")
        for row in by_name.values():
            if reference:
                row["ratio"] = _paired_ratio(row["ops_per_sec_rounds"], reference)
            rows.append(row)
    return rows


def _paired_ratio(mine: list[float], reference: list[float]) -> float | None:
    """Median over rounds of this round's throughput over redis-py's in the same round.

    Candidates of one round run back to back, so pairing them cancels most of the
    drift of a shared machine; the median ignores a round hit by a burst of load.
    """
    ratios = [a / b for a, b in zip(mine, reference, strict=True) if b > 0]
    return round(statistics.median(ratios), 3) if ratios else None


def render(report: dict[str, Any]) -> str:
    """The human report: a header, the pool-only table and one results table."""
    env, work = report["environment"], report["workload"]
    mix = f"GET {work['get_ratio'] * 100:.0f}% / SET {100 - work['get_ratio'] * 100:.0f}%"
    length = f"{work['duration']}s" if work["duration"] is not None else f"{work['ops']} commands"
    lines = [
        f"redispool {env['redispool']} bench: redis-py {env['redis_py']}, Python {env['python']}, "
        f"{env['cpus']} CPUs, Redis {env['server_version']} ({env['server']})",
        f"workload: {mix}, {work['value_size']}-byte values, pipeline depth {work['pipeline']}, "
        f"{work['keys']} keys, {length} per run, {_table.plural(work['rounds'], 'interleaved round')}",
        "",
    ]
    if report["pool_only"]:
        lines.append("pool-only cost: get_connection() + release(), no command, 1 thread, median of rounds")
        rows = [
            [p["label"], _table.duration(p["ns_per_op"] / 1e9), _table.ratio(p["ratio"])]
            for p in report["pool_only"]
        ]
        lines += [_table.render(["pool", "per checkout+return", "vs redis-py"], rows), ""]
    headers = [
        "threads", "conns", "pool", "ops/s", "vs redis-py", "CPU/op", "cmd p50", "cmd p99", "cmd max",
        "wait p50", "wait p99", "wait max", "opened", "errors",
    ]  # fmt: skip
    rows = []
    for r in report["results"]:
        lat, wait = r["latency_us"], r["acquire_wait_us"]
        rows.append(
            [
                str(r["threads"]), str(r["max_connections"]), r["label"], _table.count(r["ops_per_sec"]),
                _table.ratio(r["ratio"]), _us(r["cpu_us_per_op"]),
                *(_us(lat[k]) for k in ("p50", "p99", "max")),
                *(_us(wait[k]) for k in ("p50", "p99", "max")),
                str(r["connections_opened"]), str(r["errors"]),
            ]
        )  # fmt: skip
    lines.append(
        "commands through redis.Redis (cmd = one round trip; wait = time inside get_connection; "
        "vs redis-py = median of per-round ratios; CPU/op = client CPU per command)"
    )
    lines.append(_table.render(headers, rows))
    kinds = sorted({k for r in report["results"] for k in r["error_kinds"]})
    if kinds:
        lines += [
            "",
            "errors by kind: " + "; ".join(_error_line(r) for r in report["results"] if r["errors"]),
        ]
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return _table.duration(None if value is None else value / 1e6)


def _error_line(row: dict[str, Any]) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(row["error_kinds"].items()))
    return f"{row['label']} at {row['threads']} threads: {kinds}"


def write_json(report: dict[str, Any], path: str) -> None:
    """Write the report as JSON to ``path``, or to stdout when ``path`` is ``-``."""
    text = json.dumps(report, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
