"""``redispool bench``: one workload through every pool, interleaved, as one report.

Candidates are rotated each round (round 0 starts with the first, round 1 with the
second, ...) so slow drift of a shared machine spreads over all of them instead of
favouring whichever ran first. Each (candidate, thread count, round) is a fresh pool;
samples from all rounds are pooled before percentiles are taken.

The floor (``floor.py``: a raw socket per thread, hiredis's packer and reader) runs
beside the pools in every round and thread count when the URL is plain ``redis://``:
no real client can beat it, so it shows how far each path is from the limit.

The report is a plain dict, the JSON document ``--json`` writes. Schema
``redispool-bench/2`` (times in microseconds, throughput in commands per second)::

    schema        "redispool-bench/2"
    environment   {redispool, redis_py, python, platform, cpus, server_version, server,
                   floor_engine}
    workload      {get_ratio, value_size, pipeline, duration, ops, keys, timeout,
                   threads: [int], max_connections: int|null, rounds, candidates: [str],
                   pool_iterations, instruction_gets}
    pool_only     [{candidate, label, ns_per_op, ratio}]   median over rounds;
                  ratio = ns_per_op / redis-py's (lower is better)
    results       [{candidate, label, threads, max_connections, ops, seconds,
                    ops_per_sec, ops_per_sec_rounds: [float], ratio, floor_ratio,
                    cpu_us_per_op, cpu_us_per_op_rounds: [float], cpu_ratio,
                    latency_us: {p50, p99, max},
                    acquire_wait_us: {p50, p99, max}, acquires,
                    connections_opened, errors, error_kinds: {name: count}}]
                  candidate "floor" is the raw-socket floor (no pool: acquires 0);
                  ops_per_sec = all commands / all seconds over the rounds;
                  ratio = median over rounds of ops/s / redis-py's ops/s in the
                  same round and thread count (higher is better; null when
                  redis-py was not run); floor_ratio = the same against the floor;
                  cpu_us_per_op = this process's CPU time (all threads) per command:
                  the client-side cost, far less sensitive to a busy machine than
                  ops/s; cpu_ratio = median of per-round CPU/op over redis-py's
                  (lower is better)
    instructions  {gets, per_get: {candidate: instructions}, ratio: {candidate: float},
                   skipped?: reason}   valgrind callgrind counts in the client
                  process (see instructions.py); ratio = over redis-py's (lower is
                  better); per_get is empty and ``skipped`` says why when not run

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
import urllib.parse
from collections.abc import Sequence
from typing import Any, TypeVar

import redis

import redispool

from . import floor as _floor
from . import instructions as _instructions
from . import table as _table
from . import workload as _workload
from .candidates import FLOOR, LABELS, REDIS_PY, checkout_cost
from .progress import Progress
from .workload import Control, Segment, Workload

SCHEMA = "redispool-bench/2"

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class BenchPlan:
    workload: Workload
    threads: tuple[int, ...] = (1, 4, 16, 64)
    max_connections: int | None = None  # None: as many as threads
    rounds: int = 3
    candidates: tuple[str, ...] = ()
    pool_iterations: int = 50000
    floor: bool = True  # run the raw-socket floor beside the pools (plain redis:// only)
    instruction_gets: int = 1000  # GETs counted under callgrind when valgrind exists; 0 skips

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
    pools = [name for name in candidates if name != FLOOR]
    if floor_runs(plan, url) and FLOOR not in candidates:
        candidates.append(FLOOR)
    with _workload.prepared_keys(url, plan.workload) as (keys, server_version):
        pool_only = _pool_only(url, plan, pools, control, progress)
        segments = _segments(url, plan, candidates, keys, control, progress)
        counted = _instruction_counts(url, plan, candidates, progress)
    return {
        "schema": SCHEMA,
        "environment": {**environment(server_version, server), "floor_engine": _floor.ENGINE},
        "workload": {
            **dataclasses.asdict(plan.workload),
            "threads": list(plan.threads),
            "max_connections": plan.max_connections,
            "rounds": plan.rounds,
            "candidates": candidates,
            "pool_iterations": plan.pool_iterations,
            "instruction_gets": plan.instruction_gets,
        },
        "pool_only": pool_only,
        "results": _aggregate(segments, candidates, plan),
        "instructions": counted,
    }


def floor_runs(plan: BenchPlan, url: str) -> bool:
    """The floor speaks plain TCP: not for rediss:// or unix:// URLs."""
    return plan.floor and urllib.parse.urlsplit(url).scheme == "redis"


def steps(plan: BenchPlan) -> int:
    """Progress steps of a whole run (instruction counting included when it will run)."""
    names = len(plan.candidates) + (1 if plan.floor else 0)
    pools = len(plan.candidates)
    total = plan.rounds * (names * len(plan.threads) + (pools if plan.pool_iterations else 0))
    if plan.instruction_gets and _instructions.valgrind() is not None:
        total += names + 1
    return total


