"""Run redis-py's and django-redis's own test suites as shipped and with redispool's pool.

One command::

    .venv/bin/pip install -e '.[test,compare]'
    .venv/bin/python tools/compare_redis_py.py            # both suites, ~10 min on 2 cores

It downloads the sdists of the installed redis-py and django-redis (``pip download
--no-binary :all: --no-deps``, cached under ``~/.cache/redispool-compare``), then runs each
suite twice, each time against a fresh private ``redis-server`` on a free loopback port:

* **shipped**: unchanged;
* **redispool**: redis-py's files with every ``ConnectionPool`` / ``BlockingConnectionPool``
  name rebound to ``redispool.ConnectionPool`` (``tools/_compare_plugin.py``); django-redis's
  with ``OPTIONS["CONNECTION_POOL_CLASS"] = "redispool.ConnectionPool"`` in every cache of its
  test settings.

It prints the counts of both runs and every test that passes as shipped and fails with
redispool, marking NEW those that ``docs/differences.md`` does not explain; it exits 1 if
there is a NEW one. Both suites FLUSHALL and CONFIG SET, so they only ever see the private server:
their addresses are rewritten to it, and inside the test process the plugin sends any
loopback connect to port 6379 (or to /tmp/redis.sock) to the private server and refuses
6379 on any other address. ``docs/differences.md`` explains every
test this prints.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redispool._server import RedisServer, free_port  # noqa: E402

REDIS_PY_FILES = [
    "tests/test_connection_pool.py",
    "tests/test_connection.py",
    "tests/test_pipeline.py",
    "tests/test_pubsub.py",
    "tests/test_lock.py",
    "tests/test_commands.py",
]
SHARED_PORT = 6379
# Sentinel settings need a Sentinel deployment the tool does not start: they fail either way.
DJANGO_DESELECT = "not sentinel"
POOL_OPTION = (
    '\n\nimport os as _os\nif _os.environ.get("REDISPOOL_COMPARE_MODE") == "redispool":\n'
    "    for _cache in CACHES.values():\n"
    '        _cache.setdefault("OPTIONS", {})["CONNECTION_POOL_CLASS"] = "redispool.ConnectionPool"\n'
)


def sdist(name: str, cache: Path) -> Path:
    """The extracted sdist of the installed ``name``, downloaded once."""
    wanted = version(name)
    target = cache / f"{name}-{wanted}"
    if (target / "tests").is_dir():
        return target
    download = cache / "sdists"
    download.mkdir(parents=True, exist_ok=True)
    normal = name.replace("-", "_")
    found = [
        p
        for p in download.glob("*.tar.gz")
        if p.name.lower() in {f"{n}-{wanted}.tar.gz" for n in (name, normal)}
    ]
    if not found:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
        subprocess.run([*command, "-d", str(download), f"{name}=={wanted}"], check=True)
        found = [
            p for p in download.glob("*.tar.gz") if p.name.lower().startswith((f"{name}-", f"{normal}-"))
        ]
    with tempfile.TemporaryDirectory(dir=cache) as tmp, tarfile.open(found[0]) as archive:
        archive.extractall(tmp, filter="data")
        (top,) = Path(tmp).iterdir()
        # Only the tests and the pytest configuration: the suites must import the
        # installed packages, not the sdist's copy of them.
        target.mkdir()
        shutil.copytree(top / "tests", target / "tests")
        shutil.copy(top / "pyproject.toml", target / "pyproject.toml")
    return target


def prepare_django(tree: Path, port: int, unix_socket: str, missing_port: int) -> None:
    """Point django-redis's test settings at the private server, and let the redispool
    run choose the pool class by CONNECTION_POOL_CLASS."""
    for path in sorted((tree / "tests" / "settings").glob("*.py")):
        text = path.read_text()
        if "REDISPOOL_COMPARE_MODE" in text:
            continue
        text = text.replace("127.0.0.1:56379", f"127.0.0.1:{missing_port}")
        text = re.sub(r"127\.0\.0\.1:6379\b", f"127.0.0.1:{port}", text)
        text = re.sub(r"redis://127\.0\.0\.1\?", f"redis://127.0.0.1:{port}?", text)
        text = text.replace("/tmp/redis.sock", unix_socket)
        if "CACHES" in text:
            text += POOL_OPTION
        path.write_text(text)


def run(suite: str, tree: Path, mode: str, args: list[str], out: Path) -> dict[str, str]:
    """Run one suite in one mode against a fresh private server; test id -> outcome."""
    workdir = Path(tempfile.mkdtemp(prefix="redispool-compare-"))
    unix_socket = str(workdir / "redis.sock")
    # A fresh copy per run: the cached tree stays as shipped, and settings rewritten for
    # one private server never point at another.
    tree = Path(shutil.copytree(tree, workdir / tree.name))
    server = RedisServer(
        "--unixsocket", unix_socket, "--unixsocketperm", "700", "--enable-debug-command", "yes"
    )
    server.start()
    try:
        assert server.port != SHARED_PORT
        env = dict(os.environ)
        env["REDISPOOL_COMPARE_MODE"] = mode
        env["REDISPOOL_COMPARE_FORBIDDEN_PORTS"] = str(SHARED_PORT)
        env["REDISPOOL_COMPARE_FORBIDDEN_SOCKETS"] = "/tmp/redis.sock"
        env["REDISPOOL_COMPARE_PRIVATE_PORT"] = str(server.port)
        env["REDISPOOL_COMPARE_PRIVATE_SOCKET"] = unix_socket
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "tools"), str(tree), env.get("PYTHONPATH")])
        )
        env.pop("REDISPOOL_REQUIRE_REDIS", None)
        xml = out / f"{suite}-{mode}.xml"
        command = [sys.executable, "-m", "pytest", "-p", "_compare_plugin", "-p", "no:cacheprovider"]
        command += ["-o", "addopts=", "-o", "filterwarnings=", "-q", "--timeout=60", f"--junitxml={xml}"]
        # Test paths among ``args`` replace the default selection.
        paths = [a for a in args if a.startswith("tests")]
        if suite == "redis-py":
            command += [f"--redis-url=redis://127.0.0.1:{server.port}/0", *(paths or REDIS_PY_FILES)]
        else:
            prepare_django(tree, server.port, unix_socket, free_port())
            command += ["-k", DJANGO_DESELECT, *(paths or ["tests"])]
        command += [a for a in args if a not in paths]
        print(f"== {suite} ({mode}) on private redis-server 127.0.0.1:{server.port}", flush=True)
        log_path = out / f"{suite}-{mode}.log"
        with open(log_path, "w") as log:
            subprocess.run(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        found = outcomes(xml)
        if not found:  # nothing collected: say why instead of comparing two empty runs
            tail = log_path.read_text().splitlines()[-15:]
            raise SystemExit(f"{suite} ({mode}) ran no tests; the end of {log_path}:\n" + "\n".join(tail))
        return found
    finally:
        server.stop()
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def outcomes(xml: Path) -> dict[str, str]:
    if not xml.exists():
        return {}
    found: dict[str, str] = {}
    for case in ET.parse(xml).iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            found[test] = "failed"
        elif "skipped" in kinds:
            found[test] = "skipped"
        else:
            found[test] = "passed"
    return found


def doc_name(test: str) -> str:
    """``tests.test_x.TestY::test_z[p]`` as docs/differences.md writes it:
    ``test_x.py::TestY::test_z`` (parameters left out)."""
    classname, name = test.split("::", 1)
    parts = classname.split(".")[1:]  # drop the "tests" package
    module = next(i for i, part in enumerate(parts) if part.startswith("test_"))
    path = "/".join(parts[: module + 1]) + ".py"
    return "::".join([path, *parts[module + 1 :], name.split("[", 1)[0]])


def counts(results: dict[str, str]) -> str:
    tally = {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "skipped")}
    return ", ".join(f"{n} {k}" for k, n in tally.items())


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=["redis-py", "django-redis", "all"], default="all")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "redispool-compare")
    parser.add_argument("--out", type=Path, default=None, help="where logs and junit XML go")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --), e.g. -k lock")
    options = parser.parse_args(argv)
    options.cache.mkdir(parents=True, exist_ok=True)
    out = options.out or Path(tempfile.mkdtemp(prefix="redispool-compare-out-"))
    out.mkdir(parents=True, exist_ok=True)
    suites = ["redis-py", "django-redis"] if options.suite == "all" else [options.suite]
    summary: dict[str, dict[str, object]] = {}
    documented = (ROOT / "docs" / "differences.md").read_text()
    regressions = 0
    for suite in suites:
        package = "redis" if suite == "redis-py" else "django-redis"
        tree = sdist(package, options.cache)
        shipped = run(suite, tree, "shipped", options.pytest_args, out)
        swapped = run(suite, tree, "redispool", options.pytest_args, out)
        worse = sorted(t for t, o in shipped.items() if o == "passed" and swapped.get(t) == "failed")
        better = sorted(t for t, o in shipped.items() if o == "failed" and swapped.get(t) == "passed")
        new = [t for t in worse if doc_name(t) not in documented]
        regressions += len(new)
        print(f"{suite} {version(package)}")
        print(f"  shipped:   {counts(shipped)}")
        print(f"  redispool: {counts(swapped)}")
        print(f"  pass as shipped, fail with redispool ({len(worse)}, {len(new)} NEW):")
        for test in worse:
            print(f"    {'NEW ' if test in new else ''}{test}")
        if better:
            print(f"  fail as shipped, pass with redispool ({len(better)}):")
            for test in better:
                print(f"    {test}")
        summary[suite] = {"version": version(package), "regressions": worse, "new": new, "fixed": better}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"logs, junit XML and summary.json in {out}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
