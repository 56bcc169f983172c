"""The ``redispool`` command line: ``bench``, ``size`` and ``doctor``.

``redispool bench`` and ``redispool size`` use ``--url`` (or ``$REDIS_URL``); with
neither they start a private ``redis-server`` on a free loopback port and remove it
when the run ends, also on Ctrl-C or SIGTERM. They never touch a server the user did
not name, and on a named server they only write keys under a unique
``redispool-bench:<random>:`` prefix, deleted at the end.

Exit status: 0 success; 1 the server is unreachable, refuses AUTH, no redis-server
can be found, or (``doctor --strict``) a warning; 2 bad flags or options; 130
interrupted. User mistakes print one sentence, never a traceback.

Layout: this module parses flags and runs a command; ``bench``, ``size`` and ``doctor``
build the reports; ``workload`` drives the threads; ``candidates`` builds and instruments
the pools, ``floor`` the raw-socket floor; ``instructions`` counts instructions per GET
under callgrind; ``slow`` reads SLOWLOG and commandstats; ``table``, ``progress`` and
``argtypes`` are output and flag helpers. Nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

import redis

import redispool

from .._server import INSTALL_HINT, RedisServer, ServerNotFound
from . import bench as _bench
from . import candidates as _candidates
from . import doctor as _doctor
from . import size as _size
from .argtypes import (
    candidate_list,
    fraction,
    int_list,
    non_negative_int,
    option,
    positive_float,
    positive_int,
)
from .progress import Progress
from .workload import Control, Workload

PROG = "redispool"


class UserError(Exception):
    """An environment problem to explain in one sentence (exit 1)."""


class UsageError(Exception):
    """A bad URL or pool option, found after argparse (exit 2)."""


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark, size and check redispool against redis-py's pools.",
        epilog="Run `redispool COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {redispool.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser(
        "bench",
        help="one workload through every pool, interleaved; prints a comparison table",
        description="Run one workload through redis-py's ConnectionPool and BlockingConnectionPool, "
        "redispool.ConnectionPool and redispool.Client, beside a raw-socket floor, interleaved, against "
        "the same server; each table ends with a verdict (see docs/cli.md).",
    )
    _add_target(bench)
    bench.add_argument(
        "--threads",
        type=int_list,
        default=(1, 4, 16, 64),
        metavar="N,N,..",
        help="thread counts (1,4,16,64)",
    )
    bench.add_argument(
        "--max-connections",
        type=positive_int,
        metavar="N",
        help="pool size for every run (default: = threads)",
    )
    bench.add_argument("--rounds", type=positive_int, default=3, metavar="N", help="interleaved rounds (3)")
    bench.add_argument(
        "--candidates",
        type=candidate_list,
        metavar="NAME,..",
        help=f"pools to compare (default: all of {', '.join(_candidates.available_candidates())})",
    )
    bench.add_argument(
        "--pool-iterations",
        type=non_negative_int,
        default=50000,
        metavar="N",
        help="checkout+return pairs for the pool-only cost; 0 skips it (50000)",
    )
    bench.add_argument(
        "--instruction-gets",
        type=non_negative_int,
        default=1000,
        metavar="N",
        help="GETs per path counted under valgrind's callgrind when valgrind is on PATH; 0 skips (1000)",
    )
    bench.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="leave out the raw-socket floor row (it runs only for redis:// URLs anyway)",
    )
    _add_workload(bench)
    bench.set_defaults(func=_cmd_bench)

    size = commands.add_parser(
        "size",
        help="sweep max_connections for one thread count; recommends a pool size",
        description="Sweep max_connections for one thread count and workload; print throughput and "
        "acquire wait per size and recommend the smallest size near peak throughput.",
    )
    _add_target(size)
    size.add_argument("--threads", type=positive_int, default=16, metavar="N", help="worker threads (16)")
    size.add_argument(
        "--sizes",
        type=int_list,
        metavar="N,N,..",
        help="sizes to try (default: powers of two up to --threads)",
    )
    size.add_argument("--rounds", type=positive_int, default=2, metavar="N", help="interleaved rounds (2)")
    size.add_argument(
        "--pool",
        type=candidate_list,
        default=(_candidates.REDISPOOL,),
        metavar="NAME",
        help="the pool to size (redispool)",
    )
    size.add_argument(
        "--max-wait-ms",
        type=positive_float,
        default=5.0,
        metavar="MS",
        help="p99 acquire wait a size must stay under (5)",
    )
    size.add_argument(
        "--tolerance",
        type=fraction,
        default=0.05,
        metavar="F",
        help="'near the peak' throughput margin (0.05)",
    )
    _add_workload(size)
    size.set_defaults(func=_cmd_size)

    doctor = commands.add_parser(
        "doctor",
        help="check a server and whether the pool settings fit it",
        description="Connect to URL (TLS and AUTH included), report round trip, version, clients, "
        "timeout and tcp-keepalive, the effective connection settings and the slowest commands "
        "(SLOWLOG, INFO commandstats), and check the pool options (from the URL query and flags).",
    )
    doctor.add_argument(
        "url", nargs="?", metavar="URL", help="redis://, rediss:// or unix:// (default: $REDIS_URL)"
    )
    doctor.add_argument("--max-connections", type=positive_int, metavar="N", help="pool max_connections")
    doctor.add_argument("--max-idle", type=positive_float, metavar="SECONDS", help="pool max_idle")
    doctor.add_argument(
        "-o",
        "--option",
        type=option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other pool option, e.g. -o ping_timeout=0.5 (repeatable)",
    )
    doctor.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="processes sharing the server (1)",
    )
    doctor.add_argument("--pings", type=positive_int, default=10, metavar="N", help="PINGs to time (10)")
    doctor.add_argument(
        "--ops-per-sec",
        type=positive_float,
        metavar="N",
        help="commands/s one process sends, for the pool-size estimate (default: the server's "
        "current rate divided by --processes)",
    )
    doctor.add_argument("--strict", action="store_true", help="exit 1 when any warning is found")
    doctor.set_defaults(func=_cmd_doctor)
    return parser


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        metavar="URL",
        help="server to use (default: $REDIS_URL, else a private redis-server started for the run)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON ('-' for stdout only)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _add_workload(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--get-ratio", type=fraction, default=0.9, metavar="F", help="fraction of GETs (0.9)")
    group.add_argument("--value-size", type=non_negative_int, default=100, metavar="BYTES", help="(100)")
    group.add_argument(
        "--pipeline",
        type=positive_int,
        default=1,
        metavar="N",
        help="commands per round trip (1: none)",
    )
    length = group.add_mutually_exclusive_group()
    length.add_argument(
        "--duration", type=positive_float, default=0.5, metavar="SECONDS", help="per run (0.5)"
    )
    length.add_argument(
        "--ops", type=positive_int, metavar="N", help="commands per run instead of a duration"
    )
    group.add_argument("--keys", type=positive_int, default=1000, metavar="N", help="distinct keys (1000)")
    group.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="acquire timeout (10)",
    )


def _workload_from(args: argparse.Namespace) -> Workload:
    return Workload(
        get_ratio=args.get_ratio,
        value_size=args.value_size,
        pipeline=args.pipeline,
        duration=None if args.ops is not None else args.duration,
        ops=args.ops,
        keys=args.keys,
        timeout=args.timeout,
    )


# ---------------------------------------------------------------------- commands


def _cmd_bench(args: argparse.Namespace, control: Control) -> int:
    _check_json_path(args.json)
    plan = _bench.BenchPlan(
        workload=_workload_from(args),
        threads=args.threads,
        max_connections=args.max_connections,
        rounds=args.rounds,
        candidates=args.candidates or tuple(_candidates.available_candidates()),
        pool_iterations=args.pool_iterations,
        floor=args.floor,
        instruction_gets=args.instruction_gets,
    )
    progress = Progress(_bench.steps(plan), quiet=args.quiet)
    with _target(args, progress) as (url, server):
        report = _bench.run(url, plan, control, progress, server)
    progress.finish()
    _emit(report, args.json, _bench.render)
    return 0


def _cmd_size(args: argparse.Namespace, control: Control) -> int:
    _check_json_path(args.json)
    sizes = args.sizes or _size.default_sizes(args.threads)
    plan = _size.SizePlan(
        workload=_workload_from(args),
        threads=args.threads,
        sizes=sizes,
        rounds=args.rounds,
        candidate=args.pool[0],
        max_wait=args.max_wait_ms / 1000,
        tolerance=args.tolerance,
    )
    progress = Progress(plan.rounds * len(sizes), quiet=args.quiet)
    with _target(args, progress) as (url, server):
        report = _size.run(url, plan, control, progress, server)
    progress.finish()
    _emit(report, args.json, _size.render)
    return 0


def _cmd_doctor(args: argparse.Namespace, control: Control) -> int:
    url = args.url or os.environ.get("REDIS_URL")
    if not url:
        raise UserError("give the server's URL, e.g. `redispool doctor redis://localhost:6379/0`")
    overrides: dict[str, Any] = dict(args.option)
    if args.max_connections is not None:
        overrides["max_connections"] = args.max_connections
    if args.max_idle is not None:
        overrides["max_idle"] = args.max_idle
    try:
        base, options = _doctor.pool_options(url, overrides)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    findings = _doctor.run(url, base, options, args.processes, args.pings, print, args.ops_per_sec)
    if args.strict and any(f.level == "warn" for f in findings):
        return 1
    return 0


def _check_json_path(path: str | None) -> None:
    """Fail before a long run, not after it, when the report cannot be written."""
    if path is None or path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write the JSON report to {path!r}: not a writable file path")


def _emit(report: dict[str, Any], json_path: str | None, render: Callable[[dict[str, Any]], str]) -> None:
    if json_path != "-":
        print(render(report))
    if json_path:
        try:
            _bench.write_json(report, json_path)
        except OSError as error:
            raise UserError(f"cannot write the JSON report to {json_path!r}: {error.strerror}") from None


@contextlib.contextmanager
def _target(args: argparse.Namespace, progress: Progress) -> Iterator[tuple[str, str]]:
    """Yield (url, description): the named server, or a private one removed afterwards."""
    url = args.url or os.environ.get("REDIS_URL")
    if url:
        try:
            base, _ = _doctor.pool_options(url, {})
        except (ValueError, TypeError) as error:
            raise UsageError(str(error)) from None
        _doctor.reach(base)
        yield url, _doctor.redact_url(url)
        return
    try:
        server = RedisServer()
    except ServerNotFound:
        raise UserError(INSTALL_HINT) from None
    announced = None
    try:
        try:
            server.start()
        except RuntimeError as error:  # exited at start, or never answered
            raise UserError(f"could not start a private redis-server ({server.binary}): {error}") from None
        announced = server.pid
        # Tests wait for this line to learn the pid; keep its shape.
        _say(
            f"started a private redis-server (pid {server.pid}) on 127.0.0.1:{server.port}; "
            "it is removed when this run ends",
            progress,
        )
        yield server.url, "private redis-server started for this run"
    finally:
        with _signals_held():
            server.cleanup()  # also removes its directory when it never started
        if announced is not None:
            _say(f"stopped the private redis-server (pid {announced})", progress)


def _say(text: str, progress: Progress) -> None:
    progress.note(f"{PROG}: {text}")


# ---------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module doc)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage and the error
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    control = Control()
    with _sigterm_as_interrupt():
        try:
            return int(args.func(args, control))
        except KeyboardInterrupt:
            control.stop = True
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except (UserError, _doctor.DoctorFailure) as error:
            control.stop = True
            print(f"{PROG}: {error}", file=sys.stderr)
            return 1
        except UsageError as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return 2
        except (redis.RedisError, OSError) as error:  # e.g. the server went away mid-run
            control.stop = True
            print(f"{PROG}: lost the server: {error}", file=sys.stderr)
            return 1
        finally:
            control.stop = True  # worker threads of an aborted run wind down


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore a second Ctrl-C (or SIGTERM) while the private server is being removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so a private server is removed either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