def _instruction_counts(
    url: str, plan: BenchPlan, candidates: list[str], progress: Progress
) -> dict[str, Any]:
    if plan.instruction_gets <= 0:
        return {"gets": 0, "per_get": {}, "ratio": {}, "skipped": "turned off (--instruction-gets 0)"}
    counted = _instructions.count(url, candidates, plan.instruction_gets, progress)
    per_get = counted["per_get"]
    reference = per_get.get(REDIS_PY)
    counted["per_get"] = {name: per_get[name] for name in candidates if name in per_get}
    counted["ratio"] = {
        name: round(value / reference, 3) if reference else None for name, value in counted["per_get"].items()
    }
    return counted


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
            if not mine:
                continue
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
                "max_connections": threads if name == FLOOR else plan.size_for(threads),
                "ops": ops,
                "seconds": round(seconds, 4),
                "ops_per_sec": round(ops / seconds, 1) if seconds > 0 else 0.0,
                "cpu_us_per_op": round(sum(s.cpu for s in mine) / ops * 1e6, 2) if ops else None,
                "ops_per_sec_rounds": [round(s.ops / s.seconds, 1) if s.seconds > 0 else 0.0 for s in mine],
                "ratio": None,
                "floor_ratio": None,
                "cpu_us_per_op_rounds": [round(s.cpu / s.ops * 1e6, 2) if s.ops else None for s in mine],
                "cpu_ratio": None,
                "latency_us": summary_us(latencies),
                "acquire_wait_us": summary_us(waits),
                "acquires": len(waits),
                "connections_opened": sum(s.opened for s in mine),
                "errors": sum(errors.values()),
                "error_kinds": errors,
            }
        reference = by_name.get(REDIS_PY, {})
        floor_rounds = by_name.get(FLOOR, {}).get("ops_per_sec_rounds")
        for row in by_name.values():
            if reference:
                row["ratio"] = _paired_ratio(row["ops_per_sec_rounds"], reference["ops_per_sec_rounds"])
                row["cpu_ratio"] = _paired_ratio(
                    row["cpu_us_per_op_rounds"], reference["cpu_us_per_op_rounds"]
                )
            if floor_rounds:
                row["floor_ratio"] = _paired_ratio(row["ops_per_sec_rounds"], floor_rounds)
            rows.append(row)
    return rows


def _paired_ratio(mine: list[float | None], reference: list[float | None]) -> float | None:
    """Median over rounds of this round's figure over the reference's in the same round.

    Candidates of one round run back to back, so pairing them cancels most of the
    drift of a shared machine; the median ignores a round hit by a burst of load.
    """
    ratios = [a / b for a, b in zip(mine, reference, strict=True) if a is not None and b]
    return round(statistics.median(ratios), 3) if ratios else None


def render(report: dict[str, Any]) -> str:
    """The human report: a header, then each table with its legend and a one-line verdict."""
    env, work = report["environment"], report["workload"]
    mix = f"GET {work['get_ratio'] * 100:.0f}% / SET {100 - work['get_ratio'] * 100:.0f}%"
    length = f"{work['duration']}s" if work["duration"] is not None else f"{work['ops']} commands"
    lines = [
        f"redispool {env['redispool']} bench: redis-py {env['redis_py']}, Python {env['python']}, "
        f"{env['cpus']} CPUs, Redis {env['server_version']} ({env['server']})",
        f"workload: {mix}, {work['value_size']}-byte values, pipeline depth {work['pipeline']}, "
        f"{work['keys']} keys, {length} per run, {_table.plural(work['rounds'], 'interleaved round')} "
        "in rotating order; ratios are medians of per-round ratios",
        "",
    ]
    if report["pool_only"]:
        lines += _pool_only_table(report["pool_only"])
    lines += _instructions_table(report["instructions"])
    lines.append(
        "commands through redis.Redis, one table per thread count. cmd = one round trip; "
        "wait = time inside get_connection(); CPU/op = client CPU per command (all threads); "
        "opened/run = connections the pool created per run, warm-up included "
        "(conns when none broke; more means broken ones were replaced, fewer that the pool "
        "needed fewer); "
        f"the floor is {LABELS[FLOOR].split(': ', 1)[1]}, one per thread, no pool"
    )
    for threads in work["threads"]:
        mine = [r for r in report["results"] if r["threads"] == threads]
        if mine:
            lines += ["", *_results_table(mine, work["rounds"])]
    kinds = sorted({k for r in report["results"] for k in r["error_kinds"]})
    if kinds:
        lines += [
            "",
            "errors by kind: " + "; ".join(_error_line(r) for r in report["results"] if r["errors"]),
        ]
    return "\n".join(lines)


