"""Borrow-time health checks: a zero-round-trip socket probe and a bounded PING."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from typing import Any, Literal

from redis.exceptions import ConnectionError as RedisConnectionError

from ._tracking import inner

Probe = Literal["ok", "closed", "eof", "data", "error"]

# Readable, hung up or in error: all of them mean "look closer".
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


# What ``_sock`` reads as on a connection class that has none (redis-py's test doubles):
# there is no socket to look at, so there is nothing to probe or PING.
NO_SOCKET_ATTRIBUTE: Any = object()


def socket_of(conn: Any) -> Any:
    """The connection's socket, or None (not connected, or a class without ``_sock``)."""
    return getattr(inner(conn), "_sock", None)


def has_socket_attribute(conn: Any) -> bool:
    return getattr(inner(conn), "_sock", NO_SOCKET_ATTRIBUTE) is not NO_SOCKET_ATTRIBUTE


def probe(conn: Any, poller: Any = None) -> Probe:
    """Look at the socket without a round trip.

    ``ok``: connected and nothing pending. ``closed``: never connected or already
    disconnected. ``eof``: the server closed it. ``data``: bytes nobody asked for are
    waiting (a reply left unread, or an error the server sent before closing).
    ``error``: the socket reports a failure (reset, broken pipe). A connection class
    without a ``_sock`` attribute has nothing to look at: ``ok``.
    """
    sock = getattr(inner(conn), "_sock", NO_SOCKET_ATTRIBUTE)
    if sock is None:
        return "closed"
    if sock is NO_SOCKET_ATTRIBUTE:
        return "ok"
    if isinstance(sock, ssl.SSLSocket):
        return _probe_tls(sock)
    if not isinstance(sock, socket.socket):
        return "ok"  # an in-memory test double (fakeredis): nothing to look at
    try:
        # A socket with a timeout polls before recv() even with MSG_DONTWAIT, so poll
        # ourselves with a zero timeout: one syscall in the common, healthy case.
        if poller is None:
            poller = poller_for(sock)
        if not poller.poll(0):
            return "ok"
        peeked = sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return "ok"
    except OSError:
        return "error"
    return "data" if peeked else "eof"


def poller_for(sock: socket.socket) -> Any:
    """A poll object watching ``sock`` for readability; reusable while the socket lives."""
    poller = select.poll()
    poller.register(sock, _READABLE)
    return poller


def _probe_tls(sock: ssl.SSLSocket) -> Probe:
    """TLS cannot be peeked: records may be session tickets, alerts or application data.

    Decrypted bytes already buffered mean data. Otherwise read without blocking: a
    session ticket or an empty record yields nothing (healthy), a close_notify or FIN
    yields EOF, and application data means an unread reply (the connection is dirty
    and will be closed, so consuming it does no harm).
    """
    if sock.pending():
        return "data"
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        chunk = sock.recv(1)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return "ok"
    except (ssl.SSLError, OSError):
        return "error"
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
    return "data" if chunk else "eof"


def ping(conn: Any, timeout: float) -> None:
    """Send PING and wait at most ``timeout`` seconds for PONG.

    Raises :class:`redis.exceptions.ConnectionError` or ``TimeoutError`` on failure;
    the connection is left disconnected then. A connection class without a ``_sock``
    attribute is not pinged: there is no socket to check.
    """
    real = inner(conn)
    if not has_socket_attribute(real):
        return
    sock = socket_of(conn)
    original = getattr(real, "socket_timeout", None)
    bounded = isinstance(sock, socket.socket)
    if bounded:
        sock.settimeout(timeout if original is None else min(original, timeout))
    try:
        real.send_command("PING", check_health=False)
        reply = real.read_response()
    finally:
        if bounded and socket_of(conn) is sock:
            sock.settimeout(original)
    if reply not in (b"PONG", "PONG", True):
        real.disconnect()
        raise RedisConnectionError(f"unexpected reply to PING: {reply!r}")
