"""Instructions per GET, counted by ``valgrind --tool=callgrind`` in a subprocess.

Wall time on a shared machine swings tenfold; the number of instructions the client
process executes for one GET does not. For each candidate a fresh Python runs under
callgrind: it builds every candidate's client (so imports and set-up are the same in
every process), warms each up, and then runs ``gets`` GETs through one of them. A
baseline process does the same with no timed GETs. ``(total - baseline) / gets`` is
that candidate's instructions per GET, in the client process only (never the server's).

Without ``valgrind`` on PATH nothing runs and the report says so.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

from .progress import Progress

# Run as ``python -c CHILD url key gets measured candidate,candidate,...``.
CHILD = """
import sys
import redis
from redispool.cli import candidates
url, key, gets, measured, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
admin = redis.Redis.from_url(candidates.split_url(url)[0])
admin.set(key, b"x" * 100)
clients = {name: candidates.build_client(name, url, 1, 10.0) for name in names.split(",")}
for client in clients.values():
    for _ in range(50):
        client.get(key)
if measured != "-":
    get = clients[measured].get
    for _ in range(gets):
        get(key)
for client in clients.values():
    candidates.close_client(client)
admin.delete(key)
admin.close()
"""

_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")


def valgrind() -> str | None:
    return shutil.which("valgrind")


def count(url: str, candidates: Sequence[str], gets: int, progress: Progress) -> dict[str, Any]:
    """``{"gets": N, "tool": ..., "per_get": {candidate: instructions}}`` or a reason it is absent."""
    binary = valgrind()
    if binary is None:
        return {"gets": gets, "per_get": {}, "skipped": "valgrind is not on PATH"}
    prefix = f"redispool-bench:{uuid.uuid4().hex}:instructions:"
    names = ",".join(candidates)
    totals: dict[str, int] = {}
    runs = ("-", *candidates)
    progress.note(
        f"redispool: counting instructions per GET under callgrind ({len(runs)} processes; "
        "a minute or more, --instruction-gets 0 skips it)"
    )
    # Counts do not depend on load, so the processes run side by side.
    with (
        tempfile.TemporaryDirectory(prefix="redispool-callgrind-") as folder,
        concurrent.futures.ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1)) as executor,
    ):
        futures = {
            executor.submit(
                _run, binary, folder, [url, f"{prefix}{i:02d}", str(gets if m != "-" else 0), m, names]
            ): m
            for i, m in enumerate(runs)
        }
        for future in concurrent.futures.as_completed(futures):
            measured = futures[future]
            what = "the baseline (no GETs)" if measured == "-" else measured
            progress.step(f"callgrind: counted {what}")
            totals[measured] = future.result()
    baseline = totals.pop("-")
    return {
        "gets": gets,
        "per_get": {name: round(max(total - baseline, 0) / gets, 1) for name, total in totals.items()},
    }


def _run(binary: str, folder: str, argv: list[str]) -> int:
    command = [
        binary,
        "--tool=callgrind",
        f"--callgrind-out-file={os.path.join(folder, 'callgrind.out.%p')}",
        sys.executable,
        "-c",
        CHILD,
        *argv,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, env=env, timeout=900, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"callgrind run failed (exit {done.returncode}): {' / '.join(tail)}")
    return int(found.group(1))
