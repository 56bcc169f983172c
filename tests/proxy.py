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


class DelayProxy:
    """A loopback TCP proxy to ``host:port`` that can delay every reply.

    While ``delay`` is ``(low, high)``, each chunk the server sends reaches the client
    ``uniform(low, high)`` seconds after it arrived (order kept); ``None`` forwards at
    once. Requests are never delayed, so one request/reply round trip gains the delay.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.delay: tuple[float, float] | None = None
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            # Connect upstream in the flow's own thread: one slow upstream connect must
            # not hold up the connections accepted after it.
            threading.Thread(target=self._open_flow, args=(client,), daemon=True).start()

    def _open_flow(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        with self._lock:
            if self._stopped.is_set():
                client.close()
                upstream.close()
                return
            self._socks += [client, upstream]
        done = threading.Semaphore(0)  # released by each direction as it ends
        for args in ((client, upstream, False, done), (upstream, client, True, done)):
            threading.Thread(target=self._pump, args=args, daemon=True).start()
        self._reap(client, upstream, done)

    def _reap(self, client: socket.socket, upstream: socket.socket, done: threading.Semaphore) -> None:
        # Close a flow's sockets once both directions ended, so a long run leaks no fds.
        done.acquire()
        done.acquire()
        with self._lock:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
                if sock in self._socks:
                    self._socks.remove(sock)

    def _pump(
        self, source: socket.socket, sink: socket.socket, delayed: bool, done: threading.Semaphore
    ) -> None:
        import random
        import time

        due = 0.0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                delay = self.delay if delayed else None
                if delay is not None:
                    due = max(due, time.monotonic() + random.uniform(*delay))
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)  # the injected latency itself, not synchronisation
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        done.release()

    def close(self) -> None:
        self._stopped.set()
        self.listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.close()
            self._socks.clear()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
