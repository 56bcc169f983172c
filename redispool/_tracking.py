"""Know, without a round trip, whether a connection is safe to hand to the next caller.

redis-py cannot tell a connection with an unread reply from a clean one once RESP3 is on
(it skips its own ``can_read`` guard), and it never notices a ``SELECT``, ``WATCH`` or
``SUBSCRIBE`` left behind. The pool therefore builds, for each connection class, a
subclass that counts replies still owed by the server and remembers which
session-changing commands were sent. :func:`return_policy` turns that into a decision.
"""

from __future__ import annotations

import enum
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from redis.connection import AbstractConnection
from redis.exceptions import ResponseError


class Dirt(enum.IntFlag):
    """Session state a borrower may leave on a connection."""

    NONE = 0
    MULTI = 1  # inside MULTI: the next command would be queued, not run
    WATCH = 2  # WATCH still active: a later EXEC elsewhere could abort
    SELECT = 4  # on another database than the pool's
    SUBSCRIBED = 8  # in pub/sub mode: ordinary commands are refused
    MONITOR = 16  # streaming every command of the server
    REPLY = 32  # CLIENT REPLY OFF/SKIP: replies would go missing
    NAME = 64  # CLIENT SETNAME to another name than the pool's
    RESET = 128  # RESET: database, user and protocol went back to defaults


# Cleared by sending a command at the next checkout, so the connection is kept.
RESETTABLE = int(Dirt.WATCH | Dirt.SELECT | Dirt.NAME)
# Anything else means the connection is closed on return. Plain ints: IntFlag
# arithmetic is slow, and these are tested on every return.
CLOSE_ON_RETURN = int(~RESETTABLE & 0xFFFF)

_STICKY = {
    "MULTI": int(Dirt.MULTI),
    "SUBSCRIBE": int(Dirt.SUBSCRIBED),
    "PSUBSCRIBE": int(Dirt.SUBSCRIBED),
    "SSUBSCRIBE": int(Dirt.SUBSCRIBED),
    "MONITOR": int(Dirt.MONITOR),
    "RESET": int(Dirt.RESET),
    "WATCH": int(Dirt.WATCH),
}
_CLEARS = {
    "EXEC": int(Dirt.MULTI | Dirt.WATCH),
    "DISCARD": int(Dirt.MULTI | Dirt.WATCH),
    "UNWATCH": int(Dirt.WATCH),
}
# Heads worth a closer look; everything else (GET, SET, ...) costs one set lookup.
_INTERESTING = frozenset({*_STICKY, *_CLEARS, "SELECT", "CLIENT"})


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# Command names (args[0], as sent) that change no session state, learnt by _rp_note:
# the next command with one of them skips it. Bounded: callers pick the names.
_PLAIN_NAMES: set[Any] = set()
_MAX_PLAIN_NAMES = 1024


def _plain(name: Any) -> bool:
    try:
        return name in _PLAIN_NAMES
    except TypeError:  # unhashable: never learnt
        return False


