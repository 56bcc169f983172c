"""Run every network fault against every pool and print the Markdown table of docs/reliability.md.

Needs root, iproute2 (``ip``, ``ss``), iptables and a redis-server: the faults are real
(a network namespace, a veth pair, iptables rules inside the namespace, SIGSTOP, a
restart, a delaying proxy on loopback); see ``tests/netfault.py``. Nothing outside the
namespace it creates is touched, and it removes everything it made.

    sudo .venv/bin/python benchmarks/faults_table.py            # the whole matrix, ~2.5 min
    sudo .venv/bin/python benchmarks/faults_table.py --faults blackhole,stall --kinds redis-py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faultload import KINDS, Outcome, Settings, idle_half_open, run_fault
from tests.netfault import FAULTS, Lab, prerequisites

LABELS = {
    "redis": "redispool + redis.Redis",
    "client": "redispool.Client",
    "redis-py": "redis-py BlockingConnectionPool",
}
DESCRIPTIONS = {
    "none": "none (control)",
    "blackhole": "blackhole 3 s (DROP both ways)",
    "loss": "5 % packet loss, 3 s",
    "reset": "TCP RST on established flows",
    "stall": "server SIGSTOP 2 s",
    "restart": "server restart",
    "latency": "+20 +/- 5 ms latency, 3 s",
    "slow_handshake": "SYN drop 3 s after CLIENT KILL",
}


IDLE_CASES = (("redis", 0.5), ("redis", None), ("client", 0.5), ("client", None), ("redis-py", None))
HEADER = (
    "| fault | pool | calls | wrong replies | late writes | errors (share of calls) "
    "| worst overshoot (machine lag) | recovery | slots kept |\n|---|---|---:|---:|---:|---|---:|---:|---|"
)


def row(outcome: Outcome, settings: Settings) -> str:
    errors = ", ".join(f"{name} {count}" for name, count in outcome.errors.most_common()) or "none"
    rate = f"{sum(outcome.errors.values()) / max(outcome.calls, 1):.1%}"
    recovery = "not in run" if outcome.recovery is None else f"{outcome.recovery:.2f} s"
    if outcome.errors_after_recovery:
        recovery += f", then {outcome.errors_after_recovery} errors"
    over = max(outcome.worst_overshoot, 0.0) * 1000
    slots = "yes" if outcome.slots_ok else f"**no**: {outcome.slots_detail}"
    if outcome.invariant:
        slots += f"; invariant broken: {outcome.invariant}"
    return (
        f"| {DESCRIPTIONS[outcome.fault]} | {LABELS[outcome.kind]} | {outcome.calls} | {outcome.wrong} | "
        f"{outcome.late_writes} | "
        f"{errors} ({rate}) | {over:.0f} ms ({outcome.lag * 1000:.0f} ms) | {recovery} | {slots} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated (default: all)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated (default: all)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--json", help="also write the raw outcomes to this file")
    args = parser.parse_args(argv)
    reason = prerequisites()
    if reason:
        parser.error(reason)
    settings = Settings(threads=args.threads)
    outcomes: list[Outcome] = []
    s = settings
    print(
        f"{s.threads} threads, max_connections={s.max_connections}, timeout={s.timeout}, "
        f"socket_timeout={s.socket_timeout}, socket_connect_timeout={s.socket_connect_timeout}, "
        f"ping_timeout={s.ping_timeout}; load runs {s.baseline} s before and {s.after} s after each fault\n"
    )
    print(HEADER)
    started = time.monotonic()
    with Lab() as lab:
        for fault in args.faults.split(","):
            for kind in args.kinds.split(","):
                outcome = run_fault(lab, kind, fault, settings)
                outcomes.append(outcome)
                print(row(outcome, settings), flush=True)
        print(
            "\nIdle connections silently forgotten by the network (a NAT or firewall timeout), "
            "then 8 threads run one GET each:\n"
        )
        print("| pool | ping_after_idle | errors | slowest call |\n|---|---:|---|---:|")
        for kind, ping_after_idle in IDLE_CASES:
            outcome = idle_half_open(lab, kind, settings, ping_after_idle)
            errors = ", ".join(f"{name} {count}" for name, count in outcome.errors.most_common()) or "none"
            shown = "n/a" if kind == "redis-py" else str(ping_after_idle)
            print(f"| {LABELS[kind]} | {shown} | {errors} | {outcome.overshoot['call']:.3f} s |", flush=True)
    print(f"\n(matrix took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.json:
        data = [{**vars(o), "errors": dict(o.errors), "worst_overshoot": o.worst_overshoot} for o in outcomes]
        Path(args.json).write_text(json.dumps(data, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
