"""The lean command path: one packed write, one parser read, redis-py's response callback.

redis-py runs a plain command through six Python layers (``send_command``,
``send_packed_command``, ``check_health``, ``read_response``, ``parse_response`` and
the pool's tracking wrappers). :func:`run` does the same work in one frame, with the
same pieces: the connection's socket, its packer (hiredis's ``pack_command`` directly
when that is what redis-py would use), its parser (so RESP2, RESP3, push messages and
``decode_responses`` behave as in redis-py), and the client's response callbacks.

Whether a client may use it is decided once, by :func:`eligible`, from the client
class, the pool and its connection class. Which commands it serves is decided once per
command name, by :func:`route`: every command the pool's dirty tracking must see
(``MULTI``, ``SELECT``, ``CLIENT ...``, ``SUBSCRIBE``, ...), every blocking command and
redis-py's stateful ``HIMPORT`` keep the full path. Everything else is served here,
and keeps the full path's guarantees:

* the reply counter the pool checks on return goes up *before* the write and down only
  after a whole reply was parsed, so an interrupt or a timeout at any point leaves the
  connection counted dirty (and closed on return), never pooled with a reply unread;
* any error while writing or reading closes the connection, with redis-py's own
  exception types and messages;
* ``NEVER_DECODE``, ``EMPTY_RESPONSE`` and ``keys`` are handled as ``parse_response``
  handles them, and the callback gets the remaining options.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from typing import Any

import redis
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _commands, _tracking

try:
    from redis.utils import HIREDIS_AVAILABLE
except ImportError:  # pragma: no cover - every supported redis-py has it
    HIREDIS_AVAILABLE = False

_hiredis_pack: Any = None
if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack

__all__ = ["FULL", "HIREDIS", "ROUTES", "eligible", "route", "run"]

#: True when commands are packed by hiredis (redis-py's choice whenever hiredis >= 3).
HIREDIS = _hiredis_pack is not None

# Connection methods the lean path stands in for. A connection class that defines
# any of them outside redis.connection wants to see every command: full path.
_IO_METHODS = (
    "send_command",
    "send_packed_command",
    "read_response",
    "pack_command",
    "check_health",
    "_send_packed_command",
)

# Options parse_response consumes; the callback never sees them.
_PARSE_ONLY = frozenset({NEVER_DECODE, EMPTY_RESPONSE, "keys"})

# Heads that must take the full path (see the module docstring).
_FULL_HEADS = frozenset(
    {*_tracking._INTERESTING, *(n for n in _commands.BLOCKING if isinstance(n, str) and n.isupper())}
    | {"HIMPORT"}
)

# Command name (args[0]) -> FULL, or (words, key): the words redis-py sends instead of
# the name (None: the arguments as given; "CLIENT LIST" goes as two words) and the
# name's key in a CaseInsensitiveDict of callbacks. Bounded: callers pick the names.
ROUTES: dict[Any, Any] = {}
FULL = False
_MAX_ROUTES = 1024

_CaseInsensitiveDict: Any = getattr(redis.client, "CaseInsensitiveDict", dict)
_dict_get = dict.get
_MISSING: Any = object()
#: What :func:`run_pipeline` returns when the full path must run the pipeline.
NOT_SERVED: Any = _MISSING


def eligible(client: Any, pool: Any, base_class: type[Any]) -> str | None:
    """Why ``client`` must keep the full path for every command, or None to go lean.

    ``base_class`` is the client class whose ``parse_response`` and
    ``_send_command_parse_response`` the lean path replaces.
    """
    cls = type(client)
    for name in ("parse_response", "_send_command_parse_response"):
        if getattr(cls, name) is not getattr(base_class, name):
            return f"{cls.__name__} overrides {name}"
    if getattr(pool, "cache", None) is not None:
        return "client-side caching is on"
    kwargs: Mapping[str, Any] = pool.connection_kwargs
    config = kwargs.get("maint_notifications_config")
    if config is not None and getattr(config, "enabled", False) is True:
        return "maintenance notifications are explicitly enabled"
    if kwargs.get("command_packer") is not None:
        return "a command_packer is given"
    if kwargs.get("health_check_interval"):
        return "health_check_interval is set (redis-py's per-command PING check)"
    connection_class = pool.connection_class
    if not isinstance(connection_class, type) or not issubclass(connection_class, AbstractConnection):
        return "the connection class is not a redis-py connection class"
    tracked = _tracking.tracked_class(connection_class)
    if not issubclass(tracked, _tracking.TrackedConnection):
        return "the connection class cannot be tracked"
    for name in _IO_METHODS:
        owner = _definer(connection_class, name)
        # Only redis-py's plain connection classes: SentinelManagedConnection (in
        # redis.sentinel) reads replies itself to spot a demoted master, for one.
        if owner is not None and owner.__module__ != "redis.connection":
            return f"{connection_class.__name__} overrides {name} (in {owner.__qualname__})"
    return None


def _definer(cls: type[Any], name: str) -> type[Any] | None:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def route(name: Any) -> Any:
    """``FULL``, or the ``(words, key)`` route of command ``name`` (see ``ROUTES``)."""
    try:
        answer = ROUTES.get(name)
    except TypeError:  # unhashable: not a command name redis-py would build
        return FULL
    if answer is None:
        answer = _route(name)
        if len(ROUTES) < _MAX_ROUTES:
            ROUTES[name] = answer
    return answer


def _route(name: Any) -> Any:
    # The same split redis-py's HiredisRespSerializer makes of the first argument.
    if isinstance(name, str):
        encoded = name.encode()
        words = tuple(encoded.split())
        as_is = words == (encoded,)
    elif isinstance(name, bytes):
        words = tuple(name.split()) if b" " in name else (name,)
        as_is = len(words) == 1
    else:
        return FULL
    if not words or words[0].decode("utf-8", "replace").upper() in _FULL_HEADS:
        return FULL
    return (None if as_is else words), name.upper()


def run(client: Any, conn: Any, args: tuple[Any, ...], options: dict[str, Any], lean: Any) -> Any:
    """Send ``args`` on the connected, tracked ``conn`` and return the parsed reply.

    ``lean`` is what :func:`route` returned for ``args[0]`` (not ``FULL``). Raises
    what redis-py raises: ``redis.TimeoutError`` or ``redis.ConnectionError`` (after
    closing the connection), ``redis.ResponseError`` for an error reply, ``DataError``
    for an argument that cannot be sent.
    """
    words, key = lean
    chunks: Any = None
    if HIREDIS:
        try:
            packed = _hiredis_pack(args if words is None else words + args[1:])
        except TypeError:  # redis-py's own packer converts or refuses it (DataError)
            packed = b"".join(conn._command_packer.pack(*args))
    else:
        chunks = conn._command_packer.pack(*args)
        packed = chunks[0] if len(chunks) == 1 else None
    sock = conn._sock
    # Counted before the first byte leaves, so no interrupt can hide a reply in flight.
    conn._rp_pending += 1
    try:
        if packed is not None:
            sock.sendall(packed)
        else:
            for chunk in chunks:  # large values travel as their own buffers, uncopied
                sock.sendall(chunk)
    except TimeoutError as error:  # socket.timeout
        conn.disconnect()
        raise RedisTimeoutError("Timeout writing to socket") from error
    except OSError as error:
        conn.disconnect()
        if len(error.args) == 1:
            code, message = "UNKNOWN", error.args[0]
        else:
            code, message = error.args[0], error.args[1]
        raise RedisConnectionError(f"Error {code} while writing to socket. {message}.") from error
    except BaseException:
        conn.disconnect()
        raise
    response = _read_reply(conn, options)
    if isinstance(response, ResponseError):
        if options and EMPTY_RESPONSE in options:
            return options[EMPTY_RESPONSE]
        raise response
    callbacks = client.response_callbacks
    kind = type(callbacks)
    if kind is _CaseInsensitiveDict:
        callback = _dict_get(callbacks, key, _MISSING)  # its keys are stored upper-case
    elif kind is dict:
        callback = _dict_get(callbacks, args[0], _MISSING)
    else:
        name = args[0]
        callback = callbacks[name] if name in callbacks else _MISSING  # noqa: SIM401 (as redis-py does)
    if callback is _MISSING:
        return response
    if not options or (len(options) == 1 and "keys" in options):
        return callback(response)
    return callback(response, **{k: v for k, v in options.items() if k not in _PARSE_ONLY})


def run_pipeline(pipe: Any, conn: Any, commands: list[Any], raise_on_error: bool) -> Any:
    """A pipeline without MULTI in one packed write, or ``_MISSING`` to take the full path.

    Taken only with hiredis packing and when every command is one :func:`route` serves;
    replies, error replies (kept in place, the first raised when ``raise_on_error``),
    callbacks and the reply counter behave as in :func:`run`.
    """
    if not HIREDIS:
        return _MISSING
    routes: list[Any] = []
    for args, _options in commands:
        lean = route(args[0]) if args else FULL
        if lean is FULL:
            return _MISSING
        routes.append(lean)
    if _reconcile_discards is not None and getattr(conn, "himport_registry", None) is not None:
        _reconcile_discards(pipe, conn)  # redis-py 8's deferred HIMPORT discards, as it does
    try:
        packed = b"".join(
            [
                _hiredis_pack(args if words is None else words + args[1:])
                for (args, _), (words, _k) in zip(commands, routes, strict=True)
            ]
        )
    except TypeError:
        return _MISSING  # redis-py's own packer converts or refuses the argument
    sock = conn._sock
    conn._rp_pending += len(commands)
    try:
        sock.sendall(packed)
    except TimeoutError as error:  # socket.timeout
        conn.disconnect()
        raise RedisTimeoutError("Timeout writing to socket") from error
    except OSError as error:
        conn.disconnect()
        code, message = ("UNKNOWN", error.args[0]) if len(error.args) == 1 else error.args[:2]
        raise RedisConnectionError(f"Error {code} while writing to socket. {message}.") from error
    except BaseException:
        conn.disconnect()
        raise
    callbacks = pipe.response_callbacks
    kind = type(callbacks)
    responses: list[Any] = []
    for (args, options), (_words, key) in zip(commands, routes, strict=True):
        response = _read_reply(conn, options)
        if isinstance(response, ResponseError):
            responses.append(options[EMPTY_RESPONSE] if options and EMPTY_RESPONSE in options else response)
            continue
        if kind is _CaseInsensitiveDict:
            callback = _dict_get(callbacks, key, _MISSING)
        elif kind is dict:
            callback = _dict_get(callbacks, args[0], _MISSING)
        else:
            callback = callbacks[args[0]] if args[0] in callbacks else _MISSING  # noqa: SIM401
        if callback is _MISSING:
            responses.append(response)
        elif not options or (len(options) == 1 and "keys" in options):
            responses.append(callback(response))
        else:
            responses.append(callback(response, **{k: v for k, v in options.items() if k not in _PARSE_ONLY}))
    if raise_on_error:
        pipe.raise_first_error(commands, responses)
    return responses


def _read_reply(conn: Any, options: Any) -> Any:
    """Read one reply with the connection's parser; any failure closes the connection
    (with redis-py's exception and wording), so a late reply can never reach anyone."""
    try:
        if options and NEVER_DECODE in options:
            response = conn._parser.read_response(disable_decoding=True)
        else:
            response = conn._parser.read_response()
    except TimeoutError as error:  # socket.timeout
        conn.disconnect()
        raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from error
    except OSError as error:
        conn.disconnect()
        raise RedisConnectionError(f"Error while reading from {conn._host_error()} : {error.args}") from error
    except BaseException:
        conn.disconnect()
        raise
    if conn._rp_pending:
        conn._rp_pending -= 1
    return response


# redis-py >= 8 reconciles deferred HIMPORT discards before every pipeline.
_reconcile_discards: Any = None
with contextlib.suppress(ImportError, AttributeError):
    _reconcile_discards = importlib.import_module("redis._himport_exec").reconcile_discards