def _pool_only_table(pool_only: list[dict[str, Any]]) -> list[str]:
    rows = [[p["label"], _table.duration(p["ns_per_op"] / 1e9), _table.ratio(p["ratio"])] for p in pool_only]
    best = min(pool_only, key=lambda p: p["ns_per_op"])
    verdict = f"verdict: {best['label']} has the cheapest checkout+return, {_us(best['ns_per_op'] / 1000)}"
    if best["ratio"] is not None and best["candidate"] != REDIS_PY:
        verdict += f", {_table.ratio(best['ratio'])} redis-py's time"
    return [
        "pool-only cost: get_connection() + release(), no command, 1 thread, median of rounds",
        _table.render(["pool", "per checkout+return", "time vs redis-py (lower is better)"], rows),
        verdict,
        "",
    ]


def _instructions_table(counted: dict[str, Any]) -> list[str]:
    if not counted["per_get"]:
        return [f"instructions per GET: not counted, {counted.get('skipped', 'no data')}", ""]
    per_get, ratio = counted["per_get"], counted["ratio"]
    rows = [
        [LABELS[name], f"{value / 1000:,.1f}k", _table.ratio(ratio.get(name))]
        for name, value in per_get.items()
    ]
    pools = {name: value for name, value in per_get.items() if name != FLOOR}
    verdict = "verdict: "
    if pools:
        best = min(pools, key=pools.__getitem__)
        verdict += f"{LABELS[best]} runs the fewest instructions per GET, {pools[best] / 1000:,.1f}k"
        if ratio.get(best) is not None and best != REDIS_PY:
            verdict += f" ({_table.ratio(ratio[best])} redis-py's)"
        if per_get.get(FLOOR):
            verdict += f", {pools[best] / per_get[FLOOR]:.1f}x the floor's"
    return [
        f"instructions per GET in the client process (valgrind callgrind, {counted['gets']:,} GETs minus a "
        "0-GET baseline; steady even on a busy machine)",
        _table.render(["path", "instructions per GET", "vs redis-py (lower is better)"], rows),
        verdict,
        "",
    ]


def _results_table(rows_in: list[dict[str, Any]], rounds: int) -> list[str]:
    headers = [
        "threads", "conns", "pool", "ops/s", "vs redis-py (higher is better)", "CPU/op",
        "CPU vs redis-py (lower is better)", "cmd p50", "cmd p99", "cmd max",
        "wait p50", "wait p99", "wait max", "opened/run", "errors",
    ]  # fmt: skip
    rows = []
    for r in rows_in:
        lat, wait = r["latency_us"], r["acquire_wait_us"]
        rows.append(
            [
                str(r["threads"]), str(r["max_connections"]), r["label"], _table.count(r["ops_per_sec"]),
                _table.ratio(r["ratio"]), _us(r["cpu_us_per_op"]), _table.ratio(r["cpu_ratio"]),
                *(_us(lat[k]) for k in ("p50", "p99", "max")),
                *(_us(wait[k]) for k in ("p50", "p99", "max")),
                f"{r['connections_opened'] / rounds:g}", str(r["errors"]),
            ]
        )  # fmt: skip
    return [_table.render(headers, rows), verdict(rows_in)]


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line: the fastest path at this thread count, by how much, and how far from the floor."""
    threads = _table.plural(rows[0]["threads"], "thread")
    pools = [r for r in rows if r["candidate"] != FLOOR and r["ops"] > 0]
    if not pools:
        return f"verdict at {threads}: no pool completed a command"
    key = "ratio" if all(r["ratio"] is not None for r in pools) else "ops_per_sec"
    ranked = sorted(pools, key=lambda r: r[key], reverse=True)
    best = ranked[0]
    text = f"verdict at {threads}: {best['label']} is fastest"
    if best["candidate"] != REDIS_PY and best["ratio"] is not None:
        text += f", {_table.ratio(best['ratio'])} {LABELS[REDIS_PY]}'s throughput"
    elif len(ranked) > 1 and ranked[1]["ratio"] is not None and best["ratio"]:
        text += f", next {ranked[1]['label']} at {_table.ratio(ranked[1]['ratio'] / best['ratio'])}"
    if best["floor_ratio"] is not None:
        text += f", {best['floor_ratio'] * 100:.0f}% of the floor's"
    if best["errors"]:
        text += f" (with {best['errors']} errors)"
    failed = [r for r in pools if r["errors"] and r is not best]
    if failed:
        text += "; " + ", ".join(f"{r['label']} failed {r['errors']:,} commands" for r in failed)
        text += " (ops/s counts successes only)"
    return text


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