class TrackedConnection(AbstractConnection):
    """Mixin placed in front of the user's connection class by the pool.

    ``_rp_pending`` counts replies the server still owes; ``_rp_dirt`` holds
    :class:`Dirt` flags. Both reset when the socket closes, because a new socket
    starts a new server session.
    """

    _rp_pending: int = 0
    _rp_dirt: int = 0
    _should_reconnect = False  # redis-py >= 7 sets it on the instance (maintenance)

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._rp_pending += 1
        if args and not _plain(args[0]):
            self._rp_note(args)

    def pack_commands(self, commands: Iterable[Sequence[Any]]) -> Any:
        # Pipelines pack every command and send them in one write.
        commands = list(commands)
        packed = super().pack_commands(commands)  # type: ignore[no-untyped-call]
        self._rp_pending += len(commands)
        for args in commands:
            if args and not _plain(args[0]):
                self._rp_note(args)
        return packed

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().read_response(*args, **kwargs)
        except ResponseError:
            self._rp_consumed()  # an error reply is still a reply
            raise
        if self._rp_pending:  # _rp_consumed(), inline: this runs for every reply
            self._rp_pending -= 1
        return response

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        super().disconnect(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._rp_pending = 0
        self._rp_dirt = 0

    def _rp_consumed(self) -> None:
        # Pub/sub and MONITOR read messages nobody asked for; never go below zero.
        if self._rp_pending:
            self._rp_pending -= 1

    def _rp_note(self, args: Sequence[Any]) -> None:
        words = _text(args[0]).upper().split()
        head = words[0] if words else ""
        if head not in _INTERESTING:
            if isinstance(args[0], (str, bytes)) and len(_PLAIN_NAMES) < _MAX_PLAIN_NAMES:
                _PLAIN_NAMES.add(args[0])
            return
        rest = words[1:] + [_text(a) for a in args[1:]]
        if head in _STICKY:
            self._rp_dirt |= _STICKY[head]
        elif head in _CLEARS:
            self._rp_dirt &= ~_CLEARS[head]
        elif head == "SELECT" and rest:
            self._rp_set(int(Dirt.SELECT), rest[0] != str(getattr(self, "db", 0)))
        elif head == "CLIENT" and rest:
            sub = rest[0].upper()
            if sub == "REPLY" and len(rest) > 1:
                self._rp_set(int(Dirt.REPLY), rest[1].upper() != "ON")
            elif sub == "SETNAME" and len(rest) > 1:
                self._rp_set(int(Dirt.NAME), rest[1] != (getattr(self, "client_name", None) or ""))

    def _rp_set(self, flag: int, on: bool) -> None:
        if on:
            self._rp_dirt |= flag
        else:
            self._rp_dirt &= ~flag


_classes: dict[type[Any], type[Any]] = {}
_classes_lock = threading.Lock()


def tracked_class(connection_class: Any) -> Any:
    """Return the tracking subclass of ``connection_class`` (cached), or the class itself
    when it cannot be subclassed (a factory function, say)."""
    if not isinstance(connection_class, type) or not issubclass(connection_class, AbstractConnection):
        return connection_class
    if issubclass(connection_class, TrackedConnection):
        return connection_class
    with _classes_lock:
        cls = _classes.get(connection_class)
        if cls is None:
            cls = type(
                connection_class.__name__,
                (TrackedConnection, connection_class),
                {"__module__": connection_class.__module__, "__qualname__": connection_class.__qualname__},
            )
            _classes[connection_class] = cls
        return cls


def inner(conn: Any) -> Any:
    """The real connection behind redis-py's client-side-cache proxy, or ``conn``."""
    return getattr(conn, "_conn", conn)


def dirt(conn: Any) -> int:
    """The :class:`Dirt` flags of ``conn`` as a plain int (0 when untracked)."""
    flags: int = getattr(inner(conn), "_rp_dirt", 0)
    return flags


def describe(flags: int) -> str:
    return ",".join(f.name.lower() for f in Dirt if f and f & flags and f.name) or "clean"


def reset_session(conn: Any, timeout: float | None = None) -> None:
    """Undo the resettable session state in one pipelined round trip, waiting at most
    ``timeout`` seconds for it (None: the connection's own ``socket_timeout``).

    Raises whatever the connection raises; the caller closes the connection then.
    """
    real = inner(conn)
    flags = dirt(conn)
    commands: list[tuple[Any, ...]] = []
    if flags & Dirt.WATCH:
        commands.append(("UNWATCH",))
    if flags & Dirt.SELECT:
        commands.append(("SELECT", getattr(real, "db", 0)))
    if flags & Dirt.NAME:
        commands.append(("CLIENT SETNAME", getattr(real, "client_name", None) or ""))
    if not commands:
        return
    raw = getattr(real, "_sock", None)
    sock: socket.socket | None = raw if timeout is not None and isinstance(raw, socket.socket) else None
    original = getattr(real, "socket_timeout", None)
    if sock is not None and timeout is not None:
        sock.settimeout(timeout if original is None else min(original, timeout))
    try:
        real.send_packed_command(real.pack_commands(commands), check_health=False)
        for _ in commands:
            real.read_response()
    finally:
        if sock is not None and getattr(real, "_sock", None) == sock:  # not reconnected since
            sock.settimeout(original)
