"""The floor: the cheapest way Python can send a command to Redis and read its reply.

One raw socket per thread, commands packed with hiredis's ``pack_command`` and replies
parsed by ``hiredis.Reader``. Without hiredis, redis-py's own packer
(``PythonRespSerializer``) and pure-Python RESP2 parser stand in, so the floor stays
what redis-py could do at best on this machine. No pool, no health checks, no retries,
no response callbacks: a row no real client can beat, shown so a reader sees how far
each path is from the limit.

:class:`FloorClient` speaks just enough of ``redis.Redis`` for the bench workload:
``get``, ``set``, ``ping``, ``pipeline(transaction=False)`` and ``close``, and has a
``connection_pool`` whose ``make_connection`` opens one socket per thread (counted as
"opened" like any pool's). It never calls ``get_connection``: there is nothing to wait for.
"""

from __future__ import annotations

import importlib
import socket
import threading
import types
import urllib.parse
from collections.abc import Callable
from typing import Any

import redis

hiredis: Any
try:
    hiredis = importlib.import_module("hiredis")
except ImportError:  # pragma: no cover - depends on the environment
    hiredis = None

ENGINE = "hiredis" if hiredis is not None else "redis-py's PythonRespSerializer + PythonParser"


class _Wire:
    """One socket: write a packed command, read one reply."""

    def __init__(self, host: str, port: int, password: str | None, username: str | None, db: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send: Callable[[bytes], None] = self.sock.sendall
        self.pack: Callable[..., bytes]
        self.read: Callable[[], Any]
        if hiredis is not None:
            reader = hiredis.Reader()
            recv = self.sock.recv
            self.pack = lambda *args: hiredis.pack_command(args)

            def read() -> Any:
                reply = reader.gets()
                while reply is False:
                    data = recv(65536)
                    if not data:
                        raise redis.ConnectionError("the server closed the connection")
                    reader.feed(data)
                    reply = reader.gets()
                if isinstance(reply, hiredis.ReplyError):
                    raise redis.ResponseError(str(reply))
                return reply

            self.read = read
        else:
            # Untyped in redis-py: reached through Any on purpose.
            parsers: Any = importlib.import_module("redis._parsers")
            connection: Any = importlib.import_module("redis.connection")
            encoder = parsers.Encoder("utf-8", "strict", False)
            packer = connection.PythonRespSerializer(6000, encoder.encode)
            self.pack = lambda *args: b"".join(packer.pack(*args))
            parser = parsers._RESP2Parser(65536)
            parser.on_connect(types.SimpleNamespace(_sock=self.sock, socket_timeout=10.0, encoder=encoder))
            self.read = parser.read_response
        if password is not None:
            self.call(*(("AUTH", username, password) if username else ("AUTH", password)))
        if db:
            self.call("SELECT", db)

    def call(self, *args: Any) -> Any:
        self.send(self.pack(*args))
        reply = self.read()
        if isinstance(reply, redis.ResponseError):  # the Python parser returns errors
            raise reply
        return reply

    def close(self) -> None:
        self.sock.close()


class FloorPool:
    """Opens one :class:`_Wire` per thread and closes them all at the end."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"the floor speaks plain TCP only (redis://), not {parts.scheme}://")
        self._address = (
            parts.hostname or "localhost",
            parts.port or 6379,
            urllib.parse.unquote(parts.password) if parts.password else None,
            urllib.parse.unquote(parts.username) if parts.username else None,
            int(parts.path.strip("/") or 0),
        )
        self._lock = threading.Lock()
        self._wires: list[_Wire] = []

    def make_connection(self) -> _Wire:
        wire = _Wire(*self._address)
        with self._lock:
            self._wires.append(wire)
        return wire

    def get_connection(self, *args: Any, **kwargs: Any) -> _Wire:  # only for instrument()'s sake
        return self.make_connection()

    def disconnect(self) -> None:
        with self._lock:
            wires, self._wires = self._wires, []
        for wire in wires:
            wire.close()


class _FloorPipeline:
    def __init__(self, wire: _Wire) -> None:
        self._wire = wire
        self._packed: list[bytes] = []

    def get(self, name: str) -> _FloorPipeline:
        self._packed.append(self._wire.pack("GET", name))
        return self

    def set(self, name: str, value: bytes) -> _FloorPipeline:
        self._packed.append(self._wire.pack("SET", name, value))
        return self

    def execute(self) -> list[Any]:
        wire, packed = self._wire, self._packed
        self._packed = []
        wire.send(b"".join(packed))
        return [wire.read() for _ in packed]


class FloorClient:
    """The bench workload's view of a client, over one raw socket per thread."""

    def __init__(self, url: str) -> None:
        self.connection_pool = FloorPool(url)
        self._local = threading.local()

    def _wire(self) -> _Wire:
        wire: _Wire | None = getattr(self._local, "wire", None)
        if wire is None:
            wire = self._local.wire = self.connection_pool.make_connection()
        return wire

    def get(self, name: str) -> Any:
        return self._wire().call("GET", name)

    def set(self, name: str, value: bytes) -> Any:
        return self._wire().call("SET", name, value)

    def ping(self) -> Any:
        return self._wire().call("PING")

    def pipeline(self, transaction: bool = False) -> _FloorPipeline:
        return _FloorPipeline(self._wire())

    def close(self) -> None:
        self.connection_pool.disconnect()
