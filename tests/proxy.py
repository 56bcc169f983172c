"""A tiny TCP proxy on loopback that can silently drop the flows it already carries.

``blackhole()`` makes every existing flow half-open, as a firewall or NAT that forgot a
connection would: bytes sent into it vanish and nothing comes back, but no FIN or RST
is sent. New connections made afterwards are forwarded normally.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class BlackholeProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._flows: list[_Flow] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def blackhole(self) -> None:
        """Drop every flow open now, silently; keep accepting new ones."""
        with self._lock:
            for flow in self._flows:
                flow.dropped.set()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            flow = _Flow(client, upstream)
            with self._lock:
                self._flows.append(flow)
            threading.Thread(target=flow.pump, daemon=True).start()

    def close(self) -> None:
        self._stopped.set()
        self.listener.close()
        with self._lock:
            for flow in self._flows:
                flow.close()

    def __enter__(self) -> BlackholeProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Flow:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.dropped = threading.Event()
        self.closed = threading.Event()

    def pump(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        while not self.closed.is_set():
            try:
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        self.close()
                        return
                    if not self.dropped.is_set():
                        peers[sock].sendall(data)
            except OSError:
                self.close()
                return

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()
